//! Typed ingest configuration: every flag has an `SQI_*` environment variable.

use std::time::Duration;

use sqi_schemas::cli::{KafkaArgs, parse_duration};
use sqi_schemas::event::Limits;

use crate::allowlist::AllowlistMode;
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
    /// `/readyz` fails once no broker has been reachable for this long; requests then get 503 at once.
    #[arg(long, env = "SQI_BROKER_UNREADY_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub unready_after: Duration,
    /// `/livez` fails once the producer's event loop has been silent this long.
    #[arg(long, env = "SQI_PRODUCER_STALL_AFTER", default_value = "15s", value_parser = parse_duration)]
    pub stall_after: Duration,
    /// After SIGTERM, keep serving (unready) this long so load balancers stop sending first.
    #[arg(long = "shutdown-drain-delay", env = "SQI_SHUTDOWN_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// Events per second allowed per (publisher, client IP); 0 turns the limit off.
    #[arg(long, env = "SQI_RATE_LIMIT_PER_SECOND", default_value_t = 100)]
    pub rate_limit_per_second: u32,
    /// Burst allowance per (publisher, client IP), in events.
    #[arg(long, env = "SQI_RATE_LIMIT_BURST", default_value_t = 1000)]
    pub rate_limit_burst: u32,
    /// What to do with publishers not on the allowlist.
    #[arg(long, env = "SQI_ALLOWLIST_MODE", value_enum, default_value = "off")]
    pub allowlist_mode: AllowlistMode,
    /// Allowlist file: one publisher per line, or a CSV with a `publisher` column.
    #[arg(
        long,
        env = "SQI_ALLOWLIST_FILE",
        conflicts_with = "allowlist_lake_url"
    )]
    pub allowlist_file: Option<std::path::PathBuf>,
    /// Take the allowlist from this lake's `publishers` table, refreshed every `--allowlist-refresh`.
    #[arg(long, env = "SQI_ALLOWLIST_LAKE_URL")]
    pub allowlist_lake_url: Option<String>,
    /// How often the lake allowlist is re-read.
    #[arg(long, env = "SQI_ALLOWLIST_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub allowlist_refresh: Duration,
    /// An S3-compatible endpoint for `--allowlist-lake-url`.
    #[arg(long = "s3-endpoint", env = "SQI_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

impl IngestConfig {
    /// A configuration for tests and the demo: given brokers and topic, no
    /// rate limit, no allowlist and no drain delay.
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
            unready_after: Duration::from_secs(5),
            stall_after: Duration::from_secs(15),
            drain_delay: Duration::ZERO,
            rate_limit_per_second: 0,
            rate_limit_burst: 0,
            allowlist_mode: AllowlistMode::Off,
            allowlist_file: None,
            allowlist_lake_url: None,
            allowlist_refresh: Duration::from_secs(300),
            s3_endpoint: None,
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
