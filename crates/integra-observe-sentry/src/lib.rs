#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breadcrumbs;
mod performance;
mod ratelimit;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use integra_observe_core::{
    ActiveSpan, Counters, ErrorInfo, InitError, SentrySettings, ServiceInfo, Stats,
};
use sentry::protocol::{Context, Event, TraceContext, Value};
use sentry::ClientOptions;
use tracing::Level;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub use performance::TransactionSink;
pub use transport::{HttpTransport, HttpTransportFactory};

/// The Sentry SDK this backend is built on, for scopes, users and manual captures.
pub use sentry;

/// The context sentry-tracing stores an event's fields in.
const FIELDS_CONTEXT: &str = "Rust Tracing Fields";
/// Sentry's limit for a tag value.
const MAX_TAG_LEN: usize = 200;

/// A running Sentry client: flush, shut down and read its counters.
pub struct SentryBackend {
    client: Arc<sentry::Client>,
    counters: Arc<Counters>,
    redactor: integra_observe_core::Redactor,
}

impl std::fmt::Debug for SentryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryBackend")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Starts the Sentry client and binds it to the main hub.
///
/// `active_span` is given when OpenTelemetry owns span identity: events then take the ids of the
/// active OpenTelemetry span, and that span gets the event id. Without it Sentry's own span ids
/// (from [`layer`]'s span layer) are used.
pub fn init(
    settings: &SentrySettings,
    service: &ServiceInfo,
    shutdown_timeout: Duration,
    active_span: Option<Arc<dyn ActiveSpan>>,
) -> Result<SentryBackend, InitError> {
    let counters = Arc::new(Counters::default());
    let dsn = settings
        .dsn
        .as_str()
        .parse::<sentry::types::Dsn>()
        .map_err(|e| InitError::Backend {
            backend: "sentry",
            message: format!("the DSN was not accepted by the Sentry client: {e}"),
        })?;
    let factory = HttpTransportFactory {
        dsn: settings.dsn.clone(),
        queue_size: settings.queue_size,
        request_timeout: settings.request_timeout,
        counters: counters.clone(),
    };
    let mut options = client_options(settings, service, active_span);
    options.dsn = Some(dsn);
    options.shutdown_timeout = shutdown_timeout;
    options.transport = Some(Arc::new(factory));
    // What `sentry::init` would add, without its reading of the process environment (our
    // `Config` already did that, with its own precedence).
    options.default_integrations = false;
    options.integrations = vec![
        Arc::new(sentry::integrations::backtrace::AttachStacktraceIntegration),
        Arc::new(sentry::integrations::contexts::ContextIntegration::default()),
        Arc::new(sentry::integrations::panic::PanicIntegration::default()),
        Arc::new(sentry::integrations::backtrace::ProcessStacktraceIntegration),
    ];
    let client = Arc::new(sentry::Client::from(options));
    sentry::Hub::main().bind_client(Some(client.clone()));
    Ok(SentryBackend {
        client,
        counters,
        redactor: integra_observe_core::Redactor::new(settings.redact_keys.clone())
            .with_max_value_len(settings.value_length),
    })
}

impl SentryBackend {
    /// Waits until queued envelopes are sent, at most `timeout`. `false` if time ran out.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.client.flush(Some(timeout))
    }

    /// Flushes and closes the client, at most `timeout`. Safe to call twice.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.client.close(Some(timeout))
    }

    /// A sink that turns the span backend's local root spans into Sentry transactions (phase 2),
    /// at the configured traces sample rate.
    pub fn transaction_sink(&self, traces_sample_rate: f32) -> Arc<TransactionSink> {
        Arc::new(TransactionSink::new(
            self.client.clone(),
            traces_sample_rate,
            self.counters.clone(),
            self.redactor.clone(),
        ))
    }

    /// Envelopes sent, dropped (by reason) so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// The ids of the Sentry span active on this thread, when Sentry owns span identity (no OTLP).
pub fn current_span_context() -> Option<integra_observe_core::SpanContext> {
    let span = sentry::Hub::current().configure_scope(|scope| scope.get_span())?;
    // What Sentry itself would propagate from this span (its own id, not its transaction's).
    let header = span
        .iter_headers()
        .find(|(name, _)| *name == "sentry-trace")?
        .1;
    let st = integra_observe_core::propagation::SentryTrace::parse(&header)?;
    Some(integra_observe_core::SpanContext::new(
        st.trace_id,
        st.span_id,
        st.sampled.unwrap_or(false),
    ))
}

/// Client options shared by the real client and the test capture: release, environment,
/// sampling, PII, and the `before_send` hook that ties events to the active span.
pub fn client_options(
    settings: &SentrySettings,
    service: &ServiceInfo,
    active_span: Option<Arc<dyn ActiveSpan>>,
) -> ClientOptions {
    let service_name = service.name.clone();
    let max_breadcrumbs = settings.max_breadcrumbs;
    breadcrumbs::MAX.store(max_breadcrumbs, std::sync::atomic::Ordering::Relaxed);
    let redactor = integra_observe_core::Redactor::new(settings.redact_keys.clone())
        .with_max_value_len(settings.value_length);
    let mut options = ClientOptions::new()
        .environment(service.environment.clone())
        .maybe_release(service.release.clone())
        .sample_rate(settings.sample_rate)
        .traces_sample_rate(settings.traces_sample_rate)
        .send_default_pii(settings.send_default_pii)
        .max_breadcrumbs(settings.max_breadcrumbs)
        .before_send(move |mut event| {
            breadcrumbs::attach(&mut event, max_breadcrumbs);
            // Which service raised it, searchable in Sentry as in Jaeger.
            event
                .tags
                .entry("service.name".into())
                .or_insert_with(|| service_name.clone());
            let mut event = before_send(event, active_span.as_deref());
            redact_event(&mut event, &redactor);
            Some(event)
        });
    options.user_agent = format!("integra-observe/{}", env!("CARGO_PKG_VERSION")).into();
    options
}

/// Runs on the thread that emitted the event, after the scope was applied.
fn before_send(mut event: Event<'static>, active_span: Option<&dyn ActiveSpan>) -> Event<'static> {
    promote_fields_to_tags(&mut event);
    add_span_tags(&mut event);
    let Some(active_span) = active_span else {
        return event;
    };
    let Some(span) = active_span.current() else {
        return event;
    };
    let previous = match event.contexts.remove("trace") {
        Some(Context::Trace(tc)) => *tc,
        _ => TraceContext::default(),
    };
    let trace = TraceContext {
        trace_id: span.trace_id.to_bytes().into(),
        span_id: span.span_id.to_bytes().into(),
        // The parent lives in the span backend; a stale Sentry parent would point nowhere.
        parent_span_id: None,
        ..previous
    };
    event
        .contexts
        .insert("trace".into(), Context::Trace(Box::new(trace)));
    let exception = event.exception.values.last();
    let message = event
        .message
        .clone()
        .or_else(|| exception.and_then(|e| e.value.clone()))
        .or_else(|| event.logentry.as_ref().map(|l| l.message.clone()))
        .unwrap_or_default();
    active_span.record_error(&ErrorInfo::new(
        event.event_id.simple().to_string(),
        message,
        exception.map(|e| e.ty.clone()),
    ));
    event
}

/// The one redaction step, on everything of an event that carries user data: message, exception
/// values, tags, extra, contexts (the event's and its spans' fields), breadcrumbs and request.
fn redact_event(event: &mut Event<'static>, r: &integra_observe_core::Redactor) {
    let text = |s: &mut String| {
        if let Some(new) = integra_observe_core::redact_value(s) {
            *s = new;
        }
    };
    if let Some(m) = event.message.as_mut() {
        text(m);
    }
    if let Some(l) = event.logentry.as_mut() {
        text(&mut l.message);
    }
    for e in event.exception.values.iter_mut() {
        if let Some(v) = e.value.as_mut() {
            text(v);
        }
    }
    for (k, v) in event.tags.iter_mut() {
        if let Some(new) = r.redact(k, v) {
            *v = new;
        }
    }
    for (k, v) in event.extra.iter_mut() {
        redact_json(r, k, v);
    }
    for ctx in event.contexts.values_mut() {
        match ctx {
            Context::Other(map) => {
                for (k, v) in map.iter_mut() {
                    redact_json(r, k, v);
                }
            }
            Context::Trace(tc) => {
                for (k, v) in tc.data.iter_mut() {
                    redact_json(r, k, v);
                }
            }
            _ => {}
        }
    }
    for b in event.breadcrumbs.values.iter_mut() {
        if let Some(m) = b.message.as_mut() {
            text(m);
        }
        for (k, v) in b.data.iter_mut() {
            redact_json(r, k, v);
        }
    }
    if let Some(req) = event.request.as_mut() {
        for (k, v) in req.headers.iter_mut() {
            if let Some(new) = r.redact(k, v) {
                *v = new;
            }
        }
        if let Some(c) = req.cookies.as_mut() {
            *c = integra_observe_core::REDACTED.to_owned();
        }
        if let Some(q) = req.query_string.as_mut() {
            if let Some(new) = integra_observe_core::redact_value(&format!("?{q}")) {
                *q = new.trim_start_matches('?').to_owned();
            }
        }
        if let Some(url) = req.url.as_mut() {
            if let Ok(parsed) = integra_observe_core::redact_url(url.as_str()).parse() {
                *url = parsed;
            }
        }
    }
}

/// Redacts a JSON value under `key`: secret keys lose their value, strings lose embedded
/// credentials, and objects and arrays are walked.
fn redact_json(r: &integra_observe_core::Redactor, key: &str, value: &mut Value) {
    if r.is_secret(key) {
        if !value.is_null() {
            *value = Value::String(integra_observe_core::REDACTED.to_owned());
        }
        return;
    }
    match value {
        Value::String(s) => {
            if let Some(new) = r.redact(key, s) {
                *s = new;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact_json(r, k, v);
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                redact_json(r, key, v);
            }
        }
        _ => {}
    }
}

/// Copies an event's scalar fields (as recorded by `error!(user.id = 42, ...)`) into tags, so they
/// can be searched in Sentry. Explicit `tags.*` fields keep precedence.
fn promote_fields_to_tags(event: &mut Event<'static>) {
    let Some(Context::Other(fields)) = event.contexts.get(FIELDS_CONTEXT) else {
        return;
    };
    for (key, value) in fields {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        if key == "error" || text.is_empty() {
            continue;
        }
        let text: String = text.chars().take(MAX_TAG_LEN).collect();
        event.tags.entry(key.clone()).or_insert(text);
    }
}

/// Sentry's error layer, given `ERROR` events only.
struct ErrorsOnly(sentry::integrations::tracing::ErrorLayer);

impl<S> Layer<S> for ErrorsOnly
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            self.0.on_event(event, ctx);
        }
    }
}

thread_local! {
    /// The [`integra_observe_core::SpanTags`] in scope of the `ERROR` event being captured on this
    /// thread: set just before the error layer runs and cleared just after it, because
    /// `before_send` runs inside the subscriber, where `tracing::Span::current()` is not available.
    static EVENT_TAGS: std::cell::RefCell<Option<Vec<(String, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Sets (`clear: false`) or clears (`clear: true`) [`EVENT_TAGS`] around the error layer.
struct SpanTagsLayer {
    clear: bool,
}

impl<S> Layer<S> for SpanTagsLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let tags = if self.clear {
            None
        } else {
            // Innermost first: a span's own tags win over its ancestors'.
            ctx.event_scope(event).and_then(|scope| {
                scope.into_iter().find_map(|s| {
                    s.extensions()
                        .get::<integra_observe_core::SpanTags>()
                        .map(|t| t.0.clone())
                })
            })
        };
        let _ = EVENT_TAGS.try_with(|t| {
            if let Ok(mut t) = t.try_borrow_mut() {
                *t = tags;
            }
        });
    }
}

/// Adds the [`integra_observe_core::SpanTags`] in scope of the event (such as the Cloudflare edge
/// context of the server span); tags the event already has are kept.
fn add_span_tags(event: &mut Event<'static>) {
    let tags = EVENT_TAGS
        .try_with(|t| t.try_borrow().ok().and_then(|t| t.clone()))
        .ok()
        .flatten();
    for (key, value) in tags.unwrap_or_default() {
        let value: String = value.chars().take(MAX_TAG_LEN).collect();
        event.tags.entry(key).or_insert(value);
    }
}

/// The `tracing` layers that feed Sentry: `INFO`/`WARN` events become breadcrumbs, `ERROR` events
/// become Sentry events (with the error's type and source chain), and, when `with_spans` is true
/// (Sentry owns span identity), spans become Sentry spans so that events carry their ids.
pub fn layer<S>(with_spans: bool) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    // No per-layer filters: a filter that turns a callsite away makes tracing ask every layer
    // about that callsite on each call, so each layer checks the level itself.
    let breadcrumbs = breadcrumbs::BreadcrumbLayer;
    let errors =
        ErrorsOnly(sentry::integrations::tracing::ErrorLayer::new().enable_span_attributes());
    let spans = with_spans.then(sentry::integrations::tracing::SpanLayer::new);
    // Spans first, so the error layer sees the Sentry span data of the span an event is in; the
    // span tags of an error event are set just before the error layer and cleared after it.
    Layer::and_then(spans, breadcrumbs)
        .and_then(SpanTagsLayer { clear: false })
        .and_then(errors)
        .and_then(SpanTagsLayer { clear: true })
}

/// Runs `f` with a local subscriber that has [`layer`] and a Sentry client capturing in memory,
/// and returns the events `f` produced, exactly as they would be sent.
///
/// ```
/// let events = integra_observe_sentry::with_captured_events(|| {
///     let _span = tracing::info_span!("checkout").entered();
///     tracing::warn!("low stock");
///     tracing::error!(order.id = 7, "payment failed");
/// });
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].message.as_deref(), Some("payment failed"));
/// assert_eq!(events[0].tags["order.id"], "7");
/// assert_eq!(events[0].breadcrumbs[0].message.as_deref(), Some("low stock"));
/// ```
#[cfg(feature = "test")]
#[cfg_attr(docsrs, doc(cfg(feature = "test")))]
pub fn with_captured_events<F: FnOnce()>(f: F) -> Vec<Event<'static>> {
    use tracing_subscriber::layer::SubscriberExt;
    let settings = integra_observe_core::Config::new()
        .sentry_dsn("https://public@127.0.0.1/1")
        .traces_sample_rate(1.0_f32)
        .resolve();
    let (Some(sentry), service) = (settings.sentry, settings.settings.service) else {
        return Vec::new();
    };
    let options = client_options(&sentry, &service, None);
    let subscriber = tracing_subscriber::registry().with(layer(true));
    sentry::test::with_captured_events_options(
        || tracing::subscriber::with_default(subscriber, f),
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use integra_observe_core::{SpanContext, SpanId, TraceId};
    use std::sync::Mutex;

    struct FakeOtel(SpanContext, Mutex<Vec<ErrorInfo>>);
    impl ActiveSpan for FakeOtel {
        fn current(&self) -> Option<SpanContext> {
            Some(self.0)
        }
        fn record_error(&self, error: &ErrorInfo) {
            self.1.lock().unwrap().push(error.clone());
        }
    }

    #[test]
    fn before_send_takes_the_active_span_ids_and_reports_the_event_id() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            true,
        );
        let otel = FakeOtel(sc, Mutex::default());
        let mut event = Event::new();
        event.message = Some("boom".into());
        let event = before_send(event, Some(&otel));
        let Some(Context::Trace(tc)) = event.contexts.get("trace") else {
            panic!("no trace")
        };
        assert_eq!(tc.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tc.span_id.to_string(), "00f067aa0ba902b7");
        let recorded = otel.1.lock().unwrap();
        assert_eq!(recorded[0].event_id, event.event_id.simple().to_string());
        assert_eq!(recorded[0].message, "boom");
    }

    #[test]
    fn scalar_fields_become_tags() {
        let mut event = Event::new();
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("user.id".to_owned(), Value::from(42));
        fields.insert("nested".to_owned(), serde_json::json!({"a": 1}));
        fields.insert("long".to_owned(), Value::from("x".repeat(500)));
        event
            .contexts
            .insert(FIELDS_CONTEXT.into(), Context::Other(fields));
        event.tags.insert("user.id".into(), "explicit".into());
        promote_fields_to_tags(&mut event);
        assert_eq!(event.tags["user.id"], "explicit");
        assert_eq!(event.tags["long"].len(), MAX_TAG_LEN);
        assert!(!event.tags.contains_key("nested"));
    }
}

#[cfg(all(test, feature = "test"))]
mod capture_tests {
    #[test]
    fn span_tags_in_scope_become_event_tags() {
        use tracing_subscriber::registry::LookupSpan;
        let events =
            crate::with_captured_events(|| {
                let server = tracing::info_span!("server");
                server.with_subscriber(|(id, dispatch)| {
                    let registry = dispatch
                        .downcast_ref::<tracing_subscriber::Registry>()
                        .unwrap();
                    registry.span(id).unwrap().extensions_mut().insert(
                        integra_observe_core::SpanTags(vec![
                            ("cloudflare.ray_id".into(), "230b030023ae2822-SJC".into()),
                            ("order.id".into(), "from the span".into()),
                        ]),
                    );
                });
                let _server = server.entered();
                let _handler = tracing::info_span!("handler").entered();
                tracing::error!(order.id = 7, "payment failed");
            });
        assert_eq!(events[0].tags["cloudflare.ray_id"], "230b030023ae2822-SJC");
        assert_eq!(
            events[0].tags["order.id"], "7",
            "the event's own fields win"
        );
    }

    #[test]
    fn nested_spans_put_the_innermost_span_on_the_event() {
        let mut inner = None;
        let events = crate::with_captured_events(|| {
            let _a = tracing::info_span!("handle_request").entered();
            let outer = crate::current_span_context();
            let _c = tracing::info_span!("fetch_keys").entered();
            inner = crate::current_span_context();
            assert_ne!(outer.map(|c| c.span_id), inner.map(|c| c.span_id));
            tracing::error!("verification failed");
        });
        let Some(sentry::protocol::Context::Trace(tc)) = events[0].contexts.get("trace") else {
            panic!()
        };
        let inner = inner.expect("a Sentry span");
        assert_eq!(tc.span_id.to_string(), inner.span_id.to_string());
        assert_eq!(tc.trace_id.to_string(), inner.trace_id.to_string());
    }
}
