//! The report API over a fixture lake, through HTTP: periods in a timezone
//! across a DST change, zero-filled series that add up to the summary, CSV
//! equal to JSON row for row, pages that never overlap, scoped keys, and 400s
//! that name their field.

use crate::fixture;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use chrono::{TimeZone, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqi_report::{KeyRing, ReportOptions, ReportState};
use sqi_schemas::lake::{HOUR_MS, Lake, Table, hour_partition};

const PUBLISHER_KEY: &str = "key-for-pub-ny";
const MARKETER_KEY: &str = "key-for-marketing";

/// Hourly data from 2024-03-06 00:00 to 2024-03-14 00:00 UTC for `pub-ny`,
/// except the New York day 2024-03-08 (05:00 UTC on the 8th to 05:00 on the
/// 9th), which has none: every hour 3 pageviews (plus 50 from bots) and, on
/// even hours, 1 share and 1 clickback on a channel that rotates.
#[cfg(test)]
async fn write_fixture(lake: &Lake) -> BTreeMap<i64, i64> {
    let first = Utc
        .with_ymd_and_hms(2024, 3, 6, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let gap = (
        Utc.with_ymd_and_hms(2024, 3, 8, 5, 0, 0)
            .unwrap()
            .timestamp_millis(),
        Utc.with_ymd_and_hms(2024, 3, 9, 5, 0, 0)
            .unwrap()
            .timestamp_millis(),
    );
    let channels = ["facebook", "twitter", "linkedin"];
    let mut pageviews_by_hour = BTreeMap::new();
    for i in 0..(8 * 24) {
        let hour = first + i * HOUR_MS;
        if (gap.0..gap.1).contains(&hour) {
            continue;
        }
        let mut rows: Vec<(&str, Option<&str>, &str, &str, i64)> = vec![
            ("pub-ny", None, "pageview", "desktop", 3),
            ("pub-ny", None, "pageview", "bot", 50),
            ("pub-other", None, "pageview", "desktop", 7),
        ];
        if i % 2 == 0 {
            let channel = channels[(i as usize / 2) % 3];
            rows.push(("pub-ny", Some(channel), "share", "mobile", 1));
            rows.push(("pub-ny", Some(channel), "clickback", "desktop", 1));
        }
        let _ = pageviews_by_hour.insert(hour, 3);
        let mut t = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let (mut p, mut c, mut e, mut d, mut n) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            Int64Builder::new(),
        );
        for row in &rows {
            t.append_value(hour);
            p.append_value(row.0);
            c.append_option(row.1);
            e.append_value(row.2);
            d.append_value(row.3);
            n.append_value(row.4);
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
        put(lake, Table::Aggregates, hour, &batch).await;
    }
    // URLs with tied counts, so pages must break ties by URL.
    let hour = Utc
        .with_ymd_and_hms(2024, 3, 10, 15, 0, 0)
        .unwrap()
        .timestamp_millis();
    let mut t = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let (mut p, mut u, mut e, mut c, mut n) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Int64Builder::new(),
    );
    for k in 0..11i64 {
        for (kind, events) in [("pageview", 10 + k % 3), ("share", k % 4)] {
            t.append_value(hour);
            p.append_value("pub-ny");
            u.append_value(format!("https://ny.example/story-{k:02}"));
            e.append_value(kind);
            c.append_option((kind == "share").then_some("facebook"));
            n.append_value(events);
        }
    }
    let urls = RecordBatch::try_new(
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
    put(lake, Table::UrlCounts, hour, &urls).await;
    pageviews_by_hour
}

#[cfg(test)]
async fn put(lake: &Lake, table: Table, hour: i64, batch: &RecordBatch) {
    let bytes = sqi_schemas::lake::profile::parquet_bytes(batch).unwrap();
    let path = lake.path(&format!(
        "{}/{}/part-00000.parquet",
        table.prefix(),
        hour_partition(hour)
    ));
    lake.store()
        .put(&path, PutPayload::from_bytes(bytes))
        .await
        .unwrap();
}

#[cfg(test)]
async fn serve(lake: Lake) -> String {
    serve_with(lake, ReportOptions::default()).await
}

#[cfg(test)]
async fn serve_with(lake: Lake, options: ReportOptions) -> String {
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = KeyRing::parse(&format!(
        r#"[{{"name":"ny","sha256":"{}","scope":"publisher:pub-ny"}},
            {{"name":"marketing","sha256":"{}","scope":"marketer"}}]"#,
        hash(PUBLISHER_KEY),
        hash(MARKETER_KEY)
    ))
    .unwrap();
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
async fn get(base: &str, key: Option<&str>, path: &str) -> (u16, String, Option<String>) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.text().await.unwrap(), content_type)
}

#[cfg(test)]
async fn json(base: &str, path: &str) -> Value {
    let (status, body, _) = get(base, Some(PUBLISHER_KEY), path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// CSV and JSON of the same request hold the same rows, field for field.
#[cfg(test)]
async fn assert_csv_matches_json(base: &str, path: &str) {
    let from_json = json(base, path).await;
    let (status, csv_text, content_type) =
        get(base, Some(PUBLISHER_KEY), &format!("{path}&format=csv")).await;
    assert_eq!(status, 200, "{csv_text}");
    assert_eq!(content_type.as_deref(), Some("text/csv; charset=utf-8"));
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let csv_rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let json_rows = from_json["rows"].as_array().unwrap();
    assert_eq!(csv_rows.len(), json_rows.len(), "{path}");
    for (csv_row, json_row) in csv_rows.iter().zip(json_rows) {
        for (column, cell) in header.iter().zip(csv_row) {
            let expected = match &json_row[column] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(cell, &expected, "{path}: column {column}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_api_answers_in_the_readers_timezone_and_formats() {
    let (_dir, lake) = fixture::local_lake();
    let pageviews_by_hour = write_fixture(&lake).await;
    let base = serve(lake).await;
    let week = "period=custom&from=2024-03-06&to=2024-03-12&tz=America/New_York";

    // Seven New York days across spring-forward: 167 hours, zero-filled.
    let series = json(
        &base,
        &format!("/v1/publishers/pub-ny/timeseries?{week}&metric=pageviews"),
    )
    .await;
    let rows = series["rows"].as_array().unwrap();
    let days: Vec<&str> = rows.iter().map(|r| r["bucket"].as_str().unwrap()).collect();
    assert_eq!(
        days,
        [
            "2024-03-06",
            "2024-03-07",
            "2024-03-08",
            "2024-03-09",
            "2024-03-10",
            "2024-03-11",
            "2024-03-12"
        ]
    );
    let value = |day: &str| {
        rows.iter().find(|r| r["bucket"] == day).unwrap()["value"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(value("2024-03-08"), 0, "the empty day is there, as zero");
    assert_eq!(value("2024-03-10"), 23 * 3, "the short day has 23 hours");
    assert_eq!(value("2024-03-11"), 24 * 3);
    assert_eq!(series["period"]["start"], "2024-03-06T05:00:00+00:00");
    assert_eq!(series["period"]["end"], "2024-03-13T04:00:00+00:00");

    let start = Utc
        .with_ymd_and_hms(2024, 3, 6, 5, 0, 0)
        .unwrap()
        .timestamp_millis();
    let end = Utc
        .with_ymd_and_hms(2024, 3, 13, 4, 0, 0)
        .unwrap()
        .timestamp_millis();
    let expected: i64 = pageviews_by_hour.range(start..end).map(|(_, n)| n).sum();
    let summed: i64 = rows.iter().map(|r| r["value"].as_i64().unwrap()).sum();
    let summary = json(&base, &format!("/v1/publishers/pub-ny/summary?{week}")).await;
    assert_eq!(summed, expected);
    assert_eq!(series["total"].as_i64(), Some(expected));
    assert_eq!(summary["pageviews"].as_i64(), Some(expected), "{summary}");
    let with_bots = json(
        &base,
        &format!("/v1/publishers/pub-ny/summary?{week}&include_bots=true"),
    )
    .await;
    assert!(with_bots["pageviews"].as_i64().unwrap() > expected);

    // Hourly buckets are local times, one per existing hour.
    let hourly = json(
        &base,
        "/v1/publishers/pub-ny/timeseries?period=custom&from=2024-03-10&to=2024-03-10&tz=America/New_York&interval=hour",
    )
    .await;
    let hours = hourly["rows"].as_array().unwrap();
    assert_eq!(hours.len(), 23);
    assert_eq!(
        hours[2]["bucket"], "2024-03-10T03:00:00-04:00",
        "02:00 does not exist"
    );

    // Channels and URLs: CSV equals JSON; pages partition the whole list.
    assert_csv_matches_json(
        &base,
        &format!("/v1/publishers/pub-ny/timeseries?{week}&metric=shares"),
    )
    .await;
    assert_csv_matches_json(&base, &format!("/v1/publishers/pub-ny/channels?{week}")).await;
    assert_csv_matches_json(&base, &format!("/v1/publishers/pub-ny/top-urls?{week}")).await;
    let channels = json(&base, &format!("/v1/publishers/pub-ny/channels?{week}")).await;
    let shares: i64 = channels["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["shares"].as_i64().unwrap())
        .sum();
    assert_eq!(Some(shares), summary["shares"].as_i64());
    assert_eq!(channels["total_rows"], 3);

    let all = json(
        &base,
        &format!("/v1/publishers/pub-ny/top-urls?{week}&limit=1000"),
    )
    .await;
    let total = all["total_rows"].as_u64().unwrap() as usize;
    assert_eq!(total, 11);
    let mut paged = Vec::new();
    for offset in (0..total + 3).step_by(3) {
        let page = json(
            &base,
            &format!("/v1/publishers/pub-ny/top-urls?{week}&limit=3&offset={offset}"),
        )
        .await;
        paged.extend(page["rows"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        &paged,
        all["rows"].as_array().unwrap(),
        "pages overlap or leave gaps"
    );
    let order: Vec<(i64, String)> = paged
        .iter()
        .map(|r| {
            (
                -r["shares"].as_i64().unwrap(),
                r["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "shares descending, ties by URL");

    // Keys: 401 without, 403 outside the scope with one body for every
    // publisher, existing or not; the leaderboard is for marketers.
    let (status, _, _) = get(&base, None, "/v1/publishers/pub-ny/summary").await;
    assert_eq!(status, 401);
    let (status, _, _) = get(&base, Some("not-a-key"), "/v1/publishers/pub-ny/summary").await;
    assert_eq!(status, 401);
    let (a_status, a_body, _) = get(
        &base,
        Some(PUBLISHER_KEY),
        "/v1/publishers/pub-other/summary",
    )
    .await;
    let (b_status, b_body, _) = get(
        &base,
        Some(PUBLISHER_KEY),
        "/v1/publishers/pub-nobody/summary",
    )
    .await;
    assert_eq!((a_status, b_status), (403, 403));
    assert_eq!(a_body, b_body);
    let (status, _, _) = get(&base, Some(PUBLISHER_KEY), "/v1/sqi/leaderboard").await;
    assert_eq!(status, 403);
    // `/v1/me` describes each key, never another key's cached answer.
    let me = json(&base, "/v1/me").await;
    assert_eq!(
        (me["scope"].as_str(), me["publisher"].as_str()),
        (Some("publisher:pub-ny"), Some("pub-ny"))
    );
    let (_, body, _) = get(&base, Some(MARKETER_KEY), "/v1/me").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["scope"],
        "marketer"
    );
    let (status, body, _) = get(&base, Some(PUBLISHER_KEY), "/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );
    let (status, body, _) = get(&base, Some(MARKETER_KEY), "/v1/sqi/leaderboard").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = get(
        &base,
        Some(MARKETER_KEY),
        "/v1/publishers/pub-other/channels?period=7d",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Bad input: 400 naming the field.
    for (path, field) in [
        ("/v1/publishers/pub-ny/timeseries?metric=likes", "metric"),
        (
            "/v1/publishers/pub-ny/timeseries?interval=minute",
            "interval",
        ),
        ("/v1/publishers/pub-ny/summary?tz=Mars/Olympus", "tz"),
        (
            "/v1/publishers/pub-ny/summary?period=custom&from=2024-13-01&to=2024-01-01",
            "from",
        ),
        ("/v1/publishers/pub-ny/top-urls?limit=0", "limit"),
        ("/v1/publishers/pub-ny/top-urls?offset=-1", "offset"),
        ("/v1/publishers/pub-ny/channels?format=xml", "format"),
        ("/v1/publishers/pub-ny/sqi?from=yesterday", "from"),
    ] {
        let (status, body, _) = get(&base, Some(PUBLISHER_KEY), path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["field"], field, "{path}: {body}");
    }
}

#[cfg(test)]
async fn raw(base: &str, key: &str, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    request.send().await.unwrap()
}

#[cfg(test)]
fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_revalidate_by_etag_until_the_lake_changes() {
    let (_dir, lake) = fixture::local_lake();
    let _ = write_fixture(&lake).await;
    let base = serve_with(
        lake.clone(),
        ReportOptions {
            cache_refresh: std::time::Duration::from_millis(100),
            ..ReportOptions::default()
        },
    )
    .await;
    let path = "/v1/publishers/pub-ny/summary?period=today";
    let first = raw(&base, PUBLISHER_KEY, path, None).await;
    assert_eq!(first.status(), 200);
    let etag = header(&first, "etag").expect("an ETag");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["pageviews"], 0);
    assert!(body.get("data_as_of").is_some());

    // Same lake: 304, no body; another key with the same scope rules gets the same tag.
    let again = raw(&base, PUBLISHER_KEY, path, Some(&etag)).await;
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
    assert!(again.text().await.unwrap().is_empty());
    let marketer = raw(&base, MARKETER_KEY, path, Some(&etag)).await;
    assert_eq!(marketer.status(), 304);

    // Today's events arrive: within a refresh the answer and its tag change.
    let hour = Utc::now().timestamp_millis() / HOUR_MS * HOUR_MS;
    let mut t = TimestampMillisecondBuilder::new().with_timezone("UTC");
    t.append_value(hour);
    let batch = RecordBatch::try_new(
        Table::Aggregates.schema(),
        vec![
            Arc::new(t.finish()),
            Arc::new(arrow::array::StringArray::from(vec!["pub-ny"])),
            Arc::new(arrow::array::StringArray::from(vec![None::<&str>])),
            Arc::new(arrow::array::StringArray::from(vec!["pageview"])),
            Arc::new(arrow::array::StringArray::from(vec!["desktop"])),
            Arc::new(arrow::array::Int64Array::from(vec![5])),
        ],
    )
    .unwrap();
    put(&lake, Table::Aggregates, hour, &batch).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let fresh = raw(&base, PUBLISHER_KEY, path, Some(&etag)).await;
        if fresh.status() == 200 {
            assert_ne!(header(&fresh, "etag").as_deref(), Some(etag.as_str()));
            let body: Value = fresh.json().await.unwrap();
            assert_eq!(body["pageviews"], 5, "{body}");
            break;
        }
        assert_eq!(fresh.status(), 304);
        assert!(
            std::time::Instant::now() < deadline,
            "the cache never saw the new file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_sees_its_quota_and_is_told_when_to_retry() {
    let (_dir, lake) = fixture::local_lake();
    let _ = write_fixture(&lake).await;
    let base = serve_with(
        lake,
        ReportOptions {
            requests_per_minute: 2,
            burst: 3,
            ..ReportOptions::default()
        },
    )
    .await;
    let path = "/v1/publishers/pub-ny/channels?period=7d";
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = raw(&base, PUBLISHER_KEY, path, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("3"));
        remaining.push(header(&response, "x-ratelimit-remaining").unwrap());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let limited = raw(&base, PUBLISHER_KEY, path, None).await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = header(&limited, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(
        header(&limited, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Refused requests still say where the quota stands.
    let refused = raw(
        &base,
        MARKETER_KEY,
        "/v1/publishers/pub-ny/channels?format=xml",
        None,
    )
    .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        header(&refused, "x-ratelimit-remaining").as_deref(),
        Some("2")
    );
    // Another key has its own allowance.
    let other = raw(&base, MARKETER_KEY, path, None).await;
    assert_eq!(other.status(), 200);
}

/// A request built from parts a property test picks.
#[derive(Debug, Clone)]
struct Probe {
    key: Option<&'static str>,
    endpoint: &'static str,
    publisher: String,
    params: Vec<(&'static str, String)>,
}

#[cfg(test)]
fn probes() -> impl proptest::strategy::Strategy<Value = Probe> {
    use proptest::prelude::*;
    let key = prop_oneof![
        Just(Some(PUBLISHER_KEY)),
        Just(Some(MARKETER_KEY)),
        Just(Some("a-stolen-guess")),
        Just(None),
    ];
    let endpoint = prop_oneof![
        Just("summary"),
        Just("timeseries"),
        Just("channels"),
        Just("top-urls"),
        Just("sqi"),
        Just("leaderboard"),
    ];
    let publisher = prop_oneof![
        Just("pub-ny".to_owned()),
        Just("pub-other".to_owned()),
        Just("pub-nobody".to_owned()),
        "\\PC{0,80}",
    ];
    let value = prop_oneof![
        Just(String::new()),
        Just("7d".to_owned()),
        Just("custom".to_owned()),
        Just("2024-03-10".to_owned()),
        Just("America/New_York".to_owned()),
        Just("csv".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        "\\PC{0,40}",
    ];
    let name = prop_oneof![
        Just("period"),
        Just("from"),
        Just("to"),
        Just("tz"),
        Just("compare"),
        Just("include_bots"),
        Just("metric"),
        Just("interval"),
        Just("sort"),
        Just("format"),
        Just("limit"),
        Just("offset"),
        Just("date"),
        Just("category"),
    ];
    let params = proptest::collection::vec((name, value), 0..6);
    (key, endpoint, publisher, params).prop_map(|(key, endpoint, publisher, params)| Probe {
        key,
        endpoint,
        publisher,
        params,
    })
}

/// Random keys, publishers and parameters: never a 5xx; a publisher key never
/// sees another publisher's rows, and is refused with one identical body.
#[test]
fn no_request_leaks_another_publisher_or_breaks_the_server() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_dir, lake) = fixture::local_lake();
    let base = runtime.block_on(async {
        let _ = write_fixture(&lake).await;
        serve_with(
            lake,
            ReportOptions {
                requests_per_minute: 0,
                unauthorized_per_minute: 0,
                ..ReportOptions::default()
            },
        )
        .await
    });
    let forbidden = runtime.block_on(async {
        get(
            &base,
            Some(PUBLISHER_KEY),
            "/v1/publishers/pub-other/summary",
        )
        .await
        .1
    });
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(probe in probes())| {
        let mut url = url::Url::parse(&base).unwrap();
        {
            let mut path = url.path_segments_mut().unwrap();
            if probe.endpoint == "leaderboard" {
                let _ = path.extend(["v1", "sqi", "leaderboard"]);
            } else {
                let _ = path.extend(["v1", "publishers", probe.publisher.as_str(), probe.endpoint]);
            }
        }
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &probe.params {
                let _ = query.append_pair(name, value);
            }
        }
        let (status, body) = runtime.block_on(async {
            let mut request = reqwest::Client::new().get(url.clone());
            if let Some(key) = probe.key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        });
        prop_assert!(status < 500, "{url}: {status} {body}");
        if probe.key == Some(PUBLISHER_KEY) {
            prop_assert!(!body.contains("pub-other"), "{url}: {body}");
            let own = probe.endpoint != "leaderboard" && probe.publisher == "pub-ny";
            if !own && status != 404 {
                prop_assert_eq!(status, 403, "{}: {}", url, body);
                prop_assert_eq!(&body, &forbidden);
            }
        }
        if probe.key.is_none() || probe.key == Some("a-stolen-guess") {
            prop_assert!(status == 401 || status == 404, "{url}: {status}");
        }
    });
}

/// Every number the API gives for the fixture equals DuckDB's, computed from
/// the same Parquet files by `tests/py/report_duckdb.py`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_number_matches_duckdb_on_the_same_files() {
    let (dir, lake) = fixture::local_lake();
    let _ = write_fixture(&lake).await;
    let base = serve(lake).await;
    let (tz, from, to) = ("America/New_York", "2024-03-06", "2024-03-12");
    let script: std::path::PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "tests",
        "py",
        "report_duckdb.py",
    ]
    .iter()
    .collect();
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .args(["pub-ny", tz, from, to])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let duck: Value = serde_json::from_slice(&output.stdout).unwrap();
    let period = format!("period=custom&from={from}&to={to}&tz={tz}");
    let query = format!("{period}&limit=1000");

    let summary = json(&base, &format!("/v1/publishers/pub-ny/summary?{period}")).await;
    for metric in ["pageviews", "shares", "clickbacks"] {
        assert_eq!(summary[metric], duck["totals"][metric], "{metric}");
    }
    let series = json(
        &base,
        &format!("/v1/publishers/pub-ny/timeseries?{query}&metric=pageviews"),
    )
    .await;
    for row in series["rows"].as_array().unwrap() {
        let day = row["bucket"].as_str().unwrap();
        let want = duck["days"].get(day).and_then(Value::as_i64).unwrap_or(0);
        assert_eq!(row["value"].as_i64(), Some(want), "{day}");
    }
    let channels = json(&base, &format!("/v1/publishers/pub-ny/channels?{query}")).await;
    let rows = channels["rows"].as_array().unwrap();
    assert_eq!(rows.len(), duck["channels"].as_object().unwrap().len());
    for row in rows {
        let want = &duck["channels"][row["channel"].as_str().unwrap()];
        assert_eq!(
            (&row["shares"], &row["clickbacks"]),
            (&want["shares"], &want["clickbacks"])
        );
    }
    let urls = json(&base, &format!("/v1/publishers/pub-ny/top-urls?{query}")).await;
    let rows = urls["rows"].as_array().unwrap();
    assert_eq!(rows.len(), duck["urls"].as_object().unwrap().len());
    for row in rows {
        let want = &duck["urls"][row["url"].as_str().unwrap()];
        for metric in ["pageviews", "shares", "clickbacks"] {
            assert_eq!(row[metric], want[metric], "{metric} of {}", row["url"]);
        }
    }
}

/// `/openapi.json` is a valid OpenAPI 3 document listing every endpoint, and
/// schemathesis (PyPI), generating requests from it with every check on,
/// finds nothing: no 5xx, every valid request accepted and every invalid one
/// refused, every answer of a declared status, content type and schema
/// (issue 21, acceptance check 3). Rules between parameters, which OpenAPI
/// cannot state, are given to the generator in `tests/py/schemathesis_hooks.py`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_holds_under_schemathesis() {
    let (_dir, lake) = fixture::local_lake();
    let _ = write_fixture(&lake).await;
    // Limits off: schemathesis sends hundreds of requests, some without a key,
    // and a 429 would hide what the check is about.
    let base = serve_with(
        lake,
        ReportOptions {
            requests_per_minute: 0,
            unauthorized_per_minute: 0,
            ..ReportOptions::default()
        },
    )
    .await;
    let (status, body, _) = get(&base, None, "/openapi.json").await;
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    for path in [
        "/v1/publishers/{publisher}/summary",
        "/v1/publishers/{publisher}/timeseries",
        "/v1/publishers/{publisher}/channels",
        "/v1/publishers/{publisher}/top-urls",
        "/v1/publishers/{publisher}/sqi",
        "/v1/sqi/leaderboard",
    ] {
        assert!(
            paths.iter().any(|p| *p == path),
            "{path} missing from {paths:?}"
        );
    }
    let parameters =
        &document["paths"]["/v1/publishers/{publisher}/timeseries"]["get"]["parameters"];
    let names: Vec<&str> = parameters
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let responses = document["paths"]["/v1/publishers/{publisher}/summary"]["get"]["responses"]
        .as_object()
        .unwrap();
    for status in ["200", "304", "400", "401", "403", "429"] {
        assert!(
            responses.contains_key(status),
            "{status} missing: {responses:?}"
        );
    }
    assert!(responses["400"]["content"]["application/json"]["schema"].is_object());
    // Every answer is described field by field: a 200's JSON names a schema
    // of `components`, never a free-form object (issue 21, item 4).
    for (path, item) in document["paths"].as_object().unwrap() {
        let schema = &item["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        let name = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .unwrap_or_else(|| panic!("{path}: the 200 answer names no schema: {schema}"));
        let component = &document["components"]["schemas"][name];
        assert!(
            component["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty())
                || component["allOf"].is_array(),
            "{path}: {name} has no properties: {component}"
        );
    }
    for name in ["publisher", "period", "tz", "metric", "interval", "format"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }

    // The server runs on the runtime's workers; this thread may block.
    // Through python3, so a fresh pip install needs no PATH or shim update.
    let output = std::process::Command::new("python3")
        // schemathesis keeps a cache in its working directory; not in the clone.
        .current_dir(std::env::temp_dir())
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()",
        ])
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {MARKETER_KEY}")])
        .env(
            "SCHEMATHESIS_HOOKS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/schemathesis_hooks.py"),
        )
        .args(["--checks", "all", "--max-examples", "30"])
        .arg("--generation-deterministic")
        .output()
        .expect("schemathesis (pip install -r tests/py/requirements.txt)");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "{}",
        report.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
    assert!(report.contains("passed"), "{report}");
}

/// Whole UTC days the batch has closed are read from `daily` and
/// `daily_urls` (one file a day), the rest from the hourly tables. The
/// fixture's day files deliberately disagree with its hourly ones, so the
/// answers show which table was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_utc_days_come_from_daily_and_the_rest_from_the_hours() {
    let (_dir, lake) = fixture::local_lake();
    let _ = write_fixture(&lake).await;
    for (day, pageviews, complete) in [("2024-03-07", 9_999, true), ("2024-03-11", 5_555, false)] {
        let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
        let batch = RecordBatch::try_new(
            Table::Daily.schema(),
            vec![
                Arc::new(arrow::array::Date32Array::from(vec![
                    arrow::datatypes::Date32Type::from_naive_date(date),
                ])),
                Arc::new(arrow::array::StringArray::from(vec!["pub-ny"])),
                Arc::new(arrow::array::StringArray::from(vec![None::<&str>])),
                Arc::new(arrow::array::StringArray::from(vec!["pageview"])),
                Arc::new(arrow::array::StringArray::from(vec!["desktop"])),
                Arc::new(arrow::array::Int64Array::from(vec![pageviews])),
                Arc::new(arrow::array::BooleanArray::from(vec![complete])),
            ],
        )
        .unwrap();
        let bytes = sqi_schemas::lake::profile::parquet_bytes(&batch).unwrap();
        lake.store()
            .put(
                &lake.path(&format!("daily/dt={day}/part-00000.parquet")),
                PutPayload::from_bytes(bytes),
            )
            .await
            .unwrap();
    }
    let urls = RecordBatch::try_new(
        Table::DailyUrls.schema(),
        vec![
            Arc::new(arrow::array::Date32Array::from(vec![
                arrow::datatypes::Date32Type::from_naive_date(
                    chrono::NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
                ),
            ])),
            Arc::new(arrow::array::StringArray::from(vec!["pub-ny"])),
            Arc::new(arrow::array::StringArray::from(vec![
                "https://ny.example/from-daily-urls",
            ])),
            Arc::new(arrow::array::StringArray::from(vec!["share"])),
            Arc::new(arrow::array::Int64Array::from(vec![4_242])),
            Arc::new(arrow::array::BooleanArray::from(vec![true])),
        ],
    )
    .unwrap();
    lake.store()
        .put(
            &lake.path("daily_urls/dt=2024-03-07/part-00000.parquet"),
            PutPayload::from_bytes(sqi_schemas::lake::profile::parquet_bytes(&urls).unwrap()),
        )
        .await
        .unwrap();
    // The same answers from the day files, then from the month files the
    // batch merges them into (the incomplete 03-11 is not merged).
    day_and_hour_answers(&serve(lake.clone()).await).await;
    for table in [Table::Daily, Table::DailyUrls] {
        let month = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let merged =
            sqi_batch::compact::compact_month(&lake, table, month, sqi_batch::Shard::WHOLE)
                .await
                .unwrap();
        assert_eq!((merged.days, merged.rows), (1, 1), "{merged:?}");
    }
    day_and_hour_answers(&serve(lake).await).await;
}

/// What `complete_utc_days_come_from_daily_and_the_rest_from_the_hours` asks.
#[cfg(test)]
async fn day_and_hour_answers(base: &str) {
    let pageviews = |body: &Value| body["pageviews"].as_i64().unwrap();
    let utc = |from: &str, to: &str| format!("period=custom&from={from}&to={to}&tz=UTC");

    let top = json(
        base,
        &format!(
            "/v1/publishers/pub-ny/top-urls?{}",
            utc("2024-03-07", "2024-03-07")
        ),
    )
    .await;
    assert_eq!(
        top["rows"],
        json!([{"url": "https://ny.example/from-daily-urls", "pageviews": 0, "shares": 4_242, "clickbacks": 0}]),
        "a complete day's URLs come from daily_urls"
    );
    let spanning = json(
        base,
        &format!(
            "/v1/publishers/pub-ny/top-urls?{}",
            utc("2024-03-07", "2024-03-10")
        ),
    )
    .await;
    assert_eq!(
        spanning["total_rows"], 12,
        "the later days' 11 URLs come from url_counts: {spanning}"
    );

    let closed = json(
        base,
        &format!(
            "/v1/publishers/pub-ny/summary?{}",
            utc("2024-03-07", "2024-03-07")
        ),
    )
    .await;
    assert_eq!(pageviews(&closed), 9_999, "a complete day comes from daily");
    let early = json(
        base,
        &format!(
            "/v1/publishers/pub-ny/summary?{}",
            utc("2024-03-11", "2024-03-11")
        ),
    )
    .await;
    assert_eq!(
        pageviews(&early),
        24 * 3,
        "an incomplete daily is not trusted"
    );
    let series = json(
        base,
        &format!(
            "/v1/publishers/pub-ny/timeseries?{}&metric=pageviews",
            utc("2024-03-06", "2024-03-08")
        ),
    )
    .await;
    let values: Vec<i64> = series["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    // 03-08 from 05:00 UTC is the fixture's gap: 5 hours of data.
    assert_eq!(values, [72, 9_999, 15]);
    assert_eq!(series["total"], 72 + 9_999 + 15);
    let shifted = json(
        base,
        "/v1/publishers/pub-ny/summary?period=custom&from=2024-03-07&to=2024-03-07&tz=Europe/Paris",
    )
    .await;
    assert_eq!(
        pageviews(&shifted),
        24 * 3,
        "a shifted day is read by the hour"
    );
    // Item 7: New York's 03-06 and 03-07 (05:00 UTC on the 6th to 05:00 on
    // the 8th) are the whole UTC day 03-07 from `daily` and only the 19 + 5
    // boundary hours from `aggregates`.
    let new_york = "period=custom&from=2024-03-06&to=2024-03-07&tz=America/New_York";
    let spanning = json(base, &format!("/v1/publishers/pub-ny/summary?{new_york}")).await;
    assert_eq!(
        pageviews(&spanning),
        19 * 3 + 9_999 + 5 * 3,
        "whole UTC days inside a local period come from daily"
    );
    // A series by local day cannot split a UTC day's total: with no
    // `daily_hours` for the day, it reads hours (`tests/local_days.rs` has
    // the day-hour table).
    let series = json(
        base,
        &format!("/v1/publishers/pub-ny/timeseries?{new_york}&metric=pageviews"),
    )
    .await;
    assert_eq!(series["total"], 2 * 24 * 3, "{series}");
}

/// Issue 21 item 5: `/readyz` reflects the lake refresh. A report that cannot
/// list the lake (here a symlink loop, which the local store refuses to walk)
/// is unready, with the contract's error body, and becomes ready once a
/// refresh succeeds, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_first_read_of_the_lake() {
    let (dir, lake) = fixture::local_lake();
    let daily = dir.path().join(Table::Daily.prefix());
    std::fs::create_dir_all(&daily).unwrap();
    let looped = daily.join("loop");
    std::os::unix::fs::symlink(&daily, &looped).unwrap();
    let base = serve_with(
        lake,
        ReportOptions {
            cache_refresh: std::time::Duration::from_millis(50),
            ..ReportOptions::default()
        },
    )
    .await;
    let readyz = || async {
        let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "ready without having read the lake: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");

    std::fs::remove_file(&looped).unwrap();
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = readyz().await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 200, "still unready once the lake reads: {}", last.1);
    assert!(last.1.starts_with("ready"), "{}", last.1);
}
