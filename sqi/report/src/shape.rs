//! Shaping an answer for the wire: JSON as the answer type serialises, or
//! its rows as CSV, one column per field the endpoint names, with
//! `data_as_of` in a header.
//!
//! It knows nothing of what an answer means: the handlers sum (with
//! `series`) and rank, and this module only writes. It must not drop or reorder rows, and it must
//! never let a cell reach a spreadsheet as a formula.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::ReportError;
use super::params::Format;
use crate::error::Result;

/// Answers `body` as JSON, or its `rows` as CSV with `columns` (fields of
/// each row) and its `data_as_of` in a header.
pub(super) fn respond<T: Serialize>(
    format: Format,
    body: &T,
    columns: &[&str],
) -> Result<Response, ReportError> {
    if format == Format::Json {
        return Ok(Json(body).into_response());
    }
    let internal = |e: String| ReportError::Internal(crate::error::Error::Invalid(e));
    let body = serde_json::to_value(body).map_err(|e| internal(e.to_string()))?;
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(columns)
        .map_err(|e| internal(e.to_string()))?;
    for row in body["rows"].as_array().map_or(&[][..], Vec::as_slice) {
        out.write_record(columns.iter().map(|c| csv_cell(&row[*c])))
            .map_err(|e| internal(e.to_string()))?;
    }
    let csv = out.into_inner().map_err(|e| internal(e.to_string()))?;
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    let _ = headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(as_of) = body["data_as_of"]
        .as_str()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        let _ = headers.insert("x-data-as-of", as_of);
    }
    Ok(response)
}

/// The first characters that make a spreadsheet read a cell as a formula
/// (OWASP, CSV injection).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A value as a CSV cell. Text that a spreadsheet would run as a formula (a
/// URL a page reported, say) is prefixed with `'`, which spreadsheets show
/// as text; numbers are written as they are, negative ones included, since a
/// number is never run.
fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(FORMULA_STARTS) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Item 15: text that would start a formula is neutralised; numbers,
    /// negative ones included, and ordinary text are written as they are.
    #[test]
    fn csv_cells_neutralise_formulas_but_not_numbers() {
        assert_eq!(csv_cell(&json!(-1.5)), "-1.5");
        assert_eq!(csv_cell(&json!(-3)), "-3");
        assert_eq!(csv_cell(&json!("-3")), "'-3");
        for formula in ["=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1"] {
            assert_eq!(csv_cell(&json!(formula)), format!("'{formula}"));
        }
        assert_eq!(
            csv_cell(&json!("https://x.example/?a=b")),
            "https://x.example/?a=b"
        );
        assert_eq!(csv_cell(&json!(true)), "true");
        assert_eq!(csv_cell(&Value::Null), "");
    }
}
