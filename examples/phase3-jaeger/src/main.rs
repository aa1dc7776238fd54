//! Phase 3: spans to Jaeger over OTLP, errors to Sentry, and one trace id in both.
//!
//! Run it against a local Jaeger v2 (OTLP on 4317/4318, UI on 16686) and a Sentry project:
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
//!   SENTRY_DSN=https://KEY@sentry.example.com/42 cargo run -p phase3-jaeger
//! ```
//! (without them it still runs and logs to the console; nothing is sent)
//!
//! What to look at: the example prints the trace id of the failed request. In Jaeger, search that
//! trace id: `POST /api/cases` → `create_case` → `register_transaction`, the last one with status
//! error, an `exception` event and the attribute `sentry.event_id`. In Sentry, the issue
//! "blockchain node unavailable" has, under Trace, the same trace id and the span id of
//! `register_transaction`.

use tracing::{error, info, info_span, Instrument};

#[tracing::instrument(fields(otel.kind = "client"))]
async fn register_transaction(case_id: u64) -> Result<(), String> {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    error!(case.id = case_id, "blockchain node unavailable");
    Err("blockchain node unavailable".into())
}

#[tracing::instrument]
async fn create_case(case_id: u64) -> Result<(), String> {
    info!("case row written");
    // A spawned task keeps the trace when it is instrumented with a span.
    tokio::spawn(register_transaction(case_id).in_current_span())
        .await
        .map_err(|e| e.to_string())?
}

#[tokio::main]
async fn main() {
    let guard =
        integra_observe::init(integra_observe::Config::from_env().service_name("aaa-service"));
    let span = info_span!(
        "POST /api/cases",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/api/cases"
    );
    let trace_id = span.in_scope(current_trace_id);
    let result = create_case(7).instrument(span).await;
    println!(
        "request failed: {result:?}\ntrace id: {trace_id}\nbackends: {:?}",
        guard.stats()
    );
}

/// The trace id of the current span, as Jaeger and Sentry show it.
fn current_trace_id() -> String {
    integra_observe::current_span_context()
        .map(|c| c.trace_id.to_string())
        .unwrap_or_else(|| "(no OTLP backend)".into())
}
