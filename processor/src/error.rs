//! The processor's error type. Record-level problems are not errors: they go
//! to the dead-letter topic. These are the failures of the service itself.

/// Errors that stop a flush or the processor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka client creation, subscription or commit failed (external; retry).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The lake could not be opened (user error in the URL or options).
    #[error(transparent)]
    Lake(#[from] sqi_schemas::Error),
    /// An object store write failed (external; retry).
    #[error("object store: {0}")]
    Store(object_store::Error),
    /// Building Arrow data failed (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding Parquet failed (internal).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The admin listener could not be served (environment).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
