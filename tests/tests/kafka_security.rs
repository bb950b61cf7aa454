//! Connecting to Kafka securely, and failing clearly (issue 20, acceptance
//! check 3): `sqi ingest` and `sqi process`, as binaries, against the test
//! broker's SASL_SSL (SCRAM-SHA-512) listener with a wrong password and with
//! a CA that did not sign the broker's certificate, and against a port nothing
//! listens on. Each must log exactly one ERROR line naming the cause, answer
//! `/readyz` with 503, keep running (no panic) and stop cleanly on SIGTERM.
//! With the right password both become ready.
//!
//! The SASL listener comes from `scripts/services env`:
//! `SQI_TEST_KAFKA_SASL_BROKERS`, `SQI_TEST_KAFKA_CA_FILE`,
//! `SQI_TEST_KAFKA_USERNAME` and `SQI_TEST_KAFKA_PASSWORD`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use sqi_integration_tests::kafka::SaslListener;
use sqi_integration_tests::{free_address, sqi_binary, unique};
use sqi_kafka::{Connection, KafkaContext};

/// The variables that make a child connect to `sasl` with `password`,
/// trusting `ca_file`.
fn sasl_env(sasl: &SaslListener, password: &str, ca_file: &Path) -> Vec<(String, String)> {
    let args = sasl.args_with("", password, ca_file.to_path_buf());
    let password_file = args.password_file.expect("a password file");
    [
        ("SQI_KAFKA_BROKERS", sasl.brokers.clone()),
        ("SQI_KAFKA_SECURITY_PROTOCOL", "sasl_ssl".to_owned()),
        ("SQI_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
        ("SQI_KAFKA_USERNAME", sasl.username.clone()),
        (
            "SQI_KAFKA_PASSWORD_FILE",
            password_file.display().to_string(),
        ),
        ("SQI_KAFKA_CA_FILE", ca_file.display().to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec()
}

/// A CA and nothing it signed: a broker certificate is never trusted by it.
fn untrusted_ca(dir: &Path) -> PathBuf {
    let (key, cert) = (dir.join("untrusted-ca.key"), dir.join("untrusted-ca.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=sqi-untrusted-test-ca"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made no CA");
    cert
}

/// Which role, with its admin address.
#[derive(Debug, Clone, Copy)]
enum Role {
    Ingest,
    Process,
}

/// A role's child process with its stderr in a file.
struct RoleChild {
    role: Role,
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl RoleChild {
    fn spawn(role: Role, dir: &Path, topic: &str, env: &[(String, String)]) -> Self {
        let admin = free_address();
        let log = dir.join(format!("{role:?}-{}.log", unique("run")));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(sqi_binary());
        match role {
            Role::Ingest => {
                let _ = command
                    .arg("ingest")
                    .args(["--listen", &admin.to_string()])
                    .args(["--unready-after", "2s"]);
            }
            Role::Process => {
                let lake = dir.join(format!("lake-{}", unique("l")));
                std::fs::create_dir_all(&lake).expect("lake dir");
                let _ = command
                    .arg("process")
                    .args(["--listen", &admin.to_string()])
                    .args(["--lake-url", &format!("file://{}", lake.display())])
                    .args(["--group-id", &unique("group")]);
            }
        }
        let child = command
            .args(["--topic", topic])
            .env("SQI_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // Nothing from the test's own shell decides how it connects.
            .env_remove("SQI_KAFKA_CONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("sqi starts");
        Self {
            role,
            child,
            admin,
            log,
        }
    }

    async fn readyz(&self) -> Option<u16> {
        let url = format!("http://{}/readyz", self.admin);
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|_| serde_json::json!({"level": "RAW", "raw": line}))
            })
            .collect()
    }

    fn errors(&self) -> Vec<serde_json::Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| l["level"] != "INFO" && l["level"] != "WARN" && l["level"] != "DEBUG")
            .collect()
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{:?} did not stop on SIGTERM; log:\n{}",
                    self.role,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs both roles with `env` for `watch`, then checks acceptance check 3:
/// exactly one ERROR line, naming `failure`; `/readyz` 503 throughout the
/// second half; still running; a clean exit on SIGTERM.
async fn fails_clearly(env: Vec<(String, String)>, failure: &str, watch: Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = unique("secure");
    let children =
        [Role::Ingest, Role::Process].map(|role| RoleChild::spawn(role, dir.path(), &topic, &env));
    tokio::time::sleep(watch / 2).await;
    let until = Instant::now() + watch / 2;
    while Instant::now() < until {
        for child in &children {
            let status = child.readyz().await;
            assert!(
                status.is_some_and(|s| s == 503),
                "{:?} /readyz answered {status:?} while it cannot connect; log:\n{}",
                child.role,
                child.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for mut child in children {
        assert!(
            child.child.try_wait().expect("wait").is_none(),
            "{:?} exited while it could not connect; log:\n{}",
            child.role,
            child.log_text()
        );
        let errors = child.errors();
        assert_eq!(
            errors.len(),
            1,
            "{:?}: expected one ERROR line, got {}:\n{}",
            child.role,
            errors.len(),
            child.log_text()
        );
        let fields = &errors[0]["fields"];
        assert_eq!(
            fields["message"], "cannot connect to Kafka",
            "{:?}: {}",
            child.role, errors[0]
        );
        assert_eq!(
            fields["failure"], failure,
            "{:?}: {}",
            child.role, errors[0]
        );
        let text = child.log_text();
        assert!(
            !text.contains("panicked"),
            "{:?} panicked:\n{text}",
            child.role
        );
        let role = child.role;
        let status = child.terminate();
        assert!(status.success(), "{role:?} exit {status:?}");
    }
}

#[tokio::test]
async fn an_unreachable_broker_is_one_error_line_and_unready() {
    let nothing_listens = free_address();
    fails_clearly(
        vec![("SQI_KAFKA_BROKERS".to_owned(), nothing_listens.to_string())],
        "unreachable",
        Duration::from_secs(16),
    )
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_one_error_line_and_unready() {
    let sasl = SaslListener::from_env();
    let env = sasl_env(&sasl, "not-the-password", &sasl.ca_file);
    fails_clearly(env, "authentication", Duration::from_secs(16)).await;
}

#[tokio::test]
async fn an_untrusted_ca_is_one_error_line_and_unready() {
    let sasl = SaslListener::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = untrusted_ca(dir.path());
    let env = sasl_env(&sasl, &sasl.password, &ca);
    fails_clearly(env, "tls", Duration::from_secs(16)).await;
}

#[tokio::test]
async fn both_roles_connect_over_sasl_ssl_with_the_right_password() {
    let sasl = SaslListener::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = unique("secure");
    let args = sasl.args_with(&topic, &sasl.password, sasl.ca_file.clone());
    let admin: AdminClient<KafkaContext> = args
        .client_config(|_| {})
        .expect("admin config")
        .create_with_context(KafkaContext {
            connection: Connection::new(&args).expect("connection"),
        })
        .expect("admin client");
    let dlq = format!("{topic}-dlq");
    let topics = [
        NewTopic::new(&topic, 2, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .create_topics(&topics, &options)
        .await
        .expect("create topics over SASL_SSL")
    {
        let _ = result.expect("topic created");
    }

    let env = sasl_env(&sasl, &sasl.password, &sasl.ca_file);
    let children =
        [Role::Ingest, Role::Process].map(|role| RoleChild::spawn(role, dir.path(), &topic, &env));
    for child in &children {
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.readyz().await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{:?} never became ready over SASL_SSL; log:\n{}",
                child.role,
                child.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // ingest takes an event over SASL_SSL: 200 means the broker acknowledged it.
    let body = serde_json::json!({"events": [{
        "publisher": "example.com", "type": "pageview", "url": "https://example.com/a",
        "ts": chrono::Utc::now().timestamp_millis()
    }]});
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events", children[0].admin))
        .json(&body)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        children[0].log_text()
    );
    for child in children {
        let errors = child.errors();
        assert!(
            errors.is_empty(),
            "{:?} logged errors:\n{}",
            child.role,
            child.log_text()
        );
        let text = child.log_text();
        assert!(
            !text.contains(&sasl.password),
            "{:?} printed the password",
            child.role
        );
        let role = child.role;
        let status = child.terminate();
        assert!(status.success(), "{role:?} exit {status:?}");
    }
}
