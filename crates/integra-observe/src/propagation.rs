//! Trace context across services: continuing an incoming trace in a server span, and the headers
//! to send on an outgoing request, in every phase.
//!
//! The codecs live in [`integra_observe_core::propagation`] (re-exported here); this module ties them
//! to the running backends. When OpenTelemetry owns span identity the server span gets the caller
//! as its remote OpenTelemetry parent; with Sentry alone the caller's ids are handed to Sentry's
//! span layer as `sentry-trace`, so W3C `traceparent` continues a Sentry trace too. Nothing here may
//! fail a request: an invalid header starts a new trace.

use std::sync::OnceLock;

pub use integra_observe_core::propagation::*;
use integra_observe_core::SpanContext;
use tracing::field::Empty;
use tracing_subscriber::registry::LookupSpan;

/// What outgoing requests carry, fixed at init.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub propagators: Vec<Propagator>,
    /// The dynamic sampling context this service starts for new traces (Sentry on); its trace id
    /// and sampled flag are filled per request.
    pub dsc: Option<DynamicSamplingContext>,
    /// Whether incoming context is continued (`INTEGRA_TRUST_INCOMING_CONTEXT`).
    pub trust_incoming: bool,
}

impl Outgoing {
    /// The propagators named in `OTEL_PROPAGATORS`, and a sampling context when Sentry runs.
    pub(crate) fn new(
        propagators: &[String],
        dsc: Option<DynamicSamplingContext>,
        trust_incoming: bool,
    ) -> Self {
        Outgoing {
            propagators: propagators
                .iter()
                .filter_map(|p| Propagator::parse(p))
                .collect(),
            dsc,
            trust_incoming,
        }
    }
}

static OUTGOING: OnceLock<Outgoing> = OnceLock::new();

pub(crate) fn configure(outgoing: Outgoing) {
    let _ = OUTGOING.set(outgoing);
}

fn outgoing_config() -> Outgoing {
    OUTGOING.get().cloned().unwrap_or_else(|| Outgoing {
        propagators: Propagator::DEFAULT.to_vec(),
        dsc: None,
        trust_incoming: true,
    })
}

/// The incoming context of a server span, kept in its extensions for the outgoing calls made
/// under it (tracestate, baggage and the caller's Sentry sampling context are forwarded).
#[derive(Clone)]
struct Incoming(Extracted);

/// Headers to put on an outgoing request made in the current span: `traceparent`, `tracestate`,
/// `baggage` and `sentry-trace` by default (`OTEL_PROPAGATORS` chooses), all with the same ids.
/// Empty outside any span or when nothing runs.
///
/// ```
/// assert!(integra_observe::propagation::outgoing_headers().is_empty()); // no span here
/// ```
pub fn outgoing_headers() -> Vec<(&'static str, String)> {
    let Some(ctx) = crate::current_span_context() else {
        return Vec::new();
    };
    headers_for(&ctx, find_incoming().as_ref(), &outgoing_config())
}

fn headers_for(
    ctx: &SpanContext,
    incoming: Option<&Extracted>,
    out: &Outgoing,
) -> Vec<(&'static str, String)> {
    let same_trace = incoming.filter(|ex| ex.remote.is_some_and(|r| r.trace_id == ctx.trace_id));
    let flags = same_trace.and_then(|ex| ex.remote.map(|r| r.flags));
    let tracestate = same_trace.and_then(|ex| ex.tracestate.as_ref());
    let baggage = incoming.and_then(|ex| ex.baggage.as_ref());
    // The head of the trace fixes the sampling context; a service that continues it forwards it.
    let dsc = match same_trace.and_then(|ex| ex.dsc.clone()) {
        Some(dsc) => Some(dsc),
        None => out.dsc.clone().map(|mut dsc| {
            dsc.trace_id = ctx.trace_id;
            dsc.sampled = Some(ctx.sampled);
            dsc
        }),
    };
    inject(
        ctx,
        flags,
        &out.propagators,
        tracestate,
        baggage,
        dsc.as_ref(),
    )
}

fn find_incoming() -> Option<Extracted> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<Incoming>().map(|i| i.0.clone()))
        })
        .flatten()
}

fn store_incoming(span: &tracing::Span, extracted: &Extracted) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(s) = dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .and_then(|r| r.span(id))
        {
            s.extensions_mut().insert(Incoming(extracted.clone()));
        }
    });
}

/// An incoming request, as [`server_span`] needs it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ServerRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The matched route template (`/api/cases/{id}`), when the router knows it.
    pub route: Option<&'a str>,
    /// The request path.
    pub path: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The trace context the request carried.
    pub extracted: &'a Extracted,
}

impl<'a> ServerRequest<'a> {
    /// A request with the given method, path and extracted context.
    pub fn new(method: &'a str, path: &'a str, extracted: &'a Extracted) -> Self {
        ServerRequest {
            method,
            route: None,
            path,
            scheme: "http",
            host: None,
            user_agent: None,
            extracted,
        }
    }
}

/// The server span for an incoming request, continuing the caller's trace (in every phase) and
/// recording where the trace id came from (`integra.trace_id.source`). Enter it (or instrument the
/// handler with it) for the request's duration.
pub fn server_span(req: &ServerRequest<'_>) -> tracing::Span {
    let name = format!("{} {}", req.method, req.route.unwrap_or(""));
    let name = name.trim_end();
    let trusted = outgoing_config().trust_incoming;
    // An untrusted caller's context is only linked: the trace starts here.
    let untrusted = req.extracted.remote.filter(|_| !trusted);
    let remote = req.extracted.remote.filter(|_| trusted);
    let source = if remote.is_some() {
        req.extracted.source.as_str()
    } else {
        "new"
    };
    // Sentry's span layer continues a trace given as `sentry-trace`, whatever header carried it.
    let sentry_trace = remote.map(|r| {
        let sampled = match r.sampled {
            Some(true) => "-1",
            Some(false) => "-0",
            None => "",
        };
        format!("{}-{}{sampled}", r.trace_id, r.span_id)
    });
    let (host, port) = split_host(req.host);
    let span = tracing::info_span!(
        target: "integra_observe::http",
        "HTTP request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        sentry.name = %name,
        sentry.op = "http.server",
        sentry.trace = sentry_trace,
        http.request.method = %req.method,
        http.route = req.route,
        url.path = %req.path,
        url.scheme = %req.scheme,
        server.address = host,
        server.port = port,
        user_agent.original = req.user_agent,
        http.response.status_code = Empty,
        error.type = Empty,
        integra.trace_id.source = source,
        integra.incoming.trace = untrusted.map(|r| format!("{}-{}", r.trace_id, r.span_id)),
    );
    #[cfg(feature = "otlp")]
    if let Some(r) = remote {
        let flags = match r.sampled {
            Some(s) => (r.flags & !1) | u8::from(s),
            None => r.flags | 1, // the caller deferred the decision: continue as sampled
        };
        let tracestate = req.extracted.tracestate.as_ref().map(|t| t.to_header());
        integra_observe_otlp::set_remote_parent(
            &span,
            r.trace_id,
            r.span_id,
            flags,
            tracestate.as_deref(),
        );
    }
    #[cfg(feature = "otlp")]
    if let Some(r) = untrusted {
        integra_observe_otlp::add_remote_link(&span, r.trace_id, r.span_id, r.flags);
    }
    if remote.is_some() {
        store_incoming(&span, req.extracted);
    }
    span
}

fn split_host(host: Option<&str>) -> (Option<&str>, Option<u16>) {
    match host {
        Some(h) => match h.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') || h.starts_with('[') => {
                (Some(name), port.parse().ok())
            }
            _ => (Some(h), None),
        },
        None => (None, None),
    }
}

/// Records a dynamic attribute (such as an allow-listed header) on the span's OpenTelemetry span.
/// Without OpenTelemetry it is dropped: `tracing` spans only carry fields declared up front.
pub fn record_attribute(span: &tracing::Span, key: &str, value: &str) {
    #[cfg(feature = "otlp")]
    integra_observe_otlp::set_attribute(span, key, value);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, key, value);
}

/// Records the response status on a server span; a 5xx marks it as an error and is reported to
/// Sentry (and as an exception event) from inside the span.
pub fn record_server_status(span: &tracing::Span, status: u16, method: &str, route: Option<&str>) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
        span.record("error.type", status);
        let message = format!("{method} {} answered {status}", route.unwrap_or(""));
        span.in_scope(|| {
            tracing::error!(target: "integra_observe::http", status, "{message}");
        });
    }
}

/// An outgoing request, as [`client_span`] needs it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ClientRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The full URL, credentials and secret query values already removed.
    pub url: &'a str,
    /// The server's host.
    pub host: &'a str,
    /// The server's port.
    pub port: Option<u16>,
}

/// The client span for an outgoing request. Take [`outgoing_headers`] inside it.
pub fn client_span(req: &ClientRequest<'_>) -> tracing::Span {
    tracing::info_span!(
        target: "integra_observe::http",
        "HTTP client request",
        otel.name = %req.method,
        otel.kind = "client",
        otel.status_code = Empty,
        sentry.op = "http.client",
        http.request.method = %req.method,
        url.full = %req.url,
        server.address = %req.host,
        server.port = req.port,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Records the response status on a client span (4xx and 5xx mark it as an error).
pub fn record_client_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 400 {
        span.record("otel.status_code", "error");
        span.record("error.type", status);
    }
}

/// Records a transport failure on a client span.
pub fn record_client_error(span: &tracing::Span, error: &dyn std::fmt::Display) {
    span.record("otel.status_code", "error");
    span.record("error.type", tracing::field::display(error));
}

pub use integra_observe_core::redact_url;

/// Reads trace headers from an `http::HeaderMap`; values that are not UTF-8 count as absent.
#[cfg(any(feature = "axum", feature = "reqwest"))]
#[derive(Debug, Clone, Copy)]
pub struct HeaderMapSource<'a>(pub &'a http::HeaderMap);

#[cfg(any(feature = "axum", feature = "reqwest"))]
impl HeaderSource for HeaderMapSource<'_> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0.get_all(name).iter().map(|v| v.as_bytes()).collect()
    }
}
