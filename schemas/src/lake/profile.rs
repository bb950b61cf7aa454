//! The Parquet writer profiles of the lake's files: how the processor's
//! hourly files, the batch's day files and the month files merged from them
//! are encoded.
//!
//! A profile is part of the contract as much as a path is: readers rely on
//! its row groups, page index and sort order (the report reads the day and
//! month tables one publisher at a time), and a rewrite of the same rows
//! must give the same bytes. Every profile starts from [`snappy`].

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::Result;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use super::Table;

/// The writer settings every lake file starts from: Snappy, which every reader supports.
pub fn snappy() -> WriterPropertiesBuilder {
    WriterProperties::builder().set_compression(Compression::SNAPPY)
}

/// Encodes one batch as a Parquet file with the plain [`snappy`] settings
/// (the `publishers` file, test fixtures).
pub fn parquet_bytes(batch: &RecordBatch) -> Result<Bytes> {
    parquet_bytes_with(batch, snappy().build())
}

/// Encodes one batch as a Parquet file with `properties`.
pub fn parquet_bytes_with(batch: &RecordBatch, properties: WriterProperties) -> Result<Bytes> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    let _ = writer.close()?;
    Ok(Bytes::from(out))
}

/// The processor's hourly files (`events`, `aggregates`, `url_counts`).
///
/// Snappy, without dictionaries for the columns whose values hardly repeat
/// within a file: every `event_id` is distinct, event times nearly so, and a
/// `url_counts` URL appears only once per event type and channel. Building a
/// dictionary for them hashed and compared every value for nothing (the
/// writer's dictionary was 7% of the processor's CPU in a profile) before the
/// writer gave up on it, and made the files larger.
pub fn hourly(table: Table) -> WriterProperties {
    let unrepeated: &[&str] = match table {
        Table::Events => &["event_id", "ts", "received_at"],
        Table::UrlCounts => &["url"],
        _ => &[],
    };
    unrepeated
        .iter()
        .fold(snappy(), |builder, column| {
            builder.set_column_dictionary_enabled(ColumnPath::from(*column), false)
        })
        .build()
}

/// Rows per row group and per page of the day tables.
const DAY_ROW_GROUP_ROWS: usize = 64 * 1024;
const DAY_PAGE_ROWS: usize = 4 * 1024;
/// Rows per page of `sqi` files, read a row at a time.
const SQI_PAGE_ROWS: usize = 512;

/// The settings the day tables and the month files made from them share.
fn day_builder() -> WriterPropertiesBuilder {
    // Only `publisher` gets statistics per page: the page index of every
    // column would be most of the footer (300 KB of an `sqi` file), and a
    // reader parses it for every question. `publisher` and `url` are plain,
    // not dictionary-encoded: a publisher has a handful of rows, so the
    // dictionary saved little, and reading the one page that holds a
    // publisher meant decoding its row group's whole dictionary (60,000
    // strings) first.
    //
    // Only the few-valued strings are dictionary-encoded at all: a reader of
    // one row decodes each column chunk's whole dictionary page first, and
    // for counts and rates that page held up to 64Ki values (1 MB), most of
    // what reading one publisher's SQI row cost.
    let mut properties = snappy()
        .set_max_row_group_row_count(Some(DAY_ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(DAY_PAGE_ROWS)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled("publisher".into(), EnabledStatistics::Page)
        .set_dictionary_enabled(false);
    for few_valued in [
        "date",
        "channel",
        "event_type",
        "device",
        "category",
        "peer_group",
        "reason",
        "sqi_version",
    ] {
        properties = properties.set_column_dictionary_enabled(few_valued.into(), true);
    }
    properties
}

/// A day table's file (`daily`, `daily_urls`, `daily_hours`, `sqi`). The
/// report reads these one publisher at a time and every day table is sorted
/// by publisher, so small row groups and pages let the footer's statistics
/// and page index skip all but the few rows of that publisher; with 1Mi-row
/// groups a question read a whole column.
pub fn day(table: Table) -> WriterProperties {
    let mut properties = day_builder();
    if table == Table::Sqi {
        // A summary reads one publisher's SQI row, all 17 columns of it: each
        // column's page holding that row is decompressed and decoded, so
        // smaller pages halved the lookup (1.6 to 0.8 ms).
        // The page limit is checked once per write batch.
        properties = properties
            .set_data_page_row_count_limit(SQI_PAGE_ROWS)
            .set_write_batch_size(SQI_PAGE_ROWS);
    }
    properties.build()
}

/// Rows per row group of a month file: a month is 30 day files' rows, so
/// larger groups than a day file's keep its footer small.
const MONTH_ROW_GROUP_ROWS: usize = 1024 * 1024;

/// A month file (`monthly`, `monthly_urls`, `monthly_hours`): the day
/// tables' settings with larger row groups, and `sources`, the JSON list of
/// the day files it was merged from, in its footer under
/// [`SOURCES_KEY`](super::files::SOURCES_KEY).
pub fn month(sources: String) -> WriterProperties {
    day_builder()
        .set_max_row_group_row_count(Some(MONTH_ROW_GROUP_ROWS))
        .set_column_statistics_enabled("publisher".into(), EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            super::files::SOURCES_KEY.to_owned(),
            sources,
        )]))
        .build()
}
