//! What the loop does by the clock and by memory rather than per record.
//! Each tick takes up finished recoveries, closes open ranges by age (a
//! shorter one while a partition catches up on a backlog) or idleness, and
//! moves an idle, caught-up partition's watermark to the wall clock so its
//! hours close. Backpressure stops reading while too much waits to be
//! written (and, when record bytes are what runs out, closes the open
//! ranges at once), and reads again once what waits is down to half the
//! bound.
//!
//! It decides when, never what: what a closed range holds is the core's.

use std::time::Instant;

use crate::completeness::closed_before;
use crate::config::millis;
use crate::metric;
use crate::range_log::IdleMark;
use crate::window::PartitionBuffer;
use crate::writer::{Held, Job};

use super::{Phase, Run};

impl Run<'_> {
    /// Finishes recoveries, closes ranges by age and idleness, applies backpressure.
    pub(super) fn housekeeping(&mut self) {
        let recovered: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| matches!(&s.phase, Phase::Recovering(t) if t.is_finished()))
            .map(|(p, _)| *p)
            .collect();
        for partition in recovered {
            self.finish_recovery(partition);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let offsets = self
            .processor
            .offsets
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        let max_age = self.config().max_file_age;
        let catch_up_age = self.config().catch_up_file_age.min(max_age);
        let idle_timeout = self.config().idle_timeout;
        let lateness = self.config().lateness_ms();
        let mut to_close = Vec::new();
        let mut idle_marks = Vec::new();
        for (partition, state) in &mut self.partitions {
            if std::mem::take(&mut state.read_since_tick) {
                state.last_record_at = Instant::now();
            }
            if !matches!(state.phase, Phase::Reading) || state.core.redo.is_some() {
                continue;
            }
            if state.core.watermark != i64::MIN {
                metrics::gauge!(metric::WATERMARK_LAG, "partition" => partition.to_string())
                    .set((now_ms - state.core.watermark) as f64 / 1000.0);
            }
            let idle = state.last_record_at.elapsed() >= idle_timeout;
            if let Some(buffer) = &state.core.buffer {
                // Reading records received longer ago than a range may stay
                // open: a backlog. Holding it until idleness would write
                // nothing for as long as reading it takes, plus the idle
                // timeout (over a minute for 1M records), and a member that
                // dies meanwhile would leave nothing behind.
                let catching_up = now_ms.saturating_sub(state.core.received) > millis(max_age);
                let age = if catching_up { catch_up_age } else { max_age };
                if idle || buffer.opened_at.elapsed() >= age {
                    to_close.push(*partition);
                }
                continue;
            }
            if !idle || self.paused {
                continue;
            }
            // Idle and caught up: the watermark follows the wall clock, so the
            // partition's hours close even with nothing to read.
            let Some(o) = offsets.get(partition) else {
                continue;
            };
            let next = state
                .expected
                .or((o.read >= 0).then_some(o.read))
                .or((o.committed >= 0).then_some(o.committed))
                .or((o.high == 0).then_some(0));
            let Some(next) = next.filter(|n| *n >= o.high) else {
                continue;
            };
            let advanced = now_ms - millis(idle_timeout);
            if closed_before(advanced, lateness) > closed_before(state.core.watermark, lateness) {
                state.core.advance_idle(advanced);
                state.expected = Some(next);
                idle_marks.push((*partition, next));
            }
        }
        for partition in to_close {
            self.close_range(partition);
        }
        for (partition, next) in idle_marks {
            let Some(state) = self.partitions.get_mut(&partition) else {
                continue;
            };
            let job = Job::Idle {
                partition,
                generation: state.generation,
                mark: IdleMark {
                    next_offset: next,
                    watermark: state.core.watermark,
                },
                genesis_known: state.genesis_known,
            };
            state.genesis_known = true;
            self.send(partition, job);
        }
        self.backpressure();
    }

    /// Events, dead letters and record bytes read and not yet written.
    pub(super) fn buffered(&self) -> Held {
        let mut held = self.queued;
        for state in self.partitions.values() {
            held += Held {
                items: (state.core.buffer.as_ref().map_or(0, PartitionBuffer::len)
                    + state.letters.len()) as u64,
                bytes: state.core.buffer.as_ref().map_or(0, |b| b.record_bytes),
            };
        }
        held
    }

    /// Stops reading while too much waits to be written.
    ///
    /// The loop simply stops taking records from librdkafka: its prefetch
    /// queue is bounded (`queued.max.messages.kbytes`) and its background
    /// thread keeps the group's heartbeats going, so memory is bounded as
    /// tightly as librdkafka's `pause`/`resume` would bound it (against
    /// Tansu, resuming after a pause also skipped fetched records). A stall
    /// longer than `max.poll.interval.ms` (5 min) makes this member leave
    /// the group; its partitions' next owner, or itself once it reads again,
    /// resumes from the log.
    pub(super) fn backpressure(&mut self) {
        let buffered = self.buffered();
        metrics::gauge!(metric::BUFFERED).set(buffered.items as f64);
        metrics::gauge!(metric::BUFFERED_BYTES).set(buffered.bytes as f64);
        let (items, bytes) = (
            self.config().max_buffered_events as u64,
            self.config().max_buffered_bytes(),
        );
        if !self.paused && (buffered.items >= items || buffered.bytes >= bytes) {
            self.paused = true;
            metrics::gauge!(metric::PAUSED).set(1.0);
            tracing::warn!(
                buffered = buffered.items,
                bytes = buffered.bytes,
                "writes are behind; pausing consumption"
            );
            if buffered.bytes >= bytes {
                // Memory is what runs out: write what the open ranges hold
                // now rather than at their rotation deadline.
                self.close_open_ranges();
            }
        } else if self.paused && buffered.items <= items / 2 && buffered.bytes <= bytes / 2 {
            self.paused = false;
            metrics::gauge!(metric::PAUSED).set(0.0);
            tracing::info!(
                buffered = buffered.items,
                bytes = buffered.bytes,
                "writes caught up; resuming consumption"
            );
        }
    }

    /// Closes every partition's open range (not one being redone), handing
    /// it to its writer now.
    pub(super) fn close_open_ranges(&mut self) {
        let open: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.core.redo.is_none() && s.core.buffer.is_some())
            .map(|(p, _)| *p)
            .collect();
        for partition in open {
            self.close_range(partition);
        }
    }
}
