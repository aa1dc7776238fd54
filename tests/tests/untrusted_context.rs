//! A public endpoint (`INTEGRA_TRUST_INCOMING_CONTEXT=false`) does not let an outside caller
//! choose its trace id or force a sampling decision: the trace starts there, and the caller's ids
//! are kept as a link and as `integra.incoming.trace`.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::time::Duration;

use integra_observe_tests::{post, server_env, Otelite, Service};

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

#[test]
fn an_untrusted_callers_context_is_linked_not_continued() {
    let otlp = server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT");
    let edge = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", "svc-public-edge"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("INTEGRA_TRUST_INCOMING_CONTEXT", "false"),
        ],
    );
    let chosen = "0123456789abcdef0123456789abcdef";
    // Even an "unsampled" caller cannot switch tracing off here.
    assert_eq!(
        post(
            &edge.hop_url(),
            &[("traceparent", &format!("00-{chosen}-0123456789abcdef-00"))]
        ),
        200
    );
    edge.stop();

    // The edge's traces: the request to /hop, and the request that stopped it.
    let server = Otelite::from_env()
        .find_span("svc-public-edge", Duration::from_secs(10), |s| {
            s["kind"] == "Server" && s["attributes"]["http.route"] == "/hop"
        })
        .expect("the edge's server span in otelite");
    assert_ne!(
        server["trace_id"], chosen,
        "the caller did not choose the trace id"
    );
    assert!(
        server["parent_span_id"].is_null(),
        "the trace starts at the edge: {server:#}"
    );
    assert_eq!(server["attributes"]["integra.trace_id.source"], "new");
    assert_eq!(
        server["attributes"]["integra.incoming.trace"],
        format!("{chosen}-0123456789abcdef"),
        "the caller's ids are kept: {server:#}"
    );
}
