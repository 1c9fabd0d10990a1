"""Cells as the tests compare them with /v1/query's JSON: timestamps as
RFC 3339 in UTC, lists element by element."""

import datetime


def value(v):
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, list):
        return [value(x) for x in v]
    return v
