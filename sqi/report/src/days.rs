//! Which days the batch tables answer, as the report plans its queries by.
//!
//! A question over whole UTC days reads `daily` (or `daily_urls`, or
//! `daily_hours` for rows by hour) for the days the batch computed with every
//! row `complete`, and the hourly tables for the rest. Asking the lake that on every request cost a scan of each day's
//! `complete` column; instead the guard's refresher lists the batch tables
//! with the lake's state and reads the footer of each new file once: the
//! batch writes `complete` as one value per file, so its statistics say it.
//! A day written by a sharded batch (`--shard i/N`, `part-i-of-N` files)
//! is complete only when all N shards' files are there and complete: until
//! then the day file holds only some categories' publishers.
//! The same refresh reads each month file's list of sources once, and notes
//! the complete days whose files are still exactly those sources: those days
//! are read from the month file, one file for a month of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use object_store::path::Path;
use sqi_schemas::lake::files::{Source, every_row_complete, read_footer, sources};
use sqi_schemas::lake::paths::{Shard, day_of};
use sqi_schemas::lake::{Lake, Table};

use crate::error::Result;

/// A table's files by partition value (`YYYY-MM-DD` or `YYYY-MM`).
pub(super) type Files = BTreeMap<String, Vec<ObjectMeta>>;

/// The days (`YYYY-MM-DD`) each batch table answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LakeDays {
    /// Days whose every `daily` file is complete.
    pub(super) daily: BTreeSet<String>,
    /// Days whose every `daily_urls` file is complete.
    pub(super) daily_urls: BTreeSet<String>,
    /// Days whose every `daily_hours` file is complete.
    pub(super) daily_hours: BTreeSet<String>,
    /// Days whose `sqi` files are one run's whole output (every shard's).
    pub(super) sqi: BTreeSet<String>,
    /// Days with a partition in `aggregates`.
    pub(super) aggregates: BTreeSet<String>,
    /// Days with a partition in `url_counts`.
    pub(super) url_counts: BTreeSet<String>,
    /// The UTC day of the refresh.
    pub(super) today: Option<chrono::NaiveDate>,
    /// The files of `daily`, `daily_urls`, `daily_hours` and `sqi` by day, and
    /// of their month tables by month, as listed.
    pub(super) files: HashMap<Table, Files>,
    /// The complete days of each day table whose current files are exactly
    /// the sources of their month's files (`monthly` for `daily`, ...).
    pub(super) merged: HashMap<Table, BTreeSet<String>>,
}

/// Where a day table's rows of some days are: month files holding them
/// (`months`, to be read for `merged_days` only) and day files.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct DayFiles {
    /// Month files.
    pub(super) months: Vec<ObjectMeta>,
    /// The days to take from `months`.
    pub(super) merged_days: Vec<chrono::NaiveDate>,
    /// Day files of the other days.
    pub(super) days: Vec<ObjectMeta>,
}

impl LakeDays {
    /// The complete days of `table` (`daily`, `daily_urls` or `daily_hours`).
    pub(super) fn complete(&self, table: Table) -> &BTreeSet<String> {
        match table {
            Table::DailyUrls => &self.daily_urls,
            Table::DailyHours => &self.daily_hours,
            _ => &self.daily,
        }
    }

    /// The files of day table `table` to read for `days`: a month file for
    /// each month whose merge holds the day, the day's own files otherwise.
    pub(super) fn day_files(&self, table: Table, days: &[String]) -> DayFiles {
        let empty = BTreeMap::new();
        let by_day = self.files.get(&table).unwrap_or(&empty);
        let by_month = table
            .month_table()
            .and_then(|m| self.files.get(&m))
            .unwrap_or(&empty);
        let merged = self.merged.get(&table);
        let mut plan = DayFiles::default();
        let mut months = BTreeSet::new();
        for day in days {
            let month = day.get(..7).unwrap_or_default();
            let parsed = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok();
            match (merged.is_some_and(|m| m.contains(day)), parsed) {
                (true, Some(date)) => {
                    plan.merged_days.push(date);
                    if months.insert(month.to_owned()) {
                        plan.months
                            .extend(by_month.get(month).into_iter().flatten().cloned());
                    }
                }
                _ => plan
                    .days
                    .extend(by_day.get(day).into_iter().flatten().cloned()),
            }
        }
        plan
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
    sources: HashMap<Path, (DateTime<Utc>, Vec<Source>)>,
}

/// The batch tables the report reads, listed by every refresh.
const BATCH_TABLES: [Table; 7] = [
    Table::Daily,
    Table::DailyUrls,
    Table::Sqi,
    Table::Monthly,
    Table::MonthlyUrls,
    Table::DailyHours,
    Table::MonthlyHours,
];

/// Lists the batch tables: the newest write of each (for the lake's state)
/// and the days they answer.
pub(super) async fn read(
    lake: &Lake,
    memo: &mut FooterMemo,
) -> Result<(Vec<Option<DateTime<Utc>>>, LakeDays)> {
    let mut newest = Vec::new();
    let mut days = LakeDays::default();
    let mut seen = HashSet::new();
    for table in BATCH_TABLES {
        let files = lake.list_parquet(table.prefix()).await?;
        newest.push(files.iter().map(|m| m.last_modified).max());
        let month_table = matches!(
            table,
            Table::Monthly | Table::MonthlyUrls | Table::MonthlyHours
        );
        // Completeness decides which table answers a day of totals; an `sqi`
        // day is answered by its files, complete or not, once every shard
        // has written its file.
        let totals = matches!(table, Table::Daily | Table::DailyUrls | Table::DailyHours);
        let mut by_partition = Files::new();
        let mut by_day: BTreeMap<String, bool> = BTreeMap::new();
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for meta in files {
            let Some(partition) = partition_of(&meta.location, month_table) else {
                continue;
            };
            let _ = seen.insert(meta.location.clone());
            if totals {
                let complete = memo.complete(lake, &meta).await;
                *by_day.entry(partition.clone()).or_insert(true) &= complete;
            }
            if !month_table {
                names
                    .entry(partition.clone())
                    .or_default()
                    .push(meta.location.filename().unwrap_or_default().to_owned());
            }
            by_partition.entry(partition).or_default().push(meta);
        }
        let answered = by_day
            .into_iter()
            .filter(|(day, complete)| {
                *complete && names.get(day).is_some_and(|n| Shard::one_whole_run(n))
            })
            .map(|(day, _)| day)
            .collect();
        match table {
            Table::Daily => days.daily = answered,
            Table::DailyUrls => days.daily_urls = answered,
            Table::DailyHours => days.daily_hours = answered,
            Table::Sqi => {
                days.sqi = names
                    .into_iter()
                    .filter(|(_, n)| Shard::one_whole_run(n))
                    .map(|(day, _)| day)
                    .collect();
            }
            _ => {}
        }
        let _ = days.files.insert(table, by_partition);
    }
    for table in [Table::Daily, Table::DailyUrls, Table::DailyHours] {
        let merged = merged_days(lake, memo, &days, table).await;
        let _ = days.merged.insert(table, merged);
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
    memo.sources.retain(|path, _| seen.contains(path));
    Ok((newest, days))
}

/// The complete days of `table` whose files are, one for one and version for
/// version, the sources its month files list for that day.
async fn merged_days(
    lake: &Lake,
    memo: &mut FooterMemo,
    days: &LakeDays,
    table: Table,
) -> BTreeSet<String> {
    let Some(month_table) = table.month_table() else {
        return BTreeSet::new();
    };
    let mut recorded: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for meta in days
        .files
        .get(&month_table)
        .into_iter()
        .flat_map(|f| f.values().flatten())
    {
        for source in memo.sources(lake, meta).await {
            recorded
                .entry(source.date)
                .or_default()
                .push((source.file, source.version));
        }
    }
    let current = days.files.get(&table);
    days.complete(table)
        .iter()
        .filter(|day| {
            let Some(recorded) = recorded.get_mut(*day) else {
                return false;
            };
            let mut now: Vec<(String, String)> = current
                .and_then(|f| f.get(*day))
                .into_iter()
                .flatten()
                .filter_map(|m| Source::of(m).map(|s| (s.file, s.version)))
                .collect();
            now.sort_unstable();
            recorded.sort_unstable();
            !now.is_empty() && now == *recorded
        })
        .cloned()
        .collect()
}

/// The `YYYY-MM-DD` of a `dt=` partition, or the `YYYY-MM` of a `month=` one.
fn partition_of(path: &Path, month: bool) -> Option<String> {
    if !month {
        return day_of(path);
    }
    path.parts()
        .find_map(|part| part.as_ref().strip_prefix("month=").map(str::to_owned))
        .filter(|m| chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_ok())
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
        let complete = match read_footer(lake, meta).await {
            Ok(footer) => every_row_complete(&footer),
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

    /// The day files a month file was merged from; none when its footer
    /// cannot say, so that its days are read from the day files.
    async fn sources(&mut self, lake: &Lake, meta: &ObjectMeta) -> Vec<Source> {
        if let Some((written, sources)) = self.sources.get(&meta.location)
            && *written == meta.last_modified
        {
            return sources.clone();
        }
        let sources = match read_footer(lake, meta)
            .await
            .and_then(|footer| sources(&footer))
        {
            Ok(sources) => sources,
            Err(error) => {
                tracing::warn!(%error, file = %meta.location, "cannot read a month file's sources; its days are read from the day files");
                Vec::new()
            }
        };
        let _ = self
            .sources
            .insert(meta.location.clone(), (meta.last_modified, sources.clone()));
        sources
    }
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use arrow::array::{BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray};
    use chrono::NaiveDate;
    use object_store::{ObjectStoreExt, PutPayload};

    use sqi_schemas::lake::files::sources_json;
    use sqi_schemas::lake::{paths, profile};

    /// A day file as the batch writes it (the lake contract's day profile at
    /// the contract's path); the report must not depend on the batch crate.
    async fn write_day(
        lake: &Lake,
        table: Table,
        date: NaiveDate,
        shard: Shard,
        rows: &RecordBatch,
    ) {
        let bytes = profile::parquet_bytes_with(rows, profile::day(table)).unwrap();
        lake.put(&paths::day_file(table, date, shard), bytes)
            .await
            .unwrap();
    }

    /// A month file as the batch's month merge leaves it: the days' rows,
    /// with the versions of the day files it read as its sources.
    async fn write_month(lake: &Lake, table: Table, days: &[(NaiveDate, RecordBatch)]) {
        let mut sources = Vec::new();
        for (date, _) in days {
            let path = lake.path(&paths::day_file(table, *date, Shard::WHOLE));
            let meta = lake.store().head(&path).await.unwrap();
            sources.push(Source::of(&meta).unwrap());
        }
        let rows: Vec<RecordBatch> = days.iter().map(|(_, rows)| rows.clone()).collect();
        let rows = arrow::compute::concat_batches(&table.schema(), &rows).unwrap();
        let listed: Vec<&Source> = sources.iter().collect();
        let properties = profile::month(sources_json(&listed).unwrap());
        let bytes = profile::parquet_bytes_with(&rows, properties).unwrap();
        let month_table = table.month_table().unwrap();
        let path = paths::month_file(month_table, days[0].0, Shard::WHOLE);
        lake.put(&path, bytes).await.unwrap();
    }

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
        let (_dir, lake) = crate::test_lake();
        let whole = Shard::WHOLE;
        for (date, complete) in [("2025-06-01", true), ("2025-06-02", false)] {
            write_day(
                &lake,
                Table::DailyUrls,
                day(date),
                whole,
                &daily_urls(day(date), complete),
            )
            .await;
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
        assert_eq!(newest.len(), BATCH_TABLES.len());
        assert!(newest[1].is_some() && newest[0].is_none());
        assert_eq!(days.daily_urls, BTreeSet::from(["2025-06-01".to_owned()]));
        assert!(days.daily.is_empty() && days.files[&Table::Sqi].is_empty());
        assert_eq!(days.aggregates, BTreeSet::from(["2025-06-01".to_owned()]));
        assert!(days.may_have_hours(Table::Aggregates, day("2025-06-01")));
        assert!(!days.may_have_hours(Table::Aggregates, day("2025-06-02")));
        assert!(!days.may_have_hours(Table::UrlCounts, day("2025-06-01")));
        let today = days.today.unwrap();
        assert!(days.may_have_hours(Table::UrlCounts, today));
        assert!(days.may_have_hours(Table::UrlCounts, today - chrono::Days::new(1)));

        // The day is recomputed, now complete; the memo must not hide it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        write_day(
            &lake,
            Table::DailyUrls,
            day("2025-06-02"),
            whole,
            &daily_urls(day("2025-06-02"), true),
        )
        .await;
        let (_, days) = read(&lake, &mut memo).await.unwrap();
        assert_eq!(days.daily_urls.len(), 2);
    }

    /// Item 14: a day split into shards is complete only once every shard
    /// of the split has written its (complete) file: one shard's file alone
    /// would answer the day without the other shards' publishers.
    #[tokio::test]
    async fn a_sharded_day_is_complete_only_with_every_shard() {
        let (_dir, lake) = crate::test_lake();
        let date = day("2025-06-01");
        let shard = |index| Shard { index, count: 3 };
        let mut memo = FooterMemo::default();
        for index in [0, 2] {
            write_day(
                &lake,
                Table::DailyUrls,
                date,
                shard(index),
                &daily_urls(date, true),
            )
            .await;
            let (_, days) = read(&lake, &mut memo).await.unwrap();
            assert!(
                days.daily_urls.is_empty(),
                "shard {index} of 3 made the day complete: {:?}",
                days.daily_urls
            );
        }
        write_day(
            &lake,
            Table::DailyUrls,
            date,
            shard(1),
            &daily_urls(date, true),
        )
        .await;
        let (_, days) = read(&lake, &mut memo).await.unwrap();
        assert_eq!(days.daily_urls, BTreeSet::from(["2025-06-01".to_owned()]));
        // A file from no known split (a stray upload) makes no day complete.
        let copy = lake
            .store()
            .get(&lake.path("daily_urls/dt=2025-06-01/part-00000-of-00003.parquet"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        lake.store()
            .put(
                &lake.path("daily_urls/dt=2025-06-01/part-00003-of-00003.parquet"),
                PutPayload::from_bytes(copy),
            )
            .await
            .unwrap();
        let (_, days) = read(&lake, &mut memo).await.unwrap();
        assert!(days.daily_urls.is_empty(), "{:?}", days.daily_urls);
    }

    fn daily(date: NaiveDate, events: i64) -> RecordBatch {
        RecordBatch::try_new(
            Table::Daily.schema(),
            vec![
                Arc::new(Date32Array::from(vec![
                    arrow::datatypes::Date32Type::from_naive_date(date),
                ])),
                Arc::new(StringArray::from(vec!["pub-a"])),
                Arc::new(StringArray::from(vec![None::<&str>])),
                Arc::new(StringArray::from(vec!["pageview"])),
                Arc::new(StringArray::from(vec!["desktop"])),
                Arc::new(Int64Array::from(vec![events])),
                Arc::new(BooleanArray::from(vec![true])),
            ],
        )
        .unwrap()
    }

    /// A month file answers the days it was merged from while their files
    /// are the versions it lists; a day recomputed since is read from its own
    /// file, and a day the merge never saw too.
    #[tokio::test]
    async fn month_files_answer_their_days_until_a_day_is_recomputed() {
        let (_dir, lake) = crate::test_lake();
        let whole = Shard::WHOLE;
        let mut merged = Vec::new();
        for date in ["2025-06-01", "2025-06-02"] {
            write_day(&lake, Table::Daily, day(date), whole, &daily(day(date), 1)).await;
            merged.push((day(date), daily(day(date), 1)));
        }
        write_month(&lake, Table::Daily, &merged).await;
        write_day(
            &lake,
            Table::Daily,
            day("2025-06-03"),
            whole,
            &daily(day("2025-06-03"), 1),
        )
        .await;
        let asked: Vec<String> = ["2025-06-01", "2025-06-02", "2025-06-03"]
            .map(str::to_owned)
            .to_vec();
        let mut memo = FooterMemo::default();
        let (_, days) = read(&lake, &mut memo).await.unwrap();
        let plan = days.day_files(Table::Daily, &asked);
        assert_eq!(plan.merged_days, [day("2025-06-01"), day("2025-06-02")]);
        assert_eq!(plan.months.len(), 1);
        assert_eq!(plan.days.len(), 1, "the day after the merge: {plan:?}");
        assert!(days.day_files(Table::DailyUrls, &asked).months.is_empty());

        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        write_day(
            &lake,
            Table::Daily,
            day("2025-06-02"),
            whole,
            &daily(day("2025-06-02"), 22),
        )
        .await;
        let (_, days) = read(&lake, &mut memo).await.unwrap();
        let plan = days.day_files(Table::Daily, &asked);
        assert_eq!(plan.merged_days, [day("2025-06-01")]);
        assert_eq!(plan.days.len(), 2, "{plan:?}");
    }

    #[test]
    fn months_come_from_the_month_partition() {
        assert_eq!(
            partition_of(
                &Path::from("monthly/month=2025-06/part-00000.parquet"),
                true
            ),
            Some("2025-06".to_owned())
        );
        assert_eq!(
            partition_of(&Path::from("monthly/month=2025-13/x.parquet"), true),
            None
        );
    }
}
