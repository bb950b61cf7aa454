//! Writing a flushed buffer to the lake as Parquet.
//!
//! Each file is uploaded whole with one `put`, which object stores make visible
//! atomically (S3 `PutObject`; the local store writes a temp file and renames),
//! so a reader never sees a partial file, and no multipart upload is ever left
//! behind to abort. File names carry the topic, partition and offset range, and
//! the bytes are a function of the range's rows, so a rewrite of the same range
//! replaces a file with an identical one. The names and the writer profile
//! are the lake contract's ([`sqi_schemas::lake::paths`], [`profile::hourly`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use bytes::Bytes;
use sqi_schemas::lake::{Lake, Table, paths, profile};

use crate::error::{Error, Result};
use crate::window::{AggregateKey, PartitionBuffer, UrlKey};

/// One file to write: its lake-relative path and contents.
#[derive(Debug)]
pub struct LakeFile {
    /// The path under the lake root.
    pub path: String,
    /// The Parquet bytes.
    pub bytes: Bytes,
    /// Rows in the file.
    pub rows: usize,
}

/// Encodes a buffer into one Parquet file per table and hour.
pub fn encode(topic: &str, partition: i32, mut buffer: PartitionBuffer) -> Result<Vec<LakeFile>> {
    let name = paths::hourly_file_name(topic, partition, buffer.start_offset, buffer.end_offset);
    let mut files = Vec::new();

    let names = &buffer.names;
    let mut aggregates: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for (key, count) in &buffer.aggregates {
        aggregates
            .entry(key.window_start)
            .or_default()
            .push((key, *count));
    }
    for (window, mut rows) in aggregates {
        // Sorted by the keys' values, so a file's bytes depend on its rows only.
        rows.sort_unstable_by(|(a, _), (b, _)| {
            let key =
                |k: &AggregateKey| (names.get(k.publisher), k.channel, k.event_type, k.device);
            key(a).cmp(&key(b))
        });
        let batch = RecordBatch::try_new(
            Table::Aggregates.schema(),
            vec![
                timestamps(rows.iter().map(|(k, _)| k.window_start)),
                strings(rows.iter().map(|(k, _)| Some(names.get(k.publisher)))),
                strings(rows.iter().map(|(k, _)| k.channel)),
                strings(rows.iter().map(|(k, _)| Some(k.event_type.as_str()))),
                strings(rows.iter().map(|(k, _)| Some(k.device.as_str()))),
                int64s(rows.iter().map(|(_, c)| *c)),
            ],
        )?;
        files.push(file(Table::Aggregates, window, &name, &batch)?);
    }

    let mut urls: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for (key, count) in &buffer.url_counts {
        urls.entry(key.window_start)
            .or_default()
            .push((key, *count));
    }
    for (window, mut rows) in urls {
        rows.sort_unstable_by(|(a, _), (b, _)| {
            let key = |k: &UrlKey| {
                (
                    names.get(k.publisher),
                    names.get(k.url),
                    k.event_type,
                    k.channel,
                )
            };
            key(a).cmp(&key(b))
        });
        let batch = RecordBatch::try_new(
            Table::UrlCounts.schema(),
            vec![
                timestamps(rows.iter().map(|(k, _)| k.window_start)),
                strings(rows.iter().map(|(k, _)| Some(names.get(k.publisher)))),
                strings(rows.iter().map(|(k, _)| Some(names.get(k.url)))),
                strings(rows.iter().map(|(k, _)| Some(k.event_type.as_str()))),
                strings(rows.iter().map(|(k, _)| k.channel)),
                int64s(rows.iter().map(|(_, c)| *c)),
            ],
        )?;
        files.push(file(Table::UrlCounts, window, &name, &batch)?);
    }

    for (window, columns) in &mut buffer.events {
        files.push(file(Table::Events, *window, &name, &columns.finish()?)?);
    }
    Ok(files)
}

/// Uploads the files; each becomes visible whole or not at all.
pub async fn upload(lake: &Lake, files: &[LakeFile]) -> Result<()> {
    let puts = files.iter().map(|f| async move {
        lake.put(&f.path, f.bytes.clone())
            .await
            .map_err(Error::Store)
    });
    let _ = futures::future::try_join_all(puts).await?;
    Ok(())
}

fn file(table: Table, window: i64, name: &str, batch: &RecordBatch) -> Result<LakeFile> {
    Ok(LakeFile {
        path: paths::hourly_file(table, window, name),
        bytes: profile::parquet_bytes_with(batch, profile::hourly(table))?,
        rows: batch.num_rows(),
    })
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut builder = StringBuilder::new();
    values.for_each(|v| builder.append_option(v));
    Arc::new(builder.finish())
}

fn int64s(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut builder = Int64Builder::new();
    values.for_each(|v| builder.append_value(v));
    Arc::new(builder.finish())
}

fn timestamps(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut builder = TimestampMillisecondBuilder::new().with_timezone("UTC");
    values.for_each(|v| builder.append_value(v));
    Arc::new(builder.finish())
}
