//! The batch job's SQI against an independent implementation of SQI.md in
//! DuckDB (`tests/py/sqi_duckdb.py`, run with PyPI's duckdb) on a randomized
//! lake of 5,200 publishers: long tails, a category too small for its own peer
//! group, zero shares, exact ties, bots, provisional newcomers, and publishers
//! missing from the dimension. The published SQL, run by DuckDB unchanged
//! (`bench/duckdb_sqi.py`), must agree with the engine as well.

use crate::fixture;

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use fixture::{day, random_lake};
use serde_json::Value;

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
    let (dir, lake) = random_lake().await;
    let outcome = sqi_batch::run_day(
        &lake,
        day(),
        &sqi_batch::Gate::allowing_incomplete("share-events"),
        sqi_batch::Shard::WHOLE,
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

    let batch = sqi_batch::compute_sqi(&lake, day()).await.unwrap();
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

    // The published SQL itself, run unchanged by DuckDB (as an analyst would),
    // gives the engine's SQI and peer group for every publisher too.
    // The lake holds no `daily` or `first_seen` for the days before, so the
    // history form; `stored_inputs` runs the stored form in DuckDB.
    let published = crate::fixture::published_sql_rows(dir.path(), day(), true);
    assert_eq!(published.len(), batch.num_rows());
    let disagreements: Vec<String> = (0..batch.num_rows())
        .filter_map(|i| {
            let name = publisher.value(i);
            let theirs = &published[name];
            let ours_sqi = (!sqi.is_null(i)).then(|| i64::from(sqi.value(i)));
            let same = theirs["sqi"].as_i64() == ours_sqi
                && theirs["peer_group"].as_str() == Some(peer_group.value(i))
                && close(opt(&z, i), theirs["score_z"].as_f64(), 1e-9);
            (!same).then(|| format!("{name}: engine sqi {ours_sqi:?}, duckdb {theirs}"))
        })
        .collect();
    assert!(
        disagreements.is_empty(),
        "{} publishers differ under DuckDB, first: {:#?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(5)]
    );
}
