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
//!
//! This module holds the group member ([`Processor`]: its librdkafka
//! settings, waiting for the topic, starting the writers) and the loop's
//! skeleton, which takes one event at a time and hands it on: a record or
//! a writer's outcome to `records`, a rebalance to `recovery`, a tick to
//! `pacing` (which also applies backpressure).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sqi_kafka::{Connection, ConnectionFailure};
use sqi_schemas::lake::Lake;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::completeness::Completeness;
use crate::config::{GroupProtocol, ProcessorConfig};
use crate::dedup::Dedup;
use crate::dlq::{DeadLetters, PendingLetter};
use crate::error::{Error, Result};
use crate::kafka::{Notices, Offsets, ProcessorContext, SeekState};
use crate::metric::{self, Progress};
use crate::partition::{Bounds, PartitionCore, ResumePoint};
use crate::writer::{Generations, Held, Job, Outcome, WriterContext};

mod pacing;
mod records;
mod recovery;

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
