//! Hostile input: processor. See `main.rs`.
//!
//! Records are produced straight to the topic, as ingest (or anything else
//! that can write to it) would: the processor must not trust that ingest
//! already cleaned them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use sqi_integration_tests::{Services, Shutdown, unique, wait_for_commits};
use sqi_processor::{Processor, ProcessorConfig, Progress};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::{Lake, Table};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// One contract record (ingest's output).
fn record(id: &str, publisher: &str, ts: i64, received_at: i64) -> String {
    serde_json::json!({
        "v": 1, "event_id": id, "publisher": publisher, "type": "pageview",
        "channel": null, "url": format!("https://{publisher}.example/a"), "referrer": null,
        "visitor": null, "ts": ts, "received_at": received_at,
        "device": "desktop", "ip_prefix": null, "props": {}
    })
    .to_string()
}

/// Produces `values` in order to `partition`, every one acknowledged.
async fn produce(brokers: &str, topic: &str, partition: i32, values: &[String]) {
    let producer: FutureProducer = sqi_integration_tests::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for chunk in values.chunks(500) {
        let sends = chunk.iter().map(|value| {
            producer.send(
                FutureRecord::<str, str>::to(topic)
                    .partition(partition)
                    .payload(value),
                Duration::from_secs(30),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }
}

fn config_for(services: &Services, topic: &str, lake: &Lake) -> ProcessorConfig {
    let mut config = ProcessorConfig::new(
        services.kafka_brokers.clone(),
        topic,
        LakeArgs {
            url: lake.url().to_string(),
            s3_endpoint: Some(services.s3_endpoint.clone()),
        },
    );
    config.group_id = unique("group");
    config
}

/// Runs a processor until `records` offsets are in the lake.
async fn process(config: ProcessorConfig, lake: &Lake, records: u64) -> Arc<Progress> {
    let shutdown = Shutdown::default();
    let processor = Processor::new(config, lake.clone()).unwrap();
    let progress = processor.progress();
    let task = tokio::spawn(processor.run(None, None, shutdown.signal()));
    wait_for_commits(&progress, records, Duration::from_secs(90)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    progress
}

/// `SUM(events)` of `aggregates` per publisher, and the latest hour counted.
async fn counted(lake: &Lake) -> (BTreeMap<String, i64>, Option<i64>) {
    use arrow::array::AsArray;
    let ctx = sqi_query::session(lake, &[Table::Aggregates], 2, sqi_query::Workload::Batch)
        .await
        .unwrap();
    let batch = sqi_query::collect_one(
        &ctx,
        "SELECT publisher, CAST(SUM(events) AS BIGINT) AS n, \
         CAST(MAX(CAST(window_start AS BIGINT)) AS BIGINT) AS latest \
         FROM aggregates GROUP BY 1",
    )
    .await
    .unwrap();
    let names = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let names = names.as_string::<i32>();
    let counts = batch
        .column(1)
        .as_primitive::<arrow::datatypes::Int64Type>();
    let latest = batch
        .column(2)
        .as_primitive::<arrow::datatypes::Int64Type>();
    let per_publisher = (0..batch.num_rows())
        .map(|i| (names.value(i).to_owned(), counts.value(i)))
        .collect();
    (
        per_publisher,
        (0..batch.num_rows()).map(|i| latest.value(i)).max(),
    )
}

/// The hour markers written for `topic`, as window starts.
async fn marked_hours(lake: &Lake, topic: &str) -> Vec<i64> {
    use futures::TryStreamExt;
    let prefix = lake.path(&format!(
        "{}/{topic}/hours",
        sqi_schemas::lake::paths::completeness::PREFIX
    ));
    let listed: Vec<_> = lake
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    listed
        .iter()
        .filter_map(|meta| {
            let text = meta.location.to_string();
            let dt = text.split("dt=").nth(1)?.get(..10)?;
            let hour: i64 = text.split("hour=").nth(1)?.get(..2)?.parse().ok()?;
            let day = chrono::NaiveDate::parse_from_str(dt, "%Y-%m-%d").ok()?;
            Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis() + hour * HOUR)
        })
        .collect()
}

/// The `sqi.dlq.error` header of each record of the dead-letter topic.
async fn dead_letter_reasons(brokers: &str, topic: &str, expected: usize) -> Vec<String> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    let consumer: StreamConsumer = sqi_integration_tests::kafka::client_config(brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Ok(message)) = tokio::time::timeout(left, consumer.recv()).await else {
            break;
        };
        let reason = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == sqi_processor::dlq::header::ERROR)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        reasons.push(reason.unwrap_or_default());
    }
    reasons
}

/// Item 1: event times from the future. 300 pageviews claiming to be 22 h
/// ahead (what ingest let through before it clamped to minutes) moved the
/// partition watermark to tomorrow, so the next 1,000 real events were all
/// "late" and dead-lettered, and tomorrow's hours were marked complete.
/// Records with event times past their receive time plus the future bound,
/// or before 2000, go to the dead-letter topic with a reason and never move
/// the watermark; no hour marker runs ahead of the wall clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn future_event_times_cannot_make_real_events_late() {
    let services = Services::from_env();
    let topic = unique("hostile-future");
    services.create_topic(&topic, 1).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut values: Vec<String> = (0..300)
        .map(|_| {
            let id = uuid::Uuid::new_v4().to_string();
            record(&id, "attacker", now + 22 * HOUR, now)
        })
        .collect();
    // Absurdly old event and receive times, too.
    values.push(record(
        &uuid::Uuid::new_v4().to_string(),
        "attacker",
        1_000,
        now,
    ));
    values.push(record(
        &uuid::Uuid::new_v4().to_string(),
        "attacker",
        now,
        1_000,
    ));
    values.extend((0..1_000).map(|i| {
        let id = uuid::Uuid::new_v4().to_string();
        record(&id, "victim", now - (i % 600) * 1_000, now)
    }));
    produce(&services.kafka_brokers, &topic, 0, &values).await;

    let (_, lake) = services.fresh_lake().await;
    let progress = process(
        config_for(&services, &topic, &lake),
        &lake,
        values.len() as u64,
    )
    .await;

    let (per_publisher, latest) = counted(&lake).await;
    assert_eq!(
        per_publisher.get("victim").copied(),
        Some(1_000),
        "every real event is counted: {per_publisher:?}"
    );
    assert_eq!(per_publisher.get("attacker"), None, "{per_publisher:?}");
    assert!(
        latest.is_some_and(|l| l <= now),
        "an hour from the future was counted"
    );
    let ahead: Vec<i64> = marked_hours(&lake, &topic)
        .await
        .into_iter()
        .filter(|h| h + HOUR > chrono::Utc::now().timestamp_millis())
        .collect();
    assert!(
        ahead.is_empty(),
        "hours marked complete before they ended: {ahead:?}"
    );
    assert_eq!(
        progress
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        302
    );
    let reasons = dead_letter_reasons(&services.kafka_brokers, &format!("{topic}-dlq"), 302).await;
    assert_eq!(reasons.len(), 302);
    assert!(
        reasons.iter().all(|r| r.starts_with("time:")),
        "{:?}",
        reasons.first()
    );
}

/// Item 0: a retry of a late event. Dedup remembered an id only while its
/// event time was within the 30 min dedup horizon of the watermark, but
/// events up to the 2 h allowed lateness were counted: an exact retry of an
/// event more than 30 min older than the newest one was counted twice.
/// The horizon is now measured on receive time, whatever the event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_is_counted_once_whatever_its_event_time() {
    use rand::{Rng, SeedableRng};
    let services = Services::from_env();
    let topic = unique("hostile-retry");
    services.create_topic(&topic, 1).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let events = 2_000;
    let mut values = Vec::new();
    let mut retries: Vec<(usize, String)> = Vec::new();
    for i in 0..events {
        // Event times spread over 80 minutes (a backlog, phones back
        // online), received within seconds.
        let ts = now - rng.random_range(0..80 * MINUTE);
        let id = uuid::Uuid::new_v4().to_string();
        let value = record(&id, "pub", ts, now - 10_000 + (i as i64) * 5);
        values.push(value.clone());
        if i % 20 == 0 {
            retries.push((i + rng.random_range(5..300), value));
        }
        while let Some(pos) = retries.iter().position(|(at, _)| *at <= i) {
            values.push(retries.remove(pos).1);
        }
    }
    values.extend(retries.into_iter().map(|(_, v)| v));
    produce(&services.kafka_brokers, &topic, 0, &values).await;

    let (_, lake) = services.fresh_lake().await;
    let progress = process(
        config_for(&services, &topic, &lake),
        &lake,
        values.len() as u64,
    )
    .await;
    let (per_publisher, _) = counted(&lake).await;
    assert_eq!(
        per_publisher.get("pub").copied(),
        Some(events as i64),
        "{} records, {events} distinct events",
        values.len()
    );
    assert_eq!(
        progress
            .committed_events
            .load(std::sync::atomic::Ordering::Relaxed),
        events as u64
    );
}

/// Seconds from a processor's start until `records` offsets are in the lake.
async fn seconds_to_process(config: ProcessorConfig, lake: &Lake, records: u64) -> f64 {
    let started = std::time::Instant::now();
    let _ = process(config, lake, records).await;
    started.elapsed().as_secs_f64()
}

/// Item 2: a stream of dead letters. Each one was produced and awaited
/// (`acks=all`) inside the consume loop, so ancient events at a high rate
/// throttled the whole partition to one broker round trip per record.
/// Dead letters are now enqueued and awaited together when their range is
/// written: a partition mixing 5,000 of them into its traffic is processed
/// about as fast as one without (measured in the same run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_of_dead_letters_does_not_throttle_the_partition() {
    let services = Services::from_env();
    let now = chrono::Utc::now().timestamp_millis();
    let normal = |i: i64| {
        let id = uuid::Uuid::new_v4().to_string();
        record(&id, "pub", now - (i % 600) * 1_000, now)
    };
    let mut runs = Vec::new();
    for attack in [false, true] {
        let topic = unique("hostile-dlq-rate");
        services.create_topic(&topic, 1).await;
        services.create_topic(&format!("{topic}-dlq"), 1).await;
        let values: Vec<String> = (0..7_000i64)
            .map(|i| {
                if attack && i % 7 < 5 {
                    // A day old: beyond the allowed lateness, dead-lettered.
                    let id = uuid::Uuid::new_v4().to_string();
                    record(&id, "ancient", now - 24 * HOUR, now)
                } else {
                    normal(i)
                }
            })
            .collect();
        produce(&services.kafka_brokers, &topic, 0, &values).await;
        let (_, lake) = services.fresh_lake().await;
        let config = config_for(&services, &topic, &lake);
        let seconds = seconds_to_process(config, &lake, values.len() as u64).await;
        let (per_publisher, _) = counted(&lake).await;
        let expected = if attack { 2_000 } else { 7_000 };
        assert_eq!(per_publisher.get("pub").copied(), Some(expected));
        runs.push(seconds);
    }
    let (plain, attacked) = (runs[0], runs[1]);
    assert!(
        attacked < 2.0 * plain,
        "5,000 dead letters among 7,000 records took {attacked:.1} s; 7,000 good records {plain:.1} s"
    );
}

/// Item 2: a dead-letter topic that does not exist. The loop retried the
/// dead letter every 500 ms forever: nothing more was written, the
/// processor stayed ready, and it ignored SIGTERM. Now it reports itself
/// unready, stops on shutdown, and nothing is lost: once the topic exists,
/// the next run writes every event and the dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_dead_letter_topic_makes_the_processor_unready_not_stuck() {
    let services = Services::from_env();
    let topic = unique("hostile-no-dlq");
    services.create_topic(&topic, 1).await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut values: Vec<String> = (0..100)
        .map(|_| record(&uuid::Uuid::new_v4().to_string(), "pub", now, now))
        .collect();
    values.push("{not json".to_owned());
    values.extend((0..100).map(|_| record(&uuid::Uuid::new_v4().to_string(), "pub", now, now)));
    produce(&services.kafka_brokers, &topic, 0, &values).await;
    let (_, lake) = services.fresh_lake().await;
    let config = config_for(&services, &topic, &lake);

    let (listener, admin) = sqi_integration_tests::listener().await;
    let shutdown = Shutdown::default();
    let processor = Processor::new(config.clone(), lake.clone()).unwrap();
    let first = processor.progress();
    let task = tokio::spawn(processor.run(Some(listener), None, shutdown.signal()));
    let readyz = format!("http://{admin}/readyz");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let status = client
            .get(&readyz)
            .send()
            .await
            .map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 503) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the processor stayed ready ({status:?}) with its dead-letter topic missing"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.trigger();
    let stopped = tokio::time::timeout(Duration::from_secs(45), task).await;
    assert!(stopped.is_ok(), "the processor ignored shutdown");

    let written = first
        .committed_records
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        written < values.len() as u64,
        "a range past the dead letter was written"
    );
    // The dead-letter producer must not create the topic with the broker's
    // defaults: with auto-creation on (as on this test broker) it did, so the
    // processor went on, and whether it was ever unready was a race.
    let dlq = format!("{topic}-dlq");
    let metadata = {
        use rdkafka::consumer::Consumer;
        sqi_integration_tests::watermark_reader(&services.kafka_brokers)
            .fetch_metadata(Some(&dlq), Duration::from_secs(10))
            .expect("metadata")
    };
    assert!(
        metadata
            .topics()
            .iter()
            .all(|t| t.name() != dlq || t.partitions().is_empty()),
        "the processor created its dead-letter topic"
    );

    services.create_topic(&dlq, 1).await;
    let progress = process(config, &lake, values.len() as u64 - written).await;
    let (per_publisher, _) = counted(&lake).await;
    assert_eq!(per_publisher.get("pub").copied(), Some(200));
    assert_eq!(
        progress
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// The offset after the last written range of `partition`, per the range log.
async fn written_through(lake: &Lake, topic: &str, partition: i32) -> i64 {
    let log = sqi_processor::range_log::PartitionLog::new(lake.clone(), topic, partition);
    let state = log.read().await.unwrap();
    match state.newest() {
        Some(newest) if log.is_written(newest).await.unwrap() => newest.end + 1,
        Some(newest) => newest.start,
        None => 0,
    }
}

/// Item 4: events as large as ingest accepts. Backpressure counted events
/// (2M by default), not bytes, so large-props events could hold many times
/// the pod's memory before the loop paused. With `--memory-budget` (here
/// via `SQI_MEMORY_BUDGET`) records waiting to be written hold at most half
/// the budget, and the open ranges are written as soon as they reach it.
/// The stated overhead: the processor's own RSS once started (runtime,
/// librdkafka, the debug build's code) plus 80 MiB (librdkafka's prefetch
/// and fetch buffers, per-thread heaps). Nothing is lost, nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_events_keep_the_processor_within_its_memory_budget() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const MIB: u64 = 1 << 20;
    let budget = 32 * MIB;
    let services = Services::from_env();
    let topic = unique("hostile-memory");
    services.create_topic(&topic, 1).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let (bucket, lake) = services.fresh_lake().await;
    let mut setup = sqi_integration_tests::ProcessorSetup::new(&services, &topic, &bucket);
    // Neither age nor file size closes a range during the test: memory
    // does, and idleness once everything is read.
    setup.args = [
        "--max-file-age",
        "30m",
        "--idle-timeout",
        "5s",
        "--target-file-bytes",
        "4294967296",
    ]
    .map(str::to_owned)
    .to_vec();
    setup
        .env
        .push(("SQI_MEMORY_BUDGET".to_owned(), budget.to_string()));
    // As in the image (Dockerfile): mimalloc commits arenas as they are used.
    setup
        .env
        .push(("MIMALLOC_ARENA_EAGER_COMMIT".to_owned(), "0".to_owned()));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let mut child = setup.spawn(&log);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = child.rss_bytes();
    let limit = baseline + budget + 80 * MIB;

    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let pid = child.pid();
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let rss = sqi_integration_tests::rss_bytes_of(pid);
                let _ = peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // 4,000 events of about 24 KiB (16 props of 1.5 KiB): 96 MiB, three
    // times the budget.
    let now = chrono::Utc::now().timestamp_millis();
    let filler = "x".repeat(1_500);
    let values: Vec<String> = (0..4_000)
        .map(|_| {
            let mut value: serde_json::Value =
                serde_json::from_str(&record(&uuid::Uuid::new_v4().to_string(), "pub", now, now))
                    .unwrap();
            value["props"] = (0..16)
                .map(|k| (format!("k{k}"), serde_json::Value::from(filler.as_str())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            value.to_string()
        })
        .collect();
    produce(&services.kafka_brokers, &topic, 0, &values).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rss = peak.load(Ordering::Relaxed);
        assert!(
            rss <= limit,
            "RSS reached {} MiB, over the {} MiB budget plus {} MiB started and 80 MiB",
            rss / MIB,
            budget / MIB,
            baseline / MIB
        );
        if written_through(&lake, &topic, 0).await >= values.len() as i64 {
            break;
        }
        assert!(
            child.child.try_wait().unwrap().is_none(),
            "the processor exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything was written (peak RSS {} MiB)",
            rss / MIB
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let rss = peak.load(Ordering::Relaxed);
    assert!(rss <= limit, "RSS reached {} MiB", rss / MIB);
    let (per_publisher, _) = counted(&lake).await;
    assert_eq!(per_publisher.get("pub").copied(), Some(4_000));
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "the processor exited"
    );
    println!(
        "peak RSS {} MiB (started at {} MiB, budget {} MiB)",
        rss / MIB,
        baseline / MIB,
        budget / MIB
    );
}
