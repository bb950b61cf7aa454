//! The ingest error type. [`ApiError`] is what a client sees; [`Error`] is what
//! stops the service.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sqi_schemas::api::ErrorBody;
use sqi_schemas::event::{ErrorCode, EventError};

/// Errors that stop or prevent the service (never a single request's fault).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kafka client could not be created from the configuration (user error).
    #[error("kafka configuration: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka connection flags are wrong or a secret is unreadable (user error).
    #[error(transparent)]
    Connection(#[from] sqi_kafka::Error),
    /// Binding or serving failed (environment).
    #[error("i/o: {0}")]
    Io(std::io::Error),
    /// The allowlist could not be loaded (user error in its source).
    #[error("publisher allowlist: {0}")]
    Allowlist(String),
    /// The allowlist's lake could not be opened.
    #[error(transparent)]
    Lake(#[from] sqi_schemas::Error),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request-level failure, mapped to the contract's status codes and error body.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body or its form is unusable.
    BadRequest(EventError),
    /// 400: every event in the body was refused; `first` is reported as the
    /// error and `rejected` lists each event by index.
    AllRejected {
        /// The first refusal.
        first: EventError,
        /// `{"index", "code", "message", "field"}` for every event.
        rejected: Vec<serde_json::Value>,
    },
    /// 413: the body, after decompression, exceeds the limit.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415: a content type or encoding we do not read.
    UnsupportedMedia(String),
    /// 429: the client is over its rate limit.
    RateLimited {
        /// Seconds until the allowance refills enough.
        retry_after_secs: u64,
    },
    /// 408: the body did not arrive within the body timeout; the connection is closed.
    BodyTimeout,
    /// 503: too many requests, or too many body bytes, are being handled; retry shortly.
    Busy,
    /// 503: the broker did not take the events in time; retry with the same ids.
    Unavailable {
        /// Seconds the client should wait.
        retry_after_secs: u64,
        /// Logged server-side only.
        detail: String,
    },
}

impl ApiError {
    fn status_code_and_message(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest(e) | Self::AllRejected { first: e, .. } => {
                (StatusCode::BAD_REQUEST, e.code.as_str(), e.message.clone())
            }
            Self::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds {limit} bytes after decompression"),
            ),
            Self::UnsupportedMedia(what) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                what.clone(),
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many events from this client for this publisher; slow down".to_owned(),
            ),
            Self::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the body did not arrive in time".to_owned(),
            ),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "too many requests in progress; retry shortly with the same event_ids".to_owned(),
            ),
            Self::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "events could not be stored right now; retry with the same event_ids".to_owned(),
            ),
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        Self::BadRequest(e)
    }
}

/// The contract's error body, and with every event refused, each refusal.
#[derive(serde::Serialize)]
struct Refusal<'a> {
    #[serde(flatten)]
    body: ErrorBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<&'a [serde_json::Value]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.status_code_and_message();
        let mut body = ErrorBody::new(code, message);
        match &self {
            Self::BadRequest(e) | Self::AllRejected { first: e, .. } => {
                if let Some(field) = e.field {
                    body = body.with_field(field);
                }
            }
            Self::Unavailable { detail, .. } => tracing::warn!(%detail, "answering 503"),
            _ => {}
        }
        let rejected = match &self {
            Self::AllRejected { rejected, .. } => Some(rejected.as_slice()),
            _ => None,
        };
        let body = Refusal { body, rejected };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after_secs = match self {
            Self::Unavailable {
                retry_after_secs, ..
            }
            | Self::RateLimited { retry_after_secs } => Some(retry_after_secs),
            Self::Busy => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, Self::BodyTimeout) {
            // The rest of the body may still be on its way: the connection
            // cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl ApiError {
    /// A 400 with a code, for failures found outside the event rules.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::BadRequest(EventError {
            code,
            message: message.into(),
            field: None,
        })
    }
}
