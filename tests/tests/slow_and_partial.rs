//! Two receiver behaviours a real otelite cannot be made to show: one that answers correctly but
//! slowly (a delaying proxy in front of the real otelite), and one that answers 200 with an OTLP
//! partial success (`rejected_spans`), which otelite never sends (an in-process server).

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::collections::HashSet;
use std::time::{Duration, Instant};

use integra_observe_tests::{
    otlp_endpoints, reply_server, report, run_scenario, slow_proxy, Driven, Otelite, Reply,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

/// Each chunk otelite sends back is held this long: every export takes at least this.
const DELAY: Duration = Duration::from_millis(300);

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_slow_receiver_gets_every_span_and_never_slows_the_caller() {
    let otelite = Otelite::from_env();
    for (protocol, endpoint) in otlp_endpoints() {
        let proxy = slow_proxy(port_of(&endpoint), DELAY);
        let mut service = Driven::start(
            BIN,
            "driven",
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &format!("http://127.0.0.1:{proxy}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50"),
            ],
        );
        service.expect("READY", Duration::from_secs(30));
        // 5 × 100 spans in batches of at most 50: at least 10 exports of at least 300 ms each,
        // so a caller that waited for the exports would need 3 s or more.
        let mut phases = Vec::new();
        let mut emitting_us = 0u64;
        let started = Instant::now();
        for p in 0..5 {
            let name = format!("slow{p}");
            service.send(&format!("emit {name} 99"));
            let line = service.expect(&format!("EMITTED {name} "), Duration::from_secs(10));
            let mut words = line.split_whitespace();
            let trace_id = words.next().unwrap().to_owned();
            emitting_us += words.next().unwrap().parse::<u64>().unwrap();
            phases.push((name, trace_id));
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = service.finish();
        // The receiver was as slow as meant: the service needed its shutdown to deliver.
        let took = started.elapsed();
        assert!(took >= DELAY * 10, "{protocol}: all delivered in {took:?}");
        let r: Value = serde_json::from_str(
            out.lines()
                .rev()
                .find_map(|l| l.strip_prefix("REPORT "))
                .unwrap(),
        )
        .unwrap();
        let s = &r["stats"]["otlp"];
        assert_eq!(
            (
                s["sent"].as_u64(),
                s["queue_full"].as_u64(),
                s["send_failed"].as_u64(),
                s["rejected"].as_u64()
            ),
            (Some(500), Some(0), Some(0), Some(0)),
            "{protocol}: {s}"
        );
        // A functional bound, not a benchmark: ending 500 spans took less than half of the time
        // the receiver needed for them, so the caller did not wait for it.
        assert!(
            emitting_us < 1_500_000,
            "{protocol}: ending 500 spans took {emitting_us} µs"
        );
        eprintln!("{protocol}: ending 500 spans took {emitting_us} µs in all");
        for (name, trace_id) in phases {
            let got: HashSet<String> = otelite
                .spans(&trace_id, 100)
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(got.len(), 100, "{protocol}: {name}: {got:?}");
            assert!(got.contains(&format!("{name}.0098")), "{protocol}: {name}");
        }
    }
}

/// An `ExportTraceServiceResponse` with `partial_success { rejected_spans, error_message }`, in
/// protobuf.
fn partial_success_protobuf(rejected: u8, message: &str) -> Vec<u8> {
    let mut inner = vec![0x08, rejected, 0x12, message.len() as u8];
    inner.extend_from_slice(message.as_bytes());
    let mut outer = vec![0x0a, inner.len() as u8];
    outer.extend(inner);
    outer
}

/// An OTLP partial success over HTTP (protobuf and JSON): the receiver answers 200 with
/// `partial_success { rejected_spans: 2 }`. opentelemetry-otlp 0.33 would only log it (behind a
/// feature integra-observe does not enable) and return `Ok`; our HTTP client reads the answer, so
/// the two spans count as `rejected`, the other three as `sent`, and one warning line names the
/// receiver's message.
#[test]
fn an_otlp_partial_success_counts_the_rejected_spans() {
    let message = "2 spans rejected: too old";
    for (protocol, content_type, body) in [
        (
            "http/protobuf",
            "application/x-protobuf",
            partial_success_protobuf(2, message),
        ),
        (
            "http/json",
            "application/json",
            format!(r#"{{"partialSuccess":{{"rejectedSpans":"2","errorMessage":"{message}"}}}}"#)
                .into_bytes(),
        ),
    ] {
        let (port, bodies) = reply_server(move |_| Reply {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.clone(),
            ..Reply::default()
        });
        let out = run_scenario(
            BIN,
            "burst",
            &[
                ("BURST", "5"),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &format!("http://127.0.0.1:{port}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
            ],
        );
        assert!(out.status.success(), "{protocol}");
        let r = report(&out);
        let s = &r["stats"]["otlp"];
        let requests = bodies.lock().unwrap().len();
        assert_eq!(requests, 1, "{protocol}: one batch, one request");
        assert_eq!(
            (
                s["sent"].as_u64(),
                s["rejected"].as_u64(),
                s["send_failed"].as_u64(),
                s["retried"].as_u64()
            ),
            (Some(3), Some(2), Some(0), Some(0)),
            "{protocol}: the receiver's two rejected spans are counted: {s}"
        );
        let logs = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let warnings: Vec<&str> = logs.lines().filter(|l| l.contains(message)).collect();
        assert_eq!(
            warnings.len(),
            1,
            "{protocol}: one warning naming the receiver's message: {logs}"
        );
        assert!(warnings[0].contains("WARN"), "{protocol}: {}", warnings[0]);
    }
}
