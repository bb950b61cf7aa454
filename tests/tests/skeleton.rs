//! The walking skeleton: widget events over HTTP → Kafka → processor → moto S3
//! → batch (DataFusion) → report API, with exact counts at every stage and the
//! outputs checked by tools SQI Engine did not write (DuckDB, pyarrow,
//! confluent-kafka).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::{Value, json};
use sqi_batch::{self as batch, publishers};
use sqi_ingest::IngestConfig;
use sqi_integration_tests::{Services, Shutdown, listener, python_check, unique, wait_for_commits};
use sqi_processor::{Processor, ProcessorConfig};
use sqi_report as report;
use sqi_schemas::cli::LakeArgs;

const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// (channel, shares, clickbacks)
type ChannelPlan = (&'static str, u32, u32);
/// (publisher, pageviews, channels)
type PublisherPlan = (&'static str, u32, &'static [ChannelPlan]);

const PLAN: [PublisherPlan; 3] = [
    (
        "alpha.com",
        1500,
        &[("facebook", 40, 15), ("twitter", 20, 5)],
    ),
    ("beta.org", 1100, &[("linkedin", 10, 1), ("email", 5, 0)]),
    ("gamma.net", 300, &[("reddit", 10, 2)]),
];
const ALPHA_BOT_PAGEVIEWS: u32 = 50;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 15).unwrap()
}

fn event(publisher: &str, kind: &str, channel: Option<&str>, n: u32) -> Value {
    let ts = day()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
        + i64::from(n) * 1000;
    let mut e = json!({"publisher": publisher, "type": kind, "url": format!("https://{publisher}/story/{}", n % 7), "ts": ts});
    if let Some(c) = channel {
        // Aliases and odd case must normalise to the catalog slug.
        e["channel"] = json!(if c == "twitter" { "X" } else { c });
    }
    e
}

/// Every event the plan sends, with the user agent it is sent under.
fn planned_events() -> Vec<(&'static str, Value)> {
    let mut events = Vec::new();
    for (publisher, pageviews, channels) in PLAN {
        for n in 0..pageviews {
            events.push((DESKTOP, event(publisher, "pageview", None, n)));
        }
        for (channel, shares, clickbacks) in channels {
            for n in 0..*shares {
                events.push((DESKTOP, event(publisher, "share", Some(channel), n)));
            }
            for n in 0..*clickbacks {
                events.push((DESKTOP, event(publisher, "clickback", Some(channel), n)));
            }
        }
    }
    for n in 0..ALPHA_BOT_PAGEVIEWS {
        events.push((BOT, event("alpha.com", "pageview", None, n)));
    }
    events
}

/// The exact aggregate sums the plan must produce, keyed like the lake.
fn expected_sums() -> BTreeMap<(String, Option<String>, String, String), i64> {
    let mut sums = BTreeMap::new();
    for (publisher, pageviews, channels) in PLAN {
        let _ = sums.insert(
            (publisher.into(), None, "pageview".into(), "desktop".into()),
            i64::from(pageviews),
        );
        for (channel, shares, clickbacks) in channels {
            let _ = sums.insert(
                (
                    publisher.into(),
                    Some((*channel).into()),
                    "share".into(),
                    "desktop".into(),
                ),
                i64::from(*shares),
            );
            if *clickbacks > 0 {
                let _ = sums.insert(
                    (
                        publisher.into(),
                        Some((*channel).into()),
                        "clickback".into(),
                        "desktop".into(),
                    ),
                    i64::from(*clickbacks),
                );
            }
        }
    }
    let _ = sums.insert(
        ("alpha.com".into(), None, "pageview".into(), "bot".into()),
        i64::from(ALPHA_BOT_PAGEVIEWS),
    );
    sums
}

async fn post(client: &reqwest::Client, url: &str, ua: &str, body: String) -> (u16, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", ua)
        .body(body)
        .send()
        .await
        .expect("ingest reachable");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_flow_from_http_to_the_sqi_report_with_exact_counts() {
    let services = Services::from_env();
    let brokers = services.kafka_brokers.clone();
    skeleton(services, brokers).await;
}

/// The same path with every Kafka client (ingest, the processor and its
/// dead-letter producer, confluent-kafka's reader) on the SASL_SSL listener
/// with SCRAM-SHA-512, as production on Strimzi runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_skeleton_runs_over_sasl_ssl_with_scram() {
    let services = Services::from_env();
    let brokers = sqi_integration_tests::kafka::SaslListener::from_env().brokers;
    skeleton(services, brokers).await;
}

/// The walking skeleton with its clients connected to `brokers` (either
/// listener of the test broker); topics are made over PLAINTEXT.
async fn skeleton(services: Services, brokers: String) {
    let topic = unique("skeleton");
    services.create_topic(&topic, 3).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let (bucket, lake) = services.fresh_lake().await;
    let shutdown = Shutdown::default();

    // Ingest, in process, against Kafka.
    let (ingest_listener, ingest_addr) = listener().await;
    let mut ingest_config = IngestConfig::new(brokers.clone(), topic.clone());
    ingest_config.kafka = sqi_integration_tests::kafka::args(&brokers, &topic);
    let ingest = tokio::spawn(sqi_ingest::run(
        ingest_config,
        ingest_listener,
        None,
        shutdown.signal(),
    ));
    let url = format!("http://{ingest_addr}/v1/events");
    let client = reqwest::Client::new();

    // Bad input: each gets a 400 with the contract's error body, and nothing is produced.
    for (body, code) in [
        ("this is not json".to_owned(), "invalid_json"),
        (json!(["not an object"]).to_string(), "invalid_event"),
        (json!({"publisher": "alpha.com", "type": "share", "channel": "myface", "url": "https://alpha.com/"}).to_string(), "unknown_channel"),
        (json!({"type": "pageview", "url": "https://alpha.com/"}).to_string(), "missing_field"),
    ] {
        let (status, answer) = post(&client, &url, DESKTOP, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // The plan, in batches of 100 per user agent, plus one rejected event inside a batch.
    let planned = planned_events();
    let mut accepted = 0u64;
    for ua in [DESKTOP, BOT] {
        let mine: Vec<Value> = planned
            .iter()
            .filter(|(u, _)| *u == ua)
            .map(|(_, e)| e.clone())
            .collect();
        for chunk in mine.chunks(100) {
            let mut batch = chunk.to_vec();
            batch.push(
                json!({"publisher": "alpha.com", "type": "share", "url": "https://alpha.com/"}),
            );
            let (status, answer) =
                post(&client, &url, ua, json!({"events": batch}).to_string()).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["accepted"].as_u64(), Some(chunk.len() as u64));
            assert_eq!(
                answer["rejected"][0]["index"].as_u64(),
                Some(chunk.len() as u64)
            );
            assert_eq!(answer["rejected"][0]["code"], "missing_channel");
            accepted += chunk.len() as u64;
        }
    }
    assert_eq!(accepted, planned.len() as u64);

    // The processor, in process, writes the lake on moto.
    let lake_args = LakeArgs {
        url: format!("s3://{bucket}/lake"),
        s3_endpoint: Some(services.s3_endpoint.clone()),
    };
    let mut config = ProcessorConfig::new(brokers.clone(), topic.clone(), lake_args);
    config.kafka = sqi_integration_tests::kafka::args(&brokers, &topic);
    config.group_id = unique("group");
    let processor = Processor::new(config, lake.clone()).expect("processor");
    let progress = processor.progress();
    let processing = tokio::spawn(processor.run(None, None, shutdown.signal()));
    wait_for_commits(&progress, accepted, Duration::from_secs(90)).await;
    assert_eq!(progress.committed_events.load(Ordering::Relaxed), accepted);

    // Counts summed from `aggregates` equal the events posted, key by key.
    let ctx = sqi_query::session(
        &lake,
        &[sqi_schemas::lake::Table::Aggregates],
        2,
        sqi_query::Workload::Batch,
    )
    .await
    .unwrap();
    let rows = sqi_query::collect_one(
        &ctx,
        "SELECT publisher, channel, event_type, device, SUM(events) AS events FROM aggregates GROUP BY 1, 2, 3, 4",
    )
    .await
    .unwrap();
    let mut lake_sums = BTreeMap::new();
    {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::Int64Type;
        let s = |i: usize| rows.column(i).as_string::<i32>().clone();
        let (p, c, t, d) = (s(0), s(1), s(2), s(3));
        let n = rows.column(4).as_primitive::<Int64Type>();
        for i in 0..rows.num_rows() {
            let channel = (!c.is_null(i)).then(|| c.value(i).to_owned());
            let _ = lake_sums.insert(
                (
                    p.value(i).to_owned(),
                    channel,
                    t.value(i).to_owned(),
                    d.value(i).to_owned(),
                ),
                n.value(i),
            );
        }
    }
    assert_eq!(lake_sums, expected_sums());

    // The batch job computes daily/ and sqi/ for the day.
    publishers::write(&lake, &publishers::parse_csv("publisher,domain,category,created_at\nalpha.com,alpha.com,news,2025-01-01\nbeta.org,beta.org,news,2025-06-01\n").unwrap())
        .await
        .unwrap();
    let outcome = batch::run_day(
        &lake,
        day(),
        &batch::Gate::allowing_incomplete(&topic),
        batch::Shard::WHOLE,
    )
    .await
    .expect("batch");
    assert_eq!(outcome.sqi_rows, 3);
    assert_eq!(outcome.scored, 2);

    // The report API answers with the same numbers, bots excluded.
    let raw_key = "skeleton-marketer-key";
    let keys = report::KeyRing::parse(
        &json!([{"name": "t", "sha256": sha256_hex(raw_key), "scope": "marketer"}]).to_string(),
    )
    .unwrap();
    let state = report::ReportState::new(lake.clone(), keys, None)
        .await
        .unwrap();
    let (report_listener, report_addr) = listener().await;
    let serving = tokio::spawn(report::serve(state, report_listener, shutdown.signal()));
    let summary = |publisher: &str, extra: &str| {
        format!(
            "http://{report_addr}/v1/publishers/{publisher}/summary?period=custom&from={d}&to={d}{extra}",
            d = day()
        )
    };
    for (publisher, pageviews, channels) in PLAN {
        let answer: Value = client
            .get(summary(publisher, ""))
            .bearer_auth(raw_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let shares: u32 = channels.iter().map(|c| c.1).sum();
        let clickbacks: u32 = channels.iter().map(|c| c.2).sum();
        assert_eq!(
            answer["pageviews"].as_u64(),
            Some(u64::from(pageviews)),
            "{answer}"
        );
        assert_eq!(
            answer["shares"].as_u64(),
            Some(u64::from(shares)),
            "{answer}"
        );
        assert_eq!(
            answer["clickbacks"].as_u64(),
            Some(u64::from(clickbacks)),
            "{answer}"
        );
        assert!(answer["data_as_of"].is_string(), "{answer}");
        let sqi = &answer["sqi"];
        // Readers can tell a provisional day from a closed one.
        assert!(sqi["complete"].is_boolean(), "{answer}");
        if pageviews >= 1000 {
            // Two eligible publishers in the network group: mid-ranks give 50 and 150.
            assert!(matches!(sqi["sqi"].as_i64(), Some(50 | 150)), "{answer}");
            assert_eq!(sqi["peer_group"], "network");
            assert_eq!(sqi["peer_count"], 2);
        } else {
            assert!(sqi["sqi"].is_null(), "{answer}");
            assert_eq!(sqi["reason"], "insufficient_pageviews");
        }
    }
    let with_bots: Value = client
        .get(summary("alpha.com", "&include_bots=true"))
        .bearer_auth(raw_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        with_bots["pageviews"].as_u64(),
        Some(1500 + u64::from(ALPHA_BOT_PAGEVIEWS))
    );
    let unauthorized = client.get(summary("alpha.com", "")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    // Tools nobody here wrote: DuckDB and pyarrow read the lake from moto.
    let checked = python_check(
        "check_lake.py",
        &[
            "--endpoint",
            &services.s3_endpoint,
            "--bucket",
            &bucket,
            "--prefix",
            "lake",
        ],
    );
    let columns = |table: &str| -> Vec<String> {
        checked["tables"][table]["columns"]
            .as_array()
            .unwrap_or_else(|| panic!("{table} missing: {checked}"))
            .iter()
            .map(|c| c[0].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        columns("aggregates"),
        [
            "window_start",
            "publisher",
            "channel",
            "event_type",
            "device",
            "events"
        ]
    );
    assert_eq!(
        columns("url_counts"),
        [
            "window_start",
            "publisher",
            "url",
            "event_type",
            "channel",
            "events"
        ]
    );
    assert_eq!(
        columns("events"),
        [
            "v",
            "event_id",
            "publisher",
            "type",
            "channel",
            "url",
            "referrer",
            "visitor",
            "ts",
            "received_at",
            "device",
            "ip_prefix",
            "props"
        ]
    );
    assert_eq!(
        columns("daily"),
        [
            "date",
            "publisher",
            "channel",
            "event_type",
            "device",
            "events",
            "complete"
        ]
    );
    assert_eq!(
        columns("daily_urls"),
        [
            "date",
            "publisher",
            "url",
            "event_type",
            "events",
            "complete"
        ]
    );
    assert_eq!(
        columns("first_seen"),
        ["publisher", "first_day", "complete"]
    );
    assert_eq!(
        columns("publishers"),
        ["publisher", "domain", "category", "created_at"]
    );
    assert_eq!(
        columns("sqi"),
        [
            "date",
            "publisher",
            "category",
            "peer_group",
            "peer_count",
            "pageviews",
            "shares",
            "clickbacks",
            "share_rate",
            "clickback_rate",
            "social_traffic_ratio",
            "score_z",
            "sqi",
            "reason",
            "provisional",
            "sqi_version",
            "complete"
        ]
    );
    assert_eq!(checked["misplaced_aggregate_rows"], 0);
    assert_eq!(checked["event_ids"], json!([accepted, accepted]));
    let duck_sums: BTreeMap<_, _> = checked["aggregate_sums"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["publisher"].as_str().unwrap().to_owned(),
                    r["channel"].as_str().map(str::to_owned),
                    r["event_type"].as_str().unwrap().to_owned(),
                    r["device"].as_str().unwrap().to_owned(),
                ),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(duck_sums, expected_sums());

    // confluent-kafka reads the topic and sees the normalised JSON values.
    let records = python_check(
        "read_topic.py",
        &[&brokers, &topic, &accepted.to_string(), "60"],
    );
    let records = records.as_array().unwrap();
    assert_eq!(
        records.len() as u64,
        accepted,
        "independent reader saw a different count"
    );
    let mut ids = std::collections::HashSet::new();
    for record in records {
        let value = &record["value"];
        assert_eq!(value["v"], 1);
        assert_eq!(record["key"], value["event_id"]);
        assert!(ids.insert(value["event_id"].as_str().unwrap().to_owned()));
        assert!(value["ts"].is_i64() && value["received_at"].is_i64());
        assert!(["desktop", "bot"].contains(&value["device"].as_str().unwrap()));
        assert_eq!(value["ip_prefix"], "127.0.0.0");
        match value["type"].as_str().unwrap() {
            "pageview" => assert!(value["channel"].is_null()),
            _ => assert!(
                ["facebook", "twitter", "linkedin", "email", "reddit"]
                    .contains(&value["channel"].as_str().unwrap())
            ),
        }
    }

    shutdown.trigger();
    ingest.await.unwrap().unwrap();
    processing.await.unwrap().unwrap();
    serving.await.unwrap().unwrap();
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
