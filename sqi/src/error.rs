//! The `sqi` crate's error type: the command line, telemetry and the demo.

/// Errors of starting a role from the command line, and of the demo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake could not be opened (user error in the URL or options).
    #[error(transparent)]
    Lake(#[from] sqi_schemas::Error),
    /// A query failed: a corrupt or foreign file in the lake, or an internal error.
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// Reading or writing the object store failed (external; retry).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Building Arrow data failed (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding Parquet failed (internal).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The input is unusable and the user must fix it (bad CSV, bad key file, bad dates).
    #[error("{0}")]
    Invalid(String),
    /// The processor has not marked every hour of a day complete (wait, or
    /// pass `--allow-incomplete`).
    #[error(
        "{date} is not complete: hours {missing} have no completeness marker from the processor \
         (under {markers}); wait for the processor to close them, or pass --allow-incomplete \
         to compute a provisional result marked complete=false"
    )]
    Incomplete {
        /// The day.
        date: chrono::NaiveDate,
        /// The hours without a marker, e.g. `13, 14, 23`.
        missing: String,
        /// Where the markers are looked for.
        markers: String,
    },
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
    /// A lake session could not be built or a result shaped.
    #[error(transparent)]
    Session(#[from] sqi_query::Error),
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A task of the job panicked or was cancelled (internal).
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
