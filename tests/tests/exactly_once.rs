//! Exactly-once under crashes and rebalances (issue 4, checks 1–3 and 8):
//! `sqi process` runs as child processes against Tansu and moto and is killed,
//! scaled and frozen while a producer sends a known multiset of events. The
//! lake must end up with every event exactly once, and DuckDB must open it.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use sqi_integration_tests::{ProcessorSetup, Services, Workload, unique, wait_until_written};

const HOUR: i64 = 3_600_000;

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(6000)..]
}

fn start_of_workload() -> i64 {
    // Six hours ago, ten minutes before an hour ends, so the events span hours.
    let now = chrono::Utc::now().timestamp_millis();
    (now - 6 * HOUR).div_euclid(HOUR) * HOUR + 50 * 60_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let services = Services::from_env();
    let topic = unique("crash");
    services.create_topic(&topic, 3).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let (bucket, lake) = services.fresh_lake().await;
    let workload = Workload::new(3_000, start_of_workload(), 7);
    let logs = tempfile::tempdir().unwrap();
    let log = std::env::var("SQI_TEST_KEEP_LOG").map_or_else(
        |_| logs.path().join("processor.log"),
        std::path::PathBuf::from,
    );

    let producing = {
        let brokers = services.kafka_brokers.clone();
        let topic = topic.clone();
        let workload = workload.clone();
        tokio::spawn(async move { workload.produce(&brokers, &topic, 40).await })
    };

    let mut setup = ProcessorSetup::new(&services, &topic, &bucket);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut kills = 0;
    while kills < 24 {
        // Every third life also aborts by itself right after a claim or right
        // after an upload (before the commit), the windows a random kill rarely hits.
        setup.env = match kills % 3 {
            0 => vec![(
                "SQI_PROCESSOR_CRASH_POINTS".into(),
                "after-upload=0.3".into(),
            )],
            1 => vec![(
                "SQI_PROCESSOR_CRASH_POINTS".into(),
                "after-claim=0.3".into(),
            )],
            _ => Vec::new(),
        };
        let mut child = setup.spawn(&log);
        let life = Duration::from_millis(rng.random_range(3_000..8_000));
        tokio::time::sleep(life).await;
        child.kill9();
        kills += 1;
    }
    producing.await.unwrap();

    setup.env.clear();
    let _survivor = setup.spawn(&log);
    wait_until_written(
        &services.kafka_brokers,
        &lake,
        &topic,
        3,
        Duration::from_secs(180),
    )
    .await;
    let processor_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        processor_log.matches("crash point reached").count() > 0,
        "no crash point fired; the test did not test what it says:\n{}",
        tail(&processor_log)
    );
    assert!(
        !processor_log.contains("differs from its log entry"),
        "a re-read range differed from its log entry"
    );
    workload.assert_exact(&services, &bucket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_one_to_three_to_one_and_a_frozen_member_double_count_nothing() {
    let services = Services::from_env();
    let topic = unique("scale");
    services.create_topic(&topic, 6).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let (bucket, lake) = services.fresh_lake().await;
    let workload = Workload::new(3_000, start_of_workload(), 8);
    let logs = tempfile::tempdir().unwrap();
    let log = std::env::var("SQI_TEST_KEEP_LOG").map_or_else(
        |_| logs.path().join("processor.log"),
        std::path::PathBuf::from,
    );
    let producing = {
        let brokers = services.kafka_brokers.clone();
        let topic = topic.clone();
        let workload = workload.clone();
        tokio::spawn(async move { workload.produce(&brokers, &topic, 60).await })
    };
    let setup = ProcessorSetup::new(&services, &topic, &bucket);
    let mut first = setup.spawn(&log);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut second = setup.spawn(&log);
    let mut third = setup.spawn(&log);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A zombie: frozen past its session timeout (6 s) while the group moves
    // its partitions on, then woken to write what it held.
    second.signal("STOP");
    tokio::time::sleep(Duration::from_secs(12)).await;
    second.signal("CONT");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(third.terminate().success(), "SIGTERM exits cleanly");
    assert!(second.terminate().success(), "SIGTERM exits cleanly");
    producing.await.unwrap();
    wait_until_written(
        &services.kafka_brokers,
        &lake,
        &topic,
        6,
        Duration::from_secs(180),
    )
    .await;
    assert!(first.terminate().success());
    workload.assert_exact(&services, &bucket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_outage_pauses_consumption_with_bounded_memory_and_loses_nothing() {
    let moto = sqi_integration_tests::OwnMoto::start().await;
    let services = moto.services(&Services::from_env());
    let topic = unique("outage");
    services.create_topic(&topic, 3).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let (bucket, lake) = services.fresh_lake().await;
    let workload = Workload::new(7_000, start_of_workload(), 9);
    let logs = tempfile::tempdir().unwrap();
    let log = std::env::var("SQI_TEST_KEEP_LOG").map_or_else(
        |_| logs.path().join("processor.log"),
        std::path::PathBuf::from,
    );
    let mut setup = ProcessorSetup::new(&services, &topic, &bucket);
    setup
        .args
        .extend(["--max-buffered-events".to_owned(), "1500".to_owned()]);
    setup.listen = sqi_integration_tests::free_address();
    if std::env::var_os("SQI_TEST_KAFKA_DEBUG").is_some() {
        setup.args.extend([
            "--kafka-config".to_owned(),
            "debug=consumer,topic,fetch".to_owned(),
        ]);
    }
    let processor = setup.spawn(&log);
    let producing = {
        let brokers = services.kafka_brokers.clone();
        let topic = topic.clone();
        let workload = workload.clone();
        tokio::spawn(async move { workload.produce(&brokers, &topic, 100).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = processor.rss_bytes();

    moto.signal("STOP");
    let metrics_url = format!("http://{}/metrics", setup.listen);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (mut peak, mut paused_seen) = (0u64, false);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(processor.rss_bytes());
        if let Ok(response) = client.get(&metrics_url).send().await {
            let text = response.text().await.unwrap_or_default();
            paused_seen |= text
                .lines()
                .any(|l| l == "sqi_processor_backpressure_paused 1");
        }
    }
    moto.signal("CONT");

    producing.await.unwrap();
    if std::env::var_os("SQI_TEST_KAFKA_DEBUG").is_some() {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let text = client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        eprintln!(
            "METRICS\n{}",
            text.lines()
                .filter(|l| l.contains("lag")
                    || l.contains("_total")
                    || l.contains("paused")
                    || l.contains("buffered"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    wait_until_written(
        &services.kafka_brokers,
        &lake,
        &topic,
        3,
        Duration::from_secs(240),
    )
    .await;
    eprintln!("rss before the outage {before} B, peak during it {peak} B");
    assert!(
        paused_seen,
        "consumption never paused while S3 was down:\n{}",
        tail(&std::fs::read_to_string(&log).unwrap_or_default())
    );
    assert!(
        peak < before + 200 * 1024 * 1024,
        "memory grew from {before} to {peak} bytes during the outage"
    );
    workload.assert_exact(&services, &bucket);
}
