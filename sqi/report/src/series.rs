//! The arithmetic of the answers: rows the read layer returns summed into a
//! publisher's totals by event type, and into zero-filled series by hour or
//! by local day that add up to the period's total.
//!
//! Pure: no lake, no request. What each bucket holds is decided by the
//! window ([`Window`]); this module only adds the rows up. It must not
//! read, filter or rank rows (`read`'s and the handlers' work), nor shape
//! an answer (`shape`'s).

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use sqi_schemas::lake::HOUR_MS;

use super::answer::{Bucket, Counts};
use super::read::{dates, hour_starts, integers};
use super::window::{DayBucket, Window};
use crate::error::Result;

/// Pageviews, shares and clickbacks of one publisher in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pageviews.
    pub pageviews: i64,
    /// Shares.
    pub shares: i64,
    /// Clickbacks.
    pub clickbacks: i64,
}

impl Totals {
    pub(super) fn add(&mut self, event_type: &str, events: i64) {
        match event_type {
            "pageview" => self.pageviews += events,
            "share" => self.shares += events,
            "clickback" => self.clickbacks += events,
            _ => {}
        }
    }

    pub(super) fn counts(self) -> Counts {
        let rate = |x: i64, n: i64| (n > 0).then(|| x as f64 / n as f64);
        Counts {
            pageviews: self.pageviews,
            shares: self.shares,
            clickbacks: self.clickbacks,
            share_rate: rate(self.shares, self.pageviews),
            clickback_rate: rate(self.clickbacks, self.shares),
            social_traffic_ratio: rate(self.clickbacks, self.pageviews),
        }
    }
}

/// The hour series' rows (every UTC hour of `window`, in its local time) and
/// total, from rows of `window_start` and `events`.
pub(super) fn hour_series(window: &Window, batches: &[RecordBatch]) -> Result<(Vec<Bucket>, i64)> {
    let hours = window.hours();
    let first = hours.first().copied().unwrap_or(0);
    let mut values = vec![0_i64; hours.len()];
    let mut total = 0;
    for batch in batches {
        for (hour, events) in hour_starts(batch)?
            .into_iter()
            .zip(integers(batch, "events")?)
        {
            total += events;
            if let Some(value) = usize::try_from((hour - first).div_euclid(HOUR_MS))
                .ok()
                .and_then(|i| values.get_mut(i))
            {
                *value += events;
            }
        }
    }
    let rows = hours
        .iter()
        .zip(values)
        .map(|(h, value)| Bucket {
            bucket: window.local_hour(*h),
            value,
        })
        .collect();
    Ok((rows, total))
}

/// The day series' rows (every local day of `window`, in order) and total:
/// hours (`window_start`, `events`) bucketed into the local day each starts
/// in, and whole days of a day table (`date`, `events`) added to theirs. A
/// row outside the window's days (the UTC hour holding the first local
/// midnight, in a zone whose offset is not whole hours) gets its own bucket,
/// as its local day.
pub(super) fn day_series(
    window: &Window,
    hours: &[RecordBatch],
    days: &[RecordBatch],
) -> Result<(Vec<Bucket>, i64)> {
    let local = window.local_days();
    let mut values = vec![0_i64; local.len()];
    let mut outside: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
    let mut total = 0;
    for batch in hours {
        for (hour, events) in hour_starts(batch)?
            .into_iter()
            .zip(integers(batch, "events")?)
        {
            total += events;
            let value = match local.bucket(hour) {
                DayBucket::Day(i) => values.get_mut(i),
                DayBucket::Before | DayBucket::After => None,
            };
            match value {
                Some(value) => *value += events,
                None => *outside.entry(window.local_day(hour)).or_default() += events,
            }
        }
    }
    for batch in days {
        for (date, events) in dates(batch)?.into_iter().zip(integers(batch, "events")?) {
            total += events;
            let index = usize::try_from((date - window.from).num_days()).ok();
            match index.and_then(|i| values.get_mut(i)) {
                Some(value) => *value += events,
                None => *outside.entry(date).or_default() += events,
            }
        }
    }
    let mut series: Vec<(chrono::NaiveDate, i64)> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| (local.day(i), value))
        .collect();
    if !outside.is_empty() {
        series.extend(outside);
        series.sort_by_key(|(date, _)| *date);
    }
    let rows = series
        .into_iter()
        .map(|(date, value)| Bucket {
            bucket: date.to_string(),
            value,
        })
        .collect();
    Ok((rows, total))
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use arrow::datatypes::Date32Type;

    use super::*;

    fn hour_rows(hours: &[i64], events: &[i64]) -> RecordBatch {
        use arrow::array::{Int64Array, TimestampMillisecondArray};
        RecordBatch::try_from_iter([
            (
                "window_start",
                std::sync::Arc::new(
                    TimestampMillisecondArray::from(hours.to_vec()).with_timezone("UTC"),
                ) as arrow::array::ArrayRef,
            ),
            (
                "events",
                std::sync::Arc::new(Int64Array::from(events.to_vec())) as _,
            ),
        ])
        .unwrap()
    }

    fn day(text: &str) -> chrono::NaiveDate {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn series(rows: &[Bucket]) -> Vec<(String, i64)> {
        rows.iter().map(|r| (r.bucket.clone(), r.value)).collect()
    }

    /// Item 7: a day series in New York sums each local day's own hours, 23
    /// on the spring-forward day and 25 on the fall-back day, whatever batch
    /// or order the hours come in; every day of the period has a bucket.
    #[test]
    fn day_series_sum_23_and_25_hour_local_days() {
        let ny = "America/New_York".parse::<chrono_tz::Tz>().unwrap();
        for (from, to, expected) in [
            ("2024-03-09", "2024-03-11", [24, 23, 24]),
            ("2024-11-02", "2024-11-04", [24, 25, 24]),
        ] {
            let window = Window::days_in("custom", ny, day(from), day(to));
            let mut hours = window.hours();
            hours.reverse();
            // An hour's events are 1, 10 or 100 by its local day, so a sum
            // tells which day each hour went to.
            let events: Vec<i64> = hours
                .iter()
                .map(|h| 10_i64.pow((window.local_day(*h) - day(from)).num_days() as u32))
                .collect();
            let (first, rest) = hours.split_at(30);
            let batches = [
                hour_rows(first, &events[..30]),
                hour_rows(rest, &events[30..]),
            ];
            let (rows, total) = day_series(&window, &batches, &[]).unwrap();
            let want: Vec<(String, i64)> = window
                .days()
                .iter()
                .zip(expected)
                .enumerate()
                .map(|(i, (d, n))| (d.to_string(), n * 10_i64.pow(i as u32)))
                .collect();
            assert_eq!(series(&rows), want, "{from}");
            assert_eq!(total, want.iter().map(|(_, v)| v).sum::<i64>());
        }
        // No rows: every day, zero.
        let window = Window::days_in("custom", ny, day("2024-03-09"), day("2024-03-11"));
        let (rows, total) = day_series(&window, &[], &[]).unwrap();
        assert_eq!(series(&rows).len(), 3);
        assert_eq!(total, 0);
    }

    /// In UTC whole days come from a day table by `date` beside hours of
    /// days it has not closed; a row outside the period's days keeps its own
    /// bucket, in order, as the hour holding Kolkata's first midnight does.
    #[test]
    fn day_series_add_day_rows_and_keep_rows_outside_the_days() {
        use arrow::array::{Date32Array, Int64Array};
        let window = Window::days_in(
            "custom",
            chrono_tz::Tz::UTC,
            day("2024-03-09"),
            day("2024-03-11"),
        );
        let days = RecordBatch::try_from_iter([
            (
                "date",
                std::sync::Arc::new(Date32Array::from(vec![
                    Date32Type::from_naive_date(day("2024-03-09")),
                    Date32Type::from_naive_date(day("2024-03-09")),
                    Date32Type::from_naive_date(day("2024-03-12")),
                ])) as arrow::array::ArrayRef,
            ),
            (
                "events",
                std::sync::Arc::new(Int64Array::from(vec![2, 3, 7])) as _,
            ),
        ])
        .unwrap();
        let last = window.hours()[window.hours().len() - 1];
        let (rows, total) =
            day_series(&window, &[hour_rows(&[last, last], &[1, 4])], &[days]).unwrap();
        assert_eq!(
            series(&rows),
            [
                ("2024-03-09".to_owned(), 5),
                ("2024-03-10".to_owned(), 0),
                ("2024-03-11".to_owned(), 5),
                ("2024-03-12".to_owned(), 7),
            ]
        );
        assert_eq!(total, 17);

        let india = "Asia/Kolkata".parse::<chrono_tz::Tz>().unwrap();
        let window = Window::days_in("custom", india, day("2024-03-10"), day("2024-03-11"));
        let hours = window.hours();
        let (rows, total) =
            day_series(&window, &[hour_rows(&hours, &vec![1; hours.len()])], &[]).unwrap();
        assert_eq!(
            series(&rows),
            [
                ("2024-03-09".to_owned(), 1),
                ("2024-03-10".to_owned(), 24),
                ("2024-03-11".to_owned(), 24),
            ]
        );
        assert_eq!(total, 49);
    }

    /// The hour series has a bucket for every hour of the window, 23 on a
    /// spring-forward day, each in local time.
    #[test]
    fn hour_series_has_every_hour_in_local_time() {
        let ny = "America/New_York".parse::<chrono_tz::Tz>().unwrap();
        let window = Window::days_in("custom", ny, day("2024-03-10"), day("2024-03-10"));
        let hours = window.hours();
        assert_eq!(hours.len(), 23);
        let (rows, total) = hour_series(&window, &[hour_rows(&hours[2..4], &[5, 6])]).unwrap();
        let got = series(&rows);
        assert_eq!(got.len(), 23);
        assert_eq!(got[0], ("2024-03-10T00:00:00-05:00".to_owned(), 0));
        assert_eq!(got[2], ("2024-03-10T03:00:00-04:00".to_owned(), 5));
        assert_eq!(got[3], ("2024-03-10T04:00:00-04:00".to_owned(), 6));
        assert_eq!(total, 11);
    }
}
