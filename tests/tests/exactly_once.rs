//! Exactly-once under crashes, rebalances and S3 outages (issue 4, checks 1–3,
//! 7 and 8): `sqi process` runs as child processes against Kafka and moto and
//! is killed, scaled and frozen while a producer sends a known multiset of
//! events. The lake must end up with every event exactly once, and DuckDB must
//! open it. `SQI_TEST_KEEP_LOG=PREFIX` keeps each test's processor log as
//! `PREFIX-{test}.log`.

use std::path::PathBuf;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sqi_integration_tests::{
    OwnMoto, ProcessorSetup, Services, Workload, free_address, high_watermarks, unique,
    wait_until_written, watermark_reader, written_ends,
};
use sqi_schemas::lake::Lake;

const HOUR: i64 = 3_600_000;

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(6000)..]
}

/// One test's topic, lake, known workload and processor log.
struct Scenario {
    services: Services,
    topic: String,
    partitions: i32,
    bucket: String,
    lake: Lake,
    workload: Workload,
    _logs: tempfile::TempDir,
    log: PathBuf,
}

impl Scenario {
    async fn new(
        services: Services,
        name: &str,
        partitions: i32,
        events: usize,
        seed: u64,
    ) -> Self {
        let topic = unique(name);
        services.create_topic(&topic, partitions).await;
        services.create_topic(&format!("{topic}-dlq"), 1).await;
        let (bucket, lake) = services.fresh_lake().await;
        // Shown only when the test fails: where to look.
        println!("topic {topic}, lake s3://{bucket}/lake");
        let logs = tempfile::tempdir().unwrap();
        let log = std::env::var("SQI_TEST_KEEP_LOG").map_or_else(
            |_| logs.path().join("processor.log"),
            |prefix| PathBuf::from(format!("{prefix}-{name}.log")),
        );
        // Six hours ago, ten minutes before an hour ends, so the events span hours.
        let now = chrono::Utc::now().timestamp_millis();
        let start = (now - 6 * HOUR).div_euclid(HOUR) * HOUR + 50 * 60_000;
        Self {
            workload: Workload::new(events, start, seed),
            services,
            topic,
            partitions,
            bucket,
            lake,
            _logs: logs,
            log,
        }
    }

    fn setup(&self) -> ProcessorSetup {
        ProcessorSetup::new(&self.services, &self.topic, &self.bucket)
    }

    /// Starts the producer: `per_second` records a second until all are sent.
    fn produce(&self, per_second: usize) -> tokio::task::JoinHandle<()> {
        let brokers = self.services.kafka_brokers.clone();
        let topic = self.topic.clone();
        let workload = self.workload.clone();
        tokio::spawn(async move { workload.produce(&brokers, &topic, per_second).await })
    }

    fn processor_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the lake covers the whole topic, then checks it is exact.
    async fn assert_exact(&self) {
        wait_until_written(
            &self.services.kafka_brokers,
            &self.lake,
            &self.topic,
            self.partitions,
            Duration::from_secs(240),
        )
        .await;
        assert!(
            !self.processor_log().contains("differs from its log entry"),
            "a re-read range differed from its log entry"
        );
        self.workload.assert_exact(&self.services, &self.bucket);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let scenario = Scenario::new(Services::from_env(), "crash", 3, 3_000, 7).await;
    let producing = scenario.produce(40);
    // The processors connect as on Strimzi: SASL_SSL with SCRAM-SHA-512, so
    // every life re-authenticates and its transactions-free exactly-once
    // path is the same over TLS.
    let sasl = sqi_integration_tests::kafka::SaslListener::from_env();
    let sasl_env = sqi_integration_tests::kafka::role_env(&sasl.brokers);
    let mut setup = scenario.setup();
    setup.brokers = sasl.brokers.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for kill in 0..24 {
        // Every third life also aborts by itself right after a claim or right
        // after an upload (before the commit), the windows a random kill rarely hits.
        setup.env = sasl_env.clone();
        setup.env.extend(match kill % 3 {
            0 => vec![(
                "SQI_PROCESSOR_CRASH_POINTS".into(),
                "after-upload=0.3".into(),
            )],
            1 => vec![(
                "SQI_PROCESSOR_CRASH_POINTS".into(),
                "after-claim=0.3".into(),
            )],
            _ => Vec::new(),
        });
        let mut child = setup.spawn(&scenario.log);
        tokio::time::sleep(Duration::from_millis(rng.random_range(3_000..8_000))).await;
        child.kill9();
    }
    producing.await.unwrap();

    setup.env = sasl_env;
    let _survivor = setup.spawn(&scenario.log);
    scenario.assert_exact().await;
    let log = scenario.processor_log();
    assert!(
        log.contains("security_protocol=\"sasl_ssl\""),
        "the processors did not connect over SASL_SSL:\n{}",
        tail(&log)
    );
    assert!(
        log.contains("crash point reached"),
        "no crash point fired; the test did not test what it says:\n{}",
        tail(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_one_to_three_to_one_and_a_frozen_member_double_count_nothing() {
    scale_one_three_one("classic").await;
}

/// The same under KIP-848's consumer group protocol (Kafka 4), where the
/// broker assigns partitions and fences the frozen member itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_under_the_kip_848_protocol_double_counts_nothing() {
    scale_one_three_one("consumer").await;
}

async fn scale_one_three_one(protocol: &str) {
    let scenario = Scenario::new(
        Services::from_env(),
        &format!("scale-{protocol}"),
        6,
        3_000,
        8,
    )
    .await;
    let producing = scenario.produce(60);
    let mut setup = scenario.setup();
    // Three members and a producer share two cores here: a 3 s session
    // timeout turns scheduling delays into rebalance storms. (KIP-848's
    // session is the broker's: 6 s on the test broker.)
    setup.args.extend([
        "--kafka-config".to_owned(),
        "session.timeout.ms=6000".to_owned(),
        "--kafka-config".to_owned(),
        "heartbeat.interval.ms=1000".to_owned(),
    ]);
    setup.use_group_protocol(protocol);
    let mut first = setup.spawn(&scenario.log);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut second = setup.spawn(&scenario.log);
    let mut third = setup.spawn(&scenario.log);
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
    scenario.assert_exact().await;
    assert!(first.terminate().success());
    let joined = format!(
        "group_protocol={}",
        if protocol == "consumer" {
            "Consumer"
        } else {
            "Classic"
        }
    );
    assert!(
        scenario.processor_log().contains(&joined),
        "the members did not join with the {protocol} protocol"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_outage_pauses_consumption_with_bounded_memory_and_loses_nothing() {
    let moto = OwnMoto::start().await;
    let scenario = Scenario::new(moto.services(&Services::from_env()), "outage", 3, 7_000, 9).await;
    let mut setup = scenario.setup();
    setup
        .args
        .extend(["--max-buffered-events".to_owned(), "1500".to_owned()]);
    setup.listen = free_address();
    let processor = setup.spawn(&scenario.log);
    let producing = scenario.produce(100);
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
    scenario.assert_exact().await;
    eprintln!("rss before the outage {before} B, peak during it {peak} B");
    assert!(
        paused_seen,
        "consumption never paused while S3 was down:\n{}",
        tail(&scenario.processor_log())
    );
    assert!(
        peak < before + 200 * 1024 * 1024,
        "memory grew from {before} to {peak} bytes during the outage"
    );
}

/// Issue 20, check 4: a topic that already holds a backlog, members of the
/// group killed with -9 within seconds of starting (a crash loop during a
/// deploy), then one member: it writes its first range within 30 s of
/// starting and drains the backlog exactly. Against Tansu a sixth member
/// dropped every prefetched record "while the partition recovers" and
/// wrote nothing for 49 s. The members keep the processor's own session
/// timeout: under librdkafka's 45 s every killed member held its partitions,
/// and each rebalance, until its session ran out. (The 1M-record form, with
/// production rotation, is `scripts/bench-process backlog`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_after_a_crash_loop_is_written_promptly() {
    let mut scenario = Scenario::new(Services::from_env(), "backlog", 4, 150_000, 12).await;
    // The workload spaces events 1 s apart: 150,000 span 41.7 h, so they
    // start 47 h ago to stay inside the 48 h lateness and the future bound.
    let now = chrono::Utc::now().timestamp_millis();
    scenario.workload = Workload::new(150_000, now - 47 * HOUR, 12);
    scenario
        .produce(1_000_000)
        .await
        .expect("the backlog is produced");
    let high = high_watermarks(
        &watermark_reader(&scenario.services.kafka_brokers),
        &scenario.topic,
        scenario.partitions,
    );
    let mut setup = scenario.setup();
    setup.use_default_session();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for _ in 0..5 {
        let mut child = setup.spawn(&scenario.log);
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..6_000))).await;
        child.kill9();
    }
    let before = written_ends(&scenario.lake, &scenario.topic, scenario.partitions).await;
    let started = tokio::time::Instant::now();
    let _survivor = setup.spawn(&scenario.log);
    loop {
        let now = written_ends(&scenario.lake, &scenario.topic, scenario.partitions).await;
        // A new range, or nothing left to write (the crash loop's members
        // drained it all): either way nothing stalls.
        let drained = now.iter().zip(&high).all(|(end, high)| end + 1 >= *high);
        if drained || now.iter().zip(&before).any(|(now, before)| now > before) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no range written in 30 s after the crash loop (written ends {before:?}):\n{}",
            tail(&scenario.processor_log())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "first range (or nothing left) after the crash loop in {:?}; ends before {before:?}, high {high:?}",
        started.elapsed()
    );
    scenario.assert_exact().await;
}
