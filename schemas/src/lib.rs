//! The contracts every SQI Engine role agrees on, and nothing else.
//!
//! This crate owns:
//! - [`event`]: the HTTP event as publishers' widgets send it, and the rules that
//!   accept or reject it, each with a stable error code;
//! - [`channels`]: the social channel catalog (a data file, `data/channels.csv`);
//! - [`record`]: the normalised event as it travels through Kafka (schema `v = 1`);
//! - [`cli`]: the flags and `SQI_*` variables every role shares;
//! - [`lake`]: the lake's layout (prefixes, Hive partitions, file naming), the Arrow
//!   schema of every table, and how a lake URL becomes an object store.
//!
//! It must not own I/O beyond opening the object store, nor any service logic:
//! ingest, the processor, the batch job and the report API all build on it, and
//! it builds on none of them. `../shared/CONTRACTS.md` is the source of truth;
//! `docs/event.schema.json` is generated from the same rules and checked by tests.
#![deny(missing_docs)]

pub mod channels;
pub mod cli;
pub mod event;
pub mod lake;
pub mod record;

/// Errors of the contracts crate: opening a lake, or reading a data file.
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
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
