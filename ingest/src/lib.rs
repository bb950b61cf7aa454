//! `sqi ingest`: the HTTP front door for publishers' widgets.
//!
//! It owns request decoding (JSON, beacon `text/plain`, form base64, gzip),
//! per-event validation with partial acceptance, enrichment (receive time,
//! clock-skew correction, device class, anonymised IP), and producing the
//! normalised record to Kafka. Its one promise: a `200` means the broker has
//! acknowledged every accepted event; anything less is a `503` the client can
//! retry with the same `event_id`s.
//!
//! It must not aggregate, store, or look at the lake; that is the processor's job.

pub mod config;
pub mod enrich;
pub mod error;
pub mod http;
pub mod producer;

use std::future::Future;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use config::IngestConfig;
pub use error::{Error, Result};

/// Serves ingest on `listener` until `shutdown` resolves, then flushes the producer.
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let producer = producer::EventProducer::new(&config)?;
    let state = http::AppState::new(config, producer.clone(), metrics);
    let app = http::router(state.clone());
    tracing::info!(addr = %listener.local_addr().map_err(Error::Io)?, "ingest listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        state.begin_shutdown();
    })
    .await
    .map_err(Error::Io)?;
    producer.flush().await;
    tracing::info!("ingest stopped; producer flushed");
    Ok(())
}
