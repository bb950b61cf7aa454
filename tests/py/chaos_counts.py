#!/usr/bin/env python3
"""Counts an SQI Engine lake for the chaos check, with DuckDB.

Downloads the lake's tables from the S3 endpoint (boto3) and prints JSON:
`aggregates` and `daily` summed per "publisher|channel|event_type" (channel
"-" when null), and the rows and distinct ids of `events`.
"""
import glob
import json
import os

import duckdb

from check_lake import download, lake_args


def main():
    args = lake_args()
    root, _ = download(args, "sqi-chaos-check-")
    prefix = args.prefix.strip("/")
    base = os.path.join(root, prefix)
    con = duckdb.connect()
    out = {"aggregates": {}, "daily": {}, "event_rows": 0, "distinct_event_ids": 0}
    for table in ("aggregates", "daily"):
        files = glob.glob(os.path.join(base, table, "**", "*.parquet"), recursive=True)
        if not files:
            continue
        rows = con.execute(
            """
            SELECT publisher, coalesce(channel, '-'), event_type, SUM(events)::BIGINT
            FROM read_parquet(?, hive_partitioning = false)
            GROUP BY ALL
            """,
            [files],
        ).fetchall()
        out[table] = {f"{p}|{c}|{t}": n for p, c, t, n in rows}
    files = glob.glob(os.path.join(base, "events", "**", "*.parquet"), recursive=True)
    if files:
        rows, distinct = con.execute(
            "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM read_parquet(?, hive_partitioning = false)",
            [files],
        ).fetchone()
        out["event_rows"], out["distinct_event_ids"] = rows, distinct
    print(json.dumps(out))


if __name__ == "__main__":
    main()
