//! `sqi process`: the Kafka consumer group that turns normalised events into the
//! lake's `aggregates`, `url_counts` and `events` tables, exactly once.
//!
//! It owns the offset-to-file protocol. Records are read per partition into
//! event-time hour windows ([`window`]), deduplicated by `event_id`
//! ([`dedup`]), and closed into offset ranges. Each range is claimed in the
//! lake's range log before its files are written ([`range_log`]), so every
//! writer of a range writes the same files, and a restart or a new owner
//! resumes from the log, not from Kafka's committed offset. Hours that can no
//! longer change get completeness markers ([`completeness`]). Records that
//! break the contract, or come later than the allowed lateness, go to the
//! dead-letter topic with their origin ([`dlq`]); nothing is dropped.
//!
//! It must not serve reports or compute the SQI, and writes only the three
//! table prefixes, `_processor/` and `_completeness/`.

mod admin;
pub mod completeness;
pub mod config;
pub mod consumer;
pub mod dedup;
pub mod dlq;
pub mod error;
mod kafka;
pub mod metric;
pub mod partition;
pub mod range_log;
pub mod sink;
pub mod window;
mod writer;

pub use config::ProcessorConfig;
pub use consumer::Processor;
pub use error::{Error, Result};
pub use metric::Progress;
