//! The report crate's error type: loading keys, planning and reading answers, serving.

/// Errors of the report API outside a request's own rejection
/// ([`crate::ReportError`] is what a client sees).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake could not be opened (user error in the URL or options).
    #[error(transparent)]
    Lake(#[from] sqi_schemas::Error),
    /// A query failed: a corrupt or foreign file in the lake, or an internal error.
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A lake session could not be built or a result shaped.
    #[error(transparent)]
    Session(#[from] sqi_query::Error),
    /// Reading the object store failed (external; retry).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Building Arrow data failed (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Decoding Parquet failed (a corrupt or foreign file).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The input is unusable and the user must fix it (a bad key file), or
    /// an answer could not be shaped.
    #[error("{0}")]
    Invalid(String),
    /// Local I/O failed (the key file, the listener).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A task panicked or was cancelled (internal).
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
