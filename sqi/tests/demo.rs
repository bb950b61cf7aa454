//! `sqi demo --once` runs the whole pipeline on the embedded default (mock
//! Kafka cluster, local directory) and prints an SQI table worth reading.

use sqi::demo::{DemoArgs, run};

/// `--once` on `lake_dir`, with a fixed seed.
fn demo_args(publishers: u32, lake_dir: &std::path::Path) -> DemoArgs {
    DemoArgs {
        publishers,
        day: None,
        days: 35,
        lake_dir: Some(lake_dir.to_path_buf()),
        report_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        once: true,
        seed: 7,
        log_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_scores_over_a_hundred_publishers_across_the_whole_range() {
    let dir = tempfile::tempdir().unwrap();
    let args = demo_args(130, dir.path());
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
    // Issue 24, item 1: 34 days of history before the live day, each
    // scored, and their months merged, so the report has day tables, month
    // files and a month of SQI history to serve.
    assert_eq!(outcome.history.len(), 34, "{:?}", outcome.history);
    let partitions = |table: &str| {
        std::fs::read_dir(dir.path().join(table)).map_or(0, |entries| entries.count())
    };
    assert_eq!(partitions("sqi"), 35, "a scored day is missing");
    assert!(partitions("monthly") >= 1 && partitions("monthly_hours") >= 1);
    assert!(
        printed.contains("history: ") && printed.contains("live path: "),
        "{printed}"
    );
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

/// A second run on the same directory found the first run's range log and
/// waited for offsets the new mock cluster never reached.
#[tokio::test]
async fn a_lake_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("aggregates")).unwrap();
    let args = demo_args(10, dir.path());
    let error = run(&args, &mut Vec::new()).await.expect_err("refused");
    assert!(error.to_string().contains("is not empty"), "{error}");
}

/// The binary's demo, as a newcomer runs it: the terminal shows progress and
/// the table, the logs go to a file in the lake directory, and every event
/// ingest acknowledged is committed (the release binary's run is
/// [`the_release_demo_commits_every_acknowledged_event`]).
#[test]
fn the_binary_demo_is_quiet_and_commits_every_acknowledged_event() {
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |rust_log: Option<&str>, dir: &std::path::Path| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sqi"));
        command
            .args(["demo", "--once", "--publishers", "10", "--lake-dir"])
            .arg(dir)
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().expect("sqi runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stdout}\n{stderr}");
        (stdout, stderr)
    };
    let is_log_line = |line: &str| {
        [" INFO ", " WARN ", " ERROR ", " DEBUG "]
            .iter()
            .any(|level| line.contains(level))
    };

    let (stdout, stderr) = run(None, dir.path());
    let logged: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| is_log_line(l))
        .collect();
    assert!(logged.is_empty(), "log lines on the terminal: {logged:#?}");
    assert!(stderr.trim().is_empty(), "stderr: {stderr}");
    let log_file = dir.path().join("sqi-demo.log");
    assert!(
        stdout.contains(&log_file.display().to_string()),
        "the log file is not named: {stdout}"
    );
    let logs = std::fs::read_to_string(&log_file).expect("the log file");
    assert!(logs.lines().any(is_log_line), "the log file is empty");
    let acknowledged = number_after(&stdout, "ingest acknowledged ").expect("acknowledged");
    let committed = number_after(&stdout, "processor committed ").expect("committed");
    assert!(acknowledged > 0);
    assert_eq!(committed, acknowledged, "{stdout}");

    // With RUST_LOG set the logs come back to the terminal.
    let (_, stderr) = run(Some("info"), other_dir.path());
    assert!(
        stderr.lines().any(is_log_line),
        "RUST_LOG=info logged nothing"
    );
}

/// Issue 24, check 1: the release binary's demo, as the image runs it, ends
/// with every acknowledged event committed. Its processor once fell behind
/// the mock cluster's bounded log and lost records, and the demo then waited
/// forever; the debug build was too slow to show it. `scripts/test` builds
/// the release binary first and names it in `SQI_RELEASE_BINARY`; run alone,
/// this test builds it (`cargo build --release -p sqi`).
#[test]
fn the_release_demo_commits_every_acknowledged_event() {
    let binary = match std::env::var_os("SQI_RELEASE_BINARY") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "sqi",
                    "--bin",
                    "sqi",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the release build failed");
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                std::path::PathBuf::from,
            );
            target.join("release/sqi")
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(&binary)
        .args(["demo", "--once", "--lake-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("the release sqi runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acknowledged = number_after(&stdout, "ingest acknowledged ").expect("acknowledged");
    let committed = number_after(&stdout, "processor committed ").expect("committed");
    assert!(acknowledged > 300_000, "{stdout}");
    assert_eq!(committed, acknowledged, "{stdout}");
}

/// The integer printed right after `prefix`, if there is one.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    text.split(prefix)
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
