//! The report endpoints (`CONTRACTS.md` §3) beyond authentication: each
//! validates its parameters, resolves its window in the reader's timezone,
//! asks DataFusion for the few rows it needs, and answers JSON or CSV with
//! the same rows.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimestampMillisecondType};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::{Expr, SessionContext, col, lit};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqi_schemas::api::ErrorBody;
use sqi_schemas::event::is_valid_publisher;
use sqi_schemas::lake::{HOUR_MS, Table};
use utoipa::IntoParams;

use super::answer::{
    Bucket, Change, ChannelRow, Channels, Counts, Leaderboard, Me, PageInfo, Period, Previous,
    RankedRow, SqiHistory, SqiRow, Summary, Timeseries, TopUrls, UrlRow,
};
use super::days::LakeDays;
use super::window::{DayBucket, Window, parse_date};
use super::{
    PeriodParams, ReportError, ReportState, Scope, authorize, bad, data_as_of, sqi_rows_of,
    parse_bool,
};
use crate::error::Result;

/// JSON (default) or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `{"rows": [...], ...}`.
    Json,
    /// RFC 4180, a header line and the same rows.
    Csv,
}

fn parse_format(value: Option<&str>) -> Result<Format, ReportError> {
    match value {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(bad(
            "format",
            format!("unknown format `{other}`; use json or csv"),
        )),
    }
}

/// `limit` (1–1000, default 50) and `offset` (default 0) of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Page {
    limit: usize,
    offset: usize,
}

/// The largest `offset` (2^53 - 1, the largest integer every JSON reader
/// holds exactly); the document says so.
impl Page {
    /// The page as an answer states it, in a list of `total_rows`.
    fn info(self, total_rows: usize) -> PageInfo {
        PageInfo {
            total_rows,
            limit: self.limit,
            offset: self.offset,
        }
    }
}

const MAX_OFFSET: usize = 9_007_199_254_740_991;

fn parse_page(limit: Option<&str>, offset: Option<&str>) -> Result<Page, ReportError> {
    let limit = match limit {
        None => 50,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad("limit", format!("`{text}` is not a limit from 1 to 1000")))?,
    };
    let offset = match offset {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_OFFSET)
            .ok_or_else(|| {
                bad(
                    "offset",
                    format!("`{text}` is not an offset from 0 to {MAX_OFFSET}"),
                )
            })?,
    };
    Ok(Page { limit, offset })
}

/// Answers `body` as JSON, or its `rows` as CSV with `columns` (fields of
/// each row) and its `data_as_of` in a header.
fn respond<T: Serialize>(
    format: Format,
    body: &T,
    columns: &[&str],
) -> Result<Response, ReportError> {
    if format == Format::Json {
        return Ok(Json(body).into_response());
    }
    let internal = |e: String| ReportError::Internal(crate::error::Error::Invalid(e));
    let body = serde_json::to_value(body).map_err(|e| internal(e.to_string()))?;
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(columns)
        .map_err(|e| internal(e.to_string()))?;
    for row in body["rows"].as_array().map_or(&[][..], Vec::as_slice) {
        out.write_record(columns.iter().map(|c| csv_cell(&row[*c])))
            .map_err(|e| internal(e.to_string()))?;
    }
    let csv = out.into_inner().map_err(|e| internal(e.to_string()))?;
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    let _ = headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(as_of) = body["data_as_of"]
        .as_str()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        let _ = headers.insert("x-data-as-of", as_of);
    }
    Ok(response)
}

/// The first characters that make a spreadsheet read a cell as a formula
/// (OWASP, CSV injection).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A value as a CSV cell. Text that a spreadsheet would run as a formula (a
/// URL a page reported, say) is prefixed with `'`, which spreadsheets show
/// as text; numbers are written as they are, negative ones included, since a
/// number is never run.
fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(FORMULA_STARTS) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_publisher(publisher: &str) -> Result<(), ReportError> {
    if is_valid_publisher(publisher) {
        Ok(())
    } else {
        Err(bad(
            "publisher",
            "publisher must be 3 to 64 characters of [A-Za-z0-9_.-]",
        ))
    }
}

fn timestamp(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some("UTC".into()),
    ))
}

/// `table`'s rows of `publisher` inside `window` (whole UTC hours), summed by `keys`.
async fn sum_by(
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
enum Grouping {
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
async fn sum_split(
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
    let lake_days = state.guard.lake_days();
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
fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::Invalid(format!("no column `{name}`")))?;
    let column = arrow::compute::cast(column, &DataType::Utf8)?;
    let column = column.as_string::<i32>();
    Ok((0..column.len())
        .map(|i| (!column.is_null(i)).then(|| column.value(i).to_owned()))
        .collect())
}

fn integers(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::Invalid(format!("no column `{name}`")))?;
    let column = arrow::compute::cast(column, &DataType::Int64)?;
    let column = column.as_primitive::<Int64Type>();
    Ok((0..column.len()).map(|i| column.value(i)).collect())
}

/// Column `date` of `batch` as dates.
fn dates(batch: &RecordBatch) -> Result<Vec<chrono::NaiveDate>> {
    let column = batch
        .column_by_name("date")
        .ok_or_else(|| crate::error::Error::Invalid("no column `date`".into()))?;
    let column = arrow::compute::cast(column, &DataType::Date32)?;
    let column = column.as_primitive::<Date32Type>();
    Ok((0..column.len())
        .map(|i| Date32Type::to_naive_date_opt(column.value(i)).unwrap_or_default())
        .collect())
}

fn hour_starts(batch: &RecordBatch) -> Result<Vec<i64>> {
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

fn not_bots(include_bots: bool) -> Vec<Expr> {
    if include_bots {
        Vec::new()
    } else {
        vec![col("device").not_eq(lit("bot"))]
    }
}

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
    fn add(&mut self, event_type: &str, events: i64) {
        match event_type {
            "pageview" => self.pageviews += events,
            "share" => self.shares += events,
            "clickback" => self.clickbacks += events,
            _ => {}
        }
    }

    fn counts(self) -> Counts {
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

/// A publisher's totals over `window`.
pub(super) async fn totals(
    state: &ReportState,
    publisher: &str,
    window: &Window,
    include_bots: bool,
) -> Result<Totals> {
    let (hourly, daily) = sum_split(
        state,
        Table::Aggregates,
        publisher,
        window,
        Grouping::Window,
        not_bots(include_bots),
        &["event_type"],
    )
    .await?;
    let mut totals = Totals::default();
    for batch in hourly.iter().chain(&daily) {
        for (kind, events) in texts(batch, "event_type")?
            .iter()
            .zip(integers(batch, "events")?)
        {
            totals.add(kind.as_deref().unwrap_or_default(), events);
        }
    }
    Ok(totals)
}

async fn as_of(state: &ReportState, window: &Window) -> Result<Option<String>> {
    let (_, last) = window.partitions();
    Ok(data_as_of(state, last).await?.map(|t| t.to_rfc3339()))
}

/// `GET /v1/publishers/{publisher}/summary`.
#[utoipa::path(
    get,
    path = "/v1/publishers/{publisher}/summary",
    tag = "publishers",
    summary = "Totals, rates, the change from the previous period and the latest SQI",
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), super::PeriodParams),
    responses(
        (status = 200, description = "The answer (JSON, or CSV with `format=csv`)", content((Summary = "application/json"), (String = "text/csv"))),
        super::openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub(super) async fn summary(
    State(state): State<ReportState>,
    Path(publisher): Path<String>,
    Query(params): Query<PeriodParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    authorize(&state, &headers, &publisher)?;
    check_publisher(&publisher)?;
    let window = Window::resolve(&params, Utc::now())?;
    let include_bots = parse_bool("include_bots", params.include_bots.as_deref())?;
    // `Window::resolve` has refused any value but `previous_period`.
    let compare = params.compare.is_some();
    let current = totals(&state, &publisher, &window, include_bots).await?;
    let (previous, change) = if compare {
        let previous_window = window.previous();
        let previous = totals(&state, &publisher, &previous_window, include_bots).await?;
        let change =
            |now: i64, before: i64| (before != 0).then(|| (now - before) as f64 / before as f64);
        (
            Some(Previous {
                counts: previous.counts(),
                period: Period::from(&previous_window),
            }),
            Some(Change {
                pageviews: change(current.pageviews, previous.pageviews),
                shares: change(current.shares, previous.shares),
                clickbacks: change(current.clickbacks, previous.clickbacks),
            }),
        )
    } else {
        (None, None)
    };
    let body = Summary {
        period: Period::from(&window),
        include_bots,
        counts: current.counts(),
        previous,
        change,
        sqi: super::latest_sqi(&state, &publisher, window.to).await?,
        data_as_of: as_of(&state, &window).await?,
        publisher,
    };
    Ok(Json(body).into_response())
}

/// Options of the list and series endpoints. Each endpoint reads the ones
/// it names, and every one given is checked whichever endpoint gets it
/// ([`ListOptions::parse`]), so the document's types hold everywhere.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListOptions {
    /// `pageviews` (default), `shares` or `clickbacks` (timeseries).
    #[param(value_type = Option<super::openapi::Metric>)]
    metric: Option<String>,
    /// `day` (default, local days) or `hour` (timeseries; at most 31 days).
    #[param(value_type = Option<super::openapi::Interval>)]
    interval: Option<String>,
    /// `shares` (default), `pageviews` or `clickbacks` (top-urls order).
    #[param(value_type = Option<super::openapi::Metric>)]
    sort: Option<String>,
    /// `json` (default) or `csv` (the same rows, RFC 4180).
    #[param(value_type = Option<super::openapi::Format>)]
    format: Option<String>,
    /// Rows per page, 1 to 1000 (default 50; channels and top-urls).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Rows to skip (default 0; channels and top-urls).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_f64)]
    offset: Option<String>,
}

/// What a list or series endpoint was asked for, every option parsed.
struct ListChoices {
    /// The `metric`'s event type (timeseries).
    metric: &'static str,
    /// The `sort`'s event type (top-urls).
    sort: &'static str,
    /// `interval=hour` (timeseries).
    hourly: bool,
    format: Format,
    page: Page,
}

impl ListOptions {
    /// Parses every option, refusing any whose value the document does not
    /// allow, even one this endpoint does not use: a typo is an error, not
    /// ignored.
    fn parse(&self) -> Result<ListChoices, ReportError> {
        Ok(ListChoices {
            metric: event_type_of("metric", self.metric.as_deref(), "pageviews")?,
            sort: event_type_of("sort", self.sort.as_deref(), "shares")?,
            hourly: parse_interval(self.interval.as_deref())?,
            format: parse_format(self.format.as_deref())?,
            page: parse_page(self.limit.as_deref(), self.offset.as_deref())?,
        })
    }
}

/// `interval`: whether a series is bucketed by the hour.
fn parse_interval(interval: Option<&str>) -> Result<bool, ReportError> {
    match interval {
        None | Some("day") => Ok(false),
        Some("hour") => Ok(true),
        Some(other) => Err(bad(
            "interval",
            format!("unknown interval `{other}`; use hour or day"),
        )),
    }
}

/// Parameters of the list and series endpoints.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListParams {
    #[serde(flatten)]
    period: PeriodParams,
    #[serde(flatten)]
    list: ListOptions,
}

fn event_type_of(
    field: &'static str,
    metric: Option<&str>,
    default: &str,
) -> Result<&'static str, ReportError> {
    match metric.unwrap_or(default) {
        "pageviews" => Ok("pageview"),
        "shares" => Ok("share"),
        "clickbacks" => Ok("clickback"),
        other => Err(bad(
            field,
            format!("unknown metric `{other}`; use pageviews, shares or clickbacks"),
        )),
    }
}

/// The longest period `interval=hour` answers, in days: its answer has a row
/// per hour.
pub(super) const MAX_HOURLY_DAYS: u64 = 31;

/// `GET /v1/publishers/{publisher}/timeseries`: zero-filled buckets of one
/// metric, by local day or by hour, that add up to the period's total.
#[utoipa::path(
    get,
    path = "/v1/publishers/{publisher}/timeseries",
    tag = "publishers",
    summary = "One metric, zero-filled by local day or hour",
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), super::PeriodParams, ListOptions),
    responses(
        (status = 200, description = "The answer (JSON, or CSV with `format=csv`)", content((Timeseries = "application/json"), (String = "text/csv"))),
        super::openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub(super) async fn timeseries(
    State(state): State<ReportState>,
    Path(publisher): Path<String>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    authorize(&state, &headers, &publisher)?;
    check_publisher(&publisher)?;
    let window = Window::resolve(&params.period, Utc::now())?;
    let include_bots = parse_bool("include_bots", params.period.include_bots.as_deref())?;
    let ListChoices {
        metric: event_type,
        hourly,
        format,
        ..
    } = params.list.parse()?;
    if hourly && window.day_count() > MAX_HOURLY_DAYS {
        return Err(bad(
            "interval",
            format!(
                "hourly buckets cover at most {MAX_HOURLY_DAYS} days; this period has {}",
                window.day_count()
            ),
        ));
    }
    let mut filters = not_bots(include_bots);
    filters.push(col("event_type").eq(lit(event_type)));
    let (batches, daily) = sum_split(
        &state,
        Table::Aggregates,
        &publisher,
        &window,
        if hourly {
            Grouping::Hour
        } else {
            Grouping::LocalDay
        },
        filters,
        &["window_start"],
    )
    .await?;
    let (rows, total) = if hourly {
        hour_series(&window, &batches)?
    } else {
        day_series(&window, &batches, &daily)?
    };
    let body = Timeseries {
        metric: params
            .list
            .metric
            .as_deref()
            .unwrap_or("pageviews")
            .to_owned(),
        interval: if hourly { "hour" } else { "day" }.to_owned(),
        period: Period::from(&window),
        include_bots,
        total,
        data_as_of: as_of(&state, &window).await?,
        rows,
        publisher,
    };
    respond(format, &body, &["bucket", "value"])
}

/// The hour series' rows (every UTC hour of `window`, in its local time) and
/// total, from rows of `window_start` and `events`.
fn hour_series(window: &Window, batches: &[RecordBatch]) -> Result<(Vec<Bucket>, i64)> {
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
fn day_series(
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

/// `GET /v1/publishers/{publisher}/channels`: shares and clickbacks by channel.
#[utoipa::path(
    get,
    path = "/v1/publishers/{publisher}/channels",
    tag = "publishers",
    summary = "Shares and clickbacks by channel",
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), super::PeriodParams, ListOptions),
    responses(
        (status = 200, description = "The answer (JSON, or CSV with `format=csv`)", content((Channels = "application/json"), (String = "text/csv"))),
        super::openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub(super) async fn channels(
    State(state): State<ReportState>,
    Path(publisher): Path<String>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    authorize(&state, &headers, &publisher)?;
    check_publisher(&publisher)?;
    let window = Window::resolve(&params.period, Utc::now())?;
    let include_bots = parse_bool("include_bots", params.period.include_bots.as_deref())?;
    let ListChoices { format, page, .. } = params.list.parse()?;
    let mut filters = not_bots(include_bots);
    filters.push(col("event_type").in_list(vec![lit("share"), lit("clickback")], false));
    let (hourly, daily) = sum_split(
        &state,
        Table::Aggregates,
        &publisher,
        &window,
        Grouping::Window,
        filters,
        &["channel", "event_type"],
    )
    .await?;
    let mut by_channel: BTreeMap<String, Totals> = BTreeMap::new();
    for batch in hourly.iter().chain(&daily) {
        let (channels, kinds, events) = (
            texts(batch, "channel")?,
            texts(batch, "event_type")?,
            integers(batch, "events")?,
        );
        for ((channel, kind), events) in channels.into_iter().zip(kinds).zip(events) {
            by_channel
                .entry(channel.unwrap_or_else(|| "unknown".to_owned()))
                .or_default()
                .add(kind.as_deref().unwrap_or_default(), events);
        }
    }
    let mut ranked: Vec<(String, Totals)> = by_channel.into_iter().collect();
    ranked.sort_by(|a, b| {
        b.1.shares
            .cmp(&a.1.shares)
            .then(b.1.clickbacks.cmp(&a.1.clickbacks))
            .then_with(|| a.0.cmp(&b.0))
    });
    let total_rows = ranked.len();
    let rows = ranked
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|(channel, t)| ChannelRow {
            channel,
            shares: t.shares,
            clickbacks: t.clickbacks,
            clickback_rate: (t.shares > 0).then(|| t.clickbacks as f64 / t.shares as f64),
        })
        .collect();
    let body = Channels {
        period: Period::from(&window),
        include_bots,
        page: page.info(total_rows),
        data_as_of: as_of(&state, &window).await?,
        rows,
        publisher,
    };
    respond(
        format,
        &body,
        &["channel", "shares", "clickbacks", "clickback_rate"],
    )
}

/// `GET /v1/publishers/{publisher}/top-urls`: URLs by `sort` (default shares),
/// ties broken by URL, so pages never overlap.
#[utoipa::path(
    get,
    path = "/v1/publishers/{publisher}/top-urls",
    tag = "publishers",
    summary = "URLs by shares (or `sort`), paginated, ties by URL",
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), super::PeriodParams, ListOptions),
    responses(
        (status = 200, description = "The answer (JSON, or CSV with `format=csv`)", content((TopUrls = "application/json"), (String = "text/csv"))),
        super::openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub(super) async fn top_urls(
    State(state): State<ReportState>,
    Path(publisher): Path<String>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    authorize(&state, &headers, &publisher)?;
    check_publisher(&publisher)?;
    let window = Window::resolve(&params.period, Utc::now())?;
    let ListChoices {
        format, page, sort, ..
    } = params.list.parse()?;
    let (hourly, daily) = sum_split(
        &state,
        Table::UrlCounts,
        &publisher,
        &window,
        Grouping::Window,
        Vec::new(),
        &["url", "event_type"],
    )
    .await?;
    let mut by_url: BTreeMap<String, Totals> = BTreeMap::new();
    for batch in hourly.iter().chain(&daily) {
        let (urls, kinds, events) = (
            texts(batch, "url")?,
            texts(batch, "event_type")?,
            integers(batch, "events")?,
        );
        for ((url, kind), events) in urls.into_iter().zip(kinds).zip(events) {
            by_url
                .entry(url.unwrap_or_default())
                .or_default()
                .add(kind.as_deref().unwrap_or_default(), events);
        }
    }
    let key = |t: &Totals| match sort {
        "pageview" => t.pageviews,
        "clickback" => t.clickbacks,
        _ => t.shares,
    };
    let mut ranked: Vec<(String, Totals)> = by_url.into_iter().collect();
    ranked.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let total_rows = ranked.len();
    let rows = ranked
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|(url, t)| UrlRow {
            url,
            pageviews: t.pageviews,
            shares: t.shares,
            clickbacks: t.clickbacks,
        })
        .collect();
    let body = TopUrls {
        period: Period::from(&window),
        sort: params.list.sort.as_deref().unwrap_or("shares").to_owned(),
        page: page.info(total_rows),
        data_as_of: as_of(&state, &window).await?,
        rows,
        publisher,
    };
    respond(format, &body, &["url", "pageviews", "shares", "clickbacks"])
}

/// The columns of an SQI row, in the order responses and CSV use.
const SQI_COLUMNS: &[&str] = &[
    "date",
    "publisher",
    "category",
    "sqi",
    "score_z",
    "reason",
    "peer_group",
    "peer_count",
    "pageviews",
    "shares",
    "clickbacks",
    "share_rate",
    "clickback_rate",
    "social_traffic_ratio",
    "provisional",
    "complete",
];

/// Parameters of the SQI endpoints.
/// `GET .../sqi`'s query: the history's days.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// First day of the history (YYYY-MM-DD; default: 27 days before `to`;
    /// at most 365 days before `to`, and not after it).
    #[param(format = Date)]
    from: Option<String>,
    /// Last day of the history (YYYY-MM-DD; default: today, UTC).
    #[param(format = Date)]
    to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<super::openapi::Format>)]
    format: Option<String>,
}

/// `GET /v1/sqi/leaderboard`'s query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LeaderboardParams {
    /// The leaderboard's day (YYYY-MM-DD; default: the newest computed).
    #[param(format = Date)]
    date: Option<String>,
    /// Only this category.
    #[param(min_length = 1, max_length = 64)]
    category: Option<String>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<super::openapi::Format>)]
    format: Option<String>,
    /// Rows per page, 1 to 1000 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Rows to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_f64)]
    offset: Option<String>,
}

async fn sqi_rows(ctx: &SessionContext, predicate: Expr) -> Result<Vec<SqiRow>> {
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

/// `GET /v1/publishers/{publisher}/sqi?from=&to=`: the SQI history (default:
/// the 28 days ending today, UTC), one row per computed day.
#[utoipa::path(
    get,
    path = "/v1/publishers/{publisher}/sqi",
    tag = "publishers",
    summary = "The SQI history with its components",
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), HistoryParams),
    responses(
        (status = 200, description = "The answer (JSON, or CSV with `format=csv`)", content((SqiHistory = "application/json"), (String = "text/csv"))),
        super::openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub(super) async fn sqi_history(
    State(state): State<ReportState>,
    Path(publisher): Path<String>,
    Query(params): Query<HistoryParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    authorize(&state, &headers, &publisher)?;
    check_publisher(&publisher)?;
    let format = parse_format(params.format.as_deref())?;
    let today = Utc::now().date_naive();
    let to = match params.to.as_deref() {
        None => today,
        some => parse_date("to", some)?,
    };
    let from = match params.from.as_deref() {
        None => to.checked_sub_days(Days::new(27)).unwrap_or(to),
        some => parse_date("from", some)?,
    };
    if from > to {
        return Err(bad("from", "`from` is after `to`"));
    }
    if (to - from).num_days() >= super::window::MAX_CUSTOM_DAYS as i64 {
        return Err(bad(
            "from",
            format!(
                "the history may span at most {} days",
                super::window::MAX_CUSTOM_DAYS
            ),
        ));
    }
    let mut rows = sqi_rows(
        &state.days,
        col("publisher")
            .eq(lit(publisher.as_str()))
            .and(col("dt").gt_eq(lit(from.to_string())))
            .and(col("dt").lt_eq(lit(to.to_string()))),
    )
    .await?;
    rows.sort_by(|a, b| a.date.cmp(&b.date));
    let window = Window::days_in("custom", chrono_tz::Tz::UTC, from, to);
    let body = SqiHistory {
        publisher,
        from: from.to_string(),
        to: to.to_string(),
        data_as_of: as_of(&state, &window).await?,
        rows,
    };
    respond(format, &body, SQI_COLUMNS)
}

/// `GET /v1/sqi/leaderboard?date=&category=`: scored publishers of a day
/// (default: the newest computed), best first; marketer keys only.
#[utoipa::path(
    get,
    path = "/v1/sqi/leaderboard",
    tag = "sqi",
    summary = "Scored publishers of a day, best first (marketer keys)",
    params(LeaderboardParams),
    responses(
        (status = 200, description = "The answer (JSON, or CSV with `format=csv`)", content((Leaderboard = "application/json"), (String = "text/csv"))),
        super::openapi::Refusals,
    ),
    security(("bearer" = [])),
)]
pub(super) async fn leaderboard(
    State(state): State<ReportState>,
    Query(params): Query<LeaderboardParams>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    let key = super::authenticate(&state, &headers)?;
    if key.scope != Scope::Marketer {
        return Err(ReportError::Forbidden);
    }
    let format = parse_format(params.format.as_deref())?;
    let page = parse_page(params.limit.as_deref(), params.offset.as_deref())?;
    if let Some(category) = params.category.as_deref()
        && (category.is_empty() || category.len() > 64)
    {
        return Err(bad("category", "category must be 1 to 64 characters"));
    }
    let date = match params.date.as_deref() {
        Some(text) => Some(parse_date("date", Some(text))?),
        None => newest_sqi_day(&state).await?,
    };
    let (total_rows, rows) = match date {
        None => (0, Vec::new()),
        Some(date) => {
            let mut predicate = col("dt")
                .eq(lit(date.to_string()))
                .and(col("sqi").is_not_null());
            if let Some(category) = params.category.as_deref() {
                predicate = predicate.and(col("category").eq(lit(category)));
            }
            leaderboard_page(&state.days, predicate, page).await?
        }
    };
    let rows = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| RankedRow {
            rank: page.offset + i + 1,
            row,
        })
        .collect();
    let mut columns = vec!["rank"];
    columns.extend_from_slice(SQI_COLUMNS);
    let data_as_of = match date {
        Some(d) => data_as_of(&state, d).await?.map(|t| t.to_rfc3339()),
        None => None,
    };
    let body = Leaderboard {
        date: date.map(|d| d.to_string()),
        category: params.category,
        page: page.info(total_rows),
        data_as_of,
        rows,
    };
    respond(format, &body, &columns)
}

/// How many rows `predicate` selects from `sqi`, and the page of them in
/// leaderboard order (SQI, then `score_z`, highest first, then publisher).
/// The order and the page are the query's (a top-k sort), so a request
/// turns only its page into JSON, never a day of two million publishers.
async fn leaderboard_page(
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
async fn newest_sqi_day(state: &ReportState) -> Result<Option<chrono::NaiveDate>> {
    if let Some(day) = state.guard.lake_days().sqi.last() {
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

#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "keys",
    summary = "What the presented key may read",
    responses(
        (status = 200, description = "The key's name and scope: `marketer` or `publisher:<id>`", body = Me),
        (status = 401, description = "No key, or an unknown one", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
/// `GET /v1/me`: the key's name and scope, so a client (the dashboard) knows
/// what to show without probing for 403s.
pub(super) async fn me(
    State(state): State<ReportState>,
    headers: HeaderMap,
) -> Result<Response, ReportError> {
    let key = super::authenticate(&state, &headers)?;
    let (scope, publisher) = match &key.scope {
        Scope::Marketer => ("marketer".to_owned(), None),
        Scope::Publisher(id) => (format!("publisher:{id}"), Some(id.clone())),
    };
    Ok(Json(Me {
        name: key.name.clone(),
        scope,
        publisher,
    })
    .into_response())
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Item 15: text that would start a formula is neutralised; numbers,
    /// negative ones included, and ordinary text are written as they are.
    #[test]
    fn csv_cells_neutralise_formulas_but_not_numbers() {
        assert_eq!(csv_cell(&json!(-1.5)), "-1.5");
        assert_eq!(csv_cell(&json!(-3)), "-3");
        assert_eq!(csv_cell(&json!("-3")), "'-3");
        for formula in ["=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1"] {
            assert_eq!(csv_cell(&json!(formula)), format!("'{formula}"));
        }
        assert_eq!(
            csv_cell(&json!("https://x.example/?a=b")),
            "https://x.example/?a=b"
        );
        assert_eq!(csv_cell(&json!(true)), "true");
        assert_eq!(csv_cell(&Value::Null), "");
    }

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
