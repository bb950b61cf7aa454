//! Which form of stage 1 and of the `first_seen` table a day's run takes:
//! from the batch's own earlier output, or from the processor's hourly
//! history.
//!
//! Stage 1 needs the window's sums and each publisher's first day. The
//! history form (`sqi_inputs_history.sql`) reads every hourly `aggregates`
//! row up to the day, a cost that grows with the lake's age. The stored form
//! (`sqi_inputs.sql`) reads the window's earlier days from `daily`, the day
//! itself from `aggregates`, and first days from `first_seen` as of the day
//! before; `first_seen` itself is carried forward a day at a time
//! (`first_seen.sql`). Both forms give the same rows (a test runs both on one
//! lake), so the stored form is only a shortcut, taken when the stored
//! tables cover what it reads:
//!
//! - every day of the window before the day has `daily` files that are one
//!   run's whole output with every row `complete`, or has no hourly files at
//!   all (nothing to sum);
//! - `first_seen` is complete for the day before, or no hourly file predates
//!   the day (nobody was seen before it).
//!
//! Anything else (a lake's first run over older hours, a day computed with
//! `--allow-incomplete`, a gap in the daily runs) takes the history form for
//! that day, which is slower and always right.
//!
//! Owns only that choice; the SQL is in `sql/`, the lake's layout in
//! `sqi-schemas`.

use std::collections::BTreeSet;

use chrono::{Days, NaiveDate};
use sqi_schemas::lake::files::complete_day;
use sqi_schemas::lake::paths::day_of;
use sqi_schemas::lake::{Lake, Table};

use crate::error::Result;

/// Days in the SQI window, the day itself included (`SQI.md`).
pub const WINDOW_DAYS: u64 = 28;

/// Where a day's stage 1 or `first_seen` rows are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The batch's own `daily` and `first_seen` files.
    Stored,
    /// The processor's hourly `aggregates`, the whole history.
    History,
}

impl Form {
    /// The form's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::History => "history",
        }
    }
}

/// The forms one day's run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayPlan {
    /// Stage 1's form.
    pub inputs: Form,
    /// The form of the day's `first_seen` rows.
    pub first_seen: Form,
}

impl DayPlan {
    /// Looks at the lake: which of `date`'s inputs the stored tables cover.
    pub async fn of(lake: &Lake, date: NaiveDate) -> Result<Self> {
        let hourly_days = hourly_days(lake).await?;
        let Some(previous) = date.checked_sub_days(Days::new(1)) else {
            return Ok(Self::HISTORY);
        };
        let seen_before = hourly_days.first().is_some_and(|first| *first < date);
        let first_seen = if !seen_before
            || complete_day(lake, Table::FirstSeen, previous)
                .await?
                .is_some()
        {
            Form::Stored
        } else {
            Form::History
        };
        let mut inputs = first_seen;
        for back in 1..WINDOW_DAYS {
            if inputs == Form::History {
                break;
            }
            let Some(day) = date.checked_sub_days(Days::new(back)) else {
                break;
            };
            if hourly_days.contains(&day) && complete_day(lake, Table::Daily, day).await?.is_none()
            {
                inputs = Form::History;
            }
        }
        Ok(Self { inputs, first_seen })
    }

    /// Both forms from the history.
    pub const HISTORY: Self = Self {
        inputs: Form::History,
        first_seen: Form::History,
    };
}

/// The days of `aggregates`' `dt=` partitions, one listing.
async fn hourly_days(lake: &Lake) -> Result<BTreeSet<NaiveDate>> {
    let listing = lake
        .store()
        .list_with_delimiter(Some(&lake.path(Table::Aggregates.prefix())))
        .await?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(day_of)
        .filter_map(|day| NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok())
        .collect())
}
