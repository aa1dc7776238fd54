//! A tower layer for HTTP servers (feature `axum`): each request gets a server span named by its
//! matched route, continuing the caller's trace from whichever header it sent.
//!
//! The span carries the OpenTelemetry HTTP semantic-convention attributes; a 5xx response marks it
//! as an error and is reported to Sentry from inside the span. No header value is recorded except
//! those on an explicit allow-list, and never credentials (`authorization`, `cookie`,
//! `set-cookie`, API keys), whatever the list says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{Request, Response};
use tracing::Instrument;

use crate::propagation::{self, HeaderMapSource};

/// Headers that are never recorded, even when allow-listed.
const NEVER_RECORDED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];

/// The server layer. Add it to an axum `Router` with `.layer(TraceLayer::new())`.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// let app: Router = Router::new()
///     .route("/api/cases/{id}", get(|| async { "ok" }))
///     .layer(integra_observe::axum::TraceLayer::new());
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TraceLayer {
    record_headers: Arc<Vec<String>>,
    #[cfg(feature = "cloudflare")]
    cloudflare: Option<Arc<integra_observe_cloudflare::TrustPolicy>>,
}

impl TraceLayer {
    /// A layer that records no header values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records these request headers as `http.request.header.<name>` attributes. Credentials are
    /// refused whatever this list says.
    pub fn record_request_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.record_headers = Arc::new(
            names
                .into_iter()
                .map(|n| n.into().to_ascii_lowercase())
                .filter(|n| {
                    !NEVER_RECORDED.contains(&n.as_str())
                        && !n.contains("token")
                        && !n.contains("secret")
                })
                .collect(),
        );
        self
    }

    /// Which Cloudflare edge headers this layer believes (feature `cloudflare`). Without it the
    /// process-wide policy applies ([`crate::propagation::set_cloudflare_policy`], else the
    /// `INTEGRA_CLOUDFLARE_*` and `INTEGRA_EDGE_*` variables), which by default believes none.
    /// Cloudflare's address ranges can only be checked when the server is run with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    ///
    /// ```no_run
    /// use integra_observe::backends::cloudflare::TrustPolicy;
    /// let layer = integra_observe::axum::TraceLayer::new().cloudflare(
    ///     TrustPolicy::trust_nothing().edge_secret(std::env::var("INTEGRA_EDGE_SECRET").unwrap_or_default()),
    /// );
    /// ```
    #[cfg(feature = "cloudflare")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
    pub fn cloudflare(mut self, policy: integra_observe_cloudflare::TrustPolicy) -> Self {
        self.cloudflare = Some(Arc::new(policy));
        self
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`TraceLayer`] wraps around a handler.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S, B, RB> tower::Service<Request<B>> for TraceService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned());
        let extracted = propagation::extract(&HeaderMapSource(req.headers()));
        let method = req.method().as_str().to_owned();
        #[cfg(feature = "cloudflare")]
        let edge = propagation::edge_context(
            &HeaderMapSource(req.headers()),
            req.extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
            self.layer.cloudflare.as_deref(),
        );
        let span = propagation::server_span(&propagation::ServerRequest {
            method: &method,
            route: route.as_deref(),
            path: req.uri().path(),
            scheme: req.uri().scheme_str().unwrap_or("http"),
            host: req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|h| h.to_str().ok()),
            extracted: &extracted,
            #[cfg(feature = "cloudflare")]
            edge: edge.as_ref(),
        });
        for name in self.layer.record_headers.iter() {
            let values: Vec<&str> = req
                .headers()
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !values.is_empty() {
                propagation::record_attribute(
                    &span,
                    &format!("http.request.header.{name}"),
                    &values.join(","),
                );
            }
        }
        let future = self.inner.call(req);
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    propagation::record_server_status(
                        &tracing::Span::current(),
                        response.status().as_u16(),
                        &method,
                        route.as_deref(),
                    );
                }
                result
            }
            .instrument(span),
        )
    }
}
