//! A Rust Worker that traces, with plain `tracing`: the request's spans go to an OTLP receiver
//! as OTLP/HTTP JSON, its error to Sentry, and the backend it calls continues the same trace.
//!
//! Run it in Cloudflare's runtime on loopback, with a Rust backend, Bugsink and otelite:
//! ```text
//! scripts/test-worker     # installs the tools, builds this Worker with worker-build, runs the test
//! ```
//! Its bindings (`[vars]` in wrangler.toml, or the workerd config the test writes):
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `SENTRY_DSN`, `BACKEND_URL` (the backend's `POST` URL),
//! `INTEGRA_PROPAGATE_TO` (the backend's `host:port`) and the secret `EDGE_SECRET`.
//!
//! What to look at: the response is `{"trace_id", "source", "backend_status"}` with status 500.
//! In Jaeger (or otelite), that trace id holds `POST /checkout` (server) → `checkout` →
//! `POST` (client) from `rust-worker`, and under it the backend's spans; in Sentry, the issue
//! "checkout failed" has the same trace id and the span id of `checkout`.

use integra_observe_cloudflare::worker::{WorkerConfig, WorkerTracer};
use tracing::Instrument;
use worker::{event, Context, Env, Method, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let tracer = WorkerTracer::new(WorkerConfig::from_env(&env, "rust-worker"));
    let backend = env.var("BACKEND_URL").map(|v| v.to_string()).ok();
    tracer
        .trace(req, ctx, |req, trace| async move {
            let span = tracing::info_span!("checkout", path = %req.path());
            async move {
                tracing::info!("calling the backend");
                let mut backend_status = 0;
                if let Some(url) = backend {
                    let call = Request::new(&url, Method::Post)?;
                    backend_status = trace.fetch(call).await?.status_code();
                }
                if req.path() == "/panic" {
                    #[allow(clippy::panic)] // the point of this route: the panic hook reports it
                    {
                        panic!("the Worker panicked on purpose");
                    }
                }
                tracing::error!(backend.status = backend_status, "checkout failed");
                let body = serde_json::json!({
                    "trace_id": trace.trace_id().to_string(),
                    "source": trace.source().as_str(),
                    "backend_status": backend_status,
                });
                Ok(Response::from_json(&body)?.with_status(500))
            }
            .instrument(span)
            .await
        })
        .await
}
