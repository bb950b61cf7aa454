//! A record's way through the loop, and its range's to the writers and
//! back: each record is admitted against the offset expected next (which
//! `kafka::admit` decides: taken, dropped, taken past absent offsets, or
//! sought back to), decided by the partition's core and carried out (a
//! repeat counted, a dead letter queued); each closed range goes with the
//! open range's dead letters to its partition's writer; and each writer's
//! outcome comes back (written: Kafka's offset committed; conflict: the
//! partition recovers again).
//!
//! The decisions are [`crate::partition`]'s; this module must not make
//! any of its own about a record.

use std::sync::atomic::Ordering;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::{Admission, SeekState, admit, seek};
use crate::metric;
use crate::partition::{ClosedRange, Decision, Reason};
use crate::writer::{Held, Job, Outcome, RangeJob};

use super::{Phase, Run};

impl Run<'_> {
    pub(super) fn on_record(&mut self, message: &BorrowedMessage<'_>) {
        let partition = message.partition();
        let offset = message.offset();
        let processor = self.processor;
        let Some(state) = self.partitions.get_mut(&partition) else {
            tracing::debug!(
                partition,
                offset,
                "dropping a record of a partition this processor does not hold"
            );
            return;
        };
        if !matches!(state.phase, Phase::Reading) {
            tracing::debug!(
                partition,
                offset,
                "dropping a record while the partition recovers"
            );
            state.first_dropped = Some(state.first_dropped.map_or(offset, |o| o.min(offset)));
            return;
        }
        match admit(state.expected, offset, state.seek) {
            Admission::Take => {}
            Admission::TakeAfterGap { expected } => {
                metrics::counter!(metric::OFFSET_GAPS).increment(1);
                let absent = u64::try_from(offset - expected).unwrap_or(0);
                let _ = processor
                    .progress
                    .offsets_absent
                    .fetch_add(absent, Ordering::Relaxed);
                tracing::warn!(
                    partition,
                    expected,
                    offset,
                    absent = offset - expected,
                    "offsets absent from the partition; going on from the first one present"
                );
            }
            Admission::Drop => {
                tracing::debug!(partition, offset, expected = ?state.expected, "dropping a record");
                return;
            }
            Admission::SeekBack { expected } => {
                tracing::info!(
                    partition,
                    offset,
                    expected,
                    "records arrive past the log's position; seeking back"
                );
                state.seek = seek(
                    &processor.consumer,
                    &processor.config.kafka.topic,
                    partition,
                    expected,
                );
                return;
            }
        }
        state.seek = SeekState::None;
        // Counted here and published each tick: a metric lookup per record
        // costs more than the rest of a duplicate's handling.
        self.records_read += 1;
        let _ = processor
            .progress
            .records_read
            .fetch_add(1, Ordering::Relaxed);
        state.expected = Some(offset + 1);
        state.read_since_tick = true;
        let broker_ms = message.timestamp().to_millis();
        let step = state
            .core
            .take(offset, message.payload(), broker_ms, &self.bounds);
        if let Some(redo_end) = step.redo_lost {
            tracing::error!(
                partition,
                redo_end,
                offset,
                "a claimed range can no longer be read from Kafka; its files cannot be rewritten"
            );
        }
        if let Some(closed) = step.closed_before {
            self.hand_over(partition, closed);
        }
        match step.decision {
            Decision::Counted => {}
            Decision::Repeat => metrics::counter!(metric::DUPLICATES).increment(1),
            Decision::DeadLetter(reason) => self.dead_letter(partition, message, &reason),
        }
        if let Some(closed) = step.closed_after {
            self.hand_over(partition, closed);
        }
        // Summing every partition's buffer per record would cost more than
        // the slack of checking every 64th offset.
        if offset % 64 == 0 {
            let buffered = self.buffered();
            if buffered.items >= self.config().max_buffered_events as u64
                || buffered.bytes >= self.config().max_buffered_bytes()
            {
                self.backpressure();
            }
        }
    }

    /// Sends `message` to the dead-letter topic with `reason`. Enqueued, not
    /// awaited: the writer waits for it before it claims the range that
    /// covers this offset (see `dlq`).
    fn dead_letter(&mut self, partition: i32, message: &BorrowedMessage<'_>, reason: &Reason) {
        match reason {
            Reason::BadTime(_) => metrics::counter!(metric::BAD_TIMES).increment(1),
            Reason::Late { .. } => {
                metrics::counter!(metric::LATE).increment(1);
                let _ = self.processor.progress.late.fetch_add(1, Ordering::Relaxed);
            }
            Reason::NoValue | Reason::Unreadable(_) | Reason::Unbuffered(_) => {}
        }
        let letter = self
            .processor
            .dead_letters
            .enqueue(message, &reason.to_string());
        metrics::counter!(metric::DEAD_LETTERS).increment(1);
        let _ = self
            .processor
            .progress
            .dead_letters
            .fetch_add(1, Ordering::Relaxed);
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.letters.push(letter);
        }
    }

    /// Closes a partition's open range, if it has one, and hands it to its writer.
    pub(super) fn close_range(&mut self, partition: i32) {
        let horizon = self.config().dedup_horizon_ms();
        let closed = self
            .partitions
            .get_mut(&partition)
            .and_then(|state| state.core.close(horizon));
        if let Some(closed) = closed {
            self.hand_over(partition, closed);
        }
    }

    /// Hands a closed range, with the open range's dead letters, to its writer.
    fn hand_over(&mut self, partition: i32, closed: ClosedRange) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        let dead_letters = std::mem::take(&mut state.letters);
        let held = Held {
            items: (closed.buffer.len() + dead_letters.len()) as u64,
            bytes: closed.buffer.record_bytes,
        };
        let job = Job::Range(Box::new(RangeJob {
            partition,
            generation: state.generation,
            buffer: closed.buffer,
            watermark_before: closed.watermark_before,
            watermark_after: closed.watermark_after,
            received_before: closed.received_before,
            received_after: closed.received_after,
            dead_letters,
            genesis_known: state.genesis_known,
            redo: closed.redo,
            list_from: closed.list_from,
        }));
        state.genesis_known = true;
        self.queued += held;
        self.send(partition, job);
    }

    pub(super) fn send(&mut self, partition: i32, job: Job) {
        let index = usize::try_from(partition).unwrap_or(0) % self.writers.len().max(1);
        if let Some(writer) = self.writers.get(index)
            && writer.send(job).is_err()
        {
            tracing::error!(
                partition,
                "a lake writer stopped; the range will be re-read"
            );
        }
    }

    pub(super) fn on_outcome(&mut self, outcome: Outcome) {
        let progress = &self.processor.progress;
        match outcome {
            Outcome::Written {
                partition,
                generation,
                end,
                events,
                records,
                files,
                held,
            } => {
                self.queued -= held;
                metrics::counter!(metric::EVENTS_COMMITTED).increment(events);
                let _ = progress
                    .committed_events
                    .fetch_add(events, Ordering::Relaxed);
                let _ = progress
                    .committed_records
                    .fetch_add(records, Ordering::Relaxed);
                let _ = progress.files_written.fetch_add(files, Ordering::Relaxed);
                let current = self
                    .partitions
                    .get(&partition)
                    .is_some_and(|s| s.generation == generation);
                if current {
                    let _ = self.written_through.insert(partition, end + 1);
                    // Kafka's committed offset is only a hint (lag metrics, a
                    // fast start); the range log decides where reading resumes.
                    let mut list = TopicPartitionList::new();
                    if list
                        .add_partition_offset(self.topic(), partition, Offset::Offset(end + 1))
                        .is_ok()
                        && let Err(error) = self.processor.consumer.commit(&list, CommitMode::Async)
                    {
                        tracing::debug!(partition, %error, "offset commit failed");
                    }
                }
            }
            Outcome::IdleMarked => {}
            Outcome::Conflict {
                partition,
                generation,
                held,
            } => {
                self.queued -= held;
                metrics::counter!(metric::CLAIM_CONFLICTS).increment(1);
                let _ = progress.conflicts.fetch_add(1, Ordering::Relaxed);
                let current = self
                    .partitions
                    .get(&partition)
                    .is_some_and(|s| s.generation == generation);
                if current {
                    // Records read meanwhile are dropped; recovery seeks back.
                    self.start_recovery(partition);
                }
            }
            Outcome::Abandoned { held } => {
                self.queued -= held;
            }
        }
    }
}
