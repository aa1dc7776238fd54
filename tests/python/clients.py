"""Real client SDKs calling one of our services, for the propagation tests.

usage: clients.py otel URL      -> a span of the Python OpenTelemetry SDK, its context injected
       clients.py sentry URL    -> a transaction of the Python sentry-sdk (sentry-trace + baggage)
Prints one JSON line: the trace id and span id the request was sent from, and the headers sent.
"""
import json
import sys
import urllib.request


def send(url, headers):
    req = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        status = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        status = e.code
    return status


def otel(url):
    from opentelemetry import trace
    from opentelemetry.propagate import inject
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("integra-observe-tests")
    with tracer.start_as_current_span("python-client") as span:
        headers = {}
        inject(headers)
        ctx = span.get_span_context()
        status = send(url, headers)
        return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
                "headers": headers, "status": status}


def sentry(url):
    import sentry_sdk

    # A DSN is needed for tracing to run; nothing listens there, the test reads the server's spans.
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", traces_sample_rate=1.0,
                    default_integrations=False, transport=lambda envelope: None)
    with sentry_sdk.start_transaction(name="python-client") as tx:
        headers = {"sentry-trace": sentry_sdk.get_traceparent(), "baggage": sentry_sdk.get_baggage()}
        status = send(url, headers)
        return {"trace_id": tx.trace_id, "span_id": tx.span_id, "headers": headers, "status": status}


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    print(json.dumps(otel(url) if mode == "otel" else sentry(url)))
