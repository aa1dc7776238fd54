//! Test helpers that ship with the library (feature `test`): run a closure with the same layers
//! `init` installs, capture the spans and Sentry events it produced in memory, and assert on them.
//! Nothing is sent and nothing global is installed, so tests can run in parallel.
//!
//! ```
//! use integra_observe::test::capture;
//!
//! let captured = capture(|| {
//!     let _request = tracing::info_span!("handle_request").entered();
//!     let _db = tracing::info_span!("query", db.system = "postgresql").entered();
//!     tracing::error!("connection refused");
//! });
//! let request = captured.span("handle_request");
//! let query = captured.span("query");
//! captured.assert_parent(query, request);
//! assert_eq!(query.attribute("db.system"), Some("postgresql"));
//! assert!(captured.same_trace());
//! // One identity: the Sentry event carries the span it happened in.
//! assert_eq!(captured.events[0].message.as_deref(), Some("connection refused"));
//! assert_eq!(captured.event_span_id(0), Some(query.span_id));
//! ```

use std::sync::{Arc, Mutex};

pub use integra_observe_sentry::with_captured_events;

use integra_observe_core::{Config, FinishedSpan, SpanId, SpanSink};
use integra_observe_sentry::sentry;
use tracing_subscriber::layer::SubscriberExt;

/// What a closure produced.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Captured {
    /// Finished spans, in the order they ended.
    pub spans: Vec<FinishedSpan>,
    /// Sentry events, exactly as they would be sent.
    pub events: Vec<sentry::protocol::Event<'static>>,
}

#[derive(Default)]
struct MemorySink(Mutex<Vec<FinishedSpan>>);

impl SpanSink for MemorySink {
    fn on_end(&self, span: &FinishedSpan) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(span.clone());
    }
}

/// Runs `f` with integra-observe's OpenTelemetry and Sentry layers (OpenTelemetry owning span
/// identity, as in phase 3) on a local subscriber, and returns the spans and events it produced.
pub fn capture<F: FnOnce()>(f: F) -> Captured {
    let resolved = Config::new()
        .sentry_dsn("https://public@127.0.0.1/1")
        .resolve();
    let sink = Arc::new(MemorySink::default());
    let pipeline =
        integra_observe_otlp::Pipeline::new(None, resolved.sampler).with_sink(sink.clone());
    let Ok(backend) = integra_observe_otlp::init(pipeline, &resolved.settings.service) else {
        return Captured::default();
    };
    let Some(sentry_settings) = resolved.sentry else {
        return Captured::default();
    };
    let options = integra_observe_sentry::client_options(
        &sentry_settings,
        &resolved.settings.service,
        Some(integra_observe_otlp::active_span()),
    );
    let subscriber = tracing_subscriber::registry()
        .with(backend.layer())
        .with(integra_observe_sentry::layer(false));
    let events = sentry::test::with_captured_events_options(
        || tracing::subscriber::with_default(subscriber, f),
        options,
    );
    backend.shutdown(std::time::Duration::from_secs(1));
    let spans = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|p| p.into_inner()));
    Captured { spans, events }
}

impl Captured {
    /// The first span named `name`.
    ///
    /// # Panics
    /// When there is none (this is a test helper: it fails the test with the names it has).
    #[allow(clippy::panic)]
    pub fn span(&self, name: &str) -> &FinishedSpan {
        self.spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.spans.iter().map(|s| s.name.as_str()).collect();
                panic!("no span named {name:?}; captured: {names:?}")
            })
    }

    /// The spans whose parent is `parent`.
    pub fn children(&self, parent: &FinishedSpan) -> Vec<&FinishedSpan> {
        self.spans
            .iter()
            .filter(|s| s.parent_span_id == Some(parent.span_id))
            .collect()
    }

    /// Asserts that `child`'s parent is `parent`.
    ///
    /// # Panics
    /// When it is not.
    #[allow(clippy::panic)]
    pub fn assert_parent(&self, child: &FinishedSpan, parent: &FinishedSpan) {
        if child.parent_span_id != Some(parent.span_id) || child.trace_id != parent.trace_id {
            panic!("{:?} is not a child of {:?}", child.name, parent.name);
        }
    }

    /// Whether every span belongs to one trace.
    pub fn same_trace(&self) -> bool {
        self.spans
            .windows(2)
            .all(|w| w[0].trace_id == w[1].trace_id)
    }

    /// The span id carried by the `i`-th Sentry event.
    pub fn event_span_id(&self, i: usize) -> Option<SpanId> {
        match self.events.get(i)?.contexts.get("trace")? {
            sentry::protocol::Context::Trace(tc) => SpanId::from_hex(&tc.span_id.to_string()),
            _ => None,
        }
    }
}
