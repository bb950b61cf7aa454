//! The SQI table the demo prints: the live day's scores, computed by the
//! batch job's own stage 1 and 2 without writing them, best first, and the
//! table, its spread and the top ten as text.
//!
//! It reads what the batch computes and must not write the lake.

use std::io::Write;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use chrono::NaiveDate;
use sqi_batch as batch;
use sqi_schemas::lake::Lake;

use crate::error::{Error, Result};

/// One printed SQI row.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// Publisher id.
    pub publisher: String,
    /// Category.
    pub category: String,
    /// Peer group.
    pub peer_group: String,
    /// Pageviews over the window.
    pub pageviews: i64,
    /// Shares over the window.
    pub shares: i64,
    /// Clickbacks over the window.
    pub clickbacks: i64,
    /// The SQI, when eligible.
    pub sqi: Option<i32>,
    /// The score z.
    pub score_z: Option<f64>,
}

pub(super) async fn read_scores(lake: &Lake, day: NaiveDate) -> Result<Vec<ScoreRow>> {
    let batch = batch::compute_sqi(lake, day).await?;
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
    };
    let int = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<Int64Type>().cloned())
    };
    let (Some(publisher), Some(category), Some(peer_group)) =
        (text("publisher"), text("category"), text("peer_group"))
    else {
        return Err(Error::Invalid("sqi output lacks its text columns".into()));
    };
    let (Some(pageviews), Some(shares), Some(clickbacks)) =
        (int("pageviews"), int("shares"), int("clickbacks"))
    else {
        return Err(Error::Invalid("sqi output lacks its count columns".into()));
    };
    let (Some(sqi), Some(z)) = (
        batch
            .column_by_name("sqi")
            .and_then(|c| c.as_primitive_opt::<Int32Type>().cloned()),
        batch
            .column_by_name("score_z")
            .and_then(|c| c.as_primitive_opt::<Float64Type>().cloned()),
    ) else {
        return Err(Error::Invalid("sqi output lacks sqi/score_z".into()));
    };
    let mut rows: Vec<ScoreRow> = (0..batch.num_rows())
        .map(|i| ScoreRow {
            publisher: publisher.value(i).to_owned(),
            category: category.value(i).to_owned(),
            peer_group: if peer_group.is_null(i) {
                String::new()
            } else {
                peer_group.value(i).to_owned()
            },
            pageviews: pageviews.value(i),
            shares: shares.value(i),
            clickbacks: clickbacks.value(i),
            sqi: (!sqi.is_null(i)).then(|| sqi.value(i)),
            score_z: (!z.is_null(i)).then(|| z.value(i)),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.sqi
            .cmp(&a.sqi)
            .then_with(|| {
                b.score_z
                    .partial_cmp(&a.score_z)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.publisher.cmp(&b.publisher))
    });
    Ok(rows)
}

pub(super) fn print_table(out: &mut impl Write, rows: &[ScoreRow]) -> Result<()> {
    let header = format!(
        "{:>4}  {:<18} {:<10} {:<10} {:>9} {:>7} {:>10} {:>7} {:>4}",
        "rank", "publisher", "category", "peers", "pageviews", "shares", "clickbacks", "z", "SQI"
    );
    let line = |out: &mut dyn Write, rank: usize, r: &ScoreRow| {
        writeln!(
            out,
            "{rank:>4}  {:<18} {:<10} {:<10} {:>9} {:>7} {:>10} {:>7} {:>4}",
            r.publisher,
            r.category,
            r.peer_group,
            r.pageviews,
            r.shares,
            r.clickbacks,
            r.score_z.map_or("-".to_owned(), |z| format!("{z:+.3}")),
            r.sqi.map_or("-".to_owned(), |s| s.to_string())
        )
    };
    let scored: Vec<&ScoreRow> = rows.iter().filter(|r| r.sqi.is_some()).collect();
    writeln!(
        out,
        "\nSQI for every publisher ({} scored, {} below 1000 pageviews):",
        scored.len(),
        rows.len() - scored.len()
    )?;
    writeln!(out, "{header}")?;
    for (i, r) in rows.iter().enumerate() {
        line(out, i + 1, r)?;
    }
    let mut scores: Vec<i32> = scored.iter().filter_map(|r| r.sqi).collect();
    scores.sort_unstable();
    if let (Some(min), Some(max)) = (scores.first(), scores.last()) {
        let median = scores[scores.len() / 2];
        writeln!(
            out,
            "\nscored {}: min {min}, median {median}, max {max} (100 = category median)",
            scores.len()
        )?;
    }
    writeln!(out, "\nTop 10 SQI:")?;
    writeln!(out, "{header}")?;
    for (i, r) in scored.iter().take(10).enumerate() {
        line(out, i + 1, r)?;
    }
    Ok(())
}
