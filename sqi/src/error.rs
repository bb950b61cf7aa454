//! The `sqi` crate's error type: the command line, telemetry and the demo.

/// Errors of starting a role from the command line, and of the demo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake could not be opened (user error in the URL or options).
    #[error(transparent)]
    Lake(#[from] sqi_schemas::Error),
    /// The input is unusable and the user must fix it (bad CSV, bad key file, bad dates).
    #[error("{0}")]
    Invalid(String),
    /// A Kafka client failed (external).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The processor role (`sqi process`, the demo's processor) failed.
    #[error(transparent)]
    Processor(#[from] sqi_processor::Error),
    /// Ingest failed.
    #[error(transparent)]
    Ingest(#[from] sqi_ingest::Error),
    /// The batch job, the month merge or the publishers import failed.
    #[error(transparent)]
    Batch(#[from] sqi_batch::Error),
    /// The report API failed.
    #[error(transparent)]
    Report(#[from] sqi_report::Error),
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The demo's history could not be written to the lake (external; retry).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The demo's history could not be shaped as the lake's rows (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A task of the job panicked or was cancelled (internal).
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
