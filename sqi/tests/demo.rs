//! `sqi demo --once` runs the whole pipeline on the embedded default (mock
//! Kafka cluster, local directory) and prints an SQI table worth reading.

use sqi::demo::{DemoArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_scores_over_a_hundred_publishers_across_the_whole_range() {
    let dir = tempfile::tempdir().unwrap();
    let args = DemoArgs {
        publishers: 130,
        day: None,
        lake_dir: Some(dir.path().to_path_buf()),
        report_listen: "127.0.0.1:0".parse().unwrap(),
        once: true,
        seed: 7,
    };
    let mut printed = Vec::new();
    let outcome = run(&args, &mut printed).await.expect("demo runs");
    let printed = String::from_utf8(printed).unwrap();

    let mut scores: Vec<i32> = outcome.rows.iter().filter_map(|r| r.sqi).collect();
    scores.sort_unstable();
    assert!(
        scores.len() >= 100,
        "only {} publishers scored",
        scores.len()
    );
    let median = scores[scores.len() / 2];
    assert!(
        scores[0] <= 15 && scores[scores.len() - 1] >= 185,
        "range {scores:?}"
    );
    assert!((85..=115).contains(&median), "median {median}");
    assert!(outcome.accepted > 100_000);
    for row in outcome.rows.iter().filter(|r| r.sqi.is_none()) {
        assert!(row.pageviews < 1000, "{row:?} is eligible but unscored");
    }
    // The table is printed, best first, and ends with the top 10.
    assert!(printed.contains("SQI for every publisher"));
    let top = printed
        .split("Top 10 SQI:")
        .nth(1)
        .expect("top-10 table at the end");
    assert_eq!(
        top.lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        10
    );
}
