//! The report endpoints (`CONTRACTS.md` §3) beyond authentication: each
//! validates its parameters, resolves its window in the reader's timezone,
//! asks DataFusion for the few rows it needs, sums them (`series`), and
//! answers JSON or CSV with the same rows (`shape`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use datafusion::prelude::{col, lit};
use sqi_schemas::api::ErrorBody;
use sqi_schemas::lake::Table;

use super::answer::{
    Change, ChannelRow, Channels, Leaderboard, Me, Period, Previous, RankedRow, SqiHistory,
    Summary, Timeseries, TopUrls, UrlRow,
};
use super::params::{
    HistoryParams, LeaderboardParams, ListChoices, ListOptions, ListParams, PeriodParams, bad,
    check_publisher, parse_bool, parse_format, parse_page,
};
use super::read::{
    Grouping, data_as_of, integers, latest_sqi, leaderboard_page, newest_sqi_day, not_bots,
    sqi_rows, sum_split, texts,
};
use super::series::{Totals, day_series, hour_series};
use super::shape::respond;
use super::window::{Window, parse_date};
use super::{ReportError, ReportState, Scope, authorize};
use crate::error::Result;

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
