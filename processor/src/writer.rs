//! Lake writers: claim a closed range, write its files, advance the markers.
//!
//! A partition always goes to the same writer, so its ranges are written in
//! order. Store failures are retried with exponential backoff until they
//! succeed or the partition is no longer ours; the consumer loop meanwhile
//! keeps polling Kafka (so the group keeps this member) and pauses fetching
//! once too much waits here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqi_schemas::lake::Lake;
use tokio::sync::mpsc;

use crate::completeness::Completeness;
use crate::dlq::{DeadLetters, PendingLetter};
use crate::error::{Error, Result};
use crate::metric;
use crate::range_log::{Claim, IdleMark, PartitionLog, RangeIntent};
use crate::sink;
use crate::window::PartitionBuffer;

/// Fault injection for the crash tests: with
/// `SQI_PROCESSOR_CRASH_POINTS=after-claim=0.2,after-upload=0.2` the process
/// aborts at that point of a range's write with that probability, which puts a
/// `kill -9` exactly in the windows that matter. Unset, it does nothing.
fn crash_point(name: &str) {
    static POINTS: std::sync::OnceLock<Vec<(String, f64)>> = std::sync::OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var("SQI_PROCESSOR_CRASH_POINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .filter_map(|(n, p)| Some((n.trim().to_owned(), p.trim().parse().ok()?)))
            .collect()
    });
    let Some((_, probability)) = points.iter().find(|(n, _)| n == name) else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    if f64::from(nanos % 10_000) / 10_000.0 < *probability {
        tracing::warn!(point = name, "crash point reached; aborting");
        std::process::abort();
    }
}

/// A closed range to write.
#[derive(Debug)]
pub(crate) struct RangeJob {
    pub partition: i32,
    pub generation: u64,
    pub buffer: PartitionBuffer,
    pub watermark_before: i64,
    pub watermark_after: i64,
    pub received_before: i64,
    pub received_after: i64,
    /// The range's dead letters, acknowledged before the range is claimed.
    pub dead_letters: Vec<PendingLetter>,
    /// Whether the chain's start is already fixed in the log.
    pub genesis_known: bool,
    /// Set when re-writing a range the log already holds.
    pub redo: Option<RangeIntent>,
    /// A new listing start for recoveries, if it moved.
    pub list_from: Option<i64>,
}

/// Work for a writer.
#[derive(Debug)]
pub(crate) enum Job {
    Range(Box<RangeJob>),
    Idle {
        partition: i32,
        generation: u64,
        mark: IdleMark,
        genesis_known: bool,
    },
}

/// What a closed range keeps in memory until it is written: its events and
/// dead letters (counted against `--max-buffered-events`) and the bytes of the
/// records it covers (against the memory budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub items: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Held {
    fn add_assign(&mut self, other: Self) {
        self.items += other.items;
        self.bytes += other.bytes;
    }
}

impl std::ops::SubAssign for Held {
    fn sub_assign(&mut self, other: Self) {
        self.items = self.items.saturating_sub(other.items);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }
}

/// What happened to a job.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The range's files are in the lake.
    Written {
        partition: i32,
        generation: u64,
        end: i64,
        events: u64,
        records: u64,
        files: u64,
        /// What the range held until now.
        held: Held,
    },
    /// The idle mark is recorded.
    IdleMarked,
    /// The log holds a different decision; the partition must recover from it.
    Conflict {
        partition: i32,
        generation: u64,
        /// What the range held until now.
        held: Held,
    },
    /// The partition is no longer ours (revoked, reset or shutting down).
    Abandoned {
        /// What the range held until now.
        held: Held,
    },
}

/// Which generation of each partition is current; older jobs are abandoned.
pub(crate) type Generations = Arc<Mutex<HashMap<i32, u64>>>;

#[derive(Clone)]
pub(crate) struct WriterContext {
    pub lake: Lake,
    pub topic: String,
    pub lateness_ms: i64,
    pub generations: Generations,
    pub completeness: Arc<Completeness>,
    pub outcomes: mpsc::UnboundedSender<Outcome>,
    pub bytes_written: Arc<AtomicU64>,
    pub dead_letters: DeadLetters,
}

impl WriterContext {
    fn is_current(&self, partition: i32, generation: u64) -> bool {
        self.generations
            .lock()
            .map(|g| g.get(&partition) == Some(&generation))
            .unwrap_or(false)
    }

    /// Ends `generation` of `partition` from the writer's side, at once.
    ///
    /// A generation's later ranges were cut after the one that conflicted, so
    /// they start where this member *thought* the chain was. Claiming one of
    /// those starts could succeed (nobody else starts a range there) and put
    /// an overlapping range in the log: the same offsets in two sets of files.
    /// They are already queued behind the conflict, so waiting for the
    /// consumer loop to start a new generation would be too late.
    fn forsake(&self, partition: i32, generation: u64, held: Held) -> Outcome {
        if let Ok(mut g) = self.generations.lock()
            && g.get(&partition) == Some(&generation)
        {
            let _ = g.remove(&partition);
        }
        Outcome::Conflict {
            partition,
            generation,
            held,
        }
    }

    /// Retries `op` with backoff until it succeeds or the partition moves on.
    async fn retry<T, F, Fut>(
        &self,
        what: &str,
        partition: i32,
        generation: u64,
        mut op: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            if !self.is_current(partition, generation) {
                return None;
            }
            match op().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    metrics::counter!(metric::STORE_RETRIES).increment(1);
                    tracing::warn!(partition, %error, retry_in = ?delay, "{what} failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(20));
                }
            }
        }
    }

    /// Runs jobs until the channel closes.
    pub(crate) async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let outcome = match job {
                Job::Range(job) => self.write_range(*job).await,
                Job::Idle {
                    partition,
                    generation,
                    mark,
                    genesis_known,
                } => {
                    self.write_idle(partition, generation, mark, genesis_known)
                        .await
                }
            };
            if self.outcomes.send(outcome).is_err() {
                return;
            }
        }
    }

    async fn ensure_genesis(
        &self,
        log: &PartitionLog,
        generation: u64,
        start: i64,
    ) -> Option<bool> {
        let claim = self
            .retry(
                "claiming the chain start",
                log.partition,
                generation,
                || log.claim_genesis(start),
            )
            .await?;
        if let Claim::Taken(existing) = claim {
            tracing::info!(
                partition = log.partition,
                start,
                existing,
                "the chain already starts elsewhere; adopting it"
            );
            return Some(false);
        }
        Some(true)
    }

    async fn write_range(&self, mut job: RangeJob) -> Outcome {
        let (partition, generation) = (job.partition, job.generation);
        let events = job.buffer.len() as u64;
        let records = job.buffer.records();
        let held = Held {
            items: events + job.dead_letters.len() as u64,
            bytes: job.buffer.record_bytes,
        };
        let abandoned = Outcome::Abandoned { held };
        if !self.is_current(partition, generation) {
            return abandoned;
        }
        // Once the range's files are in the lake a restart resumes past it,
        // so its dead letters must be safe first; waiting before the claim
        // keeps a claimed range's only missing piece its files (a redo).
        let letters = std::mem::take(&mut job.dead_letters);
        if !letters.is_empty()
            && !self
                .dead_letters
                .settle(letters, || self.is_current(partition, generation))
                .await
        {
            return abandoned;
        }
        let log = PartitionLog::new(self.lake.clone(), &self.topic, partition);
        if !job.genesis_known {
            match self
                .ensure_genesis(&log, generation, job.buffer.start_offset)
                .await
            {
                None => return abandoned,
                Some(false) => return self.forsake(partition, generation, held),
                Some(true) => {}
            }
        }
        let topic = self.topic.clone();
        let buffer = job.buffer;
        let (start, end) = (buffer.start_offset, buffer.end_offset);
        let encoded =
            tokio::task::spawn_blocking(move || sink::encode(&topic, partition, buffer)).await;
        let files = match encoded.map_err(Error::from).and_then(|r| r) {
            Ok(files) => files,
            Err(error) => {
                tracing::error!(partition, start, end, %error, "encoding a range failed");
                return self.forsake(partition, generation, held);
            }
        };
        let mut intent = RangeIntent {
            start,
            end,
            watermark_before: job.watermark_before,
            watermark_after: job.watermark_after,
            received_before: Some(job.received_before),
            received_after: Some(job.received_after),
            events,
            files: files.iter().map(|f| f.path.clone()).collect(),
        };
        if job
            .redo
            .as_ref()
            .is_some_and(|r| r.received_after.is_none())
        {
            // Logged before receive watermarks were; they are not part of it.
            (intent.received_before, intent.received_after) = (None, None);
        }
        match &job.redo {
            Some(logged) => {
                if *logged != intent {
                    // Re-reading a range must decide exactly as the first
                    // reader did; a difference is a bug worth an alarm.
                    metrics::counter!(metric::REDO_MISMATCHES).increment(1);
                    tracing::error!(
                        partition,
                        ?logged,
                        ?intent,
                        "a re-read range differs from its log entry"
                    );
                }
            }
            None => {
                let claim = self
                    .retry("claiming a range", partition, generation, || {
                        log.claim(&intent)
                    })
                    .await;
                match claim {
                    None => return abandoned,
                    Some(Claim::Won | Claim::Same) => {}
                    Some(Claim::Taken(existing)) => {
                        tracing::info!(
                            partition,
                            start,
                            end,
                            decided_end = existing.end,
                            "another writer claimed this range first; re-reading its decision"
                        );
                        return self.forsake(partition, generation, held);
                    }
                }
            }
        }
        crash_point("after-claim");
        let written = self
            .retry("writing a range's files", partition, generation, || {
                sink::upload(&self.lake, &files)
            })
            .await;
        if written.is_none() {
            return abandoned;
        }
        crash_point("after-upload");
        let bytes: u64 = files.iter().map(|f| f.bytes.len() as u64).sum();
        metrics::counter!(metric::FILES).increment(files.len() as u64);
        metrics::counter!(metric::BYTES).increment(bytes);
        let _ = self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        if let Some(list_from) = job.list_from {
            let _ = self
                .retry("moving the log checkpoint", partition, generation, || {
                    log.put_checkpoint(list_from)
                })
                .await;
        }
        self.mark_complete(partition, generation, job.watermark_after)
            .await;
        Outcome::Written {
            partition,
            generation,
            end,
            events,
            records,
            files: files.len() as u64,
            held,
        }
    }

    async fn write_idle(
        &self,
        partition: i32,
        generation: u64,
        mark: IdleMark,
        genesis_known: bool,
    ) -> Outcome {
        let log = PartitionLog::new(self.lake.clone(), &self.topic, partition);
        if !genesis_known {
            match self
                .ensure_genesis(&log, generation, mark.next_offset)
                .await
            {
                None => {
                    return Outcome::Abandoned {
                        held: Held::default(),
                    };
                }
                Some(false) => return self.forsake(partition, generation, Held::default()),
                Some(true) => {}
            }
        }
        if self
            .retry("recording an idle watermark", partition, generation, || {
                log.put_idle(mark)
            })
            .await
            .is_none()
        {
            return Outcome::Abandoned {
                held: Held::default(),
            };
        }
        self.mark_complete(partition, generation, mark.watermark)
            .await;
        Outcome::IdleMarked
    }

    async fn mark_complete(&self, partition: i32, generation: u64, watermark: i64) {
        let hours = self
            .retry(
                "writing completeness markers",
                partition,
                generation,
                || {
                    self.completeness
                        .advance(partition, watermark, self.lateness_ms)
                },
            )
            .await;
        if let Some(hours) = hours.filter(|h| *h > 0) {
            metrics::counter!(metric::HOURS_COMPLETED).increment(hours as u64);
            tracing::info!(hours, "hours marked complete");
        }
    }
}

// Test code only: an unwrap or expect here fails the test with its cause,
// which is the point (clippy.toml allows them in tests).
#[cfg(test)]
mod tests {
    use super::*;

    use futures::TryStreamExt;
    use sqi_schemas::lake::LakeOptions;

    use crate::window::tests::record;

    fn buffer(offsets: std::ops::RangeInclusive<i64>) -> PartitionBuffer {
        let mut buffer = PartitionBuffer::new(*offsets.start());
        for offset in offsets {
            buffer
                .add(
                    offset,
                    100,
                    &record(&format!("e{offset}"), 1_000 + offset)
                        .as_view()
                        .expect("valid"),
                )
                .expect("buffered");
        }
        buffer
    }

    fn job(offsets: std::ops::RangeInclusive<i64>) -> Job {
        Job::Range(Box::new(RangeJob {
            partition: 0,
            generation: 1,
            buffer: buffer(offsets),
            watermark_before: i64::MIN,
            watermark_after: 2_000,
            received_before: i64::MIN,
            received_after: 2_000,
            dead_letters: Vec::new(),
            genesis_known: true,
            redo: None,
            list_from: None,
        }))
    }

    /// A zombie cut [0, 4] and [5, 9] while another member decided [0, 9].
    /// Its first claim fails; its second must not be tried at all: nobody
    /// else starts a range at 5, so the claim would win and offsets 5..=9
    /// would be in the lake twice.
    #[tokio::test]
    async fn after_a_lost_claim_the_generations_later_ranges_are_not_written() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lake = Lake::open(
            &format!("file://{}", dir.path().display()),
            &LakeOptions::default(),
        )?;
        let log = PartitionLog::new(lake.clone(), "t", 0);
        assert_eq!(log.claim_genesis(0).await?, Claim::Won);
        let decided = RangeIntent {
            start: 0,
            end: 9,
            watermark_before: i64::MIN,
            watermark_after: 2_009,
            received_before: Some(i64::MIN),
            received_after: Some(2_009),
            events: 10,
            files: Vec::new(),
        };
        assert_eq!(log.claim(&decided).await?, Claim::Won);

        let (outcomes, mut received) = mpsc::unbounded_channel();
        let writer = WriterContext {
            lake: lake.clone(),
            topic: "t".into(),
            lateness_ms: 0,
            generations: Arc::new(Mutex::new(HashMap::from([(0, 1)]))),
            completeness: Arc::new(Completeness::new(lake.clone(), "t", 1)),
            outcomes,
            bytes_written: Arc::default(),
            dead_letters: {
                let kafka = sqi_kafka::KafkaArgs::plaintext("127.0.0.1:9", "t");
                DeadLetters::new(&kafka, sqi_kafka::Connection::new(&kafka)?, "t-dlq")?
            },
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        assert!(jobs.send(job(0..=4)).is_ok() && jobs.send(job(5..=9)).is_ok());
        drop(jobs);
        writer.run(queue).await;

        assert!(matches!(
            received.recv().await,
            Some(Outcome::Conflict {
                held: Held { items: 5, .. },
                ..
            })
        ));
        assert!(matches!(
            received.recv().await,
            Some(Outcome::Abandoned {
                held: Held { items: 5, .. }
            })
        ));
        let mut written: Vec<String> = Vec::new();
        for prefix in ["_processor", "events"] {
            let listed: Vec<_> = lake
                .store()
                .list(Some(&lake.path(prefix)))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .map_err(Error::Store)?;
            written.extend(listed);
        }
        assert!(
            !written
                .iter()
                .any(|p| p.contains("00000000000000000005.range.json") || p.contains("events/")),
            "the later range was claimed or written: {written:?}"
        );
        Ok(())
    }
}
