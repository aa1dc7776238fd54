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
    /// What Cloudflare (or our Worker) says about the request, when the trust policy believes it
    /// ([`edge_context`]).
    #[cfg(feature = "cloudflare")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
    pub edge: Option<&'a integra_observe_cloudflare::EdgeContext>,
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
            #[cfg(feature = "cloudflare")]
            edge: None,
        }
    }

    /// The same request with its believed edge context ([`edge_context`]).
    #[cfg(feature = "cloudflare")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
    pub fn with_edge(mut self, edge: Option<&'a integra_observe_cloudflare::EdgeContext>) -> Self {
        self.edge = edge;
        self
    }
}

/// The server span for an incoming request, continuing the caller's trace (in every phase) and
/// recording where the trace id came from (`integra.trace_id.source`). Enter it (or instrument the
/// handler with it) for the request's duration.
///
/// Precedence: a trusted `traceparent` (or `sentry-trace`, `uber-trace-id`, `x-trace-id`); then,
/// with the `cloudflare` feature, the trace context of a verified signed edge header (`edge`);
/// then a trace id derived from the believed user-facing ray id (`cf-ray`); then a new trace.
pub fn server_span(req: &ServerRequest<'_>) -> tracing::Span {
    let name = format!("{} {}", req.method, req.route.unwrap_or(""));
    let name = name.trim_end();
    let trusted = outgoing_config().trust_incoming;
    // An untrusted caller's context is only linked: the trace starts here.
    let untrusted = req.extracted.remote.filter(|_| !trusted);
    // The remote parent, where its trace id came from, and the context kept for outgoing calls.
    let (remote, source, incoming) = match req.extracted.remote.filter(|_| trusted) {
        Some(r) => (
            Some(r),
            req.extracted.source.as_str(),
            Some(req.extracted.clone()),
        ),
        None => match edge_parent(req) {
            Some((r, s)) => (
                Some(r),
                s,
                Some(Extracted {
                    remote: Some(r),
                    ..Extracted::default()
                }),
            ),
            None => (None, "new", None),
        },
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
    let make = || {
        tracing::info_span!(
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
            cloudflare.edge.trust = Empty,
            cloudflare.ray_id = Empty,
            cloudflare.colo = Empty,
            geo.country.code = Empty,
            cloudflare.ip_country = Empty,
            cloudflare.visitor.scheme = Empty,
            cloudflare.worker = Empty,
            client.address = Empty,
        )
    };
    // The remote parent is known before the span exists, so the sampling decision is taken with
    // it and the span's fields are kept when the caller sampled the trace.
    #[cfg(feature = "otlp")]
    let span = match remote {
        Some(r) => {
            let flags = match r.sampled {
                Some(s) => (r.flags & !1) | u8::from(s),
                None => r.flags | 1, // the caller deferred the decision: continue as sampled
            };
            let tracestate = incoming
                .as_ref()
                .and_then(|ex| ex.tracestate.as_ref())
                .map(|t| t.to_header());
            integra_observe_otlp::with_remote_parent(
                r.trace_id,
                r.span_id,
                flags,
                tracestate.as_deref(),
                make,
            )
        }
        None => make(),
    };
    #[cfg(not(feature = "otlp"))]
    let span = make();
    #[cfg(feature = "cloudflare")]
    if let Some(edge) = req.edge {
        record_edge(&span, edge);
    }
    #[cfg(feature = "otlp")]
    if let Some(r) = untrusted {
        integra_observe_otlp::add_remote_link(&span, r.trace_id, r.span_id, r.flags);
    }
    if let Some(incoming) = &incoming {
        store_incoming(&span, incoming);
    }
    span
}

/// The remote parent the believed edge context gives (feature `cloudflare`), when the caller gave
/// none that is trusted.
fn edge_parent(req: &ServerRequest<'_>) -> Option<(RemoteContext, &'static str)> {
    #[cfg(feature = "cloudflare")]
    return req.edge.and_then(edge_remote);
    #[cfg(not(feature = "cloudflare"))]
    {
        let _ = req;
        None
    }
}

/// The remote parent an edge context gives, and its `integra.trace_id.source`: the trace context
/// the Worker signed (`edge`), else the trace derived from the user-facing ray id (`cf-ray`), with
/// the derived edge span as parent (the span a Worker that started the trace from the ray id
/// has). Derived traces have no sampling decision yet: they continue as sampled.
#[cfg(feature = "cloudflare")]
fn edge_remote(
    edge: &integra_observe_cloudflare::EdgeContext,
) -> Option<(RemoteContext, &'static str)> {
    if let Some(tp) = &edge.traceparent {
        let r = RemoteContext {
            trace_id: tp.trace_id,
            span_id: tp.parent_id,
            sampled: Some(tp.sampled()),
            flags: tp.flags,
        };
        return Some((r, "edge"));
    }
    let ray = edge.ray.as_ref()?;
    let (trace_id, span_id) = (ray.trace_id(), ray.span_id());
    (trace_id.is_valid() && span_id.is_valid()).then_some((
        RemoteContext {
            trace_id,
            span_id,
            sampled: None,
            flags: 0,
        },
        "cf-ray",
    ))
}

/// Records the edge context on the server span (its fields are declared there) and keeps it as
/// Sentry tags for every event raised under the span. `client.address` only when the policy
/// allows personal data.
#[cfg(feature = "cloudflare")]
fn record_edge(span: &tracing::Span, edge: &integra_observe_cloudflare::EdgeContext) {
    let attributes = edge.attributes();
    for (key, value) in &attributes {
        span.record(*key, value.as_str());
    }
    let tags = integra_observe_core::SpanTags(
        attributes
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    );
    span.with_subscriber(|(id, dispatch)| {
        if let Some(s) = dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .and_then(|r| r.span(id))
        {
            s.extensions_mut().insert(tags);
        }
    });
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

/// The process-wide Cloudflare trust policy, set by [`set_cloudflare_policy`] or read from the
/// environment on first use.
#[cfg(feature = "cloudflare")]
static EDGE_POLICY: OnceLock<integra_observe_cloudflare::TrustPolicy> = OnceLock::new();

/// Sets the process-wide Cloudflare trust policy (used by [`edge_context`] and by every
/// `TraceLayer` without its own). `false` when one was already set or read.
#[cfg(feature = "cloudflare")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
pub fn set_cloudflare_policy(policy: integra_observe_cloudflare::TrustPolicy) -> bool {
    EDGE_POLICY.set(policy).is_ok()
}

/// The process-wide policy: the one set, else the environment's; an invalid variable is logged
/// (without the secret) and nothing is trusted.
#[cfg(feature = "cloudflare")]
pub(crate) fn edge_policy() -> &'static integra_observe_cloudflare::TrustPolicy {
    EDGE_POLICY.get_or_init(|| match cloudflare_policy_from_env() {
        Ok(policy) => policy,
        Err(error) => {
            tracing::error!(target: "integra_observe", "{error}; trusting no edge header");
            integra_observe_cloudflare::TrustPolicy::trust_nothing()
        }
    })
}

/// The Cloudflare trust policy from the environment:
///
/// * `INTEGRA_CLOUDFLARE_TRUST`: `none` (the default) or `cloudflare-ips` (believe `CF-*` headers
///   from Cloudflare's ranges: `INTEGRA_CLOUDFLARE_IP_RANGES` if set, else the embedded list);
/// * `INTEGRA_CLOUDFLARE_INGRESS_RANGES`: our own ingress / load balancer ranges, skipped
///   through `X-Forwarded-For`;
/// * `INTEGRA_EDGE_SECRET` (and `INTEGRA_EDGE_SECRET_PREVIOUS` while rotating): verify the
///   signed `x-integra-edge` header, at least 32 bytes;
/// * `INTEGRA_EDGE_MAX_SKEW`: the signed header's clock-skew window in seconds (default 300);
/// * `SENTRY_SEND_DEFAULT_PII`: `true` allows `client.address`.
///
/// The error names the variable, the value (a secret masked) and the expected form.
///
/// ```
/// let policy = integra_observe::propagation::cloudflare_policy_from_env()?;
/// let layer = integra_observe::axum::TraceLayer::new().cloudflare(policy);
/// # Ok::<(), integra_observe::InitError>(())
/// ```
#[cfg(feature = "cloudflare")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
pub fn cloudflare_policy_from_env(
) -> Result<integra_observe_cloudflare::TrustPolicy, integra_observe_core::InitError> {
    cloudflare_policy_from(|name| std::env::var(name).ok())
}

#[cfg(feature = "cloudflare")]
fn cloudflare_policy_from(
    get: impl Fn(&'static str) -> Option<String>,
) -> Result<integra_observe_cloudflare::TrustPolicy, integra_observe_core::InitError> {
    use integra_observe_cloudflare::{IpRange, TrustPolicy};
    use integra_observe_core::{redact_secret_value, InitError, Source};
    const MIN_SECRET: usize = 32;
    let var = |name: &'static str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let ranges = |name: &'static str| -> Result<Option<Vec<IpRange>>, InitError> {
        var(name)
            .map(|v| {
                IpRange::parse_list(&v).map_err(|bad| {
                    InitError::invalid(
                        Source::Env(name),
                        v.clone(),
                        format!("comma-separated CIDR blocks such as `173.245.48.0/20,2400:cb00::/32` (`{bad}` is not one)"),
                    )
                })
            })
            .transpose()
    };
    let mut policy = TrustPolicy::trust_nothing();
    let edge_ranges = ranges("INTEGRA_CLOUDFLARE_IP_RANGES")?;
    match var("INTEGRA_CLOUDFLARE_TRUST").as_deref() {
        None | Some("none") => {}
        Some("cloudflare-ips") => {
            policy = match edge_ranges {
                Some(r) => policy.edge_ranges(r),
                None => policy.trust_cloudflare_ips(),
            }
        }
        Some(other) => {
            return Err(InitError::invalid(
                Source::Env("INTEGRA_CLOUDFLARE_TRUST"),
                other,
                "`none` or `cloudflare-ips`",
            ))
        }
    }
    if let Some(r) = ranges("INTEGRA_CLOUDFLARE_INGRESS_RANGES")? {
        policy = policy.behind_ingress(r);
    }
    for name in ["INTEGRA_EDGE_SECRET", "INTEGRA_EDGE_SECRET_PREVIOUS"] {
        if let Some(secret) = var(name) {
            if secret.len() < MIN_SECRET {
                return Err(InitError::invalid(
                    Source::Env(name),
                    redact_secret_value(&secret),
                    format!(
                        "a random secret of at least {MIN_SECRET} bytes, the same as the Worker's"
                    ),
                ));
            }
            policy = policy.edge_secret(secret);
        }
    }
    if let Some(skew) = var("INTEGRA_EDGE_MAX_SKEW") {
        match skew.parse::<u64>() {
            Ok(secs) if secs <= 86_400 => policy = policy.with_max_skew_secs(secs),
            _ => {
                return Err(InitError::invalid(
                    Source::Env("INTEGRA_EDGE_MAX_SKEW"),
                    skew,
                    "whole seconds from 0 to 86400, such as `300`",
                ))
            }
        }
    }
    if let Some(pii) = var("SENTRY_SEND_DEFAULT_PII") {
        policy = policy.allow_pii(matches!(
            pii.to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "on"
        ));
    }
    Ok(policy)
}

/// The edge context of a request under `policy` (or the process-wide one), if it believes any
/// of it: `peer` is the address that connected (axum's `ConnectInfo`), `None` when unknown.
#[cfg(feature = "cloudflare")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
pub fn edge_context(
    headers: &(impl HeaderSource + ?Sized),
    peer: Option<std::net::IpAddr>,
    policy: Option<&integra_observe_cloudflare::TrustPolicy>,
) -> Option<integra_observe_cloudflare::EdgeContext> {
    let policy = policy.unwrap_or_else(|| edge_policy());
    if !policy.is_active() {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    policy.evaluate(headers, peer, now)
}

#[cfg(all(test, feature = "cloudflare"))]
mod cloudflare_tests {
    use super::*;

    fn policy(
        vars: &[(&str, &str)],
    ) -> Result<integra_observe_cloudflare::TrustPolicy, integra_observe_core::InitError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        cloudflare_policy_from(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_environment_trusts_nothing_by_default() {
        assert!(!policy(&[]).unwrap().is_active());
        assert!(!policy(&[("INTEGRA_CLOUDFLARE_TRUST", "none")])
            .unwrap()
            .is_active());
        assert!(policy(&[("INTEGRA_CLOUDFLARE_TRUST", "cloudflare-ips")])
            .unwrap()
            .is_active());
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_expected_form() {
        let e = policy(&[("INTEGRA_CLOUDFLARE_TRUST", "all")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("INTEGRA_CLOUDFLARE_TRUST")
                && e.contains("\"all\"")
                && e.contains("cloudflare-ips"),
            "{e}"
        );
        let e = policy(&[("INTEGRA_CLOUDFLARE_INGRESS_RANGES", "10.0.0.0/8,10.0.0.1/8")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("INTEGRA_CLOUDFLARE_INGRESS_RANGES")
                && e.contains("`10.0.0.1/8` is not one"),
            "{e}"
        );
        let e = policy(&[
            ("INTEGRA_CLOUDFLARE_TRUST", "cloudflare-ips"),
            ("INTEGRA_CLOUDFLARE_IP_RANGES", "x"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("INTEGRA_CLOUDFLARE_IP_RANGES"));
        let e = policy(&[("INTEGRA_EDGE_MAX_SKEW", "5m")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("INTEGRA_EDGE_MAX_SKEW") && e.contains("\"5m\""),
            "{e}"
        );
    }

    #[test]
    fn a_short_secret_is_refused_without_being_shown() {
        let e = policy(&[("INTEGRA_EDGE_SECRET", "hunter2")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("INTEGRA_EDGE_SECRET") && e.contains("<redacted, 7 bytes>"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let p = policy(&[("INTEGRA_EDGE_SECRET", &"s".repeat(32))]).unwrap();
        assert!(p.is_active());
        assert!(!format!("{p:?}").contains(&"s".repeat(32)));
    }
}
