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

mod args;
mod connection;

pub use args::{KafkaArgs, KafkaProperty, SaslMechanism, Secret, SecurityProtocol, read_secret};
pub use connection::{Connection, ConnectionFailure, KafkaContext};

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
    /// A secret file holds nothing (user error, do not retry).
    #[error("{what} file `{path}` is empty")]
    EmptySecret {
        /// Which secret.
        what: &'static str,
        /// The file named by its flag.
        path: String,
    },
    /// `--kafka-ca-file` could not be read (user error, do not retry).
    #[error("cannot read the Kafka CA file `{path}`: {source}")]
    CaFile {
        /// The file named by the flag.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The flags cannot describe a working connection (user error).
    #[error("invalid Kafka connection settings: {0}")]
    Invalid(String),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
