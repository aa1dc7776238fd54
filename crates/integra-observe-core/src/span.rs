//! Finished spans, as the span backend hands them to other destinations.
//!
//! When OpenTelemetry owns span identity, every finished (sampled) span passes once through the
//! pipeline's span processors; a [`SpanSink`] receives a plain copy there. That is how Sentry
//! transactions (performance) and the local trace view get the very spans that go to Jaeger, with
//! the same ids, without a second instrumentation path. Sinks run on the thread that ended the
//! span: they must be cheap, bounded and must never block or panic.

use std::time::SystemTime;

use crate::{SpanId, TraceId};

/// The role of a span in a request, as OpenTelemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpanKind {
    /// Handles an incoming request.
    Server,
    /// Makes an outgoing request.
    Client,
    /// Work inside a service.
    Internal,
    /// Sends a message.
    Producer,
    /// Receives a message.
    Consumer,
}

impl SpanKind {
    /// The lowercase name (`server`, `client`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Internal => "internal",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// An event recorded on a span (e.g. `exception`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SpanEvent {
    /// Its name.
    pub name: String,
    /// When it happened.
    pub time: SystemTime,
    /// Its attributes, values as strings.
    pub attributes: Vec<(String, String)>,
}

/// A span that has ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FinishedSpan {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// The parent span, if any.
    pub parent_span_id: Option<SpanId>,
    /// Whether the parent lives in another service (the span is this service's local root).
    pub parent_is_remote: bool,
    /// The parent's sampling decision, when the parent is remote and said so.
    pub sampled: bool,
    /// Span name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start time.
    pub start: SystemTime,
    /// End time.
    pub end: SystemTime,
    /// Attributes, values as strings.
    pub attributes: Vec<(String, String)>,
    /// Events, in order.
    pub events: Vec<SpanEvent>,
    /// `Some(message)` when the span's status is error.
    pub error: Option<String>,
    /// The service that recorded the span (`service.name`).
    pub service_name: String,
}

impl SpanEvent {
    /// An event from its parts.
    pub fn new(name: String, time: SystemTime, attributes: Vec<(String, String)>) -> Self {
        SpanEvent {
            name,
            time,
            attributes,
        }
    }
}

impl FinishedSpan {
    /// A root span with no attributes, events or error; set the other fields as needed.
    pub fn new(
        trace_id: TraceId,
        span_id: SpanId,
        name: String,
        kind: SpanKind,
        start: SystemTime,
        end: SystemTime,
    ) -> Self {
        FinishedSpan {
            trace_id,
            span_id,
            parent_span_id: None,
            parent_is_remote: false,
            sampled: true,
            name,
            kind,
            start,
            end,
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
            service_name: String::new(),
        }
    }

    /// Whether this span starts this service's part of the trace.
    pub fn is_local_root(&self) -> bool {
        self.parent_span_id.is_none() || self.parent_is_remote
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The span's duration (zero if the clock went backwards).
    pub fn duration(&self) -> std::time::Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// Receives every finished, sampled span of the span backend.
pub trait SpanSink: Send + Sync + 'static {
    /// Called once per finished span, on the thread that ended it.
    fn on_end(&self, span: &FinishedSpan);

    /// Called once at shutdown; the sink should finish what it buffered.
    fn shutdown(&self) {}
}
