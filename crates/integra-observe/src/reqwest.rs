//! Client middleware for `reqwest` (feature `reqwest`, through `reqwest-middleware`): each request
//! gets a client span, and the trace headers (`traceparent`, `tracestate`, `baggage`,
//! `sentry-trace`, per `OTEL_PROPAGATORS`) of that span are injected, so the server continues it.

use http::Extensions;
use reqwest_middleware::{Middleware, Next, Result};
use tracing::Instrument;

use crate::propagation;

/// The middleware. Build a client with it:
///
/// ```no_run
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(integra_observe::reqwest::TracingMiddleware)
///     .build();
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMiddleware;

#[async_trait::async_trait]
impl Middleware for TracingMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<reqwest::Response> {
        let url = req.url();
        let span = propagation::client_span(&propagation::ClientRequest {
            method: req.method().as_str(),
            url: &propagation::redact_url(url.as_str()),
            host: url.host_str().unwrap_or(""),
            port: url.port_or_known_default(),
        });
        for (name, value) in span.in_scope(propagation::outgoing_headers) {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                req.headers_mut().insert(name, value);
            }
        }
        let result = next.run(req, extensions).instrument(span.clone()).await;
        match &result {
            Ok(resp) => propagation::record_client_status(&span, resp.status().as_u16()),
            Err(e) => propagation::record_client_error(&span, e),
        }
        result
    }
}
