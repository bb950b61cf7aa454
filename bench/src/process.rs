//! The processor benchmark: events per CPU-second against a bare consumer.
//!
//! With `--lake-dir` the processor's lake is kept there, and the figures name
//! the topic and the lake, so that `scripts/bench-process` can run the Flink
//! peer (`bench/flink/`) on the same topic and check its totals against the
//! processor's before it reports either's speed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sqi_kafka::KafkaArgs;
use sqi_processor::{Processor, ProcessorConfig};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::{Lake, LakeOptions};

#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// Bootstrap brokers.
    #[arg(long)]
    brokers: String,
    /// Records to produce and process.
    #[arg(long, default_value_t = 400_000)]
    events: usize,
    /// Topic partitions.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Runs only the processor (no baselines), for profiling it alone: attach
    /// `perf record -p` when stderr says the processor starts.
    #[arg(long)]
    processor_only: bool,
    /// Writes the processor's lake into this directory (created; it must not
    /// hold a lake already) and keeps it, instead of a temporary one.
    #[arg(long)]
    lake_dir: Option<std::path::PathBuf>,
}

/// User plus system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn record(n: usize, start_ms: i64) -> String {
    let kinds = ["pageview", "pageview", "pageview", "share", "clickback"];
    let kind = kinds[n % kinds.len()];
    let channels = [
        "facebook", "twitter", "linkedin", "whatsapp", "reddit", "email",
    ];
    let channel = (kind != "pageview").then(|| channels[n % channels.len()]);
    let publisher = format!("bench-{:05}.example", (n * 7919) % 20_000);
    let ts = start_ms + (n as i64 * 37) % 3_600_000;
    let device = ["desktop", "mobile", "tablet"][n % 3];
    json!({
        "v": 1, "event_id": uuid::Uuid::new_v4().to_string(), "publisher": publisher,
        "type": kind, "channel": channel, "url": format!("https://{publisher}/articles/{}", n % 500),
        "referrer": "https://news.example/", "visitor": format!("v-{}", n % 100_000),
        "ts": ts, "received_at": ts + 120, "device": device,
        "ip_prefix": "203.0.113.0/24", "props": {"widget": "bar"}
    })
    .to_string()
}

/// Creates `topic` (and its dead-letter topic) and fills it with `events`
/// v1 records from a raw idempotent producer.
pub(crate) async fn fill(
    brokers: &str,
    topic: &str,
    partitions: i32,
    events: usize,
) -> anyhow::Result<()> {
    // The baselines connect as the processor does (sqi-kafka), on loopback.
    let kafka = KafkaArgs::plaintext(brokers, topic);
    let admin: AdminClient<DefaultClientContext> = kafka.client_config(|_| {})?.create()?;
    let dlq = format!("{topic}-dlq");
    let topics = [
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        let _ = result;
    }
    let producer: FutureProducer = kafka
        .client_config(|c| {
            let _ = c
                .set("enable.idempotence", "true")
                .set("compression.type", "lz4")
                .set("linger.ms", "20");
        })?
        .create()?;
    let start_ms = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    let mut inflight = Vec::new();
    for n in 0..events {
        let value = record(n, start_ms);
        let key = n.to_string();
        inflight.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                .map_err(|(e, _)| e)?,
        );
        if inflight.len() >= 10_000 {
            for delivery in inflight.drain(..) {
                let _ = delivery.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for delivery in inflight {
        let _ = delivery.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Reads every record; with `parse`, also decodes and checks each as the
/// processor does (`RecordView`): the floor any processor of this JSON pays
/// before doing anything with it.
pub(crate) async fn bare_consumer(
    brokers: &str,
    topic: &str,
    events: usize,
    parse: bool,
) -> anyhow::Result<(f64, f64)> {
    let consumer: StreamConsumer = KafkaArgs::plaintext(brokers, topic)
        .client_config(|c| {
            let _ = c
                .set("group.id", format!("bench-bare-{}", uuid::Uuid::new_v4()))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false");
        })?
        .create()?;
    consumer.subscribe(&[topic])?;
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut read = 0usize;
    let mut parsed = 0usize;
    while read < events {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        let payload = rdkafka::Message::payload(&message).unwrap_or_default();
        if parse && sqi_schemas::record::RecordView::from_json(payload).is_ok() {
            parsed += 1;
        }
        read += 1;
    }
    anyhow::ensure!(!parse || parsed == read, "some bench records did not parse");
    Ok((cpu_seconds() - cpu, wall.elapsed().as_secs_f64()))
}

struct ProcessorRun {
    cpu: f64,
    wall: f64,
    files: u64,
    bytes: u64,
}

async fn processor(args: &ProcessArgs, topic: &str) -> anyhow::Result<ProcessorRun> {
    // A kept lake, or a temporary one removed when this returns.
    let (_temporary, path) = match &args.lake_dir {
        Some(path) => {
            std::fs::create_dir_all(path)?;
            anyhow::ensure!(
                std::fs::read_dir(path)?.next().is_none(),
                "--lake-dir {} is not empty",
                path.display()
            );
            (None, std::path::absolute(path)?)
        }
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().to_owned();
            (Some(dir), path)
        }
    };
    let url = format!("file://{}", path.display());
    let lake = Lake::open(&url, &LakeOptions::default())?;
    let mut config = ProcessorConfig::new(
        args.brokers.clone(),
        topic,
        LakeArgs {
            url,
            s3_endpoint: None,
        },
    );
    config.group_id = format!("bench-processor-{}", uuid::Uuid::new_v4());
    // Production rotation, except that idleness closes the last ranges quickly.
    config.max_file_age = Duration::from_secs(300);
    config.idle_timeout = Duration::from_secs(1);
    config.max_buffered_events = 2_000_000;
    let processor = Processor::new(config, lake)?;
    let progress = processor.progress();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let task = tokio::spawn(processor.run(None, None, async move {
        let _ = stop_rx.await;
    }));
    while progress.committed_records.load(Ordering::Relaxed) < args.events as u64 {
        anyhow::ensure!(
            wall.elapsed() < Duration::from_secs(900),
            "processor did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    let _ = stop_tx.send(());
    task.await??;
    Ok(ProcessorRun {
        cpu,
        wall,
        files: progress.files_written.load(Ordering::Relaxed),
        bytes: progress.bytes_written.load(Ordering::Relaxed),
    })
}

pub async fn run(args: ProcessArgs) -> anyhow::Result<()> {
    let topic = format!("bench-process-{}", uuid::Uuid::new_v4());
    fill(&args.brokers, &topic, args.partitions, args.events).await?;
    let (bare_cpu, bare_wall, parse_cpu) = if args.processor_only {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        let (bare_cpu, bare_wall) =
            bare_consumer(&args.brokers, &topic, args.events, false).await?;
        let (parse_cpu, _) = bare_consumer(&args.brokers, &topic, args.events, true).await?;
        (bare_cpu, bare_wall, parse_cpu)
    };
    // A profiler attached from here on sees the processor alone.
    eprintln!("processor starts: pid {}", std::process::id());
    let run = processor(&args, &topic).await?;
    let events = args.events as f64;
    let per_core = |cpu: f64| events / cpu.max(0.01);
    let millions = events / 1e6;
    let out = json!({
        "topic": topic,
        "lake": args
            .lake_dir
            .as_ref()
            .and_then(|p| std::path::absolute(p).ok())
            .map(|p| p.display().to_string()),
        "events": args.events,
        "partitions": args.partitions,
        "bare_consumer_events_per_cpu_s": per_core(bare_cpu).round(),
        "bare_consumer_events_per_s": (events / bare_wall).round(),
        "processor_events_per_cpu_s": per_core(run.cpu).round(),
        "processor_events_per_s_wall": (events / run.wall).round(),
        "ratio_per_core": ((bare_cpu / run.cpu) * 1000.0).round() / 1000.0,
        "consume_and_parse_events_per_cpu_s": per_core(parse_cpu).round(),
        "ratio_per_core_to_consume_and_parse": ((parse_cpu / run.cpu) * 1000.0).round() / 1000.0,
        "files_per_million_events": (run.files as f64 / millions).round(),
        "bytes_per_million_events": (run.bytes as f64 / millions).round(),
        "peak_rss_mib": peak_rss_bytes() / (1024 * 1024),
        "processor_cpu_s": (run.cpu * 100.0).round() / 100.0,
        "processor_wall_s": (run.wall * 1000.0).round() / 1000.0,
        "processor_files": run.files,
        "processor_bytes": run.bytes,
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out:#}\n").as_bytes())?;
    Ok(())
}
