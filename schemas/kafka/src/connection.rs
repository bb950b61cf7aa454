//! What every client's context shares: one report per connection failure,
//! librdkafka's log routed to `tracing`, and (for Amazon MSK IAM) the
//! OAUTHBEARER token.
//!
//! librdkafka retries a broker it cannot reach, or that refuses it, for as
//! long as the client lives, and says so each time, in its log and in an
//! error event, from every client of the process. A wrong password would
//! flood the log with the same line. [`Connection`] turns that into one
//! `ERROR` line per outage that names the cause (authentication, TLS, or an
//! unreachable broker) and the flag to check; the repeats go to `DEBUG`.
//! A broker seen up again (statistics) ends the outage, so the next failure
//! is reported again.
//!
//! It must not decide readiness: each role does from its own state (ingest
//! from its statistics, the processor from its metadata), and a failure
//! keeps them unready because no broker is up, not because of this log.

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::Result;
use crate::args::KafkaArgs;
use crate::msk_iam::MskIamTokens;

/// Why no broker can be used, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectionFailure {
    /// No broker answers: wrong address or port, a broker down, a network
    /// policy, or a protocol the listener does not speak.
    Unreachable,
    /// The TLS handshake failed: most often a broker certificate the CA
    /// file (or the system store) does not trust.
    Tls,
    /// The broker refused the credentials (SASL).
    Authentication,
}

impl ConnectionFailure {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Tls => "tls",
            Self::Authentication => "authentication",
        }
    }

    /// What to check, by flag.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Unreachable => {
                "no broker answers: check --kafka-brokers, the network and --kafka-security-protocol"
            }
            Self::Tls => {
                "the TLS handshake failed: check that --kafka-ca-file holds the CA that signed the brokers' certificates"
            }
            Self::Authentication => {
                "the broker refused the credentials: check --kafka-username and --kafka-password-file (or the MSK IAM role)"
            }
        }
    }

    /// Reads a librdkafka error code and message. `None` is not a
    /// connection failure (a missing topic, a timeout of one request).
    pub fn classify(code: Option<RDKafkaErrorCode>, message: &str) -> Option<Self> {
        match code {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                return Some(Self::Authentication);
            }
            Some(RDKafkaErrorCode::SSL) => return Some(Self::Tls),
            _ => {}
        }
        let text = message.to_ascii_lowercase();
        if text.contains("sasl authentication error")
            || text.contains("authentication failed")
            || text.contains("sasl handshake failed")
        {
            Some(Self::Authentication)
        } else if text.contains("ssl handshake failed")
            || text.contains("certificate verify failed")
        {
            Some(Self::Tls)
        } else if matches!(
            code,
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Resolve
            )
        ) || text.contains("connection refused")
            || text.contains("failed to resolve")
            || text.contains("brokers are down")
            || text.contains("connection setup timed out")
            || (text.contains("connect to") && text.contains("failed"))
        {
            Some(Self::Unreachable)
        } else {
            None
        }
    }

    /// Whether an error a client returned is a connection failure, which
    /// its context has already reported.
    pub fn of(error: &KafkaError) -> Option<Self> {
        Self::classify(error.rdkafka_error_code(), &error.to_string())
    }
}

#[derive(Debug, Default)]
struct Outage {
    /// The failure reported in this outage, if any.
    reported: Option<ConnectionFailure>,
}

/// MSK IAM's token source, started by [`Connection::ready`].
#[derive(Debug)]
struct Iam {
    region: String,
    tokens: tokio::sync::OnceCell<Arc<MskIamTokens>>,
}

#[derive(Debug)]
struct Shared {
    brokers: String,
    outage: Mutex<Outage>,
    iam: Option<Iam>,
}

/// One process's connection to Kafka, shared by the contexts of all its
/// clients (clone it; clones share the state). See the module docs.
#[derive(Debug, Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    /// The connection `args` describe. MSK IAM clients also need
    /// [`Connection::ready`] awaited before their first poll.
    pub fn new(args: &KafkaArgs) -> Result<Self> {
        args.validate()?;
        let iam = args
            .msk_region
            .as_ref()
            .filter(|_| args.uses_msk_iam())
            .map(|region| Iam {
                region: region.clone(),
                tokens: tokio::sync::OnceCell::new(),
            });
        Ok(Self {
            shared: Arc::new(Shared {
                brokers: args.brokers.clone(),
                outage: Mutex::new(Outage::default()),
                iam,
            }),
        })
    }

    /// Waits until the connection can authenticate: for MSK IAM, until the
    /// first token is signed (credentials loaded) and its refresher runs on
    /// this runtime; otherwise at once. Await it before a client's first
    /// poll: until then librdkafka's token requests fail and are retried.
    pub async fn ready(&self) -> Result<()> {
        if let Some(iam) = &self.shared.iam {
            let _tokens = iam
                .tokens
                .get_or_try_init(|| MskIamTokens::start(iam.region.clone()))
                .await?;
        }
        Ok(())
    }

    /// Reports a failure: one `ERROR` line the first time in an outage, or
    /// when it says more than the one reported (a refused password after
    /// "all brokers are down"); `DEBUG` otherwise.
    pub fn report(&self, failure: ConnectionFailure, cause: &str) {
        let first = match self.shared.outage.lock() {
            Ok(mut outage) if outage.reported.is_none_or(|r| failure > r) => {
                outage.reported = Some(failure);
                true
            }
            Ok(_) => false,
            // A poisoned lock loses only the de-duplication, not the report.
            Err(_) => true,
        };
        if first {
            tracing::error!(
                brokers = %self.shared.brokers,
                failure = failure.as_str(),
                cause,
                hint = failure.hint(),
                "cannot connect to Kafka"
            );
        } else {
            tracing::debug!(target: "librdkafka", failure = failure.as_str(), cause, "kafka connection still failing");
        }
    }

    /// Ends an outage: a broker is up.
    pub fn connected(&self) {
        let ended = self
            .shared
            .outage
            .lock()
            .ok()
            .and_then(|mut outage| outage.reported.take());
        if let Some(failure) = ended {
            tracing::info!(brokers = %self.shared.brokers, after = failure.as_str(), "connected to Kafka again");
        }
    }

    /// For `ClientContext::stats`: a learned broker in state `UP` ends the outage.
    pub fn observe(&self, statistics: &Statistics) {
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.connected();
        }
    }

    /// For `ClientContext::log`: librdkafka's log in `tracing`, with
    /// connection failures reported once.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel as Level;
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                match ConnectionFailure::classify(None, message) {
                    Some(failure) => self.report(failure, message),
                    None => tracing::error!(target: "librdkafka", facility, "{message}"),
                }
            }
            Level::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            Level::Notice | Level::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            Level::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    /// For `ClientContext::error`: connection failures reported once, other
    /// client errors as warnings (librdkafka retries them itself).
    pub fn error(&self, error: &KafkaError, reason: &str) {
        match ConnectionFailure::classify(error.rdkafka_error_code(), reason) {
            Some(failure) => self.report(failure, reason),
            None => tracing::warn!(%error, reason, "kafka client error"),
        }
    }

    /// For `ClientContext::generate_oauth_token`: the current MSK IAM token.
    /// Never blocks: the token is signed ahead by a background task, and
    /// this only copies it.
    pub fn oauth_token(&self) -> Result<OAuthToken, Box<dyn StdError>> {
        let Some(iam) = &self.shared.iam else {
            return Err("no OAUTHBEARER token: --kafka-sasl-mechanism is not AWS_MSK_IAM".into());
        };
        let Some(tokens) = iam.tokens.get() else {
            return Err("no MSK IAM token yet: Connection::ready was not awaited".into());
        };
        match tokens.current() {
            Ok(token) => Ok(OAuthToken {
                token: token.token,
                principal_name: token.principal,
                lifetime_ms: token.expires_at_ms,
            }),
            Err(error) => {
                // librdkafka retries the refresh; say why once, not per retry.
                self.report(ConnectionFailure::Authentication, &error.to_string());
                Err(error.into())
            }
        }
    }
}

/// The context of a client that needs nothing of its own (the dead-letter
/// producer, the demo's, tests' and benches' clients): a [`Connection`].
#[derive(Debug, Clone)]
pub struct KafkaContext {
    /// The shared connection.
    pub connection: Connection,
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.connection.log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        self.connection.observe(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connection.error(&error, reason);
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn StdError>> {
        self.connection.oauth_token()
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_messages_are_classified_by_cause() {
        let cases = [
            (
                None,
                "sasl_ssl://127.0.0.1:9094/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 310ms in state AUTH_REQ)",
                Some(ConnectionFailure::Authentication),
            ),
            (
                Some(RDKafkaErrorCode::Authentication),
                "whatever",
                Some(ConnectionFailure::Authentication),
            ),
            (
                None,
                "ssl://127.0.0.1:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified (after 8ms in state SSL_HANDSHAKE)",
                Some(ConnectionFailure::Tls),
            ),
            (
                Some(RDKafkaErrorCode::SSL),
                "x",
                Some(ConnectionFailure::Tls),
            ),
            (
                None,
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
                Some(ConnectionFailure::Unreachable),
            ),
            (
                Some(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
                Some(ConnectionFailure::Unreachable),
            ),
            (
                None,
                "Failed to resolve 'kafka.invalid:9092': Name or service not known",
                Some(ConnectionFailure::Unreachable),
            ),
            (
                Some(RDKafkaErrorCode::UnknownTopicOrPartition),
                "Subscribed topic not available",
                None,
            ),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                ConnectionFailure::classify(code, message),
                expected,
                "{message}"
            );
        }
    }

    #[test]
    fn a_more_specific_failure_is_reported_after_a_generic_one_and_an_outage_ends_when_a_broker_is_up()
     {
        let connection = Connection::new(&KafkaArgs::plaintext("127.0.0.1:1", "t")).unwrap();
        let reported = || connection.shared.outage.lock().unwrap().reported;
        connection.report(ConnectionFailure::Unreachable, "1/1 brokers are down");
        assert_eq!(reported(), Some(ConnectionFailure::Unreachable));
        connection.report(ConnectionFailure::Authentication, "refused");
        connection.report(ConnectionFailure::Unreachable, "1/1 brokers are down");
        assert_eq!(reported(), Some(ConnectionFailure::Authentication));
        let mut statistics = Statistics::default();
        let _ = statistics.brokers.insert(
            "b".into(),
            rdkafka::statistics::Broker {
                nodeid: 1,
                state: "UP".into(),
                ..Default::default()
            },
        );
        connection.observe(&statistics);
        assert_eq!(reported(), None);
    }

    #[tokio::test]
    async fn msk_iam_hands_librdkafka_the_current_token_without_waiting() {
        let mut args = KafkaArgs::plaintext("b-1.msk.example:9098", "t");
        args.security_protocol = crate::SecurityProtocol::SaslSsl;
        args.sasl_mechanism = Some(crate::SaslMechanism::AwsMskIam);
        args.msk_region = Some("eu-west-1".into());
        let connection = Connection::new(&args).unwrap();
        let Err(early) = connection.oauth_token() else {
            panic!("a token before Connection::ready");
        };
        assert!(early.to_string().contains("Connection::ready"), "{early}");

        let credentials: object_store::aws::AwsCredentialProvider = std::sync::Arc::new(
            object_store::StaticCredentialProvider::new(object_store::aws::AwsCredential {
                key_id: "AKIDEXAMPLE".into(),
                secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                token: None,
            }),
        );
        let tokens = MskIamTokens::start_with_credentials("eu-west-1".into(), credentials)
            .await
            .unwrap();
        let iam = connection.shared.iam.as_ref().unwrap();
        assert!(iam.tokens.set(tokens.clone()).is_ok());
        let expected = tokens.current().unwrap();
        let token = connection.oauth_token().unwrap();
        assert_eq!(token.token, expected.token);
        assert_eq!(token.principal_name, "AKIDEXAMPLE");
        assert_eq!(token.lifetime_ms, expected.expires_at_ms);
        assert!(!format!("{connection:?}").contains(&expected.token));
    }

    #[test]
    fn a_client_without_msk_iam_has_no_token_to_give() {
        let connection = Connection::new(&KafkaArgs::plaintext("127.0.0.1:1", "t")).unwrap();
        let Err(error) = connection.oauth_token() else {
            panic!("a token without MSK IAM");
        };
        assert!(error.to_string().contains("not AWS_MSK_IAM"), "{error}");
    }
}
