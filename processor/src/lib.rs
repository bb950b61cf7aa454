//! `sqi process`: the Kafka consumer group that turns normalised events into the
//! lake's `aggregates`, `url_counts` and `events` tables.
//!
//! It owns the offset-to-file protocol: records are buffered per partition
//! ([`window`]), written as Parquet named after their offset range ([`sink`]),
//! and only then are the offsets committed. Records that break the contract go
//! to the dead-letter topic with their origin ([`dlq`]); nothing is dropped.
//!
//! It must not serve reports or compute the SQI, and never writes outside the
//! three prefixes it owns.

pub mod config;
pub mod consumer;
pub mod dlq;
pub mod error;
pub mod sink;
pub mod window;

pub use config::ProcessorConfig;
pub use consumer::{Processor, Progress};
pub use error::{Error, Result};
