//! The lake (`CONTRACTS.md` §2), the one place its contract is written: its
//! tables and their Arrow schemas (here), every path in it ([`paths`]), how
//! each kind of file is encoded ([`profile`]), how files are put, listed and
//! their footers read ([`files`]), typed access to the `publishers`
//! dimension ([`publishers`]), and how a lake URL becomes an object store.
//!
//! Every writer and reader goes through [`Lake`] so that `s3://bucket/prefix`,
//! `file:///path` and `memory://` behave alike; tests use the last two. Times
//! are UTC and stored as Parquet `TIMESTAMP(MILLIS, UTC)`; `dt`/`hour` live only
//! in paths (Hive style), never as file columns.
//!
//! Which role writes which prefix is not this module's business (see
//! `ARCHITECTURE.md`): it knows the layout, not the roles.

pub mod files;
pub mod paths;
pub mod profile;
pub mod publishers;

pub use paths::{day_partition, hour_partition, month_partition};

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::{Error, Result};

/// The lake's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Raw events, deduplicated by `event_id`; written by the processor.
    Events,
    /// Additive hourly counts per publisher, channel, event type and device; processor.
    Aggregates,
    /// Additive hourly counts per URL; processor.
    UrlCounts,
    /// The publisher dimension; `sqi publishers import` or the demo.
    Publishers,
    /// One day's totals; the batch job.
    Daily,
    /// One day's totals per URL (from `url_counts`); the batch job.
    DailyUrls,
    /// One day's SQI per publisher; the batch job.
    Sqi,
    /// A month of `daily` rows in one file per shard, sorted by publisher then
    /// date, so that a month of one publisher is a few adjacent rows; the batch job.
    Monthly,
    /// A month of `daily_urls` rows, laid out as `monthly`; the batch job.
    MonthlyUrls,
    /// One day's counts per publisher and UTC hour (channel summed away),
    /// sorted by publisher, so that local days in any timezone can be cut
    /// from whole UTC days; the batch job.
    DailyHours,
    /// A month of `daily_hours` rows, laid out as `monthly`; the batch job.
    MonthlyHours,
    /// Every publisher seen in `aggregates` up to a day, with the first day
    /// it was seen, sorted by publisher: the SQI's first day without
    /// rereading the whole history; the batch job, one partition a day.
    FirstSeen,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 12] = [
        Table::Events,
        Table::Aggregates,
        Table::UrlCounts,
        Table::Publishers,
        Table::Daily,
        Table::DailyUrls,
        Table::Sqi,
        Table::Monthly,
        Table::MonthlyUrls,
        Table::DailyHours,
        Table::MonthlyHours,
        Table::FirstSeen,
    ];

    /// The prefix under the lake root, without a trailing slash.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Aggregates => "aggregates",
            Self::UrlCounts => "url_counts",
            Self::Publishers => "publishers",
            Self::Daily => "daily",
            Self::DailyUrls => "daily_urls",
            Self::Sqi => "sqi",
            Self::Monthly => "monthly",
            Self::MonthlyUrls => "monthly_urls",
            Self::DailyHours => "daily_hours",
            Self::MonthlyHours => "monthly_hours",
            Self::FirstSeen => "first_seen",
        }
    }

    /// Hive partition columns encoded in paths, outermost first.
    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Self::Events | Self::Aggregates | Self::UrlCounts => &["dt", "hour"],
            Self::Daily | Self::DailyUrls | Self::DailyHours | Self::Sqi | Self::FirstSeen => {
                &["dt"]
            }
            Self::Monthly | Self::MonthlyUrls | Self::MonthlyHours => &["month"],
            Self::Publishers => &[],
        }
    }

    /// The month table a day table's days are merged into (`daily` →
    /// `monthly`, ...), if it has one.
    pub fn month_table(self) -> Option<Table> {
        match self {
            Self::Daily => Some(Self::Monthly),
            Self::DailyUrls => Some(Self::MonthlyUrls),
            Self::DailyHours => Some(Self::MonthlyHours),
            _ => None,
        }
    }

    /// The Arrow schema of the table's files (partition columns excluded).
    pub fn schema(self) -> SchemaRef {
        match self {
            Self::Events => EVENTS.clone(),
            Self::Aggregates => AGGREGATES.clone(),
            Self::UrlCounts => URL_COUNTS.clone(),
            Self::Publishers => PUBLISHERS.clone(),
            Self::Daily | Self::Monthly => DAILY.clone(),
            Self::DailyUrls | Self::MonthlyUrls => DAILY_URLS.clone(),
            Self::DailyHours | Self::MonthlyHours => DAILY_HOURS.clone(),
            Self::Sqi => SQI.clone(),
            Self::FirstSeen => FIRST_SEEN.clone(),
        }
    }
}

/// The column of every batch table saying whether the day was complete
/// (every hour marked by the processor) when it was computed.
pub const COMPLETE: &str = "complete";

/// The timestamp type of every lake time column.
pub fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

/// The Arrow type of `events.props`: a map of string to string, in the
/// layout Arrow's `MapBuilder` produces (`entries`/`keys`/`values`).
pub fn props_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("v", DataType::Int32, false),
        utf8("event_id", false),
        utf8("publisher", false),
        utf8("type", false),
        utf8("channel", true),
        utf8("url", false),
        utf8("referrer", true),
        utf8("visitor", true),
        Field::new("ts", utc_millis(), false),
        Field::new("received_at", utc_millis(), false),
        utf8("device", false),
        utf8("ip_prefix", true),
        Field::new("props", props_type(), false),
    ]))
});

static AGGREGATES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", utc_millis(), false),
        utf8("publisher", false),
        utf8("channel", true),
        utf8("event_type", false),
        utf8("device", false),
        int64("events"),
    ]))
});

static URL_COUNTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", utc_millis(), false),
        utf8("publisher", false),
        utf8("url", false),
        utf8("event_type", false),
        utf8("channel", true),
        int64("events"),
    ]))
});

static PUBLISHERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("publisher", false),
        utf8("domain", true),
        utf8("category", true),
        Field::new("created_at", utc_millis(), true),
    ]))
});

static DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        utf8("publisher", false),
        utf8("channel", true),
        utf8("event_type", false),
        utf8("device", false),
        int64("events"),
        Field::new("complete", DataType::Boolean, false),
    ]))
});

static DAILY_URLS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        utf8("publisher", false),
        utf8("url", false),
        utf8("event_type", false),
        int64("events"),
        Field::new("complete", DataType::Boolean, false),
    ]))
});

static DAILY_HOURS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        Field::new("window_start", utc_millis(), false),
        utf8("publisher", false),
        utf8("event_type", false),
        utf8("device", false),
        int64("events"),
        Field::new("complete", DataType::Boolean, false),
    ]))
});

static FIRST_SEEN: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("publisher", false),
        Field::new("first_day", DataType::Date32, false),
        Field::new("complete", DataType::Boolean, false),
    ]))
});

static SQI: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        utf8("publisher", false),
        utf8("category", false),
        utf8("peer_group", true),
        Field::new("peer_count", DataType::Int64, true),
        int64("pageviews"),
        int64("shares"),
        int64("clickbacks"),
        Field::new("share_rate", DataType::Float64, true),
        Field::new("clickback_rate", DataType::Float64, true),
        Field::new("social_traffic_ratio", DataType::Float64, true),
        Field::new("score_z", DataType::Float64, true),
        Field::new("sqi", DataType::Int32, true),
        utf8("reason", true),
        Field::new("provisional", DataType::Boolean, false),
        Field::new("sqi_version", DataType::Int32, false),
        Field::new("complete", DataType::Boolean, false),
    ]))
});

/// Milliseconds in one hour window.
pub const HOUR_MS: i64 = 3_600_000;

/// The start of the hour window holding `ts_ms`.
pub fn window_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// How to reach an S3-compatible server. Credentials and region come from the
/// standard `AWS_*` variables unless given here (tests pass them explicitly
/// rather than mutating the process environment).
#[derive(Debug, Clone, Default)]
pub struct LakeOptions {
    /// An S3-compatible endpoint (`SQI_S3_ENDPOINT`), e.g. a moto server.
    pub s3_endpoint: Option<String>,
    /// Extra object_store S3 options, as `aws_*` keys (`aws_access_key_id`, ...).
    pub s3_options: Vec<(String, String)>,
}

/// An opened lake: an object store plus the root path inside it.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    url: Url,
    root: Path,
}

impl Lake {
    /// Opens `s3://bucket/prefix`, `file:///absolute/path` or `memory://`.
    pub fn open(url: &str, options: &LakeOptions) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidLakeUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if !parsed.path().ends_with('/') {
            let path = format!("{}/", parsed.path());
            parsed.set_path(&path);
        }
        let store_error = |source| Error::ObjectStore {
            url: url.to_owned(),
            source,
        };
        let (store, root): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| invalid("an s3 URL needs a bucket: s3://bucket/prefix"))?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &options.s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                for (key, value) in &options.s3_options {
                    let key: AmazonS3ConfigKey = key.parse().map_err(store_error)?;
                    builder = builder.with_config(key, value);
                }
                let store = builder.build().map_err(store_error)?;
                (Arc::new(store), Path::from(parsed.path()))
            }
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| invalid("a file URL needs an absolute path: file:///path"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| invalid(&format!("cannot create {}: {e}", dir.display())))?;
                let root = Path::from_filesystem_path(&dir)
                    .map_err(|e| invalid(&format!("unusable path: {e}")))?;
                (Arc::new(LocalFileSystem::new()), root)
            }
            "memory" => (Arc::new(InMemory::new()), Path::from(parsed.path())),
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme `{other}`; use s3://, file:// or memory://"
                )));
            }
        };
        Ok(Self {
            store,
            url: parsed,
            root,
        })
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The lake's root URL, always with a trailing slash.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL that identifies the object store itself (scheme and bucket), as
    /// DataFusion's object store registry wants it.
    pub fn store_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("/");
        url
    }

    /// The store path of `relative` (e.g. `aggregates/dt=…/x.parquet`) under the root.
    pub fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    /// The URL of a table's directory, with a trailing slash, for DataFusion.
    pub fn table_url(&self, table: Table) -> String {
        format!("{}{}/", self.url, table.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_hive_style_utc() {
        // 2024-03-10T07:59:59.999Z
        let ts = 1_710_057_599_999;
        assert_eq!(hour_partition(window_start(ts)), "dt=2024-03-10/hour=07");
        assert_eq!(window_start(ts) % HOUR_MS, 0);
        assert_eq!(window_start(-1), -HOUR_MS);
    }

    #[test]
    fn lake_urls_resolve_paths_under_their_root() {
        let lake = Lake::open(
            "s3://bucket/some/prefix",
            &LakeOptions {
                s3_endpoint: Some("http://127.0.0.1:1".into()),
                s3_options: vec![("aws_region".into(), "us-east-1".into())],
            },
        )
        .unwrap();
        assert_eq!(
            lake.path("aggregates/dt=x/a.parquet").as_ref(),
            "some/prefix/aggregates/dt=x/a.parquet"
        );
        assert_eq!(lake.table_url(Table::Sqi), "s3://bucket/some/prefix/sqi/");
        assert_eq!(lake.store_url().as_str(), "s3://bucket/");
        let memory = Lake::open("memory://", &LakeOptions::default()).unwrap();
        assert_eq!(memory.path("a/b").as_ref(), "a/b");
    }

    #[test]
    fn bad_lake_urls_say_why() {
        for url in ["not a url", "ftp://x/y", "s3:///nobucket"] {
            let error = Lake::open(url, &LakeOptions::default()).unwrap_err();
            assert!(
                matches!(error, Error::InvalidLakeUrl { .. }),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn every_table_has_a_schema_and_a_prefix() {
        for table in Table::ALL {
            assert!(!table.schema().fields().is_empty());
            assert!(!table.prefix().contains('/'));
        }
    }
}
