//! Issue 7: the Kubernetes manifests in `deploy/`.
//!
//! - `deploy/validate` renders every overlay, validates it offline and proves
//!   each deliberately broken fixture fails (checks 1–5).
//! - The manifests run the binary they name (check 6): every environment
//!   variable they set is one the binary reads, and `sqi ingest`, `sqi report`
//!   and `sqi process` started with the rendered ConfigMaps answer the probe
//!   paths on the named ports, serve the metrics the alerts use, and stop
//!   within their grace period. Only addresses are replaced: the test's broker,
//!   bucket, a free port, and the files the Secrets would mount (the API
//!   keys; the Kafka password and CA, for the broker's SASL_SSL listener).
//! - `deploy/rollout` undoes a release whose Deployments do not roll out.
//! - The Dockerfile builds one binary onto a distroless runtime it can run on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqi_integration_tests::{Services, free_address, sqi_binary, unique};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `kubectl kustomize` of a directory under `deploy/`, as JSON objects.
fn render(target: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy").join(target))
        .output()
        .expect("kubectl runs (scripts/test installs it)");
    assert!(
        output.status.success(),
        "kubectl kustomize {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::Write;
        let mut stdin = python.stdin.take().expect("stdin");
        stdin.write_all(&output.stdout).expect("pipe");
    }
    let json = python.wait_with_output().expect("python3 output");
    serde_json::from_slice(&json.stdout).expect("rendered manifests as JSON")
}

struct Manifests(Vec<Value>);

impl Manifests {
    fn of(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.0.iter().filter(move |o| o["kind"] == kind)
    }

    fn config_map(&self, name: &str) -> BTreeMap<String, String> {
        let map = self
            .of("ConfigMap")
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name} is not in the manifests"));
        map["data"]
            .as_object()
            .map(|data| {
                data.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn deployment(&self, component: &str) -> &Value {
        self.of("Deployment")
            .find(|d| {
                d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                    == component
            })
            .unwrap_or_else(|| panic!("no Deployment for {component}"))
    }

    /// Every pod template's pod spec, with the owner's name.
    fn pod_specs(&self) -> Vec<(String, &Value)> {
        let mut specs = Vec::new();
        for d in self.of("Deployment") {
            specs.push((name(d), &d["spec"]["template"]["spec"]));
        }
        for c in self.of("CronJob") {
            specs.push((
                name(c),
                &c["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            ));
        }
        specs
    }

    /// The container's environment as the kubelet builds it: the `envFrom`
    /// ConfigMaps in order (after `overrides`, which stand for what differs
    /// on this machine), then `env`, with `$(VAR)` expanded.
    fn environment(
        &self,
        container: &Value,
        overrides: &BTreeMap<&str, String>,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            let map = source["configMapRef"]["name"]
                .as_str()
                .expect("configMapRef");
            env.extend(self.config_map(map));
        }
        for (k, v) in overrides {
            if env.contains_key(*k) {
                env.insert((*k).to_owned(), v.clone());
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let value = var["value"].as_str().expect("env values are literal");
            let expanded = expand(value, &env);
            env.insert(var["name"].as_str().expect("env name").to_owned(), expanded);
        }
        env
    }
}

fn name(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Kubernetes' `$(VAR)` expansion; an unknown variable stays as written.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let var = &after[..end];
                match env.get(var) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `[env: NAME=…]` names `sqi <role> --help` lists.
fn env_names_read_by(role: &str) -> BTreeSet<String> {
    let output = Command::new(sqi_binary())
        .args([role, "--help"])
        .output()
        .expect("sqi --help");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// `DATAFUSION_*` names DataFusion's `SessionConfig::from_env` understands.
fn datafusion_env_names() -> BTreeSet<String> {
    datafusion::config::ConfigOptions::new()
        .entries()
        .into_iter()
        .map(|entry| entry.key.to_ascii_uppercase().replace('.', "_"))
        .collect()
}

#[test]
fn deploy_validate_passes_the_overlays_and_rejects_every_broken_fixture() {
    let output = Command::new(repo().join("deploy/validate"))
        .env("SQI_BIN", sqi_binary())
        .output()
        .expect("deploy/validate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "deploy/validate failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for checked in [
        "overlays/dev",
        "overlays/prod",
        "overlays/prod-msk",
        ".github/workflows/deploy.yml",
    ] {
        assert!(stdout.contains(&format!("ok      {checked}\n")), "{stdout}");
    }
    let fixtures: Vec<String> = std::fs::read_dir(repo().join("deploy/tests/broken"))
        .expect("broken fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(fixtures.len() >= 4, "{fixtures:?}");
    for fixture in fixtures {
        assert!(
            stdout.contains(&format!("ok      tests/broken/{fixture} rejected")),
            "{fixture} was not rejected as expected:\n{stdout}"
        );
    }
}

/// Whether `sqi <role>` reads `name`: an `SQI_*` flag variable of the role,
/// an S3 setting object_store understands, or a DataFusion option.
fn role_reads(name: &str, read: &BTreeSet<String>, datafusion: &BTreeSet<String>) -> bool {
    if name.starts_with("SQI_") {
        read.contains(name)
    } else if let Some(key) = name.strip_prefix("AWS_") {
        object_store::aws::AmazonS3ConfigKey::from_str(&format!("aws_{}", key.to_ascii_lowercase()))
            .is_ok()
    } else {
        datafusion.contains(name)
    }
}

#[test]
fn every_variable_the_manifests_set_is_one_the_binary_reads() {
    let datafusion = datafusion_env_names();
    for overlay in ["overlays/dev", "overlays/prod", "overlays/prod-msk"] {
        let manifests = Manifests(render(overlay));
        // Which roles load each ConfigMap, and which variables each role reads.
        let mut loaders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut reads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, pod) in manifests.pod_specs() {
            let container = &pod["containers"][0];
            let role = container["args"][0]
                .as_str()
                .expect("args name the role")
                .to_owned();
            reads
                .entry(role.clone())
                .or_insert_with(|| env_names_read_by(&role));
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let map = source["configMapRef"]["name"]
                    .as_str()
                    .expect("configMapRef");
                loaders
                    .entry(map.to_owned())
                    .or_default()
                    .insert(role.clone());
            }
        }
        for (owner, pod) in manifests.pod_specs() {
            let container = &pod["containers"][0];
            let role = container["args"][0].as_str().expect("args name the role");
            // A variable other variables refer to, as `$(NAME)`, is the kubelet's to read.
            let referenced: BTreeSet<String> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|var| var["value"].as_str())
                .flat_map(|value| value.split("$(").skip(1))
                .filter_map(|rest| rest.split_once(')').map(|(name, _)| name.to_owned()))
                .collect();
            // A ConfigMap several roles load holds facts about the cluster (where
            // Kafka and the lake are): each variable in it must be read by at
            // least one of them. Anything else must be read by this role.
            let mut shared = BTreeMap::new();
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let map = source["configMapRef"]["name"]
                    .as_str()
                    .expect("configMapRef");
                for name in manifests.config_map(map).into_keys() {
                    shared.insert(name, loaders[map].clone());
                }
            }
            let env = manifests.environment(container, &BTreeMap::new());
            assert!(!env.is_empty(), "{overlay} {owner}: no environment");
            for name in env.keys() {
                let own = container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|var| var["name"] == name.as_str());
                let readers = match shared.get(name) {
                    Some(roles) if !own && roles.len() > 1 => roles.clone(),
                    _ => BTreeSet::from([role.to_owned()]),
                };
                let known = referenced.contains(name)
                    || readers
                        .iter()
                        .any(|r| role_reads(name, &reads[r], &datafusion));
                assert!(
                    known,
                    "{overlay} {owner}: no role of {readers:?} reads {name} (`sqi {role}` reads {:?})",
                    reads[role]
                );
            }
        }
    }
}

/// A role started the way its Deployment would start it.
struct Pod {
    role: String,
    child: std::process::Child,
    /// Container port name → where it listens here.
    ports: BTreeMap<String, u16>,
    grace: Duration,
    log: PathBuf,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // A failed assertion must not leave the role running after the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pod {
    fn url(&self, port: &Value, path: &str) -> String {
        let port = match port {
            Value::String(name) => *self
                .ports
                .get(name)
                .unwrap_or_else(|| panic!("{}: port {name} is not a container port", self.role)),
            other => panic!("{}: probe port {other} is not named", self.role),
        };
        format!("http://127.0.0.1:{port}{path}")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start_pod(
    manifests: &Manifests,
    component: &str,
    overrides: &BTreeMap<&str, String>,
    machine: &[(&str, &str)],
    dir: &Path,
) -> (Pod, Value) {
    let deployment = manifests.deployment(component);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = pod["containers"][0].clone();
    let mut env = manifests.environment(&container, overrides);

    // The port the binary is told to listen on is the port the manifest names.
    let listen = env.get("SQI_LISTEN").cloned().unwrap_or_default();
    let declared: BTreeMap<String, u16> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().expect("named port").to_owned(),
                u16::try_from(p["containerPort"].as_u64().expect("port")).expect("u16"),
            )
        })
        .collect();
    let listen_port: u16 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{component}: SQI_LISTEN `{listen}` names no port"));
    assert!(
        declared.values().any(|p| *p == listen_port),
        "{component}: SQI_LISTEN {listen} is not a declared containerPort {declared:?}"
    );
    let here = free_address();
    env.insert("SQI_LISTEN".into(), here.to_string());
    let ports = declared
        .iter()
        .map(|(name, port)| {
            (
                name.clone(),
                if *port == listen_port {
                    here.port()
                } else {
                    *port
                },
            )
        })
        .collect();

    // A file the manifest expects from a Secret must be that Secret's key,
    // mounted where the variable says; here it is a file the test writes (or
    // the test broker's own, in `overrides`).
    let declared_env = manifests.environment(&container, &BTreeMap::new());
    for (variable, wanted) in [
        ("SQI_API_KEYS_FILE", None),
        ("SQI_KAFKA_PASSWORD_FILE", Some("password")),
        ("SQI_KAFKA_CA_FILE", Some("ca.crt")),
    ] {
        let Some(path) = declared_env.get(variable) else {
            continue;
        };
        let (_, key) = mounted_secret(pod, &container, path)
            .unwrap_or_else(|| panic!("{component}: {variable} {path} is no mounted Secret file"));
        if let Some(wanted) = wanted {
            assert_eq!(key, wanted, "{component}: {variable} is the wrong key");
        }
    }
    if env.contains_key("SQI_API_KEYS_FILE") {
        let keys = dir.join(format!("{component}-api-keys.json"));
        std::fs::write(
            &keys,
            json!([{"name": "probe", "sha256": "0".repeat(64), "scope": "marketer"}]).to_string(),
        )
        .expect("key file");
        env.insert("SQI_API_KEYS_FILE".into(), keys.display().to_string());
    }

    let log = dir.join(format!("{component}.log"));
    let child = Command::new(sqi_binary())
        .args(
            container["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| a.as_str().expect("arg")),
        )
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        // moto's credentials; in the cluster, IRSA supplies them.
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .envs(machine.iter().copied())
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("sqi starts");
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    (
        Pod {
            role: component.to_owned(),
            child,
            ports,
            grace,
            log,
        },
        container,
    )
}

/// The Secret and key a pod mounts at `path`, if a Secret volume does.
fn mounted_secret(pod: &Value, container: &Value, path: &str) -> Option<(String, String)> {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|root| path.starts_with(&format!("{}/", root.trim_end_matches('/'))))
        })?;
    let root = mount["mountPath"].as_str()?.trim_end_matches('/');
    let file = path.strip_prefix(root)?.trim_start_matches('/');
    let secret = &pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?["secret"];
    let name = secret["secretName"].as_str()?.to_owned();
    match secret["items"].as_array() {
        None => Some((name, file.to_owned())),
        Some(items) => items
            .iter()
            .find(|item| item["path"] == file)
            .and_then(|item| Some((name, item["key"].as_str()?.to_owned()))),
    }
}

async fn wait_ok(client: &reqwest::Client, url: &str, within: Duration, pod: &Pod) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return response.text().await.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "{}: {url} did not answer 2xx within {within:?}\n{}",
            pod.role,
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_start_ingest_report_and_processor_and_their_probes_answer() {
    let services = Services::from_env();
    let manifests = Manifests(render("overlays/prod"));
    let topic = unique("deploy-events");
    let (bucket, _lake) = services.fresh_lake().await;
    services.create_topic(&topic, 2).await;
    services.create_topic(&format!("{topic}-dlq"), 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut overrides: BTreeMap<&str, String> = [
        ("SQI_KAFKA_BROKERS", services.kafka_brokers.clone()),
        ("SQI_TOPIC", topic.clone()),
        ("SQI_DLQ_TOPIC", format!("{topic}-dlq")),
        ("SQI_GROUP_ID", unique("deploy-group")),
        ("SQI_LAKE_URL", format!("s3://{bucket}/lake")),
    ]
    .into_iter()
    .collect();
    // Production connects over SASL_SSL with SCRAM: here to the test broker's
    // SASL_SSL listener, as its user, trusting its CA. Only the addresses and
    // the credentials change; the protocol and mechanism are the manifests'.
    let ingest_env = manifests.environment(
        &manifests.deployment("ingest")["spec"]["template"]["spec"]["containers"][0],
        &BTreeMap::new(),
    );
    if ingest_env
        .get("SQI_KAFKA_SECURITY_PROTOCOL")
        .is_some_and(|p| p.eq_ignore_ascii_case("sasl_ssl"))
    {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test"))
        };
        let password = dir.path().join("kafka-password");
        std::fs::write(&password, get("SQI_TEST_KAFKA_PASSWORD")).expect("password file");
        overrides.extend([
            ("SQI_KAFKA_BROKERS", get("SQI_TEST_KAFKA_SASL_BROKERS")),
            ("SQI_KAFKA_USERNAME", get("SQI_TEST_KAFKA_USERNAME")),
            ("SQI_KAFKA_PASSWORD_FILE", password.display().to_string()),
            ("SQI_KAFKA_CA_FILE", get("SQI_TEST_KAFKA_CA_FILE")),
        ]);
    }
    let client = reqwest::Client::new();
    // The ingest allowlist reads the publisher dimension at start-up, so a
    // deployment imports it first (deploy/README.md).
    let csv = dir.path().join("publishers.csv");
    std::fs::write(
        &csv,
        "publisher,domain,category\ndeploy.example,deploy.example,news\n",
    )
    .expect("csv");
    let import = services
        .sqi_on_lake(&bucket)
        .args(["publishers", "import"])
        .arg(&csv)
        .output()
        .expect("sqi publishers import");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    // moto's endpoint is machine-specific, like its credentials: on AWS the
    // SDK's default endpoint is right, so the manifests do not set one.
    let machine = [("SQI_S3_ENDPOINT", services.s3_endpoint.as_str())];
    let pods: Vec<(Pod, Value)> = ["ingest", "report", "processor"]
        .into_iter()
        .map(|component| start_pod(&manifests, component, &overrides, &machine, dir.path()))
        .collect();

    let mut scraped = String::new();
    for (pod, container) in &pods {
        let startup = &container["startupProbe"];
        let budget = Duration::from_secs(
            startup["periodSeconds"].as_u64().unwrap_or(10)
                * startup["failureThreshold"].as_u64().unwrap_or(3),
        );
        let get = &startup["httpGet"];
        wait_ok(
            &client,
            &pod.url(&get["port"], get["path"].as_str().expect("path")),
            budget,
            pod,
        )
        .await;
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &container[probe]["httpGet"];
            let url = pod.url(&get["port"], get["path"].as_str().expect("path"));
            // Readiness may take a moment longer (the broker connection).
            wait_ok(&client, &url, Duration::from_secs(20), pod).await;
        }
    }

    // Traffic through the Ingress path, so the ingest counters exist.
    let ingest = &pods[0].0;
    let ingress = manifests
        .of("Ingress")
        .find(|i| i["metadata"]["name"] == "sqi-ingest")
        .expect("ingest Ingress");
    let prefix = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .find_map(|p| p["path"].as_str().filter(|p| p.starts_with("/v1")))
        .expect("an API path");
    let response = client
        .post(ingest.url(&json!("http"), &format!("{prefix}events")))
        .json(&json!({"events": [{
            "publisher": "deploy.example",
            "type": "pageview",
            "url": "https://deploy.example/a",
            "ts": chrono::Utc::now().timestamp_millis(),
        }]}))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(response.status(), 200, "{}", ingest.log());
    // And one refusal, so the rejection counter has its `reason` series.
    let refused = client
        .post(ingest.url(&json!("http"), &format!("{prefix}events")))
        .json(&json!({"events": [{"publisher": "deploy.example", "type": "nonsense"}]}))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(refused.status(), 400, "{}", ingest.log());
    // The processor's per-partition gauges exist once it has read a record
    // and librdkafka has reported statistics for its partitions.
    let processor = &pods[2].0;
    let metrics_url = processor.url(&json!("admin"), "/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = wait_ok(&client, &metrics_url, Duration::from_secs(5), processor).await;
        if [
            "sqi_processor_watermark_lag_seconds{",
            "sqi_processor_consumer_lag_read_records{",
        ]
        .iter()
        .all(|series| text.contains(series))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the processor has not read the event in 60 s:\n{text}\n{}",
            processor.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Prometheus scrapes what the ServiceMonitor names, on the Service's target port.
    let monitor = manifests
        .of("ServiceMonitor")
        .next()
        .expect("ServiceMonitor");
    for (pod, _) in &pods {
        let service = manifests
            .of("Service")
            .find(|s| s["spec"]["selector"]["app.kubernetes.io/component"] == pod.role.as_str())
            .expect("Service");
        for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
            let port = service["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| p["name"] == endpoint["port"])
                .expect("the endpoint's port is the Service's");
            let url = pod.url(
                &port["targetPort"],
                endpoint["path"].as_str().expect("path"),
            );
            scraped.push_str(&wait_ok(&client, &url, Duration::from_secs(5), pod).await);
        }
    }
    // Issue 24 item 5: every metric an alert or a Grafana panel names is one
    // the roles export, or a known exporter's; and every name follows the rule.
    let exported = exported_metrics(&scraped);
    let misnamed: Vec<_> = exported
        .iter()
        .filter_map(|(name, kind)| {
            breaks_naming_rule(name, kind).map(|why| format!("{name}: {why}"))
        })
        .collect();
    assert!(
        misnamed.is_empty(),
        "metrics off the naming rule (DEVELOPERS.md): {misnamed:#?}"
    );
    let queries = alert_and_panel_queries(&manifests);
    assert!(
        queries
            .iter()
            .any(|(source, _)| source.starts_with("dashboard")),
        "no Grafana dashboard ConfigMap (label grafana_dashboard) in the render"
    );
    let unknown = unknown_metrics(&queries, &exported);
    assert!(
        unknown.is_empty(),
        "alerts or panels name metrics nobody exports: {unknown:#?}"
    );

    // SIGTERM: each drains and exits 0 within its terminationGracePeriodSeconds.
    let stopping: Vec<_> = pods
        .into_iter()
        .map(|(mut pod, _)| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let _ = Command::new("kill")
                    .args(["-TERM", &pod.child.id().to_string()])
                    .status();
                let status = pod.child.wait().expect("wait");
                (
                    pod.role.clone(),
                    status,
                    started.elapsed(),
                    pod.grace,
                    pod.log(),
                )
            })
        })
        .collect();
    for handle in stopping {
        let (role, status, took, grace, log) = handle.join().expect("join");
        assert!(status.success(), "{role} exited {status} on SIGTERM\n{log}");
        assert!(
            took < grace,
            "{role} took {took:?} to stop, longer than its grace period {grace:?}"
        );
    }
}

/// Series from exporters other than ours that alerts and panels may name.
const EXTERNAL_METRICS: &[(&str, &str)] = &[
    ("kafka_consumergroup_lag", "Strimzi's Kafka Exporter"),
    (
        "kafka_topic_partition_current_offset",
        "Strimzi's Kafka Exporter",
    ),
    (
        "kube_cronjob_status_last_successful_time",
        "kube-state-metrics",
    ),
    (
        "kube_deployment_status_replicas_unavailable",
        "kube-state-metrics",
    ),
    ("kube_job_status_active", "kube-state-metrics"),
    ("kube_job_status_completion_time", "kube-state-metrics"),
    ("kube_job_status_failed", "kube-state-metrics"),
    ("kube_job_status_start_time", "kube-state-metrics"),
];

/// Prefixes of the exporters' names a query may use; any other identifier is
/// a function, keyword or label.
const METRIC_NAMESPACES: &[&str] = &["sqi_", "kafka_", "kube_"];

/// Every PromQL query of the render, with where it is: each alert's `expr`,
/// and each panel target's `expr` of each dashboard in a ConfigMap labelled
/// `grafana_dashboard`.
fn alert_and_panel_queries(manifests: &Manifests) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for rule in manifests.of("PrometheusRule") {
        for group in rule["spec"]["groups"].as_array().into_iter().flatten() {
            for alert in group["rules"].as_array().into_iter().flatten() {
                if let Some(expr) = alert["expr"].as_str() {
                    queries.push((format!("alert {}", alert["alert"]), expr.to_owned()));
                }
            }
        }
    }
    for map in manifests
        .of("ConfigMap")
        .filter(|m| !m["metadata"]["labels"]["grafana_dashboard"].is_null())
    {
        for (file, text) in map["data"].as_object().into_iter().flatten() {
            let dashboard: Value = serde_json::from_str(text.as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("dashboard {file} is not JSON: {e}"));
            for panel in dashboard["panels"].as_array().into_iter().flatten() {
                for target in panel["targets"].as_array().into_iter().flatten() {
                    let expr = target["expr"].as_str().unwrap_or_default();
                    queries.push((
                        format!("dashboard {file}, panel {}", panel["title"]),
                        expr.to_owned(),
                    ));
                }
            }
        }
    }
    queries
}

/// Metric names and types from a Prometheus text exposition (`# TYPE` lines).
fn exported_metrics(scraped: &str) -> BTreeMap<String, String> {
    scraped
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Why `name` breaks the naming rule in DEVELOPERS.md ("Metrics"), if it does.
fn breaks_naming_rule(name: &str, kind: &str) -> Option<&'static str> {
    let Some(rest) = ["sqi_ingest_", "sqi_processor_", "sqi_report_"]
        .iter()
        .find_map(|role| name.strip_prefix(role))
    else {
        return Some("not sqi_<role>_ with a role that serves /metrics");
    };
    if rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Some("not lowercase snake case");
    }
    match (kind, name.ends_with("_total")) {
        ("counter", false) => Some("a counter that does not end in _total"),
        ("gauge" | "summary" | "histogram", true) => Some("ends in _total but is not a counter"),
        _ => None,
    }
}

/// The names `queries` use that neither `exported` (with a summary's `_sum`
/// and `_count`) nor [`EXTERNAL_METRICS`] has, and the queries that name no
/// metric at all, each with where it is.
fn unknown_metrics(
    queries: &[(String, String)],
    exported: &BTreeMap<String, String>,
) -> Vec<String> {
    let known = |name: &str| {
        exported.contains_key(name)
            || ["_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| exported.contains_key(base))
            })
            || EXTERNAL_METRICS
                .iter()
                .any(|(external, _)| *external == name)
    };
    let mut unknown = Vec::new();
    for (source, expr) in queries {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|word| METRIC_NAMESPACES.iter().any(|ns| word.starts_with(ns)))
            .collect();
        if names.is_empty() {
            unknown.push(format!("{source}: names no metric: {expr}"));
        }
        unknown.extend(
            names
                .into_iter()
                .filter(|name| !known(name))
                .map(|name| format!("{source}: {name}")),
        );
    }
    unknown
}

/// The check above can fail: a panel naming a metric nobody exports, an
/// alert naming no metric, and names off the rule are all reported.
#[test]
fn the_metric_name_check_reports_what_nobody_exports() {
    let exported = exported_metrics(
        "# TYPE sqi_ingest_http_requests_total counter\n\
         # TYPE sqi_report_http_request_duration_seconds summary\n",
    );
    let queries = vec![
        (
            "dashboard ok".to_owned(),
            "sum(rate(sqi_ingest_http_requests_total[5m])) / sum(sqi_report_http_request_duration_seconds_count)"
                .to_owned(),
        ),
        (
            "dashboard typo".to_owned(),
            "sum(rate(sqi_ingest_http_request_total[5m]))".to_owned(),
        ),
        (
            "alert external".to_owned(),
            "sum(kafka_consumergroup_lag) > 1 and sum(kafka_consumergroup_lags) > 1".to_owned(),
        ),
        ("alert none".to_owned(), "vector(1) > 0".to_owned()),
    ];
    assert_eq!(
        unknown_metrics(&queries, &exported),
        [
            "dashboard typo: sqi_ingest_http_request_total",
            "alert external: kafka_consumergroup_lags",
            "alert none: names no metric: vector(1) > 0",
        ]
    );
    assert!(breaks_naming_rule("sqi_ingest_events_accepted", "counter").is_some());
    assert!(breaks_naming_rule("sqi_batch_runs_total", "counter").is_some());
    assert!(breaks_naming_rule("sqi_report_cache_bytes_total", "gauge").is_some());
    assert!(breaks_naming_rule("sqi_report_answer_cache_bytes", "gauge").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_cronjob_runs_the_binary_with_its_arguments() {
    let services = Services::from_env();
    let (bucket, _lake) = services.fresh_lake().await;
    for overlay in ["overlays/dev", "overlays/prod"] {
        let manifests = Manifests(render(overlay));
        let cronjob = manifests.of("CronJob").next().expect("the batch CronJob");
        let job = &cronjob["spec"]["jobTemplate"]["spec"];
        let container = &job["template"]["spec"]["containers"][0];
        let overrides: BTreeMap<&str, String> = [("SQI_LAKE_URL", format!("s3://{bucket}/lake"))]
            .into_iter()
            .collect();
        let env = manifests.environment(container, &overrides);
        let completions = job["completions"].as_u64().unwrap_or(1);
        for index in 0..completions {
            // The Job controller sets JOB_COMPLETION_INDEX; the kubelet expands it in args.
            let mut vars = env.clone();
            vars.insert("JOB_COMPLETION_INDEX".into(), index.to_string());
            let args: Vec<String> = container["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| expand(a.as_str().expect("arg"), &vars))
                .collect();
            let output = Command::new(sqi_binary())
                .args(&args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("SQI_S3_ENDPOINT", &services.s3_endpoint)
                .envs(&vars)
                .output()
                .expect("sqi batch runs");
            let stderr = String::from_utf8_lossy(&output.stderr);
            // An empty lake: the flags parse (exit 2 would be a usage error,
            // which the Job's podFailurePolicy fails at once), and the day
            // gate refuses yesterday, which the Job retries.
            assert_eq!(
                output.status.code(),
                Some(1),
                "{overlay} `sqi {}`: {stderr}",
                args.join(" ")
            );
            let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
            assert!(
                stderr.contains(&format!("{yesterday} is not complete")),
                "{overlay} `sqi {}`: {stderr}",
                args.join(" ")
            );
        }
    }
}

/// Runs deploy/rollout against tests/support/fake-kubectl.
fn rollout(fail: &str) -> (std::process::Output, PathBuf, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    let log = state.path().join("calls.log");
    let real = which("kubectl");
    let output = Command::new(repo().join("deploy/rollout"))
        .args([
            "prod",
            &format!("registry.example/sqi@sha256:{}", "ab".repeat(32)),
        ])
        .env("KUBECTL", repo().join("tests/support/fake-kubectl"))
        .env("REAL_KUBECTL", real)
        .env("FAKE_KUBECTL_STATE", state.path())
        .env("FAKE_KUBECTL_LOG", &log)
        .env("FAKE_KUBECTL_FAIL", fail)
        .env("ROLLOUT_TIMEOUT", "5s")
        .output()
        .expect("deploy/rollout runs");
    (output, log, state)
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

#[test]
fn a_healthy_rollout_applies_the_pushed_digest_and_undoes_nothing() {
    let (output, log, state) = rollout("");
    let calls = std::fs::read_to_string(&log).expect("calls");
    assert!(
        output.status.success(),
        "{}\n{calls}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(calls.contains("apply -k"), "{calls}");
    for deployment in ["sqi-ingest", "sqi-processor", "sqi-report"] {
        assert!(
            calls.contains(&format!("-n sqi rollout status deployment/{deployment}")),
            "{calls}"
        );
    }
    assert!(!calls.contains("undo"), "{calls}");
    let applied = std::fs::read_to_string(state.path().join("applied.yaml")).expect("applied");
    let images: BTreeSet<&str> = applied
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert_eq!(
        images,
        BTreeSet::from([format!("registry.example/sqi@sha256:{}", "ab".repeat(32)).as_str()]),
        "every pod runs the pushed digest"
    );
}

#[test]
fn a_failed_rollout_is_undone_to_the_previous_revisions() {
    let (output, log, state) = rollout("sqi-report");
    let calls = std::fs::read_to_string(&log).expect("calls");
    assert_eq!(output.status.code(), Some(1), "{calls}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sqi-report did not become ready"),
        "{stderr}"
    );
    // Every Deployment this apply moved goes back, not only the one that failed:
    // a release is all or nothing.
    let apply = calls.find("apply -k").expect("applied");
    for deployment in ["sqi-ingest", "sqi-processor", "sqi-report"] {
        let undo = calls
            .find(&format!(
                "-n sqi rollout undo deployment/{deployment} --to-revision=7"
            ))
            .unwrap_or_else(|| panic!("{deployment} was not undone:\n{calls}"));
        assert!(undo > apply);
    }
    // The CronJob gets its previous spec back, without the server's fields.
    let replaced: Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("replaced.json")).expect("replaced"),
    )
    .expect("json");
    assert_eq!(replaced["spec"]["schedule"], "0 4 * * *");
    assert!(replaced["metadata"].get("resourceVersion").is_none());
    assert!(replaced.get("status").is_none());
}

#[test]
fn a_rollout_refuses_an_image_not_given_by_digest() {
    let output = Command::new(repo().join("deploy/rollout"))
        .args(["prod", "registry.example/sqi:latest"])
        .env("KUBECTL", "/bin/false")
        .output()
        .expect("deploy/rollout runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("by digest"));
}

/// What `gcr.io/distroless/cc-debian12` provides beyond the kernel's vDSO and
/// the loader: glibc, libgcc and libstdc++ (and OpenSSL, from the base image).
const DISTROLESS_CC_LIBRARIES: [&str; 9] = [
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libssl.so.3",
    "libcrypto.so.3",
];

#[test]
fn the_dockerfile_puts_one_binary_on_a_distroless_runtime_it_can_run_on() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let instructions: Vec<(String, String)> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(op, rest)| (op.to_ascii_uppercase(), rest.trim().to_owned()))
        .collect();
    let stages: Vec<&String> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, image)| image)
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let runtime = stages.last().expect("runtime stage");
    assert!(
        runtime.starts_with("gcr.io/distroless/cc-debian12"),
        "runtime {runtime}"
    );
    let runtime_at = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("FROM");
    let runtime_steps = &instructions[runtime_at..];
    let user = runtime_steps
        .iter()
        .rfind(|(op, _)| op == "USER")
        .map(|(_, u)| u.clone())
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("USER {user} must be numeric"));
    assert_ne!(uid, 0, "USER must not be root");
    // The manifests' runAsUser is the image's user.
    for overlay in ["overlays/dev", "overlays/prod"] {
        for (owner, pod) in Manifests(render(overlay)).pod_specs() {
            assert_eq!(
                pod["securityContext"]["runAsUser"], uid,
                "{overlay} {owner}"
            );
        }
    }
    // Exactly one program: the sqi binary, as the entrypoint.
    let copied: Vec<&String> = runtime_steps
        .iter()
        .filter(|(op, _)| op == "COPY")
        .map(|(_, args)| args)
        .collect();
    assert!(
        copied
            .iter()
            .any(|c| c.contains("--from=") && c.ends_with("/usr/local/bin/sqi")),
        "{copied:?}"
    );
    assert!(
        runtime_steps
            .iter()
            .any(|(op, args)| op == "ENTRYPOINT" && args == "[\"/usr/local/bin/sqi\"]"),
        "ENTRYPOINT"
    );
    // The build is the locked release build of the one binary.
    assert!(
        dockerfile.contains("cargo build --release --locked -p sqi"),
        "build step"
    );
    // Assets the image carries exist, and .dockerignore does not hide them.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for path in ["ingest/assets/widget.js", "sqi/report/dashboard"] {
        assert!(repo().join(path).exists(), "{path}");
        assert!(dockerfile.contains(path), "the image carries {path}");
        assert!(
            !ignore.lines().any(|p| !p.starts_with('#')
                && !p.trim().is_empty()
                && dockerignored(path, p.trim())),
            "{path} is dockerignored"
        );
    }
    for excluded in ["target", ".git", "node_modules"] {
        assert!(
            ignore.contains(excluded),
            ".dockerignore leaves out {excluded}"
        );
    }
    // The build context (the repository less what .dockerignore drops) still
    // holds the whole workspace, so `cargo build --locked` can load it.
    let context = tempfile::tempdir().expect("context dir");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let files = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .expect("git ls-files");
    for file in String::from_utf8_lossy(&files.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
    {
        if patterns.iter().any(|p| dockerignored(file, p)) || !repo().join(file).exists() {
            continue;
        }
        let to = context.path().join(file);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(repo().join(file), &to).expect("copy");
    }
    let metadata = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(context.path())
        .output()
        .expect("cargo metadata");
    assert!(
        metadata.status.success(),
        "the Docker build context cannot load the workspace: {}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    // Every library the binary links is in the runtime image.
    let ldd = Command::new("ldd")
        .arg(sqi_binary())
        .output()
        .expect("ldd runs");
    let text = String::from_utf8_lossy(&ldd.stdout);
    for line in text.lines() {
        let library = line.split_whitespace().next().unwrap_or_default();
        let system = library.starts_with("linux-vdso") || library.contains("ld-linux");
        assert!(
            system || DISTROLESS_CC_LIBRARIES.contains(&library),
            "sqi links {library}, which distroless/cc-debian12 does not have"
        );
    }
    // The ports the image documents are the roles' default listeners.
    let exposed: BTreeSet<&str> = runtime_steps
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, ports)| ports.split_whitespace())
        .collect();
    assert_eq!(exposed, BTreeSet::from(["8080", "8081", "9090"]));
}

/// Whether a `.dockerignore` line drops a repository path (the forms used
/// there: `dir/`, `**/dir/`, `*.ext`).
fn dockerignored(path: &str, pattern: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    if let Some(dir) = pattern.strip_prefix("**/") {
        path.split('/').any(|part| part == dir)
    } else if let Some(ext) = pattern.strip_prefix('*') {
        path.ends_with(ext)
    } else {
        path == pattern || path.starts_with(&format!("{pattern}/"))
    }
}
