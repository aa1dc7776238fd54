//! A service for the W3C Trace Context test harness (w3c/trace-context, `test/`).
//!
//! ```text
//! cargo run -p w3c-conformance -- 7777
//! # in a checkout of w3c/trace-context/test:
//! STRICT_LEVEL=2 python3 test.py http://127.0.0.1:7777/test
//! ```
//!
//! `POST /test` takes a JSON list of `{"url": ..., "arguments": [...]}`; for each element it opens
//! a child client span and POSTs `arguments` as JSON to `url`, propagating the trace context, and
//! answers 200 once every call returned. Everything goes through integra-observe's axum layer (which
//! continues the incoming `traceparent`/`tracestate`) and reqwest middleware (which injects them).
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set the spans also go to Jaeger.

use axum::routing::post;
use axum::Json;
use serde_json::Value;

async fn test(
    client: reqwest_middleware::ClientWithMiddleware,
    Json(body): Json<Value>,
) -> axum::http::StatusCode {
    for case in body.as_array().into_iter().flatten() {
        let (Some(url), Some(args)) = (case["url"].as_str(), case.get("arguments")) else {
            continue;
        };
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(args.to_string());
        if let Err(e) = request.send().await {
            tracing::warn!(error = %e, url, "harness callback failed");
        }
    }
    axum::http::StatusCode::OK
}

#[tokio::main]
async fn main() {
    let _guard =
        integra_observe::init(integra_observe::Config::from_env().service_name("w3c-conformance"));
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(7777);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(integra_observe::reqwest::TracingMiddleware)
        .build();
    let app = axum::Router::new()
        .route("/test", post(move |body| test(client.clone(), body)))
        .layer(integra_observe::axum::TraceLayer::new());
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("W3C Trace Context test service on http://127.0.0.1:{port}/test");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("server error: {e}");
    }
}
