//! A backend's trouble never slows the service's own requests: an axum service built with
//! integra-observe (`scenario chain-service`, every request an error to Sentry and spans over
//! OTLP) serves the same requests with its backends (a) accepting connections and never
//! answering, (b) on a closed port, (c) up (Bugsink and otelite). The latencies are printed (run
//! with `--nocapture`; docs/reliability.md quotes them); the test asserts only a functional
//! bound: with the backends hanging, p99 stays far below the export and Sentry timeouts, so the
//! request path never waits on the network.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::time::{Duration, Instant};

use integra_observe_tests::{black_hole, closed_port, post, server_env, Bugsink, Service};

const BIN: &str = env!("CARGO_BIN_EXE_scenario");
const REQUESTS: usize = 300;

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Serves [`REQUESTS`] requests, one after another, with the backends at `otlp` and `dsn`.
fn serve(otlp: &str, dsn: &str, shutdown_ms: &str) -> Latency {
    let service = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", "latency"),
            ("FAIL", "1"),
            ("SENTRY_DSN", dsn),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("INTEGRA_SHUTDOWN_TIMEOUT", shutdown_ms),
            ("INTEGRA_LOG_FORMAT", "json"),
            ("RUST_LOG", "warn"),
        ],
    );
    let url = service.hop_url();
    let mut took = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let status = post(&url, &[]);
        took.push(started.elapsed());
        // FAIL=1: the handler ran and raised its error (a Sentry event) every time.
        assert_eq!(status, 500);
    }
    service.stop();
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: *took.last().unwrap(),
    }
}

#[test]
fn requests_are_not_slowed_by_a_backend_that_hangs_or_is_down() {
    let hole = black_hole();
    let closed = closed_port();
    let bugsink = Bugsink::from_env();
    let project = bugsink.new_project("latency");
    let cases = [
        (
            "backends accept and never answer",
            format!("http://127.0.0.1:{hole}"),
            format!("http://key@127.0.0.1:{hole}/1"),
            "1000",
        ),
        (
            "backends on a closed port",
            format!("http://127.0.0.1:{closed}"),
            format!("http://key@127.0.0.1:{closed}/1"),
            "1000",
        ),
        (
            "backends up (Bugsink, otelite)",
            server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT"),
            project.dsn.clone(),
            "15000",
        ),
    ];
    let mut table = String::from("| backends | p50 | p99 | max |\n|---|---|---|---|\n");
    let mut results = Vec::new();
    for (name, otlp, dsn, shutdown_ms) in &cases {
        let l = serve(otlp, dsn, shutdown_ms);
        table.push_str(&format!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            l.p50.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3,
            l.max.as_secs_f64() * 1e3
        ));
        results.push(l);
    }
    eprintln!("{REQUESTS} sequential requests each:\n{table}");
    // The OTLP request timeout is 10 s and Sentry's 5 s: a request path that waited on either
    // would show it here. 1 s is a correctness bound with room for a loaded machine.
    for (l, (name, ..)) in results.iter().zip(&cases) {
        assert!(
            l.p99 < Duration::from_secs(1),
            "{name}: p99 {:?} (p50 {:?})",
            l.p99,
            l.p50
        );
    }
    // The data did arrive when the backends were up, so the third row measured real exports.
    assert!(bugsink.event_count(&project) > 0);
}
