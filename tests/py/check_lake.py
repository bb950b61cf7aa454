#!/usr/bin/env python3
"""Reads an SQI Engine lake with tools SQI Engine did not write.

boto3 fetches every object under the lake prefix from the S3 endpoint; pyarrow
opens each Parquet file and DuckDB queries the tables with Hive partitioning.
Prints JSON: each table's columns (name and DuckDB type), the aggregates summed
per key, and any row whose window_start disagrees with its dt/hour path.
"""
import argparse
import glob
import json
import os
import tempfile

import boto3
import duckdb
import pyarrow.parquet as pq

TABLES = ["events", "aggregates", "url_counts", "publishers", "daily", "daily_urls", "sqi", "monthly", "monthly_urls", "daily_hours", "monthly_hours", "first_seen"]


def lake_args():
    """The flags every lake reader here takes: where the lake is on S3."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    return parser.parse_args()


def download(args, prefix_name):
    """Copies every object under the lake prefix to a temp dir, except the
    processor's own log and markers (`/_`: not tables, and a running processor
    deletes superseded markers meanwhile). Returns (root, all keys listed)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    root = tempfile.mkdtemp(prefix=prefix_name)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=args.prefix.rstrip("/") + "/"):
        for item in page.get("Contents", []):
            keys.append(item["Key"])
    for key in keys:
        if "/_" in key:
            continue
        target = os.path.join(root, key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        s3.download_file(args.bucket, key, target)
    return root, keys


def main():
    args = lake_args()
    root, keys = download(args, "sqi-lake-check-")

    base = os.path.join(root, args.prefix.strip("/"))
    con = duckdb.connect()
    out = {
        "objects": len(keys),
        "non_parquet": [k for k in keys if not k.endswith(".parquet") and "/_" not in k],
        "tables": {},
    }
    for table in TABLES:
        files = sorted(glob.glob(os.path.join(base, table, "**", "*.parquet"), recursive=True))
        if not files:
            continue
        rows = 0
        for f in files:
            rows += pq.read_metadata(f).num_rows
        described = con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false)", [files]
        ).fetchall()
        out["tables"][table] = {
            "files": len(files),
            "rows": rows,
            "columns": [[name, kind] for name, kind, *_ in described],
        }

    agg_glob = os.path.join(base, "aggregates", "**", "*.parquet")
    if "aggregates" in out["tables"]:
        sums = con.execute(
            f"""
            SELECT publisher, channel, event_type, device, SUM(events)::BIGINT AS events
            FROM read_parquet('{agg_glob}', hive_partitioning = true)
            GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
        out["aggregate_sums"] = [
            {"publisher": p, "channel": c, "event_type": t, "device": d, "events": n} for p, c, t, d, n in sums
        ]
        misplaced = con.execute(
            f"""
            SELECT COUNT(*) FROM read_parquet('{agg_glob}', hive_partitioning = true)
            WHERE strftime(window_start::TIMESTAMP, '%Y-%m-%d') <> dt::VARCHAR
               OR lpad(hour(window_start::TIMESTAMP)::VARCHAR, 2, '0') <> lpad(hour::VARCHAR, 2, '0')
            """
        ).fetchone()[0]
        out["misplaced_aggregate_rows"] = misplaced
        by_hour = con.execute(
            f"""
            SELECT epoch_ms(window_start::TIMESTAMP) AS w, publisher, coalesce(channel, '-'), event_type, device,
                   SUM(events)::BIGINT
            FROM read_parquet('{agg_glob}', hive_partitioning = true)
            GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
        out["aggregate_sums_by_hour"] = {"|".join(str(x) for x in row[:5]): row[5] for row in by_hour}
    events_glob = os.path.join(base, "events", "**", "*.parquet")
    if "events" in out["tables"]:
        out["event_ids"] = con.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM read_parquet('{events_glob}')"
        ).fetchone()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
