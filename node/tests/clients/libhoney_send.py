"""Sends events to Atoll with libhoney-py, unchanged but for api_host.

argv: api_host write_key dataset count. Event i: endpoint, status,
duration_ms, user; every 5th is pre-sampled at rate 4; event 0 has a fixed
time. Prints the status codes libhoney read back, as JSON.
"""
import datetime
import json
import queue
import sys

import libhoney

api_host, key, dataset, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
libhoney.init(writekey=key, dataset=dataset, api_host=api_host, max_concurrent_batches=2)
# Taken before close(), which forgets the client.
responses = libhoney.responses()
for i in range(count):
    ev = libhoney.new_event()
    ev.add({
        "endpoint": "/api/%d" % (i % 7),
        "status": 500 if i % 10 == 0 else 200,
        "duration_ms": i * 1.5,
        "user": "u%d" % (i % 13),
        "seq": i,
    })
    if i == 0:
        ev.created_at = datetime.datetime(2026, 11, 29, 8, 0, 0, 123456)
    if i % 5 == 0:
        ev.sample_rate = 4
        ev.send_presampled()
    else:
        ev.send()
libhoney.close()
statuses = []
while True:
    try:
        r = responses.get(timeout=5)
    except queue.Empty:
        break
    if r is None:
        break
    statuses.append({"status_code": r["status_code"], "error": str(r.get("error") or "")})
print(json.dumps(statuses))
