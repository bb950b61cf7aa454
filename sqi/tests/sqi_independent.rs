//! The batch job's SQI against an independent implementation of SQI.md in
//! DuckDB (`tests/py/sqi_duckdb.py`, run with PyPI's duckdb) on a randomized
//! lake of 5,200 publishers: long tails, a category too small for its own peer
//! group, zero shares, exact ties, bots, provisional newcomers, and publishers
//! missing from the dimension.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use chrono::NaiveDate;
use object_store::{ObjectStoreExt, PutPayload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqi::publishers::{self, Publisher};
use sqi_schemas::lake::{HOUR_MS, Lake, LakeOptions, Table, hour_partition};

type Row = (
    i64,
    String,
    Option<&'static str>,
    &'static str,
    &'static str,
    i64,
);

#[cfg(test)]
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 31).unwrap()
}

#[cfg(test)]
fn ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

/// Builds the lake: returns rows of `aggregates` and the publisher dimension.
#[cfg(test)]
fn generate() -> (Vec<Row>, Vec<Publisher>) {
    let mut rng = StdRng::seed_from_u64(20_250_331);
    let categories = [
        ("news", 2000),
        ("sports", 1500),
        ("food", 1000),
        ("tech", 600),
        ("travel", 60),
        ("pets", 30),
    ];
    let window_start = ms(day()) - 27 * 24 * HOUR_MS;
    let mut rows = Vec::new();
    let mut dimension = Vec::new();
    let mut previous: Option<(i64, i64, i64)> = None;
    let mut index = 0;
    for (category, count) in categories.iter().chain([("ghost", 10)].iter()) {
        for _ in 0..*count {
            index += 1;
            let publisher = format!("{category}-{index:05}");
            let mut pageviews = (rng.random_range(0.0f64..1.0).powf(2.5) * 6000.0) as i64 + 200;
            let mut shares = if index % 17 == 0 {
                0
            } else {
                (pageviews as f64 * rng.random_range(0.0..0.06)) as i64
            };
            let mut clickbacks = (shares as f64 * rng.random_range(0.0..0.8)) as i64;
            if index % 41 == 0 {
                // An exact copy of the previous publisher's counts: a tie.
                if let Some((v, s, c)) = previous {
                    (pageviews, shares, clickbacks) = (v, s, c);
                }
            }
            previous = Some((pageviews, shares, clickbacks));
            let hours: Vec<i64> = (0..3)
                .map(|_| window_start + rng.random_range(0..28 * 24) * HOUR_MS)
                .collect();
            let split = |total: i64, rng: &mut StdRng| {
                let a = rng.random_range(0..=total);
                let b = rng.random_range(0..=total - a);
                [a, b, total - a - b]
            };
            for (part, hour) in split(pageviews, &mut rng).iter().zip(&hours) {
                rows.push((*hour, publisher.clone(), None, "pageview", "desktop", *part));
            }
            let channels = ["facebook", "twitter"];
            for (i, part) in split(shares, &mut rng).iter().enumerate() {
                rows.push((
                    hours[i],
                    publisher.clone(),
                    Some(channels[i % 2]),
                    "share",
                    "mobile",
                    *part,
                ));
            }
            for (i, part) in split(clickbacks, &mut rng).iter().enumerate() {
                rows.push((
                    hours[i],
                    publisher.clone(),
                    Some(channels[i % 2]),
                    "clickback",
                    "desktop",
                    *part,
                ));
            }
            if index % 7 == 0 {
                rows.push((
                    hours[0],
                    publisher.clone(),
                    None,
                    "pageview",
                    "bot",
                    rng.random_range(100..5000),
                ));
            }
            let newcomer = index % 23 == 0;
            if !newcomer && index % 3 == 0 {
                // History before the window: not provisional even without created_at.
                rows.push((
                    window_start - 40 * 24 * HOUR_MS,
                    publisher.clone(),
                    None,
                    "pageview",
                    "desktop",
                    5,
                ));
            }
            if *category != "ghost" {
                let created = if newcomer {
                    ms(day()) - 10 * 24 * HOUR_MS
                } else {
                    ms(day()) - 400 * 24 * HOUR_MS
                };
                dimension.push(Publisher {
                    publisher,
                    domain: None,
                    category: Some((*category).to_owned()),
                    created_at: (index % 5 != 0 || newcomer).then_some(created),
                });
            }
        }
    }
    rows.retain(|r| r.5 > 0);
    (rows, dimension)
}

#[cfg(test)]
async fn write_lake(lake: &Lake, rows: &[Row], dimension: &[Publisher]) {
    let mut by_hour: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        by_hour.entry(row.0).or_default().push(row);
    }
    for (hour, rows) in by_hour {
        let mut t = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let (mut p, mut c, mut e, mut d, mut n) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            Int64Builder::new(),
        );
        for row in rows {
            t.append_value(row.0);
            p.append_value(&row.1);
            c.append_option(row.2);
            e.append_value(row.3);
            d.append_value(row.4);
            n.append_value(row.5);
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
        let bytes = sqi_processor::sink::parquet_bytes(&batch).unwrap();
        let path = lake.path(&format!("aggregates/{}/part.parquet", hour_partition(hour)));
        lake.store()
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .unwrap();
    }
    publishers::write(lake, dimension).await.unwrap();
}

#[cfg(test)]
fn close(a: Option<f64>, b: Option<f64>, tolerance: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1e-300),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_agrees_with_an_independent_duckdb_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &format!("file://{}", dir.path().display()),
        &LakeOptions::default(),
    )
    .unwrap();
    let (rows, dimension) = generate();
    write_lake(&lake, &rows, &dimension).await;
    let outcome = sqi::batch::run_day(
        &lake,
        day(),
        &sqi::batch::Gate::allowing_incomplete("share-events"),
    )
    .await
    .unwrap();
    assert_eq!(outcome.sqi_rows, 5200);

    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "tests",
        "py",
        "sqi_duckdb.py",
    ]
    .iter()
    .collect();
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .arg(day().to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: BTreeMap<String, Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(expected.len(), 5200);

    let batch = sqi::batch::compute_sqi(&lake, day()).await.unwrap();
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone()
    };
    let (publisher, peer_group, reason) = (text("publisher"), text("peer_group"), text("reason"));
    let sqi = batch
        .column_by_name("sqi")
        .unwrap()
        .as_primitive::<Int32Type>()
        .clone();
    let peer_count = batch
        .column_by_name("peer_count")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let pageviews = batch
        .column_by_name("pageviews")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let provisional = batch
        .column_by_name("provisional")
        .unwrap()
        .as_boolean()
        .clone();
    let float = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone()
    };
    let (share, click, social, z) = (
        float("share_rate"),
        float("clickback_rate"),
        float("social_traffic_ratio"),
        float("score_z"),
    );
    let opt = |a: &arrow::array::Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));

    let (mut scored, mut network, mut zero_share) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for i in 0..batch.num_rows() {
        let name = publisher.value(i);
        let want = &expected[name];
        let got_sqi = (!sqi.is_null(i)).then(|| i64::from(sqi.value(i)));
        let checks = [
            ("sqi", got_sqi == want["sqi"].as_i64()),
            (
                "pageviews",
                Some(pageviews.value(i)) == want["pageviews"].as_i64(),
            ),
            (
                "peer_group",
                Some(peer_group.value(i)) == want["peer_group"].as_str(),
            ),
            (
                "peer_count",
                (!peer_count.is_null(i)).then(|| peer_count.value(i))
                    == want["peer_count"].as_i64(),
            ),
            (
                "reason",
                (!reason.is_null(i)).then(|| reason.value(i)) == want["reason"].as_str(),
            ),
            (
                "provisional",
                Some(provisional.value(i)) == want["provisional"].as_bool(),
            ),
            (
                "share_rate",
                close(opt(&share, i), want["share_rate"].as_f64(), 1e-9),
            ),
            (
                "clickback_rate",
                close(opt(&click, i), want["clickback_rate"].as_f64(), 1e-9),
            ),
            (
                "social_traffic_ratio",
                close(opt(&social, i), want["social_traffic_ratio"].as_f64(), 1e-9),
            ),
            ("score_z", close(opt(&z, i), want["score_z"].as_f64(), 1e-7)),
        ];
        for (field, ok) in checks {
            if !ok {
                mismatches.push(format!("{name}.{field}: engine row {i} vs duckdb {want}"));
            }
        }
        scored += usize::from(got_sqi.is_some());
        network += usize::from(got_sqi.is_some() && peer_group.value(i) == "network");
        zero_share += usize::from(want["shares"] == 0 && got_sqi.is_some());
    }
    // Exact ties in the same peer group must exist, and then share one SQI.
    let mut tied: BTreeMap<(String, i64, i64, i64), Vec<i64>> = BTreeMap::new();
    for want in expected.values().filter(|w| w["sqi"].is_i64()) {
        let key = (
            want["peer_group"].as_str().unwrap().to_owned(),
            want["pageviews"].as_i64().unwrap(),
            want["shares"].as_i64().unwrap(),
            want["clickbacks"].as_i64().unwrap(),
        );
        tied.entry(key)
            .or_default()
            .push(want["sqi"].as_i64().unwrap());
    }
    let ties = tied.values().filter(|v| v.len() > 1).count();
    assert!(tied.values().all(|v| v.iter().all(|s| *s == v[0])));
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:#?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert!(
        scored > 2000 && network > 0 && ties > 0 && zero_share > 0,
        "{scored} {network} {ties} {zero_share}"
    );
}
