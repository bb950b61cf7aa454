//! Hostile input: processor. See `main.rs`.
//!
//! Records are produced straight to the topic, as ingest (or anything else
//! that can write to it) would: the processor must not trust that ingest
//! already cleaned them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqi_integration_tests::{Services, Shutdown, python_check, unique, wait_for_commits};
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
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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
    let ctx = sqi::query::session(lake, &[Table::Aggregates], 2, sqi::query::Workload::Batch)
        .await
        .unwrap();
    let batch = sqi::query::collect_one(
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
    (per_publisher, (0..batch.num_rows()).map(|i| latest.value(i)).max())
}

/// The hour markers written for `topic`, as window starts.
async fn marked_hours(lake: &Lake, topic: &str) -> Vec<i64> {
    use futures::TryStreamExt;
    let prefix = lake.path(&format!(
        "{}/{topic}/hours",
        sqi_processor::completeness::PREFIX
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
    values.push(record(&uuid::Uuid::new_v4().to_string(), "attacker", 1_000, now));
    values.push(record(&uuid::Uuid::new_v4().to_string(), "attacker", now, 1_000));
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
    assert!(latest.is_some_and(|l| l <= now), "an hour from the future was counted");
    let ahead: Vec<i64> = marked_hours(&lake, &topic)
        .await
        .into_iter()
        .filter(|h| h + HOUR > chrono::Utc::now().timestamp_millis())
        .collect();
    assert!(ahead.is_empty(), "hours marked complete before they ended: {ahead:?}");
    assert_eq!(
        progress
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        302
    );
    let letters = python_check(
        "read_topic.py",
        &[&services.kafka_brokers, &format!("{topic}-dlq"), "1", "30"],
    );
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 302);
    assert!(
        letters
            .iter()
            .all(|l| l["headers"]["sqi.dlq.error"].as_str().unwrap().starts_with("time:")),
        "{:?}",
        letters.first()
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
