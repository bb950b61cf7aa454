#!/usr/bin/env python3
"""Runs the published SQL (sqi/batch/sql/, as docs/sqi-sql.md shows it) in DuckDB
over a local lake, unchanged apart from its date placeholders: the day's
totals, its totals per URL and per UTC hour, the first-seen table and the SQI,
each written to a Parquet file as `sqi batch` does, so the two do the same work.

Stage 1 and the first-seen table run in their stored form (reading the lake's
`daily` and `first_seen`, which `sqi batch` wrote for the days before) unless
--from-history asks for the form that reads every hourly row instead: the SQL
someone starting from SQI.md and the hourly tables would run.

Prints one JSON line: wall seconds, peak RSS of this process (DuckDB runs in
it), rows and scored rows. With --rows FILE, also writes every row's
publisher, sqi, peer_group and score_z as JSON, to compare with `sqi batch`.

usage: bench/duckdb_sqi.py LAKE_DIR YYYY-MM-DD [--from-history] [--threads N] [--memory-limit 8GB] [--rows FILE]
"""

import argparse
import datetime
import json
import pathlib
import resource
import tempfile
import time

import duckdb

ROOT = pathlib.Path(__file__).resolve().parent.parent


def render(template: str, day: datetime.date) -> str:
    days = datetime.timedelta
    return (
        template.replace("{{date}}", day.isoformat())
        .replace("{{window_from}}", (day - days(days=27)).isoformat())
        .replace("{{next_day}}", (day + days(days=1)).isoformat())
        .replace("{{previous_day}}", (day - days(days=1)).isoformat())
        .replace("{{provisional_after}}", (day - days(days=28)).isoformat())
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lake", type=pathlib.Path)
    parser.add_argument("date", type=datetime.date.fromisoformat)
    parser.add_argument("--from-history", action="store_true", help="stage 1 and first_seen from the hourly history")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--memory-limit", default="8GB")
    parser.add_argument("--rows", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, help="where the Parquet goes (default: a temporary directory)")
    args = parser.parse_args()

    form = "_history" if args.from_history else ""
    inputs_sql = render((ROOT / f"sqi/batch/sql/sqi_inputs{form}.sql").read_text(), args.date)
    first_seen_sql = render((ROOT / f"sqi/batch/sql/first_seen{form}.sql").read_text(), args.date)
    score_sql = render((ROOT / "sqi/batch/sql/sqi_score.sql").read_text(), args.date)
    daily_sql = render((ROOT / "sqi/batch/sql/daily.sql").read_text(), args.date)
    daily_urls_sql = render((ROOT / "sqi/batch/sql/daily_urls.sql").read_text(), args.date)
    daily_hours_sql = render((ROOT / "sqi/batch/sql/daily_hours.sql").read_text(), args.date)
    lake = args.lake.resolve()
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="duckdb-sqi-"))

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{args.memory_limit}'")
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
    con.execute(
        f"""CREATE VIEW aggregates AS SELECT * FROM read_parquet(
            '{lake}/aggregates/*/*/*.parquet', hive_partitioning = true,
            hive_types = {{'dt': VARCHAR, 'hour': VARCHAR}})"""
    )
    con.execute(
        f"""CREATE VIEW url_counts AS SELECT * FROM read_parquet(
            '{lake}/url_counts/*/*/*.parquet', hive_partitioning = true,
            hive_types = {{'dt': VARCHAR, 'hour': VARCHAR}})"""
    )
    con.execute(
        f"CREATE VIEW publishers AS SELECT * FROM read_parquet('{lake}/publishers/*.parquet')"
    )
    if not args.from_history:
        for table in ("daily", "first_seen"):
            con.execute(
                f"""CREATE VIEW {table} AS SELECT * FROM read_parquet(
                    '{lake}/{table}/*/*.parquet', hive_partitioning = true,
                    hive_types = {{'dt': VARCHAR}})"""
            )
    con.execute(f"COPY ({daily_sql}) TO '{out}/daily.parquet' (FORMAT parquet, COMPRESSION snappy)")
    con.execute(
        f"COPY ({daily_urls_sql}) TO '{out}/daily_urls.parquet' (FORMAT parquet, COMPRESSION snappy)"
    )
    con.execute(
        f"COPY ({daily_hours_sql}) TO '{out}/daily_hours.parquet' (FORMAT parquet, COMPRESSION snappy)"
    )
    con.execute(
        f"COPY ({first_seen_sql}) TO '{out}/first_seen.parquet' (FORMAT parquet, COMPRESSION snappy)"
    )
    con.execute(f"CREATE TEMP TABLE inputs AS {inputs_sql}")
    con.execute(f"CREATE TEMP TABLE scored AS {score_sql}")
    con.execute(f"COPY scored TO '{out}/sqi.parquet' (FORMAT parquet, COMPRESSION snappy)")
    seconds = time.perf_counter() - started
    count, scored = con.execute("SELECT COUNT(*), COUNT(sqi) FROM scored").fetchone()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    if args.rows:
        rows = con.execute("SELECT * FROM scored").fetchall()
        at = {d[0]: i for i, d in enumerate(con.description)}
        args.rows.write_text(
            json.dumps(
                {
                    row[at["publisher"]]: {
                        "sqi": row[at["sqi"]],
                        "peer_group": row[at["peer_group"]],
                        "score_z": row[at["score_z"]],
                    }
                    for row in rows
                }
            )
        )
    print(
        json.dumps(
            {
                "engine": f"duckdb {duckdb.__version__}",
                "form": "history" if args.from_history else "stored",
                "seconds": round(seconds, 2),
                "peak_rss_mib": round(peak_kib / 1024),
                "rows": count,
                "scored": scored,
            }
        )
    )


if __name__ == "__main__":
    main()
