//! The guard shuts both pipelines down within the shutdown timeout even when the receivers accept
//! connections and never answer (a fault a real server cannot be made to show: an in-process
//! listener stands in for it).

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::net::TcpListener;
use std::time::Instant;

use integra_observe_tests::{report, run_scenario};

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

/// Accepts every connection and holds it open without ever answering.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

#[test]
fn shutdown_returns_within_its_timeout_when_both_receivers_hang() {
    let port = black_hole();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dsn = format!("http://key@127.0.0.1:{port}/1");
    for protocol in ["grpc", "http/protobuf"] {
        let started = Instant::now();
        let out = run_scenario(
            BIN,
            "hung-shutdown",
            &[
                ("SENTRY_DSN", &dsn),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("INTEGRA_SHUTDOWN_TIMEOUT", "1000"),
            ],
        );
        let process_ms = started.elapsed().as_millis();
        assert!(out.status.success(), "{protocol}");
        let r = report(&out);
        assert_eq!(r["running"], serde_json::json!(["otlp", "sentry"]));
        let shutdown_ms = r["shutdown_ms"].as_u64().unwrap();
        // A correctness bound, not a benchmark: 1 s timeout plus thread hand-off slack.
        assert!(
            shutdown_ms <= 1_500,
            "{protocol}: shutdown took {shutdown_ms} ms with a 1000 ms timeout"
        );
        assert_eq!(
            r["flushed"], false,
            "{protocol}: nothing could be flushed to a receiver that never answers"
        );
        assert!(
            process_ms < 15_000,
            "{protocol}: the process lingered {process_ms} ms after shutdown"
        );
    }
}
