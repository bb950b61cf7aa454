//! Taking partitions on and off. An assigned partition recovers from the
//! range log before it reads: where it resumes (after the last written
//! range, or back at the start of a claimed range whose files may be
//! missing), with the watermark and dedup ids that range started with.
//! Records that arrive meanwhile are dropped (the first one's offset is
//! where an empty log starts). A revoked partition drops what it holds:
//! its next owner recovers from the log. A failed recovery is retried.
//!
//! Where a recovery resumes is [`crate::partition::resume_point`]'s
//! decision; this module reads the log, reloads the ids and seeks.

use std::time::{Duration, Instant};

use crate::dedup::Dedup;
use crate::error::Result;
use crate::kafka::{SeekState, seek};
use crate::metric;
use crate::partition::{PartitionCore, ResumePoint, resume_point};
use crate::range_log::PartitionLog;
use crate::window::PartitionBuffer;

use super::{PartitionState, Phase, Run};

/// Reads `log` and reloads the ids dedup needs: where the partition resumes.
async fn recover(log: PartitionLog, horizon_ms: i64) -> Result<(ResumePoint, Dedup)> {
    let state = log.read().await?;
    let newest_written = match state.newest() {
        Some(newest) => log.is_written(newest).await?,
        None => false,
    };
    let point = resume_point(&state, newest_written, horizon_ms);
    let mut dedup = Dedup::new(horizon_ms);
    let ids = log
        .reload_ids(&point.reload, point.floor, &mut dedup)
        .await?;
    tracing::info!(
        partition = log.partition,
        position = ?point.position,
        redo = ?point.redo.as_ref().map(|r| (r.start, r.end)),
        ids,
        "partition recovered from the range log"
    );
    Ok((point, dedup))
}

impl Run<'_> {
    pub(super) fn apply_notices(&mut self) {
        let (assigned, revoked) = match self.processor.notices.lock() {
            Ok(mut n) => (
                std::mem::take(&mut n.assigned),
                std::mem::take(&mut n.revoked),
            ),
            Err(_) => return,
        };
        for partition in revoked {
            if let Some(state) = self.partitions.remove(&partition) {
                if let Ok(mut g) = self.generations.lock() {
                    let _ = g.remove(&partition);
                }
                if let Phase::Recovering(task) = &state.phase {
                    task.abort();
                }
                tracing::info!(
                    partition,
                    open_events = state.core.buffer.as_ref().map_or(0, PartitionBuffer::len),
                    "partition revoked; its next owner re-reads what was not written"
                );
            }
        }
        for partition in assigned {
            tracing::info!(partition, "partition assigned");
            self.start_recovery(partition);
        }
    }

    pub(super) fn start_recovery(&mut self, partition: i32) {
        self.next_generation += 1;
        let generation = self.next_generation;
        if let Ok(mut g) = self.generations.lock() {
            let _ = g.insert(partition, generation);
        }
        if let Some(old) = self.partitions.get(&partition)
            && let Phase::Recovering(task) = &old.phase
        {
            task.abort();
        }
        let log = PartitionLog::new(self.processor.lake.clone(), self.topic(), partition);
        let horizon = self.config().dedup_horizon_ms();
        let task = tokio::spawn(recover(log, horizon));
        let _ = self.partitions.insert(
            partition,
            PartitionState {
                generation,
                phase: Phase::Recovering(task),
                genesis_known: false,
                expected: None,
                seek: SeekState::None,
                core: PartitionCore::new(horizon),
                letters: Vec::new(),
                last_record_at: Instant::now(),
                read_since_tick: false,
                first_dropped: None,
            },
        );
    }

    pub(super) fn finish_recovery(&mut self, partition: i32) {
        let log = PartitionLog::new(self.processor.lake.clone(), self.topic(), partition);
        let horizon = self.config().dedup_horizon_ms();
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        let Phase::Recovering(task) = &mut state.phase else {
            return;
        };
        let (point, dedup) = match futures::FutureExt::now_or_never(task) {
            Some(Ok(Ok(recovered))) => recovered,
            Some(Ok(Err(error))) => {
                tracing::warn!(partition, %error, "recovery from the range log failed; retrying");
                metrics::counter!(metric::STORE_RETRIES).increment(1);
                state.phase = Phase::Recovering(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    recover(log, horizon).await
                }));
                return;
            }
            Some(Err(error)) => {
                tracing::error!(partition, %error, "recovery task died");
                return;
            }
            None => return,
        };
        state.phase = Phase::Reading;
        state.genesis_known = point.genesis_known;
        // An empty log starts where this member's reading started.
        let position = point.position.or(state.first_dropped.take());
        state.core = PartitionCore::resume(point, dedup);
        state.expected = position;
        state.last_record_at = Instant::now();
        let topic = self.processor.config.kafka.topic.clone();
        if let Some(position) = position {
            state.seek = seek(&self.processor.consumer, &topic, partition, position);
        }
    }
}
