"""What every peer of atoll-bench shares: the shared questions, answers
rendered as Atoll renders them (times as RFC 3339 UTC with 0, 3 or 6
fraction digits) so that answers compare cell by cell, and the timing: a
load, then per query one warm-up and N timed runs, printed as one JSON
document on stdout.

A peer module defines `NAME`, `version()`, `load(events_path)` returning
its state, `translate(tag, sql)` and `run(state, tag, sql)` returning the
rows as tuples; `main(peer_module)` does the rest.
"""

import datetime
import decimal
import json
import re
import sys
import time

# The columns of the shared generator's events (gen_events.py).
COLUMNS = [
    "time", "service", "endpoint", "region", "host", "status",
    "duration_ms", "bytes", "user_id", "is_mobile", "tags", "client",
]


def load_queries(path):
    """(tag, sql) pairs: the line after each `-- Qn:` tag."""
    out, tag = [], None
    for line in open(path, encoding="utf-8"):
        if line.startswith("-- Q"):
            tag = line[3:].split(":")[0]
        elif tag:
            out.append((tag, line.strip().rstrip(";")))
            tag = None
    return out


def sketches(sql, quantile, distinct):
    """The shared questions' approximate functions in a peer's spelling:
    `quantile` formats `{p}` and `{column}`, `distinct` names a function."""
    sql = re.sub(
        r"approx_percentile_cont\(([^)]*)\) WITHIN GROUP \(ORDER BY (\w+)\)",
        lambda m: quantile.format(p=m.group(1), column=m.group(2)),
        sql,
    )
    return sql.replace("approx_distinct(", f"{distinct}(")


def render(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        micros = value.microsecond
        if micros % 1000 == 0 and micros:
            text += ".%03d" % (micros // 1000)
        elif micros:
            text += ".%06d" % micros
        return text + "Z"
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def main(peer):
    events, queries, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = time.perf_counter()
    state = peer.load(events)
    load = time.perf_counter() - started
    results = []
    for tag, sql in load_queries(queries):
        sql = peer.translate(tag, sql)
        wall, rows = [], []
        for run in range(runs + 1):
            t = time.perf_counter()
            rows = peer.run(state, tag, sql)
            ms = (time.perf_counter() - t) * 1e3
            if run > 0:
                wall.append(ms)
        wall.sort()
        results.append(
            {
                "query": tag,
                "sql": sql,
                "median_ms": wall[len(wall) // 2],
                "max_ms": wall[-1],
                "rows": [[render(v) for v in r] for r in rows],
            }
        )
    json.dump(
        {"engine": peer.NAME, "version": peer.version(), "load_seconds": load, "queries": results},
        sys.stdout,
    )
