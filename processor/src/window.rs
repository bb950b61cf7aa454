//! Event-time hourly windows: what one partition has read in its open range.
//!
//! A [`PartitionBuffer`] is the unit of a write: it covers a contiguous offset
//! range of one partition, so the files it produces can be named after that
//! range. Deduplication and lateness are decided before a record gets here.

use rustc_hash::FxHashMap as HashMap;
use std::time::Instant;

use sqi_schemas::event::EventType;
use sqi_schemas::lake::window_start;
use sqi_schemas::record::{Device, EventRecord};

/// The key of one `aggregates` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey {
    /// Hour window start, epoch ms.
    pub window_start: i64,
    /// Publisher id.
    pub publisher: String,
    /// Channel slug, `None` for pageviews.
    pub channel: Option<String>,
    /// Event type.
    pub event_type: EventType,
    /// Device class.
    pub device: Device,
}

/// The key of one `url_counts` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UrlKey {
    /// Hour window start, epoch ms.
    pub window_start: i64,
    /// Publisher id.
    pub publisher: String,
    /// Page URL.
    pub url: String,
    /// Event type.
    pub event_type: EventType,
    /// Channel slug, `None` for pageviews.
    pub channel: Option<String>,
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
    /// Additive counts per aggregate key.
    pub aggregates: HashMap<AggregateKey, i64>,
    /// Additive counts per URL key.
    pub url_counts: HashMap<UrlKey, i64>,
    /// Raw events, first occurrence of each `event_id` only, in offset order.
    pub events: Vec<EventRecord>,
}

impl PartitionBuffer {
    /// An empty buffer starting at `offset`.
    pub fn new(offset: i64) -> Self {
        Self {
            opened_at: Instant::now(),
            record_bytes: 0,
            start_offset: offset,
            end_offset: offset,
            aggregates: HashMap::default(),
            url_counts: HashMap::default(),
            events: Vec::new(),
        }
    }

    /// Marks `offset` as read without a new event (a repeat, or a record sent
    /// to the dead-letter topic).
    pub fn skip(&mut self, offset: i64, bytes: usize) {
        self.end_offset = self.end_offset.max(offset);
        self.record_bytes += bytes as u64;
    }

    /// Adds one new event read at `offset`.
    pub fn add(&mut self, offset: i64, bytes: usize, record: EventRecord) {
        self.skip(offset, bytes);
        let window = window_start(record.ts);
        *self
            .aggregates
            .entry(AggregateKey {
                window_start: window,
                publisher: record.publisher.clone(),
                channel: record.channel.clone(),
                event_type: record.event_type,
                device: record.device,
            })
            .or_insert(0) += 1;
        *self
            .url_counts
            .entry(UrlKey {
                window_start: window,
                publisher: record.publisher.clone(),
                url: record.url.clone(),
                event_type: record.event_type,
                channel: record.channel.clone(),
            })
            .or_insert(0) += 1;
        self.events.push(record);
    }

    /// Records covered, whether counted or not.
    pub fn records(&self) -> u64 {
        u64::try_from(self.end_offset - self.start_offset + 1).unwrap_or(0)
    }

    /// Events held (deduplicated).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A share from `pub-1` to facebook; other modules' tests use it too.
    pub(crate) fn record(id: &str, ts: i64) -> EventRecord {
        EventRecord {
            v: 1,
            event_id: id.into(),
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
        buffer.add(10, 100, record("a", 1_000));
        buffer.skip(11, 100);
        buffer.add(12, 100, record("b", 3_600_000 + 5));
        buffer.skip(13, 100);
        assert_eq!(buffer.len(), 2);
        assert_eq!((buffer.start_offset, buffer.end_offset), (10, 13));
        assert_eq!((buffer.records(), buffer.record_bytes), (4, 400));
        let mut windows: Vec<i64> = buffer.aggregates.keys().map(|k| k.window_start).collect();
        windows.sort_unstable();
        assert_eq!(windows, vec![0, 3_600_000]);
        assert_eq!(buffer.aggregates.values().sum::<i64>(), 2);
    }
}
