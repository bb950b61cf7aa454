#!/usr/bin/env python3
"""Counts an SQI Engine lake for the chaos check, with DuckDB.

Downloads the lake's tables from the S3 endpoint (boto3) and prints JSON:
`aggregates` and `daily` summed per "publisher|channel|event_type" (channel
"-" when null), and the rows and distinct ids of `events`.
"""
import argparse
import glob
import json
import os
import tempfile

import boto3
import duckdb


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    root = tempfile.mkdtemp(prefix="sqi-chaos-check-")
    prefix = args.prefix.strip("/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            if "/_" in key or not key.endswith(".parquet"):
                continue
            target = os.path.join(root, key)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            s3.download_file(args.bucket, key, target)
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
