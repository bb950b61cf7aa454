//! The consumer loop: read, decide, close ranges, hand them to the writers.
//!
//! The decisions are [`crate::partition`]'s (pure, no I/O); this loop feeds
//! it each partition's records and carries out what it decides: dead
//! letters, range jobs for the writers, metrics, commits, backpressure, and
//! closing ranges by age and idleness (which needs a clock).
//!
//! Each assigned partition first recovers from the range log (dropping what
//! arrives meanwhile): it seeks to the end of the last written range, or back to the start
//! of a claimed range whose files may be missing, with the watermark and dedup
//! ids that range started with. From then on every decision about a record
//! (late, repeat, new) is a function of the records in offset order, so a
//! re-read decides the same. Revoked partitions drop what they hold: their next
//! owner recovers from the log.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqi_kafka::{Connection, ConnectionFailure};
use sqi_schemas::lake::Lake;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::completeness::{Completeness, closed_before};
use crate::config::{GroupProtocol, ProcessorConfig, millis};
use crate::dedup::Dedup;
use crate::dlq::{DeadLetters, PendingLetter};
use crate::error::{Error, Result};
use crate::kafka::{Admission, Notices, Offsets, ProcessorContext, SeekState, admit, seek};
use crate::metric::{self, Progress};
use crate::partition::{
    Bounds, ClosedRange, Decision, PartitionCore, Reason, ResumePoint, resume_point,
};
use crate::range_log::{IdleMark, PartitionLog};
use crate::window::PartitionBuffer;
use crate::writer::{Generations, Held, Job, Outcome, RangeJob, WriterContext};

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

enum Phase {
    Recovering(JoinHandle<Result<(ResumePoint, Dedup)>>),
    Reading,
}

struct PartitionState {
    generation: u64,
    phase: Phase,
    genesis_known: bool,
    /// The next offset to process; `None` accepts whatever comes first.
    expected: Option<i64>,
    /// Whether reading was moved to `expected` since the last record taken.
    seek: SeekState,
    /// Watermarks, remembered ids, the open range: what decides each record.
    core: PartitionCore,
    /// Dead letters of the open range, not yet acknowledged.
    letters: Vec<PendingLetter>,
    last_record_at: Instant,
    /// A record arrived since the last tick (cheaper than a clock read per record).
    read_since_tick: bool,
    /// The first offset dropped while recovering: where an empty log starts.
    first_dropped: Option<i64>,
}

/// One processor replica: a member of the consumer group.
pub struct Processor {
    config: ProcessorConfig,
    lake: Lake,
    consumer: StreamConsumer<ProcessorContext>,
    connection: Connection,
    dead_letters: DeadLetters,
    notices: Arc<Mutex<Notices>>,
    offsets: Arc<Mutex<HashMap<i32, Offsets>>>,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("group", &self.config.group_id)
            .finish()
    }
}

impl Processor {
    /// Joins the consumer group (lazily, on first poll) for `config.kafka.topic`.
    /// Fails on invalid settings or an unreadable secret, never on an
    /// unreachable broker.
    pub fn new(config: ProcessorConfig, lake: Lake) -> Result<Self> {
        config.validate()?;
        let connection = Connection::new(&config.kafka)?;
        let stats_ms =
            (config.idle_timeout / 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let consumer_config = config.kafka.client_config(|consumer_config| {
            let _ = consumer_config
                .set("group.id", &config.group_id)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("statistics.interval.ms", stats_ms.as_millis().to_string())
                // Bounds what librdkafka prefetches while the loop is not reading.
                .set("queued.max.messages.kbytes", "16384")
                // With the bound reached librdkafka stops fetching for this long
                // (default 1 s): the loop drained 16 MiB in far less and then sat
                // idle, which held a processor to a third of its speed.
                .set("fetch.queue.backoff.ms", "10");
            // Both protocols assign incrementally, so the rebalance handling
            // is one; KIP-848's refuses a client-side assignment strategy.
            let _ = match config.group_protocol {
                GroupProtocol::Classic => {
                    let session = config.session_timeout;
                    let heartbeat = (session / 3).min(Duration::from_secs(3));
                    consumer_config
                        .set("partition.assignment.strategy", "cooperative-sticky")
                        .set("session.timeout.ms", session.as_millis().to_string())
                        .set("heartbeat.interval.ms", heartbeat.as_millis().to_string())
                }
                // KIP-848's session and heartbeat are the broker's; librdkafka
                // refuses them here.
                GroupProtocol::Consumer => consumer_config.set("group.protocol", "consumer"),
            };
        })?;
        let notices = Arc::new(Mutex::new(Notices::default()));
        let offsets = Arc::new(Mutex::new(HashMap::new()));
        let consumer: StreamConsumer<ProcessorContext> =
            consumer_config.create_with_context(ProcessorContext {
                topic: config.kafka.topic.clone(),
                notices: notices.clone(),
                offsets: offsets.clone(),
                connection: connection.clone(),
            })?;
        consumer.subscribe(&[config.kafka.topic.as_str()])?;
        tracing::info!(
            group = %config.group_id,
            group_protocol = ?config.group_protocol,
            security_protocol = config.kafka.security_protocol.librdkafka_name(),
            topic = %config.kafka.topic,
            "joining the consumer group"
        );
        let dead_letters = DeadLetters::new(&config.kafka, connection.clone(), &config.dlq_topic)?;
        Ok(Self {
            config,
            lake,
            consumer,
            connection,
            dead_letters,
            notices,
            offsets,
            progress: Arc::new(Progress::default()),
        })
    }

    /// Shared progress counters.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The topic's partition count. A broker that does not answer is waited
    /// for (a processor that starts during a broker restart must not crash
    /// and leave its partitions unowned); a topic that the broker says does
    /// not exist is an error after a few tries, so a typo fails loudly.
    async fn partition_count(
        &self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<i32>> {
        let topic = &self.config.kafka.topic;
        let mut missing = 0;
        let mut waited = false;
        let mut backoff = Duration::from_millis(500);
        loop {
            // With MSK IAM the consumer's request for a token waits in its
            // queue until the consume loop polls it, so asking through the
            // consumer here would wait forever. The dead-letter producer's
            // own thread serves its request: ask through it.
            let metadata = if self.config.kafka.uses_msk_iam() {
                self.dead_letters
                    .fetch_metadata(topic, Duration::from_secs(5))
            } else {
                self.consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
            };
            match metadata {
                Ok(metadata) => {
                    let count = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .map_or(0, |t| t.partitions().len());
                    if count > 0 {
                        return i32::try_from(count)
                            .map(Some)
                            .map_err(|_| Error::NoTopic(topic.clone()));
                    }
                    missing += 1;
                    if missing >= 10 {
                        return Err(Error::NoTopic(topic.clone()));
                    }
                }
                // Why no broker answers is the connection's one error line;
                // saying "still waiting" every few seconds would be a flood.
                Err(error) if !waited => {
                    waited = true;
                    tracing::warn!(%error, "no broker answers yet; unready until one does");
                }
                Err(error) => tracing::debug!(%error, retry_in = ?backoff, "still no broker"),
            }
            tokio::select! {
                () = shutdown.as_mut() => return Ok(None),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Consumes until `shutdown` resolves, then writes what it holds and commits.
    pub async fn run(
        self,
        admin: Option<TcpListener>,
        metrics: Option<PrometheusHandle>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        metric::register();
        // Ready once it knows the topic and consumes; alive from the start.
        let ready = Arc::new(AtomicBool::new(false));
        if let Some(listener) = admin {
            let app = admin::router(AdminState {
                ready: ready.clone(),
                dead_letters: self.dead_letters.clone(),
                metrics,
            });
            let _server = tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let shutdown = std::pin::pin!(shutdown);
        let mut shutdown = shutdown;
        self.connection.ready().await?;
        let Some(partitions) = self.partition_count(&mut shutdown).await? else {
            return Ok(());
        };
        let completeness = Arc::new(Completeness::new(
            self.lake.clone(),
            &self.config.kafka.topic,
            partitions,
        ));
        completeness.publish_partition_count().await?;
        let (outcome_tx, outcomes) = mpsc::unbounded_channel();
        let generations: Generations = Arc::default();
        let context = WriterContext {
            lake: self.lake.clone(),
            topic: self.config.kafka.topic.clone(),
            lateness_ms: self.config.lateness_ms(),
            generations: generations.clone(),
            completeness,
            outcomes: outcome_tx,
            bytes_written: self.progress.bytes_written.clone(),
            dead_letters: self.dead_letters.clone(),
        };
        let mut writers = Vec::new();
        let mut writer_tasks = Vec::new();
        for _ in 0..self.config.writers {
            let (tx, rx) = mpsc::unbounded_channel();
            writers.push(tx);
            writer_tasks.push(tokio::spawn(context.clone().run(rx)));
        }
        drop(context);
        let mut run = Run {
            processor: &self,
            partitions: BTreeMap::new(),
            generations,
            next_generation: 0,
            writers,
            outcomes,
            queued: Held::default(),
            paused: false,
            written_through: BTreeMap::new(),
            records_read: 0,
            bounds: Bounds::of(&self.config),
        };
        ready.store(true, Ordering::SeqCst);
        let result = run.consume(shutdown).await;
        ready.store(false, Ordering::SeqCst);
        run.finish().await;
        for task in writer_tasks {
            task.abort();
        }
        result
    }
}

/// The state of one `run`.
struct Run<'a> {
    processor: &'a Processor,
    partitions: BTreeMap<i32, PartitionState>,
    generations: Generations,
    next_generation: u64,
    writers: Vec<mpsc::UnboundedSender<Job>>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    /// What was handed to writers and is not yet written.
    queued: Held,
    paused: bool,
    /// The offset after each partition's last written range.
    written_through: BTreeMap<i32, i64>,
    /// Records taken since the last tick published them.
    records_read: u64,
    /// What every partition decides by.
    bounds: Bounds,
}

impl Run<'_> {
    fn config(&self) -> &ProcessorConfig {
        &self.processor.config
    }

    fn topic(&self) -> &str {
        &self.processor.config.kafka.topic
    }

    async fn consume(&mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let tick_every = (self
            .config()
            .idle_timeout
            .min(self.config().catch_up_file_age)
            / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = tick.tick() => {
                    metrics::counter!(metric::RECORDS).increment(std::mem::take(&mut self.records_read));
                    self.apply_notices();
                    self.housekeeping();
                }
                Some(outcome) = self.outcomes.recv() => self.on_outcome(outcome),
                received = self.processor.consumer.recv(), if !self.paused => {
                    self.apply_notices();
                    match received {
                        Ok(message) => self.on_record(&message),
                        // Already reported once by the connection.
                        Err(error) if ConnectionFailure::of(&error).is_some() => {
                            tracing::debug!(%error, "kafka consume error; continuing");
                        }
                        Err(error) => tracing::warn!(%error, "kafka consume error; continuing"),
                    }
                }
            }
        }
    }

    fn apply_notices(&mut self) {
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

    fn start_recovery(&mut self, partition: i32) {
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

    /// Finishes recoveries, closes ranges by age and idleness, applies backpressure.
    fn housekeeping(&mut self) {
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

    fn finish_recovery(&mut self, partition: i32) {
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

    fn on_record(&mut self, message: &BorrowedMessage<'_>) {
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
    fn close_range(&mut self, partition: i32) {
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

    fn send(&mut self, partition: i32, job: Job) {
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

    fn on_outcome(&mut self, outcome: Outcome) {
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

    /// Events, dead letters and record bytes read and not yet written.
    fn buffered(&self) -> Held {
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
    fn backpressure(&mut self) {
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
    fn close_open_ranges(&mut self) {
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

    /// On shutdown: close every open range, let the writers finish (bounded),
    /// and commit what they wrote.
    async fn finish(&mut self) {
        metrics::counter!(metric::RECORDS).increment(std::mem::take(&mut self.records_read));
        self.close_open_ranges();
        self.writers.clear();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.outcomes.recv()).await {
                Ok(Some(outcome)) => self.on_outcome(outcome),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "shutting down with ranges not yet written; they will be re-read"
                    );
                    break;
                }
            }
        }
        let mut list = TopicPartitionList::new();
        for (partition, next) in &self.written_through {
            if self.partitions.contains_key(partition) {
                let _ = list.add_partition_offset(self.topic(), *partition, Offset::Offset(*next));
            }
        }
        if list.count() > 0
            && let Err(error) = self.processor.consumer.commit(&list, CommitMode::Sync)
        {
            tracing::debug!(%error, "final offset commit failed");
        }
    }
}
