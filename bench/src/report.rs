//! `sqi-bench report`: latency of the report API under concurrent clients.
//!
//! Publishers are sampled log-uniformly by popularity rank (the tail matters
//! as much as the head). A first pass over every URL warms the OS page cache
//! and Parquet metadata and is not measured ("cold cache excluded"); the
//! measured pass sends `--requests` requests, cycling through the URLs, from
//! `--clients` concurrent clients, so that every client stays busy and the
//! 99th percentile has enough samples. Run the server with
//! `--answer-cache-entries 0`, or the measured pass only times the answer cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

/// `sqi-bench report` flags.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Base URL of a running `sqi report`.
    #[arg(long)]
    base: String,
    /// A marketer key.
    #[arg(long)]
    key: String,
    /// Publishers in the bench lake (names are `pub-{rank:07}`).
    #[arg(long, default_value_t = 2_000_000)]
    network: u32,
    /// Publishers to sample.
    #[arg(long, default_value_t = 200)]
    sample: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Measured requests per endpoint (the sampled URLs, repeated).
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// The 30-day period's first and last day.
    #[arg(long, default_value = "2025-06-01")]
    from: String,
    #[arg(long, default_value = "2025-06-30")]
    to: String,
    /// The reader's IANA timezone: the period is its local days (the
    /// dashboard sends the browser's zone).
    #[arg(long, default_value = "UTC")]
    tz: String,
}

/// The sampled publishers, ranks spread evenly in log space.
pub fn sample(network: u32, sample: u32) -> Vec<String> {
    let top = f64::from(network.max(1)).ln();
    let mut ranks: Vec<u32> = (0..sample)
        .map(|i| {
            (top * f64::from(i) / f64::from(sample.max(2) - 1))
                .exp()
                .round() as u32
        })
        .map(|r| r.clamp(1, network))
        .collect();
    ranks.dedup();
    ranks.into_iter().map(|r| format!("pub-{r:07}")).collect()
}

async fn run_pass(
    client: &reqwest::Client,
    args: &ReportArgs,
    urls: &[String],
) -> anyhow::Result<Vec<Duration>> {
    let owned: Vec<String> = urls.to_vec();
    let queue = Arc::new(Mutex::new(owned.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (queue, client, key) = (queue.clone(), client.clone(), args.key.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(url) = queue.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let started = Instant::now();
                let response = client.get(&url).bearer_auth(&key).send().await?;
                let status = response.status();
                let _ = response.bytes().await?;
                anyhow::ensure!(status.is_success(), "{url}: {status}");
                latencies.push(started.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable();
    Ok(all)
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}

/// Measures each endpoint and prints one JSON object.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let publishers = sample(args.network, args.sample);
    let period = format!(
        "period=custom&from={}&to={}&tz={}",
        args.from, args.to, args.tz
    );
    let mut out = serde_json::Map::new();
    for (name, path) in [
        ("summary", "summary?"),
        ("timeseries_30d", "timeseries?metric=pageviews&"),
        ("top_urls", "top-urls?limit=20&"),
    ] {
        let urls: Vec<String> = publishers
            .iter()
            .map(|p| format!("{}/v1/publishers/{p}/{path}{period}", args.base))
            .collect();
        let _ = run_pass(&client, &args, &urls).await?;
        let measured: Vec<String> = urls.iter().cycle().take(args.requests).cloned().collect();
        let started = Instant::now();
        let latencies = run_pass(&client, &args, &measured).await?;
        let seconds = started.elapsed().as_secs_f64();
        let _ = out.insert(
            name.to_owned(),
            json!({
                "requests": latencies.len(),
                "p50_ms": quantile(&latencies, 0.50),
                "p99_ms": quantile(&latencies, 0.99),
                "requests_per_s": (latencies.len() as f64 / seconds).round(),
            }),
        );
    }
    let _ = out.insert("tz".into(), json!(args.tz));
    let _ = out.insert("clients".into(), json!(args.clients));
    let _ = out.insert("publishers".into(), json!(publishers.len()));
    let _ = out.insert("requests".into(), json!(args.requests));
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
