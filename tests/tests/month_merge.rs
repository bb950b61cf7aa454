//! The batch's month merge against a real S3 API (moto): a month file larger
//! than one upload part goes up as a multipart upload, holds every row of the
//! month's complete days, and opens in DuckDB and pyarrow.

use std::sync::Arc;

use arrow::array::{BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Date32Type;
use chrono::NaiveDate;
use sqi_batch::compact;
use sqi_batch::{self as batch, Shard};
use sqi_integration_tests::{Services, python_check};
use sqi_schemas::lake::Table;

/// `rows` publishers' pageviews on `date`, sorted by publisher as the batch writes them.
fn day_rows(date: NaiveDate, rows: usize) -> RecordBatch {
    let publishers: Vec<String> = (0..rows).map(|i| format!("pub-{i:07}")).collect();
    RecordBatch::try_new(
        Table::Daily.schema(),
        vec![
            Arc::new(Date32Array::from(vec![
                Date32Type::from_naive_date(date);
                rows
            ])),
            Arc::new(StringArray::from(publishers)),
            Arc::new(StringArray::from(vec![None::<&str>; rows])),
            Arc::new(StringArray::from(vec!["pageview"; rows])),
            Arc::new(StringArray::from(vec!["desktop"; rows])),
            Arc::new(Int64Array::from_iter_values(
                (0..rows as i64).map(|i| i * 7 + 1),
            )),
            Arc::new(BooleanArray::from(vec![true; rows])),
        ],
    )
    .expect("the day's rows match the daily schema")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_is_merged_on_s3_and_opens_in_duckdb() {
    let services = Services::from_env();
    let (bucket, lake) = services.fresh_lake().await;
    const ROWS: usize = 500_000;
    let days: Vec<NaiveDate> = (1..=4)
        .map(|d| NaiveDate::from_ymd_opt(2025, 6, d).expect("a June day"))
        .collect();
    for day in &days {
        batch::write_day(
            &lake,
            Table::Daily,
            *day,
            Shard::WHOLE,
            &day_rows(*day, ROWS),
        )
        .await
        .expect("the day file is put");
    }
    let merged = compact::compact_month(&lake, Table::Daily, days[0], Shard::WHOLE)
        .await
        .expect("the month merges");
    assert_eq!((merged.days, merged.rows), (4, 4 * ROWS));

    let listed = lake
        .list_parquet("monthly")
        .await
        .expect("the month table lists");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].size > 5 * 1024 * 1024,
        "the file should need more than one 5 MiB part: {} bytes",
        listed[0].size
    );
    let footer = sqi_schemas::lake::files::read_footer(&lake, &listed[0])
        .await
        .expect("the month file's footer reads");
    let sources = sqi_schemas::lake::files::sources(&footer).expect("the footer lists its sources");
    let dates: Vec<String> = sources.iter().map(|s| s.date.clone()).collect();
    assert_eq!(
        dates,
        days.iter().map(|d| d.to_string()).collect::<Vec<_>>()
    );

    let checked = python_check(
        "check_lake.py",
        &[
            "--endpoint",
            &services.s3_endpoint,
            "--bucket",
            &bucket,
            "--prefix",
            "lake",
        ],
    );
    assert_eq!(checked["tables"]["monthly"]["rows"], 4 * ROWS);
    assert_eq!(
        checked["tables"]["monthly"]["columns"],
        checked["tables"]["daily"]["columns"]
    );
}
