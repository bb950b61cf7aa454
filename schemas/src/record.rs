//! The normalised event as it travels through Kafka (`CONTRACTS.md` §1, "The Kafka record").
//!
//! Ingest builds it with [`normalize`]; the processor reads it back with
//! [`EventRecord::from_json`], which re-checks every rule so that a record
//! written by anything else (an older ingest, a hand-made producer) is held to
//! the same contract and, if it fails, goes to the dead-letter topic with a reason.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::channels;
use crate::event::{EventType, ValidEvent, is_valid_publisher};

/// The schema version carried in every record's `v`.
pub const SCHEMA_VERSION: u8 = 1;

/// The default of how far after receive time (after skew correction) an
/// event time may be before it is clamped: a few minutes covers clocks that
/// skew correction could not fix, while a time hours ahead would move the
/// processor's watermark past every real event.
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// 2000-01-01T00:00:00Z: no honest event or receive time is older. Ingest
/// clamps an older event time to the receive time (a client clock reset to
/// 1970 is common); the processor dead-letters a record with an older time.
pub const EARLIEST_EVENT_TIME_MS: i64 = 946_684_800_000;

/// The `props` key that keeps a clamped event's original time.
pub const ORIGINAL_TS_PROP: &str = "_original_ts";

/// The device class derived from the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// A desktop or laptop browser.
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
    /// A known crawler or automated client.
    Bot,
    /// Anything else, or no user agent.
    Other,
}

impl Device {
    /// The wire and lake spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Bot => "bot",
            Self::Other => "other",
        }
    }
}

/// The Kafka value: one normalised event, JSON-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u8,
    /// The event's id, a hyphenated lower-case UUID.
    pub event_id: String,
    /// The publisher id.
    pub publisher: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The canonical channel slug; null for a pageview.
    pub channel: Option<String>,
    /// The page URL.
    pub url: String,
    /// The referrer.
    pub referrer: Option<String>,
    /// The anonymous visitor id.
    pub visitor: Option<String>,
    /// Event time after skew correction, epoch ms, UTC.
    pub ts: i64,
    /// When ingest received the event, epoch ms, UTC.
    pub received_at: i64,
    /// The device class.
    pub device: Device,
    /// The client IP anonymised to /24 (IPv4) or /48 (IPv6).
    pub ip_prefix: Option<String>,
    /// Free-form properties.
    pub props: BTreeMap<String, String>,
}

/// What ingest knows about a request, applied to each of its events.
#[derive(Debug, Clone)]
pub struct Enrichment {
    /// Server receive time, epoch ms.
    pub received_at: i64,
    /// The batch-level `sent_at`, epoch ms.
    pub batch_sent_at: Option<i64>,
    /// How far after `received_at` an event time may be before it is clamped
    /// (ingest's `--max-future-skew`, by default [`MAX_FUTURE_SKEW_MS`]).
    pub max_future_skew_ms: i64,
    /// The device class of the request's user agent.
    pub device: Device,
    /// The anonymised client IP.
    pub ip_prefix: Option<String>,
}

/// Builds the Kafka record from a valid event: assigns a UUIDv7 when the client
/// sent no id, corrects client clock skew from `sent_at`, and clamps event
/// times more than [`Enrichment::max_future_skew_ms`] ahead, or before
/// [`EARLIEST_EVENT_TIME_MS`], to the receive time, keeping the original in
/// `props`.
pub fn normalize(event: ValidEvent, enrichment: &Enrichment) -> EventRecord {
    let received_at = enrichment.received_at;
    let sent_at = event.sent_at.or(enrichment.batch_sent_at);
    // The client's clock is off by (its sent_at - our receive time); shifting its
    // event time by the same amount puts it on our clock.
    let skew = sent_at.map_or(0, |sent| received_at - sent);
    let mut props = event.props;
    let mut ts = event.ts.map_or(received_at, |t| t.saturating_add(skew));
    let ahead = ts > received_at.saturating_add(enrichment.max_future_skew_ms.max(0));
    if ahead || ts < EARLIEST_EVENT_TIME_MS {
        let original = event.ts.unwrap_or(ts);
        let _ = props.insert(ORIGINAL_TS_PROP.to_owned(), original.to_string());
        ts = received_at;
    }
    EventRecord {
        v: SCHEMA_VERSION,
        event_id: event
            .event_id
            .unwrap_or_else(Uuid::now_v7)
            .hyphenated()
            .to_string(),
        publisher: event.publisher,
        event_type: event.event_type,
        channel: event.channel.map(str::to_owned),
        url: event.url,
        referrer: event.referrer,
        visitor: event.visitor,
        ts,
        received_at,
        device: enrichment.device,
        ip_prefix: enrichment.ip_prefix.clone(),
        props,
    }
}

/// Why a Kafka record cannot be processed; the reason travels to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The value is not JSON of the record's shape.
    #[error("not a v1 event record: {0}")]
    Malformed(String),
    /// The value parses but breaks a rule of the contract.
    #[error("record violates the contract: {0}")]
    Invalid(&'static str),
}

impl EventRecord {
    /// Encodes the record as the Kafka value.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, integers and a string map cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and re-validates a Kafka value.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        RecordView::from_json(bytes).map(|view| view.to_owned_record())
    }

    /// The record as a checked [`RecordView`] borrowing its strings, as the
    /// processor would read it from Kafka.
    pub fn as_view(&self) -> Result<RecordView<'_>, RecordError> {
        fn borrowed(s: &Option<String>) -> Option<Cow<'_, str>> {
            s.as_deref().map(Cow::Borrowed)
        }
        let mut view = RecordView {
            v: self.v,
            event_id: Cow::Borrowed(&self.event_id),
            publisher: Cow::Borrowed(&self.publisher),
            event_type: self.event_type,
            channel: borrowed(&self.channel),
            url: Cow::Borrowed(&self.url),
            referrer: borrowed(&self.referrer),
            visitor: borrowed(&self.visitor),
            ts: self.ts,
            received_at: self.received_at,
            device: self.device,
            ip_prefix: borrowed(&self.ip_prefix),
            props: self
                .props
                .iter()
                .map(|(k, v)| (Text(Cow::Borrowed(k)), Text(Cow::Borrowed(v))))
                .collect(),
            channel_slug: None,
        };
        view.check()?;
        Ok(view)
    }
}

/// A Kafka value decoded in place: its strings borrow the record's bytes
/// (unless a JSON escape forced a copy), so reading a record allocates
/// nothing per field. The processor reads every record through this; it
/// holds the same rules as [`EventRecord::from_json`], which is built on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordView<'a> {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u8,
    /// The event's id.
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    /// The publisher id.
    #[serde(borrow)]
    pub publisher: Cow<'a, str>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The channel as written; [`RecordView::channel`] is the catalog's slug.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    channel: Option<Cow<'a, str>>,
    /// The page URL.
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    /// The referrer.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub referrer: Option<Cow<'a, str>>,
    /// The anonymous visitor id.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub visitor: Option<Cow<'a, str>>,
    /// Event time after skew correction, epoch ms, UTC.
    pub ts: i64,
    /// When ingest received the event, epoch ms, UTC.
    pub received_at: i64,
    /// The device class.
    pub device: Device,
    /// The anonymised client IP.
    #[serde(borrow, default, deserialize_with = "optional_text")]
    pub ip_prefix: Option<Cow<'a, str>>,
    /// Free-form properties, in key order (a repeated key keeps its last value).
    #[serde(borrow)]
    pub props: BTreeMap<Text<'a>, Text<'a>>,
    /// The catalog's slug for `channel`, set by the check.
    #[serde(skip)]
    channel_slug: Option<&'static str>,
}

/// A JSON string that borrows the record's bytes where it can. serde borrows
/// a `Cow<str>` field only when it is the field's whole type, so strings
/// inside an `Option` or a map go through this.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Text<'_> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn optional_text<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Option::<Text<'a>>::deserialize(deserializer).map(|text| text.map(|t| t.0))
}

impl<'a> RecordView<'a> {
    /// Decodes and re-validates a Kafka value, borrowing its bytes.
    pub fn from_json(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let mut view: Self =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        view.check()?;
        Ok(view)
    }

    /// The canonical channel slug from the catalog; `None` for a pageview.
    pub fn channel(&self) -> Option<&'static str> {
        self.channel_slug
    }

    /// The same record, owning its strings.
    pub fn to_owned_record(&self) -> EventRecord {
        let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_owned);
        EventRecord {
            v: self.v,
            event_id: self.event_id.clone().into_owned(),
            publisher: self.publisher.clone().into_owned(),
            event_type: self.event_type,
            channel: owned(&self.channel),
            url: self.url.clone().into_owned(),
            referrer: owned(&self.referrer),
            visitor: owned(&self.visitor),
            ts: self.ts,
            received_at: self.received_at,
            device: self.device,
            ip_prefix: owned(&self.ip_prefix),
            props: self
                .props
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
        }
    }

    fn check(&mut self) -> Result<(), RecordError> {
        if self.v != SCHEMA_VERSION {
            return Err(RecordError::Invalid("unsupported schema version"));
        }
        if Uuid::try_parse(&self.event_id).is_err() {
            return Err(RecordError::Invalid("event_id is not a UUID"));
        }
        if !is_valid_publisher(&self.publisher) {
            return Err(RecordError::Invalid("invalid publisher"));
        }
        self.channel_slug = match (&self.channel, self.event_type.needs_channel()) {
            (None, true) => return Err(RecordError::Invalid("missing channel")),
            (Some(_), false) => return Err(RecordError::Invalid("pageview with a channel")),
            (Some(slug), true) => match channels::resolve(slug) {
                Some(channel) if channel.slug == slug.as_ref() => Some(channel.slug),
                _ => return Err(RecordError::Invalid("channel is not a canonical slug")),
            },
            (None, false) => None,
        };
        if self.ts < 0 || self.received_at < 0 {
            return Err(RecordError::Invalid("negative time"));
        }
        Ok(())
    }
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate;
    use proptest::prelude::*;
    use serde_json::json;

    fn enrichment(received_at: i64, batch_sent_at: Option<i64>) -> Enrichment {
        Enrichment {
            received_at,
            batch_sent_at,
            max_future_skew_ms: MAX_FUTURE_SKEW_MS,
            device: Device::Desktop,
            ip_prefix: Some("203.0.113.0".into()),
        }
    }

    #[test]
    fn a_client_ten_minutes_ahead_is_corrected_by_ten_minutes() {
        let now = 1_700_000_000_000;
        let ahead = now + 600_000;
        let event = validate(&json!({"publisher": "pub-1", "type": "pageview",
            "url": "https://e.com/", "ts": ahead - 5_000, "sent_at": ahead}))
        .unwrap();
        let record = normalize(event, &enrichment(now, None));
        assert_eq!(record.ts, now - 5_000);
    }

    #[test]
    fn batch_sent_at_applies_when_the_event_has_none() {
        let now = 1_700_000_000_000;
        let event = validate(&json!({"publisher": "pub-1", "type": "pageview",
            "url": "https://e.com/", "ts": now - 60_000}))
        .unwrap();
        let record = normalize(event, &enrichment(now, Some(now - 60_000)));
        assert_eq!(record.ts, now);
    }

    /// Item 1: a time hours ahead of receipt is clamped, not only one more
    /// than a day ahead; a time within the bound is kept.
    #[test]
    fn item1_times_more_than_minutes_ahead_are_clamped() {
        let now = 1_700_000_000_000;
        let event = |ts: i64| {
            validate(&json!({"publisher": "pub-1", "type": "pageview",
                "url": "https://e.com/", "ts": ts}))
            .unwrap()
        };
        let record = normalize(event(now + 22 * 3600 * 1000), &enrichment(now, None));
        assert_eq!(record.ts, now);
        let within = now + MAX_FUTURE_SKEW_MS;
        let record = normalize(event(within), &enrichment(now, None));
        assert_eq!(
            (record.ts, record.props.get(ORIGINAL_TS_PROP)),
            (within, None)
        );
    }

    /// Item 1: `ts` and `sent_at` are each checked to lie in 2000..2100, but
    /// the skew correction (`ts + received_at - sent_at`) of a client whose
    /// `sent_at` is decades ahead lands before 2000. Ingest clamps it, rather
    /// than acknowledging an event the processor dead-letters as absurd.
    #[test]
    fn item1_skew_corrected_times_before_2000_are_clamped_and_kept_in_props() {
        let now = 1_700_000_000_000;
        let ts: i64 = 978_307_200_000; // 2001-01-01
        let sent_at: i64 = 3_786_912_000_000; // 2090-01-01
        let event = validate(&json!({"publisher": "pub-1", "type": "pageview",
            "url": "https://e.com/", "ts": ts, "sent_at": sent_at}))
        .unwrap();
        let record = normalize(event, &enrichment(now, None));
        assert_eq!(record.ts, now);
        assert_eq!(record.props.get(ORIGINAL_TS_PROP), Some(&ts.to_string()));
    }

    #[test]
    fn far_future_times_are_clamped_and_kept_in_props() {
        let now = 1_700_000_000_000;
        let future = now + 48 * 3600 * 1000;
        let event = validate(&json!({"publisher": "pub-1", "type": "pageview",
            "url": "https://e.com/", "ts": future}))
        .unwrap();
        let record = normalize(event, &enrichment(now, None));
        assert_eq!(record.ts, now);
        assert_eq!(
            record.props.get(ORIGINAL_TS_PROP),
            Some(&future.to_string())
        );
    }

    #[test]
    fn missing_ids_become_uuid_v7_and_client_ids_are_kept() {
        let event =
            validate(&json!({"publisher": "pub-1", "type": "pageview", "url": "https://e.com/"}))
                .unwrap();
        let record = normalize(event, &enrichment(1, None));
        assert_eq!(
            Uuid::parse_str(&record.event_id).unwrap().get_version_num(),
            7
        );
        let id = "0b6f2a5c-5d43-4b8e-9e71-2c1f7c1a9d10";
        let event = validate(&json!({"publisher": "pub-1", "type": "pageview",
            "url": "https://e.com/", "event_id": id}))
        .unwrap();
        assert_eq!(normalize(event, &enrichment(1, None)).event_id, id);
    }

    #[test]
    fn the_value_has_the_contract_fields() {
        let event =
            validate(&json!({"publisher": "pub-1", "type": "pageview", "url": "https://e.com/"}))
                .unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&normalize(event, &enrichment(1, None)).to_json()).unwrap();
        for key in [
            "v",
            "event_id",
            "publisher",
            "type",
            "channel",
            "url",
            "referrer",
            "visitor",
            "ts",
            "received_at",
            "device",
            "ip_prefix",
            "props",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value["v"], 1);
        assert!(value["channel"].is_null());
    }

    #[test]
    fn records_breaking_the_contract_are_refused() {
        assert!(matches!(
            EventRecord::from_json(b"nope"),
            Err(RecordError::Malformed(_))
        ));
        let event = validate(
            &json!({"publisher": "pub-1", "type": "share", "channel": "fb",
            "url": "https://e.com/"}),
        )
        .unwrap();
        let mut record = normalize(event, &enrichment(1, None));
        assert!(EventRecord::from_json(&record.to_json()).is_ok());
        record.channel = Some("fb".into());
        assert!(matches!(
            EventRecord::from_json(&record.to_json()),
            Err(RecordError::Invalid(_))
        ));
        record.channel = None;
        assert!(EventRecord::from_json(&record.to_json()).is_err());
    }

    #[test]
    fn the_view_borrows_plain_strings_copies_escaped_ones_and_agrees_with_serde() {
        let value = br#"{"v":1,"event_id":"0b6f2a5c-5d43-4b8e-9e71-2c1f7c1a9d10",
            "publisher":"pub-1","type":"share","channel":"facebook",
            "url":"https://e.com/caf\u00e9","referrer":"https://r.example/\"q\"",
            "ts":5,"received_at":6,"device":"mobile","ip_prefix":null,
            "props":{"k\n":"v","a":"1","k\n":"w"}}"#;
        let view = RecordView::from_json(value).unwrap();
        assert!(matches!(view.publisher, Cow::Borrowed(_)));
        assert!(matches!(view.url, Cow::Owned(_)));
        assert_eq!(view.url, "https://e.com/café");
        assert_eq!(view.referrer.as_deref(), Some("https://r.example/\"q\""));
        assert_eq!(
            (view.visitor.as_deref(), view.ip_prefix.as_deref()),
            (None, None)
        );
        assert_eq!(view.channel(), Some("facebook"));
        let props: Vec<(&str, &str)> = view
            .props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(props, vec![("a", "1"), ("k\n", "w")]);
        // Plain serde decoding of the owned record is the reference.
        let reference: EventRecord = serde_json::from_slice(value).unwrap();
        assert_eq!(view.to_owned_record(), reference);
    }

    #[test]
    fn the_view_needs_what_the_owned_record_needs() {
        let full = r#""v":1,"event_id":"0b6f2a5c-5d43-4b8e-9e71-2c1f7c1a9d10","publisher":"pub-1","type":"pageview","url":"https://e.com/","ts":5,"received_at":6,"device":"mobile","props":{}"#;
        assert!(RecordView::from_json(format!("{{{full}}}").as_bytes()).is_ok());
        for field in ["\"url\":\"https://e.com/\",", ",\"props\":{}", "\"ts\":5,"] {
            let without = format!("{{{}}}", full.replacen(field, "", 1));
            assert_ne!(without, format!("{{{full}}}"), "{field} not removed");
            assert!(matches!(
                RecordView::from_json(without.as_bytes()),
                Err(RecordError::Malformed(_))
            ));
            assert!(serde_json::from_str::<EventRecord>(&without).is_err());
        }
        let channel = format!("{{{}}}", full.replace("pageview", "share"));
        assert_eq!(
            RecordView::from_json(channel.as_bytes()),
            Err(RecordError::Invalid("missing channel"))
        );
        let alias = channel.replacen("\"url\"", "\"channel\":\"fb\",\"url\"", 1);
        assert_eq!(
            RecordView::from_json(alias.as_bytes()),
            Err(RecordError::Invalid("channel is not a canonical slug"))
        );
    }

    proptest! {
        #[test]
        fn records_round_trip_through_json(
            publisher in "[A-Za-z0-9_.-]{3,64}",
            ts in 0i64..4_102_444_800_000,
            visitor in proptest::option::of("[a-z0-9]{1,64}"),
            props in prop::collection::btree_map("[a-z]{1,8}", "\\PC{0,16}", 0..16),
            share in any::<bool>(),
        ) {
            let record = EventRecord {
                v: SCHEMA_VERSION,
                event_id: Uuid::new_v4().to_string(),
                publisher,
                event_type: if share { EventType::Share } else { EventType::Pageview },
                channel: share.then(|| "facebook".to_owned()),
                url: "https://example.com/".into(),
                referrer: None,
                visitor,
                ts,
                received_at: ts,
                device: Device::Mobile,
                ip_prefix: None,
                props,
            };
            prop_assert_eq!(EventRecord::from_json(&record.to_json()).unwrap(), record);
        }
    }
}
