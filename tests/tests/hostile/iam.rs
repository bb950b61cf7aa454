//! Item 17: each role runs with exactly the IAM policy `deploy/iam/` gives it,
//! enforced by a moto server of the test's own, so a policy that is too narrow
//! fails the role and one that is too wide fails the denials below.
//!
//! moto authorises GetObject, PutObject and DeleteObject against each policy's
//! resources, which is where our prefixes live. It does not evaluate the
//! `s3:prefix` conditions on ListBucket, so the listing half of each policy is
//! written for AWS and checked there only (`deploy/README.md` says so).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use object_store::{ObjectStoreExt, PutPayload};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sqi_integration_tests::{
    ProcessorSetup, Services, free_address, sha256_hex, sqi_binary, unique, wait_until_written,
};
use sqi_schemas::lake::{Lake, LakeOptions};

const DAY: &str = "2025-03-10";
/// 2025-03-10T00:00:00Z.
const DAY_START_MS: i64 = 1_741_564_800_000;
const EVENTS: u32 = 300;

/// moto with IAM enforced after the admin's three bootstrap actions.
struct IamMoto {
    child: std::process::Child,
    endpoint: String,
    /// Role (`admin`, `ingest`, `processor`, `batch`, `report`) → (key id, secret).
    keys: HashMap<String, (String, String)>,
}

impl IamMoto {
    async fn start(bucket: &str, policies: &std::path::Path) -> Self {
        let port = free_address().port();
        let child = Command::new("python3")
            .arg(repo().join("tests/py/moto_iam.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_iam.py starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut up = false;
        for _ in 0..150 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "moto_iam.py did not listen on {endpoint}");
        let setup = Command::new("python3")
            .arg(repo().join("tests/py/iam_setup.py"))
            .args([&endpoint, bucket, "lake"])
            .arg(policies)
            .output()
            .expect("iam_setup.py runs");
        assert!(
            setup.status.success(),
            "iam_setup.py: {}",
            String::from_utf8_lossy(&setup.stderr)
        );
        let parsed: Value = serde_json::from_slice(&setup.stdout).expect("keys JSON");
        let keys = parsed
            .as_object()
            .expect("object of roles")
            .iter()
            .map(|(role, key)| {
                let text = |f: &str| key[f].as_str().expect("key field").to_owned();
                (role.clone(), (text("id"), text("secret")))
            })
            .collect();
        Self {
            child,
            endpoint,
            keys,
        }
    }

    fn key(&self, role: &str) -> &(String, String) {
        self.keys
            .get(role)
            .unwrap_or_else(|| panic!("no policy for role {role}"))
    }

    /// The lake as `role` sees it.
    fn lake(&self, bucket: &str, role: &str) -> Lake {
        let (id, secret) = self.key(role);
        Lake::open(
            &format!("s3://{bucket}/lake"),
            &LakeOptions {
                s3_endpoint: Some(self.endpoint.clone()),
                s3_options: vec![
                    ("aws_access_key_id".into(), id.clone()),
                    ("aws_secret_access_key".into(), secret.clone()),
                    ("aws_region".into(), "us-east-1".into()),
                ],
            },
        )
        .expect("open lake")
    }

    /// `sqi` with `role`'s credentials and the lake.
    fn sqi(&self, bucket: &str, role: &str) -> Command {
        let (id, secret) = self.key(role);
        let mut command = Command::new(sqi_binary());
        command
            .env("SQI_LAKE_URL", format!("s3://{bucket}/lake"))
            .env("SQI_S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1");
        command
    }
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The policies under test: `deploy/iam/`, or another directory to show how a
/// wrong policy fails (`SQI_TEST_IAM_POLICIES`).
fn policies() -> PathBuf {
    std::env::var_os("SQI_TEST_IAM_POLICIES")
        .map_or_else(|| repo().join("deploy/iam"), PathBuf::from)
}

fn record(n: u32) -> String {
    let ts = DAY_START_MS + i64::from(n) * 60_000;
    let share = n.is_multiple_of(3);
    json!({
        "v": 1, "event_id": uuid::Uuid::new_v4().to_string(),
        "publisher": if n.is_multiple_of(2) { "alpha.com" } else { "beta.org" },
        "type": if share { "share" } else { "pageview" },
        "channel": if share { json!("facebook") } else { Value::Null },
        "url": format!("https://alpha.com/{}", n % 7), "referrer": null, "visitor": null,
        "ts": ts, "received_at": ts + 1_000,
        "device": "desktop", "ip_prefix": null, "props": {}
    })
    .to_string()
}

async fn produce(brokers: &str, topic: &str) {
    let producer: FutureProducer = sqi_integration_tests::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for n in 0..EVENTS {
        let value = record(n);
        let key = format!("k{n}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }
}

/// What `role` must not do: each is a request its policy leaves out.
async fn assert_denied(lake: &Lake, role: &str, read: &[&str], write: &[&str]) {
    for path in read {
        let result = lake.store().get(&lake.path(path)).await;
        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("403") || error.contains("AccessDenied"),
            "{role} read {path}: expected a denial, got {error:?}"
        );
    }
    for path in write {
        let result = lake
            .store()
            .put(&lake.path(path), PutPayload::from_static(b"x"))
            .await;
        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("403") || error.contains("AccessDenied"),
            "{role} wrote {path}: expected a denial, got {error:?}"
        );
    }
}

/// Item 17: every role does its whole job with only its own policy, and
/// nothing beyond it; the report never reads `events/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_with_exactly_its_iam_policy() {
    let services = Services::from_env();
    let bucket = unique("iam");
    let moto = IamMoto::start(&bucket, &policies()).await;
    let admin = moto.lake(&bucket, "admin");
    let work = tempfile::tempdir().expect("tempdir");

    // An operator (admin) loads the publisher dimension.
    let csv = work.path().join("publishers.csv");
    std::fs::write(
        &csv,
        "publisher,domain,category,created_at\nalpha.com,alpha.com,news,2025-01-01\nbeta.org,beta.org,news,2025-01-01\n",
    )
    .expect("csv");
    let status = moto
        .sqi(&bucket, "admin")
        .args(["publishers", "import"])
        .arg(&csv)
        .status()
        .expect("sqi publishers import");
    assert!(status.success(), "publishers import as admin");

    // ingest: its allowlist comes from the lake's publishers table.
    let allowlist = sqi_ingest::allowlist::load_from_lake(&moto.lake(&bucket, "ingest"))
        .await
        .expect("ingest reads publishers/ with its policy");
    assert_eq!(allowlist.len(), 2);

    // processor: a topic's records into events/, aggregates/, url_counts/,
    // its range log and the completeness markers.
    let topic = unique("iam");
    services.create_topic(&topic, 2).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    produce(&services.kafka_brokers, &topic).await;
    let (id, secret) = moto.key("processor").clone();
    let mut setup = ProcessorSetup::new(&services, &topic, &bucket);
    setup.s3_endpoint = moto.endpoint.clone();
    setup.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), id),
        ("AWS_SECRET_ACCESS_KEY".into(), secret),
    ];
    let log = work.path().join("processor.log");
    let mut processor = setup.spawn(&log);
    wait_until_written(
        &services.kafka_brokers,
        &admin,
        &topic,
        2,
        Duration::from_secs(120),
    )
    .await;
    // Idle and caught up, the processor's watermark follows the wall clock,
    // which closes every hour of the day: the batch then runs gated.
    let date = chrono::NaiveDate::parse_from_str(DAY, "%Y-%m-%d").expect("day");
    let mut open_hours = Vec::new();
    for _ in 0..120 {
        open_hours = sqi_batch::missing_hours(&admin, &topic, date)
            .await
            .expect("read markers");
        if open_hours.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(open_hours.is_empty(), "hours never closed: {open_hours:?}");
    let exit = processor.terminate();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "processor exit {exit:?}: {log_text}");
    assert!(
        !log_text.contains("AccessDenied"),
        "the processor was refused something: {log_text}"
    );

    // batch: the day and the month merge.
    let batch = moto
        .sqi(&bucket, "batch")
        .args(["batch", "--date", DAY, "--topic", &topic])
        .output()
        .expect("sqi batch");
    assert!(
        batch.status.success(),
        "batch with its policy: {}",
        String::from_utf8_lossy(&batch.stderr)
    );
    let monthly = admin.list_parquet("monthly/").await.expect("list monthly");
    assert!(!monthly.is_empty(), "the month merge wrote monthly/");

    // report: every endpoint, over day tables and hourly tables.
    let raw_key = "iam-marketer-key";
    let keys_file = work.path().join("keys.json");
    std::fs::write(
        &keys_file,
        json!([{"name": "m", "sha256": sha256_hex(raw_key), "scope": "marketer"}]).to_string(),
    )
    .expect("keys");
    let listen = free_address();
    let mut report = moto
        .sqi(&bucket, "report")
        .arg("report")
        .args(["--listen", &listen.to_string()])
        .arg("--api-keys-file")
        .arg(&keys_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqi report");
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let mut ready = false;
    for _ in 0..100 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "report never answered");
    let period = format!("period=custom&from={DAY}&to={DAY}");
    let mut pageviews = None;
    for path in [
        format!("/v1/publishers/alpha.com/summary?{period}"),
        format!("/v1/publishers/alpha.com/timeseries?{period}&interval=hour"),
        format!("/v1/publishers/alpha.com/timeseries?{period}&interval=day"),
        format!("/v1/publishers/alpha.com/channels?{period}"),
        format!("/v1/publishers/alpha.com/top-urls?{period}"),
        "/v1/publishers/alpha.com/sqi".to_owned(),
        format!("/v1/sqi/leaderboard?date={DAY}"),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(raw_key)
            .send()
            .await
            .expect("report answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{path} with the report's policy: {body}");
        if path.contains("summary") {
            pageviews = body["pageviews"].as_u64();
        }
    }
    let _ = report.kill();
    let _ = report.wait();
    let expected = (0..EVENTS)
        .filter(|n| n.is_multiple_of(2) && !n.is_multiple_of(3))
        .count() as u64;
    assert_eq!(
        pageviews,
        Some(expected),
        "the report counted alpha.com's pageviews"
    );

    // Nothing beyond each policy: these are exactly the requests a role
    // must never make. An events file exists, so a denial is not a 404.
    let events = admin.list_parquet("events/").await.expect("list events");
    let event_file = events
        .first()
        .expect("the processor wrote events/")
        .location
        .as_ref()
        .trim_start_matches("lake/")
        .to_owned();
    let day_file = format!("daily/dt={DAY}/{}", sqi_batch::DAY_FILE);
    assert_denied(
        &moto.lake(&bucket, "report"),
        "report",
        &[&event_file, "publishers/publishers.parquet"],
        &[&day_file, "sqi/dt=2025-03-10/x.parquet"],
    )
    .await;
    assert_denied(
        &moto.lake(&bucket, "ingest"),
        "ingest",
        &[&event_file, &day_file],
        &["publishers/publishers.parquet"],
    )
    .await;
    assert_denied(
        &moto.lake(&bucket, "processor"),
        "processor",
        &[&day_file, "publishers/publishers.parquet"],
        &[&day_file, "publishers/x.parquet"],
    )
    .await;
    assert_denied(
        &moto.lake(&bucket, "batch"),
        "batch",
        &[&event_file],
        &[
            "aggregates/dt=2025-03-10/hour=00/x.parquet",
            "publishers/x.parquet",
        ],
    )
    .await;
}
