"""Emits traces and logs to Atoll with the OpenTelemetry Python SDK and its
OTLP/HTTP exporters, unchanged but for the endpoint and the key header.

argv: base_url key service. A request span (server) with two children
(a database call and a cache call that fails with an error status and an
exception event), attributes of every type, and two log records, one
inside the request span. Prints the ids it made, as JSON.
"""
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

base, key, service = sys.argv[1], sys.argv[2], sys.argv[3]
headers = {"authorization": "Bearer " + key}
resource = Resource.create({"service.name": service, "deployment.environment": "test"})

tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=base + "/v1/traces", headers=headers)))
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    BatchLogRecordProcessor(OTLPLogExporter(endpoint=base + "/v1/logs", headers=headers)))
set_logger_provider(logger_provider)
log = logging.getLogger("shop")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

tracer = trace.get_tracer("shop.tracer", "1.2.3")
with tracer.start_as_current_span("GET /cart", kind=trace.SpanKind.SERVER) as root:
    root.set_attribute("http.status_code", 200)
    root.set_attribute("cart.value", 12.5)
    root.set_attribute("user.premium", True)
    root.set_attribute("cart.items", ["apple", "pear"])
    with tracer.start_as_current_span("SELECT cart", kind=trace.SpanKind.CLIENT) as db:
        db.set_attribute("db.rows", 3)
    with tracer.start_as_current_span("cache get") as cache:
        try:
            raise KeyError("cart:42")
        except KeyError as e:
            cache.record_exception(e)
            cache.set_status(Status(StatusCode.ERROR, "cache miss"))
    log.warning("cart is slow for %s", "u7")
log.info("after the request")

ids = {
    "trace_id": format(root.get_span_context().trace_id, "032x"),
    "root": format(root.get_span_context().span_id, "016x"),
    "db": format(db.get_span_context().span_id, "016x"),
    "cache": format(cache.get_span_context().span_id, "016x"),
}
ok = tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
tracer_provider.shutdown()
logger_provider.shutdown()
ids["flushed"] = bool(ok)
print(json.dumps(ids))
