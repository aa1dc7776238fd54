//! Our own `tracing` layer: it records spans straight into OpenTelemetry [`SpanData`] for the
//! export path, without the generic span builder of `tracing-opentelemetry`.
//!
//! The sampling decision is taken when a span starts, so an unsampled span costs little more than
//! the registry's own bookkeeping: ids (propagation and Sentry events still need them) and no
//! attributes, events or timestamps. A finished sampled span goes to the processors (the bounded
//! export queue, the sinks) on the thread that closed it; none of them blocks.
//!
//! It must never panic or block the caller, and it keeps the OTLP wire exactly as the SDK's span
//! would produce it: same ids, parent, kind, status, attributes, events and links.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use integra_observe_core::{ActiveSpan, ErrorInfo, SamplerKind};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TracingEvent, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// What every span of one pipeline shares.
pub(crate) struct Shared {
    pub(crate) processors: Vec<Box<dyn SpanProcessor>>,
    pub(crate) sampler: integra_observe_core::Sampler,
    pub(crate) limits: Option<integra_observe_core::Limits>,
    pub(crate) scope: InstrumentationScope,
}

/// The root sampler's decision for a span of `trace_id` (the SDK's algorithm, so that every
/// service of a trace decides alike).
fn sample_root(sampler: &integra_observe_core::Sampler, trace_id: TraceId) -> bool {
    match sampler.root {
        SamplerKind::AlwaysOff => false,
        SamplerKind::TraceIdRatio(p) if p < 1.0 => {
            let bound = (p.max(0.0) * (1u64 << 63) as f64) as u64;
            let bytes = trace_id.to_bytes();
            let mut low = [0u8; 8];
            low.copy_from_slice(&bytes[8..]);
            (u64::from_be_bytes(low) >> 1) < bound
        }
        _ => true,
    }
}

impl Shared {
    fn end(&self, data: SpanData) {
        if let Some((last, rest)) = self.processors.split_last() {
            for p in rest {
                p.on_end(data.clone());
            }
            last.on_end(data);
        }
    }
}

/// A span's identity and, when sampled, what it records. Kept in the span's extensions.
pub(crate) struct SpanState {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    parent_remote: bool,
    sampled: bool,
    tracestate: TraceState,
    /// Entered or parent of another span: the ids can no longer change.
    started: bool,
    /// To decide again when a remote parent is set.
    sampler: integra_observe_core::Sampler,
    /// To start recording when a remote parent set after creation makes the span sampled.
    meta: &'static tracing::Metadata<'static>,
    rec: Option<Box<Recording>>,
}

struct Recording {
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    links: Vec<Link>,
    status: Status,
}

impl Recording {
    fn new(meta: &'static tracing::Metadata<'static>, fields: usize) -> Box<Recording> {
        Box::new(Recording {
            name: Cow::Borrowed(meta.name()),
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            attributes: Vec::with_capacity(fields + 3),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
        })
    }
}

impl SpanState {
    fn context(&self) -> integra_observe_core::SpanContext {
        integra_observe_core::SpanContext::new(
            integra_observe_core::TraceId::from_bytes(self.trace_id.to_bytes()),
            integra_observe_core::SpanId::from_bytes(self.span_id.to_bytes()),
            self.sampled,
        )
    }

    /// Fixes the ids: an unsampled span drops what it kept in case a remote parent changed the
    /// decision.
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            if !self.sampled {
                self.rec = None;
            }
        }
    }
}

thread_local! {
    /// The spans entered on this thread, innermost last: what [`active_span`] reads, and where a
    /// Sentry event leaves its id for the span it happened in.
    static ACTIVE: RefCell<Vec<Active>> = const { RefCell::new(Vec::new()) };
    /// The remote parent of the next root span created on this thread (see
    /// [`with_remote_parent`]).
    static PENDING_PARENT: RefCell<Option<SpanContext>> = const { RefCell::new(None) };
    /// A small, fast generator for span and trace ids, seeded once per thread from the OS.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

/// The deepest nesting of entered spans kept per thread.
const MAX_ACTIVE: usize = 1024;

struct Active {
    id: u64,
    cx: integra_observe_core::SpanContext,
    errors: Vec<ErrorInfo>,
}

fn seed() -> u64 {
    let s: u64 = rand::random();
    s | 1
}

/// xorshift64*: ids need to be unique and unpredictable enough for tracing, not secret.
fn next_u64() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

fn new_span_id() -> SpanId {
    loop {
        let v = next_u64();
        if v != 0 {
            return SpanId::from_bytes(v.to_be_bytes());
        }
    }
}

fn new_trace_id() -> TraceId {
    let hi = next_u64();
    let lo = next_u64() | 1;
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    TraceId::from_bytes(b)
}

/// The layer. See the module docs.
pub(crate) struct RecorderLayer {
    pub(crate) shared: Arc<Shared>,
}

impl<S> Layer<S> for RecorderLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = if let Some(p) = attrs.parent() {
            ctx.span(p)
        } else if attrs.is_contextual() && !no_active_span() {
            ctx.lookup_current()
        } else {
            None
        };
        let shared = &self.shared;
        let parent_state = parent.and_then(|p| {
            let mut ext = p.extensions_mut();
            let st = ext.get_mut::<SpanState>()?;
            st.start();
            Some((st.trace_id, st.span_id, st.sampled, st.tracestate.clone()))
        });
        let (trace_id, parent_span_id, sampled, tracestate, root) = match parent_state {
            Some((trace_id, span_id, parent_sampled, ts)) => {
                let sampled = if shared.sampler.parent_based {
                    parent_sampled
                } else {
                    sample_root(&shared.sampler, trace_id)
                };
                (trace_id, span_id, sampled, ts, false)
            }
            None => match PENDING_PARENT
                .try_with(|p| p.borrow_mut().take())
                .ok()
                .flatten()
            {
                Some(remote) => {
                    let sampled = if shared.sampler.parent_based {
                        remote.is_sampled()
                    } else {
                        sample_root(&shared.sampler, remote.trace_id())
                    };
                    let ts = remote.trace_state().clone();
                    (remote.trace_id(), remote.span_id(), sampled, ts, true)
                }
                None => {
                    let trace_id = new_trace_id();
                    let sampled = sample_root(&shared.sampler, trace_id);
                    (trace_id, SpanId::INVALID, sampled, TraceState::NONE, true)
                }
            },
        };
        let meta = attrs.metadata();
        let rec = sampled.then(|| {
            let mut rec = Recording::new(meta, attrs.fields().len());
            attrs.record(&mut SpanVisitor(&mut rec));
            push_location(&mut rec.attributes, meta);
            rec
        });
        let state = SpanState {
            trace_id,
            span_id: new_span_id(),
            parent_span_id,
            parent_remote: root && parent_span_id != SpanId::INVALID,
            sampled,
            tracestate,
            started: !root,
            sampler: shared.sampler,
            meta,
            rec,
        };
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(rec) = ext.get_mut::<SpanState>().and_then(|s| s.rec.as_mut()) {
            values.record(&mut SpanVisitor(rec));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let Some(other) = ctx.span(follows) else {
            return;
        };
        let linked = other.extensions().get::<SpanState>().map(|s| {
            SpanContext::new(
                s.trace_id,
                s.span_id,
                flags(s.sampled),
                false,
                s.tracestate.clone(),
            )
        });
        let (Some(linked), Some(span)) = (linked, ctx.span(id)) else {
            return;
        };
        let mut ext = span.extensions_mut();
        if let Some(rec) = ext.get_mut::<SpanState>().and_then(|s| s.rec.as_mut()) {
            rec.links.push(Link::with_context(linked));
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        // The common case, an event in the entered span, answered from the thread's stack: an
        // unsampled span (or none) records nothing, without a registry lookup.
        if event.is_contextual() && !active_is_sampled() {
            return;
        }
        let span = match event.parent() {
            Some(p) => ctx.span(p),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let Some(span) = span else { return };
        let mut ext = span.extensions_mut();
        let Some(rec) = ext.get_mut::<SpanState>().and_then(|s| s.rec.as_mut()) else {
            return;
        };
        let meta = event.metadata();
        let mut attributes = Vec::with_capacity(meta.fields().len() + 5);
        attributes.push(KeyValue::new("level", meta.level().as_str()));
        attributes.push(KeyValue::new("target", Value::from(meta.target())));
        let mut visitor = EventVisitor {
            name: None,
            attributes,
            error: None,
        };
        event.record(&mut visitor);
        push_location(&mut visitor.attributes, meta);
        if let Some(description) = visitor.error {
            rec.status = Status::error(description);
        } else if *meta.level() == tracing::Level::ERROR && rec.status == Status::Unset {
            rec.status = Status::error("");
        }
        let name = visitor.name.unwrap_or(Cow::Borrowed(meta.name()));
        rec.events
            .push(Event::new(name, SystemTime::now(), visitor.attributes, 0));
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let cx = {
            let mut ext = span.extensions_mut();
            let Some(state) = ext.get_mut::<SpanState>() else {
                return;
            };
            state.start();
            state.context()
        };
        let _ = ACTIVE.try_with(|a| {
            if let Ok(mut a) = a.try_borrow_mut() {
                // Entered and never exited (a leaked guard) must not grow it without bound.
                if a.len() >= MAX_ACTIVE {
                    a.remove(0);
                }
                a.push(Active {
                    id: id.into_u64(),
                    cx,
                    errors: Vec::new(),
                });
            }
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let key = id.into_u64();
        let errors = ACTIVE
            .try_with(|a| {
                let mut a = a.try_borrow_mut().ok()?;
                let pos = a.iter().rposition(|e| e.id == key)?;
                Some(a.remove(pos).errors)
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        if errors.is_empty() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(rec) = ext.get_mut::<SpanState>().and_then(|s| s.rec.as_mut()) {
            for e in errors {
                apply_error(rec, e);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else {
            return;
        };
        let Some(rec) = state.rec.filter(|_| state.sampled) else {
            return;
        };
        let end = SystemTime::now();
        let rec = *rec;
        let mut attributes = rec.attributes;
        let mut events = rec.events;
        let mut links = rec.links;
        let mut dropped_attributes = 0;
        let mut dropped_events = 0;
        let mut dropped_links = 0;
        if let Some(l) = self.shared.limits {
            dropped_attributes = truncate(&mut attributes, l.attribute_count);
            dropped_events = truncate(&mut events, l.event_count);
            dropped_links = truncate(&mut links, l.link_count);
            for e in events.iter_mut() {
                e.dropped_attributes_count += truncate(&mut e.attributes, l.attribute_count);
            }
        }
        let mut span_events = SpanEvents::default();
        span_events.events = events;
        span_events.dropped_count = dropped_events;
        let mut span_links = SpanLinks::default();
        span_links.links = links;
        span_links.dropped_count = dropped_links;
        self.shared.end(SpanData {
            span_context: SpanContext::new(
                state.trace_id,
                state.span_id,
                TraceFlags::SAMPLED,
                false,
                state.tracestate,
            ),
            parent_span_id: state.parent_span_id,
            parent_span_is_remote: state.parent_remote,
            span_kind: rec.kind,
            name: rec.name,
            start_time: rec.start,
            end_time: end,
            attributes,
            dropped_attributes_count: dropped_attributes,
            events: span_events,
            links: span_links,
            status: rec.status,
            instrumentation_scope: self.shared.scope.clone(),
        });
    }
}

/// Whether no span of ours is entered on this thread: a new span is then a root, without asking
/// the registry.
fn no_active_span() -> bool {
    ACTIVE
        .try_with(|a| a.try_borrow().is_ok_and(|a| a.is_empty()))
        .unwrap_or(false)
}

/// Whether the span entered last on this thread is sampled (`false` outside any span).
fn active_is_sampled() -> bool {
    ACTIVE
        .try_with(|a| {
            a.try_borrow()
                .ok()
                .and_then(|a| a.last().map(|e| e.cx.sampled))
        })
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn truncate<T>(v: &mut Vec<T>, limit: u32) -> u32 {
    let limit = limit as usize;
    if v.len() > limit {
        let dropped = v.len() - limit;
        v.truncate(limit);
        u32::try_from(dropped).unwrap_or(u32::MAX)
    } else {
        0
    }
}

fn flags(sampled: bool) -> TraceFlags {
    if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    }
}

fn apply_error(rec: &mut Recording, e: ErrorInfo) {
    rec.status = Status::error(e.message.clone());
    rec.attributes
        .push(KeyValue::new("sentry.event_id", e.event_id.clone()));
    let mut attrs = vec![
        KeyValue::new("exception.message", e.message),
        KeyValue::new("sentry.event_id", e.event_id),
    ];
    if let Some(ty) = e.exception_type {
        attrs.push(KeyValue::new("exception.type", ty));
    }
    rec.events
        .push(Event::new("exception", SystemTime::now(), attrs, 0));
}

fn push_location(attributes: &mut Vec<KeyValue>, meta: &'static tracing::Metadata<'static>) {
    if let Some(file) = meta.file() {
        attributes.push(KeyValue::new("code.file.path", file));
    }
    if let Some(module) = meta.module_path() {
        attributes.push(KeyValue::new("code.module.name", module));
    }
    if let Some(line) = meta.line() {
        attributes.push(KeyValue::new("code.line.number", i64::from(line)));
    }
}

fn debug_string(value: &dyn std::fmt::Debug) -> String {
    let mut s = String::new();
    let _ = write!(s, "{value:?}");
    s
}

fn error_chain(value: &(dyn std::error::Error + 'static)) -> String {
    let mut s = value.to_string();
    let mut next = value.source();
    while let Some(e) = next {
        let _ = write!(s, ": {e}");
        next = e.source();
    }
    s
}

/// Span fields: `otel.*` fields set name, kind and status; the rest become attributes.
struct SpanVisitor<'a>(&'a mut Recording);

impl SpanVisitor<'_> {
    fn special(&mut self, name: &str, value: &str) -> bool {
        match name {
            "otel.name" => self.0.name = Cow::Owned(value.to_owned()),
            "otel.kind" => {
                self.0.kind = match value.to_ascii_lowercase().as_str() {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    _ => SpanKind::Internal,
                }
            }
            "otel.status_code" => {
                self.0.status = match value.to_ascii_lowercase().as_str() {
                    "ok" => Status::Ok,
                    "error" => match &self.0.status {
                        Status::Error { .. } => return true,
                        _ => Status::error(""),
                    },
                    _ => Status::Unset,
                }
            }
            "otel.status_description" | "otel.status_message" => {
                self.0.status = Status::error(value.to_owned());
            }
            _ => return false,
        }
        true
    }

    fn attribute(&mut self, kv: KeyValue) {
        self.0.attributes.push(kv);
    }
}

impl Visit for SpanVisitor<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attribute(KeyValue::new(field.name(), value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attribute(KeyValue::new(field.name(), value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.attribute(KeyValue::new(field.name(), v)),
            Err(_) => self.attribute(KeyValue::new(field.name(), value.to_string())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attribute(KeyValue::new(field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.special(field.name(), value) {
            self.attribute(KeyValue::new(field.name(), value.to_owned()));
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.attribute(KeyValue::new(field.name(), error_chain(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let s = debug_string(value);
        if !self.special(field.name(), &s) {
            self.attribute(KeyValue::new(field.name(), s));
        }
    }
}

/// Event fields: `message` names the event, an `error` field makes it an `exception` event and
/// the span's status an error.
struct EventVisitor {
    name: Option<Cow<'static, str>>,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

impl EventVisitor {
    fn error(&mut self, text: String) {
        if self.name.is_none() {
            self.name = Some(Cow::Borrowed("exception"));
            self.attributes
                .push(KeyValue::new("exception.message", text.clone()));
            self.error = Some(text);
        } else {
            self.attributes.push(KeyValue::new("error", text));
        }
    }
}

impl Visit for EventVisitor {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.attributes.push(KeyValue::new(field.name(), v)),
            Err(_) => self
                .attributes
                .push(KeyValue::new(field.name(), value.to_string())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.name = Some(Cow::Owned(value.to_owned())),
            "error" => self.error(value.to_owned()),
            n if n.starts_with("log.") => {}
            n => self.attributes.push(KeyValue::new(n, value.to_owned())),
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = error_chain(value);
        match field.name() {
            "error" => {
                if self.name.is_none() {
                    self.error(text);
                } else {
                    self.attributes
                        .push(KeyValue::new("exception.message", text));
                }
            }
            n => self.attributes.push(KeyValue::new(n, text)),
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.name = Some(Cow::Owned(debug_string(value))),
            "error" => self.error(debug_string(value)),
            n if n.starts_with("log.") => {}
            n => self.attributes.push(KeyValue::new(n, debug_string(value))),
        }
    }
}

/// Runs `f` on the state of `span` (outside any subscriber callback).
fn with_state(span: &tracing::Span, f: impl FnOnce(&mut SpanState)) {
    let mut f = Some(f);
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return;
        };
        let Some(s) = registry.span(id) else { return };
        let mut ext = s.extensions_mut();
        if let (Some(state), Some(f)) = (ext.get_mut::<SpanState>(), f.take()) {
            f(state);
        }
    });
}

/// See [`crate::set_remote_parent`]: only before the span is entered or has children.
pub(crate) fn set_remote_parent(span: &tracing::Span, remote: SpanContext) {
    with_state(span, |state| {
        if state.started {
            return;
        }
        state.trace_id = remote.trace_id();
        state.parent_span_id = remote.span_id();
        state.parent_remote = true;
        state.tracestate = remote.trace_state().clone();
        state.sampled = if state.sampler.parent_based {
            remote.is_sampled()
        } else {
            sample_root(&state.sampler, remote.trace_id())
        };
        if state.sampled && state.rec.is_none() {
            // The fields given at creation are gone: prefer `with_remote_parent`.
            let mut rec = Recording::new(state.meta, 0);
            push_location(&mut rec.attributes, state.meta);
            state.rec = Some(rec);
        }
    });
}

/// Runs `make` (which creates the span) with `remote` as the parent of the first root span
/// created on this thread inside it.
pub(crate) fn with_remote_parent<T>(remote: SpanContext, make: impl FnOnce() -> T) -> T {
    let _ = PENDING_PARENT.try_with(|p| *p.borrow_mut() = Some(remote));
    let out = make();
    // Not consumed when the span was disabled: it must not become another span's parent.
    let _ = PENDING_PARENT.try_with(|p| p.borrow_mut().take());
    out
}

/// See [`crate::add_remote_link`].
pub(crate) fn add_link(span: &tracing::Span, link: SpanContext) {
    with_state(span, |state| {
        if let Some(rec) = state.rec.as_mut() {
            rec.links.push(Link::with_context(link));
        }
    });
}

/// See [`crate::set_attribute`].
pub(crate) fn set_attribute(span: &tracing::Span, kv: KeyValue) {
    with_state(span, |state| {
        if let Some(rec) = state.rec.as_mut() {
            rec.attributes.push(kv);
        }
    });
}

/// The span entered on this thread, as the Sentry backend sees it.
pub(crate) struct RecorderActiveSpan;

impl ActiveSpan for RecorderActiveSpan {
    fn current(&self) -> Option<integra_observe_core::SpanContext> {
        ACTIVE
            .try_with(|a| a.try_borrow().ok().and_then(|a| a.last().map(|e| e.cx)))
            .ok()
            .flatten()
    }

    fn record_error(&self, error: &ErrorInfo) {
        let _ = ACTIVE.try_with(|a| {
            if let Ok(mut a) = a.try_borrow_mut() {
                if let Some(top) = a.last_mut() {
                    if top.cx.sampled {
                        top.errors.push(error.clone());
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use integra_observe_core::{FinishedSpan, Sampler, SamplerKind, SpanSink};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Default)]
    struct Capture(Mutex<Vec<FinishedSpan>>);

    impl SpanSink for Capture {
        fn on_end(&self, span: &FinishedSpan) {
            self.0.lock().unwrap().push(span.clone());
        }
    }

    /// Runs `f` under a subscriber with a local pipeline (no export) and returns what it recorded.
    fn record(sampler: Sampler, f: impl FnOnce()) -> Vec<FinishedSpan> {
        record_in(crate::Pipeline::new(None, sampler), f)
    }

    /// [`record`] with a pipeline of the test's making.
    fn record_in(pipeline: crate::Pipeline<'_>, f: impl FnOnce()) -> Vec<FinishedSpan> {
        let sink = Arc::new(Capture::default());
        let service = integra_observe_core::Config::new()
            .service_name("t")
            .resolve()
            .settings
            .service;
        let backend = crate::init(pipeline.with_sink(sink.clone()), &service).unwrap();
        let subscriber = tracing_subscriber::registry().with(backend.layer());
        tracing::subscriber::with_default(subscriber, f);
        let spans = std::mem::take(&mut *sink.0.lock().unwrap());
        spans
    }

    fn attr<'a>(span: &'a FinishedSpan, key: &str) -> Option<&'a str> {
        span.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    use super::*;

    #[test]
    fn parents_names_kinds_fields_events_and_status() {
        let spans = record(Sampler::new(SamplerKind::AlwaysOn, true), || {
            let outer = tracing::info_span!(
                "outer",
                otel.name = "GET /x",
                otel.kind = "server",
                user.id = 42_i64
            );
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", note = tracing::field::Empty);
            inner.record("note", "later");
            let _i = inner.enter();
            tracing::info!(k = 1_i64, "hello");
            tracing::error!("it failed");
        });
        assert_eq!(spans.len(), 2);
        let (inner, outer) = (&spans[0], &spans[1]);
        assert_eq!(outer.name, "GET /x");
        assert_eq!(outer.kind, integra_observe_core::SpanKind::Server);
        assert_eq!(attr(outer, "user.id"), Some("42"));
        assert_eq!(inner.trace_id, outer.trace_id);
        assert_eq!(inner.parent_span_id, Some(outer.span_id));
        assert_eq!(outer.parent_span_id, None);
        assert_eq!(attr(inner, "note"), Some("later"));
        let names: Vec<_> = inner.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["hello", "it failed"]);
        assert!(
            inner.error.is_some(),
            "an ERROR event marks its span as failed"
        );
        assert!(outer.error.is_none());
    }

    #[test]
    fn unsampled_spans_are_not_recorded_but_have_ids() {
        let mut seen = None;
        let spans = record(Sampler::new(SamplerKind::AlwaysOff, true), || {
            let _s = tracing::info_span!("op").entered();
            tracing::info!("inside");
            seen = RecorderActiveSpan.current();
        });
        assert!(spans.is_empty());
        let cx = seen.expect("an unsampled span still has ids (for propagation)");
        assert!(!cx.sampled);
        assert!(cx.trace_id.is_valid() && cx.span_id.is_valid());
    }

    #[test]
    fn a_remote_parent_given_at_creation_decides_and_keeps_the_fields() {
        let trace =
            integra_observe_core::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let parent = integra_observe_core::SpanId::from_hex("00f067aa0ba902b7").unwrap();
        // The root sampler says no; the caller's sampled flag says yes.
        let spans = record(Sampler::new(SamplerKind::AlwaysOff, true), || {
            let span = crate::with_remote_parent(trace, parent, 0x01, Some("k=v"), || {
                tracing::info_span!("server", route = "/x")
            });
            let _e = span.enter();
            let _child = tracing::info_span!("child").entered();
        });
        assert_eq!(spans.len(), 2);
        let server = spans.iter().find(|s| s.name == "server").unwrap();
        assert_eq!(server.trace_id, trace);
        assert_eq!(server.parent_span_id, Some(parent));
        assert!(server.parent_is_remote);
        assert_eq!(attr(server, "route"), Some("/x"));
        // And an unsampled caller keeps the trace unsampled under an always-on root sampler.
        let spans = record(Sampler::new(SamplerKind::AlwaysOn, true), || {
            let span = crate::with_remote_parent(trace, parent, 0x00, None, || {
                tracing::info_span!("server")
            });
            let _e = span.enter();
        });
        assert!(spans.is_empty());
    }

    #[test]
    fn ratio_sampling_matches_the_sdk_algorithm() {
        let s = Sampler::new(SamplerKind::TraceIdRatio(0.5), false);
        // Low 8 bytes >> 1 below 2^62 is sampled at ratio 0.5.
        let low = TraceId::from_bytes((u128::from(u64::MAX) << 64).to_be_bytes());
        let high = TraceId::from_bytes(u128::from(u64::MAX).to_be_bytes());
        assert!(sample_root(&s, low));
        assert!(!sample_root(&s, high));
        assert!(!sample_root(
            &Sampler::new(SamplerKind::TraceIdRatio(0.0), false),
            low
        ));
        assert!(sample_root(
            &Sampler::new(SamplerKind::TraceIdRatio(1.0), false),
            high
        ));
    }

    #[test]
    fn limits_drop_what_is_over() {
        let limits = integra_observe_core::Config::from_env_vars([
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "3"),
        ])
        .resolve()
        .settings
        .limits;
        let pipeline = crate::Pipeline::new(None, Sampler::new(SamplerKind::AlwaysOn, true))
            .with_limits(limits);
        let spans = record_in(pipeline, || {
            let _s = tracing::info_span!("op", a = 1_i64, b = 2_i64, c = 3_i64).entered();
            for i in 0..10 {
                tracing::info!(i, "e");
            }
        });
        assert_eq!(spans[0].attributes.len(), 2);
        assert_eq!(spans[0].events.len(), 3);
    }
}
