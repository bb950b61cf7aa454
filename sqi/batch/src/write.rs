//! Writing a day's files: encoding a day table's rows with the contract's
//! day profile ([`encoding`] does it off the async workers), putting the
//! file with one `put` at its fixed name for the shard, then removing
//! whatever else its partition holds that is not of the same split.
//!
//! It writes what it is given: which rows, and whether the day may be
//! written at all, are decided before it is called.

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use sqi_schemas::lake::paths::{self, Shard};
use sqi_schemas::lake::{Lake, Table, profile};

use crate::error::Result;

/// A day table's file, encoded and not yet put.
#[derive(Debug)]
pub(crate) struct DayFile {
    pub(crate) rows: usize,
    pub(crate) bytes: bytes::Bytes,
}

impl DayFile {
    fn encode(table: Table, batch: &RecordBatch) -> Result<Self> {
        Ok(Self {
            rows: batch.num_rows(),
            bytes: profile::parquet_bytes_with(batch, profile::day(table))?,
        })
    }
}

/// Starts encoding a day table's rows off the async workers (encoding is
/// CPU-bound); [`encoded`] waits for it.
pub(crate) fn encoding(
    table: Table,
    batch: RecordBatch,
) -> tokio::task::JoinHandle<Result<DayFile>> {
    tokio::task::spawn_blocking(move || DayFile::encode(table, &batch))
}

pub(crate) async fn encoded(encoding: tokio::task::JoinHandle<Result<DayFile>>) -> Result<DayFile> {
    encoding.await?
}

/// Puts a day's output file for `shard`, then removes anything in its
/// partition that is neither that file nor a sibling shard's of the same split.
pub async fn write_day(
    lake: &Lake,
    table: Table,
    date: NaiveDate,
    shard: Shard,
    batch: &RecordBatch,
) -> Result<()> {
    put_day(lake, table, date, shard, &DayFile::encode(table, batch)?).await
}

pub(crate) async fn put_day(
    lake: &Lake,
    table: Table,
    date: NaiveDate,
    shard: Shard,
    file: &DayFile,
) -> Result<()> {
    lake.put(&paths::day_file(table, date, shard), file.bytes.clone())
        .await?;
    remove_stale(lake, &paths::day_dir(table, date), shard).await
}

/// Removes anything in the partition `dir` that is neither `shard`'s file nor
/// a sibling shard's of the same split.
pub(crate) async fn remove_stale(lake: &Lake, dir: &str, shard: Shard) -> Result<()> {
    let prefix = lake.path(dir);
    let stale: Vec<_> = lake
        .store()
        .list(Some(&prefix))
        .try_filter(|meta| {
            futures::future::ready(!meta.location.filename().is_some_and(|n| shard.keeps(n)))
        })
        .try_collect()
        .await?;
    for meta in stale {
        // A concurrent run of the same day may have removed it first.
        match lake.store().delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
