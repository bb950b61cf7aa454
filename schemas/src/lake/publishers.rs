//! Typed access to the `publishers` dimension: one file,
//! [`PUBLISHERS_FILE`], replaced whole by `sqi publishers import` or the
//! demo, read by ingest's allowlist and (through SQL) by the batch.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, TimestampMillisecondType};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::paths::PUBLISHERS_FILE;
use super::{Lake, Table, profile, utc_millis};
use crate::{Error, Result};

/// One publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// The publisher id, as in events.
    pub publisher: String,
    /// Its site's domain.
    pub domain: Option<String>,
    /// Its content category (the SQI peer group).
    pub category: Option<String>,
    /// When it joined, epoch ms.
    pub created_at: Option<i64>,
}

/// Replaces the dimension with `rows`, in one atomic put.
pub async fn write(lake: &Lake, rows: &[Publisher]) -> Result<()> {
    let mut publisher = StringBuilder::new();
    let mut domain = StringBuilder::new();
    let mut category = StringBuilder::new();
    let mut created = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for row in rows {
        publisher.append_value(&row.publisher);
        domain.append_option(row.domain.as_deref());
        category.append_option(row.category.as_deref());
        created.append_option(row.created_at);
    }
    let batch = RecordBatch::try_new(
        Table::Publishers.schema(),
        vec![
            Arc::new(publisher.finish()),
            Arc::new(domain.finish()),
            Arc::new(category.finish()),
            Arc::new(created.finish()),
        ],
    )?;
    lake.put(PUBLISHERS_FILE, profile::parquet_bytes(&batch)?)
        .await?;
    Ok(())
}

/// Reads the dimension. Only `publisher` is required; a file without
/// `domain`, `category` or `created_at` reads them as absent, and text
/// columns may be any Arrow string type (a file written by another tool).
/// Rows without a publisher are skipped.
pub async fn read(lake: &Lake) -> Result<Vec<Publisher>> {
    let bytes = lake
        .store()
        .get(&lake.path(PUBLISHERS_FILE))
        .await?
        .bytes()
        .await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        let Some(ids) = text(&batch, "publisher")? else {
            return Err(Error::Publishers(
                "the table has no `publisher` column".into(),
            ));
        };
        let domains = text(&batch, "domain")?;
        let categories = text(&batch, "category")?;
        let created = match batch.column_by_name("created_at") {
            Some(column) => Some(
                arrow::compute::cast(column, &utc_millis())
                    .map_err(|_| Error::Publishers("publishers.created_at is not a time".into()))?,
            ),
            None => None,
        };
        let created = created
            .as_ref()
            .map(|c| c.as_primitive::<TimestampMillisecondType>());
        let value = |column: &Option<StringArray>, row: usize| {
            column
                .as_ref()
                .filter(|c| !c.is_null(row))
                .map(|c| c.value(row).to_owned())
        };
        for row in 0..ids.len() {
            if ids.is_null(row) {
                continue;
            }
            rows.push(Publisher {
                publisher: ids.value(row).to_owned(),
                domain: value(&domains, row),
                category: value(&categories, row),
                created_at: created.filter(|c| !c.is_null(row)).map(|c| c.value(row)),
            });
        }
    }
    Ok(rows)
}

/// A text column as UTF-8, if the file has it.
fn text(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    let Some(column): Option<&ArrayRef> = batch.column_by_name(name) else {
        return Ok(None);
    };
    arrow::compute::cast(column, &DataType::Utf8)
        .ok()
        .and_then(|array| array.as_string_opt::<i32>().cloned())
        .map(Some)
        .ok_or_else(|| Error::Publishers(format!("publishers.{name} is not text")))
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::LakeOptions;

    #[tokio::test]
    async fn what_is_written_reads_back() {
        let lake = Lake::open("memory://", &LakeOptions::default()).unwrap();
        let rows = vec![
            Publisher {
                publisher: "pub-1".into(),
                domain: Some("a.com".into()),
                category: Some("news".into()),
                created_at: Some(1_704_153_600_000),
            },
            Publisher {
                publisher: "pub-2".into(),
                domain: None,
                category: None,
                created_at: None,
            },
        ];
        write(&lake, &rows).await.unwrap();
        assert_eq!(read(&lake).await.unwrap(), rows);
    }
}
