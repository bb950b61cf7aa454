//! The read layer: which table answers which day of a question, and the
//! rows it needs from each.
//!
//! A question (one publisher, a window of local days, some filters, summed
//! by some keys) is answered from the batch's day tables (`daily`,
//! `daily_urls`, `daily_hours`, or their month files) for the UTC days the
//! last lake refresh found complete there, and from the hourly tables
//! (`aggregates`, `url_counts`) for the rest. The endpoints then sum the
//! rows they get; they never name a table or a file.
//!
//! Owns: the plan (`Grouping`, the day ranges each table answers), reading
//! the rows, and reading Arrow columns as plain values. Must not touch:
//! parameters, answers, keys (the endpoints and the guard).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimestampMillisecondType};
use chrono::{DateTime, Days, NaiveDate, Utc};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::{Expr, SessionContext, col, lit};
use futures::TryStreamExt;
use serde_json::{Value, json};
use sqi_schemas::lake::{Lake, Table, day_partition};

use crate::ReportState;
use crate::answer::SqiRow;
use crate::days::{self, LakeDays};
use crate::error::{Error, Result};
use crate::params::Page;
use crate::window::Window;

pub(crate) fn timestamp(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some("UTC".into()),
    ))
}

/// `table`'s rows of `publisher` inside `window` (whole UTC hours), summed by `keys`.
pub(crate) async fn sum_by(
    ctx: &SessionContext,
    table: Table,
    publisher: &str,
    window: &Window,
    filters: Vec<Expr>,
    keys: &[&str],
) -> Result<Vec<RecordBatch>> {
    let (first, last) = window.partitions();
    let hours = window.hours();
    let start = hours.first().copied().unwrap_or(0);
    let end = window.end.timestamp_millis();
    let mut predicate = col("dt")
        .gt_eq(lit(first.to_string()))
        .and(col("dt").lt_eq(lit(last.to_string())))
        .and(col("window_start").gt_eq(timestamp(start)))
        .and(col("window_start").lt(timestamp(end)))
        .and(col("publisher").eq(lit(publisher)));
    for filter in filters {
        predicate = predicate.and(filter);
    }
    Ok(ctx
        .table(table.prefix())
        .await?
        .filter(predicate)?
        .aggregate(
            keys.iter().map(|k| col(*k)).collect(),
            vec![sum(col("events")).alias("events")],
        )?
        .collect()
        .await?)
}

/// How a question groups the rows it sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grouping {
    /// Totals over the whole window (summary, channels, URLs): any whole UTC
    /// day inside the window can come from a day table.
    Window,
    /// By local day (the day series). In UTC a day table's day is a bucket;
    /// elsewhere a UTC day's total cannot be split across two local days, so
    /// its hours come from `daily_hours` and are bucketed like hourly rows.
    LocalDay,
    /// By UTC hour (the hour series): hours from `daily_hours`.
    Hour,
}

/// The day table that answers a question's complete UTC days, and the
/// inclusive range of UTC days it may answer.
fn day_table_range(
    hourly_table: Table,
    window: &Window,
    grouping: Grouping,
) -> (Table, Option<(chrono::NaiveDate, chrono::NaiveDate)>) {
    let whole_days = || {
        if window.is_utc_days() {
            Some((window.from, window.to))
        } else {
            window.whole_utc_days()
        }
    };
    match (hourly_table, grouping) {
        (Table::UrlCounts, _) => (Table::DailyUrls, whole_days()),
        (_, Grouping::Window) => (Table::Daily, whole_days()),
        (_, Grouping::LocalDay) if window.is_utc_days() => {
            (Table::Daily, Some((window.from, window.to)))
        }
        // Rows by hour: every UTC day the window touches, the hours outside
        // it filtered out by `window_start`.
        (_, Grouping::LocalDay | Grouping::Hour) => (Table::DailyHours, Some(window.partitions())),
    }
}

/// The UTC days inside `window` that `day_table` (`daily`, `daily_urls` or
/// `daily_hours`) answers: those the batch has written with every row
/// `complete`, as the last refresh of the lake saw them. A day computed
/// early, with `--allow-incomplete`, is read from the hourly table instead,
/// which may have grown since. A day table is one file a day where the
/// hourly table is 24 or more, so a period of local days in any timezone
/// reads its whole UTC days from it and only the hours at either end (none,
/// for `daily_hours`) from the hourly table.
fn day_table_days(
    lake_days: &LakeDays,
    day_table: Table,
    range: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
) -> Vec<String> {
    let Some((from, to)) = range else {
        return Vec::new();
    };
    let (from, to) = (from.to_string(), to.to_string());
    lake_days
        .complete(day_table)
        .range(from..=to)
        .cloned()
        .collect()
}

/// The complete UTC days at either end of a local period that
/// `daily_hours` can answer for a question over the whole window, so that
/// only hours not yet in a complete day are read from `aggregates`: none in
/// UTC (its days are whole), and none when a key or filter needs a column
/// `daily_hours` sums away (`channel`).
fn end_days(
    lake_days: &LakeDays,
    hourly_table: Table,
    window: &Window,
    grouping: Grouping,
    keys: &[&str],
    whole_days: &[String],
) -> Vec<String> {
    let hours_schema = Table::DailyHours.schema();
    if hourly_table != Table::Aggregates
        || grouping != Grouping::Window
        || window.is_utc_days()
        || keys.iter().any(|k| hours_schema.index_of(k).is_err())
    {
        return Vec::new();
    }
    let (first, last) = window.partitions();
    let mut days: Vec<String> = [first, last]
        .iter()
        .map(|d| d.to_string())
        .filter(|d| !whole_days.contains(d) && lake_days.complete(Table::DailyHours).contains(d))
        .collect();
    days.dedup();
    days
}

/// A publisher's rows of `hourly_table` in `window`, summed by `keys`: from
/// its day table (`daily` for `aggregates`, `daily_urls` for `url_counts`, or
/// `daily_hours` for rows by hour) for the complete UTC days, from the
/// hourly table for the rest. In `daily` and `daily_urls` batches (the
/// second list) the hour key `window_start` becomes the day, `date`;
/// `daily_hours` rows keep their hour and join the first list. `filters`
/// name only columns every table read has (not `channel` for rows by hour).
pub(crate) async fn sum_split(
    state: &ReportState,
    hourly_table: Table,
    publisher: &str,
    window: &Window,
    grouping: Grouping,
    filters: Vec<Expr>,
    keys: &[&str],
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let (day_table, range) = day_table_range(hourly_table, window, grouping);
    // One refresh's view for the whole question: the days it calls complete
    // are the days whose files it listed.
    let lake_days = state.lake_state.days();
    let days = day_table_days(&lake_days, day_table, range);
    let end_days = end_days(&lake_days, hourly_table, window, grouping, keys, &days);
    let mut hourly_filters = filters.clone();
    let read_elsewhere: Vec<Expr> = days
        .iter()
        .chain(&end_days)
        .map(|d| lit(d.as_str()))
        .collect();
    if !read_elsewhere.is_empty() {
        hourly_filters.push(col("dt").in_list(read_elsewhere, true));
    }
    let (first, last) = window.partitions();
    let hourly_needed = first.iter_days().take_while(|day| *day <= last).any(|day| {
        let day_text = day.to_string();
        !days.contains(&day_text)
            && !end_days.contains(&day_text)
            && lake_days.may_have_hours(hourly_table, day)
    });
    let mut hourly = if !hourly_needed {
        Vec::new()
    } else {
        sum_by(
            &state.hourly,
            hourly_table,
            publisher,
            window,
            hourly_filters,
            keys,
        )
        .await?
    };
    let question = Question {
        publisher,
        window,
        filters: &filters,
        keys,
    };
    let mut daily = read_days(state, &lake_days, day_table, &days, &question).await?;
    if day_table == Table::DailyHours {
        hourly.append(&mut daily);
    }
    daily.extend(read_days(state, &lake_days, Table::DailyHours, &end_days, &question).await?);
    Ok((hourly, daily))
}

/// What [`sum_split`] was asked: whose rows, when, which, summed by what.
struct Question<'a> {
    publisher: &'a str,
    window: &'a Window,
    filters: &'a [Expr],
    keys: &'a [&'a str],
}

/// The question's rows of day table `day_table` on `days` (complete days of
/// it), from its month files where they hold the day, with its keys and
/// `events`; `daily_hours` rows are cut to the window's hours, and the hour
/// key `window_start` is the day, `date`, in the other day tables.
async fn read_days(
    state: &ReportState,
    lake_days: &LakeDays,
    day_table: Table,
    days: &[String],
    question: &Question<'_>,
) -> Result<Vec<RecordBatch>> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let Question {
        publisher,
        window,
        filters,
        keys,
    } = *question;
    let files = lake_days.day_files(day_table, days);
    let mut predicate = col("publisher").eq(lit(publisher));
    let by_hour = day_table == Table::DailyHours;
    if by_hour {
        let start = window.hours().first().copied().unwrap_or(0);
        predicate = predicate
            .and(col("window_start").gt_eq(timestamp(start)))
            .and(col("window_start").lt(timestamp(window.end.timestamp_millis())));
    }
    for filter in filters {
        predicate = predicate.and(filter.clone());
    }
    let mut columns: Vec<&str> = keys
        .iter()
        .map(|k| match *k {
            "window_start" if !by_hour => "date",
            other => other,
        })
        .collect();
    columns.push("events");
    let mut rows = Vec::new();
    if !files.merged_days.is_empty() {
        let dates = files
            .merged_days
            .iter()
            .map(|d| lit(ScalarValue::Date32(Some(Date32Type::from_naive_date(*d)))))
            .collect();
        let month_table = day_table.month_table().unwrap_or(day_table);
        rows.extend(
            state
                .scanner
                .rows(
                    month_table,
                    &files.months,
                    predicate.clone().and(col("date").in_list(dates, false)),
                    &columns,
                )
                .await?,
        );
    }
    rows.extend(
        state
            .scanner
            .rows(day_table, &files.days, predicate, &columns)
            .await?,
    );
    Ok(rows)
}

/// Column `name` of `batch` as text (views and dictionaries included).
pub(crate) fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::Invalid(format!("no column `{name}`")))?;
    let column = arrow::compute::cast(column, &DataType::Utf8)?;
    let column = column.as_string::<i32>();
    Ok((0..column.len())
        .map(|i| (!column.is_null(i)).then(|| column.value(i).to_owned()))
        .collect())
}

pub(crate) fn integers(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::Invalid(format!("no column `{name}`")))?;
    let column = arrow::compute::cast(column, &DataType::Int64)?;
    let column = column.as_primitive::<Int64Type>();
    Ok((0..column.len()).map(|i| column.value(i)).collect())
}

/// Column `date` of `batch` as dates.
pub(crate) fn dates(batch: &RecordBatch) -> Result<Vec<chrono::NaiveDate>> {
    let column = batch
        .column_by_name("date")
        .ok_or_else(|| crate::error::Error::Invalid("no column `date`".into()))?;
    let column = arrow::compute::cast(column, &DataType::Date32)?;
    let column = column.as_primitive::<Date32Type>();
    Ok((0..column.len())
        .map(|i| Date32Type::to_naive_date_opt(column.value(i)).unwrap_or_default())
        .collect())
}

pub(crate) fn hour_starts(batch: &RecordBatch) -> Result<Vec<i64>> {
    let column = batch
        .column_by_name("window_start")
        .ok_or_else(|| crate::error::Error::Invalid("no column `window_start`".into()))?;
    let column = arrow::compute::cast(
        column,
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())),
    )?;
    let column = column.as_primitive::<TimestampMillisecondType>();
    Ok((0..column.len()).map(|i| column.value(i)).collect())
}

pub(crate) fn not_bots(include_bots: bool) -> Vec<Expr> {
    if include_bots {
        Vec::new()
    } else {
        vec![col("device").not_eq(lit("bot"))]
    }
}

/// The publisher's most recent SQI row on or before `to`, as JSON. The
/// newest day the lake has on or before `to` answers almost every publisher
/// with one file; only a publisher missing from it is looked for in all.
pub(crate) async fn latest_sqi(
    state: &ReportState,
    publisher: &str,
    to: NaiveDate,
) -> Result<Option<SqiRow>> {
    let lake_days = state.lake_state.days();
    let to = to.to_string();
    // The newest day every shard has written: a half-written day lacks
    // the other shards' publishers.
    let newest = lake_days.files.get(&Table::Sqi).and_then(|days| {
        days.range(..=to.clone())
            .rev()
            .find(|(day, _)| lake_days.sqi.contains(*day))
    });
    if let Some((_, files)) = newest {
        let schema = Table::Sqi.schema();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let batches = state
            .scanner
            .rows(
                Table::Sqi,
                files,
                col("publisher").eq(lit(publisher)),
                &columns,
            )
            .await?;
        if let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) {
            return Ok(sqi_rows_of(batch)?.pop());
        }
    }
    newest_sqi_row(&state.days, col("dt").lt_eq(lit(to)), publisher).await
}

/// The newest SQI row of `publisher` among the partitions `days` selects.
async fn newest_sqi_row(
    ctx: &SessionContext,
    days: Expr,
    publisher: &str,
) -> Result<Option<SqiRow>> {
    let batches = ctx
        .table(Table::Sqi.prefix())
        .await?
        .filter(col("publisher").eq(lit(publisher)).and(days))?
        .sort(vec![col("date").sort(false, false)])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    Ok(sqi_rows_of(batch)?.pop())
}

/// The rows of an `sqi` batch (any projection of the table's columns
/// holding every field of [`SqiRow`]; `dt`, the partition, is left out).
/// Each cell is read by its Arrow type and the row checked against the
/// type, so text columns may come as views or dictionaries' values alike.
pub(crate) fn sqi_rows_of(batch: &arrow::array::RecordBatch) -> Result<Vec<SqiRow>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Date32Type, Float64Type, Int32Type, Int64Type};
    let mut rows = vec![serde_json::Map::new(); batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.name().as_str(), "dt") {
            continue;
        }
        for (row, out) in rows.iter_mut().enumerate() {
            let value = if column.is_null(row) {
                Value::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
                    DataType::Utf8View => json!(column.as_string_view().value(row)),
                    DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
                    DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(row)),
                    DataType::Float64 => json!(column.as_primitive::<Float64Type>().value(row)),
                    DataType::Boolean => json!(column.as_boolean().value(row)),
                    DataType::Date32 => json!(
                        column
                            .as_primitive::<Date32Type>()
                            .value_as_date(row)
                            .map(|d| d.to_string())
                    ),
                    _ => Value::Null,
                }
            };
            let _ = out.insert(field.name().clone(), value);
        }
    }
    rows.into_iter()
        .map(|row| {
            serde_json::from_value(Value::Object(row))
                .map_err(|e| Error::Invalid(format!("an `sqi` row: {e}")))
        })
        .collect()
}

/// What [`data_as_of`] answered since the lake's last refresh, by day: the
/// answer changes only with the lake, and listing three days of hourly
/// partitions cost more than the rest of a question.
#[derive(Debug, Default)]
pub(crate) struct AsOfMemo {
    refresh: Option<std::sync::Weak<days::LakeDays>>,
    by_day: HashMap<NaiveDate, Option<DateTime<Utc>>>,
}

impl AsOfMemo {
    /// Whether the memo holds answers for this refresh. The weak reference
    /// keeps the refresh's allocation, so no later refresh can share its address.
    fn is_for(&self, refresh: &Arc<days::LakeDays>) -> bool {
        self.refresh
            .as_ref()
            .is_some_and(|r| std::ptr::eq(r.as_ptr(), Arc::as_ptr(refresh)))
    }
}

/// When the newest aggregates file on or before `to` was written, as of the
/// lake's last refresh.
pub(crate) async fn data_as_of(
    state: &ReportState,
    to: NaiveDate,
) -> Result<Option<DateTime<Utc>>> {
    let refresh = state.lake_state.days();
    if let Ok(mut memo) = state.as_of.lock() {
        if !memo.is_for(&refresh) {
            memo.refresh = Some(Arc::downgrade(&refresh));
            memo.by_day.clear();
        }
        if let Some(known) = memo.by_day.get(&to) {
            return Ok(*known);
        }
    }
    let newest = newest_aggregates_write(&state.lake, to).await?;
    if let Ok(mut memo) = state.as_of.lock()
        && memo.is_for(&refresh)
    {
        let _ = memo.by_day.insert(to, newest);
    }
    Ok(newest)
}

/// When the newest aggregates file on or before `to` was written.
async fn newest_aggregates_write(lake: &Lake, to: NaiveDate) -> Result<Option<DateTime<Utc>>> {
    for back in 0..3u64 {
        let Some(day) = to.checked_sub_days(Days::new(back)) else {
            break;
        };
        let prefix = lake.path(&format!(
            "{}/{}",
            Table::Aggregates.prefix(),
            day_partition(day)
        ));
        let newest = lake
            .store()
            .list(Some(&prefix))
            .try_fold(None, |newest: Option<DateTime<Utc>>, meta| async move {
                Ok(Some(
                    newest.map_or(meta.last_modified, |n| n.max(meta.last_modified)),
                ))
            })
            .await?;
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

/// How many rows `predicate` selects from `sqi`, and the page of them in
/// leaderboard order (SQI, then `score_z`, highest first, then publisher).
/// The order and the page are the query's (a top-k sort), so a request
/// turns only its page into JSON, never a day of two million publishers.
pub(crate) async fn leaderboard_page(
    ctx: &SessionContext,
    predicate: Expr,
    page: Page,
) -> Result<(usize, Vec<SqiRow>)> {
    let scored = ctx.table(Table::Sqi.prefix()).await?.filter(predicate)?;
    let total = scored.clone().count().await?;
    if page.offset >= total {
        return Ok((total, Vec::new()));
    }
    let batches = scored
        .sort(vec![
            col("sqi").sort(false, false),
            col("score_z").sort(false, false),
            col("publisher").sort(true, false),
        ])?
        .limit(page.offset, Some(page.limit))?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(sqi_rows_of(batch)?);
    }
    Ok((total, rows))
}

/// The newest day with SQI output from every shard, as the last refresh
/// listed them; the table's own newest partition while the refresh has
/// seen none (the lake could not be listed).
pub(crate) async fn newest_sqi_day(state: &ReportState) -> Result<Option<chrono::NaiveDate>> {
    if let Some(day) = state.lake_state.days().sqi.last() {
        return Ok(chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok());
    }
    let batches = state
        .days
        .sql("SELECT MAX(dt) AS newest FROM sqi")
        .await?
        .collect()
        .await?;
    let newest = batches
        .first()
        .map(|b| texts(b, "newest"))
        .transpose()?
        .and_then(|v| v.into_iter().next().flatten());
    Ok(newest.and_then(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()))
}

/// The `sqi` rows `predicate` selects.
pub(crate) async fn sqi_rows(ctx: &SessionContext, predicate: Expr) -> Result<Vec<SqiRow>> {
    let batches = ctx
        .table(Table::Sqi.prefix())
        .await?
        .filter(predicate)?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(sqi_rows_of(batch)?);
    }
    Ok(rows)
}
