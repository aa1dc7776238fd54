//! Phase 3 against a real OTLP receiver (otelite) and a real Sentry-compatible server (Bugsink)
//! at once: the Sentry event of an error has the trace id and span id of the OpenTelemetry span it
//! happened in, and that span leads back to the event — over gRPC and HTTP, sync and async.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use integra_observe_tests::{otlp_endpoints, report, run_scenario, span, Bugsink, Otelite};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

/// Runs `scenario` with Sentry and OTLP on and returns (Sentry event, spans of its trace).
fn run_phase3(
    scenario: &str,
    protocol: &str,
    endpoint: &str,
    min_spans: usize,
) -> (String, Value, Vec<Value>) {
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project(&format!("phase3-{scenario}"));
    let out = run_scenario(
        BIN,
        scenario,
        &[
            ("SENTRY_DSN", &project.dsn),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert!(out.status.success(), "{protocol}");
    let r = report(&out);
    assert_eq!(r["backends"], serde_json::json!(["otlp", "sentry"]));
    let event_id = r["event_id"].as_str().expect("event id").to_owned();
    let event = bugsink.event(&project, &event_id);
    let trace_id = event["contexts"]["trace"]["trace_id"]
        .as_str()
        .expect("trace id")
        .to_owned();
    let spans = Otelite::from_env().spans(&trace_id, min_spans);
    (event_id, event, spans)
}

fn assert_error_span_links_event(span: &Value, event_id: &str) {
    assert_eq!(span["attributes"]["sentry.event_id"], event_id, "{span:#}");
    assert_eq!(span["status"]["code"], "Error", "{span:#}");
    let events: Vec<&str> = span["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(events.contains(&"exception"), "{events:?}");
}

#[test]
fn nested_sync_spans_share_one_trace_id_over_grpc_and_http() {
    for (protocol, endpoint) in otlp_endpoints() {
        let (event_id, event, spans) = run_phase3("nested-error", protocol, &endpoint, 3);
        assert_eq!(spans.len(), 3, "{protocol}: {spans:#?}");
        let root = span(&spans, "handle_request");
        let mid = span(&spans, "verify_user");
        let inner = span(&spans, "fetch_keys");
        // Parents across the tree.
        assert!(root["parent_span_id"].is_null(), "{root:#}");
        assert_eq!(mid["parent_span_id"], root["span_id"]);
        assert_eq!(inner["parent_span_id"], mid["span_id"]);
        // Kinds and service name.
        assert_eq!(
            (
                root["kind"].as_str(),
                mid["kind"].as_str(),
                inner["kind"].as_str()
            ),
            (Some("Server"), Some("Internal"), Some("Client"))
        );
        assert_eq!(
            root["resource"]["attributes"]["service.name"],
            "scenario-nested"
        );
        // One identity: the event carries the innermost span's ids, and that span the event id.
        assert_eq!(
            event["contexts"]["trace"]["span_id"], inner["span_id"],
            "{protocol}"
        );
        assert_eq!(event["contexts"]["trace"]["trace_id"], inner["trace_id"]);
        assert_error_span_links_event(inner, &event_id);
        // The event is the same rich event as in phase 1.
        assert_eq!(event["message"], "verification failed");
        assert!(event["exception"]["values"]
            .as_array()
            .is_some_and(|v| v.len() >= 2));
    }
}

#[test]
fn async_instrumented_and_spawned_tasks_keep_the_trace_id_across_awaits() {
    for (protocol, endpoint) in otlp_endpoints() {
        let (event_id, event, spans) = run_phase3("async-error", protocol, &endpoint, 4);
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(spans.len(), 4, "{protocol}: {names:?}");
        let root = span(&spans, "handle_request");
        let load = span(&spans, "load_case");
        let spawned = span(&spans, "spawned_task");
        let register = span(&spans, "register_on_chain");
        assert_eq!(load["parent_span_id"], root["span_id"]);
        assert_eq!(spawned["parent_span_id"], load["span_id"]);
        assert_eq!(register["parent_span_id"], spawned["span_id"]);
        assert_eq!(
            event["contexts"]["trace"]["span_id"], register["span_id"],
            "{protocol}"
        );
        assert_error_span_links_event(register, &event_id);
        assert_eq!(event["message"], "blockchain node unavailable");
    }
}

#[test]
fn bad_otlp_configuration_gives_clear_errors() {
    for (var, value, expected) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "http/protobuf"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4317",
            "http:// or https:// URL",
        ),
        ("OTEL_TRACES_SAMPLER", "sometimes", "parentbased_always_on"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", "whole number"),
    ] {
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let out = run_scenario(BIN, "try-init", &env);
        assert_eq!(out.status.code(), Some(3), "{var}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(var) && stdout.contains(value) && stdout.contains(expected),
            "{stdout}"
        );
    }
}
