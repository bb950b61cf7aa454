//! Widget traffic against ingest (issue 22): what `widget.js` really sends,
//! against the same server's `GET /livez` floor under the same generator.
//!
//! A beacon is one event per request, `text/plain` (what `sendBeacon` sends
//! for a string `Blob`), with a fresh `event_id`, `sent_at`, a referrer, an
//! `Origin` and a browser's user agent from a weighted mix of desktop,
//! mobile, tablet and crawler agents. Phases, each for `--seconds`:
//! 1. the floor: `GET /livez` with the same headers, closed loop;
//! 2. beacons at saturation, closed loop;
//! 3. beacons at half of (2), open loop, for latency;
//! 4. beacons with connection churn: every client closes its connection
//!    after `--requests-per-connection` requests, as browsers moving
//!    between pages do.
//!
//! Ingest's CPU time per request comes from `/proc/PID/stat`, so the ratio
//! of (2) to (1) is the cost of an event over the cost of HTTP alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::cpu_seconds;

/// `sqi-bench ingest`'s widget phases' settings.
#[derive(Debug, Clone)]
pub(crate) struct WidgetLoad {
    /// Base URL of a running `sqi ingest`.
    pub ingest: String,
    /// Seconds per phase.
    pub seconds: u64,
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// Requests each connection carries in the churn phase.
    pub requests_per_connection: u64,
    /// The ingest process, for its CPU time.
    pub ingest_pid: Option<u32>,
}

/// User agents and their weights: a browser mix of desktop, mobile and
/// tablet agents, plus crawlers, as a news site's access log shows them.
const USER_AGENTS: &[(&str, u32)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        22,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
        8,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
        5,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        5,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        24,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
        14,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        6,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        6,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        3,
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        4,
    ),
    (
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        2,
    ),
    (
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        1,
    ),
];

/// The `n`th request's user agent, by weight, spread so that consecutive
/// requests of one client differ.
fn user_agent(n: u64) -> &'static str {
    let total: u64 = USER_AGENTS.iter().map(|(_, w)| u64::from(*w)).sum();
    // A multiplicative hash spreads the sequence over the weights.
    let mut pick = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
    for (agent, weight) in USER_AGENTS {
        if pick < u64::from(*weight) {
            return agent;
        }
        pick -= u64::from(*weight);
    }
    USER_AGENTS[0].0
}

/// The body `widget.js` posts for the `n`th event.
fn beacon(n: u64) -> String {
    let publisher = format!("bench-{:04}.example", n % 2000);
    let now = chrono::Utc::now().timestamp_millis();
    let mut event = json!({
        "type": "pageview",
        "publisher": publisher,
        "url": format!("https://{publisher}/articles/{}", n % 97),
        "event_id": uuid::Uuid::new_v4().to_string(),
        "ts": now,
        "referrer": "https://www.google.com/",
    });
    // A sixth are shares and clickbacks, as in the batched phase.
    match n % 6 {
        4 => {
            event["type"] = json!("share");
            event["channel"] =
                json!(["facebook", "twitter", "whatsapp", "email"][(n % 4) as usize]);
        }
        5 => {
            event["type"] = json!("clickback");
            event["channel"] = json!("facebook");
        }
        _ => {}
    }
    json!({ "sent_at": now, "events": [event] }).to_string()
}

/// What one request of a phase is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `GET /livez`, the floor.
    Livez,
    /// A widget beacon.
    Beacon,
}

/// One phase's figures.
#[derive(Debug, Default, Clone, Copy)]
struct Phase {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: Option<f64>,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?)
}

fn build(client: &reqwest::Client, base: &str, what: Request, n: u64) -> reqwest::RequestBuilder {
    let request = match what {
        Request::Livez => client.get(format!("{base}/livez")),
        Request::Beacon => client
            .post(format!("{base}/v1/events"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(beacon(n)),
    };
    request
        .header("user-agent", user_agent(n))
        .header("origin", format!("https://bench-{:04}.example", n % 2000))
        .header("accept-language", "en-US,en;q=0.9")
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// Every client sends its next request when the last is answered. With
/// `per_connection`, a client closes its connection after that many.
async fn closed_loop(
    load: &WidgetLoad,
    what: Request,
    per_connection: Option<u64>,
) -> anyhow::Result<Phase> {
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(load.seconds);
    let cpu_before = cpu_seconds(load.ingest_pid);
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..load.clients {
        // A client of its own per worker: one connection each, like browsers.
        let mut http = client()?;
        let (ok, base) = (ok.clone(), load.ingest.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = c as u64 * 1_000_000_000;
            let mut on_connection = 0;
            while Instant::now() < deadline {
                let last = per_connection.is_some_and(|k| on_connection + 1 >= k);
                let mut request = build(&http, &base, what, n);
                if last {
                    request = request.header("connection", "close");
                }
                n += 1;
                let sent = Instant::now();
                if let Ok(response) = request.send().await
                    && response.status().is_success()
                    && response.bytes().await.is_ok()
                {
                    latencies.push(sent.elapsed());
                    let _ = ok.fetch_add(1, Ordering::Relaxed);
                }
                on_connection += 1;
                if last {
                    // A new client, so the next request opens a connection.
                    on_connection = 0;
                    if let Ok(fresh) = client() {
                        http = fresh;
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = join_all(clients)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .flatten()
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(load.ingest_pid);
    latencies.sort_unstable();
    let requests = ok.load(Ordering::Relaxed) as f64;
    Ok(Phase {
        requests_per_s: requests / seconds,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        cpu_us_per_request: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) / requests.max(1.0) * 1e6),
    })
}

/// Beacons on a fixed schedule at `rate`, whatever the answers do.
async fn open_loop(load: &WidgetLoad, rate: f64) -> anyhow::Result<Phase> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(load.clients)
        .build()?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + Duration::from_secs(load.seconds);
    let cpu_before = cpu_seconds(load.ingest_pid);
    let started = Instant::now();
    let mut inflight = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let _ = tick.tick().await;
        let request = build(&http, &load.ingest, Request::Beacon, n);
        n += 1;
        inflight.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answered = request.send().await;
            answered
                .is_ok_and(|r| r.status().is_success())
                .then(|| sent.elapsed())
        }));
    }
    let mut latencies: Vec<Duration> = join_all(inflight)
        .await
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(load.ingest_pid);
    latencies.sort_unstable();
    let requests = latencies.len() as f64;
    Ok(Phase {
        requests_per_s: requests / seconds,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        cpu_us_per_request: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) / requests.max(1.0) * 1e6),
    })
}

fn figures(phase: &Phase) -> Value {
    let round = |x: f64, places: i32| {
        let scale = 10f64.powi(places);
        (x * scale).round() / scale
    };
    json!({
        "requests_per_s": round(phase.requests_per_s, 0),
        "p50_ms": round(phase.p50_ms, 2),
        "p99_ms": round(phase.p99_ms, 2),
        "ingest_cpu_us_per_request": phase.cpu_us_per_request.map(|x| round(x, 1)),
    })
}

/// Runs the four phases and returns their figures with the ratios.
pub(crate) async fn run(load: &WidgetLoad) -> anyhow::Result<Value> {
    let floor = closed_loop(load, Request::Livez, None).await?;
    let saturated = closed_loop(load, Request::Beacon, None).await?;
    let half = open_loop(load, saturated.requests_per_s / 2.0).await?;
    let churn = closed_loop(
        load,
        Request::Beacon,
        Some(load.requests_per_connection.max(1)),
    )
    .await?;
    let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
    Ok(json!({
        "clients": load.clients,
        "livez_floor": figures(&floor),
        "beacons_saturated": figures(&saturated),
        "beacons_half_load": figures(&half),
        "beacons_with_churn": figures(&churn),
        "requests_per_connection_in_churn": load.requests_per_connection,
        "ratio_beacons_to_floor": ratio(saturated.requests_per_s, floor.requests_per_s),
        "ratio_churn_to_floor": ratio(churn.requests_per_s, floor.requests_per_s),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The beacon is what ingest accepts from the widget: the contract's
    /// body with one event, every field of the right shape.
    #[test]
    fn a_beacon_is_one_widget_event() {
        for n in 0..12 {
            let body: Value = serde_json::from_str(&beacon(n)).unwrap();
            let events = body["events"].as_array().unwrap();
            assert_eq!(events.len(), 1);
            let event = &events[0];
            assert!(uuid::Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
            let is_pageview = event["type"] == "pageview";
            assert_eq!(event["channel"].is_null(), is_pageview, "{event}");
            assert!(body["sent_at"].is_i64());
        }
        assert_ne!(
            serde_json::from_str::<Value>(&beacon(1)).unwrap()["events"][0]["event_id"],
            serde_json::from_str::<Value>(&beacon(1)).unwrap()["events"][0]["event_id"],
            "event ids repeat"
        );
    }

    /// Every agent of the mix is used, in about its share.
    #[test]
    fn the_user_agent_mix_follows_its_weights() {
        let total: u32 = USER_AGENTS.iter().map(|(_, w)| w).sum();
        let draws = 100_000u64;
        for (agent, weight) in USER_AGENTS {
            let seen = (0..draws).filter(|n| user_agent(*n) == *agent).count() as f64;
            let expected = draws as f64 * f64::from(*weight) / f64::from(total);
            assert!(
                (seen - expected).abs() < expected * 0.2 + 50.0,
                "{agent}: {seen} of {draws}, expected about {expected}"
            );
        }
    }
}
