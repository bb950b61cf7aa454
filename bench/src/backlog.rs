//! The backlog benchmark (issue 20, check 4): a processor started against a
//! topic that already holds a backlog, right after a crash loop.
//!
//! In one run, on one topic filled once by a raw producer:
//! 1. a bare rdkafka consumer reads the whole topic: the baseline rate;
//! 2. a fresh member (new group, empty lake) starts on the backlog: seconds to
//!    its first written range, and events per second until every record is
//!    written;
//! 3. a crash loop: members of another group (empty lake) are each killed
//!    with -9 a few seconds after they start, as in a deploy whose new pods
//!    crash; then one more member starts, measured as in (2) against what the
//!    killed members had not written.
//!
//! Members are child processes (`sqi-bench member`, the processor library with
//! `sqi process`'s flags and defaults), so they can be killed with -9; each
//! writes to a local-directory lake, and progress is read from outside, from
//! the lake's range log, as the test suite reads it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use sqi_kafka::KafkaArgs;
use sqi_processor::range_log::PartitionLog;
use sqi_processor::{Processor, ProcessorConfig};
use sqi_schemas::lake::{Lake, LakeOptions};

use crate::process::{bare_consumer, fill};

#[derive(Debug, clap::Args)]
pub struct BacklogArgs {
    /// Bootstrap brokers.
    #[arg(long)]
    brokers: String,
    /// Records waiting on the topic when the members start.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Topic partitions.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Members killed with -9 before the measured one starts.
    #[arg(long, default_value_t = 5)]
    kills: u32,
    /// Seed of the kill delays (each 2–6 s after the member starts).
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// A flag for every member, as `sqi process` takes it (repeatable):
    /// `--member-arg=--kafka-config --member-arg=session.timeout.ms=10000`.
    /// Without any, members run with `sqi process`'s production defaults.
    #[arg(long = "member-arg", allow_hyphen_values = true)]
    member_args: Vec<String>,
    /// Where the members' logs go (`fresh.log`, `crash-loop.log`).
    #[arg(long, default_value = "/tmp/sqi-bench-backlog")]
    log_dir: PathBuf,
}

/// How one measured member did.
struct Catchup {
    /// Records already written when it started (by the killed members).
    written_before: i64,
    /// Seconds from its start to its first newly written range.
    first_range_s: f64,
    /// Seconds from its start until every record is written.
    all_written_s: f64,
    /// Records written between its first range and the end.
    after_first: i64,
}

impl Catchup {
    fn json(&self, total: i64) -> serde_json::Value {
        let remaining = (total - self.written_before) as f64;
        let after = self.all_written_s - self.first_range_s;
        json!({
            "records_written_before_it_started": self.written_before,
            "seconds_to_first_range": (self.first_range_s * 10.0).round() / 10.0,
            "seconds_to_all_written": (self.all_written_s * 10.0).round() / 10.0,
            "events_per_s": (remaining / self.all_written_s.max(0.001)).round(),
            "events_per_s_after_first_range": (self.after_first as f64 / after.max(0.001)).round(),
        })
    }

    fn rate(&self, total: i64) -> f64 {
        (total - self.written_before) as f64 / self.all_written_s.max(0.001)
    }
}

/// Runs the processor in this process until SIGTERM: a crash-loop member.
pub async fn member(config: ProcessorConfig) -> anyhow::Result<()> {
    let lake = Lake::open(&config.lake.url, &config.lake.options())?;
    let processor = Processor::new(config, lake)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    processor
        .run(None, None, async move {
            let _ = term.recv().await;
        })
        .await?;
    Ok(())
}

/// A member of `group`, writing to `lake_url`, logging to `log`.
fn spawn_member(
    args: &BacklogArgs,
    topic: &str,
    group: &str,
    lake_url: &str,
    log: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(std::env::current_exe()?)
        .arg("member")
        .args(["--kafka-brokers", &args.brokers])
        .args(["--topic", topic])
        .args(["--dlq-topic", &format!("{topic}-dlq")])
        .args(["--group-id", group])
        .args(["--lake-url", lake_url])
        .args(&args.member_args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// The end of each partition's newest range whose files are all written
/// (-1 where there is none).
async fn written_ends(lake: &Lake, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let mut ends = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let log = PartitionLog::new(lake.clone(), topic, p);
        let state = log.read().await?;
        ends.push(match state.newest() {
            Some(newest) if log.is_written(newest).await? => newest.end,
            _ => -1,
        });
    }
    Ok(ends)
}

fn written(ends: &[i64]) -> i64 {
    ends.iter().map(|end| end + 1).sum()
}

/// Kill delays of 2–6 s, from a seed (xorshift: the same run every time).
fn kill_delays(seed: u64, kills: u32) -> Vec<Duration> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..kills)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_millis(2_000 + state % 4_000)
        })
        .collect()
}

/// Kills `kills` members of a fresh group with -9, then measures one more.
async fn catch_up(
    args: &BacklogArgs,
    topic: &str,
    high: &[i64],
    kills: &[Duration],
    log: &Path,
) -> anyhow::Result<Catchup> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().display());
    let lake = Lake::open(&url, &LakeOptions::default())?;
    let group = format!("bench-backlog-{}", uuid::Uuid::new_v4());
    for delay in kills {
        let mut child = spawn_member(args, topic, &group, &url, log)?;
        tokio::time::sleep(*delay).await;
        child.kill()?;
        let _ = child.wait()?;
    }
    let before = written_ends(&lake, topic, args.partitions).await?;
    let started = Instant::now();
    let mut child = spawn_member(args, topic, &group, &url, log)?;
    let mut first: Option<(f64, i64)> = None;
    let all_written_s = loop {
        let ends = written_ends(&lake, topic, args.partitions).await?;
        let elapsed = started.elapsed().as_secs_f64();
        if first.is_none() && ends.iter().zip(&before).any(|(now, was)| now > was) {
            first = Some((elapsed, written(&ends)));
        }
        if ends.iter().zip(high).all(|(end, high)| end + 1 >= *high) {
            break elapsed;
        }
        if started.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            anyhow::bail!(
                "the member did not catch up in 900 s: written ends {ends:?}, high {high:?}; log {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait()?;
    // Nothing new was written: the killed members had written it all.
    let (first_range_s, written_at_first) = first.unwrap_or((0.0, written(&before)));
    Ok(Catchup {
        written_before: written(&before),
        first_range_s,
        all_written_s,
        after_first: written(high) - written_at_first,
    })
}

pub async fn run(args: BacklogArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.log_dir)?;
    let topic = format!("bench-backlog-{}", uuid::Uuid::new_v4());
    fill(&args.brokers, &topic, args.partitions, args.events).await?;
    let reader: BaseConsumer = KafkaArgs::plaintext(&args.brokers, &topic)
        .client_config(|c| {
            let _ = c.set(
                "group.id",
                format!("bench-watermarks-{}", uuid::Uuid::new_v4()),
            );
        })?
        .create()?;
    let high = (0..args.partitions)
        .map(|p| {
            reader
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map(|(_, high)| high)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Offsets, not events: the measured members must write through them.
    let total = written(&high);
    anyhow::ensure!(
        total >= args.events as i64,
        "the topic holds {total} records"
    );
    let (_, bare_wall) = bare_consumer(&args.brokers, &topic, args.events, false).await?;
    let bare_rate = args.events as f64 / bare_wall;
    eprintln!(
        "member logs in {}; the fresh member starts",
        args.log_dir.display()
    );
    let fresh_log = args.log_dir.join("fresh.log");
    let crash_log = args.log_dir.join("crash-loop.log");
    for log in [&fresh_log, &crash_log] {
        let _ = std::fs::remove_file(log);
    }
    let fresh = catch_up(&args, &topic, &high, &[], &fresh_log).await?;
    let delays = kill_delays(args.seed, args.kills);
    eprintln!("the crash loop starts: kills after {delays:?}");
    let crashed = catch_up(&args, &topic, &high, &delays, &crash_log).await?;
    let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
    let out = json!({
        "events": args.events,
        "partitions": args.partitions,
        "member_args": args.member_args,
        "kill_after_ms": delays.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        "bare_consumer_events_per_s": bare_rate.round(),
        "fresh_member": fresh.json(total),
        "after_crash_loop": crashed.json(total),
        "after_crash_loop_rate_over_fresh": ratio(crashed.rate(total), fresh.rate(total)),
        "after_crash_loop_rate_over_bare_consumer": ratio(crashed.rate(total), bare_rate),
        "fresh_rate_over_bare_consumer": ratio(fresh.rate(total), bare_rate),
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out:#}\n").as_bytes())?;
    Ok(())
}
