//! `sqi batch`: the daily rollup (`daily/`) and the SQI (`sqi/`) for a day,
//! computed with DataFusion from the lake, exactly as `SQI.md` defines it.
//!
//! The SQL lives in `sql/` and is published in `docs/sqi-sql.md`. Stage 1 sums
//! integers in parallel; stage 2 scores single-partitioned over inputs sorted
//! by publisher, so floating-point work happens in one fixed order and a rerun
//! is bit-identical. Each day's output is one file per table with a fixed name,
//! put atomically: a rerun replaces it, and stale files are removed after.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::Schema;
use chrono::{Days, NaiveDate};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::{Lake, Table, day_partition};

use crate::error::{Error, Result};
use crate::query;

/// Stage 1: per-publisher inputs over the 28-day window.
pub const INPUTS_SQL: &str = include_str!("../sql/sqi_inputs.sql");
/// Stage 2: shrinkage, score and flags over the inputs.
pub const SCORE_SQL: &str = include_str!("../sql/sqi_score.sql");
/// The day's totals.
pub const DAILY_SQL: &str = include_str!("../sql/daily.sql");

/// The one file each day's output lives in.
pub const DAY_FILE: &str = "part-00000.parquet";

/// `sqi batch` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// The lake.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Compute one day (YYYY-MM-DD, UTC).
    #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present = "from")]
    pub date: Option<NaiveDate>,
    /// First day of a backfill, inclusive.
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last day of a backfill, inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
    /// The events topic whose completeness markers gate each day.
    #[arg(long, env = "SQI_TOPIC", default_value = "share-events")]
    pub topic: String,
    /// Compute days the processor has not marked complete; their rows get `complete = false`.
    #[arg(long, env = "SQI_ALLOW_INCOMPLETE")]
    pub allow_incomplete: bool,
}

/// Whether a day may be computed before the processor has closed all its hours.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The events topic whose markers count.
    pub topic: String,
    /// Compute anyway, marking the rows `complete = false`.
    pub allow_incomplete: bool,
}

impl Gate {
    /// A gate that computes incomplete days too (tests, the demo).
    pub fn allowing_incomplete(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            allow_incomplete: true,
        }
    }
}

/// The hours (0–23) of `date` that have no completeness marker for `topic`.
pub async fn missing_hours(lake: &Lake, topic: &str, date: NaiveDate) -> Result<Vec<u32>> {
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_millis());
    let mut missing = Vec::new();
    for hour in 0..24u32 {
        let marker = sqi_processor::completeness::hour_marker(
            topic,
            midnight + i64::from(hour) * sqi_schemas::lake::HOUR_MS,
        );
        match lake.store().head(&lake.path(&marker)).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => missing.push(hour),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(missing)
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

/// What one day's run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOutcome {
    /// The day.
    pub date: NaiveDate,
    /// Rows in `daily/dt=…/`.
    pub daily_rows: usize,
    /// Rows in `sqi/dt=…/`.
    pub sqi_rows: usize,
    /// Publishers with a non-null SQI.
    pub scored: usize,
    /// Whether every hour of the day was marked complete by the processor.
    pub complete: bool,
}

/// Fills a SQL template's `{{placeholders}}` for `date`.
pub fn render(template: &str, date: NaiveDate) -> String {
    let minus = |n: u64| date.checked_sub_days(Days::new(n)).unwrap_or(date);
    let plus = |n: u64| date.checked_add_days(Days::new(n)).unwrap_or(date);
    template
        .replace("{{date}}", &date.to_string())
        .replace("{{window_from}}", &minus(27).to_string())
        .replace("{{next_day}}", &plus(1).to_string())
        .replace("{{provisional_after}}", &minus(28).to_string())
}

/// Computes the SQI rows for `date` without writing them.
pub async fn compute_sqi(lake: &Lake, date: NaiveDate) -> Result<RecordBatch> {
    require_publishers(lake).await?;
    let ctx = query::session(lake, &[Table::Aggregates, Table::Publishers], num_cpus()).await?;
    let inputs = query::collect_one(&ctx, &render(INPUTS_SQL, date)).await?;
    let scoring = query::session(lake, &[], 1).await?;
    let _ = scoring.register_batch("inputs", inputs)?;
    let scored = query::collect_one(&scoring, &render(SCORE_SQL, date)).await?;
    conform_computed(&scored, Table::Sqi)
}

/// Conforms a query's rows to `table`, without the `complete` column, which
/// the published SQL does not compute (it is the gate's verdict).
fn conform_computed(batch: &RecordBatch, table: Table) -> Result<RecordBatch> {
    let schema = table.schema();
    let computed: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != COMPLETE)
        .cloned()
        .collect();
    query::conform(batch, &Arc::new(Schema::new(computed)))
}

/// Adds the `complete` column, as `table`'s schema has it.
fn with_complete(batch: &RecordBatch, table: Table, complete: bool) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(vec![
        complete;
        batch.num_rows()
    ])));
    Ok(RecordBatch::try_new(table.schema(), columns)?)
}

/// Peer groups come from the publisher dimension: scoring without it would put
/// every publisher in `uncategorized` and publish plausible but wrong scores.
async fn require_publishers(lake: &Lake) -> Result<()> {
    let path = lake.path(crate::publishers::PUBLISHERS_FILE);
    match lake.store().head(&path).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => Err(Error::Invalid(format!(
            "the publishers table is missing ({}{}); load it with `sqi publishers import FILE.csv`",
            lake.url(),
            crate::publishers::PUBLISHERS_FILE
        ))),
        Err(error) => Err(error.into()),
    }
}

/// Computes the day's totals without writing them.
pub async fn compute_daily(lake: &Lake, date: NaiveDate) -> Result<RecordBatch> {
    let ctx = query::session(lake, &[Table::Aggregates], num_cpus()).await?;
    let daily = query::collect_one(&ctx, &render(DAILY_SQL, date)).await?;
    conform_computed(&daily, Table::Daily)
}

/// The column saying whether the day was complete when computed.
pub const COMPLETE: &str = "complete";

/// Computes and writes `daily/` and `sqi/` for one day, replacing any earlier run.
/// A day the processor has not closed is refused unless `gate` allows it.
pub async fn run_day(lake: &Lake, date: NaiveDate, gate: &Gate) -> Result<DayOutcome> {
    let missing = missing_hours(lake, &gate.topic, date).await?;
    let complete = missing.is_empty();
    if !complete && !gate.allow_incomplete {
        return Err(Error::Incomplete {
            date,
            missing: missing
                .iter()
                .map(|h| format!("{h:02}"))
                .collect::<Vec<_>>()
                .join(", "),
            markers: format!(
                "{}{}/{}/hours/{}/",
                lake.url(),
                sqi_processor::completeness::PREFIX,
                gate.topic,
                day_partition(date)
            ),
        });
    }
    let daily = with_complete(&compute_daily(lake, date).await?, Table::Daily, complete)?;
    let sqi = with_complete(&compute_sqi(lake, date).await?, Table::Sqi, complete)?;
    let scored = sqi
        .column_by_name("sqi")
        .map_or(0, |c| c.len() - c.null_count());
    write_day(lake, Table::Daily, date, &daily).await?;
    write_day(lake, Table::Sqi, date, &sqi).await?;
    Ok(DayOutcome {
        date,
        daily_rows: daily.num_rows(),
        sqi_rows: sqi.num_rows(),
        scored,
        complete,
    })
}

/// Puts a day's single output file, then removes anything else in its partition.
pub async fn write_day(
    lake: &Lake,
    table: Table,
    date: NaiveDate,
    batch: &RecordBatch,
) -> Result<()> {
    let dir = format!("{}/{}", table.prefix(), day_partition(date));
    let bytes = sqi_processor::sink::parquet_bytes(batch)?;
    let target = lake.path(&format!("{dir}/{DAY_FILE}"));
    let _ = lake
        .store()
        .put(&target, PutPayload::from_bytes(bytes))
        .await?;
    let prefix = lake.path(&dir);
    let stale: Vec<_> = lake
        .store()
        .list(Some(&prefix))
        .try_filter(|meta| futures::future::ready(meta.location != target))
        .try_collect()
        .await?;
    for meta in stale {
        // A concurrent run of the same day may have removed it first.
        match lake.store().delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Runs every requested day in order, reporting progress through `on_day`.
pub async fn run(args: &BatchArgs, mut on_day: impl FnMut(&DayOutcome)) -> Result<Vec<DayOutcome>> {
    let lake = Lake::open(&args.lake.url, &args.lake.options())?;
    let gate = Gate {
        topic: args.topic.clone(),
        allow_incomplete: args.allow_incomplete,
    };
    let mut outcomes = Vec::new();
    for date in args.days()? {
        let outcome = run_day(&lake, date, &gate).await?;
        on_day(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_resolve_to_the_window() {
        let date = NaiveDate::from_ymd_opt(2024, 3, 28).unwrap();
        let sql = render(
            "{{window_from}} {{date}} {{next_day}} {{provisional_after}}",
            date,
        );
        assert_eq!(sql, "2024-03-01 2024-03-28 2024-03-29 2024-02-29");
        for template in [INPUTS_SQL, SCORE_SQL, DAILY_SQL] {
            assert!(!render(template, date).contains("{{"));
        }
    }
}
