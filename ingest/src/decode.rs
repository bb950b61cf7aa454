//! A request body, decoded to the JSON it carries: `Content-Encoding: gzip`
//! inflated through the body limit, so a small bomb cannot grow past it,
//! and a form's `data=<base64 of the JSON>` unwrapped; and the
//! percent-decoding that forms and the pixel's query string share.
//!
//! It works on bytes already read and must not read the socket or judge
//! events: reading the raw body (its limit, timeout and byte budget) is
//! `http`'s, and the events' rules are `sqi-schemas`'.

use std::io::Read;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use base64::Engine;
use sqi_schemas::event::ErrorCode;

use crate::error::ApiError;

/// Turns a raw body into JSON bytes: undoes `Content-Encoding: gzip` within the
/// limit, and unwraps the form `data=<base64>` encoding.
pub fn decode_body(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" => Bytes::from(gunzip(&raw, limit)?),
        other => {
            return Err(ApiError::UnsupportedMedia(format!(
                "content-encoding `{other}` is not supported; use gzip or none"
            )));
        }
    };
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match media_type.as_str() {
        "" | "application/json" | "text/plain" => Ok(body),
        "application/x-www-form-urlencoded" => form_data(&body),
        other => Err(ApiError::UnsupportedMedia(format!(
            "content-type `{other}` is not supported; use application/json, text/plain or application/x-www-form-urlencoded"
        ))),
    }
}

fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("the gzip body is corrupt: {e}"),
        )
    })?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(out)
}

fn form_data(body: &[u8]) -> Result<Bytes, ApiError> {
    let missing = || {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            "a form body must carry data=<base64 of the JSON>",
        )
    };
    let data = form_urlencoded_value(body, "data").ok_or_else(missing)?;
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let trimmed = compact.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map(Bytes::from)
        .map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidBody, "form `data` is not valid base64")
        })
}

fn form_urlencoded_value(body: &[u8], wanted: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (percent_decode(key)? == wanted).then(|| percent_decode(value))?
    })
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use sqi_schemas::event::{self, Limits};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn form_base64_and_gzip_decode_to_the_same_json() {
        let json = br#"{"publisher":"pub-1","type":"pageview","url":"https://e.com/"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        let form = format!("data={}", b64.replace('+', "%2B").replace('=', "%3D"));
        let decoded = decode_body(
            &headers(&[("content-type", "application/x-www-form-urlencoded")]),
            Bytes::from(form),
            1 << 20,
        )
        .unwrap();
        assert_eq!(&decoded[..], json);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).unwrap();
        let decoded = decode_body(
            &headers(&[
                ("content-type", "text/plain;charset=UTF-8"),
                ("content-encoding", "gzip"),
            ]),
            Bytes::from(gz.finish().unwrap()),
            1 << 20,
        )
        .unwrap();
        assert_eq!(&decoded[..], json);
    }

    #[test]
    fn a_gzip_bomb_is_stopped_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 4 << 20]).unwrap();
        let small = gz.finish().unwrap();
        assert!(small.len() < 64 * 1024);
        let result = decode_body(
            &headers(&[("content-encoding", "gzip")]),
            Bytes::from(small),
            1 << 20,
        );
        assert!(matches!(result, Err(ApiError::PayloadTooLarge { .. })));
    }

    proptest::proptest! {
        /// The fuzz target of the request path: any bytes under any of the
        /// content types and encodings we read decode, split and validate
        /// without a panic, and any failure is a 4xx-class error.
        #[test]
        fn any_body_under_any_header_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            content_type in proptest::sample::select(vec!["", "application/json", "text/plain;charset=UTF-8",
                "application/x-www-form-urlencoded", "image/png"]),
            gzip in proptest::prelude::any::<bool>(),
            compress_for_real in proptest::prelude::any::<bool>(),
        ) {
            let mut pairs = vec![];
            if !content_type.is_empty() {
                pairs.push(("content-type", content_type));
            }
            if gzip {
                pairs.push(("content-encoding", "gzip"));
            }
            let raw = if gzip && compress_for_real {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&body).unwrap();
                gz.finish().unwrap()
            } else {
                body
            };
            let limits = Limits::default();
            match decode_body(&headers(&pairs), Bytes::from(raw), limits.max_body_bytes) {
                Ok(json) => {
                    if let Ok(batch) = event::parse_body(&json, &limits) {
                        for raw_event in batch.events {
                            let _ = event::validate_raw(raw_event, &limits);
                        }
                    }
                }
                Err(ApiError::BadRequest(_) | ApiError::UnsupportedMedia(_) | ApiError::PayloadTooLarge { .. }) => {}
                Err(other) => proptest::prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_media_and_encodings_are_415() {
        let r = decode_body(
            &headers(&[("content-type", "application/xml")]),
            Bytes::new(),
            10,
        );
        assert!(matches!(r, Err(ApiError::UnsupportedMedia(_))));
        let r = decode_body(&headers(&[("content-encoding", "br")]), Bytes::new(), 10);
        assert!(matches!(r, Err(ApiError::UnsupportedMedia(_))));
        let r = decode_body(
            &headers(&[("content-type", "application/x-www-form-urlencoded")]),
            Bytes::from_static(b"data=%%%"),
            10,
        );
        assert!(matches!(r, Err(ApiError::BadRequest(_))));
    }
}
