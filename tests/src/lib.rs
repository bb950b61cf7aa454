//! Shared helpers for the end-to-end tests in `tests/tests/`.
//!
//! The services are real: an Apache Kafka broker and a moto S3 server on loopback,
//! started by `scripts/services` (which `scripts/test` calls), and found through
//! `SQI_TEST_KAFKA_BROKERS` and `SQI_TEST_S3_ENDPOINT`. Every test makes its own
//! topics and bucket, so tests never see each other's data.

pub mod chaos;
pub mod kafka;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqi_schemas::lake::{Lake, LakeOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Where the real services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// Kafka bootstrap address of the broker's PLAINTEXT listener.
    pub kafka_brokers: String,
    /// moto's S3 endpoint URL.
    pub s3_endpoint: String,
}

impl Services {
    /// Reads the service addresses; fails loudly when the suite was not started by `scripts/test`.
    pub fn from_env() -> Self {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the suite with scripts/test, which starts Kafka and moto")
            })
        };
        Self {
            kafka_brokers: get("SQI_TEST_KAFKA_BROKERS"),
            s3_endpoint: get("SQI_TEST_S3_ENDPOINT"),
        }
    }

    /// Creates a topic (idempotently).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        create_topic(&self.kafka_brokers, name, partitions).await;
    }

    /// Creates a bucket on moto.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .put(format!(
                "{}/{bucket}",
                self.s3_endpoint.trim_end_matches('/')
            ))
            .send()
            .await
            .expect("moto reachable");
        assert!(
            response.status().is_success(),
            "create bucket: {}",
            response.status()
        );
    }

    /// The lake options for moto, with explicit dummy credentials (no env mutation).
    pub fn lake_options(&self) -> LakeOptions {
        LakeOptions {
            s3_endpoint: Some(self.s3_endpoint.clone()),
            s3_options: vec![
                ("aws_access_key_id".into(), "test".into()),
                ("aws_secret_access_key".into(), "test".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
        }
    }

    /// `sqi`, pointed at the lake `s3://{bucket}/lake` on moto through the
    /// environment (`SQI_LAKE_URL`, `SQI_S3_ENDPOINT`, moto's credentials);
    /// add the subcommand and its own flags.
    pub fn sqi_on_lake(&self, bucket: &str) -> Command {
        let mut command = Command::new(sqi_binary());
        command
            .env("SQI_LAKE_URL", format!("s3://{bucket}/lake"))
            .env("SQI_S3_ENDPOINT", &self.s3_endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
        command
    }

    /// A fresh bucket and the lake inside it at `s3://bucket/lake`.
    pub async fn fresh_lake(&self) -> (String, Lake) {
        let bucket = unique("lake");
        self.create_bucket(&bucket).await;
        let lake =
            Lake::open(&format!("s3://{bucket}/lake"), &self.lake_options()).expect("open lake");
        (bucket, lake)
    }
}

/// Creates a topic on `brokers` (idempotently).
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(brokers)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&[topic], &options)
        .await
        .expect("create topic");
    for result in results {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "create {topic}"
            );
        }
    }
}

/// A name no other test uses: lower-case, DNS- and topic-safe.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A shutdown switch for in-process roles.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }
}

impl Shutdown {
    /// A future that resolves once [`Shutdown::trigger`] is called.
    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Stops everything that holds a signal.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Binds an ephemeral loopback port.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Runs one of the Python checks in `tests/py/` and parses its JSON output.
pub fn python_check(script: &str, args: &[&str]) -> serde_json::Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "py", script].iter().collect();
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// The key as text.
    pub key: Option<String>,
    /// The value parsed as JSON (`Null` when it is not JSON).
    pub value: serde_json::Value,
    /// The partition.
    pub partition: i32,
}

/// Reads a topic from the beginning until `expected` records arrive or
/// `timeout` passes, then keeps reading for a second to catch extras.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = kafka::client_config(brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut linger_until: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let until = linger_until.unwrap_or(deadline);
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, consumer.recv()).await {
            Ok(Ok(message)) => {
                let value = message
                    .payload()
                    .and_then(|p| serde_json::from_slice(p).ok())
                    .unwrap_or(serde_json::Value::Null);
                records.push(ReadRecord {
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    value,
                    partition: message.partition(),
                });
                if records.len() >= expected && linger_until.is_none() {
                    linger_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => break,
        }
    }
    records
}

/// How many records a topic holds (sum of high watermarks).
pub fn topic_count(brokers: &str, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka::client_config(brokers)
        .set("group.id", unique("watermarks"))
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            high - low
        })
        .sum()
}

/// The `sqi` binary built for this run: beside a binary of this crate
/// (`sqi-chaos`), or one directory up from the test executables in `deps/`.
pub fn sqi_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let beside = exe.parent().expect("exe dir");
    let dir = if beside.join("sqi").is_file() {
        beside
    } else {
        beside.parent().expect("target dir")
    };
    let binary = dir.join("sqi");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace`",
        binary.display()
    );
    binary
}

/// An Apache Kafka broker of the test's own (`scripts/kafka run`), with its
/// data in a directory of its own, so that it can be killed, stopped and
/// restarted on the same port without losing what it acknowledged.
#[derive(Debug)]
pub struct OwnBroker {
    script: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

/// The line Kafka logs once it serves requests (`scripts/kafka` keeps it).
const BROKER_STARTED: &str = "Kafka Server started";

impl OwnBroker {
    /// Formats and starts a fresh broker on a free loopback port.
    pub async fn start() -> Self {
        let script = PathBuf::from(
            std::env::var("SQI_TEST_KAFKA_SCRIPT")
                .expect("SQI_TEST_KAFKA_SCRIPT: run the suite with scripts/test"),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Self {
            script,
            port,
            dir,
            child: None,
        };
        broker.resume().await;
        broker
    }

    /// The process id (the JVM's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The bootstrap address.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the broker's log goes: beside its data, appended across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    fn log_file(&self) -> std::process::Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from)
    }

    /// The broker's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with SIGTERM, as a rolling restart would: Kafka
    /// shuts down cleanly. Waits up to 30 s before killing it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data (formatting them on the
    /// first start), and waits until it serves requests.
    pub async fn resume(&mut self) {
        let started_before = self.log().matches(BROKER_STARTED).count();
        let data = self.dir.path().join("broker");
        let child = Command::new(&self.script)
            .arg("run")
            .arg(&data)
            .arg(self.port.to_string())
            .stdout(self.log_file())
            .stderr(self.log_file())
            .spawn()
            .expect("scripts/kafka starts");
        self.child = Some(child);
        // The first start formats the storage and makes a JVM twice.
        for _ in 0..1200 {
            if self.log().matches(BROKER_STARTED).count() > started_before {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(std::process::Child::try_wait) {
                panic!("own kafka exited with {status}; its log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "own kafka did not start on {} in 120 s; its log:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Shows the services' logs in test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Waits until the processor has committed at least `records` offsets.
pub async fn wait_for_commits(progress: &sqi_processor::Progress, records: u64, timeout: Duration) {
    use std::sync::atomic::Ordering;
    let deadline = tokio::time::Instant::now() + timeout;
    while progress.committed_records.load(Ordering::Relaxed) < records {
        assert!(
            tokio::time::Instant::now() < deadline,
            "processor committed {} of {records} records in {timeout:?}",
            progress.committed_records.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `sqi process` as a child process, so that tests can `kill -9`, `SIGSTOP`
/// and `SIGCONT` it like an orchestrator or a crash would.
#[derive(Debug)]
pub struct ProcessorChild {
    /// The child.
    pub child: std::process::Child,
}

/// What every processor child of one test shares.
#[derive(Debug, Clone)]
pub struct ProcessorSetup {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The events topic (the DLQ is `{topic}-dlq`).
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// The lake URL.
    pub lake_url: String,
    /// The S3 endpoint.
    pub s3_endpoint: String,
    /// Extra `--flag value` pairs.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The admin listener (`/metrics`).
    pub listen: SocketAddr,
}

impl ProcessorSetup {
    /// Defaults for the crash tests: quick rotation, a short session timeout
    /// so that a killed member's partitions move on quickly, 48 h lateness.
    pub fn new(services: &Services, topic: &str, bucket: &str) -> Self {
        Self {
            brokers: services.kafka_brokers.clone(),
            topic: topic.to_owned(),
            group: unique("group"),
            lake_url: format!("s3://{bucket}/lake"),
            s3_endpoint: services.s3_endpoint.clone(),
            args: [
                "--max-file-age",
                "1s",
                "--idle-timeout",
                "3s",
                "--allowed-lateness",
                "48h",
                "--kafka-config",
                "session.timeout.ms=3000",
                "--kafka-config",
                "heartbeat.interval.ms=500",
            ]
            .map(str::to_owned)
            .to_vec(),
            env: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Joins with `protocol`'s group protocol (`classic` or `consumer`).
    /// KIP-848's `consumer` protocol leaves the session timeout and the
    /// heartbeat to the broker (librdkafka refuses them), so the client's
    /// are dropped; the test broker gives such groups a 6 s session.
    pub fn use_group_protocol(&mut self, protocol: &str) {
        if protocol == "consumer" {
            self.use_default_session();
        }
        self.args
            .extend(["--group-protocol".to_owned(), protocol.to_owned()]);
    }

    /// Drops the crash tests' 3 s session (and its heartbeat), so members
    /// run with `sqi process`'s own (`--session-timeout`, 10 s).
    pub fn use_default_session(&mut self) {
        let mut args = Vec::with_capacity(self.args.len());
        let mut given = std::mem::take(&mut self.args).into_iter().peekable();
        while let Some(arg) = given.next() {
            let client_session = given.peek().is_some_and(|value| {
                value.starts_with("session.timeout.ms=")
                    || value.starts_with("heartbeat.interval.ms=")
            });
            if arg == "--kafka-config" && client_session {
                given.next();
                continue;
            }
            args.push(arg);
        }
        self.args = args;
    }

    /// Starts one processor.
    pub fn spawn(&self, log: &std::path::Path) -> ProcessorChild {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("processor log");
        let child = Command::new(sqi_binary())
            .arg("process")
            .args(["--kafka-brokers", &self.brokers])
            .args(["--topic", &self.topic])
            .args(["--dlq-topic", &format!("{}-dlq", self.topic)])
            .args(["--group-id", &self.group])
            .args(["--lake-url", &self.lake_url])
            .args(["--s3-endpoint", &self.s3_endpoint])
            .args(["--listen", &self.listen.to_string()])
            .args(&self.args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env(
                "RUST_LOG",
                std::env::var("SQI_TEST_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("sqi process starts");
        ProcessorChild { child }
    }
}

impl ProcessorChild {
    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("wait")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes_of(self.child.id())
    }
}

/// A process's resident set size now, in bytes (0 once it has gone).
pub fn rss_bytes_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Drop for ProcessorChild {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A consumer outside every group, for reading high watermarks.
pub fn watermark_reader(brokers: &str) -> rdkafka::consumer::BaseConsumer {
    kafka::client_config(brokers)
        .set("group.id", unique("watermarks"))
        .create()
        .expect("consumer")
}

/// Each partition's high watermark (the offset after its last record).
pub fn high_watermarks(
    reader: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Vec<i64> {
    use rdkafka::consumer::Consumer;
    (0..partitions)
        .map(|p| {
            reader
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// The end of each partition's newest range whose files are all written
/// (-1 where there is none), from the lake's range log.
pub async fn written_ends(lake: &Lake, topic: &str, partitions: i32) -> Vec<i64> {
    let mut ends = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let log = sqi_processor::range_log::PartitionLog::new(lake.clone(), topic, p);
        let state = log.read().await.expect("range log");
        // The newest range is claimed before its files land, so it is often
        // not written yet while the ones before it are.
        let mut end = -1;
        for range in state.ranges.values().rev() {
            if log.is_written(range).await.expect("head") {
                end = range.end;
                break;
            }
        }
        ends.push(end);
    }
    ends
}

/// Waits until the lake's range log covers every record of `topic` with
/// written files: the processors have caught up, whoever they were.
pub async fn wait_until_written(
    brokers: &str,
    lake: &Lake,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) {
    let reader = watermark_reader(brokers);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut behind = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let high = high_watermarks(&reader, topic, partitions);
        let written = written_ends(lake, topic, partitions).await;
        // (partition, high watermark, newest written range end)
        behind = (0..partitions)
            .zip(high.into_iter().zip(written))
            .filter(|(_, (high, end))| end + 1 < *high)
            .map(|(p, (high, end))| (p, high, end))
            .collect::<Vec<_>>();
        if behind.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the lake did not catch up with {topic} in {timeout:?}: {behind:?}");
}

/// A known multiset of share events, sent keyed by `event_id` like ingest does,
/// with some of them sent twice (client retries), and the counts the lake must
/// end up with.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `(event_id, record JSON)` in send order, retries included.
    pub sends: Vec<(String, String)>,
    /// Distinct events per `window_ms|publisher|channel|type|device`.
    pub expected: std::collections::BTreeMap<String, i64>,
    /// Distinct events.
    pub distinct: usize,
}

impl Workload {
    /// `events` distinct events one second of event time apart from `start_ms`,
    /// about one in ten sent again a few records later.
    pub fn new(events: usize, start_ms: i64, seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut sends = Vec::new();
        let mut expected = std::collections::BTreeMap::new();
        let mut retries: Vec<(usize, (String, String))> = Vec::new();
        let devices = ["desktop", "mobile", "tablet", "bot"];
        let channels = ["facebook", "twitter", "linkedin", "whatsapp", "reddit"];
        for i in 0..events {
            let id = uuid::Uuid::new_v4().to_string();
            let ts = start_ms + i as i64 * 1000;
            let publisher = format!("pub-{}", rng.random_range(0..7));
            let kind = ["pageview", "share", "clickback"][rng.random_range(0..3)];
            let channel = (kind != "pageview").then(|| channels[rng.random_range(0..5)]);
            let device = devices[rng.random_range(0..4)];
            let record = serde_json::json!({
                "v": 1, "event_id": id, "publisher": publisher, "type": kind, "channel": channel,
                "url": format!("https://{publisher}.example/a/{}", rng.random_range(0..20)),
                "referrer": null, "visitor": null, "ts": ts, "received_at": ts,
                "device": device, "ip_prefix": null, "props": {}
            })
            .to_string();
            let window = ts.div_euclid(3_600_000) * 3_600_000;
            *expected
                .entry(format!(
                    "{window}|{publisher}|{}|{kind}|{device}",
                    channel.unwrap_or("-")
                ))
                .or_insert(0) += 1;
            sends.push((id.clone(), record.clone()));
            if rng.random_range(0..10) == 0 {
                retries.push((i + rng.random_range(1..40), (id, record)));
            }
            while let Some(pos) = retries.iter().position(|(at, _)| *at <= i) {
                sends.push(retries.remove(pos).1);
            }
        }
        sends.extend(retries.into_iter().map(|(_, r)| r));
        Self {
            sends,
            expected,
            distinct: events,
        }
    }

    /// Sends everything, `per_second` records a second, acknowledged by the broker.
    pub async fn produce(&self, brokers: &str, topic: &str, per_second: usize) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = kafka::client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let batch = (per_second / 10).max(1);
        for chunk in self.sends.chunks(batch) {
            let started = tokio::time::Instant::now();
            let sends = chunk.iter().map(|(id, record)| {
                producer.send(
                    FutureRecord::to(topic)
                        .key(id.as_str())
                        .payload(record.as_str()),
                    Duration::from_secs(30),
                )
            });
            for result in futures::future::join_all(sends).await {
                result.map_err(|(e, _)| e).expect("produce");
            }
            tokio::time::sleep_until(started + Duration::from_millis(100)).await;
        }
    }

    /// Checks the lake with DuckDB (through `check_lake.py`): every Parquet file
    /// opens, no partial or stray object sits under a table prefix, each event
    /// is in `events/` exactly once, and `aggregates` sums to the expected
    /// counts key by key.
    pub fn assert_exact(&self, services: &Services, bucket: &str) {
        let report = python_check(
            "check_lake.py",
            &[
                "--endpoint",
                &services.s3_endpoint,
                "--bucket",
                bucket,
                "--prefix",
                "lake",
            ],
        );
        assert_eq!(
            report["non_parquet"],
            serde_json::json!([]),
            "stray objects"
        );
        let ids = &report["event_ids"];
        assert_eq!(
            ids[1].as_u64(),
            Some(self.distinct as u64),
            "distinct event ids"
        );
        assert_eq!(
            ids[0].as_u64(),
            Some(self.distinct as u64),
            "events rows (each id once)"
        );
        let sums: std::collections::BTreeMap<String, i64> =
            serde_json::from_value(report["aggregate_sums_by_hour"].clone()).expect("sums");
        if sums != self.expected {
            let wrong: Vec<_> = self
                .expected
                .iter()
                .filter(|(k, v)| sums.get(*k) != Some(v))
                .take(10)
                .map(|(k, v)| (k.clone(), *v, sums.get(k).copied()))
                .collect();
            panic!(
                "aggregates differ from the produced counts (key, expected, got): {wrong:?}; total {} vs {}",
                sums.values().sum::<i64>(),
                self.distinct
            );
        }
    }
}

/// A moto S3 server of the test's own, so that a test can freeze it
/// (`SIGSTOP`: connections hang, as in an S3 brown-out) without touching the
/// shared one. Its buckets live in memory and survive the freeze.
#[derive(Debug)]
pub struct OwnMoto {
    child: std::process::Child,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
}

impl OwnMoto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server starts (pip install 'moto[server]')");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if reqwest::get(&moto.endpoint).await.is_ok() {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("own moto did not answer on {}", moto.endpoint);
    }

    /// The same services, with this S3 endpoint.
    pub fn services(&self, services: &Services) -> Services {
        Services {
            s3_endpoint: self.endpoint.clone(),
            ..services.clone()
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address for a child's admin listener.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// The hex SHA-256 of a text (API key files store keys this way).
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}
