"""What a lake's hourly tables hold, read back from their Parquet files.

usage: python3 bench/flink/lake_totals.py DIR

Prints one JSON line: per table (events, aggregates, url_counts) its visible
Parquet files and their bytes, the rows of `events`, and the sums of the
`events` column of `aggregates` and `url_counts`, in total and per event type.
Both engines' lakes are read by this same script, so a peer that dropped or
doubled events cannot show the same totals as the processor.
Files whose names start with "." or "_" are not visible (Flink's in-progress
files; the processor's range log and markers are outside these tables).
"""

import json
import os
import sys

import duckdb

TABLES = ("events", "aggregates", "url_counts")


def visible_parquet(root):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                yield os.path.join(folder, name)


def main(lake):
    con = duckdb.connect()
    out = {"lake": lake}
    for table in TABLES:
        files = list(visible_parquet(os.path.join(lake, table)))
        out[table] = {"files": len(files), "bytes": sum(os.path.getsize(f) for f in files)}
        if not files:
            out[table].update(by_type={}, total=0)
            continue
        source = f"read_parquet({files!r})"
        if table == "events":
            rows = con.execute(f"SELECT type, count(*) FROM {source} GROUP BY 1").fetchall()
        else:
            rows = con.execute(f"SELECT event_type, sum(events)::BIGINT FROM {source} GROUP BY 1").fetchall()
        by_type = {kind: int(n) for kind, n in sorted(rows)}
        out[table].update(by_type=by_type, total=sum(by_type.values()))
    out["files"] = sum(out[t]["files"] for t in TABLES)
    out["bytes"] = sum(out[t]["bytes"] for t in TABLES)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
