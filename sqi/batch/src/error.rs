//! The batch crate's error type: computing days, merging months, importing publishers.

/// Errors of the batch job, the month merge and the publishers import.
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
    /// Reading or writing the object store failed (external; retry).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Building Arrow data failed (internal).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding Parquet failed (internal).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The input is unusable and the user must fix it (bad CSV, bad dates).
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
    /// A task of the job panicked or was cancelled (internal).
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
