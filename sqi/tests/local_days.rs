//! Issue 19, item 7: a series by local day in a timezone other than UTC (and
//! a series by hour) reads the complete UTC days of its period from the
//! batch's `daily_hours` (or their month file, `monthly_hours`), never from
//! the hourly `aggregates`, and gives the buckets the hours give: local days
//! summed across the UTC boundary, the 23-hour day of a DST change included.

use crate::fixture;

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, TimestampMillisecondType};
use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::America::New_York;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqi_batch::publishers::Publisher;
use sqi_batch::{Gate, Shard};
use sqi_report::{KeyRing, ReportOptions, ReportState};
use sqi_schemas::lake::{HOUR_MS, Lake, Table};

const KEY: &str = "key-for-marketing";
const TOPIC: &str = "share-events";

#[cfg(test)]
fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// Hours from 2024-03-05 00:00 to 2024-03-14 06:00 UTC, so that New York's
/// days 03-05 to 03-13 are all covered; New York springs forward on 03-10
/// (a 23-hour local day). Each hour of `pub-ny` has pageviews that tell the
/// hour apart, bots, and shares on two channels (the day-hour table sums
/// channels away); `pub-aa` and `pub-zz` sort around it in every file.
#[cfg(test)]
fn rows() -> Vec<fixture::Row> {
    let first = fixture::ms(date("2024-03-05"));
    let mut rows = Vec::new();
    for i in 0..(9 * 24 + 7) {
        let hour = first + i * HOUR_MS;
        let views = 1 + i % 11 + 100 * (i % 3);
        for publisher in ["pub-aa", "pub-ny", "pub-zz"] {
            rows.push((
                hour,
                publisher.to_owned(),
                None,
                "pageview",
                "desktop",
                views,
            ));
        }
        rows.push((hour, "pub-ny".into(), None, "pageview", "bot", 1000));
        rows.push((hour, "pub-ny".into(), None, "pageview", "mobile", 2 + i % 5));
        if i % 4 != 1 {
            rows.push((
                hour,
                "pub-ny".into(),
                Some("facebook"),
                "share",
                "mobile",
                1 + i % 2,
            ));
            rows.push((hour, "pub-ny".into(), Some("twitter"), "share", "mobile", 3));
        }
    }
    rows
}

/// New York's local days 03-05 to 03-13 of `pub-ny`'s `event_type` rows,
/// bots excluded unless asked, computed from the rows themselves.
#[cfg(test)]
fn expected_days(rows: &[fixture::Row], event_type: &str, bots: bool) -> BTreeMap<String, i64> {
    let mut days = BTreeMap::new();
    for (hour, publisher, _, kind, device, events) in rows {
        if publisher != "pub-ny" || *kind != event_type || (*device == "bot" && !bots) {
            continue;
        }
        let local = Utc
            .timestamp_millis_opt(*hour)
            .unwrap()
            .with_timezone(&New_York)
            .date_naive();
        if (date("2024-03-05")..=date("2024-03-13")).contains(&local) {
            *days.entry(local.to_string()).or_default() += events;
        }
    }
    days
}

/// Writes an hour's completeness marker for every hour of `day`, as the
/// processor does once the hour is closed.
#[cfg(test)]
async fn mark_complete(lake: &Lake, day: NaiveDate) {
    for hour in 0..24 {
        let marker = sqi_schemas::lake::paths::completeness::hour_marker(
            TOPIC,
            fixture::ms(day) + hour * HOUR_MS,
        );
        lake.store()
            .put(&lake.path(&marker), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
    }
}

#[cfg(test)]
async fn serve(lake: Lake) -> String {
    let keys = KeyRing::parse(&format!(
        r#"[{{"name":"marketing","sha256":"{}","scope":"marketer"}}]"#,
        hex::encode(Sha256::digest(KEY.as_bytes()))
    ))
    .unwrap();
    let state = ReportState::with_options(lake, keys, None, ReportOptions::default())
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
async fn get(base: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The series' rows as bucket → value.
#[cfg(test)]
fn buckets(series: &Value) -> BTreeMap<String, i64> {
    series["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["bucket"].as_str().unwrap().to_owned(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Every question this test asks, with its answer.
#[cfg(test)]
async fn answers(base: &str) -> BTreeMap<String, Value> {
    let period = "period=custom&from=2024-03-05&to=2024-03-13";
    let mut out = BTreeMap::new();
    for path in [
        format!("timeseries?{period}&tz=America/New_York"),
        format!("timeseries?{period}&tz=America/New_York&include_bots=true"),
        format!("timeseries?{period}&tz=America/New_York&metric=shares"),
        format!("timeseries?{period}&tz=Asia/Kolkata"),
        "timeseries?period=custom&from=2024-03-09&to=2024-03-11&tz=America/New_York&interval=hour"
            .to_owned(),
        format!("timeseries?{period}&tz=UTC"),
        format!("summary?{period}&tz=America/New_York"),
    ] {
        let body = get(base, &format!("/v1/publishers/pub-ny/{path}")).await;
        let _ = out.insert(path, body);
    }
    out
}

/// Overwrites every `aggregates` file of `day` with bytes that are not
/// Parquet: a question that opens one fails.
#[cfg(test)]
async fn corrupt_hours(lake: &Lake, day: NaiveDate) {
    let files: Vec<_> = lake
        .store()
        .list(Some(&lake.path(&format!("aggregates/dt={day}"))))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(files.len(), 24, "{day}");
    for meta in files {
        lake.store()
            .put(
                &meta.location,
                PutPayload::from_static(b"not parquet: read from daily_hours instead"),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(test)]
async fn local_days_come_from_daily_hours_with_the_buckets_the_hours_give() {
    let (_dir, lake) = fixture::local_lake();
    let rows = rows();
    let dimension: Vec<Publisher> = ["pub-aa", "pub-ny", "pub-zz"]
        .into_iter()
        .map(|p| Publisher {
            publisher: p.to_owned(),
            domain: None,
            category: Some("news".into()),
            created_at: Some(0),
        })
        .collect();
    fixture::write_lake(&lake, &rows, &dimension).await;

    // Before the batch, every answer comes from the hours.
    let from_hours = answers(&serve(lake.clone()).await).await;
    let new_york = "period=custom&from=2024-03-05&to=2024-03-13&tz=America/New_York";
    let series = &from_hours[&format!("timeseries?{new_york}")];
    let expected = expected_days(&rows, "pageview", false);
    assert_eq!(buckets(series), expected, "{series}");
    assert_eq!(expected.len(), 9);
    // The DST day has 23 hours, the others 24.
    let per_hour = |day: &str| expected_days(&rows, "pageview", false)[day];
    assert!(per_hour("2024-03-10") < per_hour("2024-03-09"));
    assert_eq!(
        buckets(&from_hours[&format!("timeseries?{new_york}&include_bots=true")]),
        expected_days(&rows, "pageview", true)
    );
    assert_eq!(
        buckets(&from_hours[&format!("timeseries?{new_york}&metric=shares")]),
        expected_days(&rows, "share", false)
    );

    // The batch closes 03-05 to 03-12; the month merge takes the first five
    // days, so the rest are read from their day files.
    let complete: Vec<NaiveDate> = date("2024-03-05")
        .iter_days()
        .take_while(|d| *d <= date("2024-03-12"))
        .collect();
    let gate = Gate {
        topic: TOPIC.into(),
        allow_incomplete: false,
    };
    for (i, day) in complete.iter().enumerate() {
        mark_complete(&lake, *day).await;
        let outcome = sqi_batch::run_day(&lake, *day, &gate, Shard::WHOLE)
            .await
            .unwrap();
        assert!(
            outcome.complete && outcome.daily_hour_rows > 0,
            "{outcome:?}"
        );
        if i == 4 {
            let merged =
                sqi_batch::compact::compact_month(&lake, Table::DailyHours, *day, Shard::WHOLE)
                    .await
                    .unwrap();
            assert_eq!((merged.table, merged.days), (Table::MonthlyHours, 5));
        }
    }
    for day in &complete {
        corrupt_hours(&lake, *day).await;
    }

    // The same answers with the complete days' hours unreadable.
    let from_days = answers(&serve(lake.clone()).await).await;
    for (path, before) in &from_hours {
        let after = &from_days[path];
        if path.starts_with("summary") {
            for field in ["pageviews", "shares", "clickbacks"] {
                assert_eq!(after[field], before[field], "{path} {field}");
            }
        } else {
            assert_eq!(after["rows"], before["rows"], "{path}");
            assert_eq!(after["total"], before["total"], "{path}");
        }
    }
}

/// Column `name` of `batch` as `T`'s primitive values.
#[cfg(test)]
fn values<T: arrow::datatypes::ArrowPrimitiveType>(
    batch: &RecordBatch,
    name: &str,
) -> Vec<T::Native> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<T>()
        .values()
        .to_vec()
}

#[cfg(test)]
fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let column = arrow::compute::cast(
        batch.column_by_name(name).unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let column = column.as_string::<i32>();
    (0..column.len())
        .map(|i| column.value(i).to_owned())
        .collect()
}

#[cfg(test)]
async fn read_file(lake: &Lake, path: &str) -> RecordBatch {
    let bytes = lake
        .store()
        .get(&lake.path(path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The batch writes `daily_hours` sorted by publisher, one row per
/// publisher, UTC hour, event type and device with the channels summed,
/// marked complete only when the processor closed the day; the month merge
/// keeps the publisher order, then the date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(test)]
async fn daily_hours_are_sorted_by_publisher_summed_by_hour_and_merged_by_month() {
    let (_dir, lake) = fixture::local_lake();
    let rows = rows();
    let dimension = vec![Publisher {
        publisher: "pub-ny".into(),
        domain: None,
        category: Some("news".into()),
        created_at: Some(0),
    }];
    fixture::write_lake(&lake, &rows, &dimension).await;
    let (early, closed) = (date("2024-03-06"), date("2024-03-07"));
    mark_complete(&lake, closed).await;
    let gate = Gate::allowing_incomplete(TOPIC);
    for day in [early, closed] {
        let _ = sqi_batch::run_day(&lake, day, &gate, Shard::WHOLE)
            .await
            .unwrap();
    }

    let day_file = |day: NaiveDate| format!("daily_hours/dt={day}/{}", sqi_batch::DAY_FILE);
    let batch = read_file(&lake, &day_file(closed)).await;
    assert_eq!(batch.schema(), Table::DailyHours.schema());
    let publishers = strings(&batch, "publisher");
    let mut sorted = publishers.clone();
    sorted.sort();
    assert_eq!(publishers, sorted, "sorted by publisher");
    let complete = batch.column_by_name("complete").unwrap().as_boolean();
    assert_eq!(complete.true_count(), batch.num_rows());
    let early_batch = read_file(&lake, &day_file(early)).await;
    let early_complete = early_batch.column_by_name("complete").unwrap().as_boolean();
    assert_eq!(
        early_complete.true_count(),
        0,
        "an unclosed day is not complete"
    );

    // The rows are the day's aggregates by hour, channels summed away.
    let mut expected: BTreeMap<(i64, String, String, String), i64> = BTreeMap::new();
    let (start, end) = (fixture::ms(closed), fixture::ms(closed) + 24 * HOUR_MS);
    for (hour, publisher, _, kind, device, events) in &rows {
        if (start..end).contains(hour) {
            *expected
                .entry((
                    *hour,
                    publisher.clone(),
                    (*kind).to_owned(),
                    (*device).to_owned(),
                ))
                .or_default() += events;
        }
    }
    let hours = values::<TimestampMillisecondType>(&batch, "window_start");
    let (kinds, devices) = (strings(&batch, "event_type"), strings(&batch, "device"));
    let events = values::<arrow::datatypes::Int64Type>(&batch, "events");
    let mut written = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let key = (
            hours[i],
            publishers[i].clone(),
            kinds[i].clone(),
            devices[i].clone(),
        );
        assert!(written.insert(key, events[i]).is_none(), "one row per key");
    }
    assert_eq!(written, expected);
    let dates = values::<Date32Type>(&batch, "date");
    assert!(
        dates
            .iter()
            .all(|d| *d == Date32Type::from_naive_date(closed))
    );

    // The month merge takes the complete day only, sorted by publisher then date.
    mark_complete(&lake, early).await;
    let _ = sqi_batch::run_day(&lake, early, &gate, Shard::WHOLE)
        .await
        .unwrap();
    let merged = sqi_batch::compact::compact_month(&lake, Table::DailyHours, closed, Shard::WHOLE)
        .await
        .unwrap();
    assert_eq!(merged.table, Table::MonthlyHours);
    assert_eq!(merged.days, 2);
    let month = read_file(
        &lake,
        &format!("monthly_hours/month=2024-03/{}", sqi_batch::DAY_FILE),
    )
    .await;
    assert_eq!(month.num_rows(), merged.rows);
    let keys: Vec<(String, i32)> = strings(&month, "publisher")
        .into_iter()
        .zip(values::<Date32Type>(&month, "date"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by publisher, then date");
    assert_eq!(
        month.num_rows(),
        batch.num_rows() + read_file(&lake, &day_file(early)).await.num_rows()
    );
}
