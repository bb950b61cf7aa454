//! `sqi publishers import FILE.csv`: the publisher dimension (`publishers/`).
//!
//! The CSV has a header with `publisher` and optionally `domain`, `category`
//! and `created_at` (RFC 3339 or `YYYY-MM-DD`). Every row is checked before
//! anything is written; a file with any bad row is refused with one line per
//! problem, so the table never holds half an import. The file and its
//! rows are the lake contract's ([`sqi_schemas::lake::publishers`]).

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate};
use sqi_schemas::event::is_valid_publisher;
use sqi_schemas::lake::Lake;
pub use sqi_schemas::lake::publishers::Publisher;

use crate::error::{Error, Result};

/// Parses and validates a CSV; on any bad row returns every problem found.
pub fn parse_csv(text: &str) -> Result<Vec<Publisher>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| Error::Invalid(format!("line 1: unreadable header: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(publisher_col) = column("publisher") else {
        return Err(Error::Invalid(
            "line 1: the header has no `publisher` column".into(),
        ));
    };
    let (domain_col, category_col, created_col) =
        (column("domain"), column("category"), column("created_at"));
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let field = |col: Option<usize>| col.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
        let publisher = field(Some(publisher_col)).unwrap_or("");
        if !is_valid_publisher(publisher) {
            problems.push(format!(
                "line {line}: publisher `{publisher}` must be 3 to 64 characters of [A-Za-z0-9_.-]"
            ));
            continue;
        }
        if !seen.insert(publisher.to_owned()) {
            problems.push(format!(
                "line {line}: publisher `{publisher}` appears twice"
            ));
            continue;
        }
        let created_at = match field(created_col) {
            None => None,
            Some(text) => match parse_created_at(text) {
                Some(ms) => Some(ms),
                None => {
                    problems.push(format!(
                        "line {line}: created_at `{text}` is neither RFC 3339 nor YYYY-MM-DD"
                    ));
                    continue;
                }
            },
        };
        rows.push(Publisher {
            publisher: publisher.to_owned(),
            domain: field(domain_col).map(str::to_owned),
            category: field(category_col).map(str::to_ascii_lowercase),
            created_at,
        });
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(Error::Invalid(format!(
            "{} bad row(s); nothing was imported:\n{}",
            problems.len(),
            problems.join("\n")
        )))
    }
}

fn parse_created_at(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
        })
}

/// Replaces the dimension with `rows`, in one atomic put.
pub async fn write(lake: &Lake, rows: &[Publisher]) -> Result<()> {
    Ok(sqi_schemas::lake::publishers::write(lake, rows).await?)
}

// Test code only: an unwrap here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_csv_parses() {
        let rows = parse_csv(
            "publisher,domain,category,created_at\npub-1,a.com,News,2024-01-02\npub-2,,,\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].category.as_deref(), Some("news"));
        assert_eq!(rows[0].created_at, Some(1_704_153_600_000));
        assert_eq!(rows[1].domain, None);
    }

    #[test]
    fn every_bad_row_is_reported_by_line() {
        let error = parse_csv(
            "publisher,created_at\nok-1,2024-01-01\nx,2024-01-01\nok-2,yesterday\nok-1,\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("line 3") && error.contains("line 4") && error.contains("line 5"),
            "{error}"
        );
        assert!(
            parse_csv("name\nfoo\n")
                .unwrap_err()
                .to_string()
                .contains("no `publisher`")
        );
        assert!(parse_csv("publisher,category\npub-1,a,b\n").is_err());
    }
}
