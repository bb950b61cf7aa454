//! The contracts every SQI Engine role agrees on, and nothing else.
//!
//! This crate owns:
//! - [`event`]: the HTTP event as publishers' widgets send it, and the rules that
//!   accept or reject it, each with a stable error code;
//! - [`api`]: the error body every HTTP role answers with;
//! - [`channels`]: the social channel catalog (a data file, `data/channels.csv`);
//! - [`record`]: the normalised event as it travels through Kafka (schema `v = 1`);
//! - [`cli`]: the flags and `SQI_*` variables every role shares;
//! - [`lake`]: the lake's contract in one place: the Arrow schema of every
//!   table, every path (Hive partitions, file names, completeness markers,
//!   the processor's range log, `publishers/`), the Parquet writer profiles,
//!   put/list/footer helpers, typed access to `publishers`, and how a lake
//!   URL becomes an object store.
//!
//! It must not own I/O beyond opening the object store and those lake
//! helpers (one file put, listed or read at a time), nor any service logic:
//! ingest, the processor, the batch job and the report API all build on it, and
//! it builds on none of them. `../shared/CONTRACTS.md` is the source of truth;
//! `docs/event.schema.json` is generated from the same rules and checked by tests.
#![deny(missing_docs)]

pub mod api;
pub mod channels;
pub mod cli;
pub mod event;
pub mod lake;
pub mod record;

/// Errors of the contracts crate: opening a lake, reading a data file, or
/// putting, listing and reading lake files.
///
/// Event validation has its own richer type, [`event::EventError`], because
/// every rejection must carry a stable, client-facing code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake URL is malformed or has an unsupported scheme (user error, do not retry).
    #[error("invalid lake url `{url}`: {reason}")]
    InvalidLakeUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The object store refused to be built from the given options (user error).
    #[error("cannot open object store for `{url}`: {source}")]
    ObjectStore {
        /// The lake URL.
        url: String,
        /// The object_store error.
        source: object_store::Error,
    },
    /// An object store request failed (external; retry).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Building Arrow data failed (internal), or a file's column has a type
    /// the contract does not allow.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding or decoding Parquet failed (internal, or a corrupt file).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A lake file is not Parquet (someone else wrote it, or it is cut short).
    #[error("{path} is not Parquet: {reason}")]
    NotParquet {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Parquet footer's key-value metadata does not parse.
    #[error("{key}: {reason}")]
    Footer {
        /// The key.
        key: &'static str,
        /// Why its value does not parse.
        reason: String,
    },
    /// The `publishers` file does not have the contract's columns.
    #[error("publishers: {0}")]
    Publishers(String),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
