//! How every SQI Engine role connects to Kafka, and nothing else.
//!
//! This crate owns the connection half of `CONTRACTS.md` §4: the bootstrap
//! brokers, the security protocol (plaintext, TLS, SASL over TLS), the SASL
//! mechanism and its secrets, and the librdkafka properties they become. Every
//! Kafka client of every role (ingest's producer, the processor's consumer and
//! dead-letter producer, the demo, the tests' and benches' own clients) builds
//! its `ClientConfig` here, so that a cluster reachable by one is reachable by
//! all of them.
//!
//! It must not own what a client does once connected (topics, transactions,
//! offsets, delivery): that belongs to the role.
#![deny(missing_docs)]

/// Errors of the connection settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A secret file could not be read (user error, do not retry).
    #[error("cannot read {what} from `{path}`: {source}")]
    SecretFile {
        /// Which secret.
        what: &'static str,
        /// The file named by its flag.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
