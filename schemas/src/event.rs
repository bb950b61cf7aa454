//! The HTTP event contract (`CONTRACTS.md` §1): body forms, limits, and the
//! per-field rules, each rejection carrying a stable [`ErrorCode`].
//!
//! Parsing is split in two so that one bad event never sinks a batch:
//! [`parse_body`] splits a body into raw events (failing only when the body
//! itself is unusable), then [`validate`] checks each event on its own.
//! Nothing here panics on input; the proptests in this module hold it to that.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::channels;

/// Size and count limits applied to one request. Defaults are the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The body, after decompression, in bytes.
    pub max_body_bytes: usize,
    /// Events in one request.
    pub max_events: usize,
    /// One event's JSON, in bytes.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_events: 500,
            max_event_bytes: 32 * 1024,
        }
    }
}

/// Longest `url` and `referrer`, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest `visitor`, in bytes.
pub const MAX_VISITOR_BYTES: usize = 64;
/// Most entries in `props`.
pub const MAX_PROPS: usize = 16;

/// The three kinds of event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A page was viewed with the widget on it.
    Pageview,
    /// A reader shared the page to a channel.
    Share,
    /// A reader arrived through a shared link.
    Clickback,
}

impl EventType {
    /// The wire and lake spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pageview => "pageview",
            Self::Share => "share",
            Self::Clickback => "clickback",
        }
    }

    /// Parses the wire spelling (exact, lower-case).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pageview" => Some(Self::Pageview),
            "share" => Some(Self::Share),
            "clickback" => Some(Self::Clickback),
            _ => None,
        }
    }

    /// Whether the event must name a channel (`share`, `clickback`) or must not (`pageview`).
    pub fn needs_channel(self) -> bool {
        !matches!(self, Self::Pageview)
    }
}

/// Why a body or an event was refused. The string forms are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// The body is JSON but not one of the three accepted shapes.
    InvalidBody,
    /// The body has no events.
    EmptyBatch,
    /// More events than [`Limits::max_events`].
    TooManyEvents,
    /// One event is larger than [`Limits::max_event_bytes`].
    EventTooLarge,
    /// The event is not a JSON object.
    InvalidEvent,
    /// A required field is absent or null.
    MissingField,
    /// `publisher` breaks its rule.
    InvalidPublisher,
    /// `type` is not one of the three types.
    InvalidType,
    /// `channel` is absent on a share or clickback.
    MissingChannel,
    /// `channel` is present on a pageview.
    UnexpectedChannel,
    /// `channel` is not in the catalog.
    UnknownChannel,
    /// `url` is not an absolute http(s) URL within the size limit.
    InvalidUrl,
    /// `event_id` is not a UUID.
    InvalidEventId,
    /// `ts` or `sent_at` is neither RFC 3339 nor epoch milliseconds in range.
    InvalidTimestamp,
    /// `referrer` is not a string within the size limit.
    InvalidReferrer,
    /// `visitor` is not a string within the size limit.
    InvalidVisitor,
    /// `props` is not an object of string to string within the entry limit.
    InvalidProps,
    /// The publisher is not on the allowlist (enforce mode).
    UnknownPublisher,
    /// The page is not on the publisher's registered domain or a subdomain
    /// of it (allowlist in enforce mode).
    DomainMismatch,
}

impl ErrorCode {
    /// The stable, client-facing code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidBody => "invalid_body",
            Self::EmptyBatch => "empty_batch",
            Self::TooManyEvents => "too_many_events",
            Self::EventTooLarge => "event_too_large",
            Self::InvalidEvent => "invalid_event",
            Self::MissingField => "missing_field",
            Self::InvalidPublisher => "invalid_publisher",
            Self::InvalidType => "invalid_type",
            Self::MissingChannel => "missing_channel",
            Self::UnexpectedChannel => "unexpected_channel",
            Self::UnknownChannel => "unknown_channel",
            Self::InvalidUrl => "invalid_url",
            Self::InvalidEventId => "invalid_event_id",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvalidReferrer => "invalid_referrer",
            Self::InvalidVisitor => "invalid_visitor",
            Self::InvalidProps => "invalid_props",
            Self::UnknownPublisher => "unknown_publisher",
            Self::DomainMismatch => "domain_mismatch",
        }
    }
}

/// A refused body or event: a stable code, a human message, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    /// The stable code.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
    /// The offending field, when there is one.
    pub field: Option<&'static str>,
}

impl EventError {
    fn new(code: ErrorCode, field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field,
        }
    }
}

/// A body split into its events, not yet validated.
#[derive(Debug)]
pub struct Batch<'a> {
    /// The batch-level `sent_at`, epoch ms, when the envelope form gave one.
    pub sent_at: Option<i64>,
    /// Each event's raw JSON.
    pub events: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Whether a JSON object has an `events` key, found without decoding any
/// value (values are skipped, though still checked as JSON) or allocating a key.
struct EnvelopeKeys {
    has_events: bool,
}

impl<'de> Deserialize<'de> for EnvelopeKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IsEvents(bool);
        impl<'de> Deserialize<'de> for IsEvents {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Key;
                impl serde::de::Visitor<'_> for Key {
                    type Value = IsEvents;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<IsEvents, E> {
                        Ok(IsEvents(key == "events"))
                    }
                }
                d.deserialize_str(Key)
            }
        }
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = EnvelopeKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EnvelopeKeys, A::Error> {
                let mut has_events = false;
                while let Some(IsEvents(is_events)) = map.next_key()? {
                    has_events |= is_events;
                    let _: serde::de::IgnoredAny = map.next_value()?;
                }
                Ok(EnvelopeKeys { has_events })
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// Splits a decompressed body into raw events: one object, an array, or
/// `{"sent_at", "events"}`. Fails only when the body as a whole is unusable.
pub fn parse_body<'a>(body: &'a [u8], limits: &Limits) -> Result<Batch<'a>, EventError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| EventError::new(ErrorCode::InvalidJson, None, "body is not UTF-8 JSON"))?;
    let trimmed = text.trim_start();
    let batch = if trimmed.starts_with('[') {
        let events: Vec<&RawValue> = serde_json::from_str(text).map_err(json_error)?;
        Batch {
            sent_at: None,
            events,
        }
    } else if trimmed.starts_with('{') {
        // One pass that checks the JSON and looks at the top-level keys only:
        // a single event is decoded once, by `validate_raw`, not here too.
        let EnvelopeKeys { has_events } = serde_json::from_str(text).map_err(json_error)?;
        if has_events {
            let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
                EventError::new(
                    ErrorCode::InvalidBody,
                    Some("events"),
                    format!("`events` must be an array of event objects: {e}"),
                )
            })?;
            let sent_at = match envelope.sent_at {
                None => None,
                Some(raw) => {
                    let value: Value = serde_json::from_str(raw.get()).map_err(json_error)?;
                    parse_time(&value, "sent_at")?
                }
            };
            Batch {
                sent_at,
                events: envelope.events,
            }
        } else {
            let whole: &RawValue = serde_json::from_str(text).map_err(json_error)?;
            Batch {
                sent_at: None,
                events: vec![whole],
            }
        }
    } else if trimmed.is_empty() {
        return Err(EventError::new(
            ErrorCode::InvalidJson,
            None,
            "body is empty",
        ));
    } else {
        // Valid JSON of the wrong shape gets a shape error, anything else a JSON error.
        return Err(match serde_json::from_str::<Value>(text) {
            Ok(_) => EventError::new(
                ErrorCode::InvalidBody,
                None,
                "body must be an event object, an array of events, or {\"sent_at\", \"events\"}",
            ),
            Err(e) => json_error(e),
        });
    };
    if batch.events.is_empty() {
        return Err(EventError::new(
            ErrorCode::EmptyBatch,
            Some("events"),
            "the batch has no events",
        ));
    }
    if batch.events.len() > limits.max_events {
        return Err(EventError::new(
            ErrorCode::TooManyEvents,
            Some("events"),
            format!(
                "{} events in one request; the limit is {}",
                batch.events.len(),
                limits.max_events
            ),
        ));
    }
    Ok(batch)
}

fn json_error(error: serde_json::Error) -> EventError {
    EventError::new(
        ErrorCode::InvalidJson,
        None,
        format!("body is not valid JSON: {error}"),
    )
}

/// An event that passed every rule, with its channel resolved to the canonical slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEvent {
    /// The client's id, when it sent one.
    pub event_id: Option<Uuid>,
    /// The publisher id.
    pub publisher: String,
    /// The event type.
    pub event_type: EventType,
    /// The canonical channel slug (`None` for a pageview).
    pub channel: Option<&'static str>,
    /// The page URL.
    pub url: String,
    /// The client's event time, epoch ms.
    pub ts: Option<i64>,
    /// The client's send time for this event, epoch ms.
    pub sent_at: Option<i64>,
    /// The referrer.
    pub referrer: Option<String>,
    /// The anonymous visitor id.
    pub visitor: Option<String>,
    /// Free-form properties.
    pub props: BTreeMap<String, String>,
}

/// Validates one raw event from a [`Batch`].
pub fn validate_raw(raw: &RawValue, limits: &Limits) -> Result<ValidEvent, EventError> {
    let size = raw.get().len();
    if size > limits.max_event_bytes {
        return Err(EventError::new(
            ErrorCode::EventTooLarge,
            None,
            format!(
                "event is {size} bytes; the limit is {}",
                limits.max_event_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(json_error)?;
    validate(&value)
}

/// Validates one event object against every field rule of the contract.
pub fn validate(value: &Value) -> Result<ValidEvent, EventError> {
    let Value::Object(object) = value else {
        return Err(EventError::new(
            ErrorCode::InvalidEvent,
            None,
            "an event must be a JSON object",
        ));
    };
    let get = |key: &str| object.get(key).filter(|v| !v.is_null());

    let publisher = required_str(get("publisher"), "publisher")?;
    if !is_valid_publisher(publisher) {
        return Err(EventError::new(
            ErrorCode::InvalidPublisher,
            Some("publisher"),
            "publisher must be 3 to 64 characters of [A-Za-z0-9_.-]",
        ));
    }

    let type_str = required_str(get("type"), "type")?;
    let event_type = EventType::parse(type_str).ok_or_else(|| {
        EventError::new(
            ErrorCode::InvalidType,
            Some("type"),
            "type must be one of pageview, share, clickback",
        )
    })?;

    let channel = match (event_type.needs_channel(), get("channel")) {
        (true, None) => {
            return Err(EventError::new(
                ErrorCode::MissingChannel,
                Some("channel"),
                format!("a {} needs a channel", event_type.as_str()),
            ));
        }
        (false, Some(_)) => {
            return Err(EventError::new(
                ErrorCode::UnexpectedChannel,
                Some("channel"),
                "a pageview has no channel",
            ));
        }
        (false, None) => None,
        (true, Some(value)) => {
            let name = value.as_str().ok_or_else(|| {
                EventError::new(
                    ErrorCode::UnknownChannel,
                    Some("channel"),
                    "channel must be a string",
                )
            })?;
            let channel = channels::resolve(name).ok_or_else(|| {
                EventError::new(
                    ErrorCode::UnknownChannel,
                    Some("channel"),
                    format!("unknown channel `{}`", truncate(name, 64)),
                )
            })?;
            Some(channel.slug)
        }
    };

    let url = required_str(get("url"), "url")?;
    if !is_valid_page_url(url) {
        return Err(EventError::new(
            ErrorCode::InvalidUrl,
            Some("url"),
            format!("url must be an absolute http(s) URL of at most {MAX_URL_BYTES} bytes"),
        ));
    }

    let event_id = match get("event_id") {
        None => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| {
                    EventError::new(
                        ErrorCode::InvalidEventId,
                        Some("event_id"),
                        "event_id must be a UUID",
                    )
                })?,
        ),
    };

    let ts = match get("ts") {
        None => None,
        Some(value) => parse_time(value, "ts")?,
    };
    let sent_at = match get("sent_at") {
        None => None,
        Some(value) => parse_time(value, "sent_at")?,
    };
    let referrer = optional_bounded_str(
        get("referrer"),
        "referrer",
        MAX_URL_BYTES,
        ErrorCode::InvalidReferrer,
    )?;
    let visitor = optional_bounded_str(
        get("visitor"),
        "visitor",
        MAX_VISITOR_BYTES,
        ErrorCode::InvalidVisitor,
    )?;
    let props = match get("props") {
        None => BTreeMap::new(),
        Some(value) => parse_props(value)?,
    };

    Ok(ValidEvent {
        event_id,
        publisher: publisher.to_owned(),
        event_type,
        channel,
        url: url.to_owned(),
        ts,
        sent_at,
        referrer,
        visitor,
        props,
    })
}

/// Whether `s` meets the publisher rule: 3 to 64 of `[A-Za-z0-9_.-]`.
pub fn is_valid_publisher(s: &str) -> bool {
    (3..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_valid_page_url(s: &str) -> bool {
    s.len() <= MAX_URL_BYTES
        && url::Url::parse(s)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false)
}

fn required_str<'v>(value: Option<&'v Value>, field: &'static str) -> Result<&'v str, EventError> {
    match value {
        None => Err(EventError::new(
            ErrorCode::MissingField,
            Some(field),
            format!("`{field}` is required"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EventError::new(
            match field {
                "publisher" => ErrorCode::InvalidPublisher,
                "type" => ErrorCode::InvalidType,
                _ => ErrorCode::InvalidUrl,
            },
            Some(field),
            format!("`{field}` must be a string"),
        )),
    }
}

fn optional_bounded_str(
    value: Option<&Value>,
    field: &'static str,
    max: usize,
    code: ErrorCode,
) -> Result<Option<String>, EventError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(_) => Err(EventError::new(
            code,
            Some(field),
            format!("`{field}` must be a string of at most {max} bytes"),
        )),
    }
}

fn parse_props(value: &Value) -> Result<BTreeMap<String, String>, EventError> {
    let error = || {
        EventError::new(
            ErrorCode::InvalidProps,
            Some("props"),
            format!("props must be an object of string to string with at most {MAX_PROPS} entries"),
        )
    };
    let Value::Object(map) = value else {
        return Err(error());
    };
    if map.len() > MAX_PROPS {
        return Err(error());
    }
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(error()),
        })
        .collect()
}

/// Earliest accepted client time: 2000-01-01T00:00:00Z.
pub const MIN_CLIENT_TIME_MS: i64 = 946_684_800_000;
/// Latest accepted client time: 2100-01-01T00:00:00Z.
pub const MAX_CLIENT_TIME_MS: i64 = 4_102_444_800_000;

/// Parses a client time: an RFC 3339 string or epoch milliseconds, within 2000..2100.
pub fn parse_time(value: &Value, field: &'static str) -> Result<Option<i64>, EventError> {
    let ms = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.floor() as i64)
        }),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    };
    match ms {
        Some(ms) if (MIN_CLIENT_TIME_MS..MAX_CLIENT_TIME_MS).contains(&ms) => Ok(Some(ms)),
        _ => Err(EventError::new(
            ErrorCode::InvalidTimestamp,
            Some(field),
            format!(
                "`{field}` must be an RFC 3339 time or epoch milliseconds between 2000 and 2100"
            ),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The JSON Schema (draft 2020-12) of one HTTP event, built from the same
/// constants the validator uses. `docs/event.schema.json` is this, and a test
/// fails when the two drift apart.
pub fn json_schema() -> Value {
    let mut channels: Vec<&str> = channels::all()
        .iter()
        .flat_map(|c| std::iter::once(c.slug).chain(c.aliases.iter().copied()))
        .collect();
    channels.sort_unstable();
    let time = serde_json::json!({
        "oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": MIN_CLIENT_TIME_MS, "exclusiveMaximum": MAX_CLIENT_TIME_MS,
             "description": "epoch milliseconds"}
        ]
    });
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/sqi-engine/sqi-engine/docs/event.schema.json",
        "title": "SQI Engine share event",
        "description": "One event as POSTed to /v1/events (alone, in an array, or in {\"sent_at\", \"events\"}). Channel names are matched case-insensitively; the enum lists the lower-case slugs and aliases. Unknown fields are ignored.",
        "type": "object",
        "required": ["publisher", "type", "url"],
        "properties": {
            "publisher": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,64}$"},
            "type": {"enum": ["pageview", "share", "clickback"]},
            "channel": {"type": ["string", "null"], "enum": channels.iter().map(|c| Value::from(*c)).chain(std::iter::once(Value::Null)).collect::<Vec<_>>()},
            "url": {"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "maxLength": MAX_URL_BYTES},
            "event_id": {"type": ["string", "null"], "format": "uuid"},
            "ts": time,
            "sent_at": time,
            "referrer": {"type": ["string", "null"], "maxLength": MAX_URL_BYTES},
            "visitor": {"type": ["string", "null"], "maxLength": MAX_VISITOR_BYTES},
            "props": {"type": ["object", "null"], "maxProperties": MAX_PROPS, "additionalProperties": {"type": "string"}}
        },
        "allOf": [
            {
                "if": {"properties": {"type": {"const": "pageview"}}},
                "then": {"properties": {"channel": {"type": "null"}}},
                "else": {"required": ["channel"], "properties": {"channel": {"type": "string"}}}
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;
    use serde_json::json;

    fn ok_event() -> Value {
        json!({"publisher": "pub-1", "type": "share", "channel": "x", "url": "https://example.com/a"})
    }

    fn code_of(value: Value) -> ErrorCode {
        validate(&value).expect_err("must be rejected").code
    }

    #[test]
    fn a_valid_share_resolves_its_channel_alias() {
        let event = validate(&ok_event()).unwrap();
        assert_eq!(event.channel, Some("twitter"));
        assert_eq!(event.event_type, EventType::Share);
    }

    #[test]
    fn every_field_rule_has_its_code() {
        let with = |key: &str, v: Value| {
            let mut e = ok_event();
            e[key] = v;
            e
        };
        let without = |key: &str| {
            let mut e = ok_event();
            e.as_object_mut().unwrap().remove(key);
            e
        };
        assert_eq!(code_of(json!(5)), ErrorCode::InvalidEvent);
        assert_eq!(code_of(without("publisher")), ErrorCode::MissingField);
        assert_eq!(
            code_of(with("publisher", json!("ab"))),
            ErrorCode::InvalidPublisher
        );
        assert_eq!(
            code_of(with("publisher", json!("a".repeat(65)))),
            ErrorCode::InvalidPublisher
        );
        assert_eq!(
            code_of(with("publisher", json!("bad pub"))),
            ErrorCode::InvalidPublisher
        );
        assert_eq!(
            code_of(with("publisher", json!(12345))),
            ErrorCode::InvalidPublisher
        );
        assert_eq!(code_of(without("type")), ErrorCode::MissingField);
        assert_eq!(code_of(with("type", json!("like"))), ErrorCode::InvalidType);
        assert_eq!(code_of(without("channel")), ErrorCode::MissingChannel);
        assert_eq!(
            code_of(with("channel", json!("myface"))),
            ErrorCode::UnknownChannel
        );
        assert_eq!(
            code_of(
                json!({"publisher": "pub-1", "type": "pageview", "channel": "x", "url": "https://e.com/"})
            ),
            ErrorCode::UnexpectedChannel
        );
        assert_eq!(code_of(without("url")), ErrorCode::MissingField);
        assert_eq!(
            code_of(with("url", json!("/relative"))),
            ErrorCode::InvalidUrl
        );
        assert_eq!(
            code_of(with("url", json!("ftp://e.com/x"))),
            ErrorCode::InvalidUrl
        );
        let long_url = format!("https://e.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(code_of(with("url", json!(long_url))), ErrorCode::InvalidUrl);
        assert_eq!(
            code_of(with("event_id", json!("nope"))),
            ErrorCode::InvalidEventId
        );
        assert_eq!(
            code_of(with("ts", json!("yesterday"))),
            ErrorCode::InvalidTimestamp
        );
        assert_eq!(code_of(with("ts", json!(5))), ErrorCode::InvalidTimestamp);
        assert_eq!(
            code_of(with("sent_at", json!(true))),
            ErrorCode::InvalidTimestamp
        );
        assert_eq!(
            code_of(with("referrer", json!(7))),
            ErrorCode::InvalidReferrer
        );
        assert_eq!(
            code_of(with("visitor", json!("v".repeat(65)))),
            ErrorCode::InvalidVisitor
        );
        assert_eq!(
            code_of(with("props", json!({"a": 1}))),
            ErrorCode::InvalidProps
        );
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(
            code_of(with("props", Value::Object(many))),
            ErrorCode::InvalidProps
        );
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let mut e = ok_event();
        e["event_id"] = Value::Null;
        e["ts"] = Value::Null;
        e["props"] = Value::Null;
        assert!(validate(&e).is_ok());
        let pageview = json!({"publisher": "pub-1", "type": "pageview", "channel": null, "url": "http://e.com/"});
        assert!(validate(&pageview).is_ok());
    }

    #[test]
    fn times_parse_from_rfc3339_and_epoch_ms() {
        let ms = 1_700_000_000_000i64;
        assert_eq!(parse_time(&json!(ms), "ts"), Ok(Some(ms)));
        assert_eq!(
            parse_time(&json!("2023-11-14T22:13:20Z"), "ts"),
            Ok(Some(ms))
        );
        assert_eq!(
            parse_time(&json!("2023-11-14T23:13:20+01:00"), "ts"),
            Ok(Some(ms))
        );
    }

    #[test]
    fn the_three_body_forms_parse() {
        let limits = Limits::default();
        let one = br#"{"publisher":"pub-1","type":"pageview","url":"https://e.com/"}"#;
        assert_eq!(parse_body(one, &limits).unwrap().events.len(), 1);
        let array = br#"[{"a":1},{"b":2}]"#;
        assert_eq!(parse_body(array, &limits).unwrap().events.len(), 2);
        let envelope = br#"{"sent_at":"2023-11-14T22:13:20Z","events":[{"a":1}]}"#;
        let batch = parse_body(envelope, &limits).unwrap();
        assert_eq!(batch.sent_at, Some(1_700_000_000_000));
        assert_eq!(batch.events.len(), 1);
    }

    #[test]
    fn the_envelope_is_known_by_its_top_level_key_alone() {
        let limits = Limits::default();
        // An escaped key is still `events`.
        let escaped = br#"{"\u0065vents":[{"a":1},{"b":2}]}"#;
        assert_eq!(parse_body(escaped, &limits).unwrap().events.len(), 2);
        // `events` deeper down is an event's property, not an envelope.
        let nested = br#"{"type":"share","props":{"events":"3"},"x":[{"events":[]}]}"#;
        let batch = parse_body(nested, &limits).unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].get(), std::str::from_utf8(nested).unwrap());
        // Broken JSON after the keys is still a JSON error, not an event.
        let code = |body: &[u8]| parse_body(body, &limits).expect_err("refused").code;
        assert_eq!(code(br#"{"type":"share","url":"#), ErrorCode::InvalidJson);
        assert_eq!(
            code(br#"{"type":"share"} trailing"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(br#"{"events":[{}],"events":[{}]}"#),
            ErrorCode::InvalidBody
        );
    }

    #[test]
    fn unusable_bodies_get_body_level_codes() {
        let limits = Limits::default();
        let code = |body: &[u8]| parse_body(body, &limits).expect_err("refused").code;
        assert_eq!(code(b"not json"), ErrorCode::InvalidJson);
        assert_eq!(code(b""), ErrorCode::InvalidJson);
        assert_eq!(code(b"{\"a\":"), ErrorCode::InvalidJson);
        assert_eq!(code(b"42"), ErrorCode::InvalidBody);
        assert_eq!(code(b"[]"), ErrorCode::EmptyBatch);
        assert_eq!(code(br#"{"events": 3}"#), ErrorCode::InvalidBody);
        assert_eq!(code(&[0xff, 0xfe]), ErrorCode::InvalidJson);
        let small = Limits {
            max_events: 2,
            ..limits
        };
        assert_eq!(
            parse_body(b"[{},{},{}]", &small).unwrap_err().code,
            ErrorCode::TooManyEvents
        );
    }

    #[test]
    fn an_oversized_event_is_refused_alone() {
        let limits = Limits {
            max_event_bytes: 100,
            ..Limits::default()
        };
        let big = format!(
            r#"[{{"publisher":"pub-1","type":"pageview","url":"https://e.com/","props":{{"p":"{}"}}}},{{"publisher":"pub-1","type":"pageview","url":"https://e.com/"}}]"#,
            "x".repeat(200)
        );
        let batch = parse_body(big.as_bytes(), &limits).unwrap();
        assert_eq!(
            validate_raw(batch.events[0], &limits).unwrap_err().code,
            ErrorCode::EventTooLarge
        );
        assert!(validate_raw(batch.events[1], &limits).is_ok());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z:/.x -]{0,30}".prop_map(Value::String),
            prop_oneof![
                Just("pageview"),
                Just("share"),
                Just("clickback"),
                Just("x"),
                Just("https://e.com/")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("publisher".to_owned()),
                        Just("type".to_owned()),
                        Just("channel".to_owned()),
                        Just("url".to_owned()),
                        Just("ts".to_owned()),
                        Just("props".to_owned()),
                        Just("events".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let limits = Limits::default();
            if let Ok(batch) = parse_body(&body, &limits) {
                for raw in batch.events {
                    let _ = validate_raw(raw, &limits);
                }
            }
        }

        #[test]
        fn arbitrary_json_never_panics_and_round_trips(value in arb_json()) {
            let limits = Limits::default();
            let body = serde_json::to_vec(&value).unwrap();
            if let Ok(batch) = parse_body(&body, &limits) {
                for raw in batch.events {
                    let _ = validate_raw(raw, &limits);
                }
            }
        }

        #[test]
        fn valid_events_survive_a_json_round_trip(
            publisher in "[A-Za-z0-9_.-]{3,64}",
            path in "[a-z0-9/]{0,40}",
            ts in MIN_CLIENT_TIME_MS..MAX_CLIENT_TIME_MS,
            channel in prop::sample::select(channels::all().iter().map(|c| c.slug).collect::<Vec<_>>()),
        ) {
            let event = json!({"publisher": publisher, "type": "share", "channel": channel,
                               "url": format!("https://example.com/{path}"), "ts": ts});
            let parsed = validate(&event).unwrap();
            prop_assert_eq!(parsed.channel, Some(channel));
            prop_assert_eq!(parsed.ts, Some(ts));
            prop_assert_eq!(&parsed.publisher, &publisher);
        }
    }
}
