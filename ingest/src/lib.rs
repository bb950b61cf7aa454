//! `sqi ingest`: the HTTP front door for publishers' widgets.
//!
//! It owns request decoding (JSON, beacon `text/plain`, form base64, gzip, the
//! pixel GET), per-event validation with partial acceptance, abuse control
//! (rate limit per client network, allowlist with publisher domains),
//! enrichment (receive time, clock-skew correction, future times clamped,
//! device class, anonymised IP), the share widget, and producing the
//! normalised record to Kafka. What a client can make it hold is bounded:
//! sockets and header reads in `serve`, bodies and requests in `http`,
//! librdkafka's queue in `producer`, all sized from `--memory-limit`. Its one promise: a `200` means the broker has acknowledged
//! every accepted event; anything less is a `503` the client can retry with the
//! same `event_id`s, answered within the delivery timeout.
//!
//! It must not aggregate, store, or read the lake beyond the optional allowlist.

pub mod allowlist;
pub mod config;
mod decode;
pub mod enrich;
pub mod error;
pub mod health;
pub mod http;
pub mod limiter;
pub mod metric;
pub mod producer;
pub mod serve;

use std::future::Future;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqi_schemas::lake::{Lake, LakeOptions};
use tokio::net::TcpListener;

pub use config::IngestConfig;
pub use error::{Error, Result};

use crate::allowlist::Allowlist;
use crate::health::Health;

/// Serves ingest on `listener` until `shutdown` resolves; then readiness goes
/// false, requests keep being served for the drain delay, in-flight requests
/// finish, and the producer is flushed.
pub async fn run(
    config: IngestConfig,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    metric::register();
    let health = Health::new(config.unready_after, config.stall_after);
    let connection = sqi_kafka::Connection::new(&config.kafka)?;
    connection.ready().await?;
    let producer = producer::EventProducer::new(&config, health.clone(), connection)?;
    let allowlist = start_allowlist(&config).await?;
    let drain_delay = config.drain_delay;
    let connection_limits = serve::ConnectionLimits {
        max_connections: config.connection_limit(),
        header_read_timeout: config.header_read_timeout,
    };
    let state = http::AppState::new(config, producer.clone(), health.clone(), allowlist, metrics);
    let limiter = state.limiter().clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            let _ = tick.tick().await;
            limiter.housekeep();
        }
    });
    let app = http::router(state);
    tracing::info!(addr = %listener.local_addr().map_err(Error::Io)?, "ingest listening");
    serve::serve(listener, app, connection_limits, async move {
        shutdown.await;
        health.begin_shutdown();
        tracing::info!(drain = ?drain_delay, "shutting down: unready, draining");
        tokio::time::sleep(drain_delay).await;
    })
    .await;
    housekeeping.abort();
    producer.flush().await;
    tracing::info!("ingest stopped; producer flushed");
    Ok(())
}

/// Loads the allowlist once (failing start-up if it cannot be read) and keeps a
/// lake-backed one fresh in the background.
async fn start_allowlist(config: &IngestConfig) -> Result<Allowlist> {
    let list = Allowlist::new(config.allowlist_mode);
    if !list.is_enabled() {
        return Ok(list);
    }
    if let Some(path) = &config.allowlist_file {
        let text = std::fs::read_to_string(path).map_err(Error::Io)?;
        list.replace(allowlist::parse_file(&text));
    } else if let Some(url) = &config.allowlist_lake_url {
        let lake = Lake::open(
            url,
            &LakeOptions {
                s3_endpoint: config.s3_endpoint.clone(),
                s3_options: Vec::new(),
            },
        )?;
        let known = allowlist::load_from_lake(&lake)
            .await
            .map_err(Error::Allowlist)?;
        list.replace(known);
        let (refreshed, every) = (list.clone(), config.allowlist_refresh);
        let _refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match allowlist::load_from_lake(&lake).await {
                    Ok(known) => refreshed.replace(known),
                    Err(error) => {
                        tracing::warn!(%error, "allowlist refresh failed; keeping the previous list")
                    }
                }
            }
        });
    } else {
        return Err(Error::Allowlist(
            "--allowlist-mode needs --allowlist-file or --allowlist-lake-url".into(),
        ));
    }
    Ok(list)
}
