//! The per-request `tracing` layer: ids, timing and buffering of one request's spans and events.
//!
//! One [`RequestState`] per request, shared by the layer and the request's handle. The layer
//! gives every span an id from the request's generator (seeded from `crypto.getRandomValues`),
//! times it with the injected clock (the JS clock in a Worker, a fake one in tests), and keeps the
//! finished spans, error events and breadcrumbs in memory until the request flushes them once.
//! It must never block, spawn, read `SystemTime::now` (it panics on wasm32) or panic; a
//! re-entrant or poisoned lock skips the record instead of waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integra_observe_core::{FinishedSpan, SpanEvent, SpanId, SpanKind, TraceId};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::encode::{Breadcrumb, ErrorEvent};

/// Spans kept per request; more are counted and dropped.
pub(crate) const MAX_SPANS: usize = 1000;
/// Events kept per span.
const MAX_SPAN_EVENTS: usize = 128;
/// Error events sent per request.
const MAX_ERRORS: usize = 10;
/// Breadcrumbs kept per request (the newest).
const MAX_BREADCRUMBS: usize = 100;

/// A clock: Unix nanoseconds now.
pub(crate) type Clock = fn() -> u64;

/// Where the request's trace id came from: `integra.trace_id.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceIdSource {
    /// A valid W3C `traceparent`.
    TraceParent,
    /// A valid Sentry `sentry-trace`.
    SentryTrace,
    /// Derived from the `cf-ray` header, as every backend derives it.
    CfRay,
    /// A new random trace id.
    New,
}

impl TraceIdSource {
    /// The attribute value: `traceparent`, `sentry-trace`, `cf-ray` or `new`.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceIdSource::TraceParent => "traceparent",
            TraceIdSource::SentryTrace => "sentry-trace",
            TraceIdSource::CfRay => "cf-ray",
            TraceIdSource::New => "new",
        }
    }
}

/// SplitMix64: a tiny generator for ids, seeded per request from the platform's CSPRNG.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A valid (non-zero) span id.
    pub(crate) fn span_id(&mut self) -> SpanId {
        loop {
            let id = SpanId::from_bytes(self.next_u64().to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    /// A valid (non-zero) trace id.
    pub(crate) fn trace_id(&mut self) -> TraceId {
        loop {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
            bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
            let id = TraceId::from_bytes(bytes);
            if id.is_valid() {
                return id;
            }
        }
    }

    /// 32 lowercase hex digits: a Sentry event id.
    pub(crate) fn event_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
}

/// What one request recorded, until it is flushed.
#[derive(Debug)]
pub(crate) struct RequestState {
    pub(crate) trace_id: TraceId,
    /// The caller's span: the parent of our root spans.
    pub(crate) remote_parent: Option<SpanId>,
    /// The id of the first root span, when it is fixed: a trace derived from `cf-ray` takes the
    /// derived span id, so that a backend deriving the same trace gets this span as its parent.
    pub(crate) root_span_id: Option<SpanId>,
    pub(crate) sampled: bool,
    pub(crate) source: TraceIdSource,
    pub(crate) rng: Rng,
    pub(crate) spans: Vec<FinishedSpan>,
    pub(crate) errors: Vec<ErrorEvent>,
    pub(crate) breadcrumbs: VecDeque<Breadcrumb>,
    /// An error event, a panic or an error status happened: the trace is kept even unsampled.
    pub(crate) errored: bool,
    pub(crate) dropped_spans: u64,
    pub(crate) flushed: bool,
}

impl RequestState {
    pub(crate) fn new(
        trace_id: TraceId,
        remote_parent: Option<SpanId>,
        sampled: bool,
        source: TraceIdSource,
        rng: Rng,
    ) -> Self {
        RequestState {
            trace_id,
            remote_parent,
            root_span_id: None,
            sampled,
            source,
            rng,
            spans: Vec::new(),
            errors: Vec::new(),
            breadcrumbs: VecDeque::new(),
            errored: false,
            dropped_spans: 0,
            flushed: false,
        }
    }

    /// Takes what is to be sent, once: the spans when the trace is sampled or errored, and the
    /// error events. `None` when already flushed.
    pub(crate) fn take_export(&mut self) -> Option<(Vec<FinishedSpan>, Vec<ErrorEvent>)> {
        if self.flushed {
            return None;
        }
        self.flushed = true;
        let spans = std::mem::take(&mut self.spans);
        let spans = if self.sampled || self.errored {
            spans
        } else {
            Vec::new()
        };
        Some((spans, std::mem::take(&mut self.errors)))
    }
}

/// The shared state of one request.
pub(crate) type Shared = Arc<Mutex<RequestState>>;

/// Locks without waiting: a Worker has one thread, so a held lock means re-entry (a panic inside
/// the layer, or a subscriber callback during one), and waiting would never end.
pub(crate) fn try_lock(state: &Shared) -> Option<MutexGuard<'_, RequestState>> {
    match state.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

pub(crate) fn to_system_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A span's data while it is open, in the registry's extensions.
#[derive(Debug)]
pub(crate) struct SpanData {
    pub(crate) span_id: SpanId,
    parent_span_id: Option<SpanId>,
    parent_is_remote: bool,
    name: String,
    kind: SpanKind,
    start: u64,
    attributes: Vec<(String, String)>,
    events: Vec<SpanEvent>,
    error: Option<String>,
}

impl SpanData {
    /// Records a field, mapping the `otel.*` conventions of tracing-opentelemetry.
    fn record(&mut self, name: &str, value: String) {
        match name {
            "otel.name" => self.name = value,
            "otel.kind" => {
                self.kind = match value.to_ascii_lowercase().as_str() {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    _ => SpanKind::Internal,
                }
            }
            "otel.status_code" => {
                if value.eq_ignore_ascii_case("error") {
                    self.error.get_or_insert_with(String::new);
                } else if value.eq_ignore_ascii_case("ok") {
                    self.error = None;
                }
            }
            "otel.status_message" => self.error = Some(value),
            _ => match self.attributes.iter_mut().find(|(k, _)| k == name) {
                Some(slot) => slot.1 = value,
                None => self.attributes.push((name.to_owned(), value)),
            },
        }
    }
}

/// Collects fields as `(name, value)` strings.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name().to_owned(), value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name().to_owned(), value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name().to_owned(), value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name().to_owned(), value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.push((field.name().to_owned(), value.to_string()));
    }
}

/// The layer of one request's subscriber.
pub(crate) struct WorkerLayer {
    pub(crate) state: Shared,
    pub(crate) clock: Clock,
    pub(crate) service_name: Arc<str>,
}

impl WorkerLayer {
    fn level_name(level: Level) -> &'static str {
        match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            _ => "debug",
        }
    }
}

impl<S> Layer<S> for WorkerLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanData>().map(|d| d.span_id));
        let Some(mut st) = try_lock(&self.state) else {
            return;
        };
        let fixed = if parent.is_none() {
            st.root_span_id.take()
        } else {
            None
        };
        let span_id = match fixed {
            Some(id) => id,
            None => st.rng.span_id(),
        };
        let (parent_span_id, parent_is_remote) = match parent {
            Some(p) => (Some(p), false),
            None => (st.remote_parent, st.remote_parent.is_some()),
        };
        drop(st);
        let mut data = SpanData {
            span_id,
            parent_span_id,
            parent_is_remote,
            name: attrs.metadata().name().to_owned(),
            kind: SpanKind::Internal,
            start: (self.clock)(),
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        for (k, v) in fields.0 {
            data.record(&k, v);
        }
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanData>() {
            for (k, v) in fields.0 {
                data.record(&k, v);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > Level::INFO {
            return;
        }
        let now = (self.clock)();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields
            .0
            .iter()
            .position(|(k, _)| k == "message")
            .map(|i| fields.0.remove(i).1)
            .unwrap_or_else(|| meta.name().to_owned());

        // The span the event happened in: its ids for Sentry, the event on it for OTLP.
        let mut ids = None;
        if let Some(span) = ctx.event_span(event) {
            let mut ext = span.extensions_mut();
            if let Some(data) = ext.get_mut::<SpanData>() {
                ids = Some((data.span_id, data.parent_span_id, data.name.clone()));
                if data.events.len() < MAX_SPAN_EVENTS {
                    let mut attrs = fields.0.clone();
                    attrs.push(("level".into(), level.as_str().into()));
                    attrs.push(("target".into(), meta.target().into()));
                    data.events
                        .push(SpanEvent::new(message.clone(), to_system_time(now), attrs));
                }
                if level == Level::ERROR {
                    data.error = Some(message.clone());
                }
            }
        }

        let Some(mut st) = try_lock(&self.state) else {
            return;
        };
        if level == Level::ERROR {
            st.errored = true;
            if st.errors.len() < MAX_ERRORS {
                let (span_id, parent_span_id, op) = match ids {
                    Some(ids) => ids,
                    None => {
                        let parent = st.remote_parent;
                        (st.rng.span_id(), parent, self.service_name.to_string())
                    }
                };
                let event_id = st.rng.event_id();
                let trace_id = st.trace_id;
                st.errors.push(ErrorEvent {
                    event_id,
                    time: now,
                    message,
                    exception: None,
                    logger: meta.target().to_owned(),
                    fields: fields.0,
                    trace_id,
                    span_id,
                    parent_span_id,
                    op,
                });
            }
        } else {
            if st.breadcrumbs.len() == MAX_BREADCRUMBS {
                st.breadcrumbs.pop_front();
            }
            st.breadcrumbs.push_back(Breadcrumb {
                time: now,
                level: Self::level_name(level),
                category: meta.target().to_owned(),
                message,
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        let end = (self.clock)();
        let Some(mut st) = try_lock(&self.state) else {
            return;
        };
        if data.error.is_some() {
            st.errored = true;
        }
        if st.spans.len() >= MAX_SPANS || st.flushed {
            st.dropped_spans += 1;
            return;
        }
        let mut finished = FinishedSpan::new(
            st.trace_id,
            data.span_id,
            data.name,
            data.kind,
            to_system_time(data.start),
            to_system_time(end.max(data.start)),
        );
        finished.parent_span_id = data.parent_span_id;
        finished.parent_is_remote = data.parent_is_remote;
        finished.sampled = st.sampled;
        finished.attributes = data.attributes;
        finished.events = data.events;
        finished.error = data.error;
        finished.service_name = self.service_name.to_string();
        st.spans.push(finished);
    }
}

/// The span id of `id` in `dispatch`, when `dispatch` is a request's subscriber.
pub(crate) fn span_id_of(dispatch: &tracing::Dispatch, id: &Id) -> Option<SpanId> {
    let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
    let span = registry.span(id)?;
    let ext = span.extensions();
    ext.get::<SpanData>().map(|d| d.span_id)
}

/// The spans still open from the current span of `dispatch` up to the root, innermost first,
/// ended now with `error`: what a panic leaves behind. Takes the dispatch rather than looking it
/// up, because a panic hook already runs inside `tracing::dispatcher::get_default`.
pub(crate) fn end_open_scope(
    dispatch: &tracing::Dispatch,
    layer: &WorkerLayer,
    error: &str,
) -> Vec<FinishedSpan> {
    let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
        return Vec::new();
    };
    let Some(id) = dispatch.current_span().id().cloned() else {
        return Vec::new();
    };
    let Some(span) = registry.span(&id) else {
        return Vec::new();
    };
    let end = (layer.clock)();
    let Some(st) = try_lock(&layer.state) else {
        return Vec::new();
    };
    let (trace_id, sampled) = (st.trace_id, st.sampled);
    drop(st);
    span.scope()
        .filter_map(|s| {
            let ext = s.extensions();
            let d = ext.get::<SpanData>()?;
            let mut f = FinishedSpan::new(
                trace_id,
                d.span_id,
                d.name.clone(),
                d.kind,
                to_system_time(d.start),
                to_system_time(end.max(d.start)),
            );
            f.parent_span_id = d.parent_span_id;
            f.parent_is_remote = d.parent_is_remote;
            f.sampled = sampled;
            f.attributes = d.attributes.clone();
            f.events = d.events.clone();
            f.error = Some(error.to_owned());
            f.service_name = layer.service_name.to_string();
            Some(f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::future::Future;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    static NOW: AtomicU64 = AtomicU64::new(1_700_000_000_000_000_000);

    fn clock() -> u64 {
        NOW.fetch_add(1_000_000, Ordering::Relaxed)
    }

    fn remote() -> (TraceId, SpanId) {
        (
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        )
    }

    fn run(sampled: bool, f: impl FnOnce()) -> Shared {
        let (trace, parent) = remote();
        let state = Arc::new(Mutex::new(RequestState::new(
            trace,
            Some(parent),
            sampled,
            TraceIdSource::TraceParent,
            Rng::new(7),
        )));
        let layer = WorkerLayer {
            state: state.clone(),
            clock,
            service_name: Arc::from("edge"),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        state
    }

    #[test]
    fn spans_continue_the_remote_parent_and_nest() {
        let state = run(true, || {
            let root = tracing::info_span!(
                "fetch",
                otel.name = "GET /x",
                otel.kind = "server",
                http.response.status_code = tracing::field::Empty
            );
            {
                let _g = root.enter();
                let child = tracing::info_span!("backend", otel.kind = "client");
                let _c = child.enter();
                tracing::info!(attempt = 1, "calling");
            }
            root.record("http.response.status_code", 200);
        });
        let mut st = state.lock().unwrap();
        let (spans, errors) = st.take_export().unwrap();
        assert!(errors.is_empty());
        assert_eq!(spans.len(), 2);
        let (trace, parent) = remote();
        let child = &spans[0];
        let root = &spans[1];
        assert_eq!(
            (root.name.as_str(), root.kind),
            ("GET /x", SpanKind::Server)
        );
        assert_eq!((root.trace_id, root.parent_span_id), (trace, Some(parent)));
        assert!(root.parent_is_remote);
        assert_eq!(root.attribute("http.response.status_code"), Some("200"));
        assert_eq!(
            (child.trace_id, child.parent_span_id),
            (trace, Some(root.span_id))
        );
        assert!(!child.parent_is_remote);
        assert_eq!(child.kind, SpanKind::Client);
        assert_ne!(child.span_id, root.span_id);
        assert!(root.start < child.start && child.end < root.end);
        assert_eq!(child.events[0].name, "calling");
        assert_eq!(st.breadcrumbs.len(), 1);
        // Flushed once.
        assert!(st.take_export().is_none());
    }

    #[test]
    fn an_error_event_is_a_sentry_event_in_its_span_and_keeps_an_unsampled_trace() {
        let state = run(false, || {
            let root = tracing::info_span!("fetch");
            let _g = root.enter();
            tracing::warn!("slow backend");
            tracing::error!(status = 500, "backend failed");
        });
        let mut st = state.lock().unwrap();
        assert!(st.errored);
        let crumbs: Vec<_> = st.breadcrumbs.iter().map(|b| b.message.clone()).collect();
        assert_eq!(crumbs, ["slow backend"]);
        let (spans, errors) = st.take_export().unwrap();
        assert_eq!(
            spans.len(),
            1,
            "an errored trace is kept although unsampled"
        );
        assert_eq!(spans[0].error.as_deref(), Some("backend failed"));
        assert!(!spans[0].sampled);
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.message, "backend failed");
        assert_eq!((e.trace_id, e.span_id), (remote().0, spans[0].span_id));
        assert_eq!(e.parent_span_id, Some(remote().1));
        assert_eq!(e.fields, vec![("status".to_string(), "500".to_string())]);
        assert_eq!(e.event_id.len(), 32);
    }

    #[test]
    fn an_unsampled_trace_without_error_sends_nothing() {
        let state = run(false, || {
            let _g = tracing::info_span!("fetch").entered();
            tracing::info!("fine");
        });
        let (spans, errors) = state.lock().unwrap().take_export().unwrap();
        assert!(spans.is_empty() && errors.is_empty());
    }

    #[test]
    fn async_spans_keep_their_parent() {
        let state = run(true, || {
            let fut = async {
                let inner = tracing::info_span!("inner");
                async {}.instrument(inner).await;
            }
            .instrument(tracing::info_span!("outer"));
            // A trivial executor: the futures never pend.
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut fut = std::pin::pin!(fut);
            assert!(fut.as_mut().poll(&mut cx).is_ready());
        });
        let (spans, _) = state.lock().unwrap().take_export().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].parent_span_id, Some(spans[1].span_id));
    }

    #[test]
    fn rng_ids_are_valid_and_distinct() {
        let mut rng = Rng::new(0);
        let a = rng.span_id();
        let b = rng.span_id();
        assert!(a.is_valid() && b.is_valid() && a != b);
        assert!(rng.trace_id().is_valid());
        let id = rng.event_id();
        assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
