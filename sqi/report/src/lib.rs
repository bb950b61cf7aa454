//! `sqi report`: the report API (`CONTRACTS.md` §3) over the lake.
//!
//! It owns authentication (hashed, scoped API keys), period resolution, and
//! turning lake tables into the JSON a marketer or publisher reads. Every
//! number comes from DataFusion over the lake; the API never stores state.
//! User input never causes a 5xx: every parameter is validated first, and
//! internal failures are logged here and answered with a generic message.
//!
//! It reads the lake through the contract (`sqi-schemas`, `sqi-query`) and
//! must never write it, compute the SQI, or depend on another stage's crate.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate, Utc};
use datafusion::prelude::{Expr, SessionContext, col, lit};
use futures::TryStreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqi_schemas::api::ErrorBody;
use sqi_schemas::cli::LakeArgs;
use sqi_schemas::event::is_valid_publisher;
use sqi_schemas::lake::{Lake, Table, day_partition};

pub use error::{Error, Result};
use sqi_query as query;

use crate::answer::SqiRow;

pub mod answer;
mod dashboard;
mod days;
mod endpoints;
pub mod error;
mod guard;
mod openapi;
mod scan;
pub mod window;

pub use guard::ReportOptions;

pub use endpoints::Totals;

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

/// What a key may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One publisher.
    Publisher(String),
    /// Every publisher and the leaderboard.
    Marketer,
}

/// One configured key; only its SHA-256 is known.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// A label for logs.
    pub name: String,
    /// What the key may read.
    pub scope: Scope,
    /// The key's identity: the hex SHA-256 of its secret, which two keys
    /// never share (names may repeat). Quotas and cache shares are per id.
    id: Arc<str>,
}

/// The configured keys, indexed by the hex SHA-256 of the raw key.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_hash: HashMap<String, ApiKey>,
    /// The file the keys were loaded from, re-read while the report runs so
    /// that a revoked key stops working without a restart.
    source: Option<PathBuf>,
    /// The SHA-256 of the file's bytes as parsed, so an unchanged file is not re-parsed.
    digest: Option<[u8; 32]>,
}

#[derive(Deserialize)]
struct KeyEntry {
    name: String,
    sha256: String,
    scope: String,
}

impl KeyRing {
    /// Parses the key file's JSON.
    pub fn parse(json: &str) -> Result<Self> {
        let entries: Vec<KeyEntry> =
            serde_json::from_str(json).map_err(|e| Error::Invalid(format!("API key file: {e}")))?;
        let mut by_hash = HashMap::new();
        for entry in entries {
            let hash = entry.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Invalid(format!(
                    "API key file: key `{}` needs a 64-hex-digit sha256",
                    entry.name
                )));
            }
            // Two entries for one secret would leave its scope to file order.
            if by_hash.contains_key(&hash) {
                return Err(Error::Invalid(format!(
                    "API key file: key `{}` repeats the sha256 of an earlier key",
                    entry.name
                )));
            }
            let scope = match entry.scope.split_once(':') {
                None if entry.scope == "marketer" => Scope::Marketer,
                Some(("publisher", id)) if is_valid_publisher(id) => {
                    Scope::Publisher(id.to_owned())
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "API key file: key `{}` has scope `{}`; use `marketer` or `publisher:<id>`",
                        entry.name, entry.scope
                    )));
                }
            };
            let _ = by_hash.insert(
                hash.clone(),
                ApiKey {
                    name: entry.name,
                    scope,
                    id: hash.into(),
                },
            );
        }
        Ok(Self {
            by_hash,
            source: None,
            digest: None,
        })
    }

    /// Loads the key file; the report re-reads it while it runs.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Invalid(format!("cannot read API key file {}: {e}", path.display()))
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::Invalid(format!("API key file {}: {e}", path.display())))?;
        let mut ring = Self::parse(text)?;
        ring.source = Some(path.to_owned());
        ring.digest = Some(Sha256::digest(&bytes).into());
        Ok(ring)
    }

    /// The key file re-read, when it was loaded from one and has changed
    /// since: `None` while it is unchanged. A file that cannot be read or
    /// parsed (say, half written) is an error, and the caller keeps its keys.
    fn reloaded(&self) -> Option<Result<Self>> {
        let path = self.source.as_deref()?;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return Some(Err(Error::Invalid(format!(
                    "cannot read API key file {}: {e}",
                    path.display()
                ))));
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if self.digest == Some(digest) {
            return None;
        }
        Some(Self::load(path))
    }

    fn find(&self, raw_key: &str) -> Option<&ApiKey> {
        let hash = hex::encode(Sha256::digest(raw_key.as_bytes()));
        self.by_hash.get(&hash)
    }
}

/// The keys in force, swapped whole when the key file changes.
#[derive(Debug, Default)]
struct Keys {
    ring: RwLock<Arc<KeyRing>>,
}

impl Keys {
    fn current(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the key file if it changed; a broken file keeps the keys in force.
    fn refresh(&self) {
        let current = self.current();
        match current.reloaded() {
            None => {}
            Some(Ok(ring)) => {
                tracing::info!(
                    keys = ring.by_hash.len(),
                    "API key file changed; keys reloaded"
                );
                metrics::counter!(metric::KEY_RELOADS, "result" => "ok").increment(1);
                match self.ring.write() {
                    Ok(mut slot) => *slot = Arc::new(ring),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
                }
            }
            Some(Err(error)) => {
                metrics::counter!(metric::KEY_RELOADS, "result" => "error").increment(1);
                tracing::warn!(%error, "API key file changed but cannot be used; the keys in force stay");
            }
        }
    }

    /// Re-reads the key file every `every` while `keys` is in use.
    fn watch(keys: &Arc<Self>, every: std::time::Duration) {
        if keys.current().source.is_none() {
            return;
        }
        let weak = Arc::downgrade(keys);
        drop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(keys) = weak.upgrade() else {
                    return;
                };
                // A small file, read on the blocking pool so a slow disk stalls no request.
                let _ = tokio::task::spawn_blocking(move || keys.refresh()).await;
            }
        }));
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
    as_of: Arc<std::sync::Mutex<AsOfMemo>>,
    metrics: Option<PrometheusHandle>,
    options: ReportOptions,
    guard: Arc<guard::Guard>,
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
        let guard = guard::Guard::start(lake.clone(), options).await;
        let scanner = scan::Scanner::new(&lake, days.clone())?;
        let keys = Arc::new(Keys {
            ring: RwLock::new(Arc::new(keys)),
        });
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
    match state.guard.lake_read_age() {
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

/// The key a request carries, or 401.
fn authenticate(state: &ReportState, headers: &HeaderMap) -> Result<ApiKey, ReportError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ReportError::Unauthorized)?;
    state
        .keys
        .current()
        .find(raw)
        .cloned()
        .ok_or(ReportError::Unauthorized)
}

/// 401 without a known key; 403 when the key does not cover `publisher`.
fn authorize(state: &ReportState, headers: &HeaderMap, publisher: &str) -> Result<(), ReportError> {
    let key = authenticate(state, headers)?;
    // The scope check looks only at the key, never at whether the publisher
    // exists, so a 403 is the same whatever publisher is asked for.
    match &key.scope {
        Scope::Marketer => Ok(()),
        Scope::Publisher(own) if own == publisher => Ok(()),
        Scope::Publisher(_) => Err(ReportError::Forbidden),
    }
}

/// Query parameters shared by the publisher endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodParams {
    /// `today`, `7d`, `28d` (default), `30d`, `90d`, or `custom` with `from` and `to`.
    #[param(value_type = Option<openapi::PeriodName>)]
    period: Option<String>,
    /// First local day of a custom period (YYYY-MM-DD, inclusive).
    #[param(format = Date)]
    from: Option<String>,
    /// Last local day of a custom period (YYYY-MM-DD, inclusive).
    #[param(format = Date)]
    to: Option<String>,
    /// IANA timezone the days are in (default UTC; empty means UTC).
    #[param(value_type = Option<openapi::ZoneName>)]
    tz: Option<String>,
    /// `previous_period`: also the equal-length window before (summary).
    #[param(value_type = Option<openapi::Compare>)]
    compare: Option<String>,
    /// `true` to count bot traffic (default false; top-urls always counts
    /// every URL's events, as `url_counts` has no device).
    #[param(value_type = Option<bool>)]
    include_bots: Option<String>,
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

/// The publisher's most recent SQI row on or before `to`, as JSON. The
/// newest day the lake has on or before `to` answers almost every publisher
/// with one file; only a publisher missing from it is looked for in all.
async fn latest_sqi(
    state: &ReportState,
    publisher: &str,
    to: NaiveDate,
) -> Result<Option<SqiRow>> {
    let lake_days = state.guard.lake_days();
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
fn sqi_rows_of(batch: &arrow::array::RecordBatch) -> Result<Vec<SqiRow>> {
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
struct AsOfMemo {
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
async fn data_as_of(state: &ReportState, to: NaiveDate) -> Result<Option<DateTime<Utc>>> {
    let refresh = state.guard.lake_days();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_by_hash_and_scoped() {
        let hash = hex::encode(Sha256::digest(b"secret-1"));
        let ring = KeyRing::parse(&format!(
            r#"[{{"name":"a","sha256":"{hash}","scope":"publisher:pub-1"}}]"#
        ))
        .unwrap();
        assert_eq!(
            ring.find("secret-1").map(|k| k.scope.clone()),
            Some(Scope::Publisher("pub-1".into()))
        );
        assert!(ring.find("secret-2").is_none());
        assert!(KeyRing::parse(r#"[{"name":"a","sha256":"abc","scope":"marketer"}]"#).is_err());
        assert!(
            KeyRing::parse(&format!(
                r#"[{{"name":"a","sha256":"{hash}","scope":"admin"}}]"#
            ))
            .is_err()
        );
    }
}
