//! The optional publisher allowlist: from a file, or from the lake's
//! `publishers` table, refreshed in the background. In `observe` mode unknown
//! publishers are counted; in `enforce` mode their events are rejected.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqi_schemas::lake::Lake;

/// What an allowlist does with an unknown publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AllowlistMode {
    /// No allowlist.
    Off,
    /// Accept, and count in `sqi_ingest_unknown_publisher_events_total`.
    Observe,
    /// Reject the event with `unknown_publisher`.
    Enforce,
}

/// The set of known publishers, swapped whole on refresh.
#[derive(Debug, Clone)]
pub struct Allowlist {
    mode: AllowlistMode,
    known: Arc<RwLock<Arc<HashSet<String>>>>,
}

/// The verdict on one publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known, or no allowlist.
    Allowed,
    /// Unknown, but observe mode lets it through.
    Observed,
    /// Unknown, and enforce mode rejects it.
    Rejected,
}

impl Allowlist {
    /// An allowlist in `mode` with no publishers yet.
    pub fn new(mode: AllowlistMode) -> Self {
        Self {
            mode,
            known: Arc::new(RwLock::new(Arc::new(HashSet::new()))),
        }
    }

    /// Whether an allowlist is configured at all.
    pub fn is_enabled(&self) -> bool {
        self.mode != AllowlistMode::Off
    }

    /// Replaces the known publishers.
    pub fn replace(&self, publishers: HashSet<String>) {
        if let Ok(mut known) = self.known.write() {
            *known = Arc::new(publishers);
        }
    }

    /// Judges one publisher.
    pub fn check(&self, publisher: &str) -> Verdict {
        if self.mode == AllowlistMode::Off {
            return Verdict::Allowed;
        }
        let known = self
            .known
            .read()
            .map(|k| k.contains(publisher))
            .unwrap_or(true);
        match (known, self.mode) {
            (true, _) | (_, AllowlistMode::Off) => Verdict::Allowed,
            (false, AllowlistMode::Observe) => Verdict::Observed,
            (false, AllowlistMode::Enforce) => Verdict::Rejected,
        }
    }
}

/// Reads publisher ids from a text file: one per line, or a CSV whose first
/// column (or `publisher` column) holds them; `#` starts a comment.
pub fn parse_file(text: &str) -> HashSet<String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut column = 0;
    let mut set = HashSet::new();
    if let Some(first) = lines.next() {
        match first
            .split(',')
            .position(|h| h.trim().eq_ignore_ascii_case("publisher"))
        {
            Some(index) => column = index,
            None => {
                let _ = set.insert(first.split(',').next().unwrap_or("").trim().to_owned());
            }
        }
    }
    for line in lines {
        if let Some(id) = line.split(',').nth(column) {
            let _ = set.insert(id.trim().to_owned());
        }
    }
    set.retain(|id| !id.is_empty());
    set
}

/// Reads the publisher ids from the lake's `publishers` table.
pub async fn load_from_lake(lake: &Lake) -> Result<HashSet<String>, String> {
    let path = lake.path("publishers/publishers.parquet");
    let bytes = lake
        .store()
        .get(&path)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let mut set = HashSet::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let Some(column) = batch.column_by_name("publisher") else {
            return Err("publishers table has no `publisher` column".into());
        };
        let ids = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| e.to_string())?;
        let Some(ids) = arrow::array::AsArray::as_string_opt::<i32>(&ids) else {
            return Err("publishers.publisher is not text".into());
        };
        set.extend(ids.iter().flatten().map(str::to_owned));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_may_be_plain_lists_or_csv() {
        assert_eq!(
            parse_file("# known\npub-1\npub-2\n\n"),
            HashSet::from(["pub-1".into(), "pub-2".into()])
        );
        assert_eq!(
            parse_file("domain,publisher\na.com,pub-a\nb.com,pub-b\n"),
            HashSet::from(["pub-a".into(), "pub-b".into()])
        );
    }

    #[test]
    fn modes_decide_what_happens_to_strangers() {
        let enforce = Allowlist::new(AllowlistMode::Enforce);
        enforce.replace(HashSet::from(["pub-1".to_owned()]));
        assert_eq!(enforce.check("pub-1"), Verdict::Allowed);
        assert_eq!(enforce.check("pub-2"), Verdict::Rejected);
        let observe = Allowlist::new(AllowlistMode::Observe);
        assert_eq!(observe.check("pub-2"), Verdict::Observed);
        assert_eq!(
            Allowlist::new(AllowlistMode::Off).check("x"),
            Verdict::Allowed
        );
    }
}
