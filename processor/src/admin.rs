//! The processor's admin endpoints: `/livez`, `/readyz` (consuming, and the
//! dead-letter topic taking letters) and `/metrics`.
//!
//! Owns: the router. Must not touch: the consumer loop's state beyond the
//! readiness flag it is handed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dlq::DeadLetters;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) metrics: Option<PrometheusHandle>,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                // A dead-letter topic that fails is an outage of this
                // processor: its partitions stop where a dead letter waits.
                if s.ready.load(Ordering::SeqCst) && !s.dead_letters.unavailable() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                match s.metrics {
                    Some(handle) => (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                        .into_response(),
                    None => Response::new(axum::body::Body::from("")),
                }
            }),
        )
        .with_state(state)
}
