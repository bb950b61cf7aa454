//! `sqi-bench`: load generators and same-run baselines for `BENCHMARKS.md`.
//!
//! `sqi-bench ingest` measures, against one broker in one run:
//! 1. the raw rdkafka producer (ingest's own settings) sending the records
//!    ingest would produce: the baseline;
//! 2. ingest over HTTP with batches of 50 events, as a ratio to (1);
//! 3. ingest with one event per request (requests/s);
//! 4. latency of single-event requests at half of (3), open loop;
//! 5. widget traffic (`widget.rs`): single `text/plain` beacons with a
//!    browser user-agent mix, at saturation, at half load and with
//!    connection churn, against the same server's `GET /livez` floor.
//!
//! It runs in its own process, so the load generator does not share ingest's
//! runtime; on a 2-core machine it does share the cores, as a real sidecar would.
//!
//! `sqi-bench process` fills a topic with v1 records, then measures, in one run:
//! 1. a bare rdkafka consumer that only reads the topic: the baseline;
//! 2. the processor (exactly-once, to a local-directory lake) over the same
//!    records, as events per CPU-second relative to (1), plus files and bytes
//!    per million events and the process's peak RSS.
//!
//! With `--lake-dir` it keeps the processor's lake there and names the topic
//! in its figures: `scripts/bench-process` then runs the Flink peer
//! (`bench/flink/`) on the same topic and compares the two lakes' totals
//! before it reports either engine's speed.
//!
//! `sqi-bench backlog` starts processors on a topic that already holds a
//! backlog, fresh and right after a `kill -9` crash loop (`backlog.rs`).

mod backlog;
mod lake;
mod process;
mod report;
mod widget;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "sqi-bench")]
enum Bench {
    /// Ingest throughput and latency against the raw producer.
    Ingest(IngestArgs),
    /// Processor throughput per core against a bare consumer.
    Process(process::ProcessArgs),
    /// A backlog at start, after a kill -9 crash loop, against a fresh member.
    Backlog(backlog::BacklogArgs),
    /// One processor until SIGTERM (the backlog bench's members).
    #[command(hide = true)]
    Member(Box<sqi_processor::ProcessorConfig>),
    /// Writes a synthetic network-scale lake for the batch benchmark.
    Lake(lake::LakeArgs),
    /// Report API latency under concurrent clients.
    Report(report::ReportArgs),
    /// Prints the publishers `report` samples, one per line.
    ReportSample {
        /// Publishers in the lake.
        #[arg(long, default_value_t = 2_000_000)]
        network: u32,
        /// Publishers to sample.
        #[arg(long, default_value_t = 200)]
        sample: u32,
    },
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Base URL of a running `sqi ingest`.
    #[arg(long)]
    ingest: String,
    /// The broker ingest produces to (for the raw-producer baseline).
    #[arg(long)]
    brokers: String,
    /// Topic for the raw-producer baseline (ingest uses its own).
    #[arg(long)]
    baseline_topic: String,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// The ingest process, to report its CPU time per event and per request.
    #[arg(long)]
    ingest_pid: Option<u32>,
    /// Concurrent clients in the widget phases, each on its own connection.
    #[arg(long, default_value_t = 256)]
    widget_clients: usize,
    /// Requests each connection carries in the widget churn phase.
    #[arg(long, default_value_t = 4)]
    requests_per_connection: u64,
}

/// User + system CPU seconds of a process so far (`/proc/PID/stat`, 100 ticks a second).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn event(n: u64) -> Value {
    let kinds = [
        "pageview",
        "pageview",
        "pageview",
        "pageview",
        "share",
        "clickback",
    ];
    let kind = kinds[(n % 6) as usize];
    let mut e = json!({
        "publisher": format!("bench-{:04}.example", n % 2000),
        "type": kind,
        "url": format!("https://bench-{:04}.example/articles/{}", n % 2000, n % 97),
        "visitor": format!("v{}", n % 100_000),
    });
    if kind != "pageview" {
        e["channel"] = json!(["facebook", "twitter", "whatsapp", "email"][(n % 4) as usize]);
    }
    e
}

/// What ingest would put on the wire for `event(n)`: the baseline sends this.
fn record(n: u64) -> (String, Vec<u8>) {
    let id = uuid::Uuid::now_v7().to_string();
    let mut e = event(n);
    let now = chrono::Utc::now().timestamp_millis();
    e["v"] = json!(1);
    e["event_id"] = json!(id);
    e["ts"] = json!(now);
    e["received_at"] = json!(now);
    e["device"] = json!("desktop");
    e["ip_prefix"] = json!("127.0.0.0");
    e["props"] = json!({});
    e["referrer"] = Value::Null;
    if e.get("channel").is_none() {
        e["channel"] = Value::Null;
    }
    (id, serde_json::to_vec(&e).unwrap_or_default())
}

async fn raw_producer(args: &IngestArgs) -> anyhow::Result<f64> {
    // Exactly ingest's producer settings, so the ratio measures ingest's own cost.
    let config = sqi_ingest::IngestConfig::new(&args.brokers, &args.baseline_topic);
    let producer: FutureProducer = sqi_ingest::producer::producer_config(&config)?.create()?;
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    // The same concurrency shape as the HTTP phase: each worker waits for its
    // 50 acknowledgements before sending the next 50.
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let (producer, sent, topic) =
                (producer.clone(), sent.clone(), args.baseline_topic.clone());
            tokio::spawn(async move {
                let mut n = w as u64 * 1_000_000_000;
                while Instant::now() < deadline {
                    let records: Vec<_> = (0..50).map(|i| record(n + i)).collect();
                    n += 50;
                    let futures: Vec<_> = records
                        .iter()
                        .filter_map(|(key, value)| {
                            producer
                                .send_result(FutureRecord::to(&topic).key(key).payload(value))
                                .ok()
                        })
                        .collect();
                    let acked = join_all(futures)
                        .await
                        .into_iter()
                        .filter(|r| matches!(r, Ok(Ok(_))))
                        .count();
                    let _ = sent.fetch_add(acked as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    join_all(workers).await;
    Ok(sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn http_closed_loop(args: &IngestArgs, batch: usize) -> anyhow::Result<(f64, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let url = format!("{}/v1/events", args.ingest);
    let accepted = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let (client, url, accepted, requests) = (
                client.clone(),
                url.clone(),
                accepted.clone(),
                requests.clone(),
            );
            tokio::spawn(async move {
                let mut n = w as u64 * 1_000_000_000;
                while Instant::now() < deadline {
                    let body: Vec<Value> = (0..batch as u64).map(|i| event(n + i)).collect();
                    n += batch as u64;
                    let body = if batch == 1 {
                        body[0].clone()
                    } else {
                        json!(body)
                    };
                    if let Ok(response) = client.post(&url).json(&body).send().await
                        && response.status() == 200
                    {
                        let _ = accepted.fetch_add(batch as u64, Ordering::Relaxed);
                        let _ = requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    join_all(workers).await;
    let secs = started.elapsed().as_secs_f64();
    Ok((
        accepted.load(Ordering::Relaxed) as f64 / secs,
        requests.load(Ordering::Relaxed) as f64 / secs,
    ))
}

/// Open loop: requests start on a fixed schedule whatever the answers do.
async fn latency_at(args: &IngestArgs, rate: f64) -> anyhow::Result<(f64, f64, usize)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{}/v1/events", args.ingest);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut inflight = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let _ = tick.tick().await;
        let (client, url, body) = (client.clone(), url.clone(), event(n));
        n += 1;
        inflight.push(tokio::spawn(async move {
            let started = Instant::now();
            let ok = client
                .post(&url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            ok.then(|| started.elapsed())
        }));
    }
    let mut latencies: Vec<Duration> = join_all(inflight)
        .await
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .collect();
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    Ok((ms(pick(0.50)), ms(pick(0.99)), latencies.len()))
}

/// The allocator `sqi` runs with, so that the in-process roles measured here
/// (the processor above all) allocate as they do when deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The roles' logs, on stderr, when RUST_LOG asks for them (off by default:
    // a benchmark's output is its figures).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match Bench::parse() {
        Bench::Ingest(args) => args,
        Bench::Process(args) => return process::run(args).await,
        Bench::Backlog(args) => return backlog::run(args).await,
        Bench::Member(config) => return backlog::member(*config).await,
        Bench::Lake(args) => return lake::run(&args),
        Bench::Report(args) => return report::run(args).await,
        Bench::ReportSample { network, sample } => {
            println!("{}", report::sample(network, sample).join("\n"));
            return Ok(());
        }
    };
    let raw = raw_producer(&args).await?;
    let cpu_before = cpu_seconds(args.ingest_pid);
    let (batched, batched_requests) = http_closed_loop(&args, 50).await?;
    let cpu_between = cpu_seconds(args.ingest_pid);
    let (_, single) = http_closed_loop(&args, 1).await?;
    let cpu_after = cpu_seconds(args.ingest_pid);
    // Microseconds of ingest CPU per event (batches of 50) and per single-event
    // request: the per-core figures the scale model uses.
    let per_unit = |from: Option<f64>, to: Option<f64>, rate: f64| {
        from.zip(to)
            .map(|(a, b)| ((b - a) / (rate * args.seconds as f64) * 1e6 * 10.0).round() / 10.0)
    };
    let cpu_us_per_batched_event = per_unit(cpu_before, cpu_between, batched);
    let cpu_us_per_single_request = per_unit(cpu_between, cpu_after, single);
    let (p50, p99, samples) = latency_at(&args, single / 2.0).await?;
    let widget = widget::run(&widget::WidgetLoad {
        ingest: args.ingest.clone(),
        seconds: args.seconds,
        clients: args.widget_clients,
        requests_per_connection: args.requests_per_connection,
        ingest_pid: args.ingest_pid,
    })
    .await?;
    let out = json!({
        "raw_producer_events_per_s": raw.round(),
        "ingest_batched_events_per_s": batched.round(),
        "ingest_batched_requests_per_s": batched_requests.round(),
        "ratio_batched_to_raw": (batched / raw * 1000.0).round() / 1000.0,
        "ingest_single_requests_per_s": single.round(),
        "half_load_requests_per_s": (single / 2.0).round(),
        "half_load_p50_ms": (p50 * 100.0).round() / 100.0,
        "half_load_p99_ms": (p99 * 100.0).round() / 100.0,
        "half_load_samples": samples,
        "ingest_cpu_us_per_event_batched": cpu_us_per_batched_event,
        "ingest_cpu_us_per_single_event_request": cpu_us_per_single_request,
        "connections": args.connections,
        "seconds_per_phase": args.seconds,
        "widget": widget,
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out:#}\n").as_bytes())?;
    Ok(())
}
