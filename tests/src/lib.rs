//! Shared helpers for the end-to-end tests in `tests/tests/`.
//!
//! The services are real: a Tansu broker and a moto S3 server on loopback,
//! started by `scripts/services` (which `scripts/test` calls), and found through
//! `SQI_TEST_KAFKA_BROKERS` and `SQI_TEST_S3_ENDPOINT`. Every test makes its own
//! topics and bucket, so tests never see each other's data.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqi_schemas::lake::{Lake, LakeOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Where the real services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// Kafka bootstrap address of the Tansu broker.
    pub kafka_brokers: String,
    /// moto's S3 endpoint URL.
    pub s3_endpoint: String,
}

impl Services {
    /// Reads the service addresses; fails loudly when the suite was not started by `scripts/test`.
    pub fn from_env() -> Self {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the suite with scripts/test, which starts Tansu and moto")
            })
        };
        Self {
            kafka_brokers: get("SQI_TEST_KAFKA_BROKERS"),
            s3_endpoint: get("SQI_TEST_S3_ENDPOINT"),
        }
    }

    /// Creates a topic (idempotently) and waits until it is usable.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_brokers)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic");
        for result in results {
            if let Err((topic, code)) = result {
                assert_eq!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "create {topic}"
                );
            }
        }
    }

    /// Creates a bucket on moto.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .put(format!(
                "{}/{bucket}",
                self.s3_endpoint.trim_end_matches('/')
            ))
            .send()
            .await
            .expect("moto reachable");
        assert!(
            response.status().is_success(),
            "create bucket: {}",
            response.status()
        );
    }

    /// The lake options for moto, with explicit dummy credentials (no env mutation).
    pub fn lake_options(&self) -> LakeOptions {
        LakeOptions {
            s3_endpoint: Some(self.s3_endpoint.clone()),
            s3_options: vec![
                ("aws_access_key_id".into(), "test".into()),
                ("aws_secret_access_key".into(), "test".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
        }
    }

    /// A fresh bucket and the lake inside it at `s3://bucket/lake`.
    pub async fn fresh_lake(&self) -> (String, Lake) {
        let bucket = unique("lake");
        self.create_bucket(&bucket).await;
        let lake =
            Lake::open(&format!("s3://{bucket}/lake"), &self.lake_options()).expect("open lake");
        (bucket, lake)
    }
}

/// A name no other test uses: lower-case, DNS- and topic-safe.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A shutdown switch for in-process roles.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }
}

impl Shutdown {
    /// A future that resolves once [`Shutdown::trigger`] is called.
    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Stops everything that holds a signal.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Binds an ephemeral loopback port.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Runs one of the Python checks in `tests/py/` and parses its JSON output.
pub fn python_check(script: &str, args: &[&str]) -> serde_json::Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "py", script].iter().collect();
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
