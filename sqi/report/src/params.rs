//! The report API's parameters: every query parameter each endpoint takes,
//! as the type that both parses it and describes it in `/openapi.json`, and
//! the checks that refuse a bad value with a 400 naming its `field`.
//!
//! Owns: parsing and refusing. Must not touch: what an answer holds or how
//! it is read.

use std::borrow::Cow;

use serde::Deserialize;
use sqi_schemas::event::is_valid_publisher;
use utoipa::IntoParams;

use crate::ReportError;
use crate::answer::PageInfo;
use crate::openapi;

/// Query parameters shared by the publisher endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodParams {
    /// `today`, `7d`, `28d` (default), `30d`, `90d`, or `custom` with `from` and `to`.
    #[param(value_type = Option<openapi::PeriodName>)]
    pub(crate) period: Option<String>,
    /// First local day of a custom period (YYYY-MM-DD, inclusive).
    #[param(format = Date)]
    pub(crate) from: Option<String>,
    /// Last local day of a custom period (YYYY-MM-DD, inclusive).
    #[param(format = Date)]
    pub(crate) to: Option<String>,
    /// IANA timezone the days are in (default UTC; empty means UTC).
    #[param(value_type = Option<openapi::ZoneName>)]
    pub(crate) tz: Option<String>,
    /// `previous_period`: also the equal-length window before (summary).
    #[param(value_type = Option<openapi::Compare>)]
    pub(crate) compare: Option<String>,
    /// `true` to count bot traffic (default false; top-urls always counts
    /// every URL's events, as `url_counts` has no device).
    #[param(value_type = Option<bool>)]
    pub(crate) include_bots: Option<String>,
}

pub(crate) fn bad(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ReportError {
    ReportError::BadRequest {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn parse_bool(field: &'static str, value: Option<&str>) -> Result<bool, ReportError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(bad(field, format!("`{other}` is not true or false"))),
    }
}

/// JSON (default) or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `{"rows": [...], ...}`.
    Json,
    /// RFC 4180, a header line and the same rows.
    Csv,
}

pub(crate) fn parse_format(value: Option<&str>) -> Result<Format, ReportError> {
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
pub(crate) struct Page {
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

/// The largest `offset` (2^53 - 1, the largest integer every JSON reader
/// holds exactly); the document says so.
impl Page {
    /// The page as an answer states it, in a list of `total_rows`.
    pub(crate) fn info(self, total_rows: usize) -> PageInfo {
        PageInfo {
            total_rows,
            limit: self.limit,
            offset: self.offset,
        }
    }
}

pub(crate) const MAX_OFFSET: usize = 9_007_199_254_740_991;

pub(crate) fn parse_page(limit: Option<&str>, offset: Option<&str>) -> Result<Page, ReportError> {
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

pub(crate) fn check_publisher(publisher: &str) -> Result<(), ReportError> {
    if is_valid_publisher(publisher) {
        Ok(())
    } else {
        Err(bad(
            "publisher",
            "publisher must be 3 to 64 characters of [A-Za-z0-9_.-]",
        ))
    }
}

/// Options of the list and series endpoints. Each endpoint reads the ones
/// it names, and every one given is checked whichever endpoint gets it
/// ([`ListOptions::parse`]), so the document's types hold everywhere.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListOptions {
    /// `pageviews` (default), `shares` or `clickbacks` (timeseries).
    #[param(value_type = Option<super::openapi::Metric>)]
    pub(crate) metric: Option<String>,
    /// `day` (default, local days) or `hour` (timeseries; at most 31 days).
    #[param(value_type = Option<super::openapi::Interval>)]
    pub(crate) interval: Option<String>,
    /// `shares` (default), `pageviews` or `clickbacks` (top-urls order).
    #[param(value_type = Option<super::openapi::Metric>)]
    pub(crate) sort: Option<String>,
    /// `json` (default) or `csv` (the same rows, RFC 4180).
    #[param(value_type = Option<super::openapi::Format>)]
    pub(crate) format: Option<String>,
    /// Rows per page, 1 to 1000 (default 50; channels and top-urls).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// Rows to skip (default 0; channels and top-urls).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_f64)]
    pub(crate) offset: Option<String>,
}

/// What a list or series endpoint was asked for, every option parsed.
pub(crate) struct ListChoices {
    /// The `metric`'s event type (timeseries).
    pub(crate) metric: &'static str,
    /// The `sort`'s event type (top-urls).
    pub(crate) sort: &'static str,
    /// `interval=hour` (timeseries).
    pub(crate) hourly: bool,
    pub(crate) format: Format,
    pub(crate) page: Page,
}

impl ListOptions {
    /// Parses every option, refusing any whose value the document does not
    /// allow, even one this endpoint does not use: a typo is an error, not
    /// ignored.
    pub(crate) fn parse(&self) -> Result<ListChoices, ReportError> {
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
pub(crate) fn parse_interval(interval: Option<&str>) -> Result<bool, ReportError> {
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
pub(crate) struct ListParams {
    #[serde(flatten)]
    pub(crate) period: PeriodParams,
    #[serde(flatten)]
    pub(crate) list: ListOptions,
}

pub(crate) fn event_type_of(
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

/// Parameters of the SQI endpoints.
/// `GET .../sqi`'s query: the history's days.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// First day of the history (YYYY-MM-DD; default: 27 days before `to`;
    /// at most 365 days before `to`, and not after it).
    #[param(format = Date)]
    pub(crate) from: Option<String>,
    /// Last day of the history (YYYY-MM-DD; default: today, UTC).
    #[param(format = Date)]
    pub(crate) to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<super::openapi::Format>)]
    pub(crate) format: Option<String>,
}

/// `GET /v1/sqi/leaderboard`'s query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LeaderboardParams {
    /// The leaderboard's day (YYYY-MM-DD; default: the newest computed).
    #[param(format = Date)]
    pub(crate) date: Option<String>,
    /// Only this category.
    #[param(min_length = 1, max_length = 64)]
    pub(crate) category: Option<String>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<super::openapi::Format>)]
    pub(crate) format: Option<String>,
    /// Rows per page, 1 to 1000 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
    /// Rows to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_f64)]
    pub(crate) offset: Option<String>,
}
