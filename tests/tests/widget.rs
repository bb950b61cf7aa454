//! The share widget in a real browser: headless Chromium on a publisher page of
//! another origin loads `/widget.js` from ingest; the events land in Kafka.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sqi_ingest::IngestConfig;
use sqi_integration_tests::{Services, Shutdown, listener, read_topic, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_sends_a_pageview_a_share_and_a_clickback_from_chromium() {
    let services = Services::from_env();
    let topic = unique("widget");
    services.create_topic(&topic, 1).await;
    let (listener, addr) = listener().await;
    let shutdown = Shutdown::default();
    let ingest = tokio::spawn(sqi_ingest::run(
        IngestConfig::new(&services.kafka_brokers, &topic),
        listener,
        None,
        shutdown.signal(),
    ));

    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "browser", "widget.mjs"]
        .iter()
        .collect();
    let artifacts = std::env::temp_dir().join("sqi-test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("widget.png");
    let base = format!("http://{addr}");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&base)
            .arg(&screenshot)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let run: Value = serde_json::from_slice(&output.stdout).expect("JSON from widget.mjs");
    assert_eq!(
        run["errors"],
        serde_json::json!([]),
        "the page logged errors: {run}"
    );

    let kinds = |step: usize| -> Vec<(String, Option<String>)> {
        run["steps"][step]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["channel"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    let pageview = ("pageview".to_owned(), None);
    assert_eq!(kinds(0), vec![pageview.clone()], "load: {run}");
    assert_eq!(
        kinds(1),
        vec![("share".to_owned(), Some("facebook".to_owned()))],
        "share: {run}"
    );
    assert_eq!(
        kinds(2),
        vec![
            pageview,
            ("clickback".to_owned(), Some("facebook".to_owned()))
        ],
        "clickback: {run}"
    );
    assert!(
        !run["cleaned_url"].as_str().unwrap().contains("sqi_ch"),
        "the tag must be removed: {run}"
    );
    for step in run["steps"].as_array().unwrap() {
        for event in step["events"].as_array().unwrap() {
            assert!(
                !event["url"].as_str().unwrap().contains("sqi_ch"),
                "tagged url sent: {event}"
            );
        }
    }

    // Kafka holds exactly what the browser sent: two pageviews, one share, one clickback.
    let records = read_topic(&services.kafka_brokers, &topic, 4, Duration::from_secs(30)).await;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for record in &records {
        let key = (
            record.value["type"].as_str().unwrap().to_owned(),
            record.value["channel"].as_str().unwrap_or("-").to_owned(),
        );
        *counts.entry(key).or_default() += 1;
        assert_eq!(record.value["publisher"], "widget-test.example");
    }
    let expected: BTreeMap<(String, String), usize> = [
        (("clickback".to_owned(), "facebook".to_owned()), 1),
        (("pageview".to_owned(), "-".to_owned()), 2),
        (("share".to_owned(), "facebook".to_owned()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);

    shutdown.trigger();
    ingest.await.unwrap().unwrap();
}
