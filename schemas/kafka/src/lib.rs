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
pub mod msk_iam;

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
    /// The MSK IAM region is not an AWS region name (user error, do not retry).
    #[error(
        "`{region}` is not an AWS region name (MSK IAM signs for kafka.<region>.amazonaws.com)"
    )]
    MskRegion {
        /// The region as given.
        region: String,
    },
    /// No AWS credentials for MSK IAM from the standard chain (a platform or
    /// configuration fault; the refresher retries).
    #[error(
        "cannot get AWS credentials for MSK IAM (tried AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, container and instance metadata): {source}"
    )]
    MskCredentials {
        /// The chain's error.
        source: object_store::Error,
    },
    /// The credential chain gave an empty access key id or secret (user error).
    #[error("the AWS credentials for MSK IAM have an empty access key id or secret access key")]
    MskEmptyCredentials,
    /// The MSK IAM token expired and no refresh has succeeded since.
    #[error(
        "the MSK IAM token expired at {expired_at_ms} ms (Unix) and was not refreshed: {refresh_error}"
    )]
    MskTokenExpired {
        /// When the last token expired, in Unix milliseconds.
        expired_at_ms: i64,
        /// Why the last refresh failed.
        refresh_error: String,
    },
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
