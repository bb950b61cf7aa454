//! `sqi demo`: the whole pipeline in one process on the embedded default.
//!
//! librdkafka's in-process mock cluster stands in for Kafka and a local
//! directory for S3, so nothing needs installing. Synthetic widget traffic goes
//! through the real ingest HTTP API, the real processor writes the real lake,
//! the real batch job scores it, and the real report API serves it.
//!
//! This module runs the whole and serves the report; the publishers and
//! their traffic are `traffic`'s, the weeks written straight into the lake
//! `history`'s, waiting for the processor `wait`'s, and the printed SQI
//! table `table`'s.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqi_ingest::IngestConfig;
use sqi_processor::{Processor, ProcessorConfig, Progress};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::{Lake, LakeOptions, Table};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, Result};
use sqi_batch as batch;
use sqi_batch::publishers;
use sqi_report as report;

mod history;
mod table;
mod traffic;
mod wait;

pub use table::ScoreRow;
use table::{print_table, read_scores};
use traffic::Counts;
use wait::{STALLED_AFTER, await_committed, await_reader};

/// `sqi demo` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How many publishers to simulate.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(10..=20_000))]
    pub publishers: u32,
    /// The live day (UTC), sent through ingest and Kafka; defaults to
    /// yesterday, when today so far is sent too.
    #[arg(long)]
    pub day: Option<NaiveDate>,
    /// Days simulated up to the live day, the live day included: the ones
    /// before it are written straight into the lake as the processor would
    /// have written them. At least 29, so the SQI's 28-day window is full.
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u32).range(29..=400))]
    pub days: u32,
    /// Where to put the lake; defaults to a fresh directory under the system temp dir.
    #[arg(long)]
    pub lake_dir: Option<PathBuf>,
    /// Where the report API listens after the table is printed.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub report_listen: std::net::SocketAddr,
    /// Exit after printing the table instead of serving the report API.
    #[arg(long)]
    pub once: bool,
    /// Seed for the synthetic traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the binary sends the logs, when not to stderr (printed).
    #[arg(skip)]
    pub log_file: Option<PathBuf>,
}

/// A fresh directory under the system temp dir, named for now.
pub fn default_lake_dir() -> PathBuf {
    std::env::temp_dir().join(format!("sqi-demo-{}", Utc::now().format("%Y%m%dT%H%M%S")))
}

/// What a demo run produced.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// Events acknowledged by ingest.
    pub accepted: u64,
    /// The lake directory.
    pub lake_dir: PathBuf,
    /// The live day.
    pub day: NaiveDate,
    /// The days written straight into the lake, oldest first.
    pub history: Vec<NaiveDate>,
    /// Every SQI row, best first.
    pub rows: Vec<ScoreRow>,
}

/// Runs the demo, printing progress and the SQI table to `out`.
pub async fn run(args: &DemoArgs, out: &mut impl Write) -> Result<DemoOutcome> {
    let started = Instant::now();
    let day = args
        .day
        .or_else(|| Utc::now().date_naive().pred_opt())
        .ok_or_else(|| Error::Invalid("cannot work out yesterday's date".into()))?;
    let lake_dir = args.lake_dir.clone().unwrap_or_else(default_lake_dir);
    std::fs::create_dir_all(&lake_dir)?;
    let lake_dir = lake_dir.canonicalize()?;
    // The mock cluster is new each run, its offsets from 0, while an earlier
    // run's range log says where that run's processor stopped: it would wait
    // for offsets this cluster will not reach.
    let log_name = args
        .log_file
        .as_deref()
        .and_then(std::path::Path::file_name);
    let earlier = std::fs::read_dir(&lake_dir)?
        .filter_map(std::result::Result::ok)
        .any(|entry| Some(entry.file_name().as_os_str()) != log_name);
    if earlier {
        return Err(Error::Invalid(format!(
            "{} is not empty: the demo needs a lake of its own (omit --lake-dir for a fresh one)",
            lake_dir.display()
        )));
    }
    let lake_url = format!("file://{}", lake_dir.display());
    let topic = TOPIC;
    let lake = Lake::open(&lake_url, &LakeOptions::default())?;
    let history: Vec<NaiveDate> = (1..args.days)
        .rev()
        .filter_map(|back| day.checked_sub_days(chrono::Days::new(u64::from(back))))
        .collect();
    let today = Utc::now().date_naive();
    let with_today = day.succ_opt() == Some(today);
    writeln!(
        out,
        "SQI Engine demo: {} publishers, {} days ({} to {day}{})",
        args.publishers,
        args.days,
        history.first().unwrap_or(&day),
        if with_today { ", and today so far" } else { "" }
    )?;
    writeln!(out, "  lake: {lake_url}")?;
    if let Some(log_file) = &args.log_file {
        writeln!(
            out,
            "  logs: {} (set RUST_LOG to see them here)",
            log_file.display()
        )?;
    }

    let cluster = MockCluster::new(1)?;
    cluster.create_topic(topic, PARTITIONS, 1)?;
    cluster.create_topic("share-events-dlq", 1, 1)?;
    let brokers = cluster.bootstrap_servers();
    writeln!(out, "  kafka: in-process mock cluster at {brokers}")?;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let (dimension, models) = traffic::publishers(&mut rng, args.publishers, day);
    publishers::write(&lake, &dimension).await?;
    let counts_on = |date: NaiveDate, fraction: f64| -> Vec<(&str, Counts)> {
        let back = (day - date).num_days();
        models
            .iter()
            .map(|m| {
                (
                    m.publisher.as_str(),
                    m.counts(args.seed, date, back, fraction),
                )
            })
            .collect()
    };

    // The live path carries the last 24 hours when the live day is
    // yesterday (the live day's hours from this hour on, and today so far),
    // else the whole live day. Everything before goes straight into the
    // lake's hourly tables, the whole days' hours marked complete, as the
    // processor leaves them.
    let now = Utc::now().timestamp_millis();
    let day_start = midnight_or(day);
    let cut_hour: u8 = if with_today {
        u8::try_from((now - DAY_MS - day_start).div_euclid(HOUR_MS)).unwrap_or(0)
    } else {
        0
    };
    let live_from = day_start + i64::from(cut_hour) * HOUR_MS;
    let day_counts = counts_on(day, 1.0);
    let early: Vec<(&str, Counts)> = day_counts
        .iter()
        .map(|(p, c)| (*p, c.scaled(f64::from(cut_hour) / 24.0)))
        .collect();
    // Each day of history is scored by the nightly batch (its hours are
    // complete) as soon as it and the 27 days before it are written, and the
    // months are merged after the last, as a month of `sqi batch` runs would
    // leave them; all of it beside the live path.
    let written = Instant::now();
    let (days_tx, days_rx) = tokio::sync::mpsc::unbounded_channel();
    let history_batch = tokio::spawn(score_history(lake.clone(), days_rx));
    let markers = history::Markers::new(&lake, topic, PARTITIONS).await?;
    let mut history_events = 0;
    for date in &history {
        let counts = counts_on(*date, 1.0);
        history_events += counts.iter().map(|(_, c)| c.total()).sum::<u64>();
        history::write_day(&lake, *date, 0..24, &counts, args.seed).await?;
        if let Some(closed) = date.succ_opt().and_then(midnight) {
            markers.close_before(closed).await?;
        }
        let _ = days_tx.send(*date);
    }
    drop(days_tx);
    if cut_hour > 0 {
        history_events += early.iter().map(|(_, c)| c.total()).sum::<u64>();
        history::write_day(&lake, day, 0..cut_hour, &early, args.seed).await?;
    }
    if let Some(first) = history.first() {
        writeln!(
            out,
            "  history: {first} to {}{}, {history_events} events, written straight into the lake's hourly tables in {:.1}s",
            history.last().unwrap_or(first),
            if cut_hour > 0 {
                format!(" and {day} until {cut_hour:02}:00")
            } else {
                String::new()
            },
            written.elapsed().as_secs_f64()
        )?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let ingest_listener = TcpListener::bind("127.0.0.1:0").await?;
    let ingest_addr = ingest_listener.local_addr()?;
    let ingest = tokio::spawn(sqi_ingest::run(
        IngestConfig::new(brokers.clone(), topic),
        ingest_listener,
        None,
        stopped(stop_rx.clone()),
    ));

    let lake_args = LakeArgs {
        url: lake_url.clone(),
        s3_endpoint: None,
    };
    let mut processor_config = ProcessorConfig::new(brokers.clone(), topic, lake_args.clone());
    processor_config.group_id = "sqi-demo".into();
    // Fewer, larger files than the test default of one flush a second.
    processor_config.max_file_age = Duration::from_secs(5);
    // The simulated day arrives in random event-time order, all at once.
    processor_config.allowed_lateness = Duration::from_secs(48 * 3600);
    let processor = Processor::new(processor_config, lake.clone())?;
    let progress = processor.progress();
    let processing = tokio::spawn(processor.run(None, None, stopped(stop_rx.clone())));

    // The live path: the live day, and today so far when the live day is
    // yesterday, through the real ingest, Kafka and processor.
    let live: Vec<(&str, Counts)> = day_counts
        .iter()
        .zip(&early)
        .map(|((p, all), (_, before))| (*p, all.minus(*before)))
        .collect();
    let day_end = day_start + DAY_MS;
    let mut bodies = traffic::requests(&mut rng, &live, live_from, day_end);
    let mut total: u64 = live.iter().map(|(_, c)| c.total()).sum();
    if with_today {
        let so_far = (now - day_end) as f64 / DAY_MS as f64;
        let today_counts = counts_on(today, so_far);
        total += today_counts.iter().map(|(_, c)| c.total()).sum::<u64>();
        bodies.extend(traffic::requests(&mut rng, &today_counts, day_end, now));
    }
    writeln!(
        out,
        "  live path: {}{} through ingest, Kafka and the processor: sending {total} widget events to http://{ingest_addr}/v1/events ...",
        if cut_hour > 0 {
            format!("{day} from {cut_hour:02}:00")
        } else {
            day.to_string()
        },
        if with_today { " and today so far" } else { "" }
    )?;
    let accepted = send_all(ingest_addr, bodies, &progress).await?;
    writeln!(
        out,
        "  ingest acknowledged {accepted} events in {:.1}s",
        started.elapsed().as_secs_f64()
    )?;

    await_committed(&progress, accepted, STALLED_AFTER).await?;
    writeln!(
        out,
        "  processor committed {} events ({} distinct) in {} Parquet files",
        progress.committed_records.load(Ordering::Relaxed),
        progress.committed_events.load(Ordering::Relaxed),
        progress.files_written.load(Ordering::Relaxed)
    )?;

    let scored = history_batch.await??;
    if !history.is_empty() {
        writeln!(
            out,
            "  batch scored the {} days of history and merged their months in {scored:.1}s",
            history.len()
        )?;
    }
    // The live day arrives all at once with 48 h of allowed lateness, so
    // the processor cannot have closed its hours yet: the demo scores it
    // provisionally, as `sqi batch --allow-incomplete` would.
    let outcome = batch::run_day(
        &lake,
        day,
        &batch::Gate::allowing_incomplete(topic),
        batch::Shard::WHOLE,
    )
    .await?;
    writeln!(
        out,
        "  batch wrote daily/ ({} rows) and sqi/ ({} rows, {} scored) for {day}{}",
        outcome.daily_rows,
        outcome.sqi_rows,
        outcome.scored,
        if outcome.complete {
            ""
        } else {
            " (complete=false: its hours are still open)"
        }
    )?;
    let rows = read_scores(&lake, day).await?;
    print_table(out, &rows)?;

    let _ = stop_tx.send(true);
    let _ = ingest.await;
    let _ = processing.await;

    if !args.once {
        serve_report(args, &lake, &lake_dir, &rows, day, out).await?;
    }
    drop(cluster);
    Ok(DemoOutcome {
        accepted,
        lake_dir,
        day,
        history,
        rows,
    })
}

/// Runs the nightly batch on each day of history `days` sends (every hour
/// marked complete), then merges the months they touched; the seconds it took.
async fn score_history(
    lake: Lake,
    mut days: tokio::sync::mpsc::UnboundedReceiver<NaiveDate>,
) -> Result<f64> {
    let started = Instant::now();
    let strict = batch::Gate {
        topic: TOPIC.to_owned(),
        allow_incomplete: false,
    };
    let mut scored = Vec::new();
    while let Some(date) = days.recv().await {
        let _ = batch::run_day(&lake, date, &strict, batch::Shard::WHOLE).await?;
        scored.push(date);
    }
    for month in batch::compact::months_of(scored) {
        for table in [Table::Daily, Table::DailyUrls, Table::DailyHours] {
            let _ = batch::compact::compact_month(&lake, table, month, batch::Shard::WHOLE).await?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The demo's events topic and its partitions.
const TOPIC: &str = "share-events";
const PARTITIONS: i32 = 4;
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// The first instant of `day` (UTC ms).
fn midnight(day: NaiveDate) -> Option<i64> {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
}

/// [`midnight`], for days the demo computed itself (always valid).
fn midnight_or(day: NaiveDate) -> i64 {
    midnight(day).unwrap_or_default()
}

async fn send_all(
    addr: std::net::SocketAddr,
    bodies: Vec<(&'static str, serde_json::Value)>,
    progress: &Arc<Progress>,
) -> Result<u64> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/events");
    // Eight concurrent senders, like many pages posting at once, share one queue.
    let queue = Arc::new(Mutex::new(bodies.into_iter()));
    // What ingest has acknowledged so far, across senders: each paces on it.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
        let (progress, acknowledged) = (progress.clone(), acknowledged.clone());
        workers.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            while let Some((ua, body)) = take_next(&queue) {
                await_reader(
                    &progress,
                    acknowledged.load(Ordering::Relaxed),
                    STALLED_AFTER,
                )
                .await?;
                // A 503 means the broker is busy: retrying the same events is safe.
                for attempt in 0..20 {
                    let response = client
                        .post(&url)
                        .header("user-agent", ua)
                        .json(&body)
                        .send()
                        .await
                        .map_err(|e| Error::Invalid(format!("ingest request failed: {e}")))?;
                    if response.status().is_success() {
                        let answer: serde_json::Value = response
                            .json()
                            .await
                            .map_err(|e| Error::Invalid(format!("ingest answer: {e}")))?;
                        let events = answer["accepted"].as_u64().unwrap_or(0);
                        accepted += events;
                        let _ = acknowledged.fetch_add(events, Ordering::Relaxed);
                        break;
                    }
                    if attempt == 19 {
                        return Err(Error::Invalid(format!(
                            "ingest kept answering {}",
                            response.status()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok::<u64, Error>(accepted)
        }));
    }
    let mut accepted = 0;
    for worker in workers {
        accepted += worker
            .await
            .map_err(|e| Error::Invalid(format!("traffic worker failed: {e}")))??;
    }
    Ok(accepted)
}

/// Pops one item; the lock is released before the caller awaits anything.
fn take_next<T>(queue: &Mutex<std::vec::IntoIter<T>>) -> Option<T> {
    queue.lock().ok()?.next()
}

async fn serve_report(
    args: &DemoArgs,
    lake: &Lake,
    lake_dir: &std::path::Path,
    rows: &[ScoreRow],
    day: NaiveDate,
    out: &mut impl Write,
) -> Result<()> {
    let marketer_key = format!("demo-marketer-{}", uuid::Uuid::new_v4().simple());
    let example = rows
        .first()
        .map_or("news-00000".to_owned(), |r| r.publisher.clone());
    let publisher_key = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let keys = json!([
        {"name": "demo-marketer", "sha256": hex::encode(Sha256::digest(marketer_key.as_bytes())), "scope": "marketer"},
        {"name": "demo-publisher", "sha256": hex::encode(Sha256::digest(publisher_key.as_bytes())), "scope": format!("publisher:{example}")},
    ]);
    let keys_path = lake_dir.join("demo-api-keys.json");
    std::fs::write(
        &keys_path,
        serde_json::to_vec_pretty(&keys).unwrap_or_default(),
    )?;
    let ring = report::KeyRing::load(&keys_path)?;
    let state = report::ReportState::new(lake.clone(), ring, None).await?;
    let listener = TcpListener::bind(args.report_listen).await?;
    let addr = listener.local_addr()?;
    writeln!(out, "\nReport API: http://{addr}  (Ctrl-C to stop)")?;
    writeln!(out, "  marketer key:  {marketer_key}")?;
    writeln!(
        out,
        "  publisher key: {publisher_key}  (scope publisher:{example})"
    )?;
    writeln!(
        out,
        "  try: curl -H 'Authorization: Bearer {marketer_key}' 'http://{addr}/v1/publishers/{example}/summary?period=custom&from={day}&to={day}'"
    )?;
    writeln!(
        out,
        "  dashboard: http://{addr}/dashboard#key={marketer_key}&publisher={example}&period=28d"
    )?;
    out.flush()?;
    report::serve(state, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
