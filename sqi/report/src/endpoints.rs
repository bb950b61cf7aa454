//! The report endpoints (`CONTRACTS.md` §3) beyond authentication: each
//! validates its parameters, resolves its window in the reader's timezone,
//! asks DataFusion for the few rows it needs, and answers JSON or CSV with
//! the same rows.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use datafusion::prelude::{col, lit};
use serde::Serialize;
use serde_json::Value;
use sqi_schemas::api::ErrorBody;
use sqi_schemas::lake::{HOUR_MS, Table};

use super::answer::{
    Bucket, Change, ChannelRow, Channels, Counts, Leaderboard, Me, Period, Previous, RankedRow,
    SqiHistory, Summary, Timeseries, TopUrls, UrlRow,
};
use super::params::{
    Format, HistoryParams, LeaderboardParams, ListChoices, ListOptions, ListParams, PeriodParams,
    bad, check_publisher, parse_bool, parse_format, parse_page,
};
use super::read::{
    Grouping, data_as_of, dates, hour_starts, integers, latest_sqi, leaderboard_page,
    newest_sqi_day, not_bots, sqi_rows, sum_split, texts,
};
use super::window::{DayBucket, Window, parse_date};
use super::{ReportError, ReportState, Scope, authorize};
use crate::error::Result;

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
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), PeriodParams),
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
        sqi: latest_sqi(&state, &publisher, window.to).await?,
        data_as_of: as_of(&state, &window).await?,
        publisher,
    };
    Ok(Json(body).into_response())
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
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), PeriodParams, ListOptions),
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
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), PeriodParams, ListOptions),
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
    params(("publisher" = String, Path, description = "The publisher id", pattern = "^[A-Za-z0-9_.-]{3,64}$"), PeriodParams, ListOptions),
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
    use arrow::datatypes::Date32Type;
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
