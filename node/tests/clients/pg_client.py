"""psycopg 3 against Atoll's Postgres door, driven by node/tests/pg.rs.

Reads a JSON plan on stdin: {"dsn": ..., "steps": [...]}; each step is
{"sql": ..., "params": [...], "binary": bool, "prepare": bool} and runs in
order on one
connection, or {"cancel_after": seconds, "sql": ...}, which starts the
query, cancels it with a cancel request once it has run that long, and
reports how it ended. Parameters written {"ts": "<RFC 3339>"} are sent as
timezone-aware datetimes. Prints {"results": [...]}: per step the column
names, the rows (timestamps as RFC 3339 in UTC), the NOTICEs received, or
the error's SQLSTATE and message.
"""

import datetime
import json
import sys
import threading
import time

import psycopg

from cells import value


def param(p):
    if isinstance(p, dict) and "ts" in p:
        return datetime.datetime.fromisoformat(p["ts"].replace("Z", "+00:00"))
    return p


def run(conn, step, notices):
    notices.clear()
    try:
        cur = conn.cursor(binary=step.get("binary", False))
        params = [param(p) for p in step.get("params", [])]
        cur.execute(step["sql"], params or None, prepare=step.get("prepare"))
        rows = [[value(v) for v in row] for row in cur.fetchall()] if cur.description else []
        columns = [c.name for c in cur.description] if cur.description else []
        types = [c.type_code for c in cur.description] if cur.description else []
        return {"columns": columns, "types": types, "rows": rows, "notices": list(notices)}
    except psycopg.Error as e:
        conn.rollback()
        return {"error": {"sqlstate": e.sqlstate, "message": str(e)}, "notices": list(notices)}


def cancel_after(conn, step):
    outcome = {}

    def query():
        try:
            conn.execute(step["sql"]).fetchall()
            outcome["finished"] = True
        except psycopg.Error as e:
            outcome["error"] = {"sqlstate": e.sqlstate, "message": str(e)}

    thread = threading.Thread(target=query)
    started = time.monotonic()
    thread.start()
    thread.join(step["cancel_after"])
    if not thread.is_alive():
        return {"finished_before_cancel": True, **outcome}
    conn.cancel_safe()
    thread.join(60)
    outcome["seconds_after_cancel"] = time.monotonic() - started - step["cancel_after"]
    outcome["still_running"] = thread.is_alive()
    return outcome


def main():
    plan = json.load(sys.stdin)
    notices = []
    with psycopg.connect(plan["dsn"], autocommit=plan.get("autocommit", True)) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        results = []
        for step in plan["steps"]:
            if "cancel_after" in step:
                results.append(cancel_after(conn, step))
            else:
                results.append(run(conn, step, notices))
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
