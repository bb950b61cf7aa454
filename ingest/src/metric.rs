//! What ingest measures: the metric names, by the rule in `DEVELOPERS.md`
//! ("Metrics"), the ones registered up front, and the handles of the
//! per-request metrics.
//!
//! Every label comes from a bounded set (a route of the router, a method
//! name, a status, a reason code): nothing a client sends becomes a label as
//! it is, so a client cannot grow the number of time series.

use axum::http::Method;

/// Requests, labelled by matched route, method and status.
pub const REQUESTS: &str = "sqi_ingest_http_requests_total";
/// Request latency in seconds, labelled by route.
pub const REQUEST_SECONDS: &str = "sqi_ingest_http_request_duration_seconds";
/// Events acknowledged by the broker.
pub const EVENTS_ACCEPTED: &str = "sqi_ingest_events_accepted_total";
/// Events refused, labelled by reason code.
pub const EVENTS_REJECTED: &str = "sqi_ingest_events_rejected_total";
/// Requests answered 503 because the broker did not acknowledge.
pub const PRODUCE_FAILURES: &str = "sqi_ingest_produce_failures_total";
/// Messages in the producer's local queue.
pub const PRODUCER_QUEUE: &str = "sqi_ingest_producer_queue_messages";
/// Seconds from producing a request's events to the last acknowledgement.
pub const DELIVERY_SECONDS: &str = "sqi_ingest_delivery_duration_seconds";
/// Events from publishers not on the allowlist (observe mode: accepted anyway).
pub const UNKNOWN_PUBLISHER: &str = "sqi_ingest_unknown_publisher_events_total";
/// Producers replaced after the broker refused their idempotence state.
pub const PRODUCER_RESETS: &str = "sqi_ingest_producer_resets_total";
/// Requests refused by the rate limit.
pub const RATE_LIMITED: &str = "sqi_ingest_rate_limited_requests_total";
/// Buckets the rate limiter holds (bounded by `--rate-limit-max-keys`).
pub const RATE_LIMIT_KEYS: &str = "sqi_ingest_rate_limit_keys";
/// Events whose page is not on their publisher's registered domain.
pub const DOMAIN_MISMATCH: &str = "sqi_ingest_domain_mismatch_events_total";
/// Connections open now.
pub const OPEN_CONNECTIONS: &str = "sqi_ingest_open_connections";
/// Requests refused before their events were read, labelled by reason
/// (`busy`: over the request cap or body budget; `body_timeout`).
pub const SHED: &str = "sqi_ingest_shed_requests_total";

/// Registers the metrics whose labels are known up front, so that a
/// dashboard shows 0, not "no data", before the first event. Adding zero
/// leaves any value already recorded as it was.
pub(crate) fn register() {
    for counter in [
        EVENTS_ACCEPTED,
        PRODUCE_FAILURES,
        UNKNOWN_PUBLISHER,
        PRODUCER_RESETS,
        RATE_LIMITED,
        DOMAIN_MISMATCH,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for reason in ["busy", "body_timeout"] {
        metrics::counter!(SHED, "reason" => reason).increment(0);
    }
    for gauge in [PRODUCER_QUEUE, RATE_LIMIT_KEYS, OPEN_CONNECTIONS] {
        metrics::gauge!(gauge).increment(0.0);
    }
}

/// Handles of the per-request metrics by route, method and status. A
/// labelled metric looked up in the registry on every request (its key built,
/// hashed and compared) cost about a microsecond, a tenth of an answer to
/// `GET /livez`. The keys are few and bounded: the router's routes (anything
/// else is `unmatched`), [`method_label`]'s names, and the statuses this
/// server answers with.
#[derive(Default)]
pub(crate) struct RequestMetrics {
    handles: std::sync::RwLock<std::collections::HashMap<RequestLabels, RequestHandles>>,
}

/// Route, method and status.
type RequestLabels = (&'static str, &'static str, u16);
/// The request counter and the duration histogram of one [`RequestLabels`].
type RequestHandles = (metrics::Counter, metrics::Histogram);

impl RequestMetrics {
    pub(crate) fn record(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        let key = (route, method, status);
        let cached = self
            .handles
            .read()
            .ok()
            .and_then(|handles| handles.get(&key).cloned());
        let (requests, duration) = cached.unwrap_or_else(|| {
            let handles = (
                metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status.to_string()),
                metrics::histogram!(REQUEST_SECONDS, "route" => route),
            );
            if let Ok(mut cache) = self.handles.write() {
                let _ = cache.insert(key, handles.clone());
            }
            handles
        });
        requests.increment(1);
        duration.record(seconds);
    }
}

/// The method as a metric label: client-chosen methods must not each make a
/// new time series.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}
