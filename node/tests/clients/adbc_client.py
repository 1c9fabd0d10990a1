"""ADBC's Flight SQL driver (with pyarrow) against Atoll's Flight SQL
door, driven by node/tests/flight_sql.rs.

Reads a JSON plan on stdin: {"uri": ..., "key": ... or null, "basic":
[user, password] or absent, "tls_root_certs": PEM or absent, "headers":
{...}, "steps": [...]}; each step is {"sql": ..., "params": [...]} (a
query read into a pyarrow Table) or {"objects": true} (the catalog, as
adbc_get_objects gives it). Prints {"results": [...]}: per step the column
names and Arrow types and the rows (timestamps as RFC 3339 in UTC), the
tables and their columns, or the error.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

from cells import value


def query(conn, step):
    cur = conn.cursor()
    try:
        params = step.get("params")
        cur.execute(step["sql"], parameters=params) if params else cur.execute(step["sql"])
        table = cur.fetch_arrow_table()
        rows = [[value(v) for v in row.values()] for row in table.to_pylist()]
        return {
            "columns": table.schema.names,
            "types": [str(t) for t in table.schema.types],
            "rows": rows,
        }
    except Exception as e:  # the driver's errors carry the gRPC status
        return {"error": str(e)}
    finally:
        cur.close()


def objects(conn):
    try:
        catalogs = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    except Exception as e:
        return {"error": str(e)}
    tables = {}
    for catalog in catalogs:
        for schema in catalog["catalog_db_schemas"]:
            for table in schema["db_schema_tables"]:
                name = f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
                tables[name] = [c["column_name"] for c in table["table_columns"]]
    return {"tables": tables}


def main():
    plan = json.load(sys.stdin)
    kwargs = {}
    if plan.get("key"):
        kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = "Bearer " + plan["key"]
    if plan.get("tls_root_certs"):
        kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = plan["tls_root_certs"]
    if plan.get("basic"):
        # A handshake: the server answers with the bearer token to use.
        kwargs["username"], kwargs["password"] = plan["basic"]
    for name, v in plan.get("headers", {}).items():
        kwargs[DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + name] = v
    results = []
    with flight_sql.connect(plan["uri"], db_kwargs=kwargs) as conn:
        for step in plan["steps"]:
            results.append(objects(conn) if step.get("objects") else query(conn, step))
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
