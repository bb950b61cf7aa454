//! The librdkafka side of the consumer loop: the client context (logs,
//! statistics, rebalance notices), and where reading stands against a seek.
//!
//! Owns: [`ProcessorContext`], the per-partition offsets librdkafka reports,
//! seeks and the admission of each record by offset. Must not touch: what a
//! record means (`partition`) or the lake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset};
use sqi_kafka::Connection;

use crate::metric;

#[derive(Default)]
pub(crate) struct Notices {
    pub(crate) assigned: Vec<i32>,
    pub(crate) revoked: Vec<i32>,
}

/// Offsets librdkafka reports for one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offsets {
    pub(crate) high: i64,
    pub(crate) read: i64,
    pub(crate) committed: i64,
}

pub(crate) struct ProcessorContext {
    pub(crate) topic: String,
    pub(crate) notices: Arc<Mutex<Notices>>,
    pub(crate) offsets: Arc<Mutex<HashMap<i32, Offsets>>>,
    /// Logs, connection failures and MSK IAM tokens, shared with the
    /// dead-letter producer.
    pub(crate) connection: Connection,
}

impl ClientContext for ProcessorContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.connection.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connection.error(&error, reason);
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> std::result::Result<OAuthToken, Box<dyn std::error::Error>> {
        self.connection.oauth_token()
    }

    fn stats(&self, statistics: Statistics) {
        self.connection.observe(&statistics);
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let Ok(mut offsets) = self.offsets.lock() else {
            return;
        };
        for (partition, p) in &topic.partitions {
            if *partition < 0 || !p.desired || p.hi_offset < 0 {
                continue;
            }
            let label = partition.to_string();
            // A group that has committed nothing yet starts from the earliest
            // record (`auto.offset.reset=earliest`): all of it is lag.
            let committed = if p.committed_offset >= 0 {
                Some(p.committed_offset)
            } else {
                (p.lo_offset >= 0).then_some(p.lo_offset)
            };
            if let Some(committed) = committed {
                metrics::gauge!(metric::LAG_COMMITTED, "partition" => label.clone())
                    .set((p.hi_offset - committed) as f64);
            }
            if p.app_offset >= 0 {
                metrics::gauge!(metric::LAG_READ, "partition" => label)
                    .set((p.hi_offset - p.app_offset) as f64);
            }
            let _ = offsets.insert(
                *partition,
                Offsets {
                    high: p.hi_offset,
                    read: p.app_offset,
                    committed: p.committed_offset,
                },
            );
        }
    }
}

impl ConsumerContext for ProcessorContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance
            && let Ok(mut notices) = self.notices.lock()
        {
            notices
                .revoked
                .extend(partitions.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // A new partition is not paused while it recovers: its records are
        // dropped until recovery seeks to where the range log says, and only
        // that confirmed seek decides where reading resumes. Pausing would
        // save re-fetching at most the bounded prefetch.
        if let Rebalance::Assign(partitions) = rebalance
            && let Ok(mut notices) = self.notices.lock()
        {
            notices
                .assigned
                .extend(partitions.elements().iter().map(|e| e.partition()));
        }
    }
}

/// Where a partition's reading stands against a seek to its expected offset.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SeekState {
    /// No seek since the last record taken.
    None,
    /// librdkafka confirmed the seek: what arrives next is what the broker
    /// holds at or after the offset.
    Done,
    /// The seek failed at this instant; it is tried again.
    Failed(Instant),
}

/// What becomes of a record at `offset` when the partition expects `expected`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The next record in offset order.
    Take,
    /// The first record after a confirmed seek, past `expected`: the offsets
    /// between are not in the partition (aborted transactions, compaction,
    /// retention), so this is the next record there is.
    TakeAfterGap {
        /// The offset the log expected.
        expected: i64,
    },
    /// Before the log's position (already written), or past it while a
    /// failed seek waits to be retried.
    Drop,
    /// Past the log's position with no seek since the last record taken.
    SeekBack {
        /// Where to seek: the log's position.
        expected: i64,
    },
}

pub(crate) fn admit(expected: Option<i64>, offset: i64, seek: SeekState) -> Admission {
    let Some(expected) = expected else {
        return Admission::Take;
    };
    if offset <= expected {
        return if offset == expected {
            Admission::Take
        } else {
            Admission::Drop
        };
    }
    match seek {
        SeekState::Done => Admission::TakeAfterGap { expected },
        SeekState::Failed(at) if at.elapsed() < SEEK_RETRY_EVERY => Admission::Drop,
        SeekState::None | SeekState::Failed(_) => Admission::SeekBack { expected },
    }
}

/// How long records past the expected offset are dropped before a failed seek is retried.
const SEEK_RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long a seek may take to be confirmed. It is a local operation of
/// librdkafka's (no broker round trip), so this only bounds a wedged client.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// Moves reading of `partition` to `offset` and waits until librdkafka
/// confirms it.
///
/// The wait is what makes a gap trustworthy: only a confirmed seek guarantees
/// that no record fetched from the old position is handed out after it
/// (librdkafka's `rd_kafka_seek`), so that a record past `offset` means the
/// offsets between are really absent. Unconfirmed, a stale prefetched record
/// looks exactly like a gap.
pub(crate) fn seek(
    consumer: &StreamConsumer<ProcessorContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> SeekState {
    let started = Instant::now();
    match consumer.seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT) {
        Ok(()) => {
            tracing::debug!(partition, offset, took = ?started.elapsed(), "seek confirmed");
            SeekState::Done
        }
        Err(error) => {
            tracing::info!(partition, offset, %error, "seek failed; will retry");
            SeekState::Failed(Instant::now())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_taken_in_offset_order_from_the_logs_position() {
        assert_eq!(admit(None, 7, SeekState::None), Admission::Take);
        assert_eq!(admit(Some(7), 7, SeekState::Done), Admission::Take);
        assert_eq!(admit(Some(7), 6, SeekState::Done), Admission::Drop);
        assert_eq!(admit(Some(7), 6, SeekState::None), Admission::Drop);
    }

    /// The soak once saw a seek land on offsets the broker did not hold: the
    /// first record after it was past the position, the old rule took it for a
    /// stale prefetched record, dropped records for 5 s, sought again, and
    /// after three rounds went on, past records it had dropped.
    #[test]
    fn past_the_position_seeks_back_unless_a_confirmed_seek_already_did() {
        assert_eq!(
            admit(Some(7), 15, SeekState::None),
            Admission::SeekBack { expected: 7 }
        );
        assert_eq!(
            admit(Some(7), 15, SeekState::Done),
            Admission::TakeAfterGap { expected: 7 }
        );
        let just_failed = SeekState::Failed(Instant::now());
        assert_eq!(admit(Some(7), 15, just_failed), Admission::Drop);
        let failed_long_ago = Instant::now()
            .checked_sub(SEEK_RETRY_EVERY * 2)
            .map_or(SeekState::None, SeekState::Failed);
        assert_eq!(
            admit(Some(7), 15, failed_long_ago),
            Admission::SeekBack { expected: 7 }
        );
    }
}
