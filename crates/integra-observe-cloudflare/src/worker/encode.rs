//! The wire formats a Worker sends: OTLP/HTTP JSON for spans and Sentry envelopes for errors.
//!
//! Pure functions from finished spans and error events to request bodies, so that they are unit
//! tested on the host. They follow the OTLP JSON mapping exactly (ids as lowercase hex, times as
//! decimal strings of Unix nanoseconds, enums as numbers, 64-bit integers as strings), which is
//! what the OpenTelemetry JS SDKs send and what Jaeger's and the Collector's OTLP receivers read.
//! They must never panic on odd input: a value that JSON cannot carry is sent as a string.

use std::time::{SystemTime, UNIX_EPOCH};

use integra_observe_core::{Dsn, FinishedSpan, SpanId, SpanKind, TraceId};
use serde_json::{json, Map, Value};

/// The instrumentation scope and SDK name the Worker's spans and events carry.
pub(crate) const SDK_NAME: &str = "integra-observe-cloudflare";
/// Its version.
pub(crate) const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Unix nanoseconds of `t` (0 before the epoch).
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An attribute value as OTLP JSON's `AnyValue`: integers that print back identically as
/// `intValue` (a string, as proto3 JSON writes 64-bit integers), `true`/`false` as `boolValue`,
/// everything else as `stringValue`.
fn any_value(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        if i.to_string() == v {
            return json!({ "intValue": v });
        }
    }
    match v {
        "true" => json!({ "boolValue": true }),
        "false" => json!({ "boolValue": false }),
        _ => json!({ "stringValue": v }),
    }
}

fn key_values(attrs: &[(String, String)]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
            .collect(),
    )
}

/// OTLP's `Span.SpanKind` number.
fn kind_number(kind: SpanKind) -> u8 {
    match kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
        _ => 1,
    }
}

/// One span in OTLP JSON.
fn span_json(span: &FinishedSpan) -> Value {
    let mut out = Map::new();
    out.insert("traceId".into(), span.trace_id.to_string().into());
    out.insert("spanId".into(), span.span_id.to_string().into());
    if let Some(parent) = span.parent_span_id {
        out.insert("parentSpanId".into(), parent.to_string().into());
    }
    // W3C sampled bit, and bit 8 "has is-remote" with bit 9 "parent is remote" (OTLP 1.4 flags).
    let remote_bits = if span.parent_is_remote { 0x300 } else { 0x100 };
    out.insert(
        "flags".into(),
        (u32::from(span.sampled) | remote_bits).into(),
    );
    out.insert("name".into(), span.name.clone().into());
    out.insert("kind".into(), kind_number(span.kind).into());
    out.insert(
        "startTimeUnixNano".into(),
        unix_nanos(span.start).to_string().into(),
    );
    out.insert(
        "endTimeUnixNano".into(),
        unix_nanos(span.end).to_string().into(),
    );
    out.insert("attributes".into(), key_values(&span.attributes));
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|e| {
            json!({
                "timeUnixNano": unix_nanos(e.time).to_string(),
                "name": e.name,
                "attributes": key_values(&e.attributes),
            })
        })
        .collect();
    out.insert("events".into(), Value::Array(events));
    let status = match &span.error {
        Some(message) => json!({ "code": 2, "message": message }),
        None => json!({ "code": 0 }),
    };
    out.insert("status".into(), status);
    Value::Object(out)
}

/// The body of `POST {endpoint}/v1/traces` (`Content-Type: application/json`) for `spans`, with
/// `resource` as the resource attributes (`service.name` first).
pub(crate) fn otlp_traces_json(spans: &[FinishedSpan], resource: &[(String, String)]) -> String {
    let body = json!({
        "resourceSpans": [{
            "resource": { "attributes": key_values(resource) },
            "scopeSpans": [{
                "scope": { "name": SDK_NAME, "version": SDK_VERSION },
                "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
            }],
        }],
    });
    body.to_string()
}

/// A breadcrumb: an info or warning event of the request, sent with its error events.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breadcrumb {
    /// Unix nanoseconds.
    pub time: u64,
    /// `info`, `warning`, …
    pub level: &'static str,
    /// The event's target.
    pub category: String,
    /// The event's message.
    pub message: String,
}

/// An error of the request as a Sentry event: an `error!` event or a panic.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ErrorEvent {
    /// 32 lowercase hex digits.
    pub event_id: String,
    /// Unix nanoseconds.
    pub time: u64,
    /// The message.
    pub message: String,
    /// `Some((type, handled))` to send the error as an exception (a panic: `("panic", false)`).
    pub exception: Option<(String, bool)>,
    /// The event's target (Sentry's `logger`).
    pub logger: String,
    /// The event's other fields, as Sentry `extra`.
    pub fields: Vec<(String, String)>,
    /// The trace.
    pub trace_id: TraceId,
    /// The span the error happened in.
    pub span_id: SpanId,
    /// That span's parent.
    pub parent_span_id: Option<SpanId>,
    /// That span's name, as Sentry's `contexts.trace.op`.
    pub op: String,
}

/// What every Sentry event of a Worker shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventCommon {
    /// The request's root span name, Sentry's `transaction`.
    pub transaction: String,
    /// `environment`.
    pub environment: Option<String>,
    /// `release`.
    pub release: Option<String>,
    /// Tags (`service`, `integra.trace_id.source`, `cloudflare.ray_id`, …).
    pub tags: Vec<(String, String)>,
    /// Breadcrumbs, oldest first.
    pub breadcrumbs: Vec<Breadcrumb>,
}

fn seconds(nanos: u64) -> f64 {
    // Milliseconds are all a Worker's clock has; f64 keeps them exactly.
    (nanos / 1_000_000) as f64 / 1000.0
}

/// The Sentry event JSON of `e`.
pub(crate) fn sentry_event_json(e: &ErrorEvent, common: &EventCommon) -> Value {
    let mut trace = Map::new();
    trace.insert("type".into(), "trace".into());
    trace.insert("trace_id".into(), e.trace_id.to_string().into());
    trace.insert("span_id".into(), e.span_id.to_string().into());
    if let Some(parent) = e.parent_span_id {
        trace.insert("parent_span_id".into(), parent.to_string().into());
    }
    trace.insert("op".into(), e.op.clone().into());
    trace.insert("status".into(), "internal_error".into());

    let mut event = Map::new();
    event.insert("event_id".into(), e.event_id.clone().into());
    event.insert("timestamp".into(), seconds(e.time).into());
    event.insert("platform".into(), "native".into());
    event.insert("level".into(), "error".into());
    event.insert("logger".into(), e.logger.clone().into());
    event.insert("transaction".into(), common.transaction.clone().into());
    event.insert("message".into(), e.message.clone().into());
    if let Some((ty, handled)) = &e.exception {
        event.insert(
            "exception".into(),
            json!({ "values": [{
                "type": ty,
                "value": e.message,
                "mechanism": { "type": if *handled { "generic" } else { "panic" }, "handled": handled },
            }] }),
        );
    }
    event.insert("contexts".into(), json!({ "trace": Value::Object(trace) }));
    let tags: Map<String, Value> = common
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    event.insert("tags".into(), Value::Object(tags));
    if !e.fields.is_empty() {
        let extra: Map<String, Value> = e
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        event.insert("extra".into(), Value::Object(extra));
    }
    if !common.breadcrumbs.is_empty() {
        let values: Vec<Value> = common
            .breadcrumbs
            .iter()
            .map(|b| {
                json!({
                    "timestamp": seconds(b.time),
                    "type": "default",
                    "level": b.level,
                    "category": b.category,
                    "message": b.message,
                })
            })
            .collect();
        event.insert("breadcrumbs".into(), json!({ "values": values }));
    }
    if let Some(env) = &common.environment {
        event.insert("environment".into(), env.clone().into());
    }
    if let Some(release) = &common.release {
        event.insert("release".into(), release.clone().into());
    }
    event.insert(
        "sdk".into(),
        json!({ "name": SDK_NAME, "version": SDK_VERSION }),
    );
    Value::Object(event)
}

/// The envelope (`Content-Type: application/x-sentry-envelope`) that carries `e` to `dsn`.
pub(crate) fn sentry_envelope(e: &ErrorEvent, common: &EventCommon, dsn: &Dsn) -> String {
    let payload = sentry_event_json(e, common).to_string();
    let header = json!({ "event_id": e.event_id, "dsn": dsn.as_str(), "sdk": { "name": SDK_NAME, "version": SDK_VERSION } });
    let item =
        json!({ "type": "event", "length": payload.len(), "content_type": "application/json" });
    format!("{header}\n{item}\n{payload}\n")
}

/// The `X-Sentry-Auth` header value for `dsn`.
pub(crate) fn sentry_auth(dsn: &Dsn) -> String {
    format!(
        "Sentry sentry_version=7, sentry_client={SDK_NAME}/{SDK_VERSION}, sentry_key={}",
        dsn.public_key()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use integra_observe_core::SpanEvent;

    use super::*;

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    fn tid() -> TraceId {
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    }

    fn sid(s: &str) -> SpanId {
        SpanId::from_hex(s).unwrap()
    }

    #[test]
    fn otlp_json_follows_the_mapping() {
        let mut server = FinishedSpan::new(
            tid(),
            sid("00f067aa0ba902b7"),
            "GET /hello".into(),
            SpanKind::Server,
            at(1_700_000_000_123_000_000),
            at(1_700_000_000_456_000_000),
        );
        server.parent_span_id = Some(sid("b7ad6b7169203331"));
        server.parent_is_remote = true;
        server.attributes = vec![
            ("http.response.status_code".into(), "500".into()),
            ("user.id".into(), "0042".into()),
            ("cache.hit".into(), "false".into()),
            ("url.path".into(), "/hello".into()),
        ];
        server.events = vec![SpanEvent::new(
            "backend failed".into(),
            at(1_700_000_000_400_000_000),
            vec![("level".into(), "ERROR".into())],
        )];
        server.error = Some("backend failed".into());
        let client = FinishedSpan::new(
            tid(),
            sid("1111111111111111"),
            "POST".into(),
            SpanKind::Client,
            at(1),
            at(2),
        );
        let body = otlp_traces_json(&[server, client], &[("service.name".into(), "edge".into())]);
        let v: Value = serde_json::from_str(&body).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "edge"}})
        );
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], SDK_NAME);
        let spans = rs["scopeSpans"][0]["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00f067aa0ba902b7");
        assert_eq!(s["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["flags"], 0x301);
        assert_eq!(s["startTimeUnixNano"], "1700000000123000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000456000000");
        assert_eq!(
            s["attributes"],
            json!([
                {"key": "http.response.status_code", "value": {"intValue": "500"}},
                {"key": "user.id", "value": {"stringValue": "0042"}},
                {"key": "cache.hit", "value": {"boolValue": false}},
                {"key": "url.path", "value": {"stringValue": "/hello"}},
            ])
        );
        assert_eq!(s["events"][0]["timeUnixNano"], "1700000000400000000");
        assert_eq!(s["events"][0]["name"], "backend failed");
        assert_eq!(s["status"], json!({"code": 2, "message": "backend failed"}));
        let c = &spans[1];
        assert_eq!(
            (c["kind"].clone(), c["flags"].clone()),
            (json!(3), json!(0x101))
        );
        assert!(c.get("parentSpanId").is_none());
        assert_eq!(c["status"], json!({"code": 0}));
    }

    fn event() -> ErrorEvent {
        ErrorEvent {
            event_id: "0123456789abcdef0123456789abcdef".into(),
            time: 1_700_000_000_123_000_000,
            message: "backend said 500".into(),
            exception: None,
            logger: "rust_worker".into(),
            fields: vec![("status".into(), "500".into())],
            trace_id: tid(),
            span_id: sid("00f067aa0ba902b7"),
            parent_span_id: Some(sid("b7ad6b7169203331")),
            op: "GET /hello".into(),
        }
    }

    #[test]
    fn sentry_envelope_has_header_item_and_event() {
        let dsn = Dsn::parse("http://abc123@127.0.0.1:8000/7").unwrap();
        let common = EventCommon {
            transaction: "GET /hello".into(),
            environment: Some("test".into()),
            release: None,
            tags: vec![("integra.trace_id.source".into(), "traceparent".into())],
            breadcrumbs: vec![Breadcrumb {
                time: 1_700_000_000_100_000_000,
                level: "info",
                category: "rust_worker".into(),
                message: "calling the backend".into(),
            }],
        };
        let env = sentry_envelope(&event(), &common, &dsn);
        let lines: Vec<&str> = env.split('\n').collect();
        assert_eq!(lines.len(), 4, "{env}");
        assert_eq!(lines[3], "");
        let header: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(header["event_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(header["dsn"], "http://abc123@127.0.0.1:8000/7");
        let item: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(item["type"], "event");
        assert_eq!(item["length"], lines[2].len());
        let ev: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(
            ev["contexts"]["trace"]["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(ev["contexts"]["trace"]["span_id"], "00f067aa0ba902b7");
        assert_eq!(
            ev["contexts"]["trace"]["parent_span_id"],
            "b7ad6b7169203331"
        );
        assert_eq!(ev["timestamp"], 1_700_000_000.123);
        assert_eq!(ev["level"], "error");
        assert_eq!(ev["message"], "backend said 500");
        assert_eq!(ev["tags"]["integra.trace_id.source"], "traceparent");
        assert_eq!(ev["extra"]["status"], "500");
        assert_eq!(
            ev["breadcrumbs"]["values"][0]["message"],
            "calling the backend"
        );
        assert_eq!(ev["environment"], "test");
        assert!(ev.get("release").is_none());
        assert!(ev.get("exception").is_none());
        assert_eq!(
            sentry_auth(&dsn),
            format!("Sentry sentry_version=7, sentry_client={SDK_NAME}/{SDK_VERSION}, sentry_key=abc123")
        );
    }

    #[test]
    fn a_panic_is_an_unhandled_exception() {
        let mut e = event();
        e.exception = Some(("panic".into(), false));
        let ev = sentry_event_json(&e, &EventCommon::default());
        let ex = &ev["exception"]["values"][0];
        assert_eq!(ex["type"], "panic");
        assert_eq!(ex["value"], "backend said 500");
        assert_eq!(ex["mechanism"], json!({"type": "panic", "handled": false}));
    }
}
