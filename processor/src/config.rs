//! Typed processor configuration; every flag has an `SQI_*` environment variable.

use std::time::Duration;

use sqi_schemas::cli::{KafkaArgs, LakeArgs, parse_duration};

/// `sqi process` configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessorConfig {
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The lake.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The consumer group; every processor replica uses the same one.
    #[arg(long, env = "SQI_GROUP_ID", default_value = "sqi-processor")]
    pub group_id: String,
    /// Where malformed records go, with their origin and the reason.
    #[arg(long, env = "SQI_DLQ_TOPIC", default_value = "share-events-dlq")]
    pub dlq_topic: String,
    /// Flush buffered windows to the lake at least this often, even with no new records.
    #[arg(long, env = "SQI_FLUSH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// How far behind its partition's latest event time an event may be and
    /// still be counted; later ones go to the dead-letter topic.
    #[arg(long, env = "SQI_ALLOWED_LATENESS", default_value = "2h", value_parser = parse_duration)]
    pub allowed_lateness: Duration,
    /// Flush early once this many events are buffered (bounds memory).
    #[arg(long, env = "SQI_MAX_BUFFERED_EVENTS", default_value_t = 500_000)]
    pub max_buffered_events: usize,
    /// The admin listener: `/livez`, `/readyz`, `/metrics`.
    #[arg(long, env = "SQI_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: std::net::SocketAddr,
}

impl ProcessorConfig {
    /// A configuration for tests and the demo.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, lake: LakeArgs) -> Self {
        let topic = topic.into();
        Self {
            dlq_topic: format!("{topic}-dlq"),
            kafka: KafkaArgs {
                brokers: brokers.into(),
                topic,
                extra: Vec::new(),
            },
            lake,
            group_id: "sqi-processor".into(),
            flush_interval: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(2 * 3600),
            max_buffered_events: 500_000,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}
