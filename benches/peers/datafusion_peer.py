"""DataFusion as shipped (the `datafusion` wheel, built fully optimized) as
a peer of atoll-bench: the events read with pyarrow's JSON reader (explicit
schema, all cores) into a MemTable, the shared queries as they are.

Usage: datafusion_peer.py EVENTS.ndjson QUERIES.sql RUNS
"""

import sys

import datafusion
import pyarrow as pa
import pyarrow.json as pj

import peer

NAME = "DataFusion (pip, optimized)"
SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")), ("service", pa.string()),
    ("endpoint", pa.string()), ("region", pa.string()), ("host", pa.string()),
    ("status", pa.int64()), ("duration_ms", pa.float64()), ("bytes", pa.int64()),
    ("user_id", pa.string()), ("is_mobile", pa.bool_()),
    ("tags", pa.list_(pa.string())),
    ("client", pa.struct([("name", pa.string()), ("version", pa.string())])),
])


def version():
    return datafusion.__version__


def load(events):
    table = pj.read_json(
        events,
        parse_options=pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore"),
    )
    ctx = datafusion.SessionContext()
    ctx.register_record_batches("events", [table.to_batches()])
    return ctx


def translate(_tag, sql):
    return sql


def run(ctx, _tag, sql):
    table = ctx.sql(sql).to_arrow_table()
    return [tuple(r.values()) for r in table.to_pylist()]


if __name__ == "__main__":
    peer.main(sys.modules[__name__])
