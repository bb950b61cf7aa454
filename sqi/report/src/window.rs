//! Periods resolved in the reader's timezone: `7d` in `America/New_York` is
//! seven New York days, from local midnight to local midnight, whatever their
//! length in hours (23 or 25 across a DST change). Everything downstream works
//! on the resulting UTC instants and buckets hours back into local days, so
//! the days of a period always add up to its total.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ReportError;
use crate::params::{PeriodParams, bad, parse_bool};

const HOUR_MS: i64 = 3_600_000;

/// The longest custom period (and SQI history), in days: a year, leap day
/// included. A question's cost grows with its days.
pub const MAX_CUSTOM_DAYS: u64 = 366;

/// A period of whole local days in a timezone, and the UTC instants it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The period's name as asked (`7d`, `custom`, ...).
    pub name: String,
    /// The reader's timezone.
    pub tz: Tz,
    /// First local day, inclusive.
    pub from: NaiveDate,
    /// Last local day, inclusive.
    pub to: NaiveDate,
    /// Local midnight starting `from`.
    pub start: DateTime<Utc>,
    /// Local midnight after `to` (exclusive).
    pub end: DateTime<Utc>,
}

/// The first instant of `date` in `tz`: its midnight, or, where a DST change
/// skips midnight, the first local time that exists.
fn local_day_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    for hour in 0..24 {
        let time = NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN);
        if let Some(t) = tz.from_local_datetime(&date.and_time(time)).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    date.and_time(NaiveTime::MIN).and_utc()
}

/// Parses `tz` (default UTC) as an IANA name.
pub fn parse_tz(tz: Option<&str>) -> Result<Tz, ReportError> {
    match tz {
        None | Some("") => Ok(Tz::UTC),
        Some(name) => name.parse::<Tz>().map_err(|_| {
            bad(
                "tz",
                format!("unknown timezone `{name}`; use an IANA name such as America/New_York"),
            )
        }),
    }
}

impl Window {
    /// The window of local days `from..=to` in `tz`.
    pub fn days_in(name: &str, tz: Tz, from: NaiveDate, to: NaiveDate) -> Self {
        let after = to.checked_add_days(Days::new(1)).unwrap_or(to);
        Self {
            name: name.to_owned(),
            tz,
            from,
            to,
            start: local_day_start(tz, from),
            end: local_day_start(tz, after),
        }
    }

    /// Resolves `period` (and `from`/`to` for `custom`) in `tz`, ending on the
    /// local day that contains `now`.
    pub fn resolve(params: &PeriodParams, now: DateTime<Utc>) -> Result<Self, ReportError> {
        let tz = parse_tz(params.tz.as_deref())?;
        let today = now.with_timezone(&tz).date_naive();
        let name = params.period.clone().unwrap_or_else(|| "28d".to_owned());
        let last_days = |n: u64| {
            (
                today.checked_sub_days(Days::new(n - 1)).unwrap_or(today),
                today,
            )
        };
        // Every endpoint that takes a period takes these flags, and checks
        // them even where it has no use for them (a typo is an error).
        let _ = parse_bool("include_bots", params.include_bots.as_deref())?;
        if let Some(other) = params
            .compare
            .as_deref()
            .filter(|c| *c != "previous_period")
        {
            return Err(bad(
                "compare",
                format!("unknown compare `{other}`; use previous_period"),
            ));
        }
        // `from` and `to` count only for `custom`, but the document types
        // them as dates whatever the period: a value that is not one is
        // refused rather than silently ignored.
        if name != "custom" {
            for (field, value) in [("from", &params.from), ("to", &params.to)] {
                if value.is_some() {
                    let _ = parse_date(field, value.as_deref())?;
                }
            }
        }
        let (from, to) = match name.as_str() {
            "today" => last_days(1),
            "7d" => last_days(7),
            "28d" => last_days(28),
            "30d" => last_days(30),
            "90d" => last_days(90),
            "custom" => {
                let from = parse_date("from", params.from.as_deref())?;
                let to = parse_date("to", params.to.as_deref())?;
                if from > to {
                    return Err(bad("from", "`from` is after `to`"));
                }
                if (to - from).num_days() >= MAX_CUSTOM_DAYS as i64 {
                    return Err(bad(
                        "from",
                        format!("a custom period may span at most {MAX_CUSTOM_DAYS} days"),
                    ));
                }
                (from, to)
            }
            other => {
                return Err(bad(
                    "period",
                    format!("unknown period `{other}`; use today, 7d, 28d, 30d, 90d or custom"),
                ));
            }
        };
        Ok(Self::days_in(&name, tz, from, to))
    }

    /// How many local days the window covers.
    pub fn day_count(&self) -> u64 {
        (self.to - self.from).num_days().unsigned_abs() + 1
    }

    /// The equal-length window of days just before this one.
    pub fn previous(&self) -> Self {
        let len = self.day_count();
        let from = self
            .from
            .checked_sub_days(Days::new(len))
            .unwrap_or(self.from);
        let to = self
            .from
            .checked_sub_days(Days::new(1))
            .unwrap_or(self.from);
        Self::days_in(&format!("previous_{}", self.name), self.tz, from, to)
    }

    /// Every local day, in order.
    pub fn days(&self) -> Vec<NaiveDate> {
        self.from
            .iter_days()
            .take_while(|d| *d <= self.to)
            .collect()
    }

    /// Every hour the window spans, as UTC hour starts (ms), in order.
    pub fn hours(&self) -> Vec<i64> {
        let (start, end) = (self.start.timestamp_millis(), self.end.timestamp_millis());
        // Zones with half-hour offsets start their days mid-UTC-hour; the lake
        // is hourly in UTC, so the window counts whole UTC hours from the one
        // containing its start.
        let first = start.div_euclid(HOUR_MS) * HOUR_MS;
        (0..)
            .map(|i| first + i * HOUR_MS)
            .take_while(|h| *h < end)
            .collect()
    }

    /// The local day an hour (UTC ms) falls in.
    pub fn local_day(&self, hour_ms: i64) -> NaiveDate {
        DateTime::<Utc>::from_timestamp_millis(hour_ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .date_naive()
    }

    /// The window's local days as UTC instants, to bucket many hours by.
    pub fn local_days(&self) -> LocalDays {
        let starts = self
            .days()
            .into_iter()
            .map(|d| local_day_start(self.tz, d).timestamp_millis())
            .chain([self.end.timestamp_millis()])
            .collect();
        LocalDays {
            from: self.from,
            starts,
        }
    }

    /// An hour (UTC ms) as local RFC 3339 time, e.g. `2024-03-10T03:00:00-04:00`.
    pub fn local_hour(&self, hour_ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(hour_ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .to_rfc3339()
    }

    /// The UTC dates (lake partitions) the window touches, inclusive.
    pub fn partitions(&self) -> (NaiveDate, NaiveDate) {
        let last = self.end - chrono::Duration::milliseconds(1);
        (self.start.date_naive(), last.date_naive())
    }

    /// The whole UTC days inside the window (its hours, from the one holding
    /// its start), first and last; `None` when no whole UTC day fits. Those
    /// days can be read from the day tables, the hours around them not.
    pub fn whole_utc_days(&self) -> Option<(NaiveDate, NaiveDate)> {
        let first_hour = self.start.timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS;
        let first_hour = DateTime::<Utc>::from_timestamp_millis(first_hour)?;
        let first = if first_hour.time() == NaiveTime::MIN {
            first_hour.date_naive()
        } else {
            first_hour.date_naive().succ_opt()?
        };
        // The day of `end` (exclusive) ends after it, whatever its time.
        let last = self.end.date_naive().pred_opt()?;
        (first <= last).then_some((first, last))
    }

    /// Whether the window is whole UTC days, so that `daily` answers it.
    pub fn is_utc_days(&self) -> bool {
        self.tz == Tz::UTC
    }
}

/// A window's local days as the UTC instants that start them, so that a
/// series buckets each hour by comparing integers: converting every hour to
/// the zone (a timezone lookup and a calendar date each) cost more than
/// summing its rows. The days are whatever length the zone makes them, 23 or
/// 25 hours across a DST change, since each start is the zone's own midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDays {
    from: NaiveDate,
    /// The first instant (UTC ms) of each local day, then the window's end.
    starts: Vec<i64>,
}

/// Where an hour falls among a window's local days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayBucket {
    /// The local day `from + i`.
    Day(usize),
    /// Before the window's first local midnight: the start of the UTC hour
    /// that holds it, in a zone whose offset is not whole hours. It is the
    /// local day before `from`, as [`Window::local_day`] says.
    Before,
    /// At or after the window's end: no hour of the window is.
    After,
}

impl LocalDays {
    /// How many local days there are.
    pub fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The local day `index` days after the first.
    pub fn day(&self, index: usize) -> NaiveDate {
        self.from
            .checked_add_days(Days::new(index as u64))
            .unwrap_or(self.from)
    }

    /// The local day an hour (UTC ms) starts in.
    pub fn bucket(&self, hour_ms: i64) -> DayBucket {
        match self.starts.partition_point(|start| *start <= hour_ms) {
            0 => DayBucket::Before,
            i if i >= self.starts.len() => DayBucket::After,
            i => DayBucket::Day(i - 1),
        }
    }
}

/// Parses a `YYYY-MM-DD` parameter.
pub fn parse_date(field: &'static str, value: Option<&str>) -> Result<NaiveDate, ReportError> {
    let text = value.ok_or_else(|| bad(field, format!("`{field}` is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| bad(field, format!("`{text}` is not a date (YYYY-MM-DD)")))
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    fn params(period: &str, tz: Option<&str>) -> PeriodParams {
        PeriodParams {
            period: Some(period.into()),
            tz: tz.map(Into::into),
            ..PeriodParams::default()
        }
    }

    #[test]
    fn a_week_across_spring_forward_is_seven_local_days_of_167_hours() {
        // 2024-03-10 is the US spring-forward day; noon UTC on the 12th is
        // 08:00 in New York.
        let now = Utc.with_ymd_and_hms(2024, 3, 12, 12, 0, 0).unwrap();
        let w = Window::resolve(&params("7d", Some("America/New_York")), now).unwrap();
        assert_eq!(
            (w.from.to_string(), w.to.to_string()),
            ("2024-03-06".into(), "2024-03-12".into())
        );
        assert_eq!(w.start.to_rfc3339(), "2024-03-06T05:00:00+00:00");
        assert_eq!(w.end.to_rfc3339(), "2024-03-13T04:00:00+00:00");
        assert_eq!(w.hours().len(), 7 * 24 - 1);
        assert_eq!(w.days().len(), 7);
        let per_day = |d: &str| {
            w.hours()
                .iter()
                .filter(|h| w.local_day(**h).to_string() == d)
                .count()
        };
        assert_eq!(per_day("2024-03-10"), 23);
        assert_eq!(per_day("2024-03-11"), 24);
        let previous = w.previous();
        assert_eq!(previous.day_count(), 7);
        assert_eq!(previous.to.to_string(), "2024-03-05");
    }

    #[test]
    fn a_local_period_holds_the_whole_utc_days_inside_it() {
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let ny = "America/New_York".parse::<Tz>().unwrap();
        // 05:00 UTC on the 6th to 05:00 on the 8th: only the 7th is whole.
        let w = Window::days_in("custom", ny, day("2024-03-06"), day("2024-03-07"));
        assert_eq!(
            w.whole_utc_days(),
            Some((day("2024-03-07"), day("2024-03-07")))
        );
        let one = Window::days_in("custom", ny, day("2024-03-06"), day("2024-03-06"));
        assert_eq!(one.whole_utc_days(), None);
        // East of UTC: Tokyo's 10th to 12th is 15:00 on the 9th to 15:00 on the 12th.
        let tokyo = "Asia/Tokyo".parse::<Tz>().unwrap();
        let w = Window::days_in("custom", tokyo, day("2024-03-10"), day("2024-03-12"));
        assert_eq!(
            w.whole_utc_days(),
            Some((day("2024-03-10"), day("2024-03-11")))
        );
        // Half-hour zones count from the UTC hour holding the start.
        let india = "Asia/Kolkata".parse::<Tz>().unwrap();
        let w = Window::days_in("custom", india, day("2024-03-10"), day("2024-03-12"));
        assert_eq!(
            w.whole_utc_days(),
            Some((day("2024-03-10"), day("2024-03-11")))
        );
        let utc = Window::days_in("custom", Tz::UTC, day("2024-03-10"), day("2024-03-12"));
        assert_eq!(
            utc.whole_utc_days(),
            Some((day("2024-03-10"), day("2024-03-12")))
        );
    }

    /// Every hour of a window lands in the local day it starts in, as the
    /// zone's own conversion says: spring forward makes a 23-hour day,
    /// fall back a 25-hour one, and a zone half an hour off UTC puts the
    /// UTC hour holding its first midnight before the window.
    #[test]
    fn local_days_bucket_every_hour_as_the_zone_does() {
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        for (zone, from, to) in [
            ("America/New_York", "2024-03-08", "2024-03-12"),
            ("America/New_York", "2024-11-01", "2024-11-05"),
            ("Europe/Berlin", "2024-03-30", "2024-04-01"),
            ("Australia/Sydney", "2024-04-05", "2024-04-08"),
            ("Asia/Kolkata", "2024-03-10", "2024-03-12"),
            ("UTC", "2024-03-10", "2024-03-12"),
        ] {
            let tz = zone.parse::<Tz>().unwrap();
            let w = Window::days_in("custom", tz, day(from), day(to));
            let local = w.local_days();
            assert_eq!(local.len() as u64, w.day_count(), "{zone}");
            let mut per_day = vec![0; local.len()];
            let mut before = 0;
            for hour in w.hours() {
                match local.bucket(hour) {
                    DayBucket::Day(i) => {
                        assert_eq!(local.day(i), w.local_day(hour), "{zone} {hour}");
                        per_day[i] += 1;
                    }
                    DayBucket::Before => {
                        assert_eq!(w.local_day(hour), day(from).pred_opt().unwrap(), "{zone}");
                        before += 1;
                    }
                    DayBucket::After => panic!("{zone}: hour {hour} after the window"),
                }
            }
            assert_eq!(local.bucket(w.end.timestamp_millis()), DayBucket::After);
            assert_eq!(before, usize::from(zone == "Asia/Kolkata"), "{zone}");
            let hours_of = |d: &str| per_day[(day(d) - day(from)).num_days() as usize];
            match zone {
                "America/New_York" if from == "2024-03-08" => {
                    assert_eq!(per_day, [24, 24, 23, 24, 24]);
                    assert_eq!(hours_of("2024-03-10"), 23);
                }
                "America/New_York" => assert_eq!(per_day, [24, 24, 25, 24, 24]),
                "Europe/Berlin" => assert_eq!(per_day, [24, 23, 24]),
                "Australia/Sydney" => assert_eq!(per_day, [24, 24, 25, 24]),
                // Plus the UTC hour holding 00:00 of the 10th (18:30 UTC),
                // which starts the day before.
                _ => assert_eq!(per_day, [24, 24, 24]),
            }
        }
    }

    #[test]
    fn today_is_the_readers_today() {
        // 02:00 UTC on the 1st is still the 31st in Los Angeles.
        let now = Utc.with_ymd_and_hms(2024, 2, 1, 2, 0, 0).unwrap();
        let la = Window::resolve(&params("today", Some("America/Los_Angeles")), now).unwrap();
        assert_eq!(la.from.to_string(), "2024-01-31");
        let utc = Window::resolve(&params("today", None), now).unwrap();
        assert_eq!(utc.from.to_string(), "2024-02-01");
        assert!(utc.is_utc_days() && !la.is_utc_days());
        assert_eq!(utc.partitions(), (utc.from, utc.from));
    }

    #[test]
    fn bad_periods_dates_and_zones_name_their_field() {
        let now = Utc.with_ymd_and_hms(2024, 3, 10, 0, 0, 0).unwrap();
        let field = |p: PeriodParams| match Window::resolve(&p, now) {
            Err(ReportError::BadRequest { field, .. }) => field,
            other => panic!("expected 400, got {other:?}"),
        };
        assert_eq!(field(params("fortnight", None)), "period");
        assert_eq!(field(params("7d", Some("Mars/Olympus"))), "tz");
        let mut custom = params("custom", None);
        custom.from = Some("2024-13-01".into());
        custom.to = Some("2024-01-02".into());
        assert_eq!(field(custom), "from");
        // Outside `custom` the dates are unused, but still must be dates.
        let mut week = params("7d", None);
        week.to = Some("".into());
        assert_eq!(field(week), "to");
        let mut week = params("7d", None);
        week.from = Some("2024-03-01".into());
        assert!(Window::resolve(&week, now).is_ok());
    }
}
