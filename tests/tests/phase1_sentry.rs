//! Phase 1 against a real Sentry-compatible server (Bugsink): errors from `tracing::error!` with
//! their fields, exception chain, breadcrumbs and trace context; panics; no DSN; bad config.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use integra_observe_tests::{report, run_scenario, Bugsink};

fn bin() -> String {
    integra_observe_tests::sentry_only_bin()
}

#[test]
fn error_in_span_arrives_with_fields_chain_breadcrumbs_and_trace_context() {
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project("phase1-error");
    let out = run_scenario(
        &bin(),
        "nested-error",
        &[
            ("SENTRY_DSN", &project.dsn),
            ("SENTRY_ENVIRONMENT", "staging"),
            ("SENTRY_RELEASE", "auth-worker@1.4.2"),
        ],
    );
    assert!(out.status.success());
    let r = report(&out);
    assert_eq!(r["backends"], serde_json::json!(["sentry"]));
    let event_id = r["event_id"].as_str().expect("an event id");
    let e = bugsink.event(&project, event_id);

    assert_eq!(e["message"], "verification failed");
    // The protocol leaves out the default level, `error`; any other level would be written.
    assert!(
        e["level"].is_null() || e["level"] == "error",
        "{}",
        e["level"]
    );
    assert_eq!(e["environment"], "staging");
    assert_eq!(e["release"], "auth-worker@1.4.2");
    assert_eq!(
        e["tags"]["component"], "auth",
        "tags.* fields become tags: {e:#}"
    );
    assert_eq!(
        e["tags"]["user.id"], "42",
        "scalar fields become tags too: {e:#}"
    );
    // Exception chain: root cause first, the main exception last (Sentry order).
    let values = e["exception"]["values"].as_array().expect("exceptions");
    let types: Vec<&str> = values.iter().filter_map(|v| v["type"].as_str()).collect();
    let texts: Vec<&str> = values.iter().filter_map(|v| v["value"].as_str()).collect();
    assert!(
        types.iter().any(|t| t.contains("VerificationError")),
        "{types:?}"
    );
    assert!(
        types.iter().any(|t| t.contains("Error")) && types.len() >= 2,
        "{types:?}"
    );
    assert!(
        texts.contains(&"connection reset by key server"),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"token signature could not be verified"),
        "{texts:?}"
    );
    // Breadcrumbs: info and warn, not the error itself.
    let crumbs: Vec<&str> = e["breadcrumbs"]["values"]
        .as_array()
        .expect("breadcrumbs")
        .iter()
        .filter_map(|b| b["message"].as_str())
        .collect();
    assert!(
        crumbs.contains(&"token near expiry") && crumbs.contains(&"fetching signing keys"),
        "{crumbs:?}"
    );
    assert!(!crumbs.contains(&"verification failed"), "{crumbs:?}");
    // The span it happened in.
    let trace = &e["contexts"]["trace"];
    assert_eq!(
        trace["trace_id"].as_str().map(str::len),
        Some(32),
        "{trace:#}"
    );
    assert_eq!(
        trace["span_id"].as_str().map(str::len),
        Some(16),
        "{trace:#}"
    );
    // The innermost span's ids, as `integra_observe::current_span_context` saw them there.
    assert_eq!(
        trace["span_id"], r["span_id"],
        "the innermost span: {trace:#}"
    );
    assert_eq!(trace["trace_id"], r["trace_id"]);
}

#[test]
fn panic_is_captured_and_flushed_before_the_process_dies() {
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project("phase1-panic");
    let out = run_scenario(&bin(), "panic", &[("SENTRY_DSN", &project.dsn)]);
    assert!(!out.status.success(), "the scenario must panic");
    let events = bugsink.all_events(&project);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    let text = e.to_string();
    assert!(text.contains("index out of bounds"), "{e:#}");
    assert_eq!(e["level"], "fatal");
    assert!(e["contexts"]["trace"]["trace_id"].is_string(), "{e:#}");
}

#[test]
fn without_dsn_the_service_runs_logs_and_sends_nothing() {
    let out = run_scenario(&bin(), "nested-error", &[]);
    assert!(out.status.success());
    let r = report(&out);
    assert_eq!(
        r["backends"],
        serde_json::json!([]),
        "no backend runs without a DSN"
    );
    assert!(r["event_id"].is_null(), "no event was captured: {r}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verification failed"),
        "the console still logs"
    );
}

#[test]
fn sdk_disabled_keeps_console_and_sends_nothing() {
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project("phase1-disabled");
    let out = run_scenario(
        &bin(),
        "nested-error",
        &[("SENTRY_DSN", &project.dsn), ("OTEL_SDK_DISABLED", "true")],
    );
    assert!(out.status.success());
    assert_eq!(report(&out)["backends"], serde_json::json!([]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verification failed"));
    // The same scenario with Sentry on stores one event, so zero here means nothing was sent.
    assert_eq!(bugsink.event_count(&project), 0);
}

#[test]
fn invalid_dsn_is_a_clear_error_for_try_init_and_a_logged_fallback_for_init() {
    let out = run_scenario(&bin(), "try-init", &[("SENTRY_DSN", "https://k3y@")]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SENTRY_DSN") && stdout.contains("PROJECT_ID"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("k3y"),
        "the DSN key is never printed: {stdout}"
    );

    let out = run_scenario(&bin(), "nested-error", &[("SENTRY_DSN", "not a dsn")]);
    assert!(out.status.success(), "init() keeps the service running");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SENTRY_DSN") && stdout.contains("not a dsn"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verification failed"),
        "console still logs: {stdout}"
    );
    assert_eq!(report(&out)["backends"], serde_json::json!([]));
}

#[test]
fn out_of_range_sample_rate_and_unknown_format_name_the_variable() {
    for (var, value, expected) in [
        ("SENTRY_SAMPLE_RATE", "1.5", "0.0 to 1.0"),
        ("INTEGRA_LOG_FORMAT", "xml", "json"),
        ("SENTRY_TRACES_SAMPLE_RATE", "lots", "0.0 to 1.0"),
    ] {
        let out = run_scenario(
            &bin(),
            "try-init",
            &[("SENTRY_DSN", "http://k@127.0.0.1:9/1"), (var, value)],
        );
        assert_eq!(out.status.code(), Some(3), "{var}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(var) && stdout.contains(value) && stdout.contains(expected),
            "{stdout}"
        );
    }
}

#[test]
fn second_init_is_an_error() {
    let out = run_scenario(&bin(), "try-init", &[]);
    assert!(out.status.success());
    let second = report(&out)["second_init"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(second.contains("already initialised"), "{second}");
}
