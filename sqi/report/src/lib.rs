//! `sqi report`: the report API (`CONTRACTS.md` §3) over the lake.
//!
//! It owns authentication (hashed, scoped API keys), period resolution, and
//! turning lake tables into the JSON a marketer or publisher reads. Every
//! number comes from DataFusion over the lake; the API never stores state.
//! User input never causes a 5xx: every parameter is validated first, and
//! internal failures are logged here and answered with a generic message.
//!
//! Inside, a request passes one layer each way: `guard` (rate limits, the
//! answer cache, kept in `cache`) and `keys` (401/403), then `params` (every
//! parameter parsed or refused, naming its field), `endpoints` (the
//! handlers), `read` (which table answers which day, the rows), `series`
//! (the sums), and back out as an `answer` type, JSON or CSV (`shape`).
//! `lake_state` refreshes the view of the lake that `read` plans by and the
//! cache is keyed on.
//!
//! It reads the lake through the contract (`sqi-schemas`, `sqi-query`) and
//! must never write it, compute the SQI, or depend on another stage's crate.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::prelude::SessionContext;
use metrics_exporter_prometheus::PrometheusHandle;
use sqi_schemas::api::ErrorBody;
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::lake::{Lake, Table};

pub use error::{Error, Result};
use sqi_query as query;

pub mod answer;
mod cache;
mod dashboard;
mod days;
mod endpoints;
pub mod error;
mod guard;
mod keys;
mod lake_state;
mod openapi;
pub mod params;
mod read;
mod scan;
mod series;
mod shape;
pub mod window;

pub use guard::ReportOptions;
pub use keys::{ApiKey, KeyRing, Scope};
use keys::{Keys, authenticate, authorize};

pub use series::Totals;

/// `sqi report` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The lake.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Where to listen.
    #[arg(long, env = "SQI_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// JSON file of API keys: `[{"name", "sha256", "scope"}]`.
    #[arg(long, env = "SQI_API_KEYS_FILE")]
    pub api_keys_file: PathBuf,
    /// Requests each key may make per minute, sustained (0: no limit).
    #[arg(long, env = "SQI_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// Requests each key may make at once.
    #[arg(long, env = "SQI_RATE_LIMIT_BURST", default_value_t = 60)]
    pub rate_limit_burst: u32,
    /// How often the lake's state is re-read: the longest a cached answer lives.
    #[arg(long, env = "SQI_CACHE_REFRESH_SECONDS", default_value_t = 15)]
    pub cache_refresh_seconds: u64,
    /// Answers kept in the cache; 0 turns it off (benchmarks of the queries).
    #[arg(long, env = "SQI_ANSWER_CACHE_ENTRIES", default_value_t = 10_000)]
    pub answer_cache_entries: usize,
    /// Bytes of answers (bodies, headers and keys) the cache holds at most.
    #[arg(long, env = "SQI_ANSWER_CACHE_BYTES", default_value_t = 64 << 20)]
    pub answer_cache_bytes: usize,
    /// The share of the cache (its bytes and its entries), in percent, that
    /// the answers one key asked for keep once the cache is full: beyond it,
    /// a key's questions recycle its own answers, never flush the others'.
    #[arg(long, env = "SQI_ANSWER_CACHE_KEY_SHARE_PERCENT", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub answer_cache_key_share_percent: u8,
    /// Requests without a valid key each client address may make per
    /// minute, sustained (0: no limit); more get 429.
    #[arg(long, env = "SQI_UNAUTHORIZED_PER_MINUTE", default_value_t = 30)]
    pub unauthorized_per_minute: u32,
    /// Requests without a valid key each client address may make at once.
    #[arg(long, env = "SQI_UNAUTHORIZED_BURST", default_value_t = 10)]
    pub unauthorized_burst: u32,
    /// Questions answered at once; more wait in turn, first come first
    /// served (default: twice the cores). Reads from S3 wait on the network,
    /// so a pod reading S3 may want several times the cores.
    #[arg(long, env = "SQI_QUERY_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub query_concurrency: Option<u16>,
}

impl ReportArgs {
    /// The options these flags give.
    pub fn options(&self) -> ReportOptions {
        ReportOptions {
            requests_per_minute: self.rate_limit_per_minute,
            burst: self.rate_limit_burst,
            cache_refresh: std::time::Duration::from_secs(self.cache_refresh_seconds),
            cache_entries: self.answer_cache_entries,
            cache_bytes: self.answer_cache_bytes,
            cache_key_share_percent: self.answer_cache_key_share_percent,
            unauthorized_per_minute: self.unauthorized_per_minute,
            unauthorized_burst: self.unauthorized_burst,
            query_concurrency: self
                .query_concurrency
                .map_or_else(guard::default_query_concurrency, usize::from),
        }
    }
}

/// The report's metric names, by the rule in `DEVELOPERS.md` ("Metrics").
pub mod metric {
    /// Requests, by matched `route`, `method` and `status`.
    pub const REQUESTS: &str = "sqi_report_http_requests_total";
    /// Request latency in seconds, by matched `route`.
    pub const REQUEST_SECONDS: &str = "sqi_report_http_request_duration_seconds";
    /// Answer cache lookups, by `result`: `hit` or `miss`.
    pub const CACHE_LOOKUPS: &str = "sqi_report_answer_cache_lookups_total";
    /// Bytes the answer cache holds (bounded by `--answer-cache-bytes`).
    pub const CACHE_BYTES: &str = "sqi_report_answer_cache_bytes";
    /// Answers the answer cache holds (bounded by `--answer-cache-entries`).
    pub const CACHE_ENTRIES: &str = "sqi_report_answer_cache_entries";
    /// Unix time of the last successful read of the lake's state.
    pub const LAKE_REFRESHED: &str = "sqi_report_lake_refreshed_timestamp_seconds";
    /// Reads of the lake's state that failed (answers stay as they were).
    pub const LAKE_REFRESH_FAILURES: &str = "sqi_report_lake_refresh_failures_total";
    /// Requests refused with 429, by `reason`: `key` (over the key's quota)
    /// or `unauthorized` (an address sending requests without a valid key).
    pub const RATE_LIMITED: &str = "sqi_report_rate_limited_requests_total";
    /// Key file re-reads after a change, by `result`: `ok` or `error`.
    pub const KEY_RELOADS: &str = "sqi_report_key_reloads_total";

    /// Registers the metrics whose labels are known up front, so that a
    /// dashboard shows 0, not "no data", before the first event. Adding zero
    /// leaves any value already recorded as it was.
    pub(crate) fn register() {
        metrics::counter!(LAKE_REFRESH_FAILURES).increment(0);
        metrics::gauge!(CACHE_BYTES).increment(0.0);
        metrics::gauge!(CACHE_ENTRIES).increment(0.0);
        for result in ["hit", "miss"] {
            metrics::counter!(CACHE_LOOKUPS, "result" => result).increment(0);
        }
        for reason in ["key", "unauthorized"] {
            metrics::counter!(RATE_LIMITED, "reason" => reason).increment(0);
        }
    }
}

/// The method label of a request: the report answers `GET` and `HEAD`; any
/// other method is one label, so clients cannot mint series.
fn method_label(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request by the route it matched (`unmatched` for
/// none), never by the raw path, which the client chooses.
async fn track(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(metric::REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(metric::REQUEST_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A request failure, answered as `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub enum ReportError {
    /// 400: a parameter is wrong.
    BadRequest {
        /// The parameter.
        field: Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
    /// 401: no key, or an unknown one.
    Unauthorized,
    /// 403: the key does not cover this publisher. Identical for unknown publishers.
    Forbidden,
    /// 500: logged with detail; the client sees a generic message.
    Internal(Error),
}

impl From<Error> for ReportError {
    fn from(e: Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::BadRequest { field, message } => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new("invalid_parameter", message).with_field(field),
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new(
                    "unauthorized",
                    "a valid API key is required: Authorization: Bearer <key>",
                ),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                ErrorBody::new(
                    "forbidden",
                    "this key does not cover the requested publisher",
                ),
            ),
            Self::Internal(error) => {
                tracing::error!(%error, "report request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::new(
                        "internal",
                        "the report could not be computed; try again later",
                    ),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let _ = response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Shared state of the report API.
#[derive(Clone)]
pub struct ReportState {
    lake: Lake,
    keys: Arc<Keys>,
    /// `aggregates` and `url_counts`.
    hourly: SessionContext,
    /// `daily`, `daily_urls` and `sqi`.
    days: SessionContext,
    /// One publisher's rows of the batch tables' listed files.
    scanner: scan::Scanner,
    /// When each day's newest aggregates file was written, as of the last refresh.
    as_of: Arc<std::sync::Mutex<read::AsOfMemo>>,
    metrics: Option<PrometheusHandle>,
    options: ReportOptions,
    guard: Arc<guard::Guard>,
    /// Which days each table answers, and the lake's state, as last refreshed.
    lake_state: Arc<lake_state::LakeState>,
}

impl ReportState {
    /// Opens a DataFusion session over the lake's tables, with default options.
    pub async fn new(lake: Lake, keys: KeyRing, metrics: Option<PrometheusHandle>) -> Result<Self> {
        Self::with_options(lake, keys, metrics, ReportOptions::default()).await
    }

    /// Opens a DataFusion session over the lake's tables.
    pub async fn with_options(
        lake: Lake,
        keys: KeyRing,
        metrics: Option<PrometheusHandle>,
        options: ReportOptions,
    ) -> Result<Self> {
        let hourly = query::session(
            &lake,
            &[Table::Aggregates, Table::UrlCounts],
            2,
            query::Workload::Serving,
        )
        .await?;
        let days = query::session(
            &lake,
            &[Table::Daily, Table::DailyUrls, Table::Sqi],
            2,
            query::Workload::ServingDays,
        )
        .await?;
        let guard = guard::Guard::new(options);
        let lake_state =
            Arc::new(lake_state::LakeState::watch(lake.clone(), options.cache_refresh).await);
        let scanner = scan::Scanner::new(&lake, days.clone())?;
        let keys = Arc::new(Keys::new(keys));
        Keys::watch(
            &keys,
            options
                .cache_refresh
                .max(std::time::Duration::from_millis(10)),
        );
        Ok(Self {
            lake,
            keys,
            hourly,
            days,
            scanner,
            as_of: Arc::default(),
            metrics,
            options,
            guard,
            lake_state,
        })
    }
}

/// The report router.
pub fn router(state: ReportState) -> Router {
    Router::new()
        .route(
            "/v1/publishers/{publisher}/summary",
            get(endpoints::summary),
        )
        .route(
            "/v1/publishers/{publisher}/timeseries",
            get(endpoints::timeseries),
        )
        .route(
            "/v1/publishers/{publisher}/channels",
            get(endpoints::channels),
        )
        .route(
            "/v1/publishers/{publisher}/top-urls",
            get(endpoints::top_urls),
        )
        .route(
            "/v1/publishers/{publisher}/sqi",
            get(endpoints::sqi_history),
        )
        .route("/v1/sqi/leaderboard", get(endpoints::leaderboard))
        .route("/v1/me", get(endpoints::me))
        .route("/openapi.json", get(openapi::document))
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::app))
        .route("/dashboard/style.css", get(dashboard::style))
        .route("/dashboard/chart.umd.min.js", get(dashboard::chart))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<ReportState>| async move {
                s.metrics.map(|h| h.render()).unwrap_or_default()
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(ErrorBody::new(
                    "not_found",
                    "no such endpoint; see CONTRACTS.md §3",
                )),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(track))
        .with_state(state)
}

/// Ready once the lake's state has been read: until then the report cannot
/// tell which table answers a day, so it would read every day from the hourly
/// files. A refresh failing later keeps the pod ready (every replica shares
/// the lake, so unready would take the whole API down); staleness shows in
/// `sqi_report_lake_refreshed_timestamp_seconds` and its alert instead.
async fn readyz(State(state): State<ReportState>) -> Response {
    match state.lake_state.read_age() {
        Some(age) => format!("ready; lake state read {} s ago\n", age.as_secs()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody::new(
                "not_ready",
                "the lake's state has not been read yet; see the log",
            )),
        )
            .into_response(),
    }
}

/// The longest message of a refusal that axum wrote as text (an extractor
/// or routing rejection) kept in its JSON body.
const REJECTION_MESSAGE_CHARS: usize = 300;

/// Turns any refusal that is not already the contract's JSON (axum's own
/// extractor rejections, 405s, body limits) into `{"error": {"code", "message"}}`.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_parameter",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let message = if status.is_server_error() {
        "the report could not be computed; try again later".to_owned()
    } else {
        let text = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let text: String = text.trim().chars().take(REJECTION_MESSAGE_CHARS).collect();
        match (text.is_empty(), status) {
            (false, _) => text,
            (true, StatusCode::METHOD_NOT_ALLOWED) => {
                "this endpoint does not take this method; see Allow".to_owned()
            }
            (true, _) => status.canonical_reason().unwrap_or("refused").to_owned(),
        }
    };
    let body = serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default();
    let _ = parts.headers.remove(header::CONTENT_LENGTH);
    let _ = parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Serves the report API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: ReportState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The peer address limits requests without a valid key per client.
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
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
