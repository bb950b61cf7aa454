//! The demo's history: the weeks before the live days, written straight into
//! the lake's hourly tables as the processor leaves them, through the lake
//! contract (its paths, schemas and hourly writer profile), with the
//! processor's own completeness markers. Sending a month of widget traffic
//! through ingest and the mock cluster would take many minutes; the counts
//! are the same either way, and the batch and the report cannot tell.
//!
//! What is not written: raw `events` rows (nothing downstream of the
//! processor reads them; the live days have them).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use chrono::{Datelike, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqi_processor::completeness::Completeness;
use sqi_schemas::lake::{HOUR_MS, Lake, Table, paths, profile};

use super::traffic::{CHANNELS, Counts, DEVICES, PAGES, page_url};
use crate::error::{Error, Result};

/// The name history files carry in place of a topic, partition and offsets,
/// so that an analyst can tell them from the live path's files.
const SOURCE: &str = "demo-history";

/// Relative traffic by UTC hour: quiet nights, busy evenings.
const HOURLY_WEIGHTS: [u32; 24] = [
    3, 2, 2, 2, 2, 3, 5, 7, 9, 10, 10, 10, 11, 11, 10, 10, 10, 11, 12, 13, 12, 10, 7, 5,
];

const EVENT_TYPES: [&str; 3] = ["pageview", "share", "clickback"];

/// A row of an hour's `aggregates`: publisher, channel, event type, device.
type AggregateKey = (u32, Option<u8>, u8, u8);
/// A row of an hour's `url_counts`: publisher, page, event type, channel.
type UrlKey = (u32, u32, u8, Option<u8>);

/// `bins` weights, bin `i` weighing `weight(i)`.
fn weights(bins: usize, weight: impl Fn(usize) -> u32) -> Vec<u32> {
    (0..bins).map(weight).collect()
}

/// `n` spread evenly over `bins` bins, each bin's count (if any) handed to
/// `emit`: every bin its whole share, the rest drawn one at a time.
fn scatter_uniform(n: u32, bins: usize, rng: &mut StdRng, mut emit: impl FnMut(usize, u32)) {
    if n == 0 || bins == 0 {
        return;
    }
    let bins_u32 = u32::try_from(bins).unwrap_or(u32::MAX);
    let (each, rest) = (n / bins_u32, n % bins_u32);
    if each == 0 {
        let mut drawn: HashMap<usize, u32> = HashMap::new();
        for _ in 0..rest {
            *drawn.entry(rng.random_range(0..bins)).or_default() += 1;
        }
        drawn.into_iter().for_each(|(bin, m)| emit(bin, m));
        return;
    }
    let mut extra = vec![0u32; bins];
    for _ in 0..rest {
        extra[rng.random_range(0..bins)] += 1;
    }
    extra
        .into_iter()
        .enumerate()
        .for_each(|(bin, more)| emit(bin, each + more));
}

/// `n` split over `weights`: each bin its whole share, the remainder drawn
/// one at a time by weight. With `n` below the number of bins every event is
/// drawn, which is what a few shares an hour need.
fn split(n: u32, weights: &[u32], rng: &mut StdRng) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let mut out = vec![0u32; weights.len()];
    if total == 0 || n == 0 {
        return out;
    }
    let mut left = n;
    if n as usize >= weights.len() {
        for (bin, weight) in weights.iter().enumerate() {
            let share = (u64::from(n) * u64::from(*weight) / total) as u32;
            out[bin] = share;
            left -= share;
        }
    }
    for _ in 0..left {
        let mut pick = rng.random_range(0..total);
        for (bin, weight) in weights.iter().enumerate() {
            let weight = u64::from(*weight);
            if pick < weight {
                out[bin] += 1;
                break;
            }
            pick -= weight;
        }
    }
    out
}

/// Writes `day`'s `aggregates` and `url_counts` for `counts` (by
/// publisher), in the UTC hours `hours`: each publisher's events are spread
/// over the hours, devices, pages and (for shares and clickbacks) channels
/// with the live traffic's weights. A count is split in proportion and its
/// remainder drawn at random, so the cost follows the rows written, not the
/// events (a month of a few hundred publishers is about 27 million events).
pub(super) async fn write_day(
    lake: &Lake,
    day: NaiveDate,
    hours: std::ops::Range<u8>,
    counts: &[(&str, Counts)],
    seed: u64,
) -> Result<()> {
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| Error::Invalid(format!("{day} has no midnight")))?;
    let mut rng = StdRng::seed_from_u64(seed ^ midnight.unsigned_abs());
    let hour_weights: Vec<u32> = (0..24u8)
        .map(|h| {
            if hours.contains(&h) {
                HOURLY_WEIGHTS[usize::from(h)]
            } else {
                0
            }
        })
        .collect();
    let device_weights: Vec<u32> = DEVICES.iter().map(|(_, w)| *w).collect();
    // By hour: each hour's file is built from its own rows.
    let mut aggregates: Vec<HashMap<AggregateKey, i64>> = vec![HashMap::new(); 24];
    let mut urls: Vec<HashMap<UrlKey, i64>> = vec![HashMap::new(); 24];
    for (index, (_, day_counts)) in counts.iter().enumerate() {
        let publisher = u32::try_from(index).unwrap_or(u32::MAX);
        for (kind, n) in [
            day_counts.pageviews,
            day_counts.shares,
            day_counts.clickbacks,
        ]
        .into_iter()
        .enumerate()
        {
            let kind = kind as u8;
            let channels = if kind == 0 { 1 } else { CHANNELS.len() };
            let channel_of = |bin: usize| (kind != 0).then_some((bin % channels) as u8);
            for (hour, in_hour) in split(n, &hour_weights, &mut rng).into_iter().enumerate() {
                // Devices (weighted) by channel (uniform) for `aggregates`.
                let by_device = |bin: usize| device_weights[bin / channels];
                for (bin, m) in split(
                    in_hour,
                    &weights(DEVICES.len() * channels, by_device),
                    &mut rng,
                )
                .into_iter()
                .enumerate()
                .filter(|(_, m)| *m > 0)
                {
                    *aggregates[hour]
                        .entry((publisher, channel_of(bin), kind, (bin / channels) as u8))
                        .or_default() += i64::from(m);
                }
                // Pages (uniform) by channel (uniform) for `url_counts`.
                scatter_uniform(in_hour, PAGES as usize * channels, &mut rng, |bin, m| {
                    *urls[hour]
                        .entry((publisher, (bin / channels) as u32, kind, channel_of(bin)))
                        .or_default() += i64::from(m);
                });
            }
        }
    }
    let day_number = i64::from(day.num_days_from_ce());
    let name = paths::hourly_file_name(SOURCE, 0, day_number, day_number);
    let mut puts = Vec::new();
    for (hour, (aggregates, urls)) in aggregates.into_iter().zip(urls).enumerate() {
        let window = midnight + hour as i64 * HOUR_MS;
        let mut rows: Vec<(AggregateKey, i64)> = aggregates.into_iter().collect();
        rows.sort_unstable_by_key(|(k, _)| {
            (
                counts[k.0 as usize].0,
                k.1.map(|c| CHANNELS[c as usize]),
                k.2,
                k.3,
            )
        });
        let batch = RecordBatch::try_new(
            Table::Aggregates.schema(),
            vec![
                hours_column(window, rows.len()),
                strings(rows.iter().map(|(k, _)| Some(counts[k.0 as usize].0))),
                strings(rows.iter().map(|(k, _)| k.1.map(|c| CHANNELS[c as usize]))),
                strings(rows.iter().map(|(k, _)| Some(EVENT_TYPES[k.2 as usize]))),
                strings(rows.iter().map(|(k, _)| Some(DEVICES[k.3 as usize].0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, v)| *v))),
            ],
        )?;
        puts.push((Table::Aggregates, window, batch));
        let mut rows: Vec<(UrlKey, i64)> = urls.into_iter().collect();
        rows.sort_unstable_by_key(|(k, _)| (counts[k.0 as usize].0, k.1, k.2, k.3));
        let batch = RecordBatch::try_new(
            Table::UrlCounts.schema(),
            vec![
                hours_column(window, rows.len()),
                strings(rows.iter().map(|(k, _)| Some(counts[k.0 as usize].0))),
                Arc::new(StringArray::from_iter_values(
                    rows.iter()
                        .map(|(k, _)| page_url(counts[k.0 as usize].0, k.1)),
                )),
                strings(rows.iter().map(|(k, _)| Some(EVENT_TYPES[k.2 as usize]))),
                strings(rows.iter().map(|(k, _)| k.3.map(|c| CHANNELS[c as usize]))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, v)| *v))),
            ],
        )?;
        puts.push((Table::UrlCounts, window, batch));
    }
    for (table, window, batch) in puts {
        if batch.num_rows() == 0 {
            continue;
        }
        let bytes = profile::parquet_bytes_with(&batch, profile::hourly(table)).map_err(|e| {
            Error::Invalid(format!("encoding the history's {}: {e}", table.prefix()))
        })?;
        lake.put(&paths::hourly_file(table, window, &name), bytes)
            .await?;
    }
    Ok(())
}

/// The history's completeness markers, written with the processor's own
/// [`Completeness`], as its partitions' watermarks would pass each day.
pub(super) struct Markers {
    markers: Completeness,
    partitions: i32,
}

impl Markers {
    /// Markers for `topic`'s `partitions`, its partition count published.
    pub(super) async fn new(lake: &Lake, topic: &str, partitions: i32) -> Result<Self> {
        let markers = Completeness::new(lake.clone(), topic, partitions);
        markers.publish_partition_count().await?;
        Ok(Self {
            markers,
            partitions,
        })
    }

    /// Marks every hour before `closed` (UTC ms, an hour boundary) complete.
    /// Called a day at a time: each call marks the hours since the last
    /// (the first backfills two days, as a starting processor does).
    pub(super) async fn close_before(&self, closed: i64) -> Result<()> {
        for partition in 0..self.partitions {
            let _ = self.markers.advance(partition, closed, 0).await?;
        }
        Ok(())
    }
}

fn hours_column(window: i64, rows: usize) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(vec![window; rows]).with_timezone("UTC"))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

// Test code only: an unwrap here fails the test with its cause.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_keeps_every_event_and_follows_the_weights() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [0, 1, 5, 39, 40, 41, 1000, 12_345] {
            let parts = split(n, &[5, 0, 3, 2], &mut rng);
            assert_eq!(parts.iter().sum::<u32>(), n, "{n}: {parts:?}");
            assert_eq!(parts[1], 0, "a weightless bin got events: {parts:?}");
        }
        let parts = split(10_000, &[5, 0, 3, 2], &mut rng);
        assert!((4_990..=5_010).contains(&parts[0]), "{parts:?}");
        assert!(split(7, &[0, 0], &mut rng).iter().all(|p| *p == 0));
        for (n, bins) in [(0, 40), (3, 480), (40, 40), (1_000, 40)] {
            let mut total = 0;
            scatter_uniform(n, bins, &mut rng, |bin, m| {
                assert!(bin < bins && m > 0);
                total += m;
            });
            assert_eq!(total, n);
        }
    }
}
