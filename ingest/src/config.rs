//! Typed ingest configuration: every flag has an `SQI_*` environment variable.

use std::time::Duration;

use sqi_schemas::cli::{KafkaArgs, parse_duration};
use sqi_schemas::event::Limits;

use crate::enrich::Cidr;

/// `sqi ingest` configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Where to listen.
    #[arg(long, env = "SQI_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// How long the broker has to acknowledge a request's events before it gets 503.
    #[arg(long, env = "SQI_DELIVERY_TIMEOUT", default_value = "1500ms", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// Largest body, after decompression, in bytes.
    #[arg(long, env = "SQI_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most events in one request.
    #[arg(long, env = "SQI_MAX_EVENTS", default_value_t = Limits::default().max_events)]
    pub max_events: usize,
    /// Largest single event, in bytes.
    #[arg(long, env = "SQI_MAX_EVENT_BYTES", default_value_t = Limits::default().max_event_bytes)]
    pub max_event_bytes: usize,
    /// Proxies whose `X-Forwarded-For` is believed, comma-separated CIDRs.
    #[arg(long, env = "SQI_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
}

impl IngestConfig {
    /// A configuration for tests and the demo: given brokers and topic, defaults otherwise.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            kafka: KafkaArgs {
                brokers: brokers.into(),
                topic: topic.into(),
                extra: Vec::new(),
            },
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            delivery_timeout: Duration::from_millis(1500),
            max_body_bytes: Limits::default().max_body_bytes,
            max_events: Limits::default().max_events,
            max_event_bytes: Limits::default().max_event_bytes,
            trusted_proxies: Vec::new(),
        }
    }

    /// The request limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_events: self.max_events,
            max_event_bytes: self.max_event_bytes,
        }
    }
}
