//! The processor against Apache Kafka and moto: bad records reach the dead-letter
//! topic with their origin while processing goes on, and replaying the same
//! offsets into an empty lake gives the same rows.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqi_integration_tests::{
    Services, Shutdown, Workload, high_watermarks, python_check, unique, wait_for_commits,
    wait_until_written, watermark_reader,
};
use sqi_processor::{Processor, ProcessorConfig};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::{Lake, Table};

fn good_record(n: u32) -> String {
    record_at(n, 1_750_000_000_000i64 + i64::from(n) * 60_000)
}

fn record_at(n: u32, ts: i64) -> String {
    serde_json::json!({
        "v": 1, "event_id": uuid::Uuid::new_v4().to_string(), "publisher": format!("pub-{}", n % 3),
        "type": if n.is_multiple_of(4) { "share" } else { "pageview" },
        "channel": if n.is_multiple_of(4) { serde_json::json!("facebook") } else { serde_json::Value::Null },
        "url": format!("https://pub.example/{}", n % 5), "referrer": null, "visitor": null,
        "ts": ts, "received_at": ts,
        "device": "desktop", "ip_prefix": null, "props": {}
    })
    .to_string()
}

/// Produces one record keyed `k{n}` and waits for the broker's acknowledgement.
async fn send(
    producer: &FutureProducer,
    record: FutureRecord<'_, str, [u8]>,
    n: u32,
    value: &[u8],
) {
    let key = format!("k{n}");
    producer
        .send(record.key(&key).payload(value), Duration::from_secs(10))
        .await
        .unwrap();
}

/// The test configuration for `topic` into `lake`, in a group of its own.
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

async fn process_until(services: &Services, topic: &str, lake: &Lake, records: u64) -> u64 {
    let shutdown = Shutdown::default();
    let config = config_for(services, topic, lake);
    let processor = Processor::new(config, lake.clone()).unwrap();
    let progress = processor.progress();
    let task = tokio::spawn(processor.run(None, None, shutdown.signal()));
    wait_for_commits(&progress, records, Duration::from_secs(60)).await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    progress.late.load(Ordering::Relaxed)
}

async fn sums(lake: &Lake) -> BTreeMap<String, i64> {
    use arrow::array::AsArray;
    let ctx = sqi_query::session(lake, &[Table::Aggregates], 2, sqi_query::Workload::Batch)
        .await
        .unwrap();
    let batch = sqi_query::collect_one(
        &ctx,
        "SELECT CAST(window_start AS VARCHAR) || '|' || publisher || '|' || COALESCE(channel, '-') || '|' || event_type || '|' || device AS k, SUM(events) AS n FROM aggregates GROUP BY 1",
    )
    .await
    .unwrap();
    let keys = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let keys = keys.as_string::<i32>();
    let counts = batch
        .column(1)
        .as_primitive::<arrow::datatypes::Int64Type>();
    (0..batch.num_rows())
        .map(|i| (keys.value(i).to_owned(), counts.value(i)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_records_reach_the_dead_letter_topic_and_replays_agree() {
    let services = Services::from_env();
    let topic = unique("proc");
    services.create_topic(&topic, 2).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let producer: FutureProducer =
        sqi_integration_tests::kafka::client_config(&services.kafka_brokers)
            .create()
            .unwrap();
    let mut sent = 0u64;
    for n in 0..40u32 {
        send(
            &producer,
            FutureRecord::to(&topic),
            n,
            good_record(n).as_bytes(),
        )
        .await;
        sent += 1;
    }
    let bad_json = b"{not json at all".to_vec();
    let violating =
        serde_json::json!({"v": 1, "event_id": "not-a-uuid", "publisher": "p", "type": "share"})
            .to_string();
    for (key, value) in [
        ("bad-json", bad_json.clone()),
        ("bad-schema", violating.clone().into_bytes()),
    ] {
        let headers = OwnedHeaders::new().insert(Header {
            key: "origin-header",
            value: Some("kept"),
        });
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(key)
                    .payload(&value)
                    .partition(0)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        sent += 1;
    }
    for n in 40..50u32 {
        send(
            &producer,
            FutureRecord::to(&topic),
            n,
            good_record(n).as_bytes(),
        )
        .await;
        sent += 1;
    }

    let (_, first) = services.fresh_lake().await;
    let _ = process_until(&services, &topic, &first, sent).await;
    let first_sums = sums(&first).await;
    assert_eq!(
        first_sums.values().sum::<i64>(),
        50,
        "every good record counted once"
    );

    // The dead letters, read by confluent-kafka: original bytes and headers, plus origin and reason.
    let letters = python_check(
        "read_topic.py",
        &[&services.kafka_brokers, &format!("{topic}-dlq"), "2", "30"],
    );
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in letters {
        let headers = &letter["headers"];
        assert_eq!(headers["sqi.dlq.topic"], topic.as_str());
        assert_eq!(headers["sqi.dlq.partition"], "0");
        assert!(
            headers["sqi.dlq.offset"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert!(!headers["sqi.dlq.error"].as_str().unwrap().is_empty());
        assert_eq!(headers["origin-header"], "kept");
    }
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["headers"]["sqi.dlq.error"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not a v1 event record")),
        "{reasons:?}"
    );
    assert!(
        letters.iter().any(|l| l["value"] == "{not json at all"),
        "original bytes kept: {letters:?}"
    );

    // Replaying the same offsets into an empty lake gives the same rows.
    let (_, second) = services.fresh_lake().await;
    let _ = process_until(&services, &topic, &second, sent).await;
    assert_eq!(sums(&second).await, first_sums);
    let first_events = event_rows(&first).await;
    assert_eq!(first_events.len(), 50);
    assert_eq!(event_rows(&second).await, first_events);
}

/// Every `events` row, as text, in `event_id` order.
async fn event_rows(lake: &Lake) -> Vec<String> {
    use arrow::array::AsArray;
    let ctx = sqi_query::session(lake, &[Table::Events], 2, sqi_query::Workload::Batch)
        .await
        .unwrap();
    let batch = sqi_query::collect_one(
        &ctx,
        "SELECT event_id || '|' || publisher || '|' || \"type\" || '|' || COALESCE(channel, '-') || '|' || url || '|' || CAST(ts AS VARCHAR) || '|' || device AS row FROM events ORDER BY event_id",
    )
    .await
    .unwrap();
    let rows = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    let rows = rows.as_string::<i32>();
    (0..batch.num_rows())
        .map(|i| rows.value(i).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_events_within_the_lateness_count_in_their_hour_and_later_ones_are_dead_lettered() {
    let services = Services::from_env();
    let topic = unique("late");
    services.create_topic(&topic, 1).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let producer: FutureProducer =
        sqi_integration_tests::kafka::client_config(&services.kafka_brokers)
            .create()
            .unwrap();
    let hour = 3_600_000i64;
    let base = 1_750_000_000_000i64 / hour * hour;
    // In offset order: now (sets the watermark), 30 minutes late, 3 hours late (beyond the default 2 h).
    let (on_time, late_ok, too_late) = (
        base + 3 * hour + 10 * 60_000,
        base + 3 * hour - 20 * 60_000,
        base,
    );
    for (n, ts) in [(1, on_time), (2, late_ok), (3, too_late)] {
        send(
            &producer,
            FutureRecord::to(&topic),
            n,
            record_at(n, ts).as_bytes(),
        )
        .await;
    }
    let (_, lake) = services.fresh_lake().await;
    let late = process_until(&services, &topic, &lake, 3).await;
    assert_eq!(late, 1, "exactly one event is beyond the lateness");

    let per_hour: BTreeMap<String, i64> = sums(&lake)
        .await
        .into_iter()
        .map(|(k, n)| (k.split('|').next().unwrap().to_owned(), n))
        .fold(BTreeMap::new(), |mut m, (h, n)| {
            *m.entry(h).or_insert(0) += n;
            m
        });
    assert_eq!(per_hour.len(), 2, "{per_hour:?}");
    assert_eq!(per_hour.values().sum::<i64>(), 2, "{per_hour:?}");

    let letters = python_check(
        "read_topic.py",
        &[&services.kafka_brokers, &format!("{topic}-dlq"), "1", "30"],
    );
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0]["headers"]["sqi.dlq.error"]
            .as_str()
            .unwrap()
            .starts_with("late:")
    );
    assert_eq!(letters[0]["value"]["ts"], too_late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_partition_still_gets_its_files_and_completeness_marker() {
    use object_store::ObjectStoreExt;
    let services = Services::from_env();
    let topic = unique("idle");
    services.create_topic(&topic, 3).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let producer: FutureProducer =
        sqi_integration_tests::kafka::client_config(&services.kafka_brokers)
            .create()
            .unwrap();
    let hour = 3_600_000i64;
    let now = chrono::Utc::now().timestamp_millis();
    let old_hour = (now - 5 * hour).div_euclid(hour) * hour;
    // Partition 0 moves on to the present; partition 1 gets one event in the
    // old hour and then nothing; partition 2 never gets anything.
    for (n, partition, ts) in [
        (1, 0, old_hour + 10 * 60_000),
        (2, 0, now - 60_000),
        (3, 1, old_hour + 20 * 60_000),
    ] {
        send(
            &producer,
            FutureRecord::to(&topic).partition(partition),
            n,
            record_at(n, ts).as_bytes(),
        )
        .await;
    }
    let (_, lake) = services.fresh_lake().await;
    let mut config = config_for(&services, &topic, &lake);
    // Only idleness can close these ranges.
    config.max_file_age = Duration::from_secs(3600);
    config.idle_timeout = Duration::from_secs(3);
    let shutdown = Shutdown::default();
    let processor = Processor::new(config, lake.clone()).unwrap();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(processor.run(None, None, shutdown.signal()));

    let marker = lake.path(&sqi_schemas::lake::paths::completeness::hour_marker(
        &topic, old_hour,
    ));
    let partition_1_file = lake.path(&format!(
        "aggregates/{}/{topic}+1+{:020}-{:020}.parquet",
        sqi_schemas::lake::hour_partition(old_hour),
        0,
        0
    ));
    let deadline = started + Duration::from_secs(25);
    loop {
        let marked = lake.store().head(&marker).await.is_ok();
        let written = lake.store().head(&partition_1_file).await.is_ok();
        if marked && written {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {:?}: hour marker {marked}, idle partition's file {written}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "the idle hour closed {:?} after the processor started",
        started.elapsed()
    );
    // The present hour is not complete: partition 0 can still add to it.
    let current = lake.path(&sqi_schemas::lake::paths::completeness::hour_marker(
        &topic,
        now.div_euclid(hour) * hour,
    ));
    assert!(lake.store().head(&current).await.is_err());
    shutdown.trigger();
    task.await.unwrap().unwrap();
}

/// Issue 20, check 4: a processor with production rotation (5 min file age,
/// 1 min idle timeout) started on a backlog writes it as it reads it. It
/// used to hold every record it read in its open ranges until the partition
/// went idle: 1M records were written all at once over a minute after they
/// were read, and a member killed before then left nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_is_written_as_it_is_read_not_once_the_partition_is_idle() {
    let services = Services::from_env();
    let topic = unique("catch-up");
    let partitions = 4;
    services.create_topic(&topic, partitions).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    // 100,000 events a second apart, received long before the processor
    // starts: a backlog.
    let now = chrono::Utc::now().timestamp_millis();
    let workload = Workload::new(100_000, now - 30 * 3_600_000, 21);
    workload
        .produce(&services.kafka_brokers, &topic, 1_000_000)
        .await;
    let high = high_watermarks(
        &watermark_reader(&services.kafka_brokers),
        &topic,
        partitions,
    );
    let (bucket, lake) = services.fresh_lake().await;
    let mut config = config_for(&services, &topic, &lake);
    config.max_file_age = Duration::from_secs(300);
    config.idle_timeout = Duration::from_secs(60);
    // Shorter than the production 10 s: the test's backlog is smaller.
    config.catch_up_file_age = Duration::from_secs(1);
    let shutdown = Shutdown::default();
    let processor = Processor::new(config, lake.clone()).unwrap();
    let task = tokio::spawn(processor.run(None, None, shutdown.signal()));
    wait_until_written(
        &services.kafka_brokers,
        &lake,
        &topic,
        partitions,
        Duration::from_secs(240),
    )
    .await;
    shutdown.trigger();
    task.await.unwrap().unwrap();
    workload.assert_exact(&services, &bucket);
    // Read after the run from the files themselves: polling the range log
    // while the processor writes races it (the newest range is claimed
    // before its files land, so a poll mostly sees nothing written).
    let ranges = written_ranges(&lake, &topic).await;
    let first_ends: Vec<Option<i64>> = (0..partitions)
        .map(|p| ranges.get(&p).and_then(|r| r.first()).map(|(_, end)| *end))
        .collect();
    assert!(
        first_ends
            .iter()
            .zip(&high)
            .any(|(end, high)| end.is_some_and(|end| end + 1 < *high)),
        "the first ranges written held their partitions' whole backlogs \
         (first range ends {first_ends:?}, high watermarks {high:?}): nothing \
         was written until the partitions went idle"
    );
}

/// Every offset range of `topic` with a file in `aggregates`, by partition,
/// read from the files' names (`{topic}+{partition}+{start}-{end}.parquet`).
async fn written_ranges(lake: &Lake, topic: &str) -> BTreeMap<i32, Vec<(i64, i64)>> {
    use futures::TryStreamExt as _;
    let prefix = lake.path(Table::Aggregates.prefix());
    let files: Vec<_> = lake
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list aggregates");
    let mut ranges: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for meta in files {
        let name = meta.location.filename().unwrap_or_default();
        let Some(rest) = name
            .strip_prefix(&format!("{topic}+"))
            .and_then(|r| r.strip_suffix(".parquet"))
        else {
            continue;
        };
        let parsed = rest.split_once('+').and_then(|(partition, offsets)| {
            let (start, end) = offsets.split_once('-')?;
            Some((
                partition.parse().ok()?,
                start.parse().ok()?,
                end.parse().ok()?,
            ))
        });
        let (partition, start, end) = parsed.expect("a processor file name");
        ranges.entry(partition).or_default().push((start, end));
    }
    for list in ranges.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    ranges
}
