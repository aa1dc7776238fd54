//! The Worker side: the JS clock and CSPRNG, the per-request subscriber, outgoing fetches with
//! trace headers, the one flush through `ctx.waitUntil`, and the panic hook.
//!
//! Exports are plain JS `fetch` promises handed to `waitUntil` together (`Promise.allSettled`),
//! never Rust futures: after a panic the wasm instance is dead, and only promises that need no
//! more Rust code still run. Nothing here may panic or block; a failed export is dropped.

use std::future::Future;
use std::sync::{Arc, Mutex, Once};

use integra_observe_core::propagation::{self, ContextSource, Propagator};
use integra_observe_core::{SpanContext, SpanId, TraceId};
use tracing::instrument::WithSubscriber;
use tracing::{Dispatch, Instrument};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;
use worker::js_sys;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::web_sys;
use worker::{Context, Fetch, Request, Response};

use super::encode::{self, EventCommon};
use super::layer::{self, RequestState, Rng, Shared, TraceIdSource, WorkerLayer};
use super::WorkerConfig;
use crate::edge_header::{self, EdgeClaims};
use crate::RayId;

/// Unix nanoseconds from `Date.now()` (milliseconds; in a Worker it advances only across I/O).
fn now_nanos() -> u64 {
    let ms = js_sys::Date::now();
    if ms.is_finite() && ms > 0.0 {
        (ms * 1_000_000.0) as u64
    } else {
        0
    }
}

/// 8 bytes from `crypto.getRandomValues`, mixed with the clock should it be missing.
fn random_seed() -> u64 {
    let buf = js_sys::Uint8Array::new_with_length(8);
    let global = js_sys::global();
    let filled = js_sys::Reflect::get(&global, &JsValue::from_str("crypto"))
        .ok()
        .and_then(|crypto| {
            let f = js_sys::Reflect::get(&crypto, &JsValue::from_str("getRandomValues")).ok()?;
            let f: js_sys::Function = f.dyn_into().ok()?;
            f.call1(&crypto, &buf).ok()
        })
        .is_some();
    let mut bytes = [0u8; 8];
    buf.copy_to(&mut bytes);
    let seed = u64::from_le_bytes(bytes);
    if filled {
        seed
    } else {
        seed ^ now_nanos() ^ (js_sys::Math::random() * u64::MAX as f64) as u64
    }
}

/// One HTTP POST of an export.
struct Post {
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Starts every POST with the global `fetch` and hands them to `waitUntil` as one promise.
fn send(ctx: &Context, posts: Vec<Post>) {
    if posts.is_empty() {
        return;
    }
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let promises = js_sys::Array::new();
    for post in posts {
        let Ok(headers) = web_sys::Headers::new() else {
            continue;
        };
        for (k, v) in &post.headers {
            let _ = headers.set(k, v);
        }
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&JsValue::from_str(&post.body));
        promises.push(&global.fetch_with_str_and_init(&post.url, &init));
    }
    let all = js_sys::Promise::all_settled(&promises);
    let _ = ctx.as_ref().wait_until(&all);
}

/// What a request's flush needs: its state, the configuration, the context.
struct Reporter {
    state: Shared,
    config: Arc<WorkerConfig>,
    ctx: Context,
    common: Mutex<EventCommon>,
}

impl Reporter {
    /// Sends what the request recorded, once: spans (if sampled or errored) and error events.
    fn flush(&self) {
        let Some(mut st) = layer::try_lock(&self.state) else {
            return;
        };
        let Some((spans, errors)) = st.take_export() else {
            return;
        };
        let breadcrumbs: Vec<_> = st.breadcrumbs.iter().cloned().collect();
        drop(st);
        let mut posts = Vec::new();
        if let (Some(url), false) = (&self.config.otlp_traces_url, spans.is_empty()) {
            let mut resource = vec![
                ("service.name".to_owned(), self.config.service_name.clone()),
                ("telemetry.sdk.name".to_owned(), encode::SDK_NAME.to_owned()),
                ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
                (
                    "telemetry.sdk.version".to_owned(),
                    encode::SDK_VERSION.to_owned(),
                ),
                ("cloud.provider".to_owned(), "cloudflare".to_owned()),
                ("cloud.platform".to_owned(), "cloudflare.workers".to_owned()),
            ];
            if let Some(env) = &self.config.environment {
                resource.push(("deployment.environment.name".to_owned(), env.clone()));
            }
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            headers.extend(self.config.otlp_headers.iter().cloned());
            posts.push(Post {
                url: url.clone(),
                headers,
                body: encode::otlp_traces_json(&spans, &resource),
            });
        }
        if let Some(dsn) = &self.config.sentry_dsn {
            let mut common = match self.common.try_lock() {
                Ok(c) => c.clone(),
                Err(_) => EventCommon::default(),
            };
            common.environment.clone_from(&self.config.environment);
            common.release.clone_from(&self.config.release);
            common.breadcrumbs = breadcrumbs;
            for e in &errors {
                posts.push(Post {
                    url: dsn.envelope_url(),
                    headers: vec![
                        (
                            "content-type".to_owned(),
                            "application/x-sentry-envelope".to_owned(),
                        ),
                        ("x-sentry-auth".to_owned(), encode::sentry_auth(dsn)),
                    ],
                    body: encode::sentry_envelope(e, &common, dsn),
                });
            }
        }
        send(&self.ctx, posts);
    }
}

/// A no-op layer that lets the panic hook find the request's reporter in the current dispatch.
struct PanicReporter(Arc<Reporter>);

impl<S: tracing::Subscriber> Layer<S> for PanicReporter {}

static PANIC_HOOK: Once = Once::new();

/// Chains a hook before the existing one (workers-rs' own): the panicking request's open spans
/// end with the panic as their error, its error event is recorded, and everything is flushed.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = match (
                info.payload().downcast_ref::<&str>(),
                info.payload().downcast_ref::<String>(),
            ) {
                (Some(s), _) => (*s).to_owned(),
                (_, Some(s)) => s.clone(),
                _ => "panic".to_owned(),
            };
            let message = match info.location() {
                Some(l) => format!("{message} at {}:{}:{}", l.file(), l.line(), l.column()),
                None => message,
            };
            tracing::dispatcher::get_default(|dispatch| report_panic(dispatch, &message));
            previous(info);
        }));
    });
}

fn report_panic(dispatch: &Dispatch, message: &str) {
    let (Some(reporter), Some(layer)) = (
        dispatch.downcast_ref::<PanicReporter>(),
        dispatch.downcast_ref::<WorkerLayer>(),
    ) else {
        return;
    };
    let open = layer::end_open_scope(dispatch, layer, message);
    let now = (layer.clock)();
    {
        let Some(mut st) = layer::try_lock(&layer.state) else {
            return;
        };
        st.errored = true;
        let (span_id, parent_span_id, op) = match open.first() {
            Some(s) => (s.span_id, s.parent_span_id, s.name.clone()),
            None => {
                let parent = st.remote_parent;
                (st.rng.span_id(), parent, layer.service_name.to_string())
            }
        };
        let event_id = st.rng.event_id();
        let trace_id = st.trace_id;
        st.errors.push(encode::ErrorEvent {
            event_id,
            time: now,
            message: message.to_owned(),
            exception: Some(("panic".to_owned(), false)),
            logger: "panic".to_owned(),
            fields: Vec::new(),
            trace_id,
            span_id,
            parent_span_id,
            op,
        });
        st.spans.extend(open);
    }
    reporter.0.flush();
}

/// Traces the requests of a Worker: build it once per isolate (it is cheap) or per request.
///
/// ```no_run
/// use integra_observe_cloudflare::worker::{WorkerConfig, WorkerTracer};
/// use worker::{event, Context, Env, Request, Response, Result};
///
/// #[event(fetch)]
/// async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
///     let tracer = WorkerTracer::new(WorkerConfig::from_env(&env, "edge-worker"));
///     tracer
///         .trace(req, ctx, |req, trace| async move {
///             tracing::info!(path = %req.path(), "handling");
///             let backend = Request::new("https://api.example.com/hop", worker::Method::Post)?;
///             let resp = trace.fetch(backend).await?;
///             Response::ok(format!("backend said {}", resp.status_code()))
///         })
///         .await
/// }
/// # fn main() {} // the handler must be at the crate root, as in a Worker's lib.rs
/// ```
#[derive(Debug, Clone)]
pub struct WorkerTracer {
    config: Arc<WorkerConfig>,
}

impl WorkerTracer {
    /// A tracer sending as `config` says. Installs the panic hook (once per isolate).
    pub fn new(config: WorkerConfig) -> Self {
        install_panic_hook();
        WorkerTracer {
            config: Arc::new(config),
        }
    }

    /// Where this request's trace comes from: the caller's `traceparent` or `sentry-trace` (when
    /// trusted), else the `cf-ray` derivation, else a new id. Returns the state and the ray.
    fn start(&self, headers: &[(String, String)]) -> (RequestState, Option<RayId>) {
        let mut rng = Rng::new(random_seed());
        let ray = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("cf-ray"))
            .and_then(|(_, v)| RayId::parse(v));
        let extracted = propagation::extract(headers);
        let continued = match (self.config.trust_incoming_context, extracted.remote) {
            (true, Some(remote)) => match extracted.source {
                ContextSource::TraceParent => Some((remote, TraceIdSource::TraceParent)),
                ContextSource::SentryTrace => Some((remote, TraceIdSource::SentryTrace)),
                _ => None,
            },
            _ => None,
        };
        if let Some((remote, source)) = continued {
            let sampled = remote
                .sampled
                .unwrap_or_else(|| self.config.samples(remote.trace_id));
            let st = RequestState::new(remote.trace_id, Some(remote.span_id), sampled, source, rng);
            return (st, ray);
        }
        if let Some(ray) = ray.as_ref().filter(|r| r.trace_id().is_valid()) {
            let trace_id = ray.trace_id();
            let sampled = self.config.samples(trace_id);
            let mut st = RequestState::new(trace_id, None, sampled, TraceIdSource::CfRay, rng);
            st.root_span_id = Some(ray.span_id()).filter(SpanId::is_valid);
            return (st, Some(ray.clone()));
        }
        let trace_id = rng.trace_id();
        let sampled = self.config.samples(trace_id);
        (
            RequestState::new(trace_id, None, sampled, TraceIdSource::New, rng),
            ray,
        )
    }

    /// Runs `handler` for `req` inside this request's trace: a server span around it (named
    /// `METHOD /path`, with the response status, and error status on a 5xx or an `Err`), every
    /// `tracing` span and event of the handler recorded for this request only, then one flush
    /// through `ctx.waitUntil`. The handler gets a [`RequestTrace`] for outgoing fetches.
    pub async fn trace<F, Fut>(
        &self,
        req: Request,
        ctx: Context,
        handler: F,
    ) -> worker::Result<Response>
    where
        F: FnOnce(Request, RequestTrace) -> Fut,
        Fut: Future<Output = worker::Result<Response>>,
    {
        let headers: Vec<(String, String)> = req.headers().entries().collect();
        let (state, ray) = self.start(&headers);
        let source = state.source;
        let trace_id = state.trace_id;
        let sampled = state.sampled;
        let state: Shared = Arc::new(Mutex::new(state));
        let method = req.method().to_string();
        let path = req.path();
        let name = format!("{method} {path}");
        let mut tags = vec![
            ("service".to_owned(), self.config.service_name.clone()),
            (
                "integra.trace_id.source".to_owned(),
                source.as_str().to_owned(),
            ),
        ];
        if let Some(ray) = &ray {
            tags.push(("cloudflare.ray_id".to_owned(), ray.as_str().to_owned()));
            if let Some(colo) = ray.colo() {
                tags.push(("cloudflare.colo".to_owned(), colo.to_owned()));
            }
        }
        let reporter = Arc::new(Reporter {
            state: state.clone(),
            config: self.config.clone(),
            ctx,
            common: Mutex::new(EventCommon {
                transaction: name.clone(),
                tags,
                ..EventCommon::default()
            }),
        });
        let layer = WorkerLayer {
            state: state.clone(),
            clock: now_nanos,
            service_name: Arc::from(self.config.service_name.as_str()),
        };
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(layer)
                .with(PanicReporter(reporter.clone())),
        );
        let ray_str = ray
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default();
        let colo = ray
            .as_ref()
            .and_then(|r| r.colo())
            .unwrap_or_default()
            .to_owned();
        let root = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!(
                "fetch",
                otel.name = %name,
                otel.kind = "server",
                http.request.method = %method,
                url.path = %path,
                cloudflare.ray_id = %ray_str,
                cloudflare.colo = %colo,
                integra.trace_id.source = source.as_str(),
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_message = tracing::field::Empty,
            )
        });
        let handle = RequestTrace {
            config: self.config.clone(),
            reporter: reporter.clone(),
            trace_id,
            sampled,
            source,
            ray,
        };
        let result = handler(req, handle)
            .instrument(root.clone())
            .with_subscriber(dispatch.clone())
            .await;
        tracing::dispatcher::with_default(&dispatch, || match &result {
            Ok(resp) => {
                let status = resp.status_code();
                root.record("http.response.status_code", status);
                if status >= 500 {
                    root.record("otel.status_code", "error");
                    root.record("otel.status_message", format!("HTTP {status}").as_str());
                }
            }
            Err(e) => {
                root.record("otel.status_code", "error");
                root.record("otel.status_message", e.to_string().as_str());
                tracing::error!(parent: &root, error = %e, "the Worker's handler failed: {e}");
            }
        });
        drop(root);
        reporter.flush();
        result
    }
}

/// The trace of one request, handed to the handler by [`WorkerTracer::trace`].
#[derive(Clone)]
pub struct RequestTrace {
    config: Arc<WorkerConfig>,
    reporter: Arc<Reporter>,
    trace_id: TraceId,
    sampled: bool,
    source: TraceIdSource,
    ray: Option<RayId>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &self.trace_id)
            .field("sampled", &self.sampled)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RequestTrace {
    /// The request's trace id (what Jaeger and Sentry show).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Where the trace id came from (`integra.trace_id.source`).
    pub fn source(&self) -> TraceIdSource {
        self.source
    }

    /// Whether the trace is sampled (an unsampled trace is still sent when it has an error).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The request's context, for the handler's own `wait_until`.
    pub fn context(&self) -> &Context {
        &self.reporter.ctx
    }

    /// Sends `req` with `fetch` inside a client span (`METHOD`, with `url.full`, `server.address`
    /// and the response status). When the URL's host is on the allow-list
    /// ([`WorkerConfig::propagate_to`]) it carries `traceparent` and `sentry-trace` for that span,
    /// and, with an edge secret, the signed edge header ([`crate::edge_header::HEADER_NAME`])
    /// vouching for the ray id and that `traceparent`.
    pub async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let url = req.url()?;
        let method = req.method().to_string();
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default();
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        shown.set_query(None);
        let span = tracing::info_span!(
            "fetch",
            otel.name = %method,
            otel.kind = "client",
            http.request.method = %method,
            url.full = %shown,
            server.address = %host,
            server.port = port.unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        if self.config.may_propagate_to(&host, port) {
            let span_id = tracing::Span::with_subscriber(&span, |(id, dispatch)| {
                layer::span_id_of(dispatch, id)
            })
            .flatten();
            if let Some(span_id) = span_id {
                let ctx = SpanContext::new(self.trace_id, span_id, self.sampled);
                let headers = req.headers_mut()?;
                let injected = propagation::inject(
                    &ctx,
                    None,
                    &[Propagator::TraceContext, Propagator::Sentry],
                    None,
                    None,
                    None,
                );
                let mut traceparent = None;
                for (name, value) in &injected {
                    headers.set(name, value)?;
                    if *name == propagation::TRACEPARENT {
                        traceparent = Some(value.clone());
                    }
                }
                if let Some(secret) = &self.config.edge_secret {
                    let mut claims = EdgeClaims::new(now_nanos() / 1_000_000_000);
                    claims.ray = self.ray.as_ref().map(|r| r.as_str().to_owned());
                    claims.colo = self.ray.as_ref().and_then(|r| r.colo()).map(str::to_owned);
                    claims.traceparent = traceparent;
                    headers.set(
                        edge_header::HEADER_NAME,
                        &edge_header::sign(&claims, secret),
                    )?;
                }
            }
        }
        let result = Fetch::Request(req).send().instrument(span.clone()).await;
        match &result {
            Ok(resp) => {
                let status = resp.status_code();
                span.record("http.response.status_code", status);
                if status >= 500 {
                    span.record("otel.status_code", "error");
                    span.record("otel.status_message", format!("HTTP {status}").as_str());
                }
            }
            Err(e) => {
                span.record("otel.status_code", "error");
                span.record("otel.status_message", e.to_string().as_str());
            }
        }
        result
    }
}
