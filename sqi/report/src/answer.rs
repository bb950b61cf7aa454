//! The report API's answers as types: every 200 body the endpoints give,
//! `Serialize` for the wire and `ToSchema` for `/openapi.json`, so the
//! document describes each answer field by field and schemathesis checks the
//! server against it. CSV answers are the same rows (`rows`), one column per
//! field named in the endpoint's column list.
//!
//! Owns: the shapes. Must not touch: how the numbers are found (the
//! endpoints and the read layer) or how errors look (`sqi_schemas::api`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::window::Window;

/// The period an answer covers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Period {
    /// `today`, `7d`, `28d`, `30d`, `90d` or `custom`.
    pub name: String,
    /// First local day (YYYY-MM-DD).
    #[schema(format = Date)]
    pub from: String,
    /// Last local day (YYYY-MM-DD).
    #[schema(format = Date)]
    pub to: String,
    /// The IANA zone the days are local to.
    pub tz: String,
    /// The first instant of `from`, RFC 3339.
    #[schema(format = DateTime)]
    pub start: String,
    /// The instant after `to` ends, RFC 3339.
    #[schema(format = DateTime)]
    pub end: String,
    /// Local days in the period.
    pub days: u64,
}

impl From<&Window> for Period {
    fn from(window: &Window) -> Self {
        Self {
            name: window.name.to_string(),
            from: window.from.to_string(),
            to: window.to.to_string(),
            tz: window.tz.name().to_owned(),
            start: window.start.to_rfc3339(),
            end: window.end.to_rfc3339(),
            days: window.day_count(),
        }
    }
}

/// Counts and the rates between them (a rate is null when its denominator is 0).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counts {
    /// Pageviews.
    pub pageviews: i64,
    /// Shares.
    pub shares: i64,
    /// Clickbacks.
    pub clickbacks: i64,
    /// Shares per pageview.
    pub share_rate: Option<f64>,
    /// Clickbacks per share.
    pub clickback_rate: Option<f64>,
    /// Clickbacks per pageview.
    pub social_traffic_ratio: Option<f64>,
}

/// The previous period's counts, beside the period itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Previous {
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// The period just before the asked one, as long.
    pub period: Period,
}

/// Relative change from the previous period (null when it had none).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    /// Of pageviews.
    pub pageviews: Option<f64>,
    /// Of shares.
    pub shares: Option<f64>,
    /// Of clickbacks.
    pub clickbacks: Option<f64>,
}

/// One publisher's SQI on one day, with its components (`sqi` table).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SqiRow {
    /// The day scored.
    #[schema(format = Date)]
    pub date: String,
    /// The publisher.
    pub publisher: String,
    /// Its category.
    pub category: String,
    /// The peers it was scored against (null when it had too few).
    pub peer_group: Option<String>,
    /// How many peers.
    pub peer_count: Option<i64>,
    /// Pageviews over the 28 days.
    pub pageviews: i64,
    /// Shares over the 28 days.
    pub shares: i64,
    /// Clickbacks over the 28 days.
    pub clickbacks: i64,
    /// Shares per pageview.
    pub share_rate: Option<f64>,
    /// Clickbacks per share.
    pub clickback_rate: Option<f64>,
    /// Clickbacks per pageview.
    pub social_traffic_ratio: Option<f64>,
    /// The combined z-score against the peers.
    pub score_z: Option<f64>,
    /// The index, 0 to 100 (null when not scored; `reason` says why).
    pub sqi: Option<i32>,
    /// Why there is no score, or what qualifies it.
    pub reason: Option<String>,
    /// Scored with fewer than 28 days of history.
    pub provisional: bool,
    /// The formula's version.
    pub sqi_version: i32,
    /// Every hour of the window was complete when it was computed.
    pub complete: bool,
}

/// `GET /v1/publishers/{publisher}/summary`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// The publisher.
    pub publisher: String,
    /// The period.
    pub period: Period,
    /// Whether bot traffic is counted.
    pub include_bots: bool,
    /// The period's counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// With `compare=previous_period`: the previous period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// With `compare=previous_period`: the change from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The newest SQI on or before the period's last day.
    pub sqi: Option<SqiRow>,
    /// When the newest data the answer could include was written.
    #[schema(format = DateTime)]
    pub data_as_of: Option<String>,
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bucket {
    /// The local day (YYYY-MM-DD) or local hour (RFC 3339 with offset).
    pub bucket: String,
    /// Events in it.
    pub value: i64,
}

/// `GET /v1/publishers/{publisher}/timeseries`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Timeseries {
    /// The publisher.
    pub publisher: String,
    /// `pageviews`, `shares` or `clickbacks`.
    pub metric: String,
    /// `day` or `hour`.
    pub interval: String,
    /// The period.
    pub period: Period,
    /// Whether bot traffic is counted.
    pub include_bots: bool,
    /// The sum of every bucket.
    pub total: i64,
    /// When the newest data the answer could include was written.
    #[schema(format = DateTime)]
    pub data_as_of: Option<String>,
    /// Every bucket of the period, zero-filled, in order.
    pub rows: Vec<Bucket>,
}

/// A page of a ranked list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PageInfo {
    /// Rows in the whole list.
    pub total_rows: usize,
    /// Rows asked for.
    pub limit: usize,
    /// Rows skipped.
    pub offset: usize,
}

/// One channel's shares and clickbacks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelRow {
    /// The channel (`unknown` for shares recorded without one).
    pub channel: String,
    /// Shares.
    pub shares: i64,
    /// Clickbacks.
    pub clickbacks: i64,
    /// Clickbacks per share.
    pub clickback_rate: Option<f64>,
}

/// `GET /v1/publishers/{publisher}/channels`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Channels {
    /// The publisher.
    pub publisher: String,
    /// The period.
    pub period: Period,
    /// Whether bot traffic is counted.
    pub include_bots: bool,
    /// The page.
    #[serde(flatten)]
    pub page: PageInfo,
    /// When the newest data the answer could include was written.
    #[schema(format = DateTime)]
    pub data_as_of: Option<String>,
    /// Channels by shares, then clickbacks, then name.
    pub rows: Vec<ChannelRow>,
}

/// One URL's counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UrlRow {
    /// The URL.
    pub url: String,
    /// Pageviews.
    pub pageviews: i64,
    /// Shares.
    pub shares: i64,
    /// Clickbacks.
    pub clickbacks: i64,
}

/// `GET /v1/publishers/{publisher}/top-urls`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopUrls {
    /// The publisher.
    pub publisher: String,
    /// The period.
    pub period: Period,
    /// `shares`, `pageviews` or `clickbacks`.
    pub sort: String,
    /// The page.
    #[serde(flatten)]
    pub page: PageInfo,
    /// When the newest data the answer could include was written.
    #[schema(format = DateTime)]
    pub data_as_of: Option<String>,
    /// URLs by `sort`, ties by URL.
    pub rows: Vec<UrlRow>,
}

/// `GET /v1/publishers/{publisher}/sqi`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SqiHistory {
    /// The publisher.
    pub publisher: String,
    /// First day asked.
    #[schema(format = Date)]
    pub from: String,
    /// Last day asked.
    #[schema(format = Date)]
    pub to: String,
    /// When the newest data the answer could include was written.
    #[schema(format = DateTime)]
    pub data_as_of: Option<String>,
    /// One row per computed day, oldest first.
    pub rows: Vec<SqiRow>,
}

/// A leaderboard row: an SQI row and its rank.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RankedRow {
    /// 1 for the best.
    pub rank: usize,
    /// The row.
    #[serde(flatten)]
    pub row: SqiRow,
}

/// `GET /v1/sqi/leaderboard`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Leaderboard {
    /// The day ranked (null when no day has been scored).
    #[schema(format = Date)]
    pub date: Option<String>,
    /// The category asked for.
    pub category: Option<String>,
    /// The page.
    #[serde(flatten)]
    pub page: PageInfo,
    /// When the newest data the answer could include was written.
    #[schema(format = DateTime)]
    pub data_as_of: Option<String>,
    /// By SQI, then `score_z`, highest first, then publisher.
    pub rows: Vec<RankedRow>,
}

/// `GET /v1/me`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    /// The key's name.
    pub name: String,
    /// `marketer` or `publisher:<id>`.
    pub scope: String,
    /// The publisher a publisher key covers.
    pub publisher: Option<String>,
}
