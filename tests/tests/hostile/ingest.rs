//! Hostile input: ingest. See `main.rs`.
//!
//! What anonymous clients on the open internet can do to `sqi ingest`: send
//! event times far ahead, hold sockets open, rotate names and addresses to
//! dodge the rate limit, invent HTTP methods, ask for credentialed CORS, and
//! claim another publisher's id. Tests that look at the process itself (RSS,
//! file descriptors, `/metrics`) run the real `sqi ingest` binary; the rest
//! run ingest in-process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqi_ingest::IngestConfig;
use sqi_ingest::allowlist::AllowlistMode;
use sqi_integration_tests::{Services, Shutdown, listener, read_topic, sqi_binary, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The ingest pod's memory limit in `deploy/base/ingest.yaml`.
const POD_MEMORY_LIMIT: u64 = 512 * 1024 * 1024;

/// Ingest in this process, on an ephemeral port.
struct Ingest {
    url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<sqi_ingest::Result<()>>,
}

impl Ingest {
    async fn start(config: IngestConfig) -> Self {
        let (listener, addr) = listener().await;
        let shutdown = Shutdown::default();
        let task = tokio::spawn(sqi_ingest::run(config, listener, None, shutdown.signal()));
        let ingest = Self {
            url: format!("http://{addr}"),
            shutdown,
            task,
        };
        wait_ready(&ingest.url).await;
        ingest
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// The real `sqi ingest` binary, configured through `SQI_*` variables only,
/// so that a variable the binary does not know yet is ignored rather than
/// refused: the attack then runs against the old behaviour and the test fails
/// on what it checks.
struct IngestChild {
    child: Child,
    addr: SocketAddr,
    url: String,
}

impl IngestChild {
    async fn spawn(services: &Services, topic: &str, env: &[(&str, &str)]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(sqi_binary())
            .arg("ingest")
            .env("SQI_LISTEN", addr.to_string())
            .env("SQI_KAFKA_BROKERS", &services.kafka_brokers)
            .env("SQI_TOPIC", topic)
            .env("SQI_SHUTDOWN_DRAIN_DELAY", "0s")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ingest = Self {
            child,
            addr,
            url: format!("http://{addr}"),
        };
        wait_ready(&ingest.url).await;
        ingest
    }

    /// Resident set size now, in bytes.
    fn rss_bytes(&self) -> u64 {
        sqi_integration_tests::rss_bytes_of(self.child.id())
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for IngestChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..150 {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ingest at {url} never became ready");
}

async fn topic(services: &Services) -> String {
    let name = unique("hostile-ingest");
    services.create_topic(&name, 1).await;
    name
}

/// A gauge or counter's value in a Prometheus text page (summed over labels).
fn metric_value(page: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with(' ') || rest.starts_with('{')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Item 1: an event dated 22 hours ahead would move the processor's
/// watermark a day ahead and dead-letter every real event after it. Ingest
/// must write it to Kafka with a time at most minutes after its receive time,
/// keeping the original in `props._original_ts`; a time a minute ahead (a
/// plain clock difference) is kept as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item1_an_event_dated_a_day_ahead_is_clamped_to_minutes_after_receipt() {
    let services = Services::from_env();
    let topic = topic(&services).await;
    let ingest = Ingest::start(IngestConfig::new(&services.kafka_brokers, &topic)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let far = now + 22 * 3600 * 1000;
    let near = now + 60 * 1000;
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/events", ingest.url))
        .json(&json!([
            {"publisher": "future.example", "type": "pageview", "url": "https://future.example/far", "ts": far},
            {"publisher": "future.example", "type": "pageview", "url": "https://future.example/near", "ts": near},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let records = read_topic(&services.kafka_brokers, &topic, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2);
    let by_url = |path: &str| {
        records
            .iter()
            .find(|r| r.value["url"] == format!("https://future.example/{path}"))
            .unwrap()
            .value
            .clone()
    };
    let far_record = by_url("far");
    let received = far_record["received_at"].as_i64().unwrap();
    let ts = far_record["ts"].as_i64().unwrap();
    assert!(
        ts <= received + 5 * 60 * 1000,
        "an event {} h ahead was written to Kafka {} min after its receive time",
        (far - now) / 3_600_000,
        (ts - received) / 60_000
    );
    assert_eq!(far_record["props"]["_original_ts"], far.to_string());
    let near_record = by_url("near");
    assert_eq!(near_record["ts"].as_i64().unwrap(), near);
    assert!(near_record["props"].get("_original_ts").is_none());
    ingest.stop().await;
}

/// The soft limit on open files of this process.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's soft limit on open files to `needed` (children
/// inherit it) with `prlimit`, which needs no unsafe code; fails the test
/// with the fix if the hard limit is lower.
fn ensure_open_files(needed: u64) {
    if open_files_limit() >= needed {
        return;
    }
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={needed}:"),
        ])
        .status();
    assert!(
        open_files_limit() >= needed,
        "this test opens {needed} sockets; raise the open-files limit (ulimit -n {needed})"
    );
}

/// What one slow client did to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SlowEnd {
    /// The server closed it (EOF, reset, or an error answer then EOF).
    ClosedByServer,
    /// Still open when the test gave up.
    StillOpen,
    /// The connection could not be made.
    NeverConnected,
}

/// One slowloris connection: half of them send complete headers announcing a
/// body and then one byte of it; the other half send half a header block.
/// Neither ever sends more; the connection is then watched until the server
/// closes it or `give_up` passes.
async fn slow_client(
    addr: SocketAddr,
    body_kind: bool,
    give_up: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> SlowEnd {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout_at(give_up.into(), tokio::net::TcpStream::connect(addr)).await
    else {
        return SlowEnd::NeverConnected;
    };
    let opening: &[u8] = if body_kind {
        b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
    } else {
        b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: appl"
    };
    let written = stream.write_all(opening).await;
    drop(permit);
    if written.is_err() {
        return SlowEnd::ClosedByServer;
    }
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(give_up.into(), stream.read(&mut sink)).await {
            Err(_) => return SlowEnd::StillOpen,
            Ok(Ok(0) | Err(_)) => return SlowEnd::ClosedByServer,
            // An answer (408, 400) may come before the close; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

/// Item 5: slowloris. 10,000 connections that send headers (or half of
/// them) and then nothing are each held open by ingest until the client
/// gives up, and each costs memory. They must be closed by the server's
/// header-read and body timeouts, a normal client must keep getting its
/// events acknowledged meanwhile, and ingest's RSS must stay under the pod's
/// memory limit. The timeouts are shortened to 2 s so that the test is quick;
/// the connection cap and memory budget are the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item5_ten_thousand_slow_connections_are_closed_and_memory_stays_under_the_pod_limit() {
    const SLOW: usize = 10_000;
    ensure_open_files(SLOW as u64 + 2_000);
    let services = Services::from_env();
    let topic = topic(&services).await;
    let ingest = IngestChild::spawn(
        &services,
        &topic,
        &[
            ("SQI_HEADER_READ_TIMEOUT", "2s"),
            ("SQI_BODY_READ_TIMEOUT", "2s"),
        ],
    )
    .await;
    let rss_before = ingest.rss_bytes();
    let started = Instant::now();
    let give_up = started + Duration::from_secs(90);

    // Connections are opened 500 at a time so that the test's own connects
    // are not what is slow.
    let opening = Arc::new(tokio::sync::Semaphore::new(500));
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let (opening, addr) = (opening.clone(), ingest.addr);
        slow.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.unwrap();
            slow_client(addr, i % 2 == 0, give_up, permit).await
        }));
    }

    // A normal client posts every 100 ms on a fresh connection each time
    // while the attack runs, and the RSS is sampled.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut normal = HashMap::<String, usize>::new();
    let mut max_rss = rss_before;
    while slow.iter().any(|t| !t.is_finished()) && Instant::now() < give_up {
        let answer = client
            .post(format!("{}/v1/events", ingest.url))
            .json(&json!({"publisher": "normal.example", "type": "pageview", "url": "https://normal.example/"}))
            .send()
            .await;
        let outcome = match answer {
            Ok(r) => r.status().to_string(),
            Err(e) => format!("error: {e}"),
        };
        *normal.entry(outcome).or_default() += 1;
        max_rss = max_rss.max(ingest.rss_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ends = HashMap::<SlowEnd, usize>::new();
    for task in slow {
        *ends.entry(task.await.unwrap()).or_default() += 1;
    }
    let closed = ends.get(&SlowEnd::ClosedByServer).copied().unwrap_or(0);
    eprintln!(
        "slow connections: {ends:?} after {:?}; normal requests: {normal:?}; RSS {} MiB before, max {} MiB",
        started.elapsed(),
        rss_before >> 20,
        max_rss >> 20
    );
    assert_eq!(
        closed,
        SLOW,
        "only {closed} of {SLOW} slow connections were closed by the server within {:?}: {ends:?}",
        give_up - started
    );
    let ok = normal.get("200 OK").copied().unwrap_or(0);
    assert!(
        ok > 0 && ok == normal.values().sum::<usize>(),
        "normal clients were not all answered during the attack: {normal:?}"
    );
    assert!(
        max_rss < POD_MEMORY_LIMIT,
        "ingest's RSS reached {} MiB, over the pod's limit of {} MiB",
        max_rss >> 20,
        POD_MEMORY_LIMIT >> 20
    );
}

/// Posts one single-event request as if forwarded for `client` by a trusted
/// proxy; answers the status.
async fn post_as(client: &reqwest::Client, url: &str, publisher: &str, from: &str) -> u16 {
    client
        .post(format!("{url}/v1/events"))
        .header("x-forwarded-for", from)
        .json(&json!({"publisher": publisher, "type": "pageview", "url": format!("https://{publisher}/")}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Item 10: the rate limit cannot be dodged. One client rotating publisher
/// names, and addresses inside its IPv6 /64, must be limited as one client
/// network; and a client rotating networks must not grow the limiter's
/// memory past its bound (`sqi_ingest_rate_limit_keys`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item10_rotating_publishers_and_ipv6_addresses_gets_429_and_keys_stay_bounded() {
    let services = Services::from_env();
    let topic = topic(&services).await;
    let ingest = IngestChild::spawn(
        &services,
        &topic,
        &[
            ("SQI_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SQI_RATE_LIMIT_PER_SECOND", "1"),
            ("SQI_RATE_LIMIT_BURST", "5"),
            ("SQI_RATE_LIMIT_NETWORK_PER_SECOND", "2"),
            ("SQI_RATE_LIMIT_NETWORK_BURST", "10"),
            ("SQI_RATE_LIMIT_MAX_KEYS", "1000"),
        ],
    )
    .await;
    let client = reqwest::Client::new();

    // One /64, a new address and a new publisher name on every request.
    let mut statuses = HashMap::<u16, usize>::new();
    for i in 0..100u32 {
        let status = post_as(
            &client,
            &ingest.url,
            &format!("rot-{i}.example"),
            &format!("2001:db8:1:2:{:x}:{:x}::1", i + 1, i * 7 + 3),
        )
        .await;
        *statuses.entry(status).or_default() += 1;
    }
    let limited = statuses.get(&429).copied().unwrap_or(0);
    assert!(
        limited >= 80,
        "rotating publishers and addresses within one /64 dodged the limit: {statuses:?}"
    );
    // Another network is not punished for it.
    assert_eq!(
        post_as(&client, &ingest.url, "rot-0.example", "2001:db8:9:9::1").await,
        200
    );

    // A client rotating /64s: the limiter holds at most its key bound.
    let mut keys = Vec::new();
    let requests = Arc::new(tokio::sync::Semaphore::new(16));
    for round in 0..4u32 {
        let mut tasks = Vec::new();
        for i in 0..1000u32 {
            let (client, url, requests) = (client.clone(), ingest.url.clone(), requests.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = requests.acquire().await.unwrap();
                post_as(
                    &client,
                    &url,
                    &format!("net-{round}-{i}.example"),
                    &format!("2001:db8:{round:x}:{i:x}::1"),
                )
                .await
            }));
        }
        for task in tasks {
            let _ = task.await.unwrap();
        }
        let page = ingest.metrics().await;
        keys.push(
            metric_value(&page, "sqi_ingest_rate_limit_keys").unwrap_or_else(|| {
                panic!("sqi_ingest_rate_limit_keys missing from /metrics:\n{page}")
            }),
        );
    }
    assert!(
        keys.iter().all(|k| *k <= 1000.0),
        "the limiter grew past its bound of 1000 keys: {keys:?}"
    );
}

/// Item 12: metric labels are bounded. Every invented HTTP method would
/// otherwise become a new time series; unknown methods are labelled `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item12_an_unknown_http_method_is_labelled_other() {
    let services = Services::from_env();
    let topic = topic(&services).await;
    let ingest = IngestChild::spawn(&services, &topic, &[]).await;
    let client = reqwest::Client::new();
    for method in ["FOO", "BREW", "X-ANYTHING-1"] {
        let _ = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/v1/events", ingest.url),
            )
            .send()
            .await
            .unwrap();
    }
    let page = ingest.metrics().await;
    let requests: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("sqi_ingest_http_requests_total{"))
        .collect();
    for method in ["FOO", "BREW", "X-ANYTHING-1"] {
        assert!(
            !page.contains(&format!("method=\"{method}\"")),
            "a client-chosen method became a metric label: {requests:#?}"
        );
    }
    assert!(
        requests.iter().any(|l| l.contains("method=\"other\"")),
        "unknown methods are not counted as `other`: {requests:#?}"
    );
}

/// Item 13: CORS. The widget sends no cookies, so no answer may carry
/// `Access-Control-Allow-Credentials: true`, which would let any site make
/// credentialed requests to ingest in its visitors' names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item13_cors_answers_never_allow_credentials() {
    let services = Services::from_env();
    let topic = topic(&services).await;
    let ingest = Ingest::start(IngestConfig::new(&services.kafka_brokers, &topic)).await;
    let client = reqwest::Client::new();
    let origin = "https://attacker.example";
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/events", ingest.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let post = client
        .post(format!("{}/v1/events", ingest.url))
        .header("origin", origin)
        .json(&json!({"publisher": "cors.example", "type": "pageview", "url": "https://cors.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let pixel = client
        .get(format!(
            "{}/v1/pixel.gif?publisher=cors.example&type=pageview&url=https%3A%2F%2Fcors.example%2F",
            ingest.url
        ))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    for (what, answer) in [
        ("preflight", &preflight),
        ("POST", &post),
        ("pixel", &pixel),
    ] {
        assert!(
            answer
                .headers()
                .get("access-control-allow-credentials")
                .is_none(),
            "the {what} answer allows credentials: {:?}",
            answer.headers()
        );
    }
    ingest.stop().await;
}

/// Item 11: publisher authenticity. With the allowlist enforced, anyone can
/// still send events under a registered publisher's id; an event whose page
/// is not on that publisher's registered domain (or a subdomain of it) is
/// rejected with `domain_mismatch`, whatever look-alike host it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item11_an_enforced_allowlist_rejects_pages_off_the_publishers_domain() {
    let services = Services::from_env();
    let topic = topic(&services).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("publishers.csv");
    std::fs::write(
        &list,
        "publisher,domain,category\nnews.example,news.example,news\n",
    )
    .unwrap();
    let mut config = IngestConfig::new(&services.kafka_brokers, &topic);
    config.allowlist_mode = AllowlistMode::Enforce;
    config.allowlist_file = Some(list);
    let ingest = Ingest::start(config).await;
    let urls = [
        ("https://news.example/a", true),
        ("https://www.news.example/b", true),
        ("https://NEWS.example:443/c", true),
        ("https://evil.example/", false),
        ("https://news.example.evil.com/", false),
        ("https://evilnews.example/", false),
        ("https://news.example@evil.com/", false),
    ];
    let batch: Vec<Value> = urls
        .iter()
        .map(|(url, _)| json!({"publisher": "news.example", "type": "pageview", "url": url}))
        .collect();
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/v1/events", ingest.url))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = urls
        .iter()
        .enumerate()
        .filter(|(_, (_, ok))| !ok)
        .map(|(i, _)| (i as u64, "domain_mismatch".to_owned()))
        .collect();
    assert_eq!(rejected, expected, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");
    ingest.stop().await;
}
