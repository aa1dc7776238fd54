//! Requests from real client SDKs are continued, not restarted: the Python OpenTelemetry SDK
//! (`traceparent`) and the Python sentry-sdk (`sentry-trace` + `baggage`, no `traceparent`).

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::process::Command;

use integra_observe_tests::{server_env, Otelite, Service};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

fn call_from_python(mode: &str, url: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/clients.py");
    let out = Command::new(server_env("INTEGRA_TEST_PYTHON"))
        .args([script, mode, url])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

#[test]
fn python_opentelemetry_and_sentry_clients_are_continued() {
    let otlp = server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT");
    let service = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", "svc-py"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let otel = call_from_python("otel", &service.hop_url());
    let sentry = call_from_python("sentry", &service.hop_url());
    service.stop();

    assert!(otel["headers"]["traceparent"].is_string(), "{otel}");
    assert!(
        sentry["headers"].get("traceparent").is_none(),
        "sentry-sdk sends no traceparent: {sentry}"
    );
    for (client, source) in [(&otel, "traceparent"), (&sentry, "sentry-trace")] {
        assert_eq!(client["status"], 200, "{client}");
        let trace_id = client["trace_id"].as_str().unwrap();
        let spans = Otelite::from_env().spans(trace_id, 2);
        let server = spans
            .iter()
            .find(|s| s["kind"] == "Server")
            .unwrap_or_else(|| panic!("no server span in trace {trace_id}: {spans:#?}"));
        assert_eq!(server["trace_id"], trace_id, "continued, not restarted");
        assert_eq!(
            server["parent_span_id"], client["span_id"],
            "the client's span is the parent"
        );
        assert_eq!(server["attributes"]["integra.trace_id.source"], source);
    }
}
