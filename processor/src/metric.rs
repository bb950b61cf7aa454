//! The processor's metric names and progress counters.
//!
//! Names follow the project's one rule (`DEVELOPERS.md`, "Metrics"):
//! `sqi_<role>_<what>[_<unit>]`, `_total` for counters. The loop counts
//! per record in plain integers and publishes them each tick, since a metric
//! lookup per record costs more than a duplicate's whole handling.
//!
//! Owns: the names, their registration, [`Progress`]. Must not touch: what
//! is measured (the loop and the writers record into these).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Records read from Kafka.
pub const RECORDS: &str = "sqi_processor_records_total";
/// Distinct events whose range is in the lake.
pub const EVENTS_COMMITTED: &str = "sqi_processor_events_committed_total";
/// Repeated `event_id`s counted once.
pub const DUPLICATES: &str = "sqi_processor_duplicate_events_total";
/// Records sent to the dead-letter topic (late ones included).
pub const DEAD_LETTERS: &str = "sqi_processor_dead_letters_total";
/// Events beyond the allowed lateness, sent to the dead-letter topic.
pub const LATE: &str = "sqi_processor_late_events_total";
/// Records whose times are absurd (before 2000, or ahead of their receive
/// time or Kafka timestamp by more than `--future-bound`), sent to the
/// dead-letter topic.
pub const BAD_TIMES: &str = "sqi_processor_bad_time_records_total";
/// Dead letters sent again after a failure.
pub const DLQ_RETRIES: &str = "sqi_processor_dead_letter_retries_total";
/// 1 while dead letters fail or wait unacknowledged (the processor is unready).
pub const DLQ_UNAVAILABLE: &str = "sqi_processor_dead_letter_topic_unavailable";
/// Parquet files written.
pub const FILES: &str = "sqi_processor_files_written_total";
/// Parquet bytes written.
pub const BYTES: &str = "sqi_processor_written_bytes_total";
/// Object store requests that failed and were retried.
pub const STORE_RETRIES: &str = "sqi_processor_store_retries_total";
/// Ranges another writer had claimed first (rebalances, zombies).
pub const CLAIM_CONFLICTS: &str = "sqi_processor_claim_conflicts_total";
/// Re-read ranges that differed from their log entry (must stay 0).
pub const REDO_MISMATCHES: &str = "sqi_processor_redo_mismatches_total";
/// Times reading resumed past offsets the partition does not hold
/// (aborted transactions, compaction, or retention deleting unread records).
pub const OFFSET_GAPS: &str = "sqi_processor_offset_gaps_total";
/// Hours marked complete for the whole topic.
pub const HOURS_COMPLETED: &str = "sqi_processor_hours_completed_total";
/// Records between the partition's high watermark and the committed offset.
pub const LAG_COMMITTED: &str = "sqi_processor_consumer_lag_committed_records";
/// Records between the partition's high watermark and the read position.
pub const LAG_READ: &str = "sqi_processor_consumer_lag_read_records";
/// Wall-clock seconds behind the partition watermark.
pub const WATERMARK_LAG: &str = "sqi_processor_watermark_lag_seconds";
/// Events and dead letters read and waiting to be written (bounded by
/// `--max-buffered-events`).
pub const BUFFERED: &str = "sqi_processor_buffered_events";
/// Bytes of the records read and not yet written (bounded by a quarter
/// of `--memory-budget`).
pub const BUFFERED_BYTES: &str = "sqi_processor_buffered_bytes";
/// 1 while consumption is paused because writes are behind.
pub const PAUSED: &str = "sqi_processor_backpressure_paused";

/// Registers every metric without per-partition labels, so that a
/// dashboard shows 0, not "no data", before the first event. Adding zero
/// leaves any value already recorded as it was.
pub(crate) fn register() {
    for counter in [
        RECORDS,
        EVENTS_COMMITTED,
        DUPLICATES,
        DEAD_LETTERS,
        LATE,
        BAD_TIMES,
        DLQ_RETRIES,
        FILES,
        BYTES,
        STORE_RETRIES,
        CLAIM_CONFLICTS,
        REDO_MISMATCHES,
        OFFSET_GAPS,
        HOURS_COMPLETED,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for gauge in [DLQ_UNAVAILABLE, BUFFERED, BUFFERED_BYTES, PAUSED] {
        metrics::gauge!(gauge).increment(0.0);
    }
}

/// Counters the demo and tests read to know how far the processor has got.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records taken from Kafka into an open range (each offset once per
    /// reading; a range read again after a restart counts again). A
    /// producer on a broker with a bounded log (the demo's mock cluster)
    /// paces itself on this.
    pub records_read: AtomicU64,
    /// Offsets the processor expected but the partition no longer had:
    /// records deleted before they were read (retention, a bounded log), or
    /// offsets that never held one (aborted transactions, compaction).
    pub offsets_absent: AtomicU64,
    /// Records (good, repeated or dead-lettered) whose range is in the lake.
    pub committed_records: AtomicU64,
    /// Distinct events in written ranges.
    pub committed_events: AtomicU64,
    /// Records sent to the dead-letter topic (late events included).
    pub dead_letters: AtomicU64,
    /// Events beyond the allowed lateness.
    pub late: AtomicU64,
    /// Parquet files written.
    pub files_written: AtomicU64,
    /// Parquet bytes written.
    pub bytes_written: Arc<AtomicU64>,
    /// Ranges another writer had claimed first.
    pub conflicts: AtomicU64,
}
