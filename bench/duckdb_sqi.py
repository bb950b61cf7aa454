#!/usr/bin/env python3
"""Runs the published SQI SQL (sqi/sql/, as docs/sqi-sql.md shows it) in DuckDB
over a local lake, unchanged apart from its date placeholders.

Prints one JSON line: wall seconds, peak RSS of this process (DuckDB runs in
it), rows and scored rows. With --rows FILE, also writes every row's
publisher, sqi, peer_group and score_z as JSON, to compare with `sqi batch`.

usage: bench/duckdb_sqi.py LAKE_DIR YYYY-MM-DD [--threads N] [--memory-limit 8GB] [--rows FILE]
"""

import argparse
import datetime
import json
import pathlib
import resource
import time

import duckdb

ROOT = pathlib.Path(__file__).resolve().parent.parent


def render(template: str, day: datetime.date) -> str:
    days = datetime.timedelta
    return (
        template.replace("{{date}}", day.isoformat())
        .replace("{{window_from}}", (day - days(days=27)).isoformat())
        .replace("{{next_day}}", (day + days(days=1)).isoformat())
        .replace("{{provisional_after}}", (day - days(days=28)).isoformat())
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lake", type=pathlib.Path)
    parser.add_argument("date", type=datetime.date.fromisoformat)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--memory-limit", default="8GB")
    parser.add_argument("--rows", type=pathlib.Path)
    args = parser.parse_args()

    inputs_sql = render((ROOT / "sqi/sql/sqi_inputs.sql").read_text(), args.date)
    score_sql = render((ROOT / "sqi/sql/sqi_score.sql").read_text(), args.date)
    lake = args.lake.resolve()

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
        f"CREATE VIEW publishers AS SELECT * FROM read_parquet('{lake}/publishers/*.parquet')"
    )
    con.execute(f"CREATE TEMP TABLE inputs AS {inputs_sql}")
    rows = con.execute(score_sql).fetchall()
    columns = [d[0] for d in con.description]
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    at = {name: i for i, name in enumerate(columns)}
    scored = sum(1 for row in rows if row[at["sqi"]] is not None)
    if args.rows:
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
                "seconds": round(seconds, 2),
                "peak_rss_mib": round(peak_kib / 1024),
                "rows": len(rows),
                "scored": scored,
            }
        )
    )


if __name__ == "__main__":
    main()
