//! How the demo waits for the processor: a sender holds back while too much
//! it has sent is unread (the mock cluster deletes old records), and the
//! demo waits for every acknowledged event to be committed to the lake.
//! Neither waits forever: a counter that stops moving ends either wait, and
//! records gone before they were read end the wait for commits at once,
//! each with an error that names both numbers.
//!
//! It only watches the processor's progress counters; it must not send,
//! read the lake, or stop anything.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqi_processor::Progress;

use crate::error::{Error, Result};

/// How many acknowledged events may wait unread in the mock cluster. It
/// keeps only the newest 5 MB of each partition (`rdkafka_mock.c`), so a
/// sender that ran ahead of the processor had records deleted before they
/// were read: 20,000 events over 4 partitions stay far below that.
const UNREAD_WINDOW: u64 = 20_000;

/// How long the processor may make no progress at all before the demo
/// gives up with the numbers, instead of waiting for a count it cannot reach.
pub(super) const STALLED_AFTER: Duration = Duration::from_secs(60);

/// Tells when a counter has not moved for a while.
struct Stall {
    last: u64,
    since: Instant,
}

impl Stall {
    fn new(value: u64) -> Self {
        Self {
            last: value,
            since: Instant::now(),
        }
    }

    /// Whether `value` is still what it was `after` ago.
    fn stalled(&mut self, value: u64, after: Duration) -> bool {
        if value != self.last {
            *self = Self::new(value);
            return false;
        }
        self.since.elapsed() >= after
    }
}

/// Waits until the processor has read all but [`UNREAD_WINDOW`] of the
/// `acknowledged` events; an error if it reads nothing for `stalled_after`.
pub(super) async fn await_reader(
    progress: &Progress,
    acknowledged: u64,
    stalled_after: Duration,
) -> Result<()> {
    let mut stall = Stall::new(progress.records_read.load(Ordering::Relaxed));
    loop {
        let read = progress.records_read.load(Ordering::Relaxed);
        if acknowledged.saturating_sub(read) <= UNREAD_WINDOW {
            return Ok(());
        }
        if stall.stalled(read, stalled_after) {
            return Err(Error::Invalid(format!(
                "ingest acknowledged {acknowledged} events but the processor has read only \
                 {read}, and read nothing for {} s",
                stalled_after.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every acknowledged event is committed to the lake. Any
/// shortfall ends in an error naming both numbers: at once when records
/// were deleted before the processor read them, or after `stalled_after`
/// with no progress.
pub(super) async fn await_committed(
    progress: &Progress,
    acknowledged: u64,
    stalled_after: Duration,
) -> Result<()> {
    let shortfall = |committed: u64, why: String| {
        Error::Invalid(format!(
            "ingest acknowledged {acknowledged} events but the processor committed {committed}: {why}"
        ))
    };
    let mut stall = Stall::new(progress.committed_records.load(Ordering::Relaxed));
    loop {
        let committed = progress.committed_records.load(Ordering::Relaxed);
        if committed >= acknowledged {
            return Ok(());
        }
        let absent = progress.offsets_absent.load(Ordering::Relaxed);
        if absent > 0 {
            return Err(shortfall(
                committed,
                format!("{absent} records were gone from the broker before they were read"),
            ));
        }
        if stall.stalled(committed, stalled_after) {
            return Err(shortfall(
                committed,
                format!("no progress for {} s", stalled_after.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_processor_that_stops_short_ends_the_demo_with_both_numbers() {
        let progress = Progress::default();
        progress.committed_records.store(900, Ordering::Relaxed);
        let started = Instant::now();
        let error = await_committed(&progress, 1_000, SHORT)
            .await
            .expect_err("a shortfall is an error");
        let message = error.to_string();
        assert!(
            message.contains("acknowledged 1000") && message.contains("committed 900"),
            "{message}"
        );
        assert!(started.elapsed() < SHORT * 10, "the wait was not bounded");
    }

    #[tokio::test]
    async fn records_deleted_before_they_were_read_end_the_demo_at_once() {
        let progress = Progress::default();
        progress.committed_records.store(400, Ordering::Relaxed);
        progress.offsets_absent.store(108_000, Ordering::Relaxed);
        let error = await_committed(&progress, 1_000, Duration::from_secs(3600))
            .await
            .expect_err("lost records are an error");
        assert!(
            error.to_string().contains("108000 records were gone"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn every_event_committed_ends_the_wait() {
        let progress = Progress::default();
        progress.committed_records.store(1_000, Ordering::Relaxed);
        await_committed(&progress, 1_000, SHORT).await.unwrap();
    }

    #[tokio::test]
    async fn a_sender_waits_while_too_much_is_unread_and_gives_up_if_nothing_moves() {
        let progress = Progress::default();
        progress.records_read.store(5, Ordering::Relaxed);
        await_reader(&progress, UNREAD_WINDOW + 5, SHORT)
            .await
            .unwrap();
        let error = await_reader(&progress, UNREAD_WINDOW + 6, SHORT)
            .await
            .expect_err("an idle reader is an error");
        assert!(error.to_string().contains("read only 5"), "{error}");
    }
}
