//! Which days the batch tables answer, as the report plans its queries by.
//!
//! A question over whole UTC days reads `daily` (or `daily_urls`) for the days
//! the batch computed with every row `complete`, and the hourly tables for the
//! rest. Asking the lake that on every request cost a scan of each day's
//! `complete` column; instead the guard's refresher lists the batch tables
//! with the lake's state and reads the footer of each new file once: the
//! batch writes `complete` as one value per file, so its statistics say it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use sqi_schemas::lake::{Lake, Table};

use crate::error::{Error, Result};

/// The days (`YYYY-MM-DD`) each batch table answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LakeDays {
    /// Days whose every `daily` file is complete.
    pub(super) daily: BTreeSet<String>,
    /// Days whose every `daily_urls` file is complete.
    pub(super) daily_urls: BTreeSet<String>,
    /// Days with an `sqi` file, complete or not.
    pub(super) sqi: BTreeSet<String>,
    /// Days with a partition in `aggregates`.
    pub(super) aggregates: BTreeSet<String>,
    /// Days with a partition in `url_counts`.
    pub(super) url_counts: BTreeSet<String>,
    /// The UTC day of the refresh.
    pub(super) today: Option<chrono::NaiveDate>,
}

impl LakeDays {
    /// The complete days of `table` (`daily` or `daily_urls`).
    pub(super) fn complete(&self, table: Table) -> &BTreeSet<String> {
        match table {
            Table::DailyUrls => &self.daily_urls,
            _ => &self.daily,
        }
    }

    /// Whether the hourly `table` may hold rows of `day`. Listing an hourly
    /// table's partitions costs a query more than reading a few files, so
    /// days the refresh saw no partition for are skipped. Yesterday and today
    /// are always read: the processor opens their partitions all day, and
    /// the refresh may not have seen the newest yet.
    pub(super) fn may_have_hours(&self, table: Table, day: chrono::NaiveDate) -> bool {
        let Some(today) = self.today else {
            return true;
        };
        let listed = match table {
            Table::UrlCounts => &self.url_counts,
            _ => &self.aggregates,
        };
        day + chrono::Days::new(1) >= today || listed.contains(&day.to_string())
    }
}

/// What each batch file's footer said, by path and write time, so that a
/// refresh reads only the footers of files it has not seen.
#[derive(Debug, Default)]
pub(super) struct FooterMemo {
    complete: HashMap<Path, (DateTime<Utc>, bool)>,
}

/// Lists the batch tables: the newest write of each (for the lake's state)
/// and the days they answer.
pub(super) async fn read(
    lake: &Lake,
    memo: &mut FooterMemo,
) -> Result<(Vec<Option<DateTime<Utc>>>, LakeDays)> {
    let mut newest = Vec::new();
    let mut days = LakeDays::default();
    let mut seen = HashSet::new();
    for table in [Table::Daily, Table::DailyUrls, Table::Sqi] {
        let files: Vec<ObjectMeta> = lake
            .store()
            .list(Some(&lake.path(table.prefix())))
            .try_collect()
            .await?;
        newest.push(files.iter().map(|m| m.last_modified).max());
        let mut by_day: BTreeMap<String, bool> = BTreeMap::new();
        for meta in files
            .iter()
            .filter(|m| m.location.extension() == Some("parquet"))
        {
            let Some(day) = day_of(&meta.location) else {
                continue;
            };
            let complete = if table == Table::Sqi {
                true
            } else {
                memo.complete(lake, meta).await
            };
            *by_day.entry(day).or_insert(true) &= complete;
            let _ = seen.insert(meta.location.clone());
        }
        let answered = by_day
            .into_iter()
            .filter_map(|(day, complete)| complete.then_some(day))
            .collect();
        match table {
            Table::Daily => days.daily = answered,
            Table::DailyUrls => days.daily_urls = answered,
            _ => days.sqi = answered,
        }
    }
    days.today = Some(Utc::now().date_naive());
    for table in [Table::Aggregates, Table::UrlCounts] {
        let listing = lake
            .store()
            .list_with_delimiter(Some(&lake.path(table.prefix())))
            .await?;
        let partitions = listing.common_prefixes.iter().filter_map(day_of).collect();
        match table {
            Table::UrlCounts => days.url_counts = partitions,
            _ => days.aggregates = partitions,
        }
    }
    memo.complete.retain(|path, _| seen.contains(path));
    Ok((newest, days))
}

/// The `YYYY-MM-DD` of a path's `dt=` partition.
fn day_of(path: &Path) -> Option<String> {
    path.parts()
        .find_map(|part| part.as_ref().strip_prefix("dt=").map(str::to_owned))
        .filter(|day| chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok())
}

impl FooterMemo {
    /// Whether every row of the file is `complete`; a file whose footer
    /// cannot say (unreadable, no statistics, no rows) is not.
    async fn complete(&mut self, lake: &Lake, meta: &ObjectMeta) -> bool {
        if let Some((written, complete)) = self.complete.get(&meta.location)
            && *written == meta.last_modified
        {
            return *complete;
        }
        let complete = match all_complete(lake, meta).await {
            Ok(complete) => complete,
            Err(error) => {
                tracing::warn!(%error, file = %meta.location, "cannot read a batch file's footer; its day is read from the hourly tables");
                false
            }
        };
        let _ = self
            .complete
            .insert(meta.location.clone(), (meta.last_modified, complete));
        complete
    }
}

/// Reads the file's footer (two ranged reads) and checks the `complete`
/// column's statistics in every row group.
async fn all_complete(lake: &Lake, meta: &ObjectMeta) -> Result<bool> {
    const TAIL: u64 = 8;
    let size = meta.size;
    if size < TAIL {
        return Err(Error::Invalid(format!("{} is not Parquet", meta.location)));
    }
    let tail = lake
        .store()
        .get_range(&meta.location, size - TAIL..size)
        .await?;
    let tail: [u8; 8] = tail
        .as_ref()
        .try_into()
        .map_err(|_| Error::Invalid(format!("{}: short read", meta.location)))?;
    let footer = FooterTail::try_new(&tail)?;
    let length = footer.metadata_length() as u64;
    if length + TAIL > size {
        return Err(Error::Invalid(format!("{} is not Parquet", meta.location)));
    }
    let metadata = lake
        .store()
        .get_range(&meta.location, size - TAIL - length..size - TAIL)
        .await?;
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata)?;
    let column = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == crate::batch::COMPLETE);
    let (Some(column), false) = (column, metadata.row_groups().is_empty()) else {
        return Ok(false);
    };
    Ok(metadata.row_groups().iter().all(|group| {
        matches!(
            group.column(column).statistics(),
            Some(Statistics::Boolean(s))
                if s.min_opt() == Some(&true) && s.null_count_opt() == Some(0)
        )
    }))
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use arrow::array::{BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray};
    use chrono::NaiveDate;
    use object_store::PutPayload;
    use sqi_schemas::lake::LakeOptions;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn daily_urls(date: NaiveDate, complete: bool) -> RecordBatch {
        RecordBatch::try_new(
            Table::DailyUrls.schema(),
            vec![
                Arc::new(Date32Array::from(vec![
                    arrow::datatypes::Date32Type::from_naive_date(date);
                    2
                ])),
                Arc::new(StringArray::from(vec!["pub-a", "pub-b"])),
                Arc::new(StringArray::from(vec![
                    "https://a.example/",
                    "https://b.example/",
                ])),
                Arc::new(StringArray::from(vec!["share", "share"])),
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(BooleanArray::from(vec![complete; 2])),
            ],
        )
        .unwrap()
    }

    /// The batch's own files, read back through their footers: a day is
    /// answered only when every file of it is complete, and a rewrite is seen.
    #[tokio::test]
    async fn complete_days_are_read_from_the_footers_the_batch_writes() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(
            &format!("file://{}", dir.path().display()),
            &LakeOptions::default(),
        )
        .unwrap();
        let whole = crate::batch::Shard::WHOLE;
        for (date, complete) in [("2025-06-01", true), ("2025-06-02", false)] {
            crate::batch::write_day(
                &lake,
                Table::DailyUrls,
                day(date),
                whole,
                &daily_urls(day(date), complete),
            )
            .await
            .unwrap();
        }
        lake.store()
            .put(
                &lake.path("aggregates/dt=2025-06-01/hour=00/x.parquet"),
                PutPayload::from_static(b"not read"),
            )
            .await
            .unwrap();
        let mut memo = FooterMemo::default();
        let (newest, days) = read(&lake, &mut memo).await.unwrap();
        assert_eq!(newest.len(), 3);
        assert!(newest[1].is_some() && newest[0].is_none());
        assert_eq!(days.daily_urls, BTreeSet::from(["2025-06-01".to_owned()]));
        assert!(days.daily.is_empty() && days.sqi.is_empty());
        assert_eq!(days.aggregates, BTreeSet::from(["2025-06-01".to_owned()]));
        assert!(days.may_have_hours(Table::Aggregates, day("2025-06-01")));
        assert!(!days.may_have_hours(Table::Aggregates, day("2025-06-02")));
        assert!(!days.may_have_hours(Table::UrlCounts, day("2025-06-01")));
        let today = days.today.unwrap();
        assert!(days.may_have_hours(Table::UrlCounts, today));
        assert!(days.may_have_hours(Table::UrlCounts, today - chrono::Days::new(1)));

        // The day is recomputed, now complete; the memo must not hide it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        crate::batch::write_day(
            &lake,
            Table::DailyUrls,
            day("2025-06-02"),
            whole,
            &daily_urls(day("2025-06-02"), true),
        )
        .await
        .unwrap();
        let (_, days) = read(&lake, &mut memo).await.unwrap();
        assert_eq!(days.daily_urls.len(), 2);
    }

    #[test]
    fn days_come_from_the_dt_partition() {
        assert_eq!(
            day_of(&Path::from("lake/daily/dt=2025-06-30/part-00000.parquet")),
            Some("2025-06-30".to_owned())
        );
        assert_eq!(day_of(&Path::from("daily/dt=yesterday/x.parquet")), None);
        assert_eq!(day_of(&Path::from("daily/x.parquet")), None);
    }
}
