//! The tests' own Kafka clients, configured as the roles configure theirs
//! (`sqi_kafka::KafkaArgs`), for either listener of the test broker: the
//! PLAINTEXT one (`SQI_TEST_KAFKA_BROKERS`) or the SASL_SSL one with
//! SCRAM-SHA-512 (`SQI_TEST_KAFKA_SASL_BROKERS`, `SQI_TEST_KAFKA_CA_FILE`,
//! `SQI_TEST_KAFKA_USERNAME`, `SQI_TEST_KAFKA_PASSWORD`, from
//! `scripts/services env`). A test picks the listener by the brokers it
//! passes; everything it builds then connects the same way.

use std::path::PathBuf;
use std::sync::OnceLock;

use rdkafka::ClientConfig;
use sqi_kafka::{KafkaArgs, SaslMechanism, SecurityProtocol};

/// The SASL_SSL listener of the test broker, as `scripts/services env` describes it.
#[derive(Debug, Clone)]
pub struct SaslListener {
    /// Its bootstrap address.
    pub brokers: String,
    /// The CA that signed its certificate.
    pub ca_file: PathBuf,
    /// The SCRAM user.
    pub username: String,
    /// The SCRAM password.
    pub password: String,
}

impl SaslListener {
    /// Reads the listener from the environment; fails loudly without it.
    pub fn from_env() -> Self {
        Self::try_from_env().unwrap_or_else(|| {
            panic!(
                "SQI_TEST_KAFKA_SASL_BROKERS, SQI_TEST_KAFKA_CA_FILE, SQI_TEST_KAFKA_USERNAME and \
                 SQI_TEST_KAFKA_PASSWORD are not all set: run the suite with scripts/test"
            )
        })
    }

    fn try_from_env() -> Option<Self> {
        let get = |name: &str| std::env::var(name).ok();
        Some(Self {
            brokers: get("SQI_TEST_KAFKA_SASL_BROKERS")?,
            ca_file: PathBuf::from(get("SQI_TEST_KAFKA_CA_FILE")?),
            username: get("SQI_TEST_KAFKA_USERNAME")?,
            password: get("SQI_TEST_KAFKA_PASSWORD")?,
        })
    }

    /// A file holding `password`, as a Kubernetes Secret mount would, kept
    /// for the life of the test process.
    pub fn password_file(password: &str) -> PathBuf {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir for passwords"));
        let path = dir.path().join(format!("password-{}", crate::unique("p")));
        std::fs::write(&path, format!("{password}\n")).expect("write password file");
        path
    }

    /// The role's flags for this listener, with `password` and `ca_file`
    /// (a test of a wrong one passes its own).
    pub fn args_with(&self, topic: &str, password: &str, ca_file: PathBuf) -> KafkaArgs {
        let mut args = KafkaArgs::plaintext(&self.brokers, topic);
        args.security_protocol = SecurityProtocol::SaslSsl;
        args.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        args.username = Some(self.username.clone());
        args.password_file = Some(Self::password_file(password));
        args.ca_file = Some(ca_file);
        args
    }
}

/// The flags a role would be given to reach `brokers`: SASL_SSL with the
/// test credentials when `brokers` is the SASL listener, plaintext otherwise.
pub fn args(brokers: &str, topic: &str) -> KafkaArgs {
    match SaslListener::try_from_env() {
        Some(sasl) if sasl.brokers == brokers => {
            let ca_file = sasl.ca_file.clone();
            sasl.args_with(topic, &sasl.password, ca_file)
        }
        _ => KafkaArgs::plaintext(brokers, topic),
    }
}

/// A test client's configuration for `brokers`, built as the roles build
/// theirs; add the client's own settings with `.set`.
pub fn client_config(brokers: &str) -> ClientConfig {
    args(brokers, "")
        .client_config(|_| {})
        .expect("test Kafka client settings")
}

/// The `SQI_KAFKA_*` variables that make a role's child process connect to
/// `brokers` as [`args`] says (the password through a file).
pub fn role_env(brokers: &str) -> Vec<(String, String)> {
    let args = args(brokers, "");
    let mut env = vec![
        ("SQI_KAFKA_BROKERS".to_owned(), args.brokers.clone()),
        (
            "SQI_KAFKA_SECURITY_PROTOCOL".to_owned(),
            args.security_protocol.librdkafka_name().to_owned(),
        ),
    ];
    let optional = [
        (
            "SQI_KAFKA_SASL_MECHANISM",
            args.sasl_mechanism.map(|m| m.librdkafka_name().to_owned()),
        ),
        ("SQI_KAFKA_USERNAME", args.username.clone()),
        (
            "SQI_KAFKA_PASSWORD_FILE",
            args.password_file.map(|p| p.display().to_string()),
        ),
        (
            "SQI_KAFKA_CA_FILE",
            args.ca_file.map(|p| p.display().to_string()),
        ),
    ];
    env.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?))),
    );
    env
}
