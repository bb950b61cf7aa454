#!/usr/bin/env python3
"""The report API's numbers, recomputed by DuckDB straight from the lake's
Parquet files, for one publisher over local days FROM..TO in TZ.

usage: report_duckdb.py LAKE_DIR PUBLISHER TZ FROM TO
Prints JSON: totals, pageviews per local day, shares and clickbacks per
channel, and pageviews, shares and clickbacks per URL (bots excluded).
"""

import json
import sys

import duckdb


def main() -> None:
    lake, publisher, tz, first, last = sys.argv[1:6]
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{tz}'")
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
    # Local days: the session time zone makes ::DATE and the bounds local.
    window = f"""publisher = '{publisher}'
        AND window_start >= TIMESTAMPTZ '{first} 00:00:00'
        AND window_start < TIMESTAMPTZ '{last} 00:00:00' + INTERVAL 1 DAY"""
    counted = f"{window} AND device <> 'bot'"
    totals = dict(
        con.execute(
            f"SELECT event_type, SUM(events) FROM aggregates WHERE {counted} GROUP BY 1"
        ).fetchall()
    )
    days = {
        str(day): int(n)
        for day, n in con.execute(
            f"""SELECT window_start::DATE, SUM(events) FROM aggregates
                WHERE {counted} AND event_type = 'pageview' GROUP BY 1"""
        ).fetchall()
    }
    channels = {}
    for channel, kind, n in con.execute(
        f"""SELECT channel, event_type, SUM(events) FROM aggregates
            WHERE {counted} AND event_type IN ('share', 'clickback') GROUP BY 1, 2"""
    ).fetchall():
        channels.setdefault(channel, {"shares": 0, "clickbacks": 0})[
            "shares" if kind == "share" else "clickbacks"
        ] = int(n)
    urls = {}
    for url, kind, n in con.execute(
        f"SELECT url, event_type, SUM(events) FROM url_counts WHERE {window} GROUP BY 1, 2"
    ).fetchall():
        urls.setdefault(url, {"pageviews": 0, "shares": 0, "clickbacks": 0})[kind + "s"] = int(n)
    print(
        json.dumps(
            {
                "totals": {
                    "pageviews": int(totals.get("pageview", 0)),
                    "shares": int(totals.get("share", 0)),
                    "clickbacks": int(totals.get("clickback", 0)),
                },
                "days": days,
                "channels": channels,
                "urls": urls,
            }
        )
    )


if __name__ == "__main__":
    main()
