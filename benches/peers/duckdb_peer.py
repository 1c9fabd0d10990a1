"""DuckDB as a peer of atoll-bench: loads the same NDJSON events into an
in-memory DuckDB table, runs the shared queries (translated from
DataFusion's dialect) with one warm-up and N timed runs each, and prints
one JSON document: load time, and per query the median and max ms and the
rows, rendered as Atoll renders them (times as RFC 3339 UTC with 0, 3 or 6
fraction digits) so that answers compare cell by cell.

Usage: duckdb_peer.py EVENTS.ndjson QUERIES.sql RUNS
"""

import datetime
import decimal
import json
import re
import sys
import time

import duckdb

COLUMNS = {
    "time": "TIMESTAMPTZ",
    "service": "VARCHAR",
    "endpoint": "VARCHAR",
    "region": "VARCHAR",
    "host": "VARCHAR",
    "status": "BIGINT",
    "duration_ms": "DOUBLE",
    "bytes": "BIGINT",
    "user_id": "VARCHAR",
    "is_mobile": "BOOLEAN",
    "tags": "VARCHAR[]",
    "client": "STRUCT(name VARCHAR, version VARCHAR)",
}


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


def translate(sql):
    """DataFusion's spelling of the same questions, in DuckDB's."""
    sql = re.sub(
        r"approx_percentile_cont\(([^)]*)\) WITHIN GROUP \(ORDER BY (\w+)\)",
        r"approx_quantile(\2, \1)",
        sql,
    )
    sql = sql.replace("approx_distinct(", "approx_count_distinct(")
    sql = re.sub(r"TIMESTAMP '([^']*)Z'", r"TIMESTAMPTZ '\1+00:00'", sql)
    return sql


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


def main():
    events, queries, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
    started = time.perf_counter()
    con.execute(
        f"CREATE TABLE events AS SELECT * FROM read_json('{events}', "
        f"format = 'newline_delimited', columns = {{{columns}}})"
    )
    load = time.perf_counter() - started
    results = []
    for tag, sql in load_queries(queries):
        sql = translate(sql)
        wall, rows = [], []
        for run in range(runs + 1):
            t = time.perf_counter()
            rows = con.execute(sql).fetchall()
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
        {"version": duckdb.__version__, "load_seconds": load, "queries": results},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
