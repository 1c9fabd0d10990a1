"""Emits traces and logs to Atoll with the OpenTelemetry Python SDK and its
OTLP/HTTP exporters, unchanged but for the endpoint and the key header.

argv: endpoint key service transport (http: endpoint is the node's URL;
grpc: its OTLP/gRPC address). A request span (server) with two children
(a database call and a cache call that fails with an error status and an
exception event), attributes of every type, and two log records, one
inside the request span. Prints the ids it made, as JSON.
"""
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

base, key, service, transport = sys.argv[1:5]
if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    headers = (("authorization", "Bearer " + key),)
    spans = OTLPSpanExporter(endpoint="http://" + base, insecure=True, headers=headers)
    logs = OTLPLogExporter(endpoint="http://" + base, insecure=True, headers=headers)
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    headers = {"authorization": "Bearer " + key}
    spans = OTLPSpanExporter(endpoint=base + "/v1/traces", headers=headers)
    logs = OTLPLogExporter(endpoint=base + "/v1/logs", headers=headers)
resource = Resource.create({"service.name": service, "deployment.environment": "test"})

# Whether every export call succeeded, as the exporters report it.
exported = {"spans": True, "logs": True}


def watched(exporter, name):
    export = exporter.export

    def wrapper(batch):
        result = export(batch)
        if getattr(result, "name", "") != "SUCCESS":
            exported[name] = False
        return result

    exporter.export = wrapper
    return exporter


spans = watched(spans, "spans")
logs = watched(logs, "logs")

tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs))
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
tracer_provider.force_flush(30_000)
logger_provider.force_flush(30_000)
tracer_provider.shutdown()
logger_provider.shutdown()
ids["exported"] = exported["spans"] and exported["logs"]
print(json.dumps(ids))
