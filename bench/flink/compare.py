"""Puts the Flink peer beside `sqi process` on the same topic, after checking
that both counted the same events.

usage: python3 bench/flink/compare.py SQI_BENCH_JSON OUR_LAKE_TOTALS_JSON FLINK_JSON

SQI_BENCH_JSON is `sqi-bench process --lake-dir ...`'s output,
OUR_LAKE_TOTALS_JSON is `lake_totals.py` over that lake, FLINK_JSON is
`bench/flink/run`'s line. Exits 1, printing both sides' totals and no speed,
when the aggregates' totals per event type differ, or when either lake's
tables disagree with themselves or with the events produced; otherwise prints
one JSON object: per engine events per CPU-second, wall-clock events/s, peak
RSS, files and bytes per million events, and the ratio ours/Flink of events
per CPU-second.
"""

import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def main(bench_path, ours_path, flink_path):
    bench, ours, flink = load(bench_path), load(ours_path), load(flink_path)
    produced = bench["events"]
    ours_by_type = ours["aggregates"]["by_type"]
    problems = []
    if ours_by_type != flink["events_by_type"]:
        problems.append("the aggregates' totals per event type differ")
    for table in ("events", "url_counts"):
        if ours[table]["by_type"] != ours_by_type:
            problems.append(f"our {table} and aggregates differ")
    if ours["aggregates"]["total"] != produced:
        problems.append(f"our aggregates hold {ours['aggregates']['total']} events of {produced} produced")
    if flink["records"] != produced:
        problems.append(f"Flink read {flink['records']} records of {produced} produced")
    if problems:
        print(json.dumps({"ours": ours_by_type, "flink": flink["events_by_type"]}, sort_keys=True),
              file=sys.stderr)
        sys.exit("bench-process: Flink and sqi process disagree: " + "; ".join(problems) +
                 " (no speed is reported)")

    millions = produced / 1e6
    sqi = {
        "events_per_cpu_s": bench["processor_events_per_cpu_s"],
        "events_per_s_wall": bench["processor_events_per_s_wall"],
        "cpu_s": bench["processor_cpu_s"],
        "wall_s": bench["processor_wall_s"],
        # The whole sqi-bench process, the producer filling the topic and the
        # bare consumers included: not less than the processor's own.
        "peak_rss_mib": bench["peak_rss_mib"],
        "files_per_million_events": round(ours["files"] / millions),
        "bytes_per_million_events": round(ours["bytes"] / millions),
    }
    peer = {key: flink[key] for key in (
        "events_per_cpu_s", "events_per_s_wall", "cpu_s", "wall_s", "peak_rss_mib",
        "files_per_million_events", "bytes_per_million_events", "process_cpu_s",
        "process_wall_s", "parallelism", "checkpoint_ms", "heap")}
    out = {
        "topic": bench["topic"],
        "events": produced,
        "totals_equal": True,
        "events_by_type": ours_by_type,
        "sqi_process": sqi,
        "flink": peer,
        "ratio_events_per_cpu_s_ours_to_flink": round(
            sqi["events_per_cpu_s"] / max(flink["events_per_cpu_s"], 1), 2),
        "ratio_events_per_s_wall_ours_to_flink": round(
            sqi["events_per_s_wall"] / max(flink["events_per_s_wall"], 1), 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])
