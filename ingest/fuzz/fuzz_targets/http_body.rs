//! A body as ingest receives it, through everything ingest does to it before
//! Kafka: the decoder (gzip, beacon text, base64 form), the body splitter, each
//! event's validation, normalisation, and finally the processor's own decoder.
//!
//! Besides "never panics", it holds one property: every record ingest writes
//! is a record the processor accepts, unchanged, with an event time inside
//! the bounds the processor enforces. A record that ingest takes and
//! the processor dead-letters would be an event acknowledged with 200 and
//! never counted.
#![no_main]

use std::io::Write;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sqi_schemas::event::{Limits, parse_body, validate_raw};
use sqi_schemas::record::{
    Device, EARLIEST_EVENT_TIME_MS, Enrichment, MAX_FUTURE_SKEW_MS, RecordView,
};

/// The receive time every input is normalised at: fixed, so that a finding replays.
const RECEIVED_AT: i64 = 1_765_000_000_000;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the rest is sent, so that one corpus covers
    // every content type and encoding, valid or not.
    let Some((&how, payload)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    let content_type = match how & 0b11 {
        0 => "application/json",
        1 => "text/plain;charset=UTF-8",
        2 => "application/x-www-form-urlencoded",
        _ => "",
    };
    if !content_type.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let mut body = payload.to_vec();
    // Form bodies are wrapped as the widget wraps them unless bit 3 asks for raw bytes.
    if how & 0b11 == 2 && how & 0b1000 == 0 {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        body = format!("data={encoded}").into_bytes();
    }
    if how & 0b100 != 0 {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        // Compressed as a client would unless bit 4 asks for the raw (corrupt) bytes.
        if how & 0b1_0000 == 0 {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if encoder.write_all(&body).is_err() {
                return;
            }
            let Ok(compressed) = encoder.finish() else {
                return;
            };
            body = compressed;
        }
    }
    let limits = Limits::default();
    let Ok(decoded) =
        sqi_ingest::http::decode_body(&headers, Bytes::from(body), limits.max_body_bytes)
    else {
        return;
    };
    assert!(
        decoded.len() <= limits.max_body_bytes,
        "decoded body over the limit"
    );
    let Ok(batch) = parse_body(&decoded, &limits) else {
        return;
    };
    assert!(
        batch.events.len() <= limits.max_events,
        "more events than the limit"
    );
    let enrichment = Enrichment {
        received_at: RECEIVED_AT,
        batch_sent_at: batch.sent_at,
        max_future_skew_ms: MAX_FUTURE_SKEW_MS,
        device: Device::Desktop,
        ip_prefix: Some("203.0.113.0".to_owned()),
    };
    for raw in batch.events {
        let Ok(event) = validate_raw(raw, &limits) else {
            continue;
        };
        let record = sqi_schemas::record::normalize(event, &enrichment);
        // The processor dead-letters times outside these bounds, so ingest
        // must never write one.
        assert!(
            (EARLIEST_EVENT_TIME_MS..=RECEIVED_AT + MAX_FUTURE_SKEW_MS).contains(&record.ts),
            "ingest wrote an event time the processor refuses: {}",
            record.ts
        );
        let json = record.to_json();
        match RecordView::from_json(&json) {
            Ok(view) => assert_eq!(
                view.to_owned_record(),
                record,
                "the record changed on its way through Kafka"
            ),
            Err(error) => panic!(
                "ingest wrote a record the processor rejects ({error}): {}",
                String::from_utf8_lossy(&json)
            ),
        }
    }
});
