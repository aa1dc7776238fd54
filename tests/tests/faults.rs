//! Faults a real receiver cannot be made to show, from an in-process server on loopback: Sentry's
//! rate limits (per category, `Retry-After`), 413 and 5xx, DNS failure and a closed port; an OTLP
//! receiver that fails and recovers, and one that refuses for good. Every envelope and span is
//! counted, and nothing hangs.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::sync::atomic::Ordering;

use integra_observe_tests::{fault_server, report, run_scenario};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

fn burst(env: &[(&str, &str)]) -> Value {
    let mut all = vec![("BURST", "5"), ("INTEGRA_SHUTDOWN_TIMEOUT", "3000")];
    all.extend_from_slice(env);
    let out = run_scenario(BIN, "burst", &all);
    assert!(out.status.success());
    report(&out)
}

/// A burst whose spans go over OTLP/HTTP to the fault server on `port`.
fn otlp_burst(port: u16, schedule_delay_ms: &str) -> Value {
    burst(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms),
    ])
}

fn sentry_with(status: u16, headers: &[(&str, &str)]) -> (Value, usize) {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (port, count) = fault_server(move |_| (status, headers.clone()));
    let r = burst(&[("SENTRY_DSN", &format!("http://key@127.0.0.1:{port}/1"))]);
    (r["stats"]["sentry"].clone(), count.load(Ordering::SeqCst))
}

#[test]
fn sentry_rate_limits_are_obeyed_per_category() {
    // An error limit: the first envelope is answered 429, the other four are never sent.
    let (s, requests) = sentry_with(429, &[("X-Sentry-Rate-Limits", "60:error:key")]);
    assert_eq!(
        (requests, s["rate_limited"].as_u64(), s["sent"].as_u64()),
        (1, Some(5), Some(0)),
        "{s}"
    );
    // Retry-After alone limits everything.
    let (s, requests) = sentry_with(429, &[("Retry-After", "60")]);
    assert_eq!((requests, s["rate_limited"].as_u64()), (1, Some(5)), "{s}");
    // A limit on transactions does not stop errors.
    let (s, requests) = sentry_with(200, &[("X-Sentry-Rate-Limits", "60:transaction:key")]);
    assert_eq!(
        (requests, s["sent"].as_u64(), s["rate_limited"].as_u64()),
        (5, Some(5), Some(0)),
        "{s}"
    );
}

#[test]
fn sentry_refusals_and_network_failures_are_counted() {
    for status in [413, 500, 503] {
        let (s, requests) = sentry_with(status, &[]);
        assert_eq!(
            (requests, s["rejected"].as_u64(), s["sent"].as_u64()),
            (5, Some(5), Some(0)),
            "{status}: {s}"
        );
    }
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = burst(&[("SENTRY_DSN", &format!("http://key@127.0.0.1:{closed}/1"))]);
    assert_eq!(r["stats"]["sentry"]["send_failed"].as_u64(), Some(5), "{r}");
    // A name that does not resolve (.invalid is reserved for that).
    let r = burst(&[("SENTRY_DSN", "http://key@sentry.integra-observe.invalid/1")]);
    assert_eq!(r["stats"]["sentry"]["send_failed"].as_u64(), Some(5), "{r}");
    assert!(r["shutdown_ms"].as_u64().unwrap() <= 3_500, "{r}");
}

#[test]
fn otlp_spans_survive_a_receiver_that_fails_then_recovers() {
    // The first three export requests fail with 503, then the receiver accepts.
    let (port, count) = fault_server(|i| {
        (
            if i < 3 { 503 } else { 200 },
            vec![("content-type".into(), "application/x-protobuf".into())],
        )
    });
    let r = otlp_burst(port, "50");
    let s = &r["stats"]["otlp"];
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["send_failed"].as_u64(),
            s["queue_full"].as_u64()
        ),
        (Some(5), Some(0), Some(0)),
        "{r}"
    );
    // Every retry is the export queue's own (the exporter's are off over HTTP), so each is
    // counted: three refused requests, three retries, then one accepted request per batch.
    assert_eq!(s["retried"].as_u64(), Some(3), "{r}");
    assert!(
        count.load(Ordering::SeqCst) >= 4,
        "the failed requests were retried"
    );
}

#[test]
fn otlp_spans_refused_for_good_are_counted_exactly_and_not_retried() {
    for status in [400, 500] {
        let (port, count) = fault_server(move |_| (status, vec![]));
        let r = otlp_burst(port, "50");
        let s = &r["stats"]["otlp"];
        assert_eq!(
            (
                s["sent"].as_u64(),
                s["rejected"].as_u64(),
                s["retried"].as_u64()
            ),
            (Some(0), Some(5), Some(0)),
            "{status}: {r}"
        );
        let requests = count.load(Ordering::SeqCst);
        assert!(
            (1..=5).contains(&requests),
            "{status}: one request per batch, none repeated: {requests}"
        );
    }
}

#[test]
fn otlp_retry_after_is_honoured() {
    // 429 with Retry-After: 1 s, then accepted.
    let (port, count) = fault_server(|i| {
        if i == 0 {
            (429, vec![("Retry-After".into(), "1".into())])
        } else {
            (
                200,
                vec![("content-type".into(), "application/x-protobuf".into())],
            )
        }
    });
    let started = std::time::Instant::now();
    let r = otlp_burst(port, "5000");
    let s = &r["stats"]["otlp"];
    assert_eq!(s["sent"].as_u64(), Some(5), "{r}");
    assert_eq!(s["retried"].as_u64(), Some(1), "{r}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "one refused request, one accepted"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
}
