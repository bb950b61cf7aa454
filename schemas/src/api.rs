//! The error body every HTTP role answers with (contract §3 for the report
//! API, §1 for ingest): `{"error": {"code", "message", "field"?}}`. One type,
//! so ingest and the report cannot drift apart, and the report's OpenAPI
//! document describes it from the same definition.

use serde::Serialize;
use utoipa::ToSchema;

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: the report's `invalid_parameter`,
    /// `unauthorized`, `forbidden`, `rate_limited`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `invalid_request` or
    /// `internal`; ingest's event-rule codes and its own (`CONTRACTS.md`).
    pub code: String,
    /// For people.
    pub message: String,
    /// The parameter or event field at fault, when one is (absent when the
    /// request as a whole could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// A body with `code` and `message` and no field.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// The same body naming `field`.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }
}
