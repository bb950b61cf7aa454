//! `docs/sqi-sql.md` publishes exactly the SQL the batch job runs.
//! Regenerate it with `SQI_BLESS=1 cargo test -p sqi --test published_sql`.

use std::path::PathBuf;

fn document() -> String {
    format!(
        "# The SQL behind the SQI\n\n\
This is the SQL `sqi batch --date D` runs with DataFusion, generated from\n\
`sqi/batch/sql/` (a test fails when they differ). It follows `../shared/SQI.md`.\n\
Replace the `{{{{placeholders}}}}` with dates to run it yourself:\n\n\
| placeholder | value |\n|---|---|\n\
| `{{{{date}}}}` | the day D, `YYYY-MM-DD` |\n\
| `{{{{window_from}}}}` | D - 27 days (the 28-day window W starts here) |\n\
| `{{{{next_day}}}}` | D + 1 day |\n\
| `{{{{previous_day}}}}` | D - 1 day |\n\
| `{{{{provisional_after}}}}` | D - 28 days |\n\n\
Tables: `aggregates`, `daily`, `first_seen` and `publishers` are the lake\n\
tables of the same names, read with Hive partitioning (`dt`, `hour` as\n\
text). In DuckDB:\n\n\
```sql\n\
SET TimeZone = 'UTC';\n\
CREATE VIEW aggregates AS SELECT * FROM read_parquet('s3://bucket/lake/aggregates/**/*.parquet', hive_partitioning = true);\n\
CREATE VIEW daily AS SELECT * FROM read_parquet('s3://bucket/lake/daily/**/*.parquet', hive_partitioning = true);\n\
CREATE VIEW first_seen AS SELECT * FROM read_parquet('s3://bucket/lake/first_seen/**/*.parquet', hive_partitioning = true);\n\
CREATE VIEW publishers AS SELECT * FROM read_parquet('s3://bucket/lake/publishers/*.parquet');\n\
CREATE TEMP TABLE inputs AS <stage 1>;\n\
<stage 2>;\n\
```\n\n\
Stage 1 and the first-seen table each have two forms that give the same\n\
rows. The stored form reads the batch's own earlier output: the window's\n\
earlier days from `daily`, and first days from `first_seen` as of the day\n\
before, which each run carries forward a day. The history form reads every\n\
hourly `aggregates` row up to D instead, a cost that grows with the lake's\n\
age. The batch takes the stored form when every day of W before D has\n\
`daily` files with every row `complete` (or no hours at all), and\n\
`first_seen` for D - 1 is complete (or no hour predates D); otherwise the\n\
history form, for that day only. Either form works in DuckDB; the history\n\
form needs only `aggregates` and `publishers`.\n\n\
Stage 2 reads stage 1's result as `inputs`. The SQL never divides one integer\n\
by another unless the division is exact, so it gives the same integers in\n\
engines that truncate (DataFusion, PostgreSQL) and in those that do not\n\
(DuckDB); `TimeZone = 'UTC'` makes DuckDB take a timestamp's date in UTC, as\n\
the lake does. `bench/duckdb_sqi.py` runs it exactly so.\n\n\
`sqi batch --shard i/N` runs the same SQL over the publishers of the\n\
categories shard i owns (every shard scores the network group from the\n\
whole network), so the N shards' rows are the rows of one run.\n\n\
Choices the definition leaves open, and what this SQL does:\n\n\
- A zero shrunk rate *or a zero peer median* enters the logarithm as `1e-12`\n\
  (a group whose rates are all zero scores z = 0 for everyone).\n\
- A publisher with any aggregate row in W (bots included) gets a row; its\n\
  counts exclude bots. Below 1000 pageviews it has `sqi = NULL` and\n\
  `reason = 'insufficient_pageviews'`; its rates are still shrunk toward the\n\
  peer group it would have, which `peer_group` and `peer_count` name.\n\
- When no `publishers` row exists, the category is `uncategorized`; an empty\n\
  category counts as missing.\n\n\
## Stage 1: inputs\n\n```sql\n{}```\n\n\
### Stage 1 from the hourly history\n\n```sql\n{}```\n\n## Stage 2: score\n\n```sql\n{}```\n\n## The day's totals (`daily/`)\n\n```sql\n{}```\n\n\
## The day's totals per URL (`daily_urls/`)\n\n\
`url_counts` is the lake table of that name, partitioned as `aggregates`.\n\n```sql\n{}```\n\n\
## The day's counts by UTC hour (`daily_hours/`)\n\n\
Whole UTC days at hour resolution, channels summed, so that a day in any\n\
timezone can be cut from them.\n\n```sql\n{}```\n\n\
## The first-seen table (`first_seen/`)\n\n\
Every publisher with an aggregate row up to D and its first day, written\n\
by each run for the next day's stage 1.\n\n```sql\n{}```\n\n\
### The first-seen table from the hourly history\n\n```sql\n{}```\n",
        sqi_batch::INPUTS_SQL,
        sqi_batch::INPUTS_FROM_HISTORY_SQL,
        sqi_batch::SCORE_SQL,
        sqi_batch::DAILY_SQL,
        sqi_batch::DAILY_URLS_SQL,
        sqi_batch::DAILY_HOURS_SQL,
        sqi_batch::FIRST_SEEN_SQL,
        sqi_batch::FIRST_SEEN_FROM_HISTORY_SQL
    )
}

#[test]
fn published_sql_matches_what_the_job_runs() {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "docs", "sqi-sql.md"]
        .iter()
        .collect();
    let generated = document();
    if std::env::var_os("SQI_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == generated,
        "docs/sqi-sql.md is stale; run SQI_BLESS=1 cargo test -p sqi --test published_sql"
    );
}
