//! Hostile input against the report API (issue 19, items 6–9 and 14–16):
//! what a holder of a report key, or anyone without one, can ask. Each test
//! builds the report in-process over a small `file://` lake. `SECURITY.md`
//! lists each attack with its test.

use crate::fixture;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use chrono::{TimeZone, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqi_report::{KeyRing, ReportOptions, ReportState};
use sqi_schemas::lake::{HOUR_MS, Lake, Table, hour_partition};

const PUBLISHER_KEY: &str = "hostile-key-for-pub-ny";
const MARKETER_KEY: &str = "hostile-key-for-marketing";

/// URLs a publisher's page could report: formulas a spreadsheet would run.
const HOSTILE_URLS: [&str; 6] = [
    "=HYPERLINK(\"https://evil.example\",\"click\")",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
];

#[cfg(test)]
fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
fn keys_json() -> String {
    format!(
        r#"[{{"name":"ny","sha256":"{}","scope":"publisher:pub-ny"}},
            {{"name":"marketing","sha256":"{}","scope":"marketer"}}]"#,
        hash(PUBLISHER_KEY),
        hash(MARKETER_KEY)
    )
}

#[cfg(test)]
/// The first UTC hour of the fixture's data: 2024-03-06 00:00.
fn first_hour() -> i64 {
    Utc.with_ymd_and_hms(2024, 3, 6, 0, 0, 0)
        .unwrap()
        .timestamp_millis()
}

#[cfg(test)]
/// `pub-ny`: 3 pageviews and one share on facebook every hour of
/// 2024-03-06..=2024-03-08 (UTC), and one hour of URLs, some of them formulas.
async fn write_fixture(lake: &Lake) {
    for i in 0..(3 * 24) {
        let hour = first_hour() + i * HOUR_MS;
        put_aggregates(lake, hour, "part-00000.parquet", 3).await;
    }
    let hour = first_hour() + 15 * HOUR_MS;
    let mut t = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let (mut p, mut u, mut e, mut c, mut n) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Int64Builder::new(),
    );
    let urls = HOSTILE_URLS
        .iter()
        .map(|u| (*u).to_owned())
        .chain(["https://ny.example/plain".to_owned()]);
    for (k, url) in urls.enumerate() {
        t.append_value(hour);
        p.append_value("pub-ny");
        u.append_value(url);
        e.append_value("share");
        c.append_value("facebook");
        n.append_value(k as i64 + 1);
    }
    let batch = RecordBatch::try_new(
        Table::UrlCounts.schema(),
        vec![
            Arc::new(t.finish()),
            Arc::new(p.finish()),
            Arc::new(u.finish()),
            Arc::new(e.finish()),
            Arc::new(c.finish()),
            Arc::new(n.finish()),
        ],
    )
    .unwrap();
    put(lake, Table::UrlCounts, hour, "part-00000.parquet", &batch).await;
}

#[cfg(test)]
/// One `aggregates` file for `hour`: `pageviews` pageviews and a share of `pub-ny`.
async fn put_aggregates(lake: &Lake, hour: i64, file: &str, pageviews: i64) {
    let mut t = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let (mut p, mut c, mut e, mut d, mut n) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Int64Builder::new(),
    );
    for (channel, kind, events) in [
        (None, "pageview", pageviews),
        (Some("facebook"), "share", 1),
    ] {
        t.append_value(hour);
        p.append_value("pub-ny");
        c.append_option(channel);
        e.append_value(kind);
        d.append_value("desktop");
        n.append_value(events);
    }
    let batch = RecordBatch::try_new(
        Table::Aggregates.schema(),
        vec![
            Arc::new(t.finish()),
            Arc::new(p.finish()),
            Arc::new(c.finish()),
            Arc::new(e.finish()),
            Arc::new(d.finish()),
            Arc::new(n.finish()),
        ],
    )
    .unwrap();
    put(lake, Table::Aggregates, hour, file, &batch).await;
}

#[cfg(test)]
async fn put(lake: &Lake, table: Table, hour: i64, file: &str, batch: &RecordBatch) {
    let bytes = sqi_schemas::lake::profile::parquet_bytes(batch).unwrap();
    let path = lake.path(&format!(
        "{}/{}/{file}",
        table.prefix(),
        hour_partition(hour)
    ));
    lake.store()
        .put(&path, PutPayload::from_bytes(bytes))
        .await
        .unwrap();
}

#[cfg(test)]
/// Serves the report over `lake` with `keys`; the base URL.
async fn serve_keys(lake: Lake, keys: KeyRing, options: ReportOptions) -> String {
    let state = ReportState::with_options(lake, keys, None, options)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Detached: the server lives as long as the test runtime.
    drop(tokio::spawn(sqi_report::serve(
        state,
        listener,
        std::future::pending(),
    )));
    base
}

#[cfg(test)]
/// The fixture lake, served with the two keys.
async fn serve_fixture(options: ReportOptions) -> (tempfile::TempDir, Lake, String) {
    let (dir, lake) = fixture::local_lake();
    write_fixture(&lake).await;
    let keys = KeyRing::parse(&keys_json()).unwrap();
    let base = serve_keys(lake.clone(), keys, options).await;
    (dir, lake, base)
}

#[cfg(test)]
fn unlimited() -> ReportOptions {
    ReportOptions {
        requests_per_minute: 0,
        ..ReportOptions::default()
    }
}

#[cfg(test)]
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = client.request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[cfg(test)]
async fn get(base: &str, key: Option<&str>, path: &str) -> (u16, String) {
    let (status, _, body) = send(
        &reqwest::Client::new(),
        reqwest::Method::GET,
        &format!("{base}{path}"),
        key,
    )
    .await;
    (status, body)
}

#[cfg(test)]
/// The contract's error body, or a failure naming what came instead.
fn error_code(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> String {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content-type `{content_type}`, body `{body}`"
    );
    let parsed: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{status}: body `{body}` is not JSON: {e}"));
    let code = parsed["error"]["code"].as_str();
    assert!(
        code.is_some() && parsed["error"]["message"].is_string(),
        "{status}: `{body}` is not {{\"error\": {{\"code\", \"message\"}}}}"
    );
    code.unwrap_or_default().to_owned()
}

/// Item 6: `HEAD` requests are GETs without a body, so they pass the same
/// guard: a key, its rate limit, the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_pay_the_rate_limit_and_need_a_key() {
    let (_dir, _lake, base) = serve_fixture(ReportOptions {
        requests_per_minute: 60,
        burst: 5,
        ..ReportOptions::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/publishers/pub-ny/summary?period=7d");
    let (status, _, _) = send(&client, reqwest::Method::HEAD, &url, None).await;
    assert_eq!(status, 401, "HEAD without a key");
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let (status, _, _) = send(&client, reqwest::Method::HEAD, &url, Some(PUBLISHER_KEY)).await;
        statuses.push(status);
    }
    assert!(
        statuses.contains(&429),
        "40 HEAD requests with a burst of 5 were never limited: {statuses:?}"
    );
    // HEAD and GET share the allowance.
    let (status, _, _) = send(&client, reqwest::Method::GET, &url, Some(PUBLISHER_KEY)).await;
    assert_eq!(status, 429);

    // A HEAD answered first leaves the GET's whole answer in the cache, not an empty one.
    let (_dir, _lake, base) = serve_fixture(unlimited()).await;
    let url =
        format!("{base}/v1/publishers/pub-ny/summary?period=custom&from=2024-03-06&to=2024-03-06");
    let (status, headers, body) =
        send(&client, reqwest::Method::HEAD, &url, Some(PUBLISHER_KEY)).await;
    assert_eq!(status, 200);
    assert!(body.is_empty() && headers.contains_key("etag"), "{body}");
    let (status, again, body) =
        send(&client, reqwest::Method::GET, &url, Some(PUBLISHER_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(again.get("etag"), headers.get("etag"));
    let summary: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["pageviews"], 72, "{body}");
}

/// Item 16: every refusal, axum's own extractor and routing rejections
/// included, is the contract's `{"error": {"code", "message"}}` JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_the_contracts_json_error() {
    let (_dir, _lake, base) = serve_fixture(unlimited()).await;
    let client = reqwest::Client::new();
    let cases: [(reqwest::Method, String, u16); 5] = [
        (
            reqwest::Method::GET,
            format!("{base}/v1/publishers/pub-ny/channels?limit=1&limit=2"),
            400,
        ),
        (
            reqwest::Method::GET,
            format!("{base}/v1/publishers/pub-ny/summary?period=7d&period=28d"),
            400,
        ),
        (
            reqwest::Method::GET,
            format!("{base}/v1/publishers/%FF%FE/summary"),
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/v1/publishers/pub-ny/summary"),
            405,
        ),
        (reqwest::Method::GET, format!("{base}/v1/nothing-here"), 404),
    ];
    for (method, url, want) in cases {
        let (status, headers, body) = send(&client, method.clone(), &url, Some(MARKETER_KEY)).await;
        assert_eq!(status, want, "{method} {url}: {body}");
        let _ = error_code(status, &headers, &body);
    }
}

/// Item 8: a parameter the endpoint does not take is refused (it would
/// otherwise be a new cache key for every value), naming it like other 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameters_are_refused_not_cached() {
    let (_dir, _lake, base) = serve_fixture(unlimited()).await;
    let client = reqwest::Client::new();
    for (path, field) in [
        (
            "/v1/publishers/pub-ny/summary?period=7d&cache_buster=1",
            "cache_buster",
        ),
        ("/v1/publishers/pub-ny/channels?period=7d&x=", "x"),
        ("/v1/sqi/leaderboard?utm_source=mail", "utm_source"),
    ] {
        let (status, headers, body) = send(
            &client,
            reqwest::Method::GET,
            &format!("{base}{path}"),
            Some(MARKETER_KEY),
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_code(status, &headers, &body), "invalid_parameter");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["error"]["field"], field, "{body}");
    }
    // What the dashboard sends is accepted.
    for path in [
        "/v1/publishers/pub-ny/summary?period=7d&tz=Europe/Paris&compare=previous_period",
        "/v1/publishers/pub-ny/timeseries?period=7d&tz=UTC&metric=shares",
        "/v1/publishers/pub-ny/channels?period=custom&from=2024-03-06&to=2024-03-08&tz=UTC&limit=12",
        "/v1/publishers/pub-ny/top-urls?period=7d&tz=UTC&limit=20",
        "/v1/publishers/pub-ny/sqi?from=2024-03-01&to=2024-03-08",
        "/v1/sqi/leaderboard?category=news&limit=50",
    ] {
        let (status, body) = get(&base, Some(MARKETER_KEY), path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Item 8: one key asking many distinct (valid) questions cannot flush the
/// answers another key's questions put in the cache. The fixture changes
/// an old hour behind the cache's back (the lake state watches only recent
/// partitions), so a cached answer shows the old number and a recomputed one
/// the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_flush_everyones_cache() {
    let (_dir, lake, base) = serve_fixture(ReportOptions {
        requests_per_minute: 0,
        cache_entries: 50,
        ..ReportOptions::default()
    })
    .await;
    // Every cached answer expires at the end of a 5-minute epoch; start
    // with time to spare before the next, or the cache's expiry, not a
    // flush, would show the new number.
    let into_epoch = Utc::now().timestamp().rem_euclid(300);
    if into_epoch > 300 - 120 {
        tokio::time::sleep(Duration::from_secs((301 - into_epoch) as u64)).await;
    }
    let victim = "/v1/publishers/pub-ny/summary?period=custom&from=2024-03-06&to=2024-03-06";
    let pageviews = |body: &str| serde_json::from_str::<Value>(body).unwrap()["pageviews"].clone();
    let (status, body) = get(&base, Some(PUBLISHER_KEY), victim).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pageviews(&body), 72);
    // A second file in an old hour: only a recomputed answer counts it.
    // Then more distinct questions from the marketer than the cache holds.
    put_aggregates(&lake, first_hour(), "part-00001.parquet", 1000).await;
    for offset in 0..60 {
        let path = format!(
            "/v1/publishers/pub-ny/channels?period=custom&from=2024-03-06&to=2024-03-08&offset={offset}"
        );
        let (status, body) = get(&base, Some(MARKETER_KEY), &path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = get(&base, Some(PUBLISHER_KEY), victim).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        pageviews(&body),
        72,
        "another key's 60 questions flushed this key's cached answer"
    );
}

/// Item 15: text cells that a spreadsheet would run as a formula are
/// prefixed with `'` in CSV (OWASP CSV injection); numbers stay numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_never_start_a_formula() {
    let (_dir, _lake, base) = serve_fixture(unlimited()).await;
    let path =
        "/v1/publishers/pub-ny/top-urls?period=custom&from=2024-03-06&to=2024-03-08&format=csv";
    let (status, body) = get(&base, Some(PUBLISHER_KEY), path).await;
    assert_eq!(status, 200, "{body}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let mut urls = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        let url = record.get(0).unwrap().to_owned();
        let shares: i64 = record.get(2).unwrap().parse().unwrap();
        assert!(shares > 0, "{record:?}");
        urls.push(url);
    }
    assert_eq!(urls.len(), HOSTILE_URLS.len() + 1, "{body}");
    for url in &urls {
        let first = url.chars().next().unwrap_or(' ');
        assert!(
            !matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r'),
            "a CSV cell starts a formula: {url:?}"
        );
    }
    for hostile in HOSTILE_URLS {
        assert!(
            urls.contains(&format!("'{hostile}")),
            "{hostile:?} in {urls:?}"
        );
    }
    assert!(urls.contains(&"https://ny.example/plain".to_owned()));
}

/// Item 9: revoking a key in the key file takes effect without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_without_a_restart() {
    let (_dir, lake) = fixture::local_lake();
    write_fixture(&lake).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let path = keys_dir.path().join("keys.json");
    std::fs::write(&path, keys_json()).unwrap();
    let base = serve_keys(
        lake,
        KeyRing::load(&path).unwrap(),
        ReportOptions {
            requests_per_minute: 0,
            cache_refresh: Duration::from_millis(100),
            ..ReportOptions::default()
        },
    )
    .await;
    let me = "/v1/me";
    assert_eq!(get(&base, Some(PUBLISHER_KEY), me).await.0, 200);
    // The publisher key is revoked: only the marketer's remains.
    std::fs::write(
        &path,
        format!(
            r#"[{{"name":"marketing","sha256":"{}","scope":"marketer"}}]"#,
            hash(MARKETER_KEY)
        ),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = get(&base, Some(PUBLISHER_KEY), me).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key was still accepted 10 s after the key file changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&base, Some(MARKETER_KEY), me).await.0, 200);
    // A broken file (a half-written edit) keeps the keys as they were.
    std::fs::write(&path, "[{").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&base, Some(MARKETER_KEY), me).await.0, 200);
}

/// Item 9: quotas belong to keys (their secrets), not to the names in the
/// key file: two keys both named `shared` each have their own allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_with_one_name_do_not_share_a_quota() {
    let (_dir, lake) = fixture::local_lake();
    write_fixture(&lake).await;
    let keys = KeyRing::parse(&format!(
        r#"[{{"name":"shared","sha256":"{}","scope":"publisher:pub-ny"}},
            {{"name":"shared","sha256":"{}","scope":"marketer"}}]"#,
        hash(PUBLISHER_KEY),
        hash(MARKETER_KEY)
    ))
    .unwrap();
    let base = serve_keys(
        lake,
        keys,
        ReportOptions {
            requests_per_minute: 1,
            burst: 3,
            ..ReportOptions::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(&base, Some(PUBLISHER_KEY), "/v1/me").await.0, 200);
    }
    assert_eq!(get(&base, Some(PUBLISHER_KEY), "/v1/me").await.0, 429);
    let (status, body) = get(&base, Some(MARKETER_KEY), "/v1/me").await;
    assert_eq!(status, 200, "another key named alike was limited: {body}");
}

/// Item 9: a key file that lists one secret twice is ambiguous (which scope
/// wins?) and is refused, instead of the last entry silently winning.
#[test]
fn a_key_file_listing_one_secret_twice_is_refused() {
    let keys = KeyRing::parse(&format!(
        r#"[{{"name":"a","sha256":"{}","scope":"publisher:pub-ny"}},
            {{"name":"b","sha256":"{}","scope":"marketer"}}]"#,
        hash(PUBLISHER_KEY),
        hash(PUBLISHER_KEY).to_uppercase()
    ));
    assert!(keys.is_err(), "{keys:?}");
}

/// Item 9: guessing keys is rate-limited per client address: an address
/// that keeps failing gets 429s, while another address is still answered
/// 401 and a valid key from the same address is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_limited_per_address() {
    let (_dir, _lake, base) = serve_fixture(ReportOptions::default()).await;
    let from = |octet: u8| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)))
            .build()
            .unwrap()
    };
    let (guesser, bystander) = (from(1), from(2));
    let url = format!("{base}/v1/me");
    let mut statuses = Vec::new();
    for i in 0..200 {
        let guess = format!("guess-{i}");
        let (status, headers, body) =
            send(&guesser, reqwest::Method::GET, &url, Some(&guess)).await;
        if status == 429 {
            assert_eq!(error_code(status, &headers, &body), "rate_limited");
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(status);
    }
    assert!(
        statuses.contains(&429),
        "200 wrong keys from one address were never limited"
    );
    // Addresses share one of 4,096 buckets by a random seed: a bystander
    // shares the guesser's with odds 1 in 4,096, two bystanders 1 in 16M.
    let mut bystanders = Vec::new();
    for client in [&bystander, &from(3)] {
        let (status, _, _) = send(client, reqwest::Method::GET, &url, Some("guess-x")).await;
        bystanders.push(status);
    }
    assert!(
        bystanders.contains(&401),
        "other addresses pay for the guesser: {bystanders:?}"
    );
    let (status, _, _) = send(&guesser, reqwest::Method::GET, &url, Some(PUBLISHER_KEY)).await;
    assert_eq!(
        status, 200,
        "a valid key is served whatever its address did"
    );
}

/// Item 7: the questions whose cost grows with their parameters have caps:
/// hourly buckets over a long period, and very long custom periods, get 400
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_questions_are_capped() {
    let (_dir, _lake, base) = serve_fixture(unlimited()).await;
    let client = reqwest::Client::new();
    for (path, field) in [
        (
            "/v1/publishers/pub-ny/timeseries?period=90d&interval=hour",
            "interval",
        ),
        (
            "/v1/publishers/pub-ny/summary?period=custom&from=2015-01-01&to=2024-12-31",
            "from",
        ),
        (
            "/v1/publishers/pub-ny/top-urls?period=custom&from=2020-01-01&to=2024-03-08&tz=America/New_York",
            "from",
        ),
        (
            "/v1/publishers/pub-ny/sqi?from=2015-01-01&to=2024-12-31",
            "from",
        ),
    ] {
        let (status, headers, body) = send(
            &client,
            reqwest::Method::GET,
            &format!("{base}{path}"),
            Some(PUBLISHER_KEY),
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_code(status, &headers, &body), "invalid_parameter");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["error"]["field"], field, "{path}: {body}");
    }
    // Within the caps: a week by hour, a year of days.
    for path in [
        "/v1/publishers/pub-ny/timeseries?period=7d&interval=hour",
        "/v1/publishers/pub-ny/timeseries?period=custom&from=2024-03-01&to=2024-03-31&interval=hour",
        "/v1/publishers/pub-ny/summary?period=custom&from=2023-03-09&to=2024-03-08",
    ] {
        let (status, body) = get(&base, Some(PUBLISHER_KEY), path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Item 7: the leaderboard is ordered and paged inside the query (a top-k
/// sort), not by turning the day's every row into JSON. Its pages, in turn,
/// are exactly the day's ranking: SQI, then `score_z`, highest first, then
/// publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboard_pages_are_the_days_ranking() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type};
    let (_dir, lake) = fixture::random_lake().await;
    let day = fixture::day();
    let gate = sqi_batch::Gate::allowing_incomplete("share-events");
    let _ = sqi_batch::run_day(&lake, day, &gate, sqi_batch::Shard::WHOLE)
        .await
        .unwrap();
    // The same rows the run wrote: reruns are bit-identical.
    let scored = sqi_batch::compute_sqi(&lake, day).await.unwrap();
    let column = |name: &str| scored.column_by_name(name).unwrap().clone();
    let (publishers, sqis, zs) = (column("publisher"), column("sqi"), column("score_z"));
    let (publishers, sqis, zs) = (
        arrow::compute::cast(&publishers, &arrow::datatypes::DataType::Utf8).unwrap(),
        sqis.as_primitive::<Int32Type>().clone(),
        zs.as_primitive::<Float64Type>().clone(),
    );
    let publishers = publishers.as_string::<i32>();
    let mut expected: Vec<(i32, Option<f64>, String)> = (0..scored.num_rows())
        .filter(|i| !sqis.is_null(*i))
        .map(|i| {
            (
                sqis.value(i),
                (!zs.is_null(i)).then(|| zs.value(i)),
                publishers.value(i).to_owned(),
            )
        })
        .collect();
    expected.sort_by(|a, b| {
        let z = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
        b.0.cmp(&a.0)
            .then(z(b.1).total_cmp(&z(a.1)))
            .then_with(|| a.2.cmp(&b.2))
    });
    assert!(expected.len() > 1000, "{}", expected.len());
    let expected: Vec<String> = expected.into_iter().map(|e| e.2).collect();

    let keys = KeyRing::parse(&keys_json()).unwrap();
    let base = serve_keys(lake, keys, unlimited()).await;
    let mut ranked = Vec::new();
    for offset in (0..expected.len() + 1000).step_by(1000) {
        let path = format!("/v1/sqi/leaderboard?date={day}&limit=1000&offset={offset}");
        let (status, body) = get(&base, Some(MARKETER_KEY), &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["total_rows"], expected.len(), "{path}");
        for row in page["rows"].as_array().unwrap() {
            ranked.push(row["publisher"].as_str().unwrap().to_owned());
            assert_eq!(row["rank"], ranked.len(), "{row}");
        }
    }
    assert_eq!(ranked, expected);
    // A category's page, and a page past the end.
    let (status, body) = get(
        &base,
        Some(MARKETER_KEY),
        &format!("/v1/sqi/leaderboard?date={day}&category=pets&limit=5&offset=2"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let rows = page["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 5, "{body}");
    assert_eq!(rows[0]["rank"], 3);
    assert!(rows.iter().all(|r| r["category"] == "pets"), "{body}");
    let (status, body) = get(
        &base,
        Some(MARKETER_KEY),
        &format!("/v1/sqi/leaderboard?date={day}&offset=99999999999"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["rows"], serde_json::json!([]));
}

/// Item 14: the newest SQI day is one every shard has written. While only
/// shard 0 of 2 has written the next day, the leaderboard's default day and
/// a publisher's latest SQI stay on the last whole day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_sqi_day_is_not_the_newest() {
    let (_dir, lake) = fixture::random_lake().await;
    let day = fixture::day();
    let gate = sqi_batch::Gate::allowing_incomplete("share-events");
    let _ = sqi_batch::run_day(&lake, day, &gate, sqi_batch::Shard::WHOLE)
        .await
        .unwrap();
    let next = day.succ_opt().unwrap();
    let whole = lake
        .store()
        .get(&lake.path(&format!("sqi/dt={day}/part-00000.parquet")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // Shard 0 of 2's file for the next day (its rows are the whole day's:
    // what matters is that shard 1's file is missing).
    lake.store()
        .put(
            &lake.path(&format!("sqi/dt={next}/part-00000-of-00002.parquet")),
            PutPayload::from_bytes(whole),
        )
        .await
        .unwrap();
    let keys = KeyRing::parse(&keys_json()).unwrap();
    let base = serve_keys(lake, keys, unlimited()).await;
    let (status, body) = get(&base, Some(MARKETER_KEY), "/v1/sqi/leaderboard?limit=1").await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["date"],
        day.to_string(),
        "the leaderboard's default day is one shard of two"
    );
}
