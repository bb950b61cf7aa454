//! Every path in the lake, relative to its root: the Hive partitions, the
//! names of the processor's hourly files and of the batch's day and month
//! files (one per shard), the `publishers` file, the completeness markers and
//! the processor's range log.
//!
//! These strings are the public contract (`CONTRACTS.md` §2; analysts and
//! every role find files by them), so each is spelled here once and only
//! here. Nothing in this module does I/O.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use object_store::path::Path;

use super::Table;

/// The `dt=YYYY-MM-DD/hour=HH` partition of an hour window starting at `window_start_ms`.
pub fn hour_partition(window_start_ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(window_start_ms).unwrap_or_default();
    t.format("dt=%Y-%m-%d/hour=%H").to_string()
}

/// The `dt=YYYY-MM-DD` partition of a day.
pub fn day_partition(date: NaiveDate) -> String {
    date.format("dt=%Y-%m-%d").to_string()
}

/// The `month=YYYY-MM` partition of a date's month (`monthly`, `monthly_urls`, `monthly_hours`).
pub fn month_partition(date: NaiveDate) -> String {
    date.format("month=%Y-%m").to_string()
}

/// The name of the processor's file for one offset range of a topic's
/// partition: `{topic}+{partition}+{start:020}-{end:020}.parquet`, the same
/// in every table and hour the range touches.
pub fn hourly_file_name(topic: &str, partition: i32, start: i64, end: i64) -> String {
    format!("{topic}+{partition}+{start:020}-{end:020}.parquet")
}

/// The path of an hourly table's (`events`, `aggregates`, `url_counts`) file
/// `name` in the hour window starting at `window_start_ms`.
pub fn hourly_file(table: Table, window_start_ms: i64, name: &str) -> String {
    format!(
        "{}/{}/{name}",
        table.prefix(),
        hour_partition(window_start_ms)
    )
}

/// The partition directory of a day table (`daily`, `daily_urls`,
/// `daily_hours`, `sqi`) for `date`.
pub fn day_dir(table: Table, date: NaiveDate) -> String {
    format!("{}/{}", table.prefix(), day_partition(date))
}

/// The file `shard` writes in a day table's partition for `date`.
pub fn day_file(table: Table, date: NaiveDate, shard: Shard) -> String {
    format!("{}/{}", day_dir(table, date), shard.file_name())
}

/// The partition directory of a month table (`monthly`, `monthly_urls`,
/// `monthly_hours`) for the month of `month`.
pub fn month_dir(table: Table, month: NaiveDate) -> String {
    format!("{}/{}", table.prefix(), month_partition(month))
}

/// The file `shard` writes in a month table's partition: named like the day files.
pub fn month_file(table: Table, month: NaiveDate, shard: Shard) -> String {
    format!("{}/{}", month_dir(table, month), shard.file_name())
}

/// The `YYYY-MM-DD` of a path's `dt=` partition.
pub fn day_of(path: &Path) -> Option<String> {
    path.parts()
        .find_map(|part| part.as_ref().strip_prefix("dt=").map(str::to_owned))
        .filter(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok())
}

/// The single file the `publishers` dimension lives in, replaced whole.
pub const PUBLISHERS_FILE: &str = "publishers/publishers.parquet";

/// The one file each day's (and month's) output lives in (an unsharded run).
pub const DAY_FILE: &str = "part-00000.parquet";

/// One of `count` shards of a day's batch run; `0/1` is the whole day. A
/// shard's files are named for it, so that a reader knows a day is whole
/// only when every shard of one split has written its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0 (a Kubernetes Indexed Job's completion index).
    pub index: u32,
    /// How many shards the day is split into.
    pub count: u32,
}

impl Shard {
    /// The unsharded run.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// Whether this run covers every category.
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// The file this shard writes in each day partition.
    pub fn file_name(self) -> String {
        if self.is_whole() {
            DAY_FILE.to_owned()
        } else {
            format!("part-{:05}-of-{:05}.parquet", self.index, self.count)
        }
    }

    /// The shard whose run writes the day file `name` (the whole run's
    /// included); `None` for a name no run writes.
    pub fn of_file(name: &str) -> Option<Self> {
        if name == DAY_FILE {
            return Some(Self::WHOLE);
        }
        let (index, count) = name
            .strip_prefix("part-")?
            .strip_suffix(".parquet")?
            .split_once("-of-")?;
        let five_digits = |t: &str| t.len() == 5 && t.bytes().all(|b| b.is_ascii_digit());
        if !five_digits(index) || !five_digits(count) {
            return None;
        }
        let (index, count): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
        (index < count).then_some(Self { index, count })
    }

    /// Whether `name` is written by this run or a sibling shard of the same
    /// split, and so must survive this run's clean-up of stale files.
    pub fn keeps(self, name: &str) -> bool {
        if self.is_whole() {
            return name == DAY_FILE;
        }
        let suffix = format!("-of-{:05}.parquet", self.count);
        name.strip_prefix("part-")
            .and_then(|rest| rest.strip_suffix(&suffix))
            .is_some_and(|index| index.len() == 5 && index.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Whether a day partition's file names are one run's whole output: the
    /// unsharded file alone, or every shard's file of one split. A missing
    /// shard, files of two splits (a re-split half done) or a name no run
    /// writes are not.
    pub fn one_whole_run<S: AsRef<str>>(names: &[S]) -> bool {
        let mut count = None;
        let mut indexes = std::collections::BTreeSet::new();
        for name in names {
            let Some(shard) = Self::of_file(name.as_ref()) else {
                return false;
            };
            if *count.get_or_insert(shard.count) != shard.count {
                return false;
            }
            let _ = indexes.insert(shard.index);
        }
        count.is_some_and(|n| indexes.len() == n as usize)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let usage = || {
            format!("`{text}` is not a shard: write INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")
        };
        let (index, count) = text.split_once('/').ok_or_else(usage)?;
        let index: u32 = index.trim().parse().map_err(|_| usage())?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        if count == 0 || index >= count {
            return Err(usage());
        }
        Ok(Self { index, count })
    }
}

/// The processor's completeness markers, under `_completeness/{topic}/`
/// (what each one means is the processor's `completeness` module).
pub mod completeness {
    use chrono::NaiveDate;
    use object_store::path::Path;

    use super::{day_partition, hour_partition};

    /// The root of the completeness markers.
    pub const PREFIX: &str = "_completeness";

    /// `partitions.json`: how many partitions the topic has.
    pub fn partition_count(topic: &str) -> String {
        format!("{PREFIX}/{topic}/partitions.json")
    }

    /// The directory of every partition's closed-before markers.
    pub fn partitions_dir(topic: &str) -> String {
        format!("{PREFIX}/{topic}/partitions")
    }

    /// The directory of one partition's closed-before markers.
    pub fn partition_dir(topic: &str, partition: i32) -> String {
        format!("{}/p={partition:05}", partitions_dir(topic))
    }

    /// A partition's marker: it has closed every hour ending at or before
    /// `closed_before` (epoch ms).
    pub fn partition_marker(topic: &str, partition: i32, closed_before: i64) -> String {
        format!(
            "{}/{closed_before:020}.json",
            partition_dir(topic, partition)
        )
    }

    /// The partition and closed-before time a partition marker's path
    /// names; `None` for anything else.
    pub fn partition_marker_of(path: &Path) -> Option<(i32, i64)> {
        let parts: Vec<_> = path.parts().collect();
        let [.., dir, file] = parts.as_slice() else {
            return None;
        };
        let partition = dir.as_ref().strip_prefix("p=")?.parse().ok()?;
        let closed = file.as_ref().strip_suffix(".json")?.parse().ok()?;
        Some((partition, closed))
    }

    /// The directory of the topic's hour markers.
    pub fn hours_dir(topic: &str) -> String {
        format!("{PREFIX}/{topic}/hours")
    }

    /// The directory of one day's hour markers (the batch waits for all 24).
    pub fn day_hours_dir(topic: &str, date: NaiveDate) -> String {
        format!("{}/{}", hours_dir(topic), day_partition(date))
    }

    /// The marker of the hour window starting at `window_start`: every
    /// partition has closed it.
    pub fn hour_marker(topic: &str, window_start: i64) -> String {
        format!("{}/{}.json", hours_dir(topic), hour_partition(window_start))
    }
}

/// The processor's range log, under `_processor/{topic}/p={partition:05}/`
/// (what each entry means is the processor's `range_log` module).
pub mod range_log {
    /// The root of the processor's own prefix.
    pub const PREFIX: &str = "_processor";

    /// Where a partition's chain of ranges starts (create-only).
    pub const GENESIS: &str = "genesis.json";

    /// Where a recovery starts listing (overwritten).
    pub const CHECKPOINT: &str = "checkpoint.json";

    /// How a range entry's name ends.
    pub const RANGE_SUFFIX: &str = ".range.json";

    /// What an idle watermark entry's name contains.
    pub const IDLE_INFIX: &str = ".idle-";

    /// One partition's log directory.
    pub fn dir(topic: &str, partition: i32) -> String {
        format!("{PREFIX}/{topic}/p={partition:05}")
    }

    /// The entry claiming the range that starts at `start` (create-only).
    pub fn range_entry(start: i64) -> String {
        format!("{start:020}{RANGE_SUFFIX}")
    }

    /// The entry of a watermark advanced by idleness before `next_offset`.
    pub fn idle_entry(next_offset: i64, watermark: i64) -> String {
        format!("{next_offset:020}{IDLE_INFIX}{:020}.json", watermark.max(0))
    }

    /// The name a listing from offset `from` starts after: entries sort by
    /// their zero-padded offset.
    pub fn listing_offset(from: i64) -> String {
        format!("{from:020}")
    }
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_day_is_whole_when_one_split_has_every_file() {
        assert!(Shard::one_whole_run(&[DAY_FILE]));
        let halves = ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"];
        assert!(Shard::one_whole_run(&halves));
        assert!(!Shard::one_whole_run(&halves[..1]), "a shard missing");
        assert!(
            !Shard::one_whole_run(&[halves[0], halves[1], "part-00000-of-00003.parquet"]),
            "two splits"
        );
        assert!(!Shard::one_whole_run(&[DAY_FILE, "notes.parquet"]));
        assert!(!Shard::one_whole_run::<&str>(&[]));
    }

    #[test]
    fn shards_parse_strictly_and_name_their_files() {
        let shard: Shard = "2/4".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 4 });
        assert_eq!(shard.to_string(), "2/4");
        assert_eq!(shard.file_name(), "part-00002-of-00004.parquet");
        assert_eq!("0/1".parse::<Shard>().unwrap(), Shard::WHOLE);
        assert_eq!(Shard::WHOLE.file_name(), DAY_FILE);
        for bad in ["4/4", "0/0", "-1/4", "1", "a/b", "1/2/3", ""] {
            let error = bad.parse::<Shard>().unwrap_err();
            assert!(error.contains("write INDEX/COUNT"), "{bad}: {error}");
        }
        // The report reads a day's shards back from these names (item 14).
        assert_eq!(Shard::of_file(&shard.file_name()), Some(shard));
        assert_eq!(Shard::of_file(DAY_FILE), Some(Shard::WHOLE));
        for stray in [
            "part-00004-of-00004.parquet",
            "part-0001-of-00004.parquet",
            "part-00001-of-00004.parquet.tmp",
            "part-00001.parquet",
            "x.parquet",
        ] {
            assert_eq!(Shard::of_file(stray), None, "{stray}");
        }
    }

    #[test]
    fn a_shard_keeps_its_siblings_files_and_nothing_else() {
        let shard = Shard { index: 1, count: 4 };
        assert!(shard.keeps("part-00001-of-00004.parquet"));
        assert!(shard.keeps("part-00003-of-00004.parquet"));
        assert!(!shard.keeps("part-00001-of-00002.parquet"));
        assert!(!shard.keeps(DAY_FILE));
        assert!(!shard.keeps("part-x0001-of-00004.parquet"));
        assert!(Shard::WHOLE.keeps(DAY_FILE));
        assert!(!Shard::WHOLE.keeps("part-00000-of-00004.parquet"));
    }

    /// The layout as `CONTRACTS.md` and `ARCHITECTURE.md` spell it: a
    /// change here is a change to what analysts and deployed roles read.
    #[test]
    fn the_paths_are_the_published_layout() {
        let hour = 1_710_054_000_000; // 2024-03-10T07:00Z
        let name = hourly_file_name("share-events", 3, 10, 2_000);
        assert_eq!(
            name,
            "share-events+3+00000000000000000010-00000000000000002000.parquet"
        );
        assert_eq!(
            hourly_file(Table::Aggregates, hour, &name),
            format!("aggregates/dt=2024-03-10/hour=07/{name}")
        );
        let quarter = Shard { index: 1, count: 4 };
        assert_eq!(
            day_file(Table::DailyHours, day("2024-03-10"), Shard::WHOLE),
            "daily_hours/dt=2024-03-10/part-00000.parquet"
        );
        assert_eq!(
            month_file(Table::Monthly, day("2024-03-10"), quarter),
            "monthly/month=2024-03/part-00001-of-00004.parquet"
        );
        assert_eq!(
            completeness::hour_marker("t", hour),
            "_completeness/t/hours/dt=2024-03-10/hour=07.json"
        );
        assert_eq!(
            completeness::day_hours_dir("t", day("2024-03-10")),
            "_completeness/t/hours/dt=2024-03-10"
        );
        assert_eq!(
            completeness::partition_marker("t", 2, 7_200_000),
            "_completeness/t/partitions/p=00002/00000000000007200000.json"
        );
        assert_eq!(
            completeness::partition_marker_of(&Path::from(
                "lake/_completeness/t/partitions/p=00002/00000000000007200000.json"
            )),
            Some((2, 7_200_000))
        );
        assert_eq!(
            completeness::partition_count("t"),
            "_completeness/t/partitions.json"
        );
        assert_eq!(range_log::dir("t", 2), "_processor/t/p=00002");
        assert_eq!(range_log::range_entry(5), "00000000000000000005.range.json");
        assert_eq!(
            range_log::idle_entry(5, -1),
            "00000000000000000005.idle-00000000000000000000.json"
        );
        assert_eq!(PUBLISHERS_FILE, "publishers/publishers.parquet");
    }

    #[test]
    fn days_are_read_back_from_dt_partitions() {
        assert_eq!(
            day_of(&Path::from("lake/daily/dt=2025-06-30/part-00000.parquet")).as_deref(),
            Some("2025-06-30")
        );
        assert_eq!(day_of(&Path::from("daily/dt=yesterday/x.parquet")), None);
        assert_eq!(day_of(&Path::from("daily/x.parquet")), None);
    }
}
