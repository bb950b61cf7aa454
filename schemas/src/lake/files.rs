//! Putting, listing and reading the footers of the lake's files.
//!
//! Every file but a month file is put whole with one request (S3
//! `PutObject`; the local store writes a temporary file and renames it), so
//! a reader never sees a partial Parquet file. A month file records in its
//! footer which day files, at which versions, it was merged from
//! ([`SOURCES_KEY`]), so a reader can tell whether a day recomputed since
//! is still the one the month holds.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};

use super::{COMPLETE, Lake, paths};
use crate::{Error, Result};

impl Lake {
    /// Puts `bytes` at `relative` (under the root) in one request: the file
    /// is visible whole or not at all.
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), object_store::Error> {
        let _ = self
            .store()
            .put(&self.path(relative), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// Lists the `.parquet` files under `prefix` (relative to the root).
    pub async fn list_parquet(&self, prefix: &str) -> Result<Vec<ObjectMeta>, object_store::Error> {
        self.store()
            .list(Some(&self.path(prefix)))
            .try_filter(|m| futures::future::ready(m.location.extension() == Some("parquet")))
            .try_collect()
            .await
    }
}

/// A stored object's version: what changes when it is rewritten.
pub fn version(meta: &ObjectMeta) -> String {
    match &meta.e_tag {
        Some(tag) => format!("{tag}/{}", meta.size),
        None => format!("{}/{}", meta.last_modified.to_rfc3339(), meta.size),
    }
}

/// Reads a Parquet file's footer (two ranged reads).
pub async fn read_footer(lake: &Lake, meta: &ObjectMeta) -> Result<ParquetMetaData> {
    const TAIL: u64 = 8;
    let not_parquet = |reason: &str| Error::NotParquet {
        path: meta.location.to_string(),
        reason: reason.to_owned(),
    };
    let size = meta.size;
    if size < TAIL {
        return Err(not_parquet("shorter than a footer"));
    }
    let tail = lake
        .store()
        .get_range(&meta.location, size - TAIL..size)
        .await?;
    let tail: [u8; 8] = tail
        .as_ref()
        .try_into()
        .map_err(|_| not_parquet("short read"))?;
    let length = FooterTail::try_new(&tail)?.metadata_length() as u64;
    if length + TAIL > size {
        return Err(not_parquet("footer longer than the file"));
    }
    let metadata = lake
        .store()
        .get_range(&meta.location, size - TAIL - length..size - TAIL)
        .await?;
    Ok(ParquetMetaDataReader::decode_metadata(&metadata)?)
}

/// Whether the footer says every row is `complete`; a file whose footer
/// cannot say (no such column, no statistics, no rows) is not.
pub fn every_row_complete(metadata: &ParquetMetaData) -> bool {
    let column = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == COMPLETE);
    let (Some(column), false) = (column, metadata.row_groups().is_empty()) else {
        return false;
    };
    metadata.row_groups().iter().all(|group| {
        matches!(
            group.column(column).statistics(),
            Some(Statistics::Boolean(s))
                if s.min_opt() == Some(&true) && s.null_count_opt() == Some(0)
        )
    })
}

/// The files of `table`'s partition for `date` when they are one run's whole
/// output (see [`Shard::one_whole_run`](paths::Shard::one_whole_run)) and
/// every row of every file is `complete`; `None` otherwise, including when
/// the partition is empty or a footer cannot be read.
pub async fn complete_day(
    lake: &Lake,
    table: super::Table,
    date: chrono::NaiveDate,
) -> Result<Option<Vec<ObjectMeta>>> {
    let files = lake.list_parquet(&paths::day_dir(table, date)).await?;
    let names: Vec<&str> = files
        .iter()
        .map(|m| m.location.filename().unwrap_or_default())
        .collect();
    if !paths::Shard::one_whole_run(&names) {
        return Ok(None);
    }
    for meta in &files {
        match read_footer(lake, meta).await {
            Ok(footer) if every_row_complete(&footer) => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(files))
}

/// The footer key under which a month file lists its sources (JSON).
pub const SOURCES_KEY: &str = "sqi.sources";

/// One day file a month file was merged from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// The day file's name in its partition (one per shard).
    pub file: String,
    /// The day file's version: its ETag, or its write time where the store has none.
    pub version: String,
}

impl Source {
    /// The source a listed day file is, if it is in a `dt=` partition.
    pub fn of(meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            date: paths::day_of(&meta.location)?,
            file: meta.location.filename()?.to_owned(),
            version: version(meta),
        })
    }
}

/// The sources a month file's footer lists; none if it lists none.
pub fn sources(metadata: &ParquetMetaData) -> Result<Vec<Source>> {
    let Some(value) = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == SOURCES_KEY))
        .and_then(|kv| kv.value.as_deref())
    else {
        return Ok(Vec::new());
    };
    serde_json::from_str(value).map_err(|e| Error::Footer {
        key: SOURCES_KEY,
        reason: e.to_string(),
    })
}

/// The JSON a month file's footer lists `sources` as.
pub fn sources_json(sources: &[&Source]) -> Result<String> {
    serde_json::to_string(sources).map_err(|e| Error::Footer {
        key: SOURCES_KEY,
        reason: e.to_string(),
    })
}
