//! Typed ingest configuration: every flag has an `SQI_*` environment variable.
//!
//! What ingest may hold is derived from one figure, `--memory-limit` (the
//! pod's limit): a quarter each for librdkafka's queue, request bodies and
//! open connections, leaving the rest for the process itself.

use std::time::Duration;

use sqi_kafka::KafkaArgs;
use sqi_schemas::cli::{defaults_with, parse_bytes, parse_duration};
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
    /// Events per second allowed per (client network, publisher); 0 turns
    /// rate limiting off altogether, the network limit included.
    /// A client network is an IPv4 address or an IPv6 /64.
    #[arg(long, env = "SQI_RATE_LIMIT_PER_SECOND", default_value_t = 100)]
    pub rate_limit_per_second: u32,
    /// Burst allowance per (client network, publisher), in events.
    #[arg(long, env = "SQI_RATE_LIMIT_BURST", default_value_t = 1000)]
    pub rate_limit_burst: u32,
    /// Events per second allowed per client network over all publishers; 0 turns this limit off.
    #[arg(long, env = "SQI_RATE_LIMIT_NETWORK_PER_SECOND", default_value_t = 300)]
    pub rate_limit_network_per_second: u32,
    /// Burst allowance per client network, in events.
    #[arg(long, env = "SQI_RATE_LIMIT_NETWORK_BURST", default_value_t = 3000)]
    pub rate_limit_network_burst: u32,
    /// Most rate-limit buckets held; when all are in use, new clients share one.
    #[arg(long, env = "SQI_RATE_LIMIT_MAX_KEYS", default_value_t = DEFAULT_RATE_LIMIT_MAX_KEYS)]
    pub rate_limit_max_keys: usize,
    /// Event times later than receive time plus this are clamped to receive
    /// time (the original is kept in `props._original_ts`).
    #[arg(long, env = "SQI_MAX_FUTURE_SKEW", default_value = "5m", value_parser = parse_duration)]
    pub max_future_skew: Duration,
    /// The pod's memory limit, in bytes or with a KiB/MiB/GiB (Ki/Mi/Gi)
    /// suffix; librdkafka's queue, request bodies and connections get a
    /// quarter of it each. Deployments set it from the container's limit.
    #[arg(long, env = "SQI_MEMORY_LIMIT", default_value = "512MiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Sockets served at once; further clients wait in the accept queue.
    /// Default: a quarter of `--memory-limit` at 32 KiB a connection.
    #[arg(long, env = "SQI_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// `/v1` requests handled at once; more get 503 `server_busy`.
    #[arg(long, env = "SQI_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
    /// Time for a request's headers to arrive; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "SQI_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time for a request's body to arrive once its headers have; then 408 and the connection closes.
    #[arg(long, env = "SQI_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
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

/// Default of `--rate-limit-max-keys`: about 5 MiB of buckets.
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;

/// Default of `--max-concurrent-requests`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// What an open connection costs ingest at most while it sends a request
/// head (hyper's buffers, the connection's task): the unit of the default
/// `--max-connections`. Measured with the slowloris test, with headroom.
pub const CONNECTION_BYTES: u64 = 32 * 1024;

impl IngestConfig {
    /// A configuration for tests and the demo: given brokers and topic, an
    /// ephemeral loopback port, no rate limit, no allowlist and no drain
    /// delay; every other setting at its flag's default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        // Not a request path: tests and the demo call this once, at start.
        // No caller's value goes through the parser, so it cannot fail on
        // one: it parses nothing but this type's own defaults, which fail
        // only if the flag definitions are broken, and
        // `new_has_the_flags_defaults` runs it on every test run.
        #[allow(clippy::expect_used)]
        let mut config: Self = defaults_with(&[]).expect("ingest's own defaults parse");
        config.kafka.brokers = brokers.into();
        config.kafka.topic = topic.into();
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.drain_delay = Duration::ZERO;
        config.rate_limit_per_second = 0;
        config.rate_limit_burst = 0;
        config.rate_limit_network_per_second = 0;
        config.rate_limit_network_burst = 0;
        config
    }

    /// A quarter of the memory limit.
    fn memory_share(&self) -> u64 {
        self.memory_limit / 4
    }

    /// Sockets served at once: `--max-connections`, or a quarter of the
    /// memory limit at [`CONNECTION_BYTES`] each.
    pub fn connection_limit(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| {
                usize::try_from(self.memory_share() / CONNECTION_BYTES).unwrap_or(usize::MAX)
            })
            .max(1)
    }

    /// Body bytes held at once by all requests: a quarter of the memory
    /// limit, and always enough for one largest body, raw and inflated.
    pub fn body_budget_bytes(&self) -> usize {
        usize::try_from(self.memory_share())
            .unwrap_or(usize::MAX)
            .max(self.max_body_bytes.saturating_mul(2))
            .min(tokio::sync::Semaphore::MAX_PERMITS)
    }

    /// librdkafka's `queue.buffering.max.kbytes`: a quarter of the memory limit.
    pub fn producer_queue_kbytes(&self) -> u64 {
        (self.memory_share() / 1024).max(1024)
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

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: IngestConfig,
    }

    /// `new` takes every default from the flags, overriding only what it
    /// says it does.
    #[test]
    fn new_has_the_flags_defaults() {
        let parsed = Cli::try_parse_from(["ingest"]).unwrap().config;
        let new = IngestConfig::new("127.0.0.1:9092", "share-events");
        assert_eq!(new.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(new.kafka.topic, "share-events");
        assert_eq!(new.listen, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(
            (new.drain_delay, new.rate_limit_per_second),
            (Duration::ZERO, 0)
        );
        let overridden = IngestConfig {
            kafka: parsed.kafka.clone(),
            listen: parsed.listen,
            drain_delay: parsed.drain_delay,
            rate_limit_per_second: parsed.rate_limit_per_second,
            rate_limit_burst: parsed.rate_limit_burst,
            rate_limit_network_per_second: parsed.rate_limit_network_per_second,
            rate_limit_network_burst: parsed.rate_limit_network_burst,
            ..new
        };
        assert_eq!(format!("{overridden:?}"), format!("{parsed:?}"));
        // The flag's default is the contract's bound (`record::normalize`).
        assert_eq!(
            parsed.max_future_skew.as_millis(),
            u128::from(sqi_schemas::record::MAX_FUTURE_SKEW_MS.unsigned_abs())
        );
    }

    #[test]
    fn the_memory_limit_is_shared_out() {
        let config = IngestConfig::new("b", "t");
        assert_eq!(config.producer_queue_kbytes(), 128 * 1024);
        assert_eq!(config.body_budget_bytes(), 128 << 20);
        assert_eq!(config.connection_limit(), 4096);
    }
}
