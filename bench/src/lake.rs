//! `sqi-bench lake`: a synthetic lake at network scale for the batch benchmark.
//!
//! Publisher popularity follows a power law (rank r gets `top / r^0.8`
//! pageviews a day: the top publisher half a million, the tail a handful),
//! which is what makes the SQI's long tail, shrinkage and eligibility matter.
//! Busy publishers have a row every hour on every device and many channels;
//! quiet ones appear in a few hours. Categories are power-law sized too, with a
//! few too small for their own peer group, and 1% of publishers are missing
//! from the dimension. Everything derives from `--seed`, so a lake is
//! reproducible and need not be stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use chrono::{Days, NaiveDate};
use sqi_schemas::lake::{HOUR_MS, Table, hour_partition};

/// `sqi-bench lake` flags.
#[derive(Debug, clap::Args)]
pub struct LakeArgs {
    /// Where to write the lake (a directory; `file://` it for `sqi batch`).
    #[arg(long)]
    out: PathBuf,
    /// Publishers in the network.
    #[arg(long, default_value_t = 2_000_000)]
    publishers: u32,
    /// Days of hourly aggregates, ending on `--date`.
    #[arg(long, default_value_t = 28)]
    days: u32,
    /// The last day of data (the day to score).
    #[arg(long, default_value = "2025-06-30")]
    date: NaiveDate,
    /// Pageviews a day of the most popular publisher.
    #[arg(long, default_value_t = 500_000.0)]
    top_daily_pageviews: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The events topic whose completeness markers the generator writes, as
    /// the processor would once every hour closed (so `sqi batch` needs no
    /// `--allow-incomplete` and `daily` rows are `complete`).
    #[arg(long, default_value = "share-events")]
    topic: String,
}

/// A small, fast, seedable generator (splitmix64): the lake needs billions of
/// draws, not cryptographic quality.
#[derive(Clone)]
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Around `mean`, never below 1 (a row exists only for counted events).
    fn count(&mut self, mean: f64) -> i64 {
        ((mean * (0.5 + self.unit())).round() as i64).max(1)
    }
}

/// What a publisher's hours look like, fixed once per publisher.
struct Profile {
    /// Chance that a given hour has any of its events.
    active: f64,
    /// Pageviews in an active hour.
    hourly_pageviews: f64,
    share_rate: f64,
    clickback_rate: f64,
    /// Share channels it sees in an active hour.
    channels: usize,
    devices: &'static [&'static str],
}

const DEVICES_TOP: &[&str] = &["desktop", "mobile", "tablet", "bot"];
const DEVICES_MID: &[&str] = &["desktop", "mobile"];
const DEVICES_TAIL: &[&str] = &["mobile"];

fn profile(rank: u32, top: f64, draws: &mut Draws) -> Profile {
    let daily = top / f64::from(rank).powf(0.8);
    // 320 pageviews a day (about 13 an hour) fill every hour; fewer leave gaps.
    let active = (daily / 320.0).min(1.0);
    Profile {
        active,
        hourly_pageviews: daily / 24.0 / active,
        share_rate: 0.002 + 0.04 * draws.unit() * draws.unit(),
        clickback_rate: 0.05 + 0.6 * draws.unit(),
        channels: ((1.0 + daily / 1000.0).log2().round() as usize).clamp(1, 40),
        devices: if daily >= 5000.0 {
            DEVICES_TOP
        } else if daily >= 500.0 {
            DEVICES_MID
        } else {
            DEVICES_TAIL
        },
    }
}

/// Category sizes: a power law over 24 categories, plus three too small to
/// have 30 eligible publishers (their members are scored against the network).
fn category_of(rank: u32, draws: &mut Draws) -> Option<String> {
    let roll = draws.unit();
    if roll < 0.01 {
        return None; // missing from the dimension: `uncategorized`
    }
    if rank % 50_000 == 7 {
        return Some(format!("niche-{}", rank % 3));
    }
    // P(category k) ∝ 1/(k+1): pick by inverting the cumulative weights.
    let weights: f64 = (1..=24).map(|k| 1.0 / f64::from(k)).sum();
    let mut target = draws.unit() * weights;
    for k in 1..=24u32 {
        target -= 1.0 / f64::from(k);
        if target <= 0.0 {
            return Some(format!("category-{k:02}"));
        }
    }
    Some("category-24".to_owned())
}

fn name(rank: u32) -> String {
    format!("pub-{rank:07}")
}

/// Writes the lake and prints what it wrote.
pub fn run(args: &LakeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.publishers > 0 && args.days > 0,
        "need publishers and days"
    );
    let started = std::time::Instant::now();
    let first_day = args
        .date
        .checked_sub_days(Days::new(u64::from(args.days - 1)))
        .ok_or_else(|| anyhow::anyhow!("--date too early"))?;
    let first_hour = first_day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| anyhow::anyhow!("bad date"))?;
    let mut seeds = Draws(args.seed);
    let profiles: Vec<Profile> = (1..=args.publishers)
        .map(|rank| profile(rank, args.top_daily_pageviews, &mut seeds))
        .collect();
    let names: Vec<String> = (1..=args.publishers).map(name).collect();
    let channels: Vec<&str> = sqi_schemas::channels::all()
        .iter()
        .map(|c| c.slug)
        .collect();
    write_publishers(&args.out, args, first_hour)?;

    let hours = (args.days * 24) as usize;
    let next = AtomicUsize::new(0);
    let rows = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let hour = next.fetch_add(1, Ordering::Relaxed);
                        if hour >= hours {
                            return Ok(());
                        }
                        let window_start = first_hour + hour as i64 * HOUR_MS;
                        let mut draws =
                            Draws(args.seed ^ (hour as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                        let batch =
                            hour_batch(window_start, &profiles, &names, &channels, &mut draws)?;
                        let _ = rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
                        let dir = args
                            .out
                            .join("aggregates")
                            .join(hour_partition(window_start));
                        std::fs::create_dir_all(&dir)?;
                        std::fs::write(
                            dir.join("part-00000.parquet"),
                            sqi_schemas::lake::profile::parquet_bytes(&batch)?,
                        )?;
                        write_marker(&args.out, &args.topic, window_start)?;
                        let urls = url_batch(&batch)?;
                        let dir = args
                            .out
                            .join("url_counts")
                            .join(hour_partition(window_start));
                        std::fs::create_dir_all(&dir)?;
                        std::fs::write(
                            dir.join("part-00000.parquet"),
                            sqi_schemas::lake::profile::parquet_bytes(&urls)?,
                        )?;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(())
    })?;
    let out = serde_json::json!({
        "publishers": args.publishers,
        "days": args.days,
        "date": args.date.to_string(),
        "aggregate_rows": rows.load(Ordering::Relaxed),
        "hour_files": hours,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    println!("{out}");
    Ok(())
}

/// The hour's completeness marker, in the processor's format.
fn write_marker(out: &Path, topic: &str, window_start: i64) -> anyhow::Result<()> {
    let path = out.join(sqi_schemas::lake::paths::completeness::hour_marker(
        topic,
        window_start,
    ));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let marker = serde_json::json!({
        "window_start": window_start,
        "completed_at": chrono::Utc::now().to_rfc3339(),
        "partitions": 1,
    });
    std::fs::write(path, marker.to_string())?;
    Ok(())
}

fn hour_batch(
    window_start: i64,
    profiles: &[Profile],
    names: &[String],
    channels: &[&str],
    draws: &mut Draws,
) -> anyhow::Result<RecordBatch> {
    let mut publisher = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut event_type = StringBuilder::new();
    let mut device = StringBuilder::new();
    let mut events = Int64Builder::new();
    let mut push = |p: &str, c: Option<&str>, t: &str, d: &str, n: i64| {
        publisher.append_value(p);
        channel.append_option(c);
        event_type.append_value(t);
        device.append_value(d);
        events.append_value(n);
    };
    for (index, profile) in profiles.iter().enumerate() {
        if profile.active < 1.0 && draws.unit() >= profile.active {
            continue;
        }
        let who = &names[index];
        let views = profile.hourly_pageviews;
        for (d, share) in profile.devices.iter().zip([0.55, 0.35, 0.07, 0.03]) {
            let share = if profile.devices.len() == 1 {
                1.0
            } else {
                share
            };
            push(who, None, "pageview", d, draws.count(views * share));
        }
        let shares = views * profile.share_rate;
        // A quiet publisher shares in some hours only.
        if shares < 1.0 && draws.unit() >= shares {
            continue;
        }
        let spread = profile.channels.min(shares.ceil() as usize).max(1);
        // Channels are a publisher's own mix: start somewhere in the catalog.
        let first = index % channels.len();
        for k in 0..spread {
            let c = channels[(first + k * 7) % channels.len()];
            let per_channel = shares / spread as f64;
            push(who, Some(c), "share", "mobile", draws.count(per_channel));
            let clicks = per_channel * profile.clickback_rate;
            if clicks >= 1.0 || draws.unit() < clicks {
                push(who, Some(c), "clickback", "desktop", draws.count(clicks));
            }
        }
    }
    let rows = events.len();
    let mut starts = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    starts.append_slice(&vec![window_start; rows]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(starts.finish()),
        Arc::new(publisher.finish()),
        Arc::new(channel.finish()),
        Arc::new(event_type.finish()),
        Arc::new(device.finish()),
        Arc::new(events.finish()),
    ];
    Ok(RecordBatch::try_new(Table::Aggregates.schema(), columns)?)
}

/// The hour's `url_counts`: each pageview, share and clickback row of
/// `aggregates` credited to one of five pages of its publisher, so that URL
/// totals add up to the publisher's.
fn url_batch(aggregates: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use arrow::array::{Array, AsArray};
    let text = |name: &str| -> anyhow::Result<arrow::array::StringArray> {
        Ok(aggregates
            .column_by_name(name)
            .ok_or_else(|| anyhow::anyhow!("no {name}"))?
            .as_string::<i32>()
            .clone())
    };
    let (publishers, channels, kinds, devices) = (
        text("publisher")?,
        text("channel")?,
        text("event_type")?,
        text("device")?,
    );
    let counts = aggregates
        .column_by_name("events")
        .ok_or_else(|| anyhow::anyhow!("no events"))?
        .as_primitive::<arrow::datatypes::Int64Type>()
        .clone();
    let starts = aggregates.column(0).clone();
    let mut publisher = StringBuilder::new();
    let mut url = StringBuilder::new();
    let mut event_type = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut events = Int64Builder::new();
    let mut keep = Vec::new();
    for row in 0..aggregates.num_rows() {
        if devices.value(row) == "bot" {
            continue;
        }
        keep.push(row as u32);
        let who = publishers.value(row);
        publisher.append_value(who);
        url.append_value(format!("https://{who}.example/p/{}", row % 5));
        event_type.append_value(kinds.value(row));
        channel.append_option((!channels.is_null(row)).then(|| channels.value(row)));
        events.append_value(counts.value(row));
    }
    let starts = arrow::compute::take(&starts, &arrow::array::UInt32Array::from(keep), None)?;
    Ok(RecordBatch::try_new(
        Table::UrlCounts.schema(),
        vec![
            starts,
            Arc::new(publisher.finish()),
            Arc::new(url.finish()),
            Arc::new(event_type.finish()),
            Arc::new(channel.finish()),
            Arc::new(events.finish()),
        ],
    )?)
}

fn write_publishers(out: &Path, args: &LakeArgs, first_hour: i64) -> anyhow::Result<()> {
    let mut draws = Draws(args.seed.wrapping_mul(31).wrapping_add(7));
    let mut publisher = StringBuilder::new();
    let mut domain = StringBuilder::new();
    let mut category = StringBuilder::new();
    let mut created = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let day_ms = 24 * HOUR_MS;
    for rank in 1..=args.publishers {
        let Some(c) = category_of(rank, &mut draws) else {
            continue;
        };
        let who = name(rank);
        domain.append_value(format!("{who}.example"));
        publisher.append_value(who);
        category.append_value(c);
        // Mostly years old; 2% joined inside the window (provisional).
        let age_days = if draws.unit() < 0.02 {
            (draws.unit() * f64::from(args.days)) as i64
        } else {
            30 + (draws.unit() * 1000.0) as i64
        };
        created.append_value(first_hour + i64::from(args.days) * day_ms - age_days * day_ms);
    }
    let batch = RecordBatch::try_new(
        Table::Publishers.schema(),
        vec![
            Arc::new(publisher.finish()),
            Arc::new(domain.finish()),
            Arc::new(category.finish()),
            Arc::new(created.finish()),
        ],
    )?;
    let path = out.join(sqi_schemas::lake::paths::PUBLISHERS_FILE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, sqi_schemas::lake::profile::parquet_bytes(&batch)?)?;
    Ok(())
}
