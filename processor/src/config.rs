//! Typed processor configuration; every flag has an `SQI_*` environment variable.

use std::time::Duration;

use sqi_kafka::KafkaArgs;
use sqi_schemas::cli::{LakeArgs, defaults_with, parse_bytes, parse_duration};

use crate::error::{Error, Result};

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
    /// The consumer group protocol: `classic` (cooperative-sticky assignment,
    /// session timeout set by the client) or `consumer` (KIP-848, GA in Kafka
    /// 4: the broker assigns partitions and owns the session timeout).
    #[arg(long, env = "SQI_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Classic)]
    pub group_protocol: GroupProtocol,
    /// How long the group waits for a member that stopped heartbeating
    /// (killed, frozen, cut off) before its partitions go to the others,
    /// under the classic protocol (under `consumer`, the broker's
    /// `group.consumer.session.timeout.ms` decides). librdkafka's default,
    /// 45 s, held a member started right after a crash loop for as long:
    /// every killed member kept its partitions, and held up each rebalance,
    /// until its session ran out. The heartbeat is a third of it, at most 3 s.
    #[arg(long, env = "SQI_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Where malformed and too-late records go, with their origin and the reason.
    #[arg(long, env = "SQI_DLQ_TOPIC", default_value = "share-events-dlq")]
    pub dlq_topic: String,
    /// Close a partition's open range and write its files once it is this old,
    /// whether or not new records arrive (the rotation deadline).
    #[arg(long, env = "SQI_MAX_FILE_AGE", default_value = "5m", value_parser = parse_duration)]
    pub max_file_age: Duration,
    /// A partition whose newest record was received more than `--max-file-age`
    /// ago is catching up on a backlog: its open range closes once it is this
    /// old (when that is shorter than `--max-file-age`). So a backlog reaches
    /// the lake as it is read, not all at once when the partition goes idle,
    /// and a member killed soon after it started has still written ranges.
    #[arg(long, env = "SQI_CATCH_UP_FILE_AGE", default_value = "10s", value_parser = parse_duration)]
    pub catch_up_file_age: Duration,
    /// Close a partition's open range early once its `events` file would reach
    /// about this many bytes (estimated from the buffered record bytes).
    #[arg(long, env = "SQI_TARGET_FILE_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub target_file_bytes: u64,
    /// A partition that delivers nothing for this long while caught up is idle:
    /// its open range is written at once and its watermark follows the wall
    /// clock, so its hours still close and get their completeness markers.
    #[arg(long, env = "SQI_IDLE_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How far behind its partition's latest event time an event may be and
    /// still be counted; later ones go to the dead-letter topic.
    #[arg(long, env = "SQI_ALLOWED_LATENESS", default_value = "2h", value_parser = parse_duration)]
    pub allowed_lateness: Duration,
    /// A repeated `event_id` is counted once if it comes back within this much
    /// receive time of the partition's latest receive time (the client retry
    /// horizon), whatever its event time. Must exceed `--future-bound`.
    #[arg(long, env = "SQI_DEDUP_HORIZON", default_value = "30m", value_parser = parse_duration)]
    pub dedup_horizon: Duration,
    /// How far a record's event time may be ahead of its receive time, and
    /// its receive time ahead of its Kafka timestamp; beyond that it goes to
    /// the dead-letter topic, so no record moves the watermark further than
    /// this past the moment it was received. The same bound ingest clamps to.
    #[arg(long, env = "SQI_FUTURE_BOUND", default_value = "5m", value_parser = parse_duration)]
    pub future_bound: Duration,
    /// Pause consumption while this many events wait to be written (open
    /// ranges plus closed ones not yet in the lake); resume below half of it.
    #[arg(long, env = "SQI_MAX_BUFFERED_EVENTS", default_value_t = 2_000_000)]
    pub max_buffered_events: usize,
    /// The memory this processor may use beyond its own code and runtime
    /// (its container's limit less that), in bytes or with a KiB/MiB/GiB
    /// suffix. Records waiting to be written may hold a quarter of it in
    /// record bytes: past that, consumption pauses and the open ranges are
    /// written at once. The rest is for what those bytes cost at their peak
    /// (Arrow builders growing by doubling, then Parquet encoding: about three
    /// times the record bytes, measured), the dedup ids and librdkafka's
    /// buffers (16 MiB of prefetch).
    #[arg(long, env = "SQI_MEMORY_BUDGET", default_value = "2GiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    /// Concurrent lake writers; a partition always goes to the same one, so
    /// its ranges are written in order.
    #[arg(long, env = "SQI_WRITERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub writers: u16,
    /// The admin listener: `/livez`, `/readyz`, `/metrics`.
    #[arg(long, env = "SQI_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: std::net::SocketAddr,
}

/// How the processor's consumer group assigns partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// The classic rebalance protocol, with cooperative-sticky assignment.
    Classic,
    /// KIP-848's consumer protocol (`group.protocol=consumer`).
    Consumer,
}

impl ProcessorConfig {
    /// A configuration for tests and the demo: given brokers, topic (its
    /// dead-letter topic `{topic}-dlq`) and lake, quick rotation and idling,
    /// a smaller event buffer and an ephemeral loopback port; every other
    /// setting at its flag's default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, lake: LakeArgs) -> Self {
        let topic = topic.into();
        // Not a record path: tests and the demo call this once, at start.
        // The two required flags get fixed placeholders, replaced below: no
        // caller's value goes through the parser, so it can fail only if this
        // type's own flags are broken, and `new_has_the_flags_defaults` runs
        // it on every test run.
        #[allow(clippy::expect_used)]
        let mut config: Self = defaults_with(&["--topic", "unset", "--lake-url", "memory://"])
            .expect("the processor's own defaults parse");
        config.kafka.brokers = brokers.into();
        config.lake = lake;
        config.dlq_topic = format!("{topic}-dlq");
        config.kafka.topic = topic;
        config.max_file_age = Duration::from_secs(1);
        config.idle_timeout = Duration::from_secs(2);
        config.max_buffered_events = 500_000;
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    /// Refuses settings under which dedup cannot do its job. Receive times
    /// may run up to the future bound ahead of the moment a record arrives
    /// (one ingest pod's clock ahead of another's), so a horizon no longer
    /// than that bound could forget an id before its retry can arrive.
    pub fn validate(&self) -> Result<()> {
        if self.dedup_horizon <= self.future_bound {
            return Err(Error::Config(format!(
                "--dedup-horizon ({:?}) must exceed --future-bound ({:?}): retries would be counted twice",
                self.dedup_horizon, self.future_bound
            )));
        }
        Ok(())
    }

    /// The record bytes that may wait to be written: a quarter of the
    /// memory budget (see `memory_budget`).
    pub(crate) fn max_buffered_bytes(&self) -> u64 {
        self.memory_budget / 4
    }

    pub(crate) fn future_bound_ms(&self) -> i64 {
        millis(self.future_bound)
    }

    pub(crate) fn lateness_ms(&self) -> i64 {
        millis(self.allowed_lateness)
    }

    pub(crate) fn dedup_horizon_ms(&self) -> i64 {
        millis(self.dedup_horizon)
    }
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ProcessorConfig,
    }

    /// `new` takes every default from the flags, overriding only what it
    /// says it does.
    #[test]
    fn new_has_the_flags_defaults() {
        let lake = LakeArgs {
            url: "memory://".into(),
            s3_endpoint: None,
        };
        let parsed = Cli::try_parse_from(["process", "--lake-url", "memory://", "--topic", "t"])
            .unwrap()
            .config;
        let new = ProcessorConfig::new("127.0.0.1:9092", "t", lake);
        assert_eq!(new.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(new.dlq_topic, "t-dlq");
        assert_eq!(new.max_file_age, Duration::from_secs(1));
        let overridden = ProcessorConfig {
            kafka: parsed.kafka.clone(),
            dlq_topic: parsed.dlq_topic.clone(),
            max_file_age: parsed.max_file_age,
            idle_timeout: parsed.idle_timeout,
            max_buffered_events: parsed.max_buffered_events,
            listen: parsed.listen,
            ..new
        };
        assert_eq!(format!("{overridden:?}"), format!("{parsed:?}"));
        assert!(parsed.validate().is_ok());
    }
}
