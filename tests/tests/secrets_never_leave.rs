//! A corpus of secrets through every path — span attributes, span events, Sentry event fields,
//! messages, breadcrumbs, URLs — and a grep of the bytes that reached Bugsink (raw envelopes) and
//! otelite (its SQLite files): zero. The DSN key, the OTLP header value and the corpus never
//! appear in the service's own output either.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use integra_observe_tests::{report, run_scenario, server_env, Bugsink, Otelite};

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

fn otelite_bytes() -> String {
    let db = server_env("INTEGRA_TEST_OTELITE_DB");
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::read(format!("{db}{suffix}")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

#[test]
fn no_secret_of_the_corpus_reaches_either_server() {
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project("secrets");
    let key = project
        .dsn
        .split("//")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .unwrap()
        .to_owned();
    let out = run_scenario(
        BIN,
        "secrets",
        &[
            ("SENTRY_DSN", &project.dsn),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT"),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=CORPUS-hdr-5a5a"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert!(out.status.success());
    let r = report(&out);

    // The data did arrive (so an empty grep means redacted, not lost).
    let event = bugsink.event(&project, r["event_id"].as_str().unwrap());
    assert!(event.to_string().contains("[redacted]"), "{event:#}");
    let spans = Otelite::from_env().spans(r["trace_id"].as_str().unwrap(), 2);
    let chatty = spans
        .iter()
        .find(|s| s["name"] == "chatty")
        .expect("chatty span");
    assert_eq!(
        chatty["events"].as_array().map(Vec::len),
        Some(128),
        "events beyond the count limit are dropped"
    );
    let login = spans
        .iter()
        .find(|s| s["name"] == "login")
        .expect("login span");
    assert_eq!(login["attributes"]["password"], "[redacted]");
    assert_eq!(login["attributes"]["user.id"], "42");
    // Huge values are cut to the default limit (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, 4096).
    assert_eq!(
        login["attributes"]["note"].as_str().map(str::len),
        Some(4096)
    );

    let envelopes = bugsink.raw_envelopes(&project).join("\n");
    assert!(!envelopes.is_empty());
    let stored = otelite_bytes();
    assert!(
        stored.contains("login"),
        "otelite's database holds the trace"
    );
    for (what, bytes) in [
        ("Bugsink envelopes", &envelopes),
        ("otelite database", &stored),
    ] {
        let leaks: Vec<&str> = bytes
            .match_indices("CORPUS-")
            .map(|(i, _)| &bytes[i..(i + 24).min(bytes.len())])
            .collect();
        assert!(leaks.is_empty(), "{what} holds secrets: {leaks:?}");
    }

    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !logs.contains(&key),
        "the DSN key appears in the service's output"
    );
    assert!(
        !logs.contains("CORPUS-hdr"),
        "the OTLP header value appears in the service's output"
    );
    // The console log is redacted by the same step (tests/tests/console_redaction.rs covers
    // every format).
    let printed: Vec<&str> = logs
        .match_indices("CORPUS-")
        .map(|(i, _)| &logs[i..(i + 24).min(logs.len())])
        .collect();
    assert!(
        printed.is_empty(),
        "the service printed secrets: {printed:?}"
    );
}
