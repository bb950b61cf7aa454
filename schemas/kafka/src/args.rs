//! The Kafka flags every role shares (`CONTRACTS.md` §4), each with its
//! `SQI_*` variable and its default written once, here, and the librdkafka
//! properties they become.
//!
//! It owns which properties a flag sets and in what order: the connection's
//! (brokers, security protocol, SASL, CA), then the role's, then
//! `--kafka-config`, which overrides everything. It must not set what a role
//! does with its client (acks, groups, offsets).
//!
//! A secret (the SASL password) is read from its file only while a
//! `ClientConfig` is built, held as a [`Secret`] that never prints, and never
//! appears in `--help`, `Debug` or an error message.

use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;

use crate::{Error, Result};

/// The `security.protocol` of every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication (loopback, tests, the demo).
    #[default]
    Plaintext,
    /// TLS, no SASL (a TLS listener that needs no credentials).
    Ssl,
    /// SASL without TLS: the password crosses the network in the clear
    /// for PLAIN, so only for trusted networks.
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext")]
    SaslPlaintext,
    /// SASL over TLS: Strimzi's SCRAM listener, Amazon MSK's IAM listener.
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name for it.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// Whether the connection is encrypted and checks the broker's certificate.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// How a SASL client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// Username and password, salted (Strimzi `KafkaUser` with `scram-sha-512`).
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// Username and password, salted, with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// Username and password as they are: only over TLS.
    #[value(name = "PLAIN")]
    Plain,
    /// Amazon MSK IAM: an OAUTHBEARER token presigned with AWS SigV4 from
    /// the standard AWS credential chain (IRSA included), refreshed before
    /// it expires. Needs `--kafka-msk-region`.
    #[value(name = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism`.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
            // librdkafka has no MSK mechanism: MSK IAM is OAUTHBEARER
            // with a token our client context makes (`Connection`).
            Self::AwsMskIam => "OAUTHBEARER",
        }
    }

    /// Whether it authenticates with a username and password.
    pub fn uses_password(self) -> bool {
        !matches!(self, Self::AwsMskIam)
    }
}

/// A value that must never be printed: its `Debug` says `[redacted]` and it
/// has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it (librdkafka).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads a secret from its file, the way a Kubernetes Secret is mounted: the
/// whole file, less one trailing line break (files made with `echo` have one,
/// Secret mounts do not). An empty secret is an error, not a blank password.
pub fn read_secret(what: &'static str, path: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let secret = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if secret.is_empty() {
        return Err(Error::EmptySecret {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(Secret(secret.to_owned()))
}

/// librdkafka properties whose values are secrets.
fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".pem")
        || key.starts_with("ssl.key")
}

/// A `key=value` librdkafka property given with `--kafka-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaProperty {
    /// The librdkafka property name.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl std::fmt::Debug for KafkaProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `--kafka-config sasl.password=...` is allowed: Debug must not show it.
        let value: &dyn std::fmt::Debug = if is_secret_property(&self.key) {
            &"[redacted]"
        } else {
            &self.value
        };
        f.debug_struct("KafkaProperty")
            .field("key", &self.key)
            .field("value", value)
            .finish()
    }
}

impl std::str::FromStr for KafkaProperty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(Self {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            // The text is not echoed: it may be a secret with its key missing.
            _ => Err("expected KEY=VALUE, a librdkafka property with a name".to_owned()),
        }
    }
}

/// Kafka connection settings shared by every role that talks to the broker.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(
        long = "kafka-brokers",
        env = "SQI_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// The events topic.
    #[arg(long, env = "SQI_TOPIC", default_value = "share-events")]
    pub topic: String,
    /// How clients connect: plaintext, ssl (TLS), sasl_plaintext or
    /// sasl_ssl (SASL over TLS, for Strimzi SCRAM and Amazon MSK).
    #[arg(
        long = "kafka-security-protocol",
        env = "SQI_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value_t
    )]
    pub security_protocol: SecurityProtocol,
    /// The SASL mechanism, with a sasl_* protocol: SCRAM-SHA-512 (or
    /// SCRAM-SHA-256, PLAIN) with a username and password file, or
    /// AWS_MSK_IAM with `--kafka-msk-region`.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "SQI_KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true
    )]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// The SASL username (SCRAM, PLAIN).
    #[arg(long = "kafka-username", env = "SQI_KAFKA_USERNAME")]
    pub username: Option<String>,
    /// A file holding the SASL password and nothing else (a mounted
    /// Kubernetes Secret); read at start, never printed.
    #[arg(
        long = "kafka-password-file",
        env = "SQI_KAFKA_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the brokers' certificates (ssl,
    /// sasl_ssl). Without it the system's CA store is used.
    #[arg(long = "kafka-ca-file", env = "SQI_KAFKA_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// The AWS region of the MSK cluster, for AWS_MSK_IAM tokens.
    #[arg(long = "kafka-msk-region", env = "SQI_KAFKA_MSK_REGION")]
    pub msk_region: Option<String>,
    /// Extra librdkafka properties; repeatable. They override every other
    /// setting. The environment variable takes several separated by `;`
    /// (a ConfigMap has one value per key).
    #[arg(
        long = "kafka-config",
        env = "SQI_KAFKA_CONFIG",
        value_name = "KEY=VALUE",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub extra: Vec<KafkaProperty>,
}

impl KafkaArgs {
    /// Plaintext to `brokers`, for tests and the demo; every other flag at
    /// its default.
    pub fn plaintext(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            security_protocol: SecurityProtocol::default(),
            sasl_mechanism: None,
            username: None,
            password_file: None,
            ca_file: None,
            msk_region: None,
            extra: Vec::new(),
        }
    }

    /// Refuses combinations that cannot connect, naming the flags, before
    /// any client tries (a wrong combination would otherwise show only as
    /// librdkafka's retries).
    pub fn validate(&self) -> Result<()> {
        let protocol = self.security_protocol;
        let invalid = |message: String| Err(Error::Invalid(message));
        match (protocol.uses_sasl(), self.sasl_mechanism) {
            (false, Some(_)) => {
                return invalid(format!(
                    "--kafka-sasl-mechanism needs --kafka-security-protocol sasl_ssl or sasl_plaintext, not {}",
                    protocol.librdkafka_name()
                ));
            }
            (true, None) => {
                return invalid(format!(
                    "--kafka-security-protocol {} needs --kafka-sasl-mechanism (SCRAM-SHA-512 or AWS_MSK_IAM)",
                    protocol.librdkafka_name()
                ));
            }
            _ => {}
        }
        let password_flags = self.username.is_some() || self.password_file.is_some();
        match self.sasl_mechanism {
            Some(mechanism) if mechanism.uses_password() => {
                if self.username.is_none() || self.password_file.is_none() {
                    return invalid(format!(
                        "--kafka-sasl-mechanism {} needs --kafka-username and --kafka-password-file",
                        mechanism.librdkafka_name()
                    ));
                }
                if self.msk_region.is_some() {
                    return invalid(
                        "--kafka-msk-region is only used with --kafka-sasl-mechanism AWS_MSK_IAM"
                            .to_owned(),
                    );
                }
            }
            Some(_) => {
                if password_flags {
                    return invalid(
                        "AWS_MSK_IAM authenticates with AWS credentials: drop --kafka-username and --kafka-password-file"
                            .to_owned(),
                    );
                }
                if self.msk_region.as_deref().is_none_or(str::is_empty) {
                    return invalid(
                        "--kafka-sasl-mechanism AWS_MSK_IAM needs --kafka-msk-region".to_owned(),
                    );
                }
            }
            None if password_flags || self.msk_region.is_some() => {
                return invalid(
                    "--kafka-username, --kafka-password-file and --kafka-msk-region need --kafka-sasl-mechanism"
                        .to_owned(),
                );
            }
            None => {}
        }
        if self.ca_file.is_some() && !protocol.uses_tls() {
            return invalid(format!(
                "--kafka-ca-file needs --kafka-security-protocol ssl or sasl_ssl, not {}",
                protocol.librdkafka_name()
            ));
        }
        Ok(())
    }

    /// The SASL password, read from `--kafka-password-file` now (a rotated
    /// Secret is picked up by the next client built).
    pub fn password(&self) -> Result<Option<Secret>> {
        self.password_file
            .as_deref()
            .map(|path| read_secret("the Kafka password", path))
            .transpose()
    }

    /// Whether clients authenticate with Amazon MSK IAM tokens.
    pub fn uses_msk_iam(&self) -> bool {
        self.sasl_mechanism == Some(SaslMechanism::AwsMskIam)
    }

    /// The configuration of one client: the connection's properties, then
    /// the role's (`role`), then `--kafka-config`, which overrides both.
    /// Create it with a context that delegates to [`crate::Connection`], so
    /// that failures are reported once and MSK IAM tokens are made.
    pub fn client_config(&self, role: impl FnOnce(&mut ClientConfig)) -> Result<ClientConfig> {
        self.validate()?;
        let mut config = ClientConfig::new();
        let _ = config.set("bootstrap.servers", &self.brokers).set(
            "security.protocol",
            self.security_protocol.librdkafka_name(),
        );
        if let Some(mechanism) = self.sasl_mechanism {
            let _ = config.set("sasl.mechanism", mechanism.librdkafka_name());
        }
        if let Some(username) = &self.username {
            let _ = config.set("sasl.username", username);
        }
        if let Some(password) = self.password()? {
            let _ = config.set("sasl.password", password.expose());
        }
        if let Some(ca_file) = &self.ca_file {
            // librdkafka's own message for a missing file names OpenSSL's
            // internals; this one names the flag.
            if let Err(source) = std::fs::File::open(ca_file) {
                return Err(Error::CaFile {
                    path: ca_file.display().to_string(),
                    source,
                });
            }
            let _ = config.set("ssl.ca.location", ca_file.display().to_string());
        }
        role(&mut config);
        for property in &self.extra {
            let _ = config.set(&property.key, &property.value);
        }
        Ok(config)
    }
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    /// Parses flags only: the process environment must not leak in.
    fn parse(args: &[&str]) -> KafkaArgs {
        // Without their variables the test does not depend on the shell's SQI_*.
        let command = Cli::command().mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command
            .try_get_matches_from(std::iter::once("sqi").chain(args.iter().copied()))
            .unwrap();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .unwrap()
            .kafka
    }

    fn properties(args: &KafkaArgs) -> BTreeMap<String, String> {
        let config = args.client_config(|_| {}).unwrap();
        [
            "bootstrap.servers",
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "linger.ms",
        ]
        .into_iter()
        .filter_map(|key| config.get(key).map(|v| (key.to_owned(), v.to_owned())))
        .collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn secret_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    #[test]
    fn the_defaults_are_plaintext_and_equal_to_plaintext_constructor() {
        let parsed = parse(&[]);
        let built = KafkaArgs::plaintext("127.0.0.1:9092", "share-events");
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!(
            properties(&parsed),
            map(&[
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("security.protocol", "plaintext"),
            ])
        );
    }

    #[test]
    fn scram_over_tls_sets_mechanism_credentials_and_ca() {
        let password = secret_file("s3cret-pw\n");
        let ca = secret_file("-----BEGIN CERTIFICATE-----\n");
        let args = parse(&[
            "--kafka-brokers",
            "b1:9094,b2:9094",
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "scram-sha-512",
            "--kafka-username",
            "sqi-ingest",
            "--kafka-password-file",
            password.path().to_str().unwrap(),
            "--kafka-ca-file",
            ca.path().to_str().unwrap(),
        ]);
        assert_eq!(
            properties(&args),
            map(&[
                ("bootstrap.servers", "b1:9094,b2:9094"),
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "sqi-ingest"),
                ("sasl.password", "s3cret-pw"),
                ("ssl.ca.location", ca.path().to_str().unwrap()),
            ])
        );
    }

    #[test]
    fn tls_without_a_ca_file_uses_the_system_store() {
        let args = parse(&["--kafka-security-protocol", "SSL"]);
        assert_eq!(
            properties(&args),
            map(&[
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("security.protocol", "ssl"),
            ])
        );
    }

    #[test]
    fn msk_iam_is_oauthbearer_with_no_password() {
        let args = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "AWS_MSK_IAM",
            "--kafka-msk-region",
            "eu-west-1",
        ]);
        assert!(args.uses_msk_iam());
        assert_eq!(
            properties(&args),
            map(&[
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", "OAUTHBEARER"),
            ])
        );
    }

    #[test]
    fn role_settings_come_after_the_connection_and_kafka_config_overrides_both() {
        let args = parse(&[
            "--kafka-config",
            "linger.ms=50",
            "--kafka-config",
            "security.protocol=ssl",
        ]);
        let config = args
            .client_config(|c| {
                let _ = c.set("linger.ms", "5").set("security.protocol", "nonsense");
            })
            .unwrap();
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("security.protocol"), Some("ssl"));
    }

    #[test]
    fn impossible_combinations_name_the_flags() {
        let password = secret_file("pw");
        let path = password.path().to_str().unwrap();
        let cases: &[(&[&str], &str)] = &[
            (
                &["--kafka-sasl-mechanism", "SCRAM-SHA-512"],
                "needs --kafka-security-protocol",
            ),
            (
                &["--kafka-security-protocol", "sasl_ssl"],
                "needs --kafka-sasl-mechanism",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "sasl_ssl",
                    "--kafka-sasl-mechanism",
                    "SCRAM-SHA-512",
                    "--kafka-username",
                    "u",
                ],
                "needs --kafka-username and --kafka-password-file",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "sasl_ssl",
                    "--kafka-sasl-mechanism",
                    "AWS_MSK_IAM",
                ],
                "needs --kafka-msk-region",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "sasl_ssl",
                    "--kafka-sasl-mechanism",
                    "AWS_MSK_IAM",
                    "--kafka-msk-region",
                    "us-east-1",
                    "--kafka-username",
                    "u",
                    "--kafka-password-file",
                    path,
                ],
                "drop --kafka-username",
            ),
            (&["--kafka-username", "u"], "need --kafka-sasl-mechanism"),
            (&["--kafka-ca-file", path], "--kafka-ca-file needs"),
        ];
        for (flags, expected) in cases {
            let error = parse(flags).client_config(|_| {}).unwrap_err().to_string();
            assert!(error.contains(expected), "{flags:?}: {error}");
        }
    }

    #[test]
    fn a_missing_or_empty_password_file_is_a_clear_error() {
        let base = [
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-username",
            "u",
            "--kafka-password-file",
        ];
        let missing = parse(&[&base[..], &["/nonexistent/kafka-password"]].concat())
            .client_config(|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            missing
                .starts_with("cannot read the Kafka password from `/nonexistent/kafka-password`"),
            "{missing}"
        );
        let empty = secret_file("\n");
        let error = parse(&[&base[..], &[empty.path().to_str().unwrap()]].concat())
            .client_config(|_| {})
            .unwrap_err()
            .to_string();
        assert!(error.contains("is empty"), "{error}");
        let ca = parse(&[
            "--kafka-security-protocol",
            "ssl",
            "--kafka-ca-file",
            "/nonexistent/ca.pem",
        ])
        .client_config(|_| {})
        .unwrap_err()
        .to_string();
        assert!(
            ca.starts_with("cannot read the Kafka CA file `/nonexistent/ca.pem`"),
            "{ca}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let password = secret_file("hunter2-the-password\r\n");
        let args = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-username",
            "u",
            "--kafka-password-file",
            password.path().to_str().unwrap(),
            "--kafka-config",
            "ssl.key.password=hunter3-the-key",
        ]);
        let secret = args.password().unwrap().unwrap();
        assert_eq!(secret.expose(), "hunter2-the-password");
        let config = args.client_config(|_| {}).unwrap();
        for shown in [
            format!("{args:?}"),
            format!("{secret:?}"),
            format!("{config:?}"),
        ] {
            assert!(!shown.contains("hunter"), "{shown}");
        }
        let refused = "=hunter4".parse::<KafkaProperty>().unwrap_err();
        assert!(!refused.contains("hunter"), "{refused}");
    }

    #[test]
    fn help_hides_what_may_hold_a_secret() {
        let command = Cli::command();
        let hidden: Vec<_> = command
            .get_arguments()
            .filter(|arg| arg.is_hide_env_values_set())
            .map(|arg| arg.get_id().to_string())
            .collect();
        // `--kafka-config` may carry `sasl.password=...`; the password itself
        // has no flag or variable, only a file.
        assert_eq!(hidden, ["extra"]);
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("SQI_KAFKA_PASSWORD_FILE"), "{help}");
        assert!(help.contains("SQI_KAFKA_SECURITY_PROTOCOL"), "{help}");
    }

    #[test]
    fn kafka_properties_need_a_key() {
        assert_eq!(
            "linger.ms=5".parse::<KafkaProperty>(),
            Ok(KafkaProperty {
                key: "linger.ms".into(),
                value: "5".into()
            })
        );
        assert!("=5".parse::<KafkaProperty>().is_err());
        assert!("nothing".parse::<KafkaProperty>().is_err());
    }
}
