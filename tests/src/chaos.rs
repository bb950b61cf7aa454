//! The whole pipeline on loopback under faults (issue 8): a broker and an S3
//! server of its own, two `sqi ingest`, two `sqi process`, `sqi report`, and a
//! load generator that keeps a ledger of every event it got a `200` for.
//!
//! While the load runs, the fault loop (when on) picks one fault at a time:
//! `kill -9` a processor and restart it, restart the broker, freeze S3
//! (`SIGSTOP`) for up to 60 s, or `SIGTERM` an ingest and start it again. Then
//! the load stops, the processors catch up, the batch runs, and the lake is
//! read with DuckDB (`tests/py/chaos_counts.py`): `aggregates` and `daily`
//! must equal the ledger exactly, per publisher, channel and event type, every
//! event must be in `events` once, and the report API must give the same
//! totals. The generator retries a failed request with the same event ids
//! until it gets a `200`, as the widget does, so every event it made is in
//! the ledger exactly once.
//!
//! The same harness, with no faults and RSS sampled every 5 s, is the soak.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqi_schemas::lake::Lake;

use crate::{
    OwnBroker, OwnMoto, ProcessorChild, ProcessorSetup, Services, create_topic, python_check,
    sqi_binary, unique, wait_until_written,
};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// `kill -9` a processor, restart it within 3 s.
    KillProcessor,
    /// Stop the broker (SIGTERM, as a rolling restart does) and start it again 1–5 s later.
    RestartBroker,
    /// Freeze S3 (`SIGSTOP`) for 5–60 s.
    FreezeS3,
    /// `SIGTERM` an ingest and start it again once it has drained.
    TermIngest,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 4] = [
        Fault::KillProcessor,
        Fault::RestartBroker,
        Fault::FreezeS3,
        Fault::TermIngest,
    ];
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// How long the load runs.
    pub duration: Duration,
    /// Events per second the generator offers.
    pub rate: u32,
    /// The faults to draw from while the load runs (none: a clean run).
    pub faults: Vec<Fault>,
    /// Test-only: after the load, produce one acknowledged event again, with
    /// its own `event_id`, to another partition, where per-partition dedup
    /// cannot see it. The check must then fail.
    pub inject_double_count: bool,
    /// Sample every process's RSS this often (the soak); `None` for never.
    /// The report API is also asked three questions at each whole minute.
    pub sample_rss_every: Option<Duration>,
    /// Seed of the events and the faults.
    pub seed: u64,
    /// The processors' `--dedup-horizon`, when not the default (30 min). A
    /// soak sets it short so that the dedup window is full before the RSS
    /// comparison starts: until then memory grows by design, not by leak.
    pub dedup_horizon: Option<String>,
    /// The processors' `--max-file-age`; `None` for 3 s, which gives a chaos
    /// run's faults many ranges to interrupt.
    pub max_file_age: Option<String>,
    /// Where the children's logs go.
    pub log_dir: PathBuf,
}

/// What happened.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Events acknowledged with a `200` (each counted once).
    pub acked_events: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Requests that got no `200` and were sent again.
    pub retried_requests: u64,
    /// `(seconds since start, what)` for every fault.
    pub faults: Vec<(u64, String)>,
    /// Everything that does not add up; empty when the run passed.
    pub mismatches: Vec<String>,
    /// `(seconds since start, process, RSS bytes)`.
    pub rss: Vec<(u64, String, u64)>,
    /// `(seconds since start, process, anonymous RSS bytes)`: the private part
    /// of RSS (heap, stacks), which is what a leak grows. The rest of RSS is
    /// file pages, mostly the binary's own code, mapped as paths first run.
    pub rss_anon: Vec<(u64, String, u64)>,
    /// `(seconds since start, process, CPU seconds used so far)`, sampled with RSS.
    pub cpu: Vec<(u64, String, f64)>,
    /// `(seconds since start, events acknowledged so far)`, sampled with RSS.
    pub acked_at: Vec<(u64, u64)>,
    /// Seconds the load ran.
    pub load_seconds: f64,
    /// Seconds from the end of the load until the lake held every record.
    pub drain_seconds: f64,
}

impl ChaosReport {
    /// CPU seconds each process spent per 1,000 acknowledged events between
    /// two sample times.
    pub fn cpu_per_thousand_events(&self, from_secs: u64, to_secs: u64) -> BTreeMap<String, f64> {
        let nearest = |samples: &[(u64, u64)], at: u64| {
            samples.iter().min_by_key(|(t, _)| t.abs_diff(at)).copied()
        };
        let mut out = BTreeMap::new();
        let (Some((t0, a0)), Some((t1, a1))) = (
            nearest(&self.acked_at, from_secs),
            nearest(&self.acked_at, to_secs),
        ) else {
            return out;
        };
        let events = a1.saturating_sub(a0).max(1) as f64;
        let at = |name: &str, t: u64| {
            self.cpu
                .iter()
                .find(|(s, n, _)| *s == t && n == name)
                .map(|(_, _, c)| *c)
        };
        let names: std::collections::BTreeSet<&String> =
            self.cpu.iter().map(|(_, n, _)| n).collect();
        for name in names {
            if let (Some(c0), Some(c1)) = (at(name, t0), at(name, t1)) {
                out.insert(name.clone(), (c1 - c0) / events * 1000.0);
            }
        }
        out
    }

    /// RSS growth of each process from the minutes after `from_secs` to the
    /// minutes before `to_secs`, as a fraction (see `growth`).
    pub fn rss_growth(&self, from_secs: u64, to_secs: u64) -> BTreeMap<String, (u64, u64, f64)> {
        growth(&self.rss, from_secs, to_secs)
    }

    /// Anonymous RSS growth, measured as `rss_growth` measures RSS.
    pub fn rss_anon_growth(
        &self,
        from_secs: u64,
        to_secs: u64,
    ) -> BTreeMap<String, (u64, u64, f64)> {
        growth(&self.rss_anon, from_secs, to_secs)
    }
}

/// How far each side of a growth comparison looks: five minutes.
const GROWTH_WINDOW_SECS: u64 = 300;

/// Which sample of a window stands for it: the 90th percentile (nearest
/// rank; with one sample a minute it is the window's highest).
const GROWTH_PERCENTILE: f64 = 0.9;

/// Each process's `(90th percentile of the five minutes from from_secs, the
/// same of the five minutes before to_secs, growth as a fraction)`.
/// Windows, not single samples: RSS swings by up to 40% within a minute when
/// a processor flushes or the allocator returns pages, and comparing two
/// points of a sawtooth measures its phase. A high percentile, not the
/// highest: sampled every few seconds, the highest is the one moment two
/// partitions flushed together, which a window has or lacks by chance; a
/// leak lifts the whole window.
fn growth(
    samples: &[(u64, String, u64)],
    from_secs: u64,
    to_secs: u64,
) -> BTreeMap<String, (u64, u64, f64)> {
    let mut growth = BTreeMap::new();
    let level = |name: &str, window: std::ops::Range<u64>| {
        let mut values: Vec<u64> = samples
            .iter()
            .filter(|(t, n, _)| n == name && window.contains(t))
            .map(|(_, _, b)| *b)
            .collect();
        values.sort_unstable();
        let rank = (values.len() as f64 * GROWTH_PERCENTILE).ceil() as usize;
        values.get(rank.max(1) - 1).copied()
    };
    let names: std::collections::BTreeSet<&String> = samples.iter().map(|(_, n, _)| n).collect();
    for name in names {
        let early = level(name, from_secs..from_secs + GROWTH_WINDOW_SECS);
        let late = level(name, to_secs.saturating_sub(GROWTH_WINDOW_SECS)..to_secs);
        if let (Some(a), Some(b)) = (early, late) {
            growth.insert(name.clone(), (a, b, b as f64 / a.max(1) as f64 - 1.0));
        }
    }
    growth
}

const PUBLISHERS: usize = 12;
const CHANNELS: [&str; 5] = ["facebook", "twitter", "linkedin", "whatsapp", "reddit"];
const PARTITIONS: i32 = 4;
const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const BATCH: usize = 20;
const API_KEY: &str = "chaos-marketer-key";

/// One `sqi ingest` child on a fixed port, restartable.
struct Ingest {
    port: u16,
    brokers: String,
    topic: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Ingest {
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(sqi_binary())
            .arg("ingest")
            .args(["--kafka-brokers", &self.brokers])
            .args(["--topic", &self.topic])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--shutdown-drain-delay", "1s"])
            .args(["--rate-limit-per-second", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("sqi ingest starts")?;
        self.child = Some(child);
        Ok(())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/events", self.port)
    }

    /// SIGTERM, then waits (bounded) for the drain and the producer flush.
    fn terminate(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("ingest did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let status = child.wait()?;
            if !status.success() {
                bail!("ingest exited {status} on SIGTERM");
            }
        }
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// User + system CPU seconds a process has used (`/proc/PID/stat`, at the
/// usual 100 ticks a second).
fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// `(VmRSS, RssAnon)` of a process in bytes, from one read of `/proc/{pid}/status`.
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS")?, field("RssAnon")?))
}

/// Acknowledged events, per `publisher|channel|event_type`.
#[derive(Debug, Default)]
struct Ledger {
    counts: BTreeMap<String, i64>,
    acked: u64,
    requests: u64,
    retried: u64,
    first_day: Option<chrono::NaiveDate>,
    last_day: Option<chrono::NaiveDate>,
    /// One acknowledged event, for the injected double count.
    sample_id: Option<String>,
}

fn make_batch(rng: &mut impl Rng) -> Vec<Value> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..BATCH)
        .map(|_| {
            let publisher = format!("chaos-{}.example", rng.random_range(0..PUBLISHERS));
            let kind = ["pageview", "pageview", "share", "clickback"][rng.random_range(0..4)];
            let mut event = json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "publisher": publisher,
                "type": kind,
                "url": format!("https://{publisher}/story/{}", rng.random_range(0..30)),
                "ts": now,
            });
            if kind != "pageview" {
                event["channel"] = json!(CHANNELS[rng.random_range(0..CHANNELS.len())]);
            }
            event
        })
        .collect()
}

/// Sends one batch until some ingest answers `200`, then books it.
async fn deliver(
    client: reqwest::Client,
    urls: Arc<Vec<String>>,
    batch: Vec<Value>,
    ledger: Arc<Mutex<Ledger>>,
    start_at: usize,
) {
    let body = json!({ "events": batch }).to_string();
    let mut attempt = 0usize;
    loop {
        let url = &urls[(start_at + attempt) % urls.len()];
        let answer = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", DESKTOP)
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let ok = match answer {
            Ok(response) if response.status() == 200 => {
                let parsed: Value = response.json().await.unwrap_or(Value::Null);
                parsed["rejected"].as_array().is_none_or(Vec::is_empty)
            }
            _ => false,
        };
        if let Ok(mut l) = ledger.lock() {
            l.requests += 1;
            if !ok {
                l.retried += 1;
            }
        }
        if ok {
            break;
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200 * attempt.min(10) as u64)).await;
    }
    if let Ok(mut l) = ledger.lock() {
        for event in &batch {
            let key = format!(
                "{}|{}|{}",
                event["publisher"].as_str().unwrap_or_default(),
                event["channel"].as_str().unwrap_or("-"),
                event["type"].as_str().unwrap_or_default()
            );
            *l.counts.entry(key).or_insert(0) += 1;
            l.acked += 1;
            let day = chrono::DateTime::from_timestamp_millis(event["ts"].as_i64().unwrap_or(0))
                .map(|t| t.date_naive());
            if let Some(day) = day {
                l.first_day = Some(l.first_day.map_or(day, |d| d.min(day)));
                l.last_day = Some(l.last_day.map_or(day, |d| d.max(day)));
            }
            if l.sample_id.is_none() {
                l.sample_id = event["event_id"].as_str().map(str::to_owned);
            }
        }
    }
}

async fn wait_http_ok(url: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the pipeline under load (and faults), then checks it adds up.
pub async fn run(config: &ChaosConfig) -> Result<ChaosReport> {
    std::fs::create_dir_all(&config.log_dir)?;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut report = ChaosReport::default();

    let mut broker = OwnBroker::start().await;
    let moto = OwnMoto::start().await;
    let services = Services {
        kafka_brokers: broker.brokers(),
        s3_endpoint: moto.endpoint.clone(),
    };
    let topic = unique("chaos");
    create_topic(&services.kafka_brokers, &topic, PARTITIONS).await;
    create_topic(&services.kafka_brokers, &format!("{topic}-dlq"), 1).await;
    let bucket = unique("chaos-lake");
    services.create_bucket(&bucket).await;
    let lake = Lake::open(&format!("s3://{bucket}/lake"), &services.lake_options())?;
    // The batch scores against the publisher dimension.
    let csv = config.log_dir.join("publishers.csv");
    let mut rows = String::from("publisher,domain,category,created_at\n");
    for p in 0..PUBLISHERS {
        rows.push_str(&format!(
            "chaos-{p}.example,chaos-{p}.example,news,2025-01-01\n"
        ));
    }
    std::fs::write(&csv, rows)?;
    let import = services
        .sqi_on_lake(&bucket)
        .args(["publishers", "import"])
        .arg(&csv)
        .output()?;
    if !import.status.success() {
        bail!(
            "sqi publishers import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
    }

    let mut ingests = Vec::new();
    for i in 0..2 {
        let mut ingest = Ingest {
            port: free_port()?,
            brokers: services.kafka_brokers.clone(),
            topic: topic.clone(),
            log: config.log_dir.join(format!("ingest-{i}.log")),
            child: None,
        };
        ingest.spawn()?;
        ingests.push(ingest);
    }
    let mut setup = ProcessorSetup::new(&services, &topic, &bucket);
    // Files every few seconds rather than every second: fewer objects to check.
    if let Some(age) = setup.args.iter().position(|a| a == "--max-file-age") {
        setup.args[age + 1] = config.max_file_age.as_deref().unwrap_or("3s").into();
    }
    if !config.faults.contains(&Fault::KillProcessor) {
        // The crash tests' 3 s session timeout is for killed members to be
        // noticed quickly; with none killed, librdkafka's default avoids
        // rebalances when a loaded machine delays a heartbeat.
        let mut kept = Vec::new();
        let mut args = setup.args.iter();
        while let Some(arg) = args.next() {
            if arg != "--kafka-config" {
                kept.push(arg.clone());
            } else if let Some(value) = args.next()
                && !value.starts_with("session.timeout.ms")
                && !value.starts_with("heartbeat.interval.ms")
            {
                kept.extend([arg.clone(), value.clone()]);
            }
        }
        setup.args = kept;
    }
    if let Some(horizon) = &config.dedup_horizon {
        setup.args.extend(dedup_args(horizon));
    }
    let mut processors: Vec<ProcessorChild> = (0..2)
        .map(|i| setup.spawn(&config.log_dir.join(format!("processor-{i}.log"))))
        .collect();
    let keys_file = config.log_dir.join("api-keys.json");
    std::fs::write(
        &keys_file,
        json!([{"name": "chaos", "sha256": crate::sha256_hex(API_KEY), "scope": "marketer"}])
            .to_string(),
    )?;
    let report_port = free_port()?;
    let report_log = std::fs::File::create(config.log_dir.join("report.log"))?;
    let mut report_api = services
        .sqi_on_lake(&bucket)
        .arg("report")
        .args(["--listen", &format!("127.0.0.1:{report_port}")])
        .arg("--api-keys-file")
        .arg(&keys_file)
        .args(["--rate-limit-per-minute", "100000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(report_log)
        .spawn()
        .context("sqi report starts")?;
    let result = async {
        for ingest in &ingests {
            wait_http_ok(&format!("http://127.0.0.1:{}/readyz", ingest.port), Duration::from_secs(30)).await?;
        }
        wait_http_ok(&format!("http://127.0.0.1:{report_port}/readyz"), Duration::from_secs(30)).await?;

        // The load: batches at the offered rate, each retried until acknowledged,
        // at most 256 in flight (beyond that the generator waits, as a client
        // library with a bounded queue would).
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let urls = Arc::new(ingests.iter().map(Ingest::url).collect::<Vec<_>>());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let generator = {
            let (ledger, urls, stop) = (ledger.clone(), urls.clone(), stop.clone());
            let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed ^ 0x5eed);
            let per_second = f64::from(config.rate) / BATCH as f64;
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let slots = Arc::new(tokio::sync::Semaphore::new(256));
                let mut tasks = tokio::task::JoinSet::new();
                let began = tokio::time::Instant::now();
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let due = began + Duration::from_secs_f64(sent as f64 / per_second);
                    tokio::time::sleep_until(due).await;
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    let batch = make_batch(&mut rng);
                    let (client, urls, ledger) = (client.clone(), urls.clone(), ledger.clone());
                    let start_at = sent as usize;
                    tasks.spawn(async move {
                        deliver(client, urls, batch, ledger, start_at).await;
                        drop(permit);
                    });
                    sent += 1;
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            })
        };

        // Faults, one at a time, and RSS samples.
        let mut next_sample = config.sample_rss_every.map(|_| Duration::ZERO);
        let load_began = Instant::now();
        let mut next_fault = load_began + Duration::from_secs(rng.random_range(5..15));
        while load_began.elapsed() < config.duration {
            if let (Some(every), Some(at)) = (config.sample_rss_every, next_sample)
                && load_began.elapsed() >= at
            {
                let t = load_began.elapsed().as_secs();
                let mut pids: Vec<(String, Option<u32>)> = ingests
                    .iter()
                    .enumerate()
                    .map(|(i, ingest)| (format!("ingest-{i}"), ingest.pid()))
                    .collect();
                pids.extend(processors.iter().enumerate().map(|(i, p)| (format!("processor-{i}"), Some(p.pid()))));
                pids.push(("report".into(), Some(report_api.id())));
                pids.push(("broker (Kafka)".into(), broker.pid()));
                pids.push(("S3 (moto)".into(), Some(moto.pid())));
                for (name, pid) in pids {
                    let Some(pid) = pid else { continue };
                    if let Some((rss, anon)) = memory_of(pid) {
                        report.rss.push((t, name.clone(), rss));
                        report.rss_anon.push((t, name.clone(), anon));
                    }
                    if let Some(cpu) = cpu_seconds_of(pid) {
                        report.cpu.push((t, name, cpu));
                    }
                }
                if let Ok(l) = ledger.lock() {
                    report.acked_at.push((t, l.acked));
                }
                // Readers once a minute, however often memory is sampled, so
                // the report API's caches and queries are exercised too.
                let client = reqwest::Client::new();
                let readers = if at.as_secs() % 60 == 0 { 0..3 } else { 0..0 };
                for p in readers {
                    let _ = client
                        .get(format!("http://127.0.0.1:{report_port}/v1/publishers/chaos-{p}.example/summary?period=today"))
                        .bearer_auth(API_KEY)
                        .send()
                        .await;
                }
                next_sample = Some(at + every);
            }
            if !config.faults.is_empty() && Instant::now() >= next_fault {
                let remaining = config.duration.saturating_sub(load_began.elapsed());
                let t = started.elapsed().as_secs();
                let what = match config.faults[rng.random_range(0..config.faults.len())] {
                    Fault::KillProcessor => {
                        let i = rng.random_range(0..processors.len());
                        processors[i].kill9();
                        let pause = rng.random_range(0..3000);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        processors[i] = setup.spawn(&config.log_dir.join(format!("processor-{i}.log")));
                        format!("kill -9 processor {i}, restarted after {pause} ms")
                    }
                    Fault::RestartBroker => {
                        broker.stop();
                        let pause = rng.random_range(1000..5000);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        broker.resume().await;
                        format!("broker stopped, restarted after {pause} ms")
                    }
                    Fault::FreezeS3 => {
                        let secs = rng.random_range(5..=60u64).min(remaining.as_secs().max(5));
                        moto.signal("STOP");
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        moto.signal("CONT");
                        format!("S3 frozen for {secs} s")
                    }
                    Fault::TermIngest => {
                        let i = rng.random_range(0..ingests.len());
                        ingests[i].terminate()?;
                        ingests[i].spawn()?;
                        wait_http_ok(&format!("http://127.0.0.1:{}/livez", ingests[i].port), Duration::from_secs(30)).await?;
                        format!("SIGTERM ingest {i}, restarted")
                    }
                };
                eprintln!("chaos: {t:>4}s {what}");
                report.faults.push((t, what));
                next_fault = Instant::now() + Duration::from_secs(rng.random_range(5..15));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        report.load_seconds = load_began.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let drain_deadline = Instant::now() + Duration::from_secs(300);
        while !generator.is_finished() {
            if Instant::now() > drain_deadline {
                bail!("the generator could not get its last batches acknowledged in 5 min");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        generator.await?;
        let (counts, first_day, last_day, sample_id) = {
            let l = ledger.lock().map_err(|_| anyhow!("ledger poisoned"))?;
            report.acked_events = l.acked;
            report.requests = l.requests;
            report.retried_requests = l.retried;
            (l.counts.clone(), l.first_day, l.last_day, l.sample_id.clone())
        };
        eprintln!(
            "chaos: load over: {} events acknowledged in {} requests ({} retried); waiting for the lake",
            report.acked_events, report.requests, report.retried_requests
        );

        if config.inject_double_count {
            let id = sample_id.ok_or_else(|| anyhow!("no acknowledged event to double"))?;
            let moved_to = inject_double_count(&services.kafka_brokers, &topic, &id).await?;
            eprintln!("chaos: injected event {id} again into partition {moved_to}");
        }
        let drain_began = Instant::now();
        wait_until_written(&services.kafka_brokers, &lake, &topic, PARTITIONS, Duration::from_secs(600)).await;
        report.drain_seconds = drain_began.elapsed().as_secs_f64();

        // The batch, for every day the load touched.
        let (Some(first), Some(last)) = (first_day, last_day) else {
            bail!("no event was acknowledged");
        };
        let batch = services
            .sqi_on_lake(&bucket)
            .arg("batch")
            .args(["--from", &first.to_string(), "--to", &last.to_string()])
            .args(["--topic", &topic, "--allow-incomplete"])
            .output()?;
        if !batch.status.success() {
            bail!("sqi batch failed: {}", String::from_utf8_lossy(&batch.stderr));
        }

        // DuckDB reads the lake; everything must equal the ledger.
        let lake_counts = python_check(
            "chaos_counts.py",
            &["--endpoint", &services.s3_endpoint, "--bucket", &bucket, "--prefix", "lake"],
        );
        for table in ["aggregates", "daily"] {
            let got: BTreeMap<String, i64> = serde_json::from_value(lake_counts[table].clone())?;
            report.mismatches.extend(compare(table, &counts, &got));
        }
        let (rows, distinct) = (
            lake_counts["event_rows"].as_u64().unwrap_or(0),
            lake_counts["distinct_event_ids"].as_u64().unwrap_or(0),
        );
        if rows != report.acked_events || distinct != report.acked_events {
            report.mismatches.push(format!(
                "events: {rows} rows and {distinct} distinct ids for {} acknowledged events",
                report.acked_events
            ));
        }
        // The report API answers with the same totals.
        let client = reqwest::Client::new();
        for p in 0..PUBLISHERS {
            let publisher = format!("chaos-{p}.example");
            let answer: Value = client
                .get(format!(
                    "http://127.0.0.1:{report_port}/v1/publishers/{publisher}/summary?period=custom&from={first}&to={last}"
                ))
                .bearer_auth(API_KEY)
                .send()
                .await?
                .json()
                .await?;
            for (field, kind) in [("pageviews", "pageview"), ("shares", "share"), ("clickbacks", "clickback")] {
                let want: i64 = counts
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{publisher}|")) && k.ends_with(&format!("|{kind}")))
                    .map(|(_, v)| v)
                    .sum();
                if answer[field].as_i64() != Some(want) {
                    report.mismatches.push(format!(
                        "report API: {publisher} {field} = {} but {want} were acknowledged",
                        answer[field]
                    ));
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let _ = report_api.kill();
    let _ = report_api.wait();
    let _ = std::fs::write(config.log_dir.join("broker.log"), broker.log());
    drop(processors);
    drop(ingests);
    result?;
    Ok(report)
}

fn compare(table: &str, want: &BTreeMap<String, i64>, got: &BTreeMap<String, i64>) -> Vec<String> {
    let mut out = Vec::new();
    for key in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, g) = (
            want.get(key).copied().unwrap_or(0),
            got.get(key).copied().unwrap_or(0),
        );
        if w != g {
            out.push(format!("{table}: {key}: {g} in the lake, {w} acknowledged"));
        }
    }
    out
}

/// Reads the record of `event_id` back from Kafka and produces it again,
/// key and value unchanged, to a different partition.
async fn inject_double_count(brokers: &str, topic: &str, event_id: &str) -> Result<i32> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let consumer: StreamConsumer = crate::kafka::client_config(brokers)
        .set("group.id", unique("chaos-inject"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (key, payload, partition) = loop {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| anyhow!("event {event_id} not found in {topic}"))??;
        if message.key() == Some(event_id.as_bytes()) {
            break (
                message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                message.partition(),
            );
        }
    };
    let producer: FutureProducer = crate::kafka::client_config(brokers).create()?;
    let other = (partition + 1) % PARTITIONS;
    producer
        .send(
            FutureRecord::to(topic)
                .partition(other)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(other)
}

/// Writes the report as Markdown.
pub fn markdown(config: &ChaosConfig, report: &ChaosReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "| figure | value |\n|---|---|\n| load | {} s at {} events/s offered |\n| events acknowledged | {} ({:.0}/s) |\n| lake caught up | {:.1} s after the load |\n| requests | {} ({} retried) |\n| faults | {} |\n| mismatches | {} |\n",
        report.load_seconds.round(),
        config.rate,
        report.acked_events,
        report.acked_events as f64 / report.load_seconds.max(1.0),
        report.drain_seconds,
        report.requests,
        report.retried_requests,
        report.faults.len(),
        report.mismatches.len(),
    ));
    if !report.faults.is_empty() {
        out.push_str("\nFaults:\n\n");
        for (t, what) in &report.faults {
            out.push_str(&format!("- {t} s: {what}\n"));
        }
    }
    out
}

/// Default log directory for a run.
/// The processors' flags for a dedup horizon shorter than the default.
/// The processor refuses a horizon no longer than its `--future-bound`
/// (default 5 min; `ProcessorConfig::validate`), so the bound comes down
/// with it: the harness stamps each event with the moment it sends it, so a
/// minute of future is plenty. Without it a soak's processors exited at
/// start and the run waited ten minutes for a lake nobody wrote.
pub fn dedup_args(horizon: &str) -> [String; 4] {
    [
        "--dedup-horizon".to_owned(),
        horizon.to_owned(),
        "--future-bound".to_owned(),
        SHORT_HORIZON_FUTURE_BOUND.to_owned(),
    ]
}

/// The processors' `--future-bound` beside a short dedup horizon.
const SHORT_HORIZON_FUTURE_BOUND: &str = "1m";

pub fn log_dir(kind: &str) -> PathBuf {
    Path::new(&std::env::temp_dir()).join(format!("sqi-{kind}-{}", unique("run")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The soak's horizon (2 min) is below the processor's default future
    /// bound, which the processor refuses: the flags the harness adds must
    /// pass the processor's own check, or every soak dies at start.
    #[test]
    fn a_short_dedup_horizon_passes_the_processors_checks() {
        for horizon in ["2m", "90s"] {
            let extra = dedup_args(horizon);
            let mut args = vec![
                "--kafka-brokers",
                "b:9092",
                "--topic",
                "t",
                "--lake-url",
                "file:///l",
            ];
            args.extend(extra.iter().map(String::as_str));
            let config: sqi_processor::ProcessorConfig =
                sqi_schemas::cli::defaults_with(&args).unwrap();
            config.validate().unwrap();
        }
    }

    /// `(seconds, name, bytes)` samples, one a minute from minute 5, in MiB.
    fn minutes(name: &str, mib: &[u64]) -> Vec<(u64, String, u64)> {
        mib.iter()
            .enumerate()
            .map(|(i, m)| (300 + 60 * i as u64, name.to_owned(), m << 20))
            .collect()
    }

    #[test]
    fn a_sawtooth_without_a_trend_is_flat_and_a_trend_is_not() {
        // Both series are from the soak of 2026-11-23 (minutes 5 to 29).
        // The processor's point-to-point growth is +35% (its sawtooth's
        // phase); its highest values are flat.
        let processor = minutes(
            "processor-1",
            &[
                77, 101, 70, 77, 110, 75, 78, 97, 73, 80, 110, 72, 124, 103, 74, 128, 68, 75, 105,
                70, 75, 97, 72, 80, 104,
            ],
        );
        let ingest = minutes(
            "ingest-0",
            &[
                47, 43, 46, 45, 47, 43, 41, 53, 50, 53, 49, 48, 49, 50, 44, 45, 47, 50, 46, 50, 52,
                49, 52, 50, 54,
            ],
        );
        let samples: Vec<_> = processor.into_iter().chain(ingest).collect();
        let growth = growth(&samples, 300, 1800);
        let (from, to, g) = growth["processor-1"];
        assert_eq!((from >> 20, to >> 20), (110, 104));
        assert!(g < 0.0, "{g}");
        let (from, to, g) = growth["ingest-0"];
        assert_eq!((from >> 20, to >> 20), (47, 54));
        assert!(g > 0.10, "{g}");
    }

    #[test]
    fn a_rare_coincidence_is_not_growth_but_a_rising_floor_is() {
        // Every 5 s for 25 minutes: a 25 s flush sawtooth between 70 and
        // 100 MiB, and once in the last window both partitions flush
        // together (130 MiB for 10 s).
        let sawtooth = |t: u64| 70 + (t % 25) * 30 / 20;
        let mut flat: Vec<(u64, String, u64)> = (300..1800)
            .step_by(5)
            .map(|t| (t, "processor-0".to_owned(), sawtooth(t).min(100) << 20))
            .collect();
        for sample in flat.iter_mut().filter(|(t, _, _)| (1700..1710).contains(t)) {
            sample.2 = 130 << 20;
        }
        // The same sawtooth on a floor that rises 20 MiB over the run.
        let rising: Vec<(u64, String, u64)> = (300..1800)
            .step_by(5)
            .map(|t| {
                (
                    t,
                    "ingest-0".to_owned(),
                    (sawtooth(t).min(100) + (t - 300) / 75) << 20,
                )
            })
            .collect();
        let samples: Vec<_> = flat.into_iter().chain(rising).collect();
        let growth = growth(&samples, 300, 1800);
        let (from, to, g) = growth["processor-0"];
        assert_eq!((from >> 20, to >> 20), (100, 100));
        assert!(g.abs() < 0.01, "{g}");
        let (_, _, g) = growth["ingest-0"];
        assert!(g > 0.10, "{g}");
    }
}
