#!/usr/bin/env python3
"""The report benchmark's baseline: DuckDB answering the report API's three
queries (30-day summary with the latest SQI, 30-day daily timeseries, top 20
URLs) for the same publishers over the same Parquet files the API reads for
whole UTC days merged into months (`monthly`, `monthly_urls`, and the newest
`sqi` day), from CLIENTS threads with a
cursor each. A first pass over each publisher warms caches and is not
measured; then REQUESTS queries cycle through the publishers, as the API's
benchmark does.

usage: bench/duckdb_report.py LAKE_DIR FROM TO CLIENTS REQUESTS < publishers.txt
Prints JSON: p50/p99 in ms per query.
"""

import concurrent.futures
import json
import sys
import time

import duckdb


def quantile(values, q):
    values = sorted(values)
    return round(values[min(int(len(values) * q), len(values) - 1)] * 1000, 1)


def main() -> None:
    lake, first, last = sys.argv[1], sys.argv[2], sys.argv[3]
    clients, requests = int(sys.argv[4]), int(sys.argv[5])
    publishers = [line.strip() for line in sys.stdin if line.strip()]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for view, table in (("daily", "monthly"), ("daily_urls", "monthly_urls")):
        con.execute(
            f"""CREATE VIEW {view} AS SELECT * FROM read_parquet(
                '{lake}/{table}/*/*.parquet', hive_partitioning = true,
                hive_types = {{'month': VARCHAR}})"""
        )
    con.execute(
        f"""CREATE VIEW sqi AS SELECT * FROM read_parquet(
            '{lake}/sqi/dt={last}/*.parquet')"""
    )
    window = f"date BETWEEN DATE '{first}' AND DATE '{last}' AND publisher = ?"
    queries = {
        "summary": [
            f"""SELECT event_type, SUM(events) FROM daily
                WHERE {window} AND device <> 'bot' GROUP BY 1""",
            f"""SELECT * FROM sqi WHERE publisher = ?
                ORDER BY date DESC LIMIT 1""",
        ],
        "timeseries_30d": [
            f"""SELECT date, SUM(events) FROM daily
                WHERE {window} AND device <> 'bot' AND event_type = 'pageview' GROUP BY 1"""
        ],
        "top_urls": [
            f"""SELECT url, SUM(events) FILTER (WHERE event_type = 'share') AS shares
                FROM daily_urls WHERE {window} GROUP BY 1 ORDER BY shares DESC, url LIMIT 20"""
        ],
    }
    out = {}
    for name, statements in queries.items():
        def one(publisher):
            cursor = con.cursor()
            started = time.perf_counter()
            for sql in statements:
                cursor.execute(sql, [publisher]).fetchall()
            return time.perf_counter() - started

        measured = [publishers[i % len(publishers)] for i in range(requests)]
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, publishers))  # warm-up, not measured
            latencies = list(pool.map(one, measured))
        out[name] = {"p50_ms": quantile(latencies, 0.5), "p99_ms": quantile(latencies, 0.99)}
    out["engine"] = f"duckdb {duckdb.__version__}"
    out["clients"] = clients
    print(json.dumps(out))


if __name__ == "__main__":
    main()
