//! The HTTP surface: routes, reading bodies, CORS, health and the request
//! metrics. What a body decodes to is `decode`'s; the metric names are
//! `metric`'s.
//!
//! Decoding never trusts a length: the raw body is read through a limit, and
//! gzip is inflated through the same limit (`decode`), so a small bomb cannot
//! grow past it. What requests hold at once is bounded too: each body must
//! arrive within `--body-read-timeout`, bodies' bytes are drawn from one
//! budget (a quarter of `--memory-limit`), and at most
//! `--max-concurrent-requests` requests validate and wait for the broker at
//! once; over a bound, a request gets 503 `server_busy` at once rather than
//! queueing memory. The socket-level bounds are in `serve`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqi_schemas::event::{self, ErrorCode, Limits};
use sqi_schemas::record::{Enrichment, EventRecord, normalize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::allowlist::{Allowlist, Verdict};
use crate::config::IngestConfig;
use crate::decode::percent_decode;
use crate::enrich;
use crate::error::ApiError;
use crate::health::Health;
use crate::limiter::{EventLimiter, LimiterConfig};
use crate::metric::{self, RequestMetrics, method_label};
use crate::producer::{EventProducer, ProduceError};

// The fuzz targets (`ingest/fuzz`, a workspace of their own) call it by this path.
pub use crate::decode::decode_body;

/// The share widget, served at `/widget.js`.
pub const WIDGET_JS: &str = include_str!("../assets/widget.js");

/// A transparent 1×1 GIF, the pixel endpoint's answer.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Shared request state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: IngestConfig,
    limits: Limits,
    producer: EventProducer,
    health: Arc<Health>,
    limiter: EventLimiter,
    allowlist: Allowlist,
    metrics: Option<PrometheusHandle>,
    /// One permit per request validating or waiting for the broker.
    requests: Arc<Semaphore>,
    /// One permit per body byte held (raw and inflated).
    body_bytes: Arc<Semaphore>,
    /// The per-request metrics' handles.
    request_metrics: RequestMetrics,
}

/// Where widgets post events.
const EVENTS: &str = "/v1/events";
/// One event from a query string, for pages where scripts cannot run.
const PIXEL: &str = "/v1/pixel.gif";
/// The share widget.
const WIDGET: &str = "/widget.js";
/// Liveness.
const LIVEZ: &str = "/livez";
/// Readiness.
const READYZ: &str = "/readyz";
/// The Prometheus scrape.
const METRICS: &str = "/metrics";

/// Makes what serves a route, when [`router`] is built.
type Serve = fn() -> MethodRouter<AppState>;

/// Every route, with what serves it. [`router`] serves exactly these, and a
/// request's metric label is its route's path from here (a static string),
/// so a route cannot be served without its label, nor labelled without
/// being served.
const ROUTES: [(&str, Serve); 6] = [
    (EVENTS, || post(post_events).options(preflight)),
    (PIXEL, || get(pixel).options(preflight)),
    (WIDGET, || get(widget)),
    (LIVEZ, || get(livez)),
    (READYZ, || get(readyz)),
    (METRICS, || get(render_metrics)),
];

impl AppState {
    /// Builds the state for [`router`].
    pub fn new(
        config: IngestConfig,
        producer: EventProducer,
        health: Arc<Health>,
        allowlist: Allowlist,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits: config.limits(),
                limiter: EventLimiter::new(LimiterConfig {
                    per_second: config.rate_limit_per_second,
                    burst: config.rate_limit_burst,
                    network_per_second: config.rate_limit_network_per_second,
                    network_burst: config.rate_limit_network_burst,
                    max_keys: config.rate_limit_max_keys,
                }),
                requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
                body_bytes: Arc::new(Semaphore::new(config.body_budget_bytes())),
                request_metrics: RequestMetrics::default(),
                config,
                producer,
                health,
                allowlist,
                metrics,
            }),
        }
    }

    /// The rate limiter, for periodic housekeeping.
    pub fn limiter(&self) -> &EventLimiter {
        &self.inner.limiter
    }
}

/// The ingest router.
pub fn router(state: AppState) -> Router {
    ROUTES
        .into_iter()
        .fold(Router::new(), |router, (path, serve)| {
            router.route(path, serve())
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cors_and_metrics,
        ))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    let health = &state.inner.health;
    if health.is_ready() {
        "ready".into_response()
    } else if health.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no Kafka broker reachable").into_response()
    }
}

async fn livez(State(state): State<AppState>) -> Response {
    if state.inner.health.is_live() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "producer event loop stalled",
        )
            .into_response()
    }
}

async fn widget() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!(metric::PRODUCER_QUEUE).set(f64::from(state.inner.producer.queue_depth()));
    metrics::gauge!(metric::RATE_LIMIT_KEYS).set(state.inner.limiter.key_count() as f64);
    match &state.inner.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// Any publisher origin may call `/v1/*`: the preflight echoes the origin and
/// the requested headers so that `fetch` with JSON and `sendBeacon` both work.
/// Credentials are never allowed: the widget sends no cookies, and allowing
/// them with an echoed origin would let any site send credentialed requests.
async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("content-type, content-encoding"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

async fn cors_and_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| {
            ROUTES
                .iter()
                .map(|(path, _)| *path)
                .find(|path| *path == p.as_str())
        })
        .unwrap_or("unmatched");
    let method = method_label(request.method());
    let origin = request.headers().get(header::ORIGIN).cloned();
    let started = Instant::now();
    let mut response = next.run(request).await;
    if route.starts_with("/v1/") {
        let h = response.headers_mut();
        match origin {
            Some(origin) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            None => {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
        }
    }
    if method != "OPTIONS" {
        state.inner.request_metrics.record(
            route,
            method,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    response
}

/// Reads a body within the size limit, the body timeout and the byte budget.
/// The permits it returns hold the body's bytes against the budget until the
/// request is answered.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ApiError> {
    let inner = &state.inner;
    let limit = inner.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let deadline = tokio::time::Instant::now() + inner.config.body_read_timeout;
    let mut stream = body.into_data_stream();
    let mut held: Option<OwnedSemaphorePermit> = None;
    // Not sized from Content-Length: a client could announce a megabyte and
    // send a byte, on thousands of connections.
    let mut buffer = bytes::BytesMut::new();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                metrics::counter!(metric::SHED, "reason" => "body_timeout").increment(1);
                ApiError::BodyTimeout
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidBody, "the body could not be read")
        })?;
        if buffer.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        reserve(&inner.body_bytes, &mut held, chunk.len())?;
        buffer.extend_from_slice(&chunk);
    }
    Ok((buffer.freeze(), held))
}

/// Takes `bytes` from the body budget into `held`, or answers 503 at once:
/// waiting would let slow clients queue up memory behind the budget.
fn reserve(
    budget: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
    bytes: usize,
) -> Result<(), ApiError> {
    let Ok(n) = u32::try_from(bytes) else {
        return Err(ApiError::Busy);
    };
    if n == 0 {
        return Ok(());
    }
    let permit = budget.clone().try_acquire_many_owned(n).map_err(|_| {
        metrics::counter!(metric::SHED, "reason" => "busy").increment(1);
        ApiError::Busy
    })?;
    match held {
        Some(held) => held.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

async fn post_events(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = state.inner.limits;
    let (raw, mut held) = read_body(&state, &headers, body).await?;
    let raw_at = raw.as_ptr();
    let json = decode_body(&headers, raw, limits.max_body_bytes)?;
    if json.as_ptr() != raw_at {
        // Inflated or base64-decoded: a second buffer, held as well.
        reserve(&state.inner.body_bytes, &mut held, json.len())?;
    }
    // The body is dropped before the wait for the broker: a request holds
    // only its validated events then, so a slow broker costs less memory.
    let (sent_at, events) = {
        let batch = event::parse_body(&json, &limits)?;
        let events = batch
            .events
            .iter()
            .map(|raw_event| event::validate_raw(raw_event, &limits))
            .collect();
        (batch.sent_at, events)
    };
    drop(json);
    let accepted = accept(&state, peer, &headers, sent_at, events).await?;
    drop(held);
    Ok(Json(accepted).into_response())
}

/// `GET /v1/pixel.gif?publisher=&type=&channel=&url=…`: one event from the query
/// string, for pages where scripts cannot run. Answers a no-store GIF.
async fn pixel(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let mut object = serde_json::Map::new();
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (percent_decode(key), percent_decode(value)) else {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "the query string is not valid percent-encoding",
            ));
        };
        // Times arrive as text; epoch milliseconds become numbers so that the
        // same rules apply as in a JSON body.
        let value = match (key.as_str(), value.parse::<i64>()) {
            ("ts" | "sent_at", Ok(ms)) => json!(ms),
            _ => json!(value),
        };
        let _ = object.insert(key, value);
    }
    let sent_at = object.get("sent_at").cloned();
    let events = vec![event::validate(&serde_json::Value::Object(object))];
    let batch_sent_at = match sent_at {
        Some(value) => event::parse_time(&value, "sent_at")?,
        None => None,
    };
    let _ = accept(&state, peer, &headers, batch_sent_at, events).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL_GIF,
    )
        .into_response())
}

/// The common path of every form: allowlist, rate limit, enrichment, produce.
/// Answers `{"accepted", "rejected"}` only after the broker acknowledged.
async fn accept(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    batch_sent_at: Option<i64>,
    events: Vec<Result<event::ValidEvent, event::EventError>>,
) -> Result<serde_json::Value, ApiError> {
    let inner = &state.inner;
    let _slot = inner.requests.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!(metric::SHED, "reason" => "busy").increment(1);
        ApiError::Busy
    })?;
    if inner.health.broker_known_down() {
        return Err(ApiError::Unavailable {
            retry_after_secs: 5,
            detail: "no Kafka broker reachable".into(),
        });
    }
    let received_at = chrono::Utc::now().timestamp_millis();
    let forwarded_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = enrich::client_ip(peer.ip(), forwarded_for, &inner.config.trusted_proxies);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let enrichment = Enrichment {
        received_at,
        batch_sent_at,
        max_future_skew_ms: i64::try_from(inner.config.max_future_skew.as_millis())
            .unwrap_or(i64::MAX),
        device: enrich::device_class(user_agent),
        ip_prefix: Some(enrich::anonymize(ip)),
    };

    let mut valid = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (index, result) in events.into_iter().enumerate() {
        let checked =
            result.and_then(
                |event| match inner.allowlist.check(&event.publisher, &event.url) {
                    Verdict::Allowed => Ok(event),
                    Verdict::Observed => {
                        metrics::counter!(metric::UNKNOWN_PUBLISHER).increment(1);
                        Ok(event)
                    }
                    Verdict::OffDomainObserved => {
                        metrics::counter!(metric::DOMAIN_MISMATCH).increment(1);
                        Ok(event)
                    }
                    Verdict::Rejected => Err(event::EventError {
                        code: ErrorCode::UnknownPublisher,
                        message: format!("publisher `{}` is not registered", event.publisher),
                        field: Some("publisher"),
                    }),
                    Verdict::OffDomainRejected => {
                        metrics::counter!(metric::DOMAIN_MISMATCH).increment(1);
                        Err(event::EventError {
                            code: ErrorCode::DomainMismatch,
                            message: format!(
                                "the page is not on publisher `{}`'s registered domain",
                                event.publisher
                            ),
                            field: Some("url"),
                        })
                    }
                },
            );
        match checked {
            Ok(event) => valid.push(event),
            Err(error) => {
                metrics::counter!(metric::EVENTS_REJECTED, "reason" => error.code.as_str())
                    .increment(1);
                rejected.push((index, error));
            }
        }
    }
    let rejected_json: Vec<_> = rejected
        .iter()
        .map(|(index, e)| json!({"index": index, "code": e.code.as_str(), "message": e.message, "field": e.field}))
        .collect();
    if valid.is_empty() {
        // Nothing to store: the request as a whole is a client error, and the
        // per-index list still tells a batching client what was wrong.
        let first = rejected.into_iter().next().map(|(_, e)| e).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::EmptyBatch, "the batch has no events")
        })?;
        return Err(ApiError::AllRejected {
            first,
            rejected: rejected_json,
        });
    }

    let mut per_publisher: BTreeMap<&str, u32> = BTreeMap::new();
    for event in &valid {
        *per_publisher.entry(event.publisher.as_str()).or_insert(0) += 1;
    }
    let per_publisher: Vec<(&str, u32)> = per_publisher.into_iter().collect();
    if let Err(wait) = inner.limiter.check(ip, &per_publisher) {
        metrics::counter!(metric::RATE_LIMITED).increment(1);
        return Err(ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }

    let records: Vec<EventRecord> = valid
        .into_iter()
        .map(|v| normalize(v, &enrichment))
        .collect();
    let accepted = records.len();
    if let Err(error) = inner.producer.produce(records).await {
        metrics::counter!(metric::PRODUCE_FAILURES).increment(1);
        let retry_after_secs = match error {
            ProduceError::QueueFull => 1,
            ProduceError::Delivery(_) => 2,
        };
        return Err(ApiError::Unavailable {
            retry_after_secs,
            detail: error.to_string(),
        });
    }
    metrics::counter!(metric::EVENTS_ACCEPTED).increment(accepted as u64);
    Ok(json!({"accepted": accepted, "rejected": rejected_json}))
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    /// Item 5: bodies draw on one byte budget; over it a request is refused
    /// at once (not queued), and a finished request gives its bytes back.
    #[test]
    fn item5_body_bytes_come_from_one_budget() {
        let budget = Arc::new(Semaphore::new(10));
        let mut first = None;
        reserve(&budget, &mut first, 4).unwrap();
        reserve(&budget, &mut first, 2).unwrap();
        let mut second = None;
        assert!(matches!(
            reserve(&budget, &mut second, 5),
            Err(ApiError::Busy)
        ));
        reserve(&budget, &mut second, 4).unwrap();
        assert_eq!(budget.available_permits(), 0);
        drop(first);
        assert_eq!(budget.available_permits(), 6);
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
