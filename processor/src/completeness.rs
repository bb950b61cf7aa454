//! Completeness markers: when an hour can no longer change.
//!
//! An event is accepted only if it is within the allowed lateness of its
//! partition's watermark, so once a partition's watermark passes an hour's end
//! plus the lateness, and the range that got it there is in the lake, that
//! partition will never add to the hour again. Layout, under
//! `_completeness/{topic}/`:
//!
//! - `partitions.json`: how many partitions the topic has;
//! - `partitions/p={partition:05}/{closed_before:020}.json` (create-only): the
//!   partition has closed every hour ending at or before `closed_before` (epoch
//!   ms). A partition's value is the largest name; older ones are deleted. A
//!   zombie can only add a lower name, which the maximum ignores;
//! - `hours/dt=YYYY-MM-DD/hour=HH.json` (create-only): every partition has
//!   closed the hour; written by whichever processor sees it first, with the
//!   time it did. The batch job waits for all 24 of a day.
//!
//! The paths are spelled once, in [`sqi_schemas::lake::paths::completeness`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};
use sqi_schemas::lake::paths::completeness::{
    hour_marker, partition_count, partition_dir, partition_marker, partition_marker_of,
    partitions_dir,
};
use sqi_schemas::lake::{HOUR_MS, Lake};

use crate::error::{Error, Result};

/// How far back a processor (re)writes hour markers when it starts, so that a
/// restart fills in any hour whose last writer died before marking it.
const BACKFILL_HOURS: i64 = 48;

/// The end of the last hour a partition at `watermark` has closed, or `None`.
pub fn closed_before(watermark: i64, lateness_ms: i64) -> Option<i64> {
    if watermark == i64::MIN {
        return None;
    }
    Some(watermark.saturating_sub(lateness_ms).div_euclid(HOUR_MS) * HOUR_MS)
}

#[derive(Debug, Serialize, Deserialize)]
struct HourMarker {
    window_start: i64,
    completed_at: String,
    partitions: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartitionCount {
    partitions: i32,
}

/// Writes one topic's markers.
#[derive(Debug)]
pub struct Completeness {
    lake: Lake,
    topic: String,
    partitions: i32,
    marked: Mutex<BTreeMap<i32, i64>>,
    hours_marked_before: Mutex<Option<i64>>,
}

impl Completeness {
    /// Markers for `topic`, which has `partitions` partitions.
    pub fn new(lake: Lake, topic: &str, partitions: i32) -> Self {
        Self {
            lake,
            topic: topic.to_owned(),
            partitions,
            marked: Mutex::new(BTreeMap::new()),
            hours_marked_before: Mutex::new(None),
        }
    }

    /// Records the partition count readers need.
    pub async fn publish_partition_count(&self) -> Result<()> {
        let body = serde_json::to_vec(&PartitionCount {
            partitions: self.partitions,
        })
        .map_err(Error::Json)?;
        let path = self.lake.path(&partition_count(&self.topic));
        let _ = self
            .lake
            .store()
            .put(&path, PutPayload::from(body))
            .await
            .map_err(Error::Store)?;
        Ok(())
    }

    /// Called once a partition's data up to `watermark` is in the lake.
    /// Returns the hours newly marked complete for the whole topic.
    ///
    /// The watermark is taken no further than the wall clock: however a
    /// record's times got past the processor's checks, an hour is never
    /// marked complete before it has ended.
    pub async fn advance(&self, partition: i32, watermark: i64, lateness_ms: i64) -> Result<usize> {
        let now = chrono::Utc::now().timestamp_millis();
        let Some(closed) = closed_before(watermark.min(now), lateness_ms) else {
            return Ok(0);
        };
        let previous = self
            .marked
            .lock()
            .ok()
            .and_then(|m| m.get(&partition).copied());
        if previous.is_some_and(|p| p >= closed) {
            return Ok(0);
        }
        let dir = partition_dir(&self.topic, partition);
        let path = self
            .lake
            .path(&partition_marker(&self.topic, partition, closed));
        create_ignoring_existing(self.lake.store().as_ref(), &path, b"{}".to_vec()).await?;
        // Older markers of this partition say less; keep the listing short.
        let older: Vec<_> = self
            .lake
            .store()
            .list(Some(&self.lake.path(&dir)))
            .try_filter(|meta| std::future::ready(meta.location < path))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(Error::Store)?;
        for location in older {
            match self.lake.store().delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(Error::Store(error)),
            }
        }
        if let Ok(mut marked) = self.marked.lock() {
            let _ = marked.insert(partition, closed);
        }
        self.mark_hours().await
    }

    /// Writes the marker of every hour all partitions have closed.
    async fn mark_hours(&self) -> Result<usize> {
        let root = self.lake.path(&partitions_dir(&self.topic));
        let listed: Vec<_> = self
            .lake
            .store()
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(Error::Store)?;
        let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
        for meta in listed {
            if let Some((partition, closed)) = partition_marker_of(&meta.location) {
                let entry = per_partition.entry(partition).or_insert(i64::MIN);
                *entry = (*entry).max(closed);
            }
        }
        if (0..self.partitions).any(|p| !per_partition.contains_key(&p)) {
            return Ok(0);
        }
        let Some(topic_closed) = per_partition.values().copied().min() else {
            return Ok(0);
        };
        let from = self
            .hours_marked_before
            .lock()
            .ok()
            .and_then(|m| *m)
            .unwrap_or(topic_closed - BACKFILL_HOURS * HOUR_MS);
        let mut written = 0;
        let mut hour = from;
        while hour + HOUR_MS <= topic_closed {
            let marker = HourMarker {
                window_start: hour,
                completed_at: chrono::Utc::now().to_rfc3339(),
                partitions: self.partitions,
            };
            let body = serde_json::to_vec_pretty(&marker).map_err(Error::Json)?;
            let path = self.lake.path(&hour_marker(&self.topic, hour));
            if create_ignoring_existing(self.lake.store().as_ref(), &path, body).await? {
                written += 1;
            }
            hour += HOUR_MS;
        }
        if let Ok(mut marked) = self.hours_marked_before.lock() {
            *marked = Some(topic_closed.max(from));
        }
        Ok(written)
    }
}

async fn create_ignoring_existing(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    body: Vec<u8>,
) -> Result<bool> {
    match store
        .put_opts(path, PutPayload::from(body), PutMode::Create.into())
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(error) => Err(Error::Store(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqi_schemas::lake::LakeOptions;

    #[test]
    fn an_hour_closes_once_the_watermark_passes_its_end_plus_the_lateness() {
        let lateness = 2 * HOUR_MS;
        assert_eq!(closed_before(i64::MIN, lateness), None);
        assert_eq!(closed_before(10 * HOUR_MS, lateness), Some(8 * HOUR_MS));
        assert_eq!(closed_before(10 * HOUR_MS - 1, lateness), Some(7 * HOUR_MS));
    }

    #[tokio::test]
    async fn hours_are_marked_only_when_every_partition_closed_them() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lake = Lake::open(
            &format!("file://{}", dir.path().display()),
            &LakeOptions::default(),
        )?;
        let markers = Completeness::new(lake.clone(), "t", 2);
        let base = 1000 * HOUR_MS;
        assert_eq!(markers.advance(0, base + 5 * HOUR_MS, 0).await?, 0);
        // Partition 1 closes up to base + 3 h: hours before that are complete.
        assert_eq!(markers.advance(1, base + 3 * HOUR_MS, 0).await?, 48);
        let exists = |hour: i64| {
            let lake = lake.clone();
            async move {
                lake.store()
                    .head(&lake.path(&hour_marker("t", hour)))
                    .await
                    .is_ok()
            }
        };
        assert!(exists(base + 2 * HOUR_MS).await);
        assert!(!exists(base + 3 * HOUR_MS).await);
        assert_eq!(markers.advance(1, base + 4 * HOUR_MS + 1, 0).await?, 1);
        assert!(exists(base + 3 * HOUR_MS).await);
        Ok(())
    }

    /// Item 1: a watermark from the future marks no hour that has not ended.
    #[tokio::test]
    async fn no_hour_is_marked_before_it_ends() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lake = Lake::open(
            &format!("file://{}", dir.path().display()),
            &LakeOptions::default(),
        )?;
        let markers = Completeness::new(lake.clone(), "t", 1);
        let now = chrono::Utc::now().timestamp_millis();
        let _ = markers.advance(0, now + 22 * HOUR_MS, 0).await?;
        let listed: Vec<_> = lake
            .store()
            .list(Some(&lake.path(
                &sqi_schemas::lake::paths::completeness::hours_dir("t"),
            )))
            .try_collect()
            .await
            .map_err(Error::Store)?;
        assert!(!listed.is_empty());
        let this_hour = now.div_euclid(HOUR_MS) * HOUR_MS;
        let ahead = lake.path(&hour_marker("t", this_hour));
        assert!(listed.iter().all(|m| m.location < ahead), "{listed:?}");
        Ok(())
    }
}
