//! The dead-letter topic: a record the processor cannot use is republished with
//! its original key, value and headers, plus where it came from and why.
//!
//! The consume loop only enqueues a dead letter ([`DeadLetters::enqueue`]); it
//! never waits for the broker, so a stream of bad records or an unavailable
//! dead-letter topic cannot stall it. The lake writer waits for every dead
//! letter of a range ([`DeadLetters::settle`]) before it claims the range, so
//! a source offset is never written past before its dead letter is safe.
//! While the topic stays unavailable the processor reports itself unready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use sqi_kafka::{Connection, KafkaArgs, KafkaContext};

use crate::error::{Error, Result};
use crate::metric;

/// Header names added to dead-lettered records.
pub mod header {
    /// The source topic.
    pub const TOPIC: &str = "sqi.dlq.topic";
    /// The source partition.
    pub const PARTITION: &str = "sqi.dlq.partition";
    /// The source offset.
    pub const OFFSET: &str = "sqi.dlq.offset";
    /// Why the record was refused.
    pub const ERROR: &str = "sqi.dlq.error";
}

/// How long a dead letter may wait for its acknowledgement before the
/// dead-letter topic counts as unavailable (the wait goes on).
const STALLED_AFTER: Duration = Duration::from_secs(10);

/// A dead letter's own copy of the record (the Kafka message is gone by the
/// time it may have to be sent again) and its delivery, if it was enqueued.
pub struct PendingLetter {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
    delivery: Option<DeliveryFuture>,
}

impl std::fmt::Debug for PendingLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLetter")
            .field("bytes", &self.payload.as_ref().map_or(0, Vec::len))
            .field("enqueued", &self.delivery.is_some())
            .finish()
    }
}

/// Publishes refused records; see the module docs for when they are awaited.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer<KafkaContext>,
    topic: String,
    unavailable: Arc<AtomicBool>,
}

impl DeadLetters {
    /// Creates the dead-letter producer, on the consumer's connection.
    pub fn new(kafka: &KafkaArgs, connection: Connection, topic: &str) -> Result<Self> {
        let config = kafka.client_config(|config| {
            let _ = config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                // The topic's partitions and retention are the deployment's
                // choice: never create it with a broker's defaults (and never
                // create the events topic when its metadata is asked here).
                .set("allow.auto.create.topics", "false")
                // A failure reported within a minute is retried (and shown as
                // unavailability) sooner than librdkafka's default five.
                .set("message.timeout.ms", "60000");
        })?;
        Ok(Self {
            producer: config
                .create_with_context(KafkaContext { connection })
                .map_err(Error::Kafka)?,
            topic: topic.to_owned(),
            unavailable: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The topic's metadata, asked through this producer's connection.
    pub(crate) fn fetch_metadata(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> rdkafka::error::KafkaResult<rdkafka::metadata::Metadata> {
        self.producer.client().fetch_metadata(Some(topic), timeout)
    }

    /// Whether dead letters are failing or waiting too long (readiness).
    pub fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
    }

    fn set_unavailable(&self, unavailable: bool) {
        if self.unavailable.swap(unavailable, Ordering::Relaxed) != unavailable {
            metrics::gauge!(metric::DLQ_UNAVAILABLE).set(if unavailable { 1.0 } else { 0.0 });
            if unavailable {
                tracing::warn!(topic = %self.topic, "the dead-letter topic is unavailable");
            } else {
                tracing::info!(topic = %self.topic, "the dead-letter topic is available again");
            }
        }
    }

    /// Copies one refused record with its origin and reason and hands it to
    /// the producer without waiting. If the producer's queue is full it is
    /// sent later, by [`Self::settle`].
    pub fn enqueue(&self, message: &BorrowedMessage<'_>, reason: &str) -> PendingLetter {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        headers = headers
            .insert(Header {
                key: header::TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: header::PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: header::OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: header::ERROR,
                value: Some(reason),
            });
        let mut letter = PendingLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            delivery: None,
        };
        letter.delivery = self.produce(&letter);
        letter
    }

    fn produce(&self, letter: &PendingLetter) -> Option<DeliveryFuture> {
        let mut record =
            FutureRecord::<[u8], [u8]>::to(&self.topic).headers(letter.headers.clone());
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload);
        }
        match self.producer.send_result(record) {
            Ok(delivery) => Some(delivery),
            Err((error, _)) => {
                tracing::debug!(%error, "dead letter not enqueued; it is sent when its range closes");
                None
            }
        }
    }

    /// Waits until every letter is acknowledged, sending again those that
    /// failed, with backoff. Returns `false` as soon as `current` says the
    /// range is no longer this processor's to write.
    pub async fn settle(&self, letters: Vec<PendingLetter>, current: impl Fn() -> bool) -> bool {
        let mut backoff = Duration::from_millis(100);
        for mut letter in letters {
            loop {
                if !current() {
                    return false;
                }
                let Some(delivery) = letter.delivery.as_mut() else {
                    letter.delivery = self.produce(&letter);
                    if letter.delivery.is_none() {
                        self.failed(&mut backoff).await;
                    }
                    continue;
                };
                match tokio::time::timeout(STALLED_AFTER, delivery).await {
                    Ok(Ok(Ok(_))) => {
                        self.set_unavailable(false);
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Ok(Ok(Err((error, _)))) => {
                        tracing::warn!(%error, retry_in = ?backoff, "dead-letter produce failed; retrying");
                        letter.delivery = None;
                        self.failed(&mut backoff).await;
                    }
                    // The producer dropped the message without a verdict.
                    Ok(Err(_)) => {
                        letter.delivery = None;
                        self.failed(&mut backoff).await;
                    }
                    // Still waiting: librdkafka retries it within its
                    // message timeout; sending it again would duplicate it.
                    Err(_) => self.set_unavailable(true),
                }
            }
        }
        true
    }

    async fn failed(&self, backoff: &mut Duration) {
        metrics::counter!(metric::DLQ_RETRIES).increment(1);
        self.set_unavailable(true);
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(20));
    }
}
