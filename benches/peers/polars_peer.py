"""polars as a peer of atoll-bench: the events read with polars' NDJSON
reader (explicit schema) into a DataFrame, each shared question written in
polars' expression API (its fastest path; polars has no approximate
quantile or distinct count, so Q5 and Q6 are exact).

Usage: polars_peer.py EVENTS.ndjson QUERIES.sql RUNS
"""

import datetime
import sys

import polars as pl

import peer

NAME = "polars"
SCHEMA = {
    "time": pl.String, "service": pl.String, "endpoint": pl.String,
    "region": pl.String, "host": pl.String, "status": pl.Int64,
    "duration_ms": pl.Float64, "bytes": pl.Int64, "user_id": pl.String,
    "is_mobile": pl.Boolean, "tags": pl.List(pl.String),
    "client": pl.Struct({"name": pl.String, "version": pl.String}),
}


def version():
    return pl.__version__


def load(events):
    df = pl.read_ndjson(events, schema=SCHEMA)
    return df.with_columns(pl.col("time").str.to_datetime(time_unit="us", time_zone="UTC"))


def translate(_tag, sql):
    return sql


def at(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


QUERIES = {
    "Q1": lambda df: df.select(pl.len()),
    "Q2": lambda df: df.group_by("status").agg(n=pl.len()).sort(["n", "status"], descending=[True, False]),
    "Q3": lambda df: df.filter(pl.col("status") >= 500)
    .group_by("service")
    .agg(avg_ms=pl.col("duration_ms").mean(), max_ms=pl.col("duration_ms").max(), n=pl.len())
    .sort(["avg_ms", "service"], descending=[True, False]),
    "Q4": lambda df: df.filter((pl.col("time") >= at("2026-01-01T06:00:00Z")) & (pl.col("time") < at("2026-01-01T07:00:00Z")))
    .group_by(minute=pl.col("time").dt.truncate("1m"), region=pl.col("region"))
    .agg(n=pl.len())
    .sort(["minute", "region"]),
    "Q5": lambda df: df.group_by("endpoint")
    .agg(p99=pl.col("duration_ms").quantile(0.99, "linear"), n=pl.len())
    .sort(["p99", "endpoint"], descending=[True, False])
    .head(10),
    "Q6": lambda df: df.group_by("region").agg(users=pl.col("user_id").n_unique()).sort("region"),
    "Q7": lambda df: df.group_by("user_id")
    .agg(n=pl.len(), total_bytes=pl.col("bytes").sum())
    .sort(["n", "user_id"], descending=[True, False])
    .head(10),
    "Q8": lambda df: df.filter(pl.col("user_id") == "u4242")
    .sort("time", descending=True)
    .head(100)
    .select(["time", "service", "endpoint", "status", "duration_ms"]),
}


def run(df, tag, _sql):
    return QUERIES[tag](df).rows()


if __name__ == "__main__":
    peer.main(sys.modules[__name__])
