//! The README's demo against the real servers: with `SENTRY_DSN` and `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set, the failed upload's Sentry event (Bugsink) and its trace (otelite) share the trace id, and
//! all five services appear in that trace.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::process::Command;

use integra_observe_tests::{server_env, sibling_bin, Bugsink, Otelite};

#[test]
fn failed_upload_has_one_trace_id_in_sentry_and_jaeger_across_five_services() {
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project("upload-flow");
    let out = Command::new(sibling_bin("upload-flow"))
        .env("SENTRY_DSN", &project.dsn)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            server_env("INTEGRA_TEST_OTLP_GRPC_ENDPOINT"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .output()
        .expect("run upload-flow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    // The local view worked too: a bottleneck and the dependency map with an error rate.
    assert!(
        stdout.contains("⚠ bottleneck") && stdout.contains("aaa-service → blockchain"),
        "{stdout}"
    );

    let results: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("upload-flow: trace "))
        .filter_map(|l| l.split_once(' ').map(|(t, s)| (t.to_owned(), s.to_owned())))
        .collect();
    assert_eq!(results.len(), 3, "{stdout}");
    let failed = &results
        .iter()
        .find(|(_, status)| status == "502")
        .expect("one failed upload")
        .0;

    let spans = Otelite::from_env().spans(failed, 12);
    let services: BTreeSet<&str> = spans
        .iter()
        .filter_map(|s| s["resource"]["attributes"]["service.name"].as_str())
        .collect();
    assert_eq!(
        services,
        [
            "aaa-service",
            "auth-worker",
            "blockchain",
            "database",
            "trust-platform"
        ]
        .into_iter()
        .filter(|s| *s != "database")
        .collect(),
        "the failed upload never reaches the database; the four others are in its trace"
    );
    let ok = &results
        .iter()
        .find(|(_, status)| status == "201")
        .expect("a good upload")
        .0;
    let ok_services: BTreeSet<String> = Otelite::from_env()
        .spans(ok, 14)
        .iter()
        .filter_map(|s| {
            s["resource"]["attributes"]["service.name"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        ok_services.len(),
        5,
        "all five services in a good upload's trace: {ok_services:?}"
    );

    let events = bugsink.all_events(&project);
    let of_failed: Vec<_> = events
        .iter()
        .filter(|e| e["contexts"]["trace"]["trace_id"] == failed.as_str())
        .collect();
    assert!(
        of_failed
            .iter()
            .any(|e| e["message"] == "blockchain node unavailable"
                && e["tags"]["service.name"] == "blockchain"),
        "{events:#?}"
    );
    // The blockchain span in Jaeger leads to that Sentry event.
    let event = of_failed
        .iter()
        .find(|e| e["message"] == "blockchain node unavailable")
        .unwrap();
    let span = spans
        .iter()
        .find(|s| s["span_id"] == event["contexts"]["trace"]["span_id"])
        .expect("the event's span is in the trace");
    assert_eq!(span["resource"]["attributes"]["service.name"], "blockchain");
    assert_eq!(
        span["attributes"]["sentry.event_id"].as_str().map(str::len),
        Some(32)
    );
}
