//! The Kafka side of ingest: one idempotent producer per process, and the rule
//! that a request is answered only once every one of its events is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqi_schemas::record::EventRecord;
use std::time::Instant;

use crate::config::IngestConfig;
use crate::error::{Error, Result};
use crate::health::{Health, HealthContext, STATS_INTERVAL};
use crate::http::metric;

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The local queue is full: the broker is slower than the traffic.
    #[error("producer queue full")]
    QueueFull,
    /// The broker refused or did not acknowledge within the delivery timeout.
    #[error("delivery failed: {0}")]
    Delivery(String),
}

/// A cheaply cloneable handle on the process's producer.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer<HealthContext>,
    topic: Arc<str>,
    deadline: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .finish()
    }
}

/// The producer settings ingest's promise depends on; `--kafka-config` may tune
/// the rest but these come first so that an explicit override is deliberate.
pub fn producer_config(config: &IngestConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    let timeout_ms = config.delivery_timeout.as_millis().max(10).to_string();
    let _ = client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", &timeout_ms)
        .set("socket.connection.setup.timeout.ms", "1000")
        .set(
            "statistics.interval.ms",
            STATS_INTERVAL.as_millis().to_string(),
        );
    for property in &config.kafka.extra {
        let _ = client.set(&property.key, &property.value);
    }
    client
}

impl EventProducer {
    /// Creates the producer; fails only on an invalid configuration.
    pub fn new(config: &IngestConfig, health: Arc<Health>) -> Result<Self> {
        let producer: FutureProducer<HealthContext> = producer_config(config)
            .create_with_context(HealthContext { health })
            .map_err(Error::Kafka)?;
        Ok(Self {
            producer,
            topic: Arc::from(config.kafka.topic.as_str()),
            deadline: config.delivery_timeout + Duration::from_millis(250),
        })
    }

    /// Produces every record and waits for all acknowledgements.
    ///
    /// Keys are `event_id`, so a client's retry of the same event lands in the
    /// same partition, where the processor deduplicates it.
    pub async fn produce(&self, records: &[EventRecord]) -> Result<(), ProduceError> {
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let payload = record.to_json();
            let message = FutureRecord::to(&self.topic)
                .key(record.event_id.as_bytes())
                .payload(&payload);
            match self.producer.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => {
                    return Err(
                        if matches!(
                            error.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ) {
                            ProduceError::QueueFull
                        } else {
                            ProduceError::Delivery(error.to_string())
                        },
                    );
                }
            }
        }
        let results = tokio::time::timeout(self.deadline, join_all(deliveries))
            .await
            .map_err(|_| ProduceError::Delivery("no acknowledgement before the deadline".into()))?;
        for result in results {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(ProduceError::Delivery(error.to_string())),
                Err(_) => {
                    return Err(ProduceError::Delivery(
                        "producer dropped the message".into(),
                    ));
                }
            }
        }
        metrics::histogram!(metric::DELIVERY_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Waits (bounded) for everything queued to be delivered, for shutdown.
    pub async fn flush(&self) {
        let producer = self.producer.clone();
        let deadline = self.deadline;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(deadline)).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "producer flush incomplete at shutdown");
        }
    }

    /// Messages waiting in the local queue.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }
}
