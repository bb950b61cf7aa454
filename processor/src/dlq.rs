//! The dead-letter topic: a record the processor cannot use is republished with
//! its original key, value and headers, plus where it came from and why.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::{Error, Result};

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

/// Publishes refused records and waits for the broker to acknowledge each one,
/// so that the source offset is never committed before its dead letter is safe.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    /// Creates the dead-letter producer.
    pub fn new(base: &ClientConfig, topic: &str) -> Result<Self> {
        let mut config = base.clone();
        let _ = config.set("enable.idempotence", "true").set("acks", "all");
        Ok(Self {
            producer: config.create().map_err(Error::Kafka)?,
            topic: topic.to_owned(),
        })
    }

    /// Sends one refused record with its origin and reason.
    pub async fn send(&self, message: &BorrowedMessage<'_>, reason: &str) -> Result<()> {
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
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| Error::Kafka(error))
    }
}
