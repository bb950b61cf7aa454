//! The consume → buffer → write → commit loop.
//!
//! Offsets are committed only after every file covering them is in the lake,
//! and a partition revoked in a rebalance drops its uncommitted buffer: its new
//! owner starts again from the last committed offset.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sqi_schemas::lake::Lake;
use sqi_schemas::record::EventRecord;
use tokio::net::TcpListener;

use crate::config::ProcessorConfig;
use crate::dlq::DeadLetters;
use crate::error::Result;
use crate::sink;
use crate::window::PartitionBuffer;

/// Metric names, by the rule `sqi_<component>_<name>_<unit>_total`.
pub mod metric {
    /// Records read from Kafka.
    pub const RECORDS: &str = "sqi_processor_records_total";
    /// Distinct events committed to the lake.
    pub const EVENTS_COMMITTED: &str = "sqi_processor_events_committed_total";
    /// Records sent to the dead-letter topic, by reason class.
    pub const DEAD_LETTERS: &str = "sqi_processor_dead_letters_total";
    /// Parquet files written.
    pub const FILES: &str = "sqi_processor_files_written_total";
    /// Parquet bytes written.
    pub const BYTES: &str = "sqi_processor_written_bytes_total";
    /// Flushes that failed and will be retried.
    pub const FLUSH_FAILURES: &str = "sqi_processor_flush_failures_total";
    /// Events beyond the allowed lateness, sent to the dead-letter topic.
    pub const LATE: &str = "sqi_processor_late_events_total";
    /// Seconds a flush took.
    pub const FLUSH_SECONDS: &str = "sqi_processor_flush_duration_seconds";
}

/// Counters the demo and tests read to know how far the processor has got.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records (good or dead-lettered) whose offsets are committed.
    pub committed_records: AtomicU64,
    /// Distinct events in committed files.
    pub committed_events: AtomicU64,
    /// Records sent to the dead-letter topic (late events included).
    pub dead_letters: AtomicU64,
    /// Events beyond the allowed lateness.
    pub late: AtomicU64,
    /// Parquet files written.
    pub files_written: AtomicU64,
}

struct RebalanceContext {
    revoked: Arc<Mutex<Vec<i32>>>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance
            && let Ok(mut revoked) = self.revoked.lock()
        {
            revoked.extend(partitions.elements().iter().map(|e| e.partition()));
        }
    }
}

/// One processor replica: a member of the consumer group.
pub struct Processor {
    config: ProcessorConfig,
    lake: Lake,
    consumer: StreamConsumer<RebalanceContext>,
    dead_letters: DeadLetters,
    revoked: Arc<Mutex<Vec<i32>>>,
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
    pub fn new(config: ProcessorConfig, lake: Lake) -> Result<Self> {
        let mut base = ClientConfig::new();
        let _ = base.set("bootstrap.servers", &config.kafka.brokers);
        for property in &config.kafka.extra {
            let _ = base.set(&property.key, &property.value);
        }
        let mut consumer_config = base.clone();
        let _ = consumer_config
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky");
        for property in &config.kafka.extra {
            let _ = consumer_config.set(&property.key, &property.value);
        }
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let consumer: StreamConsumer<RebalanceContext> =
            consumer_config.create_with_context(RebalanceContext {
                revoked: revoked.clone(),
            })?;
        consumer.subscribe(&[config.kafka.topic.as_str()])?;
        let dead_letters = DeadLetters::new(&base, &config.dlq_topic)?;
        Ok(Self {
            config,
            lake,
            consumer,
            dead_letters,
            revoked,
            progress: Arc::new(Progress::default()),
        })
    }

    /// Shared progress counters.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Consumes until `shutdown` resolves, then flushes and commits what it holds.
    pub async fn run(
        self,
        admin: Option<TcpListener>,
        metrics: Option<PrometheusHandle>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let ready = Arc::new(AtomicBool::new(true));
        if let Some(listener) = admin {
            let app = admin_router(AdminState {
                ready: ready.clone(),
                metrics,
            });
            let _server = tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let mut buffers: BTreeMap<i32, PartitionBuffer> = BTreeMap::new();
        let mut watermarks: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => self.flush(&mut buffers).await,
                received = self.consumer.recv() => {
                    match received {
                        Ok(message) => self.handle(&message, &mut buffers, &mut watermarks).await,
                        Err(error) => tracing::warn!(%error, "kafka consume error; continuing"),
                    }
                    self.drop_revoked(&mut buffers, &mut watermarks);
                    let buffered: usize = buffers.values().map(PartitionBuffer::len).sum();
                    if buffered >= self.config.max_buffered_events {
                        self.flush(&mut buffers).await;
                    }
                }
            }
        }
        ready.store(false, Ordering::SeqCst);
        self.flush(&mut buffers).await;
        if !buffers.is_empty() {
            tracing::warn!(
                partitions = buffers.len(),
                "shutting down with unflushed data; it will be re-read"
            );
        }
        Ok(())
    }

    async fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        buffers: &mut BTreeMap<i32, PartitionBuffer>,
        watermarks: &mut BTreeMap<i32, i64>,
    ) {
        metrics::counter!(metric::RECORDS).increment(1);
        let offset = message.offset();
        let lateness = i64::try_from(self.config.allowed_lateness.as_millis()).unwrap_or(i64::MAX);
        let watermark = watermarks.entry(message.partition()).or_insert(i64::MIN);
        let parsed = match message.payload() {
            Some(payload) => EventRecord::from_json(payload).map_err(|e| e.to_string()),
            None => Err("record has no value".to_owned()),
        }
        .and_then(|record| {
            // The partition's watermark is the latest event time read from it;
            // an event further behind it than the allowed lateness is too late
            // to be added to its hour and goes to the dead-letter topic instead.
            if record.ts < watermark.saturating_sub(lateness) {
                metrics::counter!(metric::LATE).increment(1);
                let _ = self.progress.late.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "late: event time {} is more than {} ms behind the partition watermark {}",
                    record.ts, lateness, watermark
                ));
            }
            *watermark = (*watermark).max(record.ts);
            Ok(record)
        });
        let buffer = buffers
            .entry(message.partition())
            .or_insert_with(|| PartitionBuffer::new(offset));
        match parsed {
            Ok(record) => {
                let _ = buffer.add(offset, record);
            }
            Err(reason) => {
                // The dead letter must be acknowledged before the offset can be
                // committed; until it is, the record stays unread.
                loop {
                    match self.dead_letters.send(message, &reason).await {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(%error, "dead-letter produce failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    }
                }
                metrics::counter!(metric::DEAD_LETTERS).increment(1);
                let _ = self.progress.dead_letters.fetch_add(1, Ordering::Relaxed);
                buffer.skip(offset);
            }
        }
    }

    fn drop_revoked(
        &self,
        buffers: &mut BTreeMap<i32, PartitionBuffer>,
        watermarks: &mut BTreeMap<i32, i64>,
    ) {
        let revoked: Vec<i32> = match self.revoked.lock() {
            Ok(mut revoked) => revoked.drain(..).collect(),
            Err(_) => return,
        };
        for partition in revoked {
            let _ = watermarks.remove(&partition);
            if buffers.remove(&partition).is_some() {
                tracing::info!(
                    partition,
                    "partition revoked; its uncommitted buffer is dropped"
                );
            }
        }
    }

    /// Writes every buffer, then commits the offsets they cover. A failed write
    /// keeps the buffers for the next attempt; nothing is committed past it.
    async fn flush(&self, buffers: &mut BTreeMap<i32, PartitionBuffer>) {
        if buffers.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.write_and_commit(buffers).await {
            Ok(()) => {
                buffers.clear();
                metrics::histogram!(metric::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                metrics::counter!(metric::FLUSH_FAILURES).increment(1);
                tracing::warn!(%error, "flush failed; will retry");
            }
        }
    }

    async fn write_and_commit(&self, buffers: &BTreeMap<i32, PartitionBuffer>) -> Result<()> {
        let topic = &self.config.kafka.topic;
        let mut offsets = TopicPartitionList::new();
        let (mut events, mut records) = (0u64, 0u64);
        for (partition, buffer) in buffers {
            let files = sink::encode(topic, *partition, buffer)?;
            sink::upload(&self.lake, &files).await?;
            let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
            metrics::counter!(metric::FILES).increment(files.len() as u64);
            metrics::counter!(metric::BYTES).increment(bytes as u64);
            let _ = self
                .progress
                .files_written
                .fetch_add(files.len() as u64, Ordering::Relaxed);
            offsets.add_partition_offset(
                topic,
                *partition,
                Offset::Offset(buffer.end_offset + 1),
            )?;
            events += buffer.len() as u64;
            records += (buffer.end_offset - buffer.start_offset + 1) as u64;
        }
        self.consumer.commit(&offsets, CommitMode::Sync)?;
        metrics::counter!(metric::EVENTS_COMMITTED).increment(events);
        let _ = self
            .progress
            .committed_events
            .fetch_add(events, Ordering::Relaxed);
        let _ = self
            .progress
            .committed_records
            .fetch_add(records, Ordering::Relaxed);
        tracing::debug!(events, records, "flushed and committed");
        Ok(())
    }
}

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    metrics: Option<PrometheusHandle>,
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.ready.load(Ordering::SeqCst) {
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
