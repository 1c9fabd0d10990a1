"""ClickHouse (chDB, in process) as a peer of atoll-bench: the events in a
Memory table (JSONEachRow with explicit columns), the shared queries in
ClickHouse's dialect (quantile, uniq), answers read as Arrow.

Usage: chdb_peer.py EVENTS.ndjson QUERIES.sql RUNS
"""

import re
import sys

import chdb
from chdb import session as chs

import peer

NAME = "ClickHouse (chDB)"
TYPES = {
    "time": "DateTime64(6, 'UTC')", "service": "Nullable(String)",
    "endpoint": "Nullable(String)", "region": "Nullable(String)",
    "host": "Nullable(String)", "status": "Nullable(Int64)",
    "duration_ms": "Nullable(Float64)", "bytes": "Nullable(Int64)",
    "user_id": "Nullable(String)", "is_mobile": "Nullable(Bool)",
    "tags": "Array(Nullable(String))",
    "client": "Tuple(name Nullable(String), version Nullable(String))",
}
SETTINGS = (
    "SETTINGS date_time_input_format = 'best_effort', "
    "input_format_skip_unknown_fields = 1, input_format_null_as_default = 1"
)


def version():
    return chdb.__version__


def load(events):
    s = chs.Session()
    columns = ", ".join(f"`{k}` {TYPES[k]}" for k in peer.COLUMNS)
    s.query(f"CREATE TABLE events ({columns}) ENGINE = Memory")
    structure = columns.replace("'", "\\'")
    s.query(f"INSERT INTO events SELECT * FROM file('{events}', 'JSONEachRow', '{structure}') {SETTINGS}")
    return s


def translate(_tag, sql):
    """DataFusion's spelling of the same questions, in ClickHouse's."""
    sql = peer.sketches(sql, "quantile({p})({column})", "uniq")
    sql = sql.replace("date_trunc('minute', time)", "CAST(toStartOfMinute(time) AS DateTime64(6, 'UTC'))")
    return re.sub(r"TIMESTAMP '([^']*)Z'", r"toDateTime64('\1', 6, 'UTC')", sql.replace("T06", " 06").replace("T07", " 07"))


def run(s, _tag, sql):
    table = s.query(sql, "ArrowTable")
    return [tuple(r.values()) for r in table.to_pylist()]


if __name__ == "__main__":
    peer.main(sys.modules[__name__])
