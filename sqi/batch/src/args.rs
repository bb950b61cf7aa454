//! The `sqi batch` flags and the days they name: one day, or a backfill's
//! range, each given as YYYY-MM-DD or as `today`/`yesterday` by the UTC
//! clock.
//!
//! It parses and checks; what a day's run does is the crate root's.

use chrono::{Days, NaiveDate};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::paths::Shard;

use crate::error::{Error, Result};

/// `sqi batch` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// The lake.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Compute one day: YYYY-MM-DD (UTC), or `today`/`yesterday` by the UTC
    /// clock, so that a CronJob needs no shell to name the day before.
    #[arg(long, env = "SQI_DATE", value_parser = parse_day, conflicts_with_all = ["from", "to"], required_unless_present = "from")]
    pub date: Option<NaiveDate>,
    /// First day of a backfill, inclusive (same forms as `--date`).
    #[arg(long, env = "SQI_FROM", value_parser = parse_day, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last day of a backfill, inclusive (same forms as `--date`).
    #[arg(long, env = "SQI_TO", value_parser = parse_day, requires = "from")]
    pub to: Option<NaiveDate>,
    /// The events topic whose completeness markers gate each day.
    #[arg(long, env = "SQI_TOPIC", default_value = "share-events")]
    pub topic: String,
    /// Compute days the processor has not marked complete; their rows get `complete = false`.
    #[arg(long, env = "SQI_ALLOW_INCOMPLETE")]
    pub allow_incomplete: bool,
    /// Compute only shard INDEX of COUNT (categories spread by size), writing
    /// `part-INDEX-of-COUNT.parquet`; `0/1` is the whole day.
    #[arg(long, env = "SQI_SHARD", default_value = "0/1")]
    pub shard: Shard,
    /// Skip merging each touched month into `monthly/`, `monthly_urls/` and
    /// `monthly_hours/` (the report then reads those days from the day tables).
    #[arg(long, env = "SQI_NO_COMPACT")]
    pub no_compact: bool,
}

/// Parses a `--date`: an ISO day, or `today`/`yesterday` in UTC.
pub fn parse_day(text: &str) -> std::result::Result<NaiveDate, String> {
    day_relative_to(text, chrono::Utc::now().date_naive())
}

pub(crate) fn day_relative_to(
    text: &str,
    today: NaiveDate,
) -> std::result::Result<NaiveDate, String> {
    match text.trim() {
        "today" => Ok(today),
        "yesterday" => today
            .checked_sub_days(Days::new(1))
            .ok_or_else(|| "there is no day before the first one".to_owned()),
        day => NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .map_err(|_| format!("`{day}` is not a day: give YYYY-MM-DD, `today` or `yesterday`")),
    }
}

impl BatchArgs {
    /// The days to compute, in order.
    pub fn days(&self) -> Result<Vec<NaiveDate>> {
        match (self.date, self.from, self.to) {
            (Some(d), _, _) => Ok(vec![d]),
            (None, Some(from), Some(to)) if from <= to => {
                Ok(from.iter_days().take_while(|d| *d <= to).collect())
            }
            (None, Some(from), Some(to)) => {
                Err(Error::Invalid(format!("--from {from} is after --to {to}")))
            }
            _ => Err(Error::Invalid("give --date D or --from D1 --to D2".into())),
        }
    }
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_iso_or_relative_to_the_utc_day() {
        let today = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let leap_day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(day_relative_to("yesterday", today), Ok(leap_day));
        assert_eq!(day_relative_to("today", today), Ok(today));
        assert_eq!(day_relative_to("2024-02-29", today), Ok(leap_day));
        for bad in ["2024-02-30", "tomorrow", "", "1/3/2024"] {
            let error = day_relative_to(bad, today).unwrap_err();
            assert!(error.contains("YYYY-MM-DD"), "{bad}: {error}");
        }
    }
}
