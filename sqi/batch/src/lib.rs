//! `sqi batch`: the daily rollups (`daily/`, `daily_urls/`, `daily_hours/`)
//! and the SQI (`sqi/`) for a day, computed with DataFusion from the lake,
//! exactly as `SQI.md` defines it.
//!
//! The SQL lives in `sql/` and is published in `docs/sqi-sql.md`. Stage 1 sums
//! integers in parallel; stage 2 scores single-partitioned over inputs sorted
//! by publisher, so floating-point work happens in one fixed order and a rerun
//! is bit-identical. Each day's output is one file per table with a fixed name,
//! put atomically: a rerun replaces it, and stale files are removed after.
//!
//! `--shard i/N` computes the categories one of N shards owns (see
//! [`assign_shards`]) and writes `part-{i}-of-{N}.parquet`; the N files union
//! to exactly the unsharded file's rows. Peer groups never span shards, except
//! the network group: a shard holding a category with fewer than
//! [`PEER_GROUP_MIN`] eligible publishers also reads the whole network's inputs
//! to score it, so its rows match the unsharded run bit for bit.
//!
//! The crate root is a day's run: the completeness gate, the two stages, the
//! day tables, and the order their files are put in. The flags and the days
//! they name are in `args`, which categories a shard owns in `shard`,
//! encoding and putting a day's files in `write`, the month merge in
//! `compact`, and the publishers import in `publishers`.
//!
//! The crate owns the batch's prefixes of the lake (`daily/`, `daily_urls/`,
//! `daily_hours/`, `sqi/`, their month files under `monthly*/`) and the
//! publishers import (`publishers/`); it reads the processor's prefixes
//! through the lake contract (`sqi-schemas`, `sqi-query`) and must never
//! write them, serve reports, or depend on another stage's crate.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::Schema;
use chrono::{Days, NaiveDate};
use object_store::ObjectStoreExt;
pub use sqi_schemas::lake::paths::{DAY_FILE, Shard};
use sqi_schemas::lake::paths::{PUBLISHERS_FILE, completeness};
use sqi_schemas::lake::{COMPLETE, Lake, Table};

pub use error::{Error, Result};

mod args;
pub mod compact;
pub mod error;
pub mod publishers;
mod shard;
pub mod stored;
mod write;

pub use args::{BatchArgs, parse_day};
pub use shard::assign_shards;
use shard::{ShardScope, needs_network};
pub use stored::{DayPlan, Form};
pub use write::write_day;
use write::{encoded, encoding, put_day};

use sqi_query::{self as query, Workload};

/// Stage 1: per-publisher inputs over the 28-day window, from the batch's
/// own `daily` and `first_seen` ([`Form::Stored`]).
pub const INPUTS_SQL: &str = include_str!("../sql/sqi_inputs.sql");
/// Stage 1 from the whole hourly history ([`Form::History`]): the same rows.
pub const INPUTS_FROM_HISTORY_SQL: &str = include_str!("../sql/sqi_inputs_history.sql");
/// The day's `first_seen`, carried forward from the day before's.
pub const FIRST_SEEN_SQL: &str = include_str!("../sql/first_seen.sql");
/// The day's `first_seen` from the whole hourly history: the same rows.
pub const FIRST_SEEN_FROM_HISTORY_SQL: &str = include_str!("../sql/first_seen_history.sql");
/// Stage 2: shrinkage, score and flags over the inputs.
pub const SCORE_SQL: &str = include_str!("../sql/sqi_score.sql");
/// The day's totals.
pub const DAILY_SQL: &str = include_str!("../sql/daily.sql");
/// The day's totals per URL.
pub const DAILY_URLS_SQL: &str = include_str!("../sql/daily_urls.sql");
/// The day's counts per UTC hour, channels summed.
pub const DAILY_HOURS_SQL: &str = include_str!("../sql/daily_hours.sql");

/// Pageviews over the window that make a publisher eligible (`sqi_score.sql`).
pub const ELIGIBLE_PAGEVIEWS: i64 = 1000;
/// Eligible publishers a category needs to be its own peer group (`sqi_score.sql`).
pub const PEER_GROUP_MIN: usize = 30;
/// The category of a publisher the dimension does not name.
pub const UNCATEGORIZED: &str = "uncategorized";

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
        let marker = completeness::hour_marker(
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

/// What one day's run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOutcome {
    /// The day.
    pub date: NaiveDate,
    /// Rows in `daily/dt=…/`.
    pub daily_rows: usize,
    /// Rows in `daily_urls/dt=…/`.
    pub daily_url_rows: usize,
    /// Rows in `daily_hours/dt=…/`.
    pub daily_hour_rows: usize,
    /// Rows in `sqi/dt=…/`.
    pub sqi_rows: usize,
    /// Rows in `first_seen/dt=…/`.
    pub first_seen_rows: usize,
    /// The forms stage 1 and `first_seen` took.
    pub plan: DayPlan,
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
        .replace("{{previous_day}}", &minus(1).to_string())
        .replace("{{provisional_after}}", &minus(28).to_string())
}

/// Computes the SQI rows for `date` without writing them.
pub async fn compute_sqi(lake: &Lake, date: NaiveDate) -> Result<RecordBatch> {
    compute_sqi_shard(lake, date, Shard::WHOLE).await
}

/// Computes one shard's SQI rows for `date` without writing them.
pub async fn compute_sqi_shard(lake: &Lake, date: NaiveDate, shard: Shard) -> Result<RecordBatch> {
    let plan = DayPlan::of(lake, date).await?;
    let (scope, inputs) = sqi_inputs(lake, date, shard, plan.inputs).await?;
    score(lake, date, shard, scope.as_ref(), inputs).await
}

/// Computes stage 1's rows (every publisher's inputs) for `date` in `form`,
/// without scoring them: the two forms give the same rows.
pub async fn compute_inputs(lake: &Lake, date: NaiveDate, form: Form) -> Result<RecordBatch> {
    Ok(sqi_inputs(lake, date, Shard::WHOLE, form).await?.1)
}

/// Computes one shard's `first_seen` rows for `date` in `form`, without
/// writing them: the two forms give the same rows.
pub async fn compute_first_seen(
    lake: &Lake,
    date: NaiveDate,
    shard: Shard,
    form: Form,
) -> Result<RecordBatch> {
    let (tables, sql): (&[Table], _) = match form {
        Form::Stored => (&[Table::Aggregates, Table::FirstSeen], FIRST_SEEN_SQL),
        Form::History => (&[Table::Aggregates], FIRST_SEEN_FROM_HISTORY_SQL),
    };
    let ctx = if shard.is_whole() {
        query::session(lake, tables, num_cpus(), Workload::Batch).await?
    } else {
        ShardScope::load(lake, shard)
            .await?
            .session(lake, tables)
            .await?
    };
    let started = std::time::Instant::now();
    let rows = query::collect_one(&ctx, &render(sql, date)).await?;
    tracing::info!(%date, %shard, form = form.name(), rows = rows.num_rows(), seconds = started.elapsed().as_secs_f64(), "first days carried");
    conform_computed(&rows, Table::FirstSeen)
}

/// Stage 1 in `form`: the shard's scope (none for a whole run) and its
/// publishers' inputs.
async fn sqi_inputs(
    lake: &Lake,
    date: NaiveDate,
    shard: Shard,
    form: Form,
) -> Result<(Option<ShardScope>, RecordBatch)> {
    require_publishers(lake).await?;
    let started = std::time::Instant::now();
    let (tables, sql): (&[Table], _) = match form {
        Form::Stored => (
            &[
                Table::Aggregates,
                Table::Daily,
                Table::FirstSeen,
                Table::Publishers,
            ],
            INPUTS_SQL,
        ),
        Form::History => (
            &[Table::Aggregates, Table::Publishers],
            INPUTS_FROM_HISTORY_SQL,
        ),
    };
    let inputs_sql = render(sql, date);
    let (scope, inputs) = if shard.is_whole() {
        let ctx = query::session(lake, tables, num_cpus(), Workload::Batch).await?;
        (None, query::collect_one(&ctx, &inputs_sql).await?)
    } else {
        let scope = ShardScope::load(lake, shard).await?;
        let ctx = scope.session(lake, tables).await?;
        let mut inputs = query::collect_one(&ctx, &inputs_sql).await?;
        if needs_network(&inputs)? {
            let ctx = query::session(lake, tables, num_cpus(), Workload::Batch).await?;
            inputs = query::collect_one(&ctx, &inputs_sql).await?;
        }
        (Some(scope), inputs)
    };
    tracing::info!(
        %date,
        %shard,
        form = form.name(),
        publishers = inputs.num_rows(),
        seconds = started.elapsed().as_secs_f64(),
        "stage 1: inputs summed"
    );
    Ok((scope, inputs))
}

/// Stage 2: scores the inputs on one partition (see the module docs) and
/// keeps the rows of the categories the shard owns.
async fn score(
    lake: &Lake,
    date: NaiveDate,
    shard: Shard,
    scope: Option<&ShardScope>,
    inputs: RecordBatch,
) -> Result<RecordBatch> {
    let started = std::time::Instant::now();
    let scoring = query::session(lake, &[], 1, Workload::Batch).await?;
    // The SQL names each join's smaller input first (see its header).
    scoring
        .state_ref()
        .write()
        .config_mut()
        .options_mut()
        .optimizer
        .join_reordering = false;
    let _ = scoring.register_batch("inputs", inputs)?;
    let scored = query::collect_one(&scoring, &render(SCORE_SQL, date)).await?;
    tracing::info!(
        %date,
        %shard,
        seconds = started.elapsed().as_secs_f64(),
        "stage 2: scored"
    );
    let scored = match scope {
        Some(scope) => scope.retain(&scored)?,
        None => scored,
    };
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
    Ok(query::conform(batch, &Arc::new(Schema::new(computed)))?)
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
    let path = lake.path(PUBLISHERS_FILE);
    match lake.store().head(&path).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => Err(Error::Invalid(format!(
            "the publishers table is missing ({}{}); load it with `sqi publishers import FILE.csv`",
            lake.url(),
            PUBLISHERS_FILE
        ))),
        Err(error) => Err(error.into()),
    }
}

/// Computes the day's totals without writing them.
pub async fn compute_daily(lake: &Lake, date: NaiveDate) -> Result<RecordBatch> {
    compute_daily_shard(lake, date, Shard::WHOLE).await
}

/// Computes one shard's totals for `date`: the rows of the publishers it owns.
pub async fn compute_daily_shard(
    lake: &Lake,
    date: NaiveDate,
    shard: Shard,
) -> Result<RecordBatch> {
    compute_day_table(lake, date, shard, Table::Daily).await
}

/// Computes one shard's rows of a day table (`daily`, `daily_urls` or
/// `daily_hours`) from the hourly table it sums.
async fn compute_day_table(
    lake: &Lake,
    date: NaiveDate,
    shard: Shard,
    table: Table,
) -> Result<RecordBatch> {
    let (source, sql) = match table {
        Table::DailyUrls => (Table::UrlCounts, DAILY_URLS_SQL),
        Table::DailyHours => (Table::Aggregates, DAILY_HOURS_SQL),
        _ => (Table::Aggregates, DAILY_SQL),
    };
    let ctx = if shard.is_whole() {
        query::session(lake, &[source], num_cpus(), Workload::Batch).await?
    } else {
        ShardScope::load(lake, shard)
            .await?
            .session(lake, &[source])
            .await?
    };
    let started = std::time::Instant::now();
    let rows = query::collect_one(&ctx, &render(sql, date)).await?;
    tracing::info!(%date, %shard, table = table.prefix(), rows = rows.num_rows(), seconds = started.elapsed().as_secs_f64(), "day's totals summed");
    conform_computed(&rows, table)
}

/// Computes and writes `daily/`, `daily_urls/`, `daily_hours/` and `sqi/` for
/// one day, replacing any earlier run.
/// A day the processor has not closed is refused unless `gate` allows it.
/// With a shard other than [`Shard::WHOLE`], only that shard's rows and file.
pub async fn run_day(
    lake: &Lake,
    date: NaiveDate,
    gate: &Gate,
    shard: Shard,
) -> Result<DayOutcome> {
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
                "{}{}/",
                lake.url(),
                completeness::day_hours_dir(&gate.topic, date)
            ),
        });
    }
    // Stage 2 scores on one core; the day's totals are summed and every file
    // encoded on the other meanwhile. Nothing is put before all three are
    // computed, so a failure leaves the day's earlier output whole.
    let plan = DayPlan::of(lake, date).await?;
    let (scope, inputs) = sqi_inputs(lake, date, shard, plan.inputs).await?;
    let scoring = {
        let lake = lake.clone();
        tokio::spawn(async move {
            let sqi = score(&lake, date, shard, scope.as_ref(), inputs).await?;
            let scored = sqi
                .column_by_name("sqi")
                .map_or(0, |c| c.len() - c.null_count());
            let file = encoded(encoding(
                Table::Sqi,
                with_complete(&sqi, Table::Sqi, complete)?,
            ))
            .await?;
            Ok::<_, Error>((file, scored))
        })
    };
    // Each file is encoded while the next query runs; the larger table goes
    // first so that the encoding left at the end is the smaller one.
    let totals = async {
        let urls = compute_day_table(lake, date, shard, Table::DailyUrls).await?;
        let urls = encoding(
            Table::DailyUrls,
            with_complete(&urls, Table::DailyUrls, complete)?,
        );
        let hours = compute_day_table(lake, date, shard, Table::DailyHours).await?;
        let hours = encoding(
            Table::DailyHours,
            with_complete(&hours, Table::DailyHours, complete)?,
        );
        let daily = compute_daily_shard(lake, date, shard).await?;
        let daily = encoding(Table::Daily, with_complete(&daily, Table::Daily, complete)?);
        let first_seen = compute_first_seen(lake, date, shard, plan.first_seen).await?;
        let first_seen = encoding(
            Table::FirstSeen,
            with_complete(&first_seen, Table::FirstSeen, complete)?,
        );
        Ok::<_, Error>((
            encoded(daily).await?,
            encoded(urls).await?,
            encoded(hours).await?,
            encoded(first_seen).await?,
        ))
    };
    let (daily, daily_urls, daily_hours, first_seen) = match totals.await {
        Ok(files) => files,
        Err(error) => {
            scoring.abort();
            return Err(error);
        }
    };
    let (sqi, scored) = scoring.await??;
    put_day(lake, Table::Daily, date, shard, &daily).await?;
    put_day(lake, Table::DailyUrls, date, shard, &daily_urls).await?;
    put_day(lake, Table::DailyHours, date, shard, &daily_hours).await?;
    put_day(lake, Table::Sqi, date, shard, &sqi).await?;
    // Last: the next day's run takes the stored form only once this is
    // here, and by then the day's `daily` is too.
    put_day(lake, Table::FirstSeen, date, shard, &first_seen).await?;
    Ok(DayOutcome {
        date,
        daily_rows: daily.rows,
        daily_url_rows: daily_urls.rows,
        daily_hour_rows: daily_hours.rows,
        sqi_rows: sqi.rows,
        first_seen_rows: first_seen.rows,
        plan,
        scored,
        complete,
    })
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
        let outcome = run_day(&lake, date, &gate, args.shard).await?;
        on_day(&outcome);
        outcomes.push(outcome);
    }
    if !args.no_compact {
        // Once per month touched, after all its days: a backfill of a month
        // merges it once, not once a day.
        for month in compact::months_of(outcomes.iter().map(|o| o.date)) {
            for table in [Table::Daily, Table::DailyUrls, Table::DailyHours] {
                let started = std::time::Instant::now();
                let done = compact::compact_month(&lake, table, month, args.shard).await?;
                tracing::info!(
                    table = done.table.prefix(),
                    month = %month.format("%Y-%m"),
                    shard = %args.shard,
                    days = done.days,
                    rows = done.rows,
                    seconds = started.elapsed().as_secs_f64(),
                    "month merged"
                );
            }
        }
    }
    Ok(outcomes)
}

pub(crate) fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// A lake in a fresh temporary directory, for the crate's own tests; the
/// directory lives as long as the guard.
#[cfg(test)]
pub(crate) fn test_lake() -> (tempfile::TempDir, sqi_schemas::lake::Lake) {
    // Test code only: a machine that cannot make a temp dir fails the test here.
    #[allow(clippy::expect_used)]
    let dir = tempfile::tempdir().expect("a temporary directory");
    #[allow(clippy::expect_used)]
    let lake = sqi_schemas::lake::Lake::open(
        &format!("file://{}", dir.path().display()),
        &sqi_schemas::lake::LakeOptions::default(),
    )
    .expect("a local lake opens");
    (dir, lake)
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
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
        for template in [
            INPUTS_SQL,
            INPUTS_FROM_HISTORY_SQL,
            FIRST_SEEN_SQL,
            FIRST_SEEN_FROM_HISTORY_SQL,
            SCORE_SQL,
            DAILY_SQL,
            DAILY_URLS_SQL,
            DAILY_HOURS_SQL,
        ] {
            assert!(!render(template, date).contains("{{"));
        }
    }

    #[test]
    fn the_eligibility_thresholds_are_the_published_sqls() {
        assert!(SCORE_SQL.contains(&format!("pageviews >= {ELIGIBLE_PAGEVIEWS} AS eligible")));
        assert!(SCORE_SQL.contains(&format!(
            "COALESCE(c.eligible_count, 0) >= {PEER_GROUP_MIN}"
        )));
        for inputs in [INPUTS_SQL, INPUTS_FROM_HISTORY_SQL] {
            assert!(inputs.contains(&format!("'{UNCATEGORIZED}'")));
        }
    }
}
