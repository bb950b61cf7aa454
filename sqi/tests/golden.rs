//! The SQI for a lake small enough to score by hand: every expected `sqi`,
//! `reason`, `peer_group`, `peer_count`, sum and shrunk rate below is derived
//! from `../shared/SQI.md` in the comments, not by running any implementation.
//!
//! Day D = 2025-06-30. Every eligible publisher has V = 10,000 pageviews and
//! C = S/2 clickbacks, so within a peer group the shrink weight is the same for
//! everyone: with equal n, β/(n+β) = (m/n)/var, and r̂ = w·raw + (1−w)·m with
//! w = 1 − (m/n)/var. The clickback rate C/S is 0.5 for everyone (or 0 for a
//! zero-share publisher), so its between-publisher variance is never positive:
//! β₂ = 1e12, α₂ = 0.5e12, and r̂₂ = 0.5, contributing ln 1 = 0 to z.
//!
//! - **news** (30 eligible, its own group): 15 with S = 100, 15 with S = 300.
//!   Shares: m = 6000/300000 = 0.02, var = 0.0001, m/n = 2e-6, w = 0.98:
//!   r̂₁ = 0.0102 | 0.0298. Social traffic: m = 0.01, var = 2.5e-5, m/n = 1e-6,
//!   w = 0.96: r̂₃ = 0.0052 | 0.0148. Medians (15th and 16th of 30) are the
//!   midpoints 0.02 and 0.01, so z = (ln 0.51 + ln 0.52)/3 | (ln 1.49 + ln 1.48)/3.
//!   Two 15-way ties: q = 7.5/30 = 0.25 → SQI 50, q = 22.5/30 = 0.75 → SQI 150.
//!   news-31 has V = 500 (ineligible): β₁ = 10000/49, α₁ = 200/49, so
//!   r̂₁ = (5 + 200/49)/(500 + 10000/49) = 89/6900; r̂₂ = 5e11/(1e12 + 5);
//!   β₃ = 1250/3, α₃ = 12.5/3, r̂₃ = (12.5/3)/(500 + 1250/3) = 1/220.
//! - **sports** (31 eligible): 6 with S = 100, 17 with S = 200, 8 with S = 300.
//!   Shares: m = 6400/310000 = 16/775, var = 43/961000, m/n = 1/484375, so
//!   1 − w = 248/5375 and r̂₁ = 5639/537500 | 5383/268750 | 15893/537500.
//!   Social traffic: m = 8/775, var = 43/3844000, 1 − w = 496/5375, so
//!   r̂₃ = 5903/1075000 | 5391/537500 | 15661/1075000. The median (16th of 31)
//!   is the middle tier, whose z is 0. SQI: 200·3/31 = 19.4 → 19;
//!   200·14.5/31 = 93.5 → 94; 200·27/31 = 174.2 → 174.
//! - **cooking** (3 eligible, S = 100, 300 and 0) is too small, so it is
//!   scored against the **network** of all 64 eligible publishers:
//!   S = 0 ×1, 100 ×22, 200 ×17, 300 ×24. Shares: m = 12800/640000 = 0.02,
//!   var = 1/12800, m/n = 2e-6, 1 − w = 0.0256: r̂₁ = 0.000512 (S = 0),
//!   0.010256 (100), 0.02 (200: the 32nd and 33rd, the median), 0.029744
//!   (300). Social traffic: m = 0.01, 1 − w = 0.0512: r̂₃ = 0.000512,
//!   0.005256, 0.01, 0.014744. Mid-ranks over 64 land on both kinds of half:
//!   S = 100 → 200·(1 + 11)/64 = 37.5 → 38 and S = 300 → 200·(40 + 12)/64 =
//!   162.5 → 162 (half to even), S = 0 → 200·0.5/64 = 1.5625 → 2.
//! - **ghost-1** is missing from `publishers` (so `uncategorized`, which has no
//!   eligible publisher, so network), with V = 400, S = 4, C = 2: β₁ =
//!   160000/609 and α₁ = 3200/609 give r̂₁ = 1409/100900; r̂₂ = 0.5 exactly;
//!   β₃ = 320000/593, α₃ = 3200/593 give r̂₃ = 2193/278600.
//!
//! Also exercised: bot rows (excluded), rows just outside the window on both
//! sides (excluded), and `provisional` on each side of 28 days, from
//! `created_at` or from an old aggregate row.

use crate::fixture;

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type};
use chrono::NaiveDate;
use fixture::Row;
use sqi_batch::publishers::Publisher;
use sqi_schemas::lake::HOUR_MS;

#[cfg(test)]
fn d() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap()
}

/// Midnight of D + `days`, in ms.
#[cfg(test)]
fn day_ms(days: i64) -> i64 {
    fixture::ms(d()) + days * 24 * HOUR_MS
}

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    category: &'static str,
    peer_group: &'static str,
    peer_count: i64,
    sums: (i64, i64, i64),
    rates: [f64; 3],
    score_z: Option<f64>,
    sqi: Option<i32>,
    provisional: bool,
}

/// The lake: rows of `aggregates`, the dimension, and the expected row of each publisher.
#[cfg(test)]
fn hand_scored() -> (Vec<Row>, Vec<Publisher>, BTreeMap<String, Expected>) {
    let noon = day_ms(0) + 12 * HOUR_MS;
    let long_ago = day_ms(-2000);
    let mut rows: Vec<Row> = Vec::new();
    let mut dimension = Vec::new();
    let mut expected = BTreeMap::new();
    let traffic = |rows: &mut Vec<Row>, publisher: &str, v: i64, s: i64, c: i64| {
        rows.push((noon, publisher.into(), None, "pageview", "desktop", v));
        if s > 0 {
            rows.push((
                noon,
                publisher.into(),
                Some("facebook"),
                "share",
                "mobile",
                s,
            ));
        }
        if c > 0 {
            rows.push((
                noon,
                publisher.into(),
                Some("twitter"),
                "clickback",
                "desktop",
                c,
            ));
        }
    };
    let z = |r1: f64, m1: f64, r3: f64, m3: f64| ((r1 / m1).ln() + (r3 / m3).ln()) / 3.0;

    for i in 1..=30 {
        let publisher = format!("news-{i:02}");
        let high = i > 15;
        let s = if high { 300 } else { 100 };
        traffic(&mut rows, &publisher, 10_000, s, s / 2);
        let created = match i {
            29 => day_ms(-27), // 27 days before D: provisional
            30 => day_ms(-5),
            _ => long_ago,
        };
        dimension.push(Publisher {
            publisher: publisher.clone(),
            domain: None,
            category: Some("news".into()),
            created_at: Some(created),
        });
        let (r1, r3) = if high {
            (0.0298, 0.0148)
        } else {
            (0.0102, 0.0052)
        };
        let _ = expected.insert(
            publisher,
            Expected {
                category: "news",
                peer_group: "news",
                peer_count: 30,
                sums: (10_000, s, s / 2),
                rates: [r1, 0.5, r3],
                score_z: Some(z(r1, 0.02, r3, 0.01)),
                sqi: Some(if high { 150 } else { 50 }),
                provisional: i >= 29,
            },
        );
    }
    // Bots never count, and neither do rows a moment outside the window.
    rows.push((noon, "news-01".into(), None, "pageview", "bot", 50_000));
    rows.push((
        noon,
        "news-01".into(),
        Some("facebook"),
        "share",
        "bot",
        1_000,
    ));
    rows.push((
        day_ms(-28) + 23 * HOUR_MS,
        "news-02".into(),
        None,
        "pageview",
        "desktop",
        999,
    ));
    rows.push((
        day_ms(1),
        "news-02".into(),
        None,
        "pageview",
        "desktop",
        777,
    ));
    // The window's first hour does count: news-02's shares are split across it.
    let news02 = rows
        .iter_mut()
        .find(|r| r.1 == "news-02" && r.3 == "share")
        .unwrap();
    news02.5 = 40;
    rows.push((
        day_ms(-27),
        "news-02".into(),
        Some("pinterest"),
        "share",
        "mobile",
        60,
    ));

    traffic(&mut rows, "news-31", 500, 5, 0);
    dimension.push(Publisher {
        publisher: "news-31".into(),
        domain: None,
        category: Some("news".into()),
        created_at: Some(long_ago),
    });
    let _ = expected.insert(
        "news-31".into(),
        Expected {
            category: "news",
            peer_group: "news",
            peer_count: 30,
            sums: (500, 5, 0),
            rates: [89.0 / 6900.0, 5e11 / (1e12 + 5.0), 1.0 / 220.0],
            score_z: None,
            sqi: None,
            provisional: false,
        },
    );

    for i in 1..=31 {
        let publisher = format!("sports-{i:02}");
        let (s, r1, r3, sqi) = match i {
            1..=6 => (100, 5639.0 / 537_500.0, 5903.0 / 1_075_000.0, 19),
            7..=23 => (200, 5383.0 / 268_750.0, 5391.0 / 537_500.0, 94),
            _ => (300, 15_893.0 / 537_500.0, 15_661.0 / 1_075_000.0, 174),
        };
        traffic(&mut rows, &publisher, 10_000, s, s / 2);
        let created = match i {
            1 => day_ms(-3),  // but seen 40 days ago: not provisional
            2 => day_ms(-28), // exactly 28 days: not provisional
            _ => long_ago,
        };
        dimension.push(Publisher {
            publisher: publisher.clone(),
            domain: None,
            category: Some("sports".into()),
            created_at: Some(created),
        });
        let _ = expected.insert(
            publisher,
            Expected {
                category: "sports",
                peer_group: "sports",
                peer_count: 31,
                sums: (10_000, s, s / 2),
                rates: [r1, 0.5, r3],
                score_z: Some(z(r1, 5383.0 / 268_750.0, r3, 5391.0 / 537_500.0)),
                sqi: Some(sqi),
                provisional: false,
            },
        );
    }
    rows.push((
        day_ms(-40),
        "sports-01".into(),
        None,
        "pageview",
        "desktop",
        7,
    ));

    for (publisher, s, r1, r3, sqi) in [
        ("cooking-1", 100, 0.010256, 0.005256, 38),
        ("cooking-2", 300, 0.029744, 0.014744, 162),
        ("cooking-3", 0, 0.000512, 0.000512, 2),
    ] {
        traffic(&mut rows, publisher, 10_000, s, s / 2);
        dimension.push(Publisher {
            publisher: publisher.into(),
            domain: None,
            category: Some("cooking".into()),
            created_at: Some(long_ago),
        });
        let _ = expected.insert(
            publisher.into(),
            Expected {
                category: "cooking",
                peer_group: "network",
                peer_count: 64,
                sums: (10_000, s, s / 2),
                rates: [r1, 0.5, r3],
                score_z: Some(z(r1, 0.02, r3, 0.01)),
                sqi: Some(sqi),
                provisional: false,
            },
        );
    }

    traffic(&mut rows, "ghost-1", 400, 4, 2);
    let _ = expected.insert(
        "ghost-1".into(),
        Expected {
            category: "uncategorized",
            peer_group: "network",
            peer_count: 64,
            sums: (400, 4, 2),
            rates: [1409.0 / 100_900.0, 0.5, 2193.0 / 278_600.0],
            score_z: None,
            sqi: None,
            provisional: true, // first seen on D, no created_at
        },
    );
    (rows, dimension, expected)
}

#[cfg(test)]
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 * want.abs().max(1e-300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_scored_lake_gets_exactly_its_hand_computed_sqi() {
    let (_dir, lake) = fixture::local_lake();
    let (rows, dimension, expected) = hand_scored();
    fixture::write_lake(&lake, &rows, &dimension).await;
    let batch = sqi_batch::compute_sqi(&lake, d()).await.unwrap();
    assert_eq!(batch.num_rows(), expected.len());

    let text = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone()
    };
    let int = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    };
    let float = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone()
    };
    let (publisher, category, peer_group, reason) = (
        text("publisher"),
        text("category"),
        text("peer_group"),
        text("reason"),
    );
    let (peer_count, pageviews, shares, clickbacks) = (
        int("peer_count"),
        int("pageviews"),
        int("shares"),
        int("clickbacks"),
    );
    let rates = [
        float("share_rate"),
        float("clickback_rate"),
        float("social_traffic_ratio"),
    ];
    let score_z = float("score_z");
    let sqi = batch
        .column_by_name("sqi")
        .unwrap()
        .as_primitive::<Int32Type>()
        .clone();
    let provisional = batch
        .column_by_name("provisional")
        .unwrap()
        .as_boolean()
        .clone();
    let date = batch
        .column_by_name("date")
        .unwrap()
        .as_primitive::<Date32Type>()
        .clone();
    let version = batch
        .column_by_name("sqi_version")
        .unwrap()
        .as_primitive::<Int32Type>()
        .clone();

    let mut wrong = Vec::new();
    for i in 0..batch.num_rows() {
        let name = publisher.value(i);
        let want = &expected[name];
        let got_sqi = (!sqi.is_null(i)).then(|| sqi.value(i));
        let got_z = (!score_z.is_null(i)).then(|| score_z.value(i));
        let got_reason = (!reason.is_null(i)).then(|| reason.value(i));
        let want_reason = want.sqi.is_none().then_some("insufficient_pageviews");
        let checks = [
            ("category", category.value(i) == want.category),
            ("peer_group", peer_group.value(i) == want.peer_group),
            ("peer_count", peer_count.value(i) == want.peer_count),
            (
                "sums",
                (pageviews.value(i), shares.value(i), clickbacks.value(i)) == want.sums,
            ),
            ("share_rate", close(rates[0].value(i), want.rates[0])),
            ("clickback_rate", close(rates[1].value(i), want.rates[1])),
            (
                "social_traffic_ratio",
                close(rates[2].value(i), want.rates[2]),
            ),
            (
                "score_z",
                match (got_z, want.score_z) {
                    (Some(got), Some(want)) => (got - want).abs() <= 1e-12,
                    (got, want) => got.is_none() && want.is_none(),
                },
            ),
            ("sqi", got_sqi == want.sqi),
            ("reason", got_reason == want_reason),
            ("provisional", provisional.value(i) == want.provisional),
            ("date", date.value_as_date(i) == Some(d())),
            ("sqi_version", version.value(i) == 1),
        ];
        for (field, ok) in checks {
            if !ok {
                wrong.push(format!(
                    "{name}.{field}: got sqi {got_sqi:?}, z {got_z:?}, rates {:?}, peer {}/{}; want {want:?}",
                    rates.iter().map(|r| r.value(i)).collect::<Vec<_>>(),
                    peer_group.value(i),
                    peer_count.value(i),
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong: {wrong:#?}", wrong.len());
}
