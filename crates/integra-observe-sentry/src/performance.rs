//! Sentry performance (phase 2) from the spans OpenTelemetry owns: each local root span becomes a
//! Sentry transaction and its descendants its child spans, with the OpenTelemetry trace and span
//! ids — one span identity, two destinations.
//!
//! The sink runs on the thread that ended a span: it only buffers (bounded, drops counted) and
//! hands finished transactions to the client's transport, which never blocks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use integra_observe_core::{
    Counters, DropReason, FinishedSpan, Redactor, SpanKind, SpanSink, TraceId,
};
use sentry::protocol::{self, Context, SpanStatus, TraceContext, Value};

/// Traces buffered at once, waiting for their local root to end.
const MAX_TRACES: usize = 1024;
/// Child spans kept per trace; more are dropped and counted.
const MAX_SPANS_PER_TRACE: usize = 1000;

/// Sends local root spans as Sentry transactions, with their buffered descendants.
pub struct TransactionSink {
    client: Arc<sentry::Client>,
    traces_sample_rate: f32,
    buffer: Mutex<Buffer>,
    counters: Arc<Counters>,
    redactor: Redactor,
}

#[derive(Default)]
struct Buffer {
    spans: HashMap<TraceId, Vec<FinishedSpan>>,
    order: VecDeque<TraceId>,
}

impl TransactionSink {
    pub(crate) fn new(
        client: Arc<sentry::Client>,
        traces_sample_rate: f32,
        counters: Arc<Counters>,
        redactor: Redactor,
    ) -> Self {
        TransactionSink {
            client,
            traces_sample_rate,
            buffer: Mutex::default(),
            counters,
            redactor,
        }
    }

    /// Whether the trace of local root `root` goes to Sentry: a remote parent's decision is kept
    /// (parent-based), a new trace is sampled at `traces_sample_rate` from its trace id, so every
    /// service with the same rate takes the same decision.
    fn sampled(&self, root: &FinishedSpan) -> bool {
        if self.traces_sample_rate <= 0.0 {
            return false;
        }
        if root.parent_is_remote {
            return root.sampled;
        }
        let bytes = root.trace_id.to_bytes();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&bytes[8..]);
        let x = u64::from_be_bytes(tail) >> 11; // 53 bits, exact in f64
        (x as f64 / (1u64 << 53) as f64) < f64::from(self.traces_sample_rate)
    }

    fn send(&self, root: &FinishedSpan, children: Vec<FinishedSpan>) {
        let options = self.client.options();
        let mut tx = protocol::Transaction {
            name: Some(root.name.clone()),
            release: options.release.clone(),
            environment: options.environment.clone(),
            start_timestamp: root.start,
            timestamp: Some(root.end),
            spans: children
                .iter()
                .map(|c| child_span(c, &self.redactor))
                .collect(),
            ..Default::default()
        };
        tx.tags
            .insert("service.name".into(), root.service_name.clone());
        let trace = TraceContext {
            trace_id: root.trace_id.to_bytes().into(),
            span_id: root.span_id.to_bytes().into(),
            parent_span_id: root
                .parent_span_id
                .filter(|_| root.parent_is_remote)
                .map(|p| p.to_bytes().into()),
            op: Some(op(root)),
            status: Some(status(root)),
            data: data(root, &self.redactor),
            ..Default::default()
        };
        tx.contexts
            .insert("trace".into(), Context::Trace(Box::new(trace)));
        self.client.send_envelope(tx.into());
    }
}

impl SpanSink for TransactionSink {
    fn on_end(&self, span: &FinishedSpan) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if !span.is_local_root() {
            if !buffer.spans.contains_key(&span.trace_id) {
                if buffer.order.len() >= MAX_TRACES {
                    if let Some(old) = buffer.order.pop_front() {
                        let lost = buffer.spans.remove(&old).map_or(0, |v| v.len());
                        self.counters.dropped(DropReason::QueueFull, lost as u64);
                    }
                }
                buffer.order.push_back(span.trace_id);
            }
            let spans = buffer.spans.entry(span.trace_id).or_default();
            if spans.len() < MAX_SPANS_PER_TRACE {
                spans.push(span.clone());
            } else {
                self.counters.dropped(DropReason::QueueFull, 1);
            }
            return;
        }
        let mut pending = buffer.spans.remove(&span.trace_id).unwrap_or_default();
        // Only the root's own descendants: another local root of the same trace (this service
        // called twice) keeps its spans buffered.
        let mut mine = Vec::new();
        let mut frontier = vec![span.span_id];
        while let Some(parent) = frontier.pop() {
            let (children, rest): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|s| s.parent_span_id == Some(parent));
            pending = rest;
            frontier.extend(children.iter().map(|c| c.span_id));
            mine.extend(children);
        }
        if pending.is_empty() {
            buffer.order.retain(|t| *t != span.trace_id);
        } else {
            buffer.spans.insert(span.trace_id, pending);
        }
        drop(buffer);
        if self.sampled(span) {
            self.send(span, mine);
        }
    }
}

fn op(span: &FinishedSpan) -> String {
    match span.kind {
        SpanKind::Server if span.attribute("http.request.method").is_some() => "http.server".into(),
        SpanKind::Client if span.attribute("http.request.method").is_some() => "http.client".into(),
        SpanKind::Server => "server".into(),
        SpanKind::Client => "client".into(),
        SpanKind::Producer => "queue.publish".into(),
        SpanKind::Consumer => "queue.process".into(),
        _ => span
            .attribute("code.namespace")
            .unwrap_or("function")
            .to_owned(),
    }
}

fn status(span: &FinishedSpan) -> SpanStatus {
    if span.error.is_some() {
        SpanStatus::InternalError
    } else {
        SpanStatus::Ok
    }
}

fn data(span: &FinishedSpan, r: &Redactor) -> protocol::Map<String, Value> {
    span.attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(r.redact(k, v).unwrap_or_else(|| v.clone())),
            )
        })
        .collect()
}

fn child_span(span: &FinishedSpan, r: &Redactor) -> protocol::Span {
    protocol::Span {
        span_id: span.span_id.to_bytes().into(),
        trace_id: span.trace_id.to_bytes().into(),
        parent_span_id: span.parent_span_id.map(|p| p.to_bytes().into()),
        op: Some(op(span)),
        description: Some(span.name.clone()),
        start_timestamp: span.start,
        timestamp: Some(span.end),
        status: Some(status(span)),
        data: data(span, r),
        ..Default::default()
    }
}
