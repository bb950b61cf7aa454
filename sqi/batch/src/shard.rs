//! Sharding a day by category: which categories each of N shards owns
//! ([`assign_shards`]), and a shard's view of the lake, its `aggregates` and
//! `url_counts` narrowed to its publishers and its scored rows to its
//! categories. Every shard derives the same assignment from the
//! `publishers` dimension, so shards need no coordination.
//!
//! It decides who computes what, never how: the SQL and the scoring are the
//! crate root's, and it must not write the lake.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use sqi_query::{self as query, Workload};
use sqi_schemas::lake::paths::Shard;
use sqi_schemas::lake::{Lake, Table};

use crate::error::{Error, Result};
use crate::{ELIGIBLE_PAGEVIEWS, PEER_GROUP_MIN, UNCATEGORIZED, num_cpus};

/// Spreads categories over `count` shards: largest first, each onto the shard
/// with the fewest publishers so far (ties to the lower index). Every shard
/// derives the same assignment from the same dimension, with no coordination.
pub fn assign_shards(
    publishers_per_category: &BTreeMap<String, u64>,
    count: u32,
) -> BTreeMap<String, u32> {
    let mut categories: Vec<(&String, u64)> = publishers_per_category
        .iter()
        .map(|(c, n)| (c, *n))
        .collect();
    categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut load = vec![0u64; count.max(1) as usize];
    let mut assignment = BTreeMap::new();
    for (category, publishers) in categories {
        let (shard, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .unwrap_or((0, &0));
        load[shard] += publishers;
        let _ = assignment.insert(category.clone(), shard as u32);
    }
    assignment
}

/// The publishers one shard owns, and how the lake's `aggregates` are narrowed to them.
pub(crate) struct ShardScope {
    categories: BTreeSet<String>,
    /// Publishers whose rows the shard reads (`keep = true`) or skips (`false`):
    /// the shard owning `uncategorized` must also read publishers the dimension
    /// does not know, so it lists the others' publishers to skip.
    listed: RecordBatch,
    keep: bool,
}

impl ShardScope {
    pub(crate) async fn load(lake: &Lake, shard: Shard) -> Result<Self> {
        let ctx = query::session(lake, &[Table::Publishers], num_cpus(), Workload::Batch).await?;
        // The same normalisation as stage 1's `dimension` and category.
        let dimension = query::collect_one(
            &ctx,
            &format!(
                "SELECT publisher, COALESCE(NULLIF(MIN(category), ''), '{UNCATEGORIZED}') AS category \
                 FROM publishers GROUP BY publisher"
            ),
        )
        .await?;
        let publishers = string_column(&dimension, "publisher")?;
        let categories = string_column(&dimension, "category")?;
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        *sizes.entry(UNCATEGORIZED.to_owned()).or_default() += 0;
        for category in categories.iter().flatten() {
            *sizes.entry(category.to_owned()).or_default() += 1;
        }
        let assignment = assign_shards(&sizes, shard.count);
        let owned: BTreeSet<String> = assignment
            .iter()
            .filter(|(_, s)| **s == shard.index)
            .map(|(c, _)| c.clone())
            .collect();
        let keep = !owned.contains(UNCATEGORIZED);
        let mask: BooleanArray = categories
            .iter()
            .map(|c| Some(c.is_some_and(|c| owned.contains(c)) == keep))
            .collect();
        let listed = filter_record_batch(
            &RecordBatch::try_from_iter([("publisher", Arc::new(publishers.clone()) as _)])?,
            &mask,
        )?;
        Ok(Self {
            categories: owned,
            listed,
            keep,
        })
    }

    /// A session whose tables keyed by publisher (those of `tables`:
    /// `aggregates`, `url_counts`, `daily`, `first_seen`) hold only this
    /// shard's publishers' rows.
    pub(crate) async fn session(&self, lake: &Lake, tables: &[Table]) -> Result<SessionContext> {
        let scoped = [
            Table::Aggregates,
            Table::UrlCounts,
            Table::Daily,
            Table::FirstSeen,
        ];
        let others: Vec<Table> = tables
            .iter()
            .copied()
            .filter(|t| !scoped.contains(t))
            .collect();
        let ctx = query::session(lake, &others, num_cpus(), Workload::Batch).await?;
        let _ = ctx.register_batch("shard_listed", self.listed.clone())?;
        let exists = if self.keep { "EXISTS" } else { "NOT EXISTS" };
        for table in scoped.into_iter().filter(|t| tables.contains(t)) {
            let name = table.prefix();
            query::register_as(&ctx, lake, table, &format!("lake_{name}")).await?;
            let _ = ctx
                .sql(&format!(
                    "CREATE VIEW {name} AS SELECT * FROM lake_{name} a WHERE {exists} \
                     (SELECT 1 FROM shard_listed s WHERE s.publisher = a.publisher)"
                ))
                .await?
                .collect()
                .await?;
        }
        Ok(ctx)
    }

    /// The rows of `batch` whose `category` this shard owns.
    pub(crate) fn retain(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let categories = string_column(batch, "category")?;
        let mask: BooleanArray = categories
            .iter()
            .map(|c| Some(c.is_some_and(|c| self.categories.contains(c))))
            .collect();
        Ok(filter_record_batch(batch, &mask)?)
    }
}

fn string_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("query produced no column `{name}`")))?;
    Ok(
        arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)?
            .as_string::<i32>()
            .clone(),
    )
}

/// Whether any category among `inputs` has too few eligible publishers to be
/// its own peer group, so that scoring needs the whole network.
pub(crate) fn needs_network(inputs: &RecordBatch) -> Result<bool> {
    let categories = string_column(inputs, "category")?;
    let pageviews = inputs
        .column_by_name("pageviews")
        .ok_or_else(|| Error::Invalid("stage 1 produced no `pageviews`".into()))?;
    let pageviews = arrow::compute::cast(pageviews, &arrow::datatypes::DataType::Int64)?;
    let pageviews = pageviews.as_primitive::<Int64Type>();
    let mut eligible: BTreeMap<&str, usize> = BTreeMap::new();
    for (category, views) in categories.iter().zip(pageviews.iter()) {
        let count = eligible
            .entry(category.unwrap_or(UNCATEGORIZED))
            .or_default();
        if views.unwrap_or(0) >= ELIGIBLE_PAGEVIEWS {
            *count += 1;
        }
    }
    Ok(eligible.values().any(|n| *n < PEER_GROUP_MIN))
}

// Test code only: an unwrap or panic here fails the test with its cause, which is the point.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_spread_largest_first_onto_the_least_loaded_shard() {
        let sizes: BTreeMap<String, u64> = [
            ("news", 100),
            ("sports", 60),
            ("food", 50),
            ("pets", 10),
            ("uncategorized", 0),
        ]
        .into_iter()
        .map(|(c, n)| (c.to_owned(), n))
        .collect();
        let assignment = assign_shards(&sizes, 2);
        let load = |shard: u32| -> u64 {
            assignment
                .iter()
                .filter(|(_, s)| **s == shard)
                .map(|(c, _)| sizes[c])
                .sum()
        };
        // news | sports + food + pets (+ the empty uncategorized).
        assert_eq!((load(0), load(1)), (110, 110));
        assert_eq!(assignment.len(), sizes.len());
        assert_eq!(assign_shards(&sizes, 2), assignment);
        assert!(assign_shards(&sizes, 1).values().all(|s| *s == 0));
    }
}
