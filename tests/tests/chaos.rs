//! The short chaos run CI does on every push (issue 8): two minutes of load
//! with random processor kills, broker restarts, S3 freezes and ingest
//! SIGTERMs, ending in an exact count. And the proof that the count can
//! fail: one acknowledged event injected twice must be caught.
//! The ten-minute run is `scripts/chaos`.

use std::time::Duration;

use sqi_integration_tests::chaos::{self, ChaosConfig, Fault};

fn config(seconds: u64, faults: bool, inject_double_count: bool) -> ChaosConfig {
    ChaosConfig {
        duration: Duration::from_secs(seconds),
        rate: 200,
        faults: if faults {
            Fault::ALL.to_vec()
        } else {
            Vec::new()
        },
        inject_double_count,
        sample_rss_every: None,
        seed: std::env::var("SQI_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(42),
        dedup_horizon: None,
        max_file_age: None,
        log_dir: chaos::log_dir("chaos-test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_faults_lose_and_double_nothing() {
    let config = config(120, true, false);
    let report = chaos::run(&config).await.expect("chaos run");
    assert!(!report.faults.is_empty(), "no fault was injected");
    assert!(report.acked_events > 0);
    assert!(
        report.mismatches.is_empty(),
        "{}\n{}\nlogs: {}",
        chaos::markdown(&config, &report),
        report.mismatches.join("\n"),
        config.log_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_double_count_is_caught() {
    let config = config(15, false, true);
    let report = chaos::run(&config).await.expect("chaos run");
    let doubled: Vec<&String> = report
        .mismatches
        .iter()
        .filter(|m| m.starts_with("aggregates:") && m.contains("acknowledged"))
        .collect();
    assert_eq!(doubled.len(), 1, "{:#?}", report.mismatches);
    assert!(
        report.mismatches.iter().any(|m| m.starts_with("events:")),
        "{:#?}",
        report.mismatches
    );
}
