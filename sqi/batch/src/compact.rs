//! Monthly compaction: `monthly/`, `monthly_urls/` and `monthly_hours/`, the
//! day tables laid out for reading one publisher's month.
//!
//! A 30-day report over `daily` opens 30 files, and the fixed cost of a file
//! (its footer, pruning, a read, a page decoded per column) is most of what a
//! question costs. After the batch writes a month's days it merges that
//! month's complete day files, shard by shard, into one file sorted by
//! publisher then date, so that a publisher's month is a few adjacent rows.
//!
//! The month file is a pure function of its sources: it records, in its
//! footer's key-value metadata under
//! [`SOURCES_KEY`](sqi_schemas::lake::files::SOURCES_KEY), every day file it
//! was made from and that file's version. The report uses a month file for a
//! day only while that day's files are still the recorded versions, so a day
//! recomputed after the merge is read from `daily` until the next one. The
//! file's name, writer profile and footer are the lake contract's
//! ([`sqi_schemas::lake`]); this module owns only the merge.

use std::sync::Arc;

use arrow::compute::SortOptions;
use chrono::{Datelike, NaiveDate};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, WriteMultipart};
use parquet::arrow::ArrowWriter;
use sqi_schemas::lake::files::{Source, every_row_complete, read_footer, sources_json};
use sqi_schemas::lake::{Lake, Table, paths, profile};

use crate::Shard;
use crate::error::{Error, Result};
use sqi_query as query;

/// What one merge wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The month table.
    pub table: Table,
    /// The month's first day.
    pub month: NaiveDate,
    /// Rows in the month file.
    pub rows: usize,
    /// Days merged.
    pub days: usize,
}

/// The first day of `date`'s month.
pub fn first_of_month(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

/// Merges the complete day files of `day_table` (`daily`, `daily_urls` or
/// `daily_hours`) in `month`'s month written by `shard` into its month file,
/// replacing any earlier one; with no complete day, removes it.
pub async fn compact_month(
    lake: &Lake,
    day_table: Table,
    month: NaiveDate,
    shard: Shard,
) -> Result<Compacted> {
    let table = day_table
        .month_table()
        .ok_or_else(|| Error::Invalid(format!("{} has no month table", day_table.prefix())))?;
    let month = first_of_month(month);
    let mut inputs: Vec<(Source, ObjectMeta)> = Vec::new();
    for day in month.iter_days().take_while(|d| d.month() == month.month()) {
        let path = lake.path(&paths::day_file(day_table, day, shard));
        let meta = match lake.store().head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(error) => return Err(error.into()),
        };
        if !every_row_complete(&read_footer(lake, &meta).await?) {
            continue;
        }
        if let Some(source) = Source::of(&meta) {
            inputs.push((source, meta));
        }
    }
    let dir = paths::month_dir(table, month);
    let target = lake.path(&paths::month_file(table, month, shard));
    let rows = if inputs.is_empty() {
        match lake.store().delete(&target).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => 0,
            Err(error) => return Err(error.into()),
        }
    } else {
        merge(lake, day_table, &inputs, &target).await?
    };
    crate::write::remove_stale(lake, &dir, shard).await?;
    Ok(Compacted {
        table,
        month,
        rows,
        days: inputs.len(),
    })
}

/// Streams the day files, each sorted by publisher, through one
/// sort-preserving merge on (publisher, date) into a multipart upload: a
/// month of `daily_urls` is 60M rows, never held at once.
async fn merge(
    lake: &Lake,
    day_table: Table,
    inputs: &[(Source, ObjectMeta)],
    target: &Path,
) -> Result<usize> {
    let ctx = query::session(lake, &[], 1, query::Workload::Batch).await?;
    let schema = day_table.schema();
    let keys = ["publisher", "date"]
        .into_iter()
        .map(|name| {
            Ok(PhysicalSortExpr::new(
                Arc::new(datafusion::physical_expr::expressions::Column::new(
                    name,
                    schema.index_of(name)?,
                )),
                SortOptions::default(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let ordering =
        LexOrdering::new(keys).ok_or_else(|| Error::Invalid("empty merge ordering".into()))?;
    // Every day file is sorted by publisher and holds one date, so each is
    // already in (publisher, date) order: the merge never sorts.
    let groups = inputs
        .iter()
        .map(|(_, meta)| FileGroup::new(vec![PartitionedFile::new_from_meta(meta.clone())]))
        .collect();
    let scan = FileScanConfigBuilder::new(
        datafusion::execution::object_store::ObjectStoreUrl::parse(lake.store_url())?,
        Arc::new(ParquetSource::new(schema.clone())),
    )
    .with_file_groups(groups)
    .with_output_ordering(vec![ordering.clone()])
    .build();
    let plan: Arc<dyn ExecutionPlan> = Arc::new(SortPreservingMergeExec::new(
        ordering,
        DataSourceExec::from_data_source(scan),
    ));
    let mut stream = plan.execute(0, ctx.task_ctx())?;

    let sources: Vec<&Source> = inputs.iter().map(|(s, _)| s).collect();
    let properties = profile::month(sources_json(&sources)?);
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?;
    let mut upload = WriteMultipart::new(lake.store().put_multipart(target).await?);
    let mut rows = 0;
    let written = async {
        while let Some(batch) = stream.next().await {
            let batch = query::conform(&batch?, &schema)?;
            rows += batch.num_rows();
            writer.write(&batch)?;
            // The writer only appends, so what it has written so far can go.
            let encoded = std::mem::take(writer.inner_mut());
            if !encoded.is_empty() {
                upload.wait_for_capacity(4).await?;
                upload.write(&encoded);
            }
        }
        let _ = writer.finish()?;
        upload.write(&std::mem::take(writer.inner_mut()));
        Ok::<_, Error>(())
    }
    .await;
    match written {
        Ok(()) => {
            let _ = upload.finish().await?;
            Ok(rows)
        }
        Err(error) => {
            // Nothing is visible until the upload completes.
            let _ = upload.abort().await;
            Err(error)
        }
    }
}

/// The months `days` fall in, each once, in order.
pub fn months_of(days: impl IntoIterator<Item = NaiveDate>) -> Vec<NaiveDate> {
    let mut months: Vec<NaiveDate> = days.into_iter().map(first_of_month).collect();
    months.sort_unstable();
    months.dedup();
    months
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{
        Array, AsArray, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray,
    };
    use arrow::datatypes::{Date32Type, Int64Type};

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    /// One day's `daily` rows, sorted by publisher as the batch writes them.
    fn daily(date: &str, publishers: &[(&str, i64)], complete: bool) -> RecordBatch {
        let n = publishers.len();
        RecordBatch::try_new(
            Table::Daily.schema(),
            vec![
                Arc::new(Date32Array::from(vec![
                    Date32Type::from_naive_date(day(
                        date
                    ));
                    n
                ])),
                Arc::new(StringArray::from(
                    publishers.iter().map(|p| p.0).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(StringArray::from(vec!["pageview"; n])),
                Arc::new(StringArray::from(vec!["desktop"; n])),
                Arc::new(Int64Array::from(
                    publishers.iter().map(|p| p.1).collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(vec![complete; n])),
            ],
        )
        .unwrap()
    }

    async fn month_rows(lake: &Lake, name: &str) -> (Vec<(String, i32, i64)>, Vec<Source>) {
        let path = lake.path(&format!("monthly/month=2025-06/{name}"));
        let bytes = lake
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .unwrap();
        let sources = sqi_schemas::lake::files::sources(reader.metadata()).unwrap();
        let mut rows = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let (publishers, dates, events) = (
                batch.column(1).as_string::<i32>().clone(),
                batch.column(0).as_primitive::<Date32Type>().clone(),
                batch.column(5).as_primitive::<Int64Type>().clone(),
            );
            for i in 0..batch.num_rows() {
                rows.push((
                    publishers.value(i).to_owned(),
                    dates.value(i),
                    events.value(i),
                ));
            }
            assert_eq!(batch.column(6).null_count(), 0);
        }
        (rows, sources)
    }

    /// The merge keeps every row of the complete days, in (publisher, date)
    /// order, lists its sources, skips an incomplete day, and is replaced
    /// whole when rerun.
    #[tokio::test]
    async fn a_month_is_its_complete_days_in_publisher_order() {
        let (_dir, lake) = crate::test_lake();
        let whole = Shard::WHOLE;
        for (date, rows, complete) in [
            ("2025-06-02", vec![("pub-a", 1), ("pub-c", 3)], true),
            ("2025-06-01", vec![("pub-b", 20), ("pub-c", 30)], true),
            ("2025-06-03", vec![("pub-a", 100)], false),
            ("2025-07-01", vec![("pub-a", 1000)], true),
        ] {
            crate::write_day(
                &lake,
                Table::Daily,
                day(date),
                whole,
                &daily(date, &rows, complete),
            )
            .await
            .unwrap();
        }
        let done = compact_month(&lake, Table::Daily, day("2025-06-17"), whole)
            .await
            .unwrap();
        assert_eq!((done.table, done.days, done.rows), (Table::Monthly, 2, 4));
        let (rows, listed) = month_rows(&lake, DAY_FILE_NAME).await;
        let (june1, june2) = (
            Date32Type::from_naive_date(day("2025-06-01")),
            Date32Type::from_naive_date(day("2025-06-02")),
        );
        assert_eq!(
            rows,
            [
                ("pub-a".to_owned(), june2, 1),
                ("pub-b".to_owned(), june1, 20),
                ("pub-c".to_owned(), june1, 30),
                ("pub-c".to_owned(), june2, 3),
            ]
        );
        let listed: Vec<&str> = listed.iter().map(|s| s.date.as_str()).collect();
        assert_eq!(listed, ["2025-06-01", "2025-06-02"]);

        // The incomplete day is recomputed complete: the rerun replaces the file.
        crate::write_day(
            &lake,
            Table::Daily,
            day("2025-06-03"),
            whole,
            &daily("2025-06-03", &[("pub-a", 100)], true),
        )
        .await
        .unwrap();
        let done = compact_month(&lake, Table::Daily, day("2025-06-01"), whole)
            .await
            .unwrap();
        assert_eq!((done.days, done.rows), (3, 5));
        let (rows, _) = month_rows(&lake, DAY_FILE_NAME).await;
        assert_eq!(rows[1], ("pub-a".to_owned(), june2 + 1, 100));
        let month_files = lake.list_parquet("monthly").await.unwrap();
        assert_eq!(month_files.len(), 1, "{month_files:?}");
    }

    /// A month with no complete day has no month file, and one shard's merge
    /// leaves its sibling's file alone.
    #[tokio::test]
    async fn shards_merge_their_own_files() {
        let (_dir, lake) = crate::test_lake();
        let shards = [Shard { index: 0, count: 2 }, Shard { index: 1, count: 2 }];
        for (shard, publisher) in shards.iter().zip(["pub-a", "pub-b"]) {
            crate::write_day(
                &lake,
                Table::Daily,
                day("2025-06-05"),
                *shard,
                &daily("2025-06-05", &[(publisher, 7)], true),
            )
            .await
            .unwrap();
            let done = compact_month(&lake, Table::Daily, day("2025-06-05"), *shard)
                .await
                .unwrap();
            assert_eq!(done.rows, 1);
        }
        for (shard, publisher) in shards.iter().zip(["pub-a", "pub-b"]) {
            let (rows, sources) = month_rows(&lake, &shard.file_name()).await;
            assert_eq!(rows[0].0, publisher);
            assert_eq!(sources[0].file, shard.file_name());
        }
        let done = compact_month(&lake, Table::DailyUrls, day("2025-06-05"), shards[0])
            .await
            .unwrap();
        assert_eq!((done.table, done.rows), (Table::MonthlyUrls, 0));
        assert!(lake.list_parquet("monthly_urls").await.unwrap().is_empty());
        assert!(
            compact_month(&lake, Table::Sqi, day("2025-06-05"), shards[0])
                .await
                .is_err()
        );
    }

    const DAY_FILE_NAME: &str = crate::DAY_FILE;
}
