#!/usr/bin/env python3
"""An independent implementation of SQI.md in DuckDB SQL, for cross-checking.

It shares no code with SQI Engine's DataFusion job: it reads the lake's Parquet
files itself, uses DuckDB's own MEDIAN (the mean of the two middle values for an
even count), VAR_POP, FILTER clauses and window functions, and computes each
peer group separately in a Python loop.

usage: sqi_duckdb.py LAKE_DIR YYYY-MM-DD
Prints JSON: {publisher: {sqi, reason, peer_group, peer_count, pageviews, shares,
clickbacks, share_rate, clickback_rate, social_traffic_ratio, score_z, provisional}}.
"""
import datetime as dt
import json
import math
import os
import sys

import duckdb


def main():
    lake, day = sys.argv[1], dt.date.fromisoformat(sys.argv[2])
    start = dt.datetime.combine(day - dt.timedelta(days=27), dt.time(), dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    ms = lambda t: int(t.timestamp() * 1000)
    con = duckdb.connect()
    agg = os.path.join(lake, "aggregates", "**", "*.parquet")
    pubs = os.path.join(lake, "publishers", "*.parquet")
    con.execute(f"CREATE VIEW agg AS SELECT *, epoch_ms(window_start) AS t FROM read_parquet('{agg}', hive_partitioning = true)")
    has_pubs = bool(con.execute(f"SELECT count(*) FROM glob('{pubs}')").fetchone()[0])
    if has_pubs:
        con.execute(f"CREATE VIEW pubs AS SELECT * FROM read_parquet('{pubs}')")
    else:
        con.execute("CREATE TABLE pubs (publisher VARCHAR, category VARCHAR, created_at TIMESTAMPTZ)")

    rows = con.execute(
        f"""
        WITH w AS (
            SELECT publisher,
                   coalesce(sum(events) FILTER (WHERE event_type = 'pageview' AND device <> 'bot'), 0) AS v,
                   coalesce(sum(events) FILTER (WHERE event_type = 'share' AND device <> 'bot'), 0) AS s,
                   coalesce(sum(events) FILTER (WHERE event_type = 'clickback' AND device <> 'bot'), 0) AS c
            FROM agg WHERE t >= {ms(start)} AND t < {ms(end)}
            GROUP BY publisher
        ),
        first_seen AS (SELECT publisher, min(t) AS first_t FROM agg WHERE t < {ms(end)} GROUP BY publisher)
        SELECT w.publisher, w.v::BIGINT, w.s::BIGINT, w.c::BIGINT,
               coalesce(nullif(p.category, ''), 'uncategorized'),
               f.first_t, epoch_ms(p.created_at)
        FROM w
        LEFT JOIN pubs p USING (publisher)
        LEFT JOIN first_seen f USING (publisher)
        """
    ).fetchall()

    publishers = {}
    for name, v, s, c, category, first_t, created_t in rows:
        firsts = [x for x in (first_t, created_t) if x is not None]
        first_day = dt.datetime.fromtimestamp(min(firsts) / 1000, dt.timezone.utc).date() if firsts else None
        publishers[name] = dict(v=v, s=s, c=c, category=category,
                                provisional=first_day is not None and (day - first_day).days < 28)

    eligible = {p for p, r in publishers.items() if r["v"] >= 1000}
    by_category = {}
    for p in eligible:
        by_category.setdefault(publishers[p]["category"], []).append(p)
    groups = {"network": sorted(eligible)}
    for category, members in by_category.items():
        if len(members) >= 30:
            groups["category:" + category] = sorted(members)

    def group_of(p):
        key = "category:" + publishers[p]["category"]
        return key if key in groups else "network"

    components = [("s", "v"), ("c", "s"), ("c", "v")]
    results = {}
    for key, members in groups.items():
        con.execute("CREATE OR REPLACE TEMP TABLE m (publisher VARCHAR, v BIGINT, s BIGINT, c BIGINT)")
        con.executemany("INSERT INTO m VALUES (?, ?, ?, ?)",
                        [(p, publishers[p]["v"], publishers[p]["s"], publishers[p]["c"]) for p in members])
        priors = []
        for x, n in components:
            m, spread = con.execute(
                f"""
                WITH pooled AS (SELECT sum({x})::DOUBLE / greatest(sum({n}), 1) AS m FROM m)
                SELECT pooled.m,
                       var_pop({x}::DOUBLE / greatest({n}, 1)) - avg(pooled.m / greatest({n}, 1))
                FROM m, pooled GROUP BY pooled.m
                """
            ).fetchone()
            beta = 1e12 if spread <= 0 else m / spread
            priors.append((m * beta, beta))
        shrunk = {}
        for p in members:
            r = publishers[p]
            shrunk[p] = [(r[x] + a) / (r[n] + b) for (x, n), (a, b) in zip(components, priors)]
        con.execute("CREATE OR REPLACE TEMP TABLE r (publisher VARCHAR, r1 DOUBLE, r2 DOUBLE, r3 DOUBLE)")
        con.executemany("INSERT INTO r VALUES (?, ?, ?, ?)", [(p, *shrunk[p]) for p in members])
        medians = con.execute("SELECT median(r1), median(r2), median(r3) FROM r").fetchone()
        adj = lambda v: 1e-12 if v == 0 else v
        z = {p: sum(math.log(adj(rate) / adj(med)) for rate, med in zip(shrunk[p], medians)) / 3.0 for p in members}
        con.execute("CREATE OR REPLACE TEMP TABLE z (publisher VARCHAR, z DOUBLE)")
        con.executemany("INSERT INTO z VALUES (?, ?)", list(z.items()))
        ranks = con.execute(
            """
            SELECT publisher,
                   (SELECT count(*) FROM z b WHERE b.z < a.z) AS below,
                   (SELECT count(*) FROM z b WHERE b.z = a.z) AS equal
            FROM z a
            """
        ).fetchall()
        size = len(members)
        for p, below, equal in ranks:
            twice = 100 * (2 * below + equal)  # 200 q = 100 (2 below + equal) / n, kept in integers
            whole, rest = divmod(twice, size)
            rounded = whole + (1 if 2 * rest > size or (2 * rest == size and whole % 2 == 1) else 0)
            results[(key, p)] = dict(z=z[p], sqi=min(200, max(1, rounded)))
        results[key] = dict(priors=priors, size=size)

    out = {}
    for p, r in publishers.items():
        key = group_of(p)
        prior = results.get(key)
        rates = None
        if prior:
            rates = [(r[x] + a) / (r[n] + b) for (x, n), (a, b) in zip(components, prior["priors"])]
        scored = results.get((key, p)) if p in eligible else None
        out[p] = dict(
            pageviews=r["v"], shares=r["s"], clickbacks=r["c"], category=r["category"],
            peer_group="network" if key == "network" else r["category"],
            peer_count=prior["size"] if prior else None,
            share_rate=rates[0] if rates else None,
            clickback_rate=rates[1] if rates else None,
            social_traffic_ratio=rates[2] if rates else None,
            score_z=scored["z"] if scored else None,
            sqi=scored["sqi"] if scored else None,
            reason=None if p in eligible else "insufficient_pageviews",
            provisional=r["provisional"],
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
