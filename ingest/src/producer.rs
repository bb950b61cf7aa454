//! The Kafka side of ingest: one idempotent producer per process, and the rule
//! that a request is answered only once every one of its events is acknowledged.
//!
//! An idempotent producer carries sequence numbers per partition. Once a
//! delivery fails (timed out while the broker was away, or refused), that state
//! is in doubt: librdkafka drains what is in flight, then asks the broker to
//! bump the producer epoch. Ingest instead replaces the producer with a fresh
//! one (a new producer id); requests in flight on the old one get 503 and are
//! retried by the client with the same `event_id`s.
//!
//! The replacement was written for Tansu, which panicked on an epoch bump. On
//! Apache Kafka 4.1 it is still needed: with it removed (b9e0bf8, reverted in
//! 550149b), `a_broker_outage_gets_fast_503s_and_recovers_without_a_restart`
//! failed in CI, where the machine was loaded: after the broker was killed
//! with -9 and resumed, ingest answered 503 for the whole next 60 s. The same
//! test passed on an idle machine, so the self-recovery is at least
//! load-dependent; the suspect is the drain before the epoch bump, which new
//! requests keep refilling. A fresh producer recovers as soon as the broker
//! answers.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use sqi_kafka::Connection;
use sqi_schemas::record::EventRecord;

use crate::config::IngestConfig;
use crate::error::{Error, Result};
use crate::health::{Health, HealthContext, STATS_INTERVAL};
use crate::metric;

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

type Inner = FutureProducer<HealthContext>;

/// A cheaply cloneable handle on the process's producer.
#[derive(Clone)]
pub struct EventProducer {
    /// The producer and its generation; a failure replaces only the generation that failed.
    current: Arc<RwLock<(u64, Inner)>>,
    client_config: Arc<ClientConfig>,
    context: HealthContext,
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

/// The producer settings ingest's promise depends on, after the connection's
/// (brokers, TLS, SASL); `--kafka-config` may override them, deliberately.
pub fn producer_config(config: &IngestConfig) -> Result<ClientConfig> {
    let timeout_ms = config.delivery_timeout.as_millis().max(10).to_string();
    let queue_kbytes = config.producer_queue_kbytes();
    // A record is a few hundred bytes; the count bound keeps librdkafka's
    // per-message overhead, which the kbytes bound does not count, in check.
    let queue_messages = queue_kbytes.clamp(1000, 200_000);
    let client = config.kafka.client_config(|client| {
        let _ = client
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            // The queue holds what the broker has not acknowledged yet; it is
            // sized from the pod's memory limit (it was a fixed 256 MiB of a 512 MiB pod).
            .set("queue.buffering.max.messages", queue_messages.to_string())
            .set("queue.buffering.max.kbytes", queue_kbytes.to_string())
            .set("message.timeout.ms", &timeout_ms)
            .set("socket.connection.setup.timeout.ms", "1000")
            .set(
                "statistics.interval.ms",
                STATS_INTERVAL.as_millis().to_string(),
            );
    })?;
    Ok(client)
}

/// Whether a delivery error leaves the producer's sequence state in doubt.
/// A full queue or an oversized message never reached the broker.
fn poisons_the_producer(error: &KafkaError) -> bool {
    !matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::QueueFull | RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

impl EventProducer {
    /// Creates the producer; fails only on an invalid configuration or an
    /// unreadable secret, never on an unreachable broker.
    pub fn new(config: &IngestConfig, health: Arc<Health>, connection: Connection) -> Result<Self> {
        let client_config = producer_config(config)?;
        let context = HealthContext { health, connection };
        let producer: Inner = client_config
            .create_with_context(context.clone())
            .map_err(Error::Kafka)?;
        Ok(Self {
            current: Arc::new(RwLock::new((0, producer))),
            client_config: Arc::new(client_config),
            context,
            topic: Arc::from(config.kafka.topic.as_str()),
            deadline: config.delivery_timeout + Duration::from_millis(250),
        })
    }

    fn producer(&self) -> Option<(u64, Inner)> {
        self.current.read().ok().map(|c| (c.0, c.1.clone()))
    }

    /// Replaces generation `failed` with a fresh producer (new producer id),
    /// unless another request already did. The old one is dropped while the
    /// broker may still be away, off the async threads, so it never reconnects
    /// with its doubtful sequence state.
    fn reset(&self, failed: u64, reason: &str) {
        let Ok(mut current) = self.current.write() else {
            return;
        };
        if current.0 != failed {
            return;
        }
        let fresh: Inner = match self.client_config.create_with_context(self.context.clone()) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(%error, "cannot create a replacement producer");
                return;
            }
        };
        let (_, old) = std::mem::replace(&mut *current, (failed + 1, fresh));
        drop(current);
        tracing::warn!(reason, generation = failed + 1, "kafka producer replaced");
        metrics::counter!(metric::PRODUCER_RESETS).increment(1);
        let _dropped = tokio::task::spawn_blocking(move || drop(old));
    }

    /// Produces every record and waits for all acknowledgements.
    ///
    /// Keys are `event_id`, so a client's retry of the same event lands in the
    /// same partition, where the processor deduplicates it. Each record is
    /// dropped once librdkafka holds its copy, so a request waiting for a slow
    /// broker holds one copy of its events, not two.
    pub async fn produce(&self, records: Vec<EventRecord>) -> Result<(), ProduceError> {
        let started = Instant::now();
        let (generation, producer) = self
            .producer()
            .ok_or_else(|| ProduceError::Delivery("producer unavailable".into()))?;
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let payload = record.to_json();
            let message = FutureRecord::to(&self.topic)
                .key(record.event_id.as_bytes())
                .payload(&payload);
            match producer.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    return Err(ProduceError::QueueFull);
                }
                Err((error, _)) => {
                    self.reset(generation, &error.to_string());
                    return Err(ProduceError::Delivery(error.to_string()));
                }
            }
        }
        let Ok(results) = tokio::time::timeout(self.deadline, join_all(deliveries)).await else {
            self.reset(generation, "no acknowledgement before the deadline");
            return Err(ProduceError::Delivery(
                "no acknowledgement before the deadline".into(),
            ));
        };
        for result in results {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    if poisons_the_producer(&error) {
                        self.reset(generation, &error.to_string());
                    }
                    return Err(ProduceError::Delivery(error.to_string()));
                }
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
        let Some((_, producer)) = self.producer() else {
            return;
        };
        let deadline = self.deadline;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(deadline)).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "producer flush incomplete at shutdown");
        }
    }

    /// Messages waiting in the local queue.
    pub fn queue_depth(&self) -> i32 {
        self.producer().map_or(0, |(_, p)| p.in_flight_count())
    }
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_comes_first_then_ingest_then_kafka_config() {
        let mut config = IngestConfig::new("b1:9093", "t");
        config.kafka.security_protocol = sqi_kafka::SecurityProtocol::Ssl;
        config.kafka.extra = vec!["linger.ms=50".parse().unwrap()];
        let client = producer_config(&config).unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("b1:9093"));
        assert_eq!(client.get("security.protocol"), Some("ssl"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("linger.ms"), Some("50"));
    }

    #[test]
    fn an_unreadable_password_file_stops_the_producer_with_its_path() {
        let mut config = IngestConfig::new("b1:9093", "t");
        config.kafka.security_protocol = sqi_kafka::SecurityProtocol::SaslSsl;
        config.kafka.sasl_mechanism = Some(sqi_kafka::SaslMechanism::ScramSha512);
        config.kafka.username = Some("sqi-ingest".into());
        config.kafka.password_file = Some("/nonexistent/password".into());
        let error = producer_config(&config).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read the Kafka password from `/nonexistent/password`"),
            "{error}"
        );
    }
}
