//! The range log: the processor's exactly-once record, kept in the lake itself.
//!
//! Per topic and partition, under `_processor/{topic}/p={partition:05}/`:
//!
//! - `genesis.json` (create-only): the offset where this partition's chain of
//!   ranges starts. Two processors that both find an empty log cannot start two
//!   chains: the second create fails and it adopts the first one's start.
//! - `{start:020}.range.json` (create-only): a [`RangeIntent`]. A range's start
//!   is always the previous range's end + 1 (or the genesis), so the log is a
//!   single chain, and whoever creates a start first decides that range's end.
//!   Files for a range are a pure function of its records and of the state the
//!   intent records (watermark, and the dedup ids reloadable from earlier
//!   ranges), so every writer of a range, zombies included, writes the same
//!   names with the same rows.
//! - `{next:020}.idle-{watermark:020}.json`: a watermark advanced by idleness
//!   between ranges, so that a restart keeps the closed hours closed.
//! - `checkpoint.json` (overwritten): where a recovery starts listing. It only
//!   ever errs low (a zombie writes an older one), which costs a longer listing.
//!
//! The log is never deleted: it is small (one intent per range), it is the
//! audit trail of which offsets went into which files, and an old entry is what
//! makes a waking zombie's stale claim fail.
//!
//! The names are spelled once, in [`sqi_schemas::lake::paths::range_log`].

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMillisecondType;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sqi_schemas::lake::paths::range_log as names;
use sqi_schemas::lake::{Lake, Table};

use crate::dedup::Dedup;
use crate::error::{Error, Result};

/// One claimed offset range and everything needed to write it again identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeIntent {
    /// First offset covered.
    pub start: i64,
    /// Last offset covered (inclusive).
    pub end: i64,
    /// The partition watermark (latest event time, epoch ms) before the first record.
    pub watermark_before: i64,
    /// The partition watermark after the last record.
    pub watermark_after: i64,
    /// The partition's receive watermark (latest `received_at`, epoch ms)
    /// before the first record: what dedup's horizon is measured from.
    /// Absent from entries written before dedup measured receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_before: Option<i64>,
    /// The partition's receive watermark after the last record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_after: Option<i64>,
    /// Distinct events counted.
    pub events: u64,
    /// The data files of the range, relative to the lake root.
    pub files: Vec<String>,
}

impl RangeIntent {
    /// The receive watermark after the range; for an entry written before it
    /// was recorded, the event-time watermark stands in (ingest stamps both
    /// within seconds for on-time traffic).
    pub fn receive_watermark_after(&self) -> i64 {
        self.received_after.unwrap_or(self.watermark_after)
    }

    /// The receive watermark before the range (see [`Self::receive_watermark_after`]).
    pub fn receive_watermark_before(&self) -> i64 {
        self.received_before.unwrap_or(self.watermark_before)
    }

    /// The `events/` files of the range.
    pub fn event_files(&self) -> impl Iterator<Item = &str> {
        let prefix = format!("{}/", Table::Events.prefix());
        self.files
            .iter()
            .map(String::as_str)
            .filter(move |f| f.starts_with(&prefix))
    }
}

/// The outcome of a create-only claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim<T> {
    /// This writer created the entry.
    Won,
    /// An identical entry was there already (a redo, or another writer of the same range).
    Same,
    /// Another writer decided differently first; its decision stands.
    Taken(T),
}

/// A watermark advanced while the partition was idle, between two ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleMark {
    /// The offset the next range will start at.
    pub next_offset: i64,
    /// The advanced watermark.
    pub watermark: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Genesis {
    start: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    list_from: i64,
}

/// What a recovery found in one partition's log.
#[derive(Debug, Default)]
pub struct LogState {
    /// Where the chain starts, if it has started.
    pub genesis: Option<i64>,
    /// The chain's ranges from the checkpoint on, by start.
    pub ranges: BTreeMap<i64, RangeIntent>,
    /// Idle marks from the checkpoint on.
    pub idle: Vec<IdleMark>,
}

impl LogState {
    /// The newest range.
    pub fn newest(&self) -> Option<&RangeIntent> {
        self.ranges.values().next_back()
    }

    /// The ranges before `start`, newest first, following the chain.
    pub fn chain_before(&self, start: i64) -> Vec<&RangeIntent> {
        let by_end: HashMap<i64, &RangeIntent> = self.ranges.values().map(|r| (r.end, r)).collect();
        let mut chain = Vec::new();
        let mut next = start;
        while let Some(range) = by_end.get(&(next - 1)) {
            chain.push(*range);
            next = range.start;
        }
        chain
    }

    /// The highest idle watermark recorded for a range starting at `offset`.
    pub fn idle_watermark_at(&self, offset: i64) -> Option<i64> {
        self.idle
            .iter()
            .filter(|m| m.next_offset == offset)
            .map(|m| m.watermark)
            .max()
    }
}

/// One partition's log.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    lake: Lake,
    dir: String,
    /// The partition.
    pub partition: i32,
}

impl PartitionLog {
    /// The log of `topic`'s `partition` in `lake`.
    pub fn new(lake: Lake, topic: &str, partition: i32) -> Self {
        Self {
            lake,
            dir: names::dir(topic, partition),
            partition,
        }
    }

    fn path(&self, name: &str) -> Path {
        self.lake.path(&format!("{}/{name}", self.dir))
    }

    fn store(&self) -> &dyn ObjectStore {
        self.lake.store().as_ref()
    }

    /// Fixes where the chain starts, unless someone already did.
    pub async fn claim_genesis(&self, start: i64) -> Result<Claim<i64>> {
        let path = self.path(names::GENESIS);
        match create(self.store(), &path, &Genesis { start }).await? {
            None => Ok(Claim::Won),
            Some(bytes) => {
                let existing: Genesis = parse(&path, &bytes)?;
                Ok(if existing.start == start {
                    Claim::Same
                } else {
                    Claim::Taken(existing.start)
                })
            }
        }
    }

    /// Claims `intent.start`; if it is taken, the existing intent is returned.
    pub async fn claim(&self, intent: &RangeIntent) -> Result<Claim<RangeIntent>> {
        let path = self.path(&names::range_entry(intent.start));
        match create(self.store(), &path, intent).await? {
            None => Ok(Claim::Won),
            Some(bytes) => {
                let existing: RangeIntent = parse(&path, &bytes)?;
                Ok(if existing == *intent {
                    Claim::Same
                } else {
                    Claim::Taken(existing)
                })
            }
        }
    }

    /// Records an idle watermark advance.
    pub async fn put_idle(&self, mark: IdleMark) -> Result<()> {
        let name = names::idle_entry(mark.next_offset, mark.watermark);
        put_json(self.store(), &self.path(&name), &mark).await
    }

    /// Moves the point where recoveries start listing.
    pub async fn put_checkpoint(&self, list_from: i64) -> Result<()> {
        put_json(
            self.store(),
            &self.path(names::CHECKPOINT),
            &Checkpoint { list_from },
        )
        .await
    }

    /// Reads the log from its checkpoint on.
    pub async fn read(&self) -> Result<LogState> {
        let genesis = get_optional(self.store(), &self.path(names::GENESIS))
            .await?
            .map(|bytes| parse::<Genesis>(&self.path(names::GENESIS), &bytes))
            .transpose()?
            .map(|g| g.start);
        let list_from = get_optional(self.store(), &self.path(names::CHECKPOINT))
            .await?
            .map(|bytes| parse::<Checkpoint>(&self.path(names::CHECKPOINT), &bytes))
            .transpose()?
            .map_or(0, |c| c.list_from);
        let prefix = self.lake.path(&self.dir);
        let offset = self.path(&names::listing_offset(list_from));
        let listed: Vec<_> = self
            .store()
            .list_with_offset(Some(&prefix), &offset)
            .try_collect()
            .await
            .map_err(Error::Store)?;
        let mut state = LogState {
            genesis,
            ..LogState::default()
        };
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if name.ends_with(names::RANGE_SUFFIX) {
                let bytes = get(self.store(), &meta.location).await?;
                let intent: RangeIntent = parse(&meta.location, &bytes)?;
                let _ = state.ranges.insert(intent.start, intent);
            } else if name.contains(names::IDLE_INFIX) {
                let bytes = get(self.store(), &meta.location).await?;
                state.idle.push(parse(&meta.location, &bytes)?);
            }
        }
        Ok(state)
    }

    /// Whether every file of a range is in the lake (it was written whole).
    pub async fn is_written(&self, intent: &RangeIntent) -> Result<bool> {
        for file in &intent.files {
            match self.store().head(&self.lake.path(file)).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(error) => return Err(Error::Store(error)),
            }
        }
        Ok(true)
    }

    /// Reloads into `dedup` the ids of `ranges` received at or after `floor`.
    pub async fn reload_ids(
        &self,
        ranges: &[RangeIntent],
        floor: i64,
        dedup: &mut Dedup,
    ) -> Result<usize> {
        let mut loaded = 0;
        for range in ranges {
            for file in range.event_files() {
                let bytes = get(self.store(), &self.lake.path(file)).await?;
                loaded += ids_in(bytes, floor, dedup)?;
            }
        }
        Ok(loaded)
    }
}

fn ids_in(bytes: Bytes, floor: i64, dedup: &mut Dedup) -> Result<usize> {
    let schema = Table::Events.schema();
    let (id_col, received_col) = (
        schema.index_of("event_id")?,
        schema.index_of("received_at")?,
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [id_col, received_col]);
    let mut loaded = 0;
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let ids = batch.column(0).as_string::<i32>();
        let times = batch.column(1).as_primitive::<TimestampMillisecondType>();
        for row in 0..batch.num_rows() {
            if !ids.is_null(row) && times.value(row) >= floor {
                dedup.remember(ids.value(row), times.value(row));
                loaded += 1;
            }
        }
    }
    Ok(loaded)
}

/// Creates `path` unless it exists; returns the existing contents if it does.
async fn create<T: Serialize>(
    store: &dyn ObjectStore,
    path: &Path,
    value: &T,
) -> Result<Option<Bytes>> {
    let payload = PutPayload::from(serde_json::to_vec_pretty(value).map_err(Error::Json)?);
    match store.put_opts(path, payload, PutMode::Create.into()).await {
        Ok(_) => Ok(None),
        Err(object_store::Error::AlreadyExists { .. }) => get(store, path).await.map(Some),
        Err(error) => Err(Error::Store(error)),
    }
}

async fn put_json<T: Serialize>(store: &dyn ObjectStore, path: &Path, value: &T) -> Result<()> {
    let payload = PutPayload::from(serde_json::to_vec_pretty(value).map_err(Error::Json)?);
    let _ = store.put(path, payload).await.map_err(Error::Store)?;
    Ok(())
}

async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Bytes> {
    store
        .get(path)
        .await
        .map_err(Error::Store)?
        .bytes()
        .await
        .map_err(Error::Store)
}

async fn get_optional(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>> {
    match store.get(path).await {
        Ok(result) => Ok(Some(result.bytes().await.map_err(Error::Store)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(Error::Store(error)),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::CorruptLog {
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqi_schemas::lake::LakeOptions;

    fn intent(start: i64, end: i64) -> RangeIntent {
        RangeIntent {
            start,
            end,
            watermark_before: 0,
            watermark_after: 10,
            received_before: Some(0),
            received_after: Some(10),
            events: 1,
            files: vec![format!("events/dt=2025-01-01/hour=00/t+0+{start}.parquet")],
        }
    }

    #[tokio::test]
    async fn the_first_claim_of_a_start_decides_its_end() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lake = Lake::open(
            &format!("file://{}", dir.path().display()),
            &LakeOptions::default(),
        )?;
        let log = PartitionLog::new(lake, "t", 0);
        assert_eq!(log.claim_genesis(0).await?, Claim::Won);
        assert_eq!(log.claim_genesis(5).await?, Claim::Taken(0));
        assert_eq!(log.claim(&intent(0, 9)).await?, Claim::Won);
        assert_eq!(log.claim(&intent(0, 9)).await?, Claim::Same);
        assert_eq!(log.claim(&intent(0, 12)).await?, Claim::Taken(intent(0, 9)));
        assert_eq!(log.claim(&intent(10, 19)).await?, Claim::Won);
        log.put_idle(IdleMark {
            next_offset: 20,
            watermark: 99,
        })
        .await?;
        log.put_checkpoint(10).await?;
        let state = log.read().await?;
        assert_eq!(state.genesis, Some(0));
        assert_eq!(state.ranges.keys().copied().collect::<Vec<_>>(), vec![10]);
        assert_eq!(state.idle_watermark_at(20), Some(99));
        assert!(!log.is_written(&intent(10, 19)).await?);
        Ok(())
    }

    #[test]
    fn the_chain_is_followed_by_offsets() {
        let mut state = LogState::default();
        for (s, e) in [(0, 9), (10, 19), (20, 29)] {
            let _ = state.ranges.insert(s, intent(s, e));
        }
        let starts: Vec<i64> = state.chain_before(30).iter().map(|r| r.start).collect();
        assert_eq!(starts, vec![20, 10, 0]);
        assert!(state.chain_before(25).is_empty());
    }
}
