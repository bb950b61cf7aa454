//! Ingest against a real broker: every body form, limits, CORS, broker outage,
//! clock skew, bots, rate limits and SIGTERM under load (issue 3's checks).

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sqi_ingest::IngestConfig;
use sqi_integration_tests::{
    OwnBroker, Services, Shutdown, create_topic, listener, read_topic, sqi_binary, topic_count,
    unique,
};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

struct Ingest {
    url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<sqi_ingest::Result<()>>,
}

impl Ingest {
    async fn start(config: IngestConfig) -> Self {
        let (listener, addr) = listener().await;
        let shutdown = Shutdown::default();
        let task = tokio::spawn(sqi_ingest::run(config, listener, None, shutdown.signal()));
        let ingest = Self {
            url: format!("http://{addr}"),
            shutdown,
            task,
        };
        // Ready means a broker has been seen through librdkafka's statistics.
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client
                .get(format!("{}/readyz", ingest.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return ingest;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ingest never became ready");
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

async fn topic(services: &Services, partitions: i32) -> String {
    let name = unique("ingest");
    services.create_topic(&name, partitions).await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_raw_or_gzipped_and_nothing_is_produced() {
    let services = Services::from_env();
    let topic = topic(&services, 1).await;
    let ingest = Ingest::start(IngestConfig::new(&services.kafka_brokers, &topic)).await;
    let client = reqwest::Client::new();
    let event =
        json!({"publisher": "big.example", "type": "pageview", "url": "https://big.example/"});
    let big: Vec<Value> = (0..400).map(|i| json!({"publisher": "big.example", "type": "pageview", "url": format!("https://big.example/{}{}", i, "x".repeat(3000))})).collect();
    let raw = serde_json::to_vec(&big).unwrap();
    assert!(raw.len() > 1024 * 1024);

    let response = client
        .post(format!("{}/v1/events", ingest.url))
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw).unwrap();
    let compressed = gz.finish().unwrap();
    assert!(
        compressed.len() < 1024 * 1024,
        "the compressed body itself must fit"
    );
    let response = client
        .post(format!("{}/v1/events", ingest.url))
        .header("content-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    assert_eq!(
        topic_count(&services.kafka_brokers, &topic, 1),
        0,
        "a refused body produced records"
    );

    // A normal event still goes through afterwards.
    let ok = client
        .post(format!("{}/v1/events", ingest.url))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(topic_count(&services.kafka_brokers, &topic, 1), 1);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_beacon_form_and_pixel_produce_identical_values() {
    let services = Services::from_env();
    let topic = topic(&services, 2).await;
    let ingest = Ingest::start(IngestConfig::new(&services.kafka_brokers, &topic)).await;
    let client = reqwest::Client::new();
    let events_url = format!("{}/v1/events", ingest.url);
    let ts = 1_750_000_000_000i64;
    let event = json!({"publisher": "forms.example", "type": "share", "channel": "fb",
        "url": "https://forms.example/a?b=c", "ts": ts, "visitor": "v-1", "referrer": "https://ref.example/"});
    let text = event.to_string();

    let json_post = client
        .post(&events_url)
        .header("content-type", "application/json")
        .body(text.clone());
    let beacon = client
        .post(&events_url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(text.clone());
    let form = client
        .post(&events_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "data={}",
            base64::engine::general_purpose::STANDARD
                .encode(&text)
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        ));
    let pixel = client.get(format!(
        "{}/v1/pixel.gif?publisher=forms.example&type=share&channel=fb&url={}&ts={ts}&visitor=v-1&referrer={}",
        ingest.url, "https%3A%2F%2Fforms.example%2Fa%3Fb%3Dc", "https%3A%2F%2Fref.example%2F"
    ));
    for (name, request) in [
        ("json", json_post),
        ("beacon", beacon),
        ("form", form),
        ("pixel", pixel),
    ] {
        let response = request.header("user-agent", CHROME).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        if name == "pixel" {
            assert_eq!(response.headers()["content-type"], "image/gif");
            assert!(
                response.headers()["cache-control"]
                    .to_str()
                    .unwrap()
                    .contains("no-store")
            );
            assert_eq!(&response.bytes().await.unwrap()[..6], b"GIF89a");
        }
    }
    let records = read_topic(&services.kafka_brokers, &topic, 4, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 4);
    let normalised: HashSet<String> = records
        .iter()
        .map(|r| {
            let mut v = r.value.clone();
            let object = v.as_object_mut().unwrap();
            assert!(object.remove("event_id").is_some());
            assert!(object.remove("received_at").is_some());
            v.to_string()
        })
        .collect();
    assert_eq!(
        normalised.len(),
        1,
        "the four forms disagree: {normalised:#?}"
    );
    let value = &records[0].value;
    assert_eq!(value["channel"], "facebook");
    assert_eq!(value["ts"], ts);
    assert_eq!(value["device"], "desktop");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_origin_passes_the_preflight_and_posts() {
    let services = Services::from_env();
    let topic = topic(&services, 1).await;
    let ingest = Ingest::start(IngestConfig::new(&services.kafka_brokers, &topic)).await;
    let client = reqwest::Client::new();
    let origin = "https://some-publisher.example";
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/events", ingest.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], origin);
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("content-type")
    );
    let post = client
        .post(format!("{}/v1/events", ingest.url))
        .header("origin", origin)
        .json(&json!({"publisher": "cors.example", "type": "pageview", "url": "https://cors.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(post.headers()["access-control-allow-origin"], origin);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_is_corrected_bots_are_marked_and_floods_get_429() {
    let services = Services::from_env();
    let topic = topic(&services, 1).await;
    let mut config = IngestConfig::new(&services.kafka_brokers, &topic);
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 5;
    let ingest = Ingest::start(config).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events", ingest.url);

    let now = chrono::Utc::now().timestamp_millis();
    let ahead = now + 10 * 60 * 1000;
    let skewed = json!({"sent_at": ahead, "events": [
        {"publisher": "skew.example", "type": "pageview", "url": "https://skew.example/", "ts": ahead - 5_000}
    ]});
    let response = client
        .post(&url)
        .header("user-agent", CHROME)
        .json(&skewed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bot =
        json!({"publisher": "bots.example", "type": "pageview", "url": "https://bots.example/"});
    let response = client
        .post(&url)
        .header("user-agent", GOOGLEBOT)
        .json(&bot)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let records = read_topic(&services.kafka_brokers, &topic, 2, Duration::from_secs(30)).await;
    let skew = records
        .iter()
        .find(|r| r.value["publisher"] == "skew.example")
        .unwrap();
    let received = skew.value["received_at"].as_i64().unwrap();
    let ts = skew.value["ts"].as_i64().unwrap();
    assert_eq!(
        received - ts,
        5_000,
        "ts must be shifted back by the client's 10-minute lead"
    );
    let bot_record = records
        .iter()
        .find(|r| r.value["publisher"] == "bots.example")
        .unwrap();
    assert_eq!(bot_record.value["device"], "bot");
    assert_eq!(skew.value["device"], "desktop");

    // Burst of 5 events for one (publisher, IP), then the sixth is refused.
    let flood: Vec<Value> = (0..5).map(|i| json!({"publisher": "flood.example", "type": "pageview", "url": format!("https://flood.example/{i}")})).collect();
    assert_eq!(
        client
            .post(&url)
            .json(&flood)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let over = client.post(&url).json(&flood[0]).send().await.unwrap();
    assert_eq!(over.status(), 429);
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        over.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Another publisher from the same address is unaffected.
    assert_eq!(
        client.post(&url).json(&bot).send().await.unwrap().status(),
        200
    );
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_gets_fast_503s_and_recovers_without_a_restart() {
    sqi_integration_tests::init_logs();
    let mut broker = OwnBroker::start().await;
    let topic = unique("outage");
    create_topic(&broker.brokers(), &topic, 1).await;
    let mut config = IngestConfig::new(broker.brokers(), &topic);
    config.unready_after = Duration::from_secs(2);
    let ingest = Ingest::start(config).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events", ingest.url);
    let batch = |n: usize| -> Value {
        let events: Vec<Value> = (0..5)
            .map(|i| {
                json!({"event_id": uuid::Uuid::new_v4().to_string(), "publisher": "outage.example",
                            "type": "pageview", "url": format!("https://outage.example/{n}/{i}")})
            })
            .collect();
        json!(events)
    };
    let mut acknowledged: HashSet<String> = HashSet::new();
    let ids = |b: &Value| -> Vec<String> {
        b.as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let before = batch(0);
    assert_eq!(
        client
            .post(&url)
            .json(&before)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    acknowledged.extend(ids(&before));

    broker.kill();
    for n in 1..=3 {
        let started = Instant::now();
        let response = client.post(&url).json(&batch(n)).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "request {n} during the outage");
        assert!(took < Duration::from_secs(2), "503 took {took:?}");
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "broker_unavailable"
        );
    }
    let mut unready = false;
    for _ in 0..50 {
        if client
            .get(format!("{}/readyz", ingest.url))
            .send()
            .await
            .unwrap()
            .status()
            == 503
        {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready, "/readyz stayed 200 with the broker down");

    broker.resume().await;
    // A client retries its batch, with the same event ids, until it is taken.
    let retried = batch(9);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .post(&url)
            .json(&retried)
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "ingest did not recover after the broker came back; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    acknowledged.extend(ids(&retried));
    let after = batch(10);
    assert_eq!(
        client
            .post(&url)
            .json(&after)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    acknowledged.extend(ids(&after));

    let records = read_topic(
        &broker.brokers(),
        &topic,
        acknowledged.len(),
        Duration::from_secs(30),
    )
    .await;
    let mut seen = HashSet::new();
    for record in &records {
        let id = record.value["event_id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{id} is in the topic twice");
    }
    assert!(
        acknowledged.is_subset(&seen),
        "acknowledged events missing from the topic"
    );
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event_and_exits_zero() {
    let services = Services::from_env();
    let topic = topic(&services, 2).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(sqi_binary())
        .args([
            "ingest",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--kafka-brokers",
            &services.kafka_brokers,
        ])
        .args([
            "--topic",
            &topic,
            "--shutdown-drain-delay",
            "1s",
            "--rate-limit-per-second",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut senders = Vec::new();
    for worker in 0..4 {
        let (client, url) = (client.clone(), format!("{base}/v1/events"));
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                let ids: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| {
                        json!({"event_id": id, "publisher": "term.example",
                    "type": "pageview", "url": format!("https://term.example/{worker}/{n}")})
                    })
                    .collect();
                match client.post(&url).json(&events).send().await {
                    Ok(r) if r.status() == 200 => acknowledged.extend(ids),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The binary exposes its metrics by rule, labelled by route, never by raw URI.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "sqi_ingest_http_requests_total{",
        "route=\"/v1/events\"",
        "sqi_ingest_events_accepted_total",
        "sqi_ingest_delivery_duration_seconds",
        "sqi_ingest_producer_queue_messages",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let terminated = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(20),
            "ingest did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "ingest exited {status}");
    let mut acknowledged = HashSet::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(
        acknowledged.len() > 100,
        "too little load: {}",
        acknowledged.len()
    );
    let records = read_topic(
        &services.kafka_brokers,
        &topic,
        acknowledged.len(),
        Duration::from_secs(60),
    )
    .await;
    let in_topic: HashSet<String> = records
        .iter()
        .map(|r| r.value["event_id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = acknowledged.difference(&in_topic).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {missing:?}",
        acknowledged.len() - in_topic.len().min(acknowledged.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_allowlist_rejects_unknown_publishers_by_event() {
    let services = Services::from_env();
    let topic = topic(&services, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("publishers.csv");
    std::fs::write(&list, "publisher,domain\nknown.example,known.example\n").unwrap();
    let mut config = IngestConfig::new(&services.kafka_brokers, &topic);
    config.allowlist_mode = sqi_ingest::allowlist::AllowlistMode::Enforce;
    config.allowlist_file = Some(list);
    let ingest = Ingest::start(config).await;
    let client = reqwest::Client::new();
    let batch = json!([
        {"publisher": "known.example", "type": "pageview", "url": "https://known.example/"},
        {"publisher": "stranger.example", "type": "pageview", "url": "https://stranger.example/"},
    ]);
    let answer: Value = client
        .post(format!("{}/v1/events", ingest.url))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert_eq!(answer["rejected"][0]["code"], "unknown_publisher");
    assert_eq!(topic_count(&services.kafka_brokers, &topic, 1), 1);
    ingest.stop().await;
}
