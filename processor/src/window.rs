//! Event-time hourly windows: what one partition has read in its open range.
//!
//! A [`PartitionBuffer`] is the unit of a write: it covers a contiguous offset
//! range of one partition, so the files it produces can be named after that
//! range. Deduplication and lateness are decided before a record gets here.

use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Int32Builder, MapBuilder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::error::ArrowError;
use sqi_schemas::event::EventType;
use sqi_schemas::lake::{Table, window_start};
use sqi_schemas::record::{Device, RecordView};

/// A publisher or URL, stored once per range in its [`Names`]: keys repeat
/// them, and a range's keys are looked up once per event.
pub type Name = usize;

/// The strings a range's keys refer to, each held once.
#[derive(Debug, Default)]
pub struct Names {
    index: HashMap<Arc<str>, Name>,
    names: Vec<Arc<str>>,
}

impl Names {
    /// The name of `text`, adding it on first sight.
    pub fn intern(&mut self, text: &str) -> Name {
        if let Some(name) = self.index.get(text) {
            return *name;
        }
        let name = self.names.len();
        let text: Arc<str> = Arc::from(text);
        self.names.push(text.clone());
        let _ = self.index.insert(text, name);
        name
    }

    /// The string of `name` (empty for a name from another range, which the
    /// buffer never hands out).
    pub fn get(&self, name: Name) -> &str {
        self.names.get(name).map_or("", |text| text)
    }
}

/// The key of one `aggregates` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AggregateKey {
    /// Hour window start, epoch ms.
    pub window_start: i64,
    /// Publisher id, in the buffer's [`Names`].
    pub publisher: Name,
    /// Channel slug from the catalog, `None` for pageviews.
    pub channel: Option<&'static str>,
    /// Event type.
    pub event_type: EventType,
    /// Device class.
    pub device: Device,
}

/// The key of one `url_counts` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UrlKey {
    /// Hour window start, epoch ms.
    pub window_start: i64,
    /// Publisher id, in the buffer's [`Names`].
    pub publisher: Name,
    /// Page URL, in the buffer's [`Names`].
    pub url: Name,
    /// Event type.
    pub event_type: EventType,
    /// Channel slug from the catalog, `None` for pageviews.
    pub channel: Option<&'static str>,
}

/// Everything read from one partition in its open range.
#[derive(Debug)]
pub struct PartitionBuffer {
    /// When the range was opened (for the rotation deadline).
    pub opened_at: Instant,
    /// Bytes of the records read, to estimate the `events` file size.
    pub record_bytes: u64,
    /// The first offset this buffer covers.
    pub start_offset: i64,
    /// The last offset this buffer covers (inclusive).
    pub end_offset: i64,
    /// The publishers and URLs the keys name.
    pub names: Names,
    /// Additive counts per aggregate key.
    pub aggregates: HashMap<AggregateKey, i64>,
    /// Additive counts per URL key.
    pub url_counts: HashMap<UrlKey, i64>,
    /// Raw events by hour window, first occurrence of each `event_id` only,
    /// in offset order.
    pub events: BTreeMap<i64, EventColumns>,
    /// Events held, all hours together.
    event_count: usize,
}

/// One hour's raw events, held as the columns of the `events` table from the
/// moment they are read. A record's values are copied into shared buffers and
/// the record freed, so a range holds about the bytes of its values instead
/// of an allocation per field and per property: with 25 s ranges the owned
/// records made the processor's RSS swing by half again between flushes.
#[derive(Debug)]
pub struct EventColumns {
    version: Int32Builder,
    event_id: StringBuilder,
    publisher: StringBuilder,
    event_type: StringBuilder,
    channel: StringBuilder,
    url: StringBuilder,
    referrer: StringBuilder,
    visitor: StringBuilder,
    ts: TimestampMillisecondBuilder,
    received_at: TimestampMillisecondBuilder,
    device: StringBuilder,
    ip_prefix: StringBuilder,
    props: MapBuilder<StringBuilder, StringBuilder>,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            version: Int32Builder::new(),
            event_id: StringBuilder::new(),
            publisher: StringBuilder::new(),
            event_type: StringBuilder::new(),
            channel: StringBuilder::new(),
            url: StringBuilder::new(),
            referrer: StringBuilder::new(),
            visitor: StringBuilder::new(),
            ts: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            received_at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            device: StringBuilder::new(),
            ip_prefix: StringBuilder::new(),
            props: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
        }
    }
}

impl EventColumns {
    fn push(&mut self, record: &RecordView<'_>) -> Result<(), ArrowError> {
        self.version.append_value(i32::from(record.v));
        self.event_id.append_value(&record.event_id);
        self.publisher.append_value(&record.publisher);
        self.event_type.append_value(record.event_type.as_str());
        self.channel.append_option(record.channel());
        self.url.append_value(&record.url);
        self.referrer.append_option(record.referrer.as_deref());
        self.visitor.append_option(record.visitor.as_deref());
        self.ts.append_value(record.ts);
        self.received_at.append_value(record.received_at);
        self.device.append_value(record.device.as_str());
        self.ip_prefix.append_option(record.ip_prefix.as_deref());
        for (key, value) in &record.props {
            self.props.keys().append_value(key.as_str());
            self.props.values().append_value(value.as_str());
        }
        self.props.append(true)
    }

    /// The hour's rows as one batch of the `events` schema, in read order.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Table::Events.schema(),
            vec![
                Arc::new(self.version.finish()),
                Arc::new(self.event_id.finish()),
                Arc::new(self.publisher.finish()),
                Arc::new(self.event_type.finish()),
                Arc::new(self.channel.finish()),
                Arc::new(self.url.finish()),
                Arc::new(self.referrer.finish()),
                Arc::new(self.visitor.finish()),
                Arc::new(self.ts.finish()),
                Arc::new(self.received_at.finish()),
                Arc::new(self.device.finish()),
                Arc::new(self.ip_prefix.finish()),
                Arc::new(self.props.finish()),
            ],
        )
    }
}

impl PartitionBuffer {
    /// An empty buffer starting at `offset`.
    pub fn new(offset: i64) -> Self {
        Self {
            opened_at: Instant::now(),
            record_bytes: 0,
            start_offset: offset,
            end_offset: offset,
            names: Names::default(),
            aggregates: HashMap::default(),
            url_counts: HashMap::default(),
            events: BTreeMap::new(),
            event_count: 0,
        }
    }

    /// Marks `offset` as read without a new event (a repeat, or a record sent
    /// to the dead-letter topic).
    pub fn skip(&mut self, offset: i64, bytes: usize) {
        self.end_offset = self.end_offset.max(offset);
        self.record_bytes += bytes as u64;
    }

    /// Adds one new event read at `offset`. The one error arrow reports here
    /// is the props map's keys and values out of step, which pairwise appends
    /// rule out; the caller then dead-letters the record. (A column nearing
    /// arrow's 2 GiB offsets is ruled out by `--target-file-bytes` closing the
    /// range first.)
    pub fn add(
        &mut self,
        offset: i64,
        bytes: usize,
        record: &RecordView<'_>,
    ) -> Result<(), ArrowError> {
        let window = window_start(record.ts);
        self.events.entry(window).or_default().push(record)?;
        self.skip(offset, bytes);
        self.event_count += 1;
        let publisher = self.names.intern(&record.publisher);
        let url = self.names.intern(&record.url);
        *self
            .aggregates
            .entry(AggregateKey {
                window_start: window,
                publisher,
                channel: record.channel(),
                event_type: record.event_type,
                device: record.device,
            })
            .or_insert(0) += 1;
        *self
            .url_counts
            .entry(UrlKey {
                window_start: window,
                publisher,
                url,
                event_type: record.event_type,
                channel: record.channel(),
            })
            .or_insert(0) += 1;
        Ok(())
    }

    /// Records covered, whether counted or not.
    pub fn records(&self) -> u64 {
        u64::try_from(self.end_offset - self.start_offset + 1).unwrap_or(0)
    }

    /// Events held (deduplicated).
    pub fn len(&self) -> usize {
        self.event_count
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.event_count == 0
    }
}

// Test code only: an unwrap or expect here fails the test with its cause,
// which is the point (clippy.toml allows them in tests).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Array, TimestampMillisecondArray};
    use sqi_schemas::record::EventRecord;

    /// A share from `pub-1` to facebook; other modules' tests use it too.
    /// `id` is the last group of a UUID (`a` is `00000000-0000-0000-0000-00000000000a`).
    pub(crate) fn record(id: &str, ts: i64) -> EventRecord {
        EventRecord {
            v: 1,
            event_id: format!("00000000-0000-0000-0000-{id:0>12}"),
            publisher: "pub-1".into(),
            event_type: EventType::Share,
            channel: Some("facebook".into()),
            url: "https://e.com/".into(),
            referrer: None,
            visitor: None,
            ts,
            received_at: ts,
            device: Device::Desktop,
            ip_prefix: None,
            props: BTreeMap::new(),
        }
    }

    #[test]
    fn hours_split_and_skips_extend_the_range() {
        let mut buffer = PartitionBuffer::new(10);
        buffer
            .add(10, 100, &record("a", 1_000).as_view().expect("valid"))
            .expect("buffered");
        buffer.skip(11, 100);
        buffer
            .add(
                12,
                100,
                &record("b", 3_600_000 + 5).as_view().expect("valid"),
            )
            .expect("buffered");
        buffer.skip(13, 100);
        assert_eq!(buffer.len(), 2);
        assert_eq!((buffer.start_offset, buffer.end_offset), (10, 13));
        assert_eq!((buffer.records(), buffer.record_bytes), (4, 400));
        let mut windows: Vec<i64> = buffer.aggregates.keys().map(|k| k.window_start).collect();
        windows.sort_unstable();
        assert_eq!(windows, vec![0, 3_600_000]);
        assert_eq!(buffer.aggregates.values().sum::<i64>(), 2);
        let hours: Vec<(i64, usize)> = buffer
            .events
            .iter_mut()
            .map(|(hour, columns)| (*hour, columns.finish().expect("events batch").num_rows()))
            .collect();
        assert_eq!(hours, vec![(0, 1), (3_600_000, 1)]);
    }

    #[test]
    fn held_columns_keep_every_field_of_the_record() {
        let mut buffer = PartitionBuffer::new(0);
        let mut full = record("a", 1_000);
        full.referrer = Some("https://r.example/".into());
        full.visitor = Some("v-1".into());
        full.ip_prefix = Some("203.0.113.0".into());
        full.props = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let mut pageview = record("b", 2_000);
        pageview.event_type = EventType::Pageview;
        pageview.channel = None;
        for (offset, event) in [&full, &pageview].into_iter().enumerate() {
            buffer
                .add(offset as i64, 100, &event.as_view().expect("valid"))
                .expect("buffered");
        }
        let batch = buffer
            .events
            .get_mut(&0)
            .expect("hour 0")
            .finish()
            .expect("batch");
        let column = |name: &str| {
            arrow::util::display::ArrayFormatter::try_new(
                batch.column_by_name(name).expect(name).as_ref(),
                &arrow::util::display::FormatOptions::default().with_null("null"),
            )
            .expect("formatter")
        };
        let row = |i: usize| {
            [
                "event_id",
                "type",
                "channel",
                "referrer",
                "visitor",
                "ip_prefix",
                "props",
            ]
            .map(|name| column(name).value(i).to_string())
        };
        assert_eq!(
            row(0),
            [
                "00000000-0000-0000-0000-00000000000a",
                "share",
                "facebook",
                "https://r.example/",
                "v-1",
                "203.0.113.0",
                "{k: v}"
            ]
        );
        assert_eq!(
            row(1),
            [
                "00000000-0000-0000-0000-00000000000b",
                "pageview",
                "null",
                "null",
                "null",
                "null",
                "{}"
            ]
        );
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
            .expect("ts");
        assert_eq!(ts.values().to_vec(), vec![1_000, 2_000]);
    }
}
