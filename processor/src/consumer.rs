//! The consumer loop: read, decide, close ranges, hand them to the writers.
//!
//! Each assigned partition first recovers from the range log (dropping what
//! arrives meanwhile): it seeks to the end of the last written range, or back to the start
//! of a claimed range whose files may be missing, with the watermark and dedup
//! ids that range started with. From then on every decision about a record
//! (late, repeat, new) is a function of the records in offset order, so a
//! re-read decides the same. Revoked partitions drop what they hold: their next
//! owner recovers from the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqi_kafka::{Connection, ConnectionFailure};
use sqi_schemas::lake::Lake;
use sqi_schemas::record::RecordView;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::completeness::{Completeness, closed_before};
use crate::config::{GroupProtocol, ProcessorConfig, millis};
use crate::dedup::Dedup;
use crate::dlq::{DeadLetters, PendingLetter};
use crate::error::{Error, Result};
use crate::range_log::{IdleMark, PartitionLog, RangeIntent};
use crate::window::PartitionBuffer;
use crate::writer::{Generations, Held, Job, Outcome, RangeJob, WriterContext};

/// Metric names, by the rule `sqi_<component>_<name>_<unit>` (`_total` for counters).
pub mod metric {
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

#[derive(Default)]
struct Notices {
    assigned: Vec<i32>,
    revoked: Vec<i32>,
}

/// Offsets librdkafka reports for one partition.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    high: i64,
    read: i64,
    committed: i64,
}

struct ProcessorContext {
    topic: String,
    notices: Arc<Mutex<Notices>>,
    offsets: Arc<Mutex<HashMap<i32, Offsets>>>,
    /// Logs, connection failures and MSK IAM tokens, shared with the
    /// dead-letter producer.
    connection: Connection,
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

/// Where a partition resumes, as the range log says.
struct Recovery {
    genesis_known: bool,
    position: Option<i64>,
    watermark: i64,
    received: i64,
    dedup: Dedup,
    redo: Option<RangeIntent>,
    history: VecDeque<(i64, i64)>,
}

async fn recover(log: PartitionLog, horizon_ms: i64) -> Result<Recovery> {
    let state = log.read().await?;
    let (position, watermark, received, redo, chain) = match state.newest() {
        Some(newest) if log.is_written(newest).await? => {
            let position = newest.end + 1;
            let watermark = state
                .idle_watermark_at(position)
                .map_or(newest.watermark_after, |w| w.max(newest.watermark_after));
            let mut chain = vec![newest];
            chain.extend(state.chain_before(newest.start));
            (
                Some(position),
                watermark,
                newest.receive_watermark_after(),
                None,
                chain,
            )
        }
        Some(newest) => (
            Some(newest.start),
            newest.watermark_before,
            newest.receive_watermark_before(),
            Some(newest.clone()),
            state.chain_before(newest.start),
        ),
        None => (
            state.genesis,
            state
                .genesis
                .and_then(|g| state.idle_watermark_at(g))
                .unwrap_or(i64::MIN),
            i64::MIN,
            None,
            Vec::new(),
        ),
    };
    let floor = received.saturating_sub(horizon_ms);
    let needed: Vec<&RangeIntent> = chain
        .iter()
        .copied()
        .take_while(|r| r.receive_watermark_after() >= floor)
        .collect();
    let mut dedup = Dedup::new(horizon_ms);
    let ids = log.reload_ids(&needed, floor, &mut dedup).await?;
    tracing::info!(
        partition = log.partition,
        ?position,
        redo = ?redo.as_ref().map(|r| (r.start, r.end)),
        ids,
        "partition recovered from the range log"
    );
    Ok(Recovery {
        genesis_known: state.genesis.is_some() || !state.ranges.is_empty(),
        position,
        watermark,
        received,
        dedup,
        redo,
        history: chain
            .iter()
            .rev()
            .map(|r| (r.start, r.receive_watermark_after()))
            .collect(),
    })
}

enum Phase {
    Recovering(JoinHandle<Result<Recovery>>),
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
    watermark: i64,
    /// The latest `received_at` read (dedup's horizon is measured from it).
    received: i64,
    dedup: Dedup,
    buffer: Option<PartitionBuffer>,
    /// Dead letters of the open range, not yet acknowledged.
    letters: Vec<PendingLetter>,
    watermark_at_open: i64,
    received_at_open: i64,
    redo: Option<RangeIntent>,
    /// `(start, receive watermark after)` of this partition's recent ranges, oldest first.
    history: VecDeque<(i64, i64)>,
    list_from: i64,
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
            let app = admin_router(AdminState {
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
                    open_events = state.buffer.as_ref().map_or(0, PartitionBuffer::len),
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
                watermark: i64::MIN,
                received: i64::MIN,
                dedup: Dedup::new(horizon),
                buffer: None,
                letters: Vec::new(),
                watermark_at_open: i64::MIN,
                received_at_open: i64::MIN,
                redo: None,
                history: VecDeque::new(),
                list_from: 0,
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
            if !matches!(state.phase, Phase::Reading) || state.redo.is_some() {
                continue;
            }
            if state.watermark != i64::MIN {
                metrics::gauge!(metric::WATERMARK_LAG, "partition" => partition.to_string())
                    .set((now_ms - state.watermark) as f64 / 1000.0);
            }
            let idle = state.last_record_at.elapsed() >= idle_timeout;
            if let Some(buffer) = &state.buffer {
                // Reading records received longer ago than a range may stay
                // open: a backlog. Holding it until idleness would write
                // nothing for as long as reading it takes, plus the idle
                // timeout (over a minute for 1M records), and a member that
                // dies meanwhile would leave nothing behind.
                let catching_up = now_ms.saturating_sub(state.received) > millis(max_age);
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
            if closed_before(advanced, lateness) > closed_before(state.watermark, lateness) {
                state.watermark = state.watermark.max(advanced);
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
                    watermark: state.watermark,
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
        let recovery = match futures::FutureExt::now_or_never(task) {
            Some(Ok(Ok(recovery))) => recovery,
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
        state.genesis_known = recovery.genesis_known;
        state.watermark = recovery.watermark;
        state.received = recovery.received;
        state.dedup = recovery.dedup;
        state.redo = recovery.redo;
        state.history = recovery.history;
        state.list_from = state.history.front().map_or(0, |h| h.0);
        // An empty log starts where this member's reading started.
        let position = recovery.position.or(state.first_dropped.take());
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
        let bytes = message.payload().map_or(0, <[u8]>::len);
        let lateness = self.config().lateness_ms();
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
        if let Some(redo_end) = state.redo.as_ref().map(|r| r.end)
            && offset > redo_end
        {
            match &mut state.buffer {
                // The rest of the redo range is gone; close it as the log says.
                Some(buffer) => buffer.end_offset = redo_end,
                None => {
                    tracing::error!(
                        partition,
                        redo_end,
                        offset,
                        "a claimed range can no longer be read from Kafka; its files cannot be rewritten"
                    );
                    state.redo = None;
                }
            }
            self.close_range(partition);
        }
        self.on_record_in(partition, offset, bytes, lateness, message);
    }

    fn on_record_in(
        &mut self,
        partition: i32,
        offset: i64,
        bytes: usize,
        lateness: i64,
        message: &BorrowedMessage<'_>,
    ) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        state.expected = Some(offset + 1);
        state.read_since_tick = true;
        if state.buffer.is_none() {
            state.buffer = Some(PartitionBuffer::new(offset));
            state.watermark_at_open = state.watermark;
            state.received_at_open = state.received;
        }
        let watermark = state.watermark;
        let future_bound = self.processor.config.future_bound_ms();
        let parsed = match message.payload() {
            Some(payload) => RecordView::from_json(payload).map_err(|e| e.to_string()),
            None => Err("record has no value".to_owned()),
        }
        .and_then(|record| {
            let broker_ms = message.timestamp().to_millis();
            if let Err(reason) = check_times(record.ts, record.received_at, broker_ms, future_bound)
            {
                metrics::counter!(metric::BAD_TIMES).increment(1);
                return Err(reason);
            }
            if watermark != i64::MIN && record.ts < watermark.saturating_sub(lateness) {
                metrics::counter!(metric::LATE).increment(1);
                let _ = self.processor.progress.late.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "late: event time {} is more than {} ms behind the partition watermark {}",
                    record.ts, lateness, watermark
                ));
            }
            Ok(record)
        });
        let rejected = match parsed {
            Ok(record) => {
                state.watermark = state.watermark.max(record.ts);
                state.received = state.received.max(record.received_at);
                let new = state.dedup.first_sighting(
                    &record.event_id,
                    record.received_at,
                    state.received,
                );
                match &mut state.buffer {
                    Some(buffer) if new => buffer
                        .add(offset, bytes, &record)
                        .err()
                        .map(|error| format!("the event could not be buffered: {error}")),
                    Some(buffer) => {
                        metrics::counter!(metric::DUPLICATES).increment(1);
                        buffer.skip(offset, bytes);
                        None
                    }
                    None => None,
                }
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = rejected {
            // Enqueued, not awaited: the writer waits for it before it
            // claims the range that covers this offset (see `dlq`).
            let letter = self.processor.dead_letters.enqueue(message, &reason);
            metrics::counter!(metric::DEAD_LETTERS).increment(1);
            let _ = self
                .processor
                .progress
                .dead_letters
                .fetch_add(1, Ordering::Relaxed);
            let Some(state) = self.partitions.get_mut(&partition) else {
                return;
            };
            state.letters.push(letter);
            if let Some(buffer) = &mut state.buffer {
                buffer.skip(offset, bytes);
            }
        }
        let target = self.config().target_file_bytes;
        let Some(state) = self.partitions.get(&partition) else {
            return;
        };
        let close = match (&state.redo, &state.buffer) {
            (Some(redo), _) => offset >= redo.end,
            // Parquet keeps roughly a quarter of the JSON record bytes.
            (None, Some(buffer)) => buffer.record_bytes / 4 >= target,
            (None, None) => false,
        };
        if close {
            self.close_range(partition);
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

    /// Closes a partition's open range and hands it to its writer.
    fn close_range(&mut self, partition: i32) {
        let horizon = self.config().dedup_horizon_ms();
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        let Some(buffer) = state.buffer.take() else {
            return;
        };
        let redo = state.redo.take();
        state
            .history
            .push_back((buffer.start_offset, state.received));
        let floor = state.received_at_open.saturating_sub(horizon);
        while state.history.len() > 1 && state.history.front().is_some_and(|h| h.1 < floor) {
            let _ = state.history.pop_front();
        }
        let list_from = state.history.front().map_or(buffer.start_offset, |h| h.0);
        let moved = (list_from > state.list_from).then_some(list_from);
        state.list_from = state.list_from.max(list_from);
        state.dedup.prune(state.received);
        let dead_letters = std::mem::take(&mut state.letters);
        let held = Held {
            items: (buffer.len() + dead_letters.len()) as u64,
            bytes: buffer.record_bytes,
        };
        let job = Job::Range(Box::new(RangeJob {
            partition,
            generation: state.generation,
            buffer,
            watermark_before: state.watermark_at_open,
            watermark_after: state.watermark,
            received_before: state.received_at_open,
            received_after: state.received,
            dead_letters,
            genesis_known: state.genesis_known,
            redo,
            list_from: moved,
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
                items: (state.buffer.as_ref().map_or(0, PartitionBuffer::len) + state.letters.len())
                    as u64,
                bytes: state.buffer.as_ref().map_or(0, |b| b.record_bytes),
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
            .filter(|(_, s)| s.redo.is_none() && s.buffer.is_some())
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

/// 2000-01-01T00:00:00Z: no event or receive time is older (the contract's
/// bound, which ingest clamps to).
const EARLIEST_MS: i64 = sqi_schemas::record::EARLIEST_EVENT_TIME_MS;

/// Refuses a record whose times no honest writer produces: before 2000, an
/// event time more than `future_bound` ms after its receive time, or a receive
/// time that far after the broker's timestamp of the record (when the broker
/// gives one). A record that passes cannot move the watermark further than
/// the bound past the moment it was received. Only the record's own bytes
/// and timestamp decide, so a re-read decides the same (no wall clock here).
fn check_times(
    ts: i64,
    received_at: i64,
    broker_ms: Option<i64>,
    future_bound: i64,
) -> std::result::Result<(), String> {
    if ts < EARLIEST_MS {
        return Err(format!("time: event time {ts} is before 2000"));
    }
    if received_at < EARLIEST_MS {
        return Err(format!("time: receive time {received_at} is before 2000"));
    }
    if ts > received_at.saturating_add(future_bound) {
        return Err(format!(
            "time: event time {ts} is more than {future_bound} ms after its receive time {received_at}"
        ));
    }
    if let Some(broker) = broker_ms.filter(|b| *b >= EARLIEST_MS)
        && received_at > broker.saturating_add(future_bound)
    {
        return Err(format!(
            "time: receive time {received_at} is more than {future_bound} ms after the record's Kafka timestamp {broker}"
        ));
    }
    Ok(())
}

/// Where a partition's reading stands against a seek to its expected offset.
#[derive(Debug, Clone, Copy)]
enum SeekState {
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
enum Admission {
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

fn admit(expected: Option<i64>, offset: i64, seek: SeekState) -> Admission {
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
fn seek(
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

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    dead_letters: DeadLetters,
    metrics: Option<PrometheusHandle>,
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                // A dead-letter topic that fails is an outage of this
                // processor: its partitions stop where a dead letter waits.
                if s.ready.load(Ordering::SeqCst) && !s.dead_letters.unavailable() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                match s.metrics {
                    Some(handle) => (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                        .into_response(),
                    None => Response::new(axum::body::Body::from("")),
                }
            }),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 1: absurd times are refused, with a reason, whoever wrote the record.
    #[test]
    fn absurd_times_are_refused() {
        let now = 1_800_000_000_000;
        let bound = 300_000;
        assert_eq!(check_times(now, now, Some(now), bound), Ok(()));
        assert_eq!(check_times(now - 86_400_000, now, None, bound), Ok(()));
        assert_eq!(check_times(now + bound, now, Some(now), bound), Ok(()));
        for (ts, received, broker) in [
            (now + 22 * 3_600_000, now, Some(now)),
            (now + bound + 1, now, None),
            (1_000, now, Some(now)),
            (now, 1_000, Some(now)),
            (now + 22 * 3_600_000, now + 22 * 3_600_000, Some(now)),
        ] {
            let refused = check_times(ts, received, broker, bound);
            assert!(
                refused.as_ref().is_err_and(|r| r.starts_with("time: ")),
                "{ts} {received} {broker:?}: {refused:?}"
            );
        }
        // A broker that gives no timestamp, or a meaningless one, is not used.
        assert_eq!(check_times(now, now, Some(-1), bound), Ok(()));
    }

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
