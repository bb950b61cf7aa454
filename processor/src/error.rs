//! The processor's error type. Record-level problems are not errors: they go
//! to the dead-letter topic. These are the failures of the service itself.

/// Errors that stop a write or the processor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka client creation, subscription or commit failed (external; retry).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka connection flags are wrong or a secret is unreadable (user error).
    #[error(transparent)]
    Connection(#[from] sqi_kafka::Error),
    /// The configuration contradicts itself (user error).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The topic is missing or has no partitions (user error).
    #[error("topic {0:?} not found or has no partitions")]
    NoTopic(String),
    /// The lake could not be opened (user error in the URL or options).
    #[error(transparent)]
    Lake(#[from] sqi_schemas::Error),
    /// An object store request failed (external; retried with backoff).
    #[error("object store: {0}")]
    Store(object_store::Error),
    /// An entry of the range log does not parse (someone else wrote under
    /// `_processor/`; the processor will not guess).
    #[error("range log entry {path} is not valid: {source}")]
    CorruptLog {
        /// The entry.
        path: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// Serialising a log entry failed (internal).
    #[error("json: {0}")]
    Json(serde_json::Error),
    /// Building Arrow data failed (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding or decoding Parquet failed (internal, or a corrupt events file).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The admin listener could not be served (environment).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A background task died (internal).
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
