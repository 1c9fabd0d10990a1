"""DuckDB as a peer of atoll-bench: the events in an in-memory table
(read_json with explicit columns), the shared queries in DuckDB's dialect.

Usage: duckdb_peer.py EVENTS.ndjson QUERIES.sql RUNS
"""

import re
import sys

import duckdb

import peer

NAME = "DuckDB"
TYPES = {
    "time": "TIMESTAMPTZ", "service": "VARCHAR", "endpoint": "VARCHAR",
    "region": "VARCHAR", "host": "VARCHAR", "status": "BIGINT",
    "duration_ms": "DOUBLE", "bytes": "BIGINT", "user_id": "VARCHAR",
    "is_mobile": "BOOLEAN", "tags": "VARCHAR[]",
    "client": "STRUCT(name VARCHAR, version VARCHAR)",
}


def version():
    return duckdb.__version__


def load(events):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = ", ".join(f"'{k}': '{TYPES[k]}'" for k in peer.COLUMNS)
    con.execute(
        f"CREATE TABLE events AS SELECT * FROM read_json('{events}', "
        f"format = 'newline_delimited', columns = {{{columns}}})"
    )
    return con


def translate(_tag, sql):
    """DataFusion's spelling of the same questions, in DuckDB's."""
    sql = peer.sketches(sql, "approx_quantile({column}, {p})", "approx_count_distinct")
    return re.sub(r"TIMESTAMP '([^']*)Z'", r"TIMESTAMPTZ '\1+00:00'", sql)


def run(con, _tag, sql):
    return con.execute(sql).fetchall()


if __name__ == "__main__":
    peer.main(sys.modules[__name__])
