//! The report dashboard in a real browser: headless Chromium loads `/dashboard`
//! from `sqi report` with a publisher key, the page calls the API and draws its
//! charts with the Chart.js the binary serves, with no console errors and no
//! request to another origin. A screenshot is kept as a test artifact.

use std::path::PathBuf;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqi_batch::publishers::{self, Publisher};
use sqi_batch::{Gate, Shard};
use sqi_integration_tests::listener;
use sqi_processor::window::PartitionBuffer;
use sqi_report::{KeyRing, ReportState};
use sqi_schemas::event::EventType;
use sqi_schemas::lake::{Lake, LakeOptions};
use sqi_schemas::record::{Device, EventRecord};

const PUBLISHER_KEY: &str = "dashboard-publisher-key";
const MARKETER_KEY: &str = "dashboard-marketer-key";

/// Seven days (2024-05-01 to 07) of traffic for three publishers, through the
/// processor's encoder, and the batch's SQI for each day.
async fn lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &format!("file://{}", dir.path().display()),
        &LakeOptions::default(),
    )
    .unwrap();
    let mut buffer = PartitionBuffer::new(0);
    let mut offset = 0;
    let channels = ["facebook", "twitter", "linkedin", "email"];
    for day in 0..7 {
        for (p, publisher) in ["dash-news", "dash-food", "dash-tech"].iter().enumerate() {
            for n in 0..(300 + 40 * day + 60 * p as i64) {
                let ts = Utc
                    .with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
                    .unwrap()
                    .timestamp_millis()
                    + day * 86_400_000
                    + (n * 97_000) % 86_400_000;
                let kind = match n % 9 {
                    0 | 1 => EventType::Share,
                    2 => EventType::Clickback,
                    _ => EventType::Pageview,
                };
                let record = EventRecord {
                    v: 1,
                    event_id: uuid::Uuid::new_v4().to_string(),
                    publisher: (*publisher).to_owned(),
                    event_type: kind,
                    channel: (kind != EventType::Pageview)
                        .then(|| channels[(n as usize / 9) % 4].to_owned()),
                    url: format!("https://{publisher}.example/story-{}", n % 13),
                    referrer: None,
                    visitor: None,
                    ts,
                    received_at: ts,
                    device: if n % 17 == 0 {
                        Device::Bot
                    } else {
                        Device::Desktop
                    },
                    ip_prefix: None,
                    props: Default::default(),
                };
                buffer.add(offset, 0, &record.as_view().unwrap()).unwrap();
                offset += 1;
            }
        }
    }
    let files = sqi_processor::sink::encode("dashboard", 0, buffer).unwrap();
    sqi_processor::sink::upload(&lake, &files).await.unwrap();
    let dimension: Vec<Publisher> = ["dash-news", "dash-food", "dash-tech"]
        .iter()
        .map(|p| Publisher {
            publisher: (*p).to_owned(),
            domain: None,
            category: Some("news".to_owned()),
            created_at: Some(0),
        })
        .collect();
    publishers::write(&lake, &dimension).await.unwrap();
    for day in 1..=7 {
        let date = NaiveDate::from_ymd_opt(2024, 5, day).unwrap();
        let _ = sqi_batch::run_day(
            &lake,
            date,
            &Gate::allowing_incomplete("dashboard"),
            Shard::WHOLE,
        )
        .await
        .unwrap();
    }
    (dir, lake)
}

fn browse(url: String, screenshot: &str) -> (Value, PathBuf) {
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "browser", "dashboard.mjs"]
        .iter()
        .collect();
    let artifacts = std::env::temp_dir().join("sqi-test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join(screenshot);
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg(&screenshot)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        serde_json::from_slice(&output.stdout).expect("JSON from dashboard.mjs"),
        screenshot,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_a_publishers_report_in_chromium() {
    let (_dir, lake) = lake().await;
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = KeyRing::parse(&format!(
        r#"[{{"name":"news","sha256":"{}","scope":"publisher:dash-news"}},
            {{"name":"marketing","sha256":"{}","scope":"marketer"}}]"#,
        hash(PUBLISHER_KEY),
        hash(MARKETER_KEY)
    ))
    .unwrap();
    let state = ReportState::new(lake, keys, None).await.unwrap();
    let (listener, addr) = listener().await;
    drop(tokio::spawn(sqi_report::serve(
        state,
        listener,
        std::future::pending(),
    )));
    let fragment = "period=custom&from=2024-05-01&to=2024-05-07&tz=America/New_York";

    let url = format!("http://{addr}/dashboard#key={PUBLISHER_KEY}&publisher=dash-news&{fragment}");
    let (run, screenshot) = tokio::task::spawn_blocking(move || browse(url, "dashboard.png"))
        .await
        .unwrap();
    assert_eq!(run["state"], "ready", "{run}");
    assert_eq!(run["errors"], serde_json::json!([]), "{run}");
    assert_eq!(
        run["external"],
        serde_json::json!([]),
        "nothing may come from a CDN: {run}"
    );
    // Seven New York days, zero-filled, for each of the three metrics.
    let traffic = run["charts"]["traffic-chart"].as_array().unwrap();
    assert_eq!(traffic.len(), 3, "{run}");
    assert!(traffic.iter().all(|n| n == 7), "{run}");
    assert!(
        run["charts"]["channel-chart"][0].as_u64().unwrap() >= 4,
        "{run}"
    );
    // The SQI exists once the 28-day window holds 1,000 pageviews; the peer median every day.
    assert!(
        run["charts"]["sqi-chart"][0].as_u64().unwrap() >= 1,
        "{run}"
    );
    assert_eq!(run["charts"]["sqi-chart"][1], 7, "{run}");
    assert_ne!(run["tiles"]["pageviews"], "–");
    assert!(
        run["tiles"]["peer"].as_str().unwrap().contains("peers"),
        "{run}"
    );
    assert_eq!(run["top_url_rows"], 13, "{run}");
    assert_eq!(
        run["leaderboard_visible"], false,
        "a publisher key has no leaderboard: {run}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);

    let url = format!("http://{addr}/dashboard#key={MARKETER_KEY}");
    let (run, _) = tokio::task::spawn_blocking(move || browse(url, "dashboard-marketer.png"))
        .await
        .unwrap();
    assert_eq!(run["state"], "ready", "{run}");
    assert_eq!(run["errors"], serde_json::json!([]), "{run}");
    assert_eq!(run["leaderboard_visible"], true, "{run}");
    assert_eq!(run["leaderboard_rows"], 3, "{run}");
}

/// Issue 24, check 2: the link `sqi demo` prints, opened as a newcomer
/// would, shows the last 28 days from the demo's history: a point a day in
/// "Over time", an SQI history beside its peer-median line, a comparison
/// with the previous 28 days, the score explained in one line, and the
/// publisher marked on its category's leaderboard. The screenshot is kept
/// (`dashboard-demo.png` among the test artifacts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_printed_link_shows_four_weeks_of_history() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = std::process::Command::new(sqi_integration_tests::sqi_binary())
        .args(["demo", "--publishers", "40", "--seed", "5"])
        .args(["--report-listen", "127.0.0.1:0", "--lake-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sqi demo starts");
    let stdout = demo.stdout.take().unwrap();
    let (printed, link) = tokio::task::spawn_blocking(move || {
        let mut printed = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if let Some(link) = line.trim().strip_prefix("dashboard: ") {
                return (printed, Some(link.to_owned()));
            }
        }
        (printed, None)
    })
    .await
    .unwrap();
    let Some(link) = link else {
        let _ = demo.kill();
        panic!("no dashboard link printed:\n{printed}");
    };
    assert!(link.contains("period=28d"), "{link}");
    assert!(
        printed.contains("history: ") && printed.contains("live path: "),
        "{printed}"
    );
    let publisher = link
        .split("publisher=")
        .nth(1)
        .and_then(|p| p.split('&').next())
        .unwrap()
        .to_owned();
    let (run, kept) = tokio::task::spawn_blocking(move || browse(link, "dashboard-demo.png"))
        .await
        .unwrap();
    let _ = demo.kill();
    let _ = demo.wait();
    assert_eq!(run["state"], "ready", "{run}");
    assert_eq!(run["errors"], serde_json::json!([]), "{run}");
    let traffic = run["charts"]["traffic-chart"].as_array().unwrap();
    assert!(
        traffic.len() == 3 && traffic.iter().all(|n| n.as_u64().unwrap() >= 28),
        "fewer than 28 points over time: {run}"
    );
    let labels = &run["chart_labels"]["sqi-chart"];
    assert_eq!(labels, &serde_json::json!(["SQI", "Peer median"]), "{run}");
    for (i, series) in ["SQI", "peer median"].iter().enumerate() {
        assert!(
            run["charts"]["sqi-chart"][i].as_u64().unwrap() >= 20,
            "{series} has too few days: {run}"
        );
    }
    for metric in ["pageviews", "shares", "clickbacks"] {
        let change = run["changes"][metric].as_str().unwrap();
        assert!(
            change.ends_with("vs previous"),
            "{metric}: {change:?} in {run}"
        );
    }
    let explain = run["explain"].as_str().unwrap();
    assert!(
        explain.contains("share rate") && explain.contains("× the") && explain.contains("median"),
        "{explain:?}"
    );
    assert_eq!(
        run["selected_rows"],
        serde_json::json!([publisher]),
        "{run}"
    );
    assert!(std::fs::metadata(&kept).unwrap().len() > 10_000);
}
