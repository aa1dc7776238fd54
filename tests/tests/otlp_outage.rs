//! An OTLP receiver killed mid-run and started again, and one down when the service starts: a
//! real otelite of this test's own (the shared one stays up for the other tests) is killed with
//! SIGKILL while a service sends spans, and started again on the same ports and storage. Every
//! span, from before, during and after the outage, is then in otelite, and the service counts
//! none as dropped.
//!
//! The export queue retries the batch at its head for as long as the process runs (backoff
//! 250 ms doubling to 5 s), so the length of the outage does not matter while the queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`) holds what is sent meanwhile: one test keeps otelite down 8 s,
//! well past the few seconds an export queue that gives a batch up after some attempts would
//! wait. Beyond the queue's bound, exactly the spans that do not fit are dropped, as
//! `queue_full`.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::collections::HashSet;
use std::time::{Duration, Instant};

use integra_observe_tests::{poll, Driven, Otelite, OwnOtelite};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

/// `emit NAME N`: the trace id of the phase.
fn emit(service: &mut Driven, name: &str, n: usize) -> String {
    service.send(&format!("emit {name} {n}"));
    let line = service.expect(&format!("EMITTED {name} "), Duration::from_secs(10));
    line.split_whitespace().next().unwrap().to_owned()
}

fn stats(service: &mut Driven) -> Value {
    service.send("stats");
    let line = service.expect("STATS ", Duration::from_secs(10));
    serde_json::from_str::<Value>(&line).unwrap()["otlp"].clone()
}

/// The names of the spans otelite holds for `trace_id`, once it holds `expected` of them (or
/// what it holds after 10 s).
fn names(otelite: &Otelite, trace_id: &str, expected: usize) -> HashSet<String> {
    otelite
        .spans(trace_id, expected)
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

fn expected_names(phase: &str, n: usize) -> HashSet<String> {
    (0..n)
        .map(|i| format!("{phase}.{i:04}"))
        .chain([phase.to_owned()])
        .collect()
}

/// A `driven` service sending to `otelite` over `protocol`.
fn service_for(otelite: &OwnOtelite, protocol: &str) -> Driven {
    service_with(otelite, protocol, &[])
}

/// A `driven` service sending to `otelite` over `protocol`, with `extra` settings.
fn service_with(otelite: &OwnOtelite, protocol: &str, extra: &[(&str, &str)]) -> Driven {
    let endpoint = if protocol == "grpc" {
        otelite.grpc_endpoint()
    } else {
        otelite.http_endpoint()
    };
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ];
    env.extend_from_slice(extra);
    let mut service = Driven::start(BIN, "driven", &env);
    service.expect("READY", Duration::from_secs(30));
    service
}

/// Waits (at most 20 s) until the service has sent `sent` spans, and returns its counters.
fn until_sent(service: &mut Driven, protocol: &str, sent: u64) -> Value {
    poll(Duration::from_secs(20), || {
        let s = stats(service);
        (s["sent"].as_u64() == Some(sent)).then_some(s)
    })
    .unwrap_or_else(|| panic!("{protocol}: never {sent} sent: {}", stats(service)))
}

/// `(sent, queue_full, send_failed, rejected)`.
fn counts(s: &Value) -> (Option<u64>, Option<u64>, Option<u64>, Option<u64>) {
    (
        s["sent"].as_u64(),
        s["queue_full"].as_u64(),
        s["send_failed"].as_u64(),
        s["rejected"].as_u64(),
    )
}

/// Waits (at most 5 s) until the service has retried an export, and returns its counters.
fn until_retried(service: &mut Driven, protocol: &str) -> Value {
    poll(Duration::from_secs(5), || {
        let s = stats(service);
        (s["retried"].as_u64().unwrap_or(0) > 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("{protocol}: no export was retried"))
}

/// The counters the service reported when it shut down.
fn final_stats(service: Driven) -> Value {
    let out = service.finish();
    let report_line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("REPORT "))
        .expect("REPORT");
    let report: Value = serde_json::from_str(report_line).unwrap();
    report["stats"]["otlp"].clone()
}

/// Every span of `phases` (name, trace id, children) is in `otelite`, once.
fn all_arrived(otelite: &OwnOtelite, protocol: &str, phases: &[(&str, &str, usize)]) {
    let client = otelite.client();
    for &(phase, trace_id, n) in phases {
        let got = names(&client, trace_id, n + 1);
        let want = expected_names(phase, n);
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "{protocol}: {phase}: missing {missing:?}"
        );
        assert_eq!(got.len(), n + 1, "{protocol}: {phase}: {got:?}");
    }
}

fn outage(protocol: &str) {
    let mut otelite = OwnOtelite::start("outage");
    let mut service = service_for(&otelite, protocol);

    // Before: delivered as usual.
    let before = emit(&mut service, "before", 20);
    let got = names(&otelite.client(), &before, 21);
    assert_eq!(got, expected_names("before", 20), "{protocol}: before");

    // Killed: spans made now fail to export and are retried.
    otelite.kill();
    let during = emit(&mut service, "during", 50);
    let retrying = until_retried(&mut service, protocol);
    assert_eq!(
        retrying["sent"].as_u64(),
        Some(21),
        "{protocol}: nothing sent while down: {retrying}"
    );

    // Back on the same ports and storage.
    let restarted = Instant::now();
    otelite.restart();
    eprintln!(
        "{protocol}: otelite answered again {} ms after the restart began",
        restarted.elapsed().as_millis()
    );
    let after = emit(&mut service, "after", 10);

    let s = &final_stats(service);
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["queue_full"].as_u64(),
            s["send_failed"].as_u64(),
            s["rejected"].as_u64()
        ),
        (Some(21 + 51 + 11), Some(0), Some(0), Some(0)),
        "{protocol}: every span sent, none dropped: {s}"
    );
    assert!(s["retried"].as_u64().unwrap() > 0, "{protocol}: {s}");

    // otelite holds every span, the ones from before the kill included (same storage).
    all_arrived(
        &otelite,
        protocol,
        &[
            ("before", &before, 20),
            ("during", &during, 50),
            ("after", &after, 10),
        ],
    );
}

/// The receiver is down when the service starts (its gRPC channel cannot connect at first) and
/// comes up while the first spans are being retried.
fn down_at_start(protocol: &str) {
    let mut otelite = OwnOtelite::start("down-at-start");
    otelite.kill();
    let mut service = service_for(&otelite, protocol);
    let early = emit(&mut service, "early", 30);
    let retrying = until_retried(&mut service, protocol);
    assert_eq!(retrying["sent"].as_u64(), Some(0), "{protocol}: {retrying}");
    otelite.restart();
    let late = emit(&mut service, "late", 5);
    let s = &final_stats(service);
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["queue_full"].as_u64(),
            s["send_failed"].as_u64(),
            s["rejected"].as_u64()
        ),
        (Some(31 + 6), Some(0), Some(0), Some(0)),
        "{protocol}: every span sent, none dropped: {s}"
    );
    all_arrived(
        &otelite,
        protocol,
        &[("early", &early, 30), ("late", &late, 5)],
    );
}

/// otelite down for 8 s while the service sends fewer spans than its queue holds (2048): the
/// batch at the head is retried the whole time, nothing is given up, and every span arrives.
fn long_outage(protocol: &str) {
    const OUTAGE: Duration = Duration::from_secs(8);
    let mut otelite = OwnOtelite::start("long-outage");
    let mut service = service_for(&otelite, protocol);
    let before = emit(&mut service, "before", 20);
    until_sent(&mut service, protocol, 21);

    otelite.kill();
    let down = Instant::now();
    let early = emit(&mut service, "early", 50);
    std::thread::sleep(Duration::from_secs(3));
    let late = emit(&mut service, "late", 50);
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    // Eight seconds down: the first batch has been failing all along, and is still held.
    let s = stats(&mut service);
    assert_eq!(
        counts(&s),
        (Some(21), Some(0), Some(0), Some(0)),
        "{protocol}: after {:?} down, nothing given up: {s}",
        down.elapsed()
    );
    assert!(s["retried"].as_u64().unwrap() >= 3, "{protocol}: {s}");

    otelite.restart();
    let after = emit(&mut service, "after", 10);
    until_sent(&mut service, protocol, 21 + 51 + 51 + 11);
    let s = &final_stats(service);
    assert_eq!(
        counts(s),
        (Some(21 + 51 + 51 + 11), Some(0), Some(0), Some(0)),
        "{protocol}: every span sent, none dropped: {s}"
    );
    all_arrived(
        &otelite,
        protocol,
        &[
            ("before", &before, 20),
            ("early", &early, 50),
            ("late", &late, 50),
            ("after", &after, 10),
        ],
    );
}

/// otelite down while the service sends more spans than its queue holds (100 here): the queue
/// keeps the first 100 and drops exactly the rest as `queue_full`; the 100 arrive once otelite is
/// back.
fn overflow_during_outage(protocol: &str) {
    const QUEUE: u64 = 100;
    let mut otelite = OwnOtelite::start("overflow");
    let mut service = service_with(
        &otelite,
        protocol,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50"),
        ],
    );
    let before = emit(&mut service, "before", 9);
    until_sent(&mut service, protocol, 10);

    otelite.kill();
    // 300 spans: 299 children, then their root.
    let flood = emit(&mut service, "flood", 299);
    until_retried(&mut service, protocol);
    let s = stats(&mut service);
    assert_eq!(
        counts(&s),
        (Some(10), Some(300 - QUEUE), Some(0), Some(0)),
        "{protocol}: while down the queue holds {QUEUE} and drops the rest: {s}"
    );

    otelite.restart();
    until_sent(&mut service, protocol, 10 + QUEUE);
    let s = &final_stats(service);
    assert_eq!(
        counts(s),
        (Some(10 + QUEUE), Some(300 - QUEUE), Some(0), Some(0)),
        "{protocol}: {s}"
    );
    assert_eq!(
        s["sent"].as_u64().unwrap() + s["queue_full"].as_u64().unwrap(),
        10 + 300,
        "{protocol}: every span in exactly one counter"
    );
    all_arrived(&otelite, protocol, &[("before", &before, 9)]);
    // The spans held are the first 100 that ended: children 0 to 99 (the root ended last).
    let got = names(&otelite.client(), &flood, QUEUE as usize);
    let want: HashSet<String> = (0..QUEUE).map(|i| format!("flood.{i:04}")).collect();
    assert_eq!(got, want, "{protocol}");
}

#[test]
fn spans_sent_during_an_8_s_outage_all_arrive_over_http() {
    long_outage("http/protobuf");
}

#[test]
fn spans_sent_during_an_8_s_outage_all_arrive_over_grpc() {
    long_outage("grpc");
}

#[test]
fn spans_beyond_the_queue_during_an_outage_are_dropped_exactly() {
    for protocol in ["http/protobuf", "grpc"] {
        overflow_during_outage(protocol);
    }
}

#[test]
fn spans_sent_while_otelite_is_killed_and_restarted_over_http_all_arrive() {
    outage("http/protobuf");
}

#[test]
fn spans_sent_while_otelite_is_killed_and_restarted_over_grpc_all_arrive() {
    outage("grpc");
}

#[test]
fn spans_sent_before_otelite_first_comes_up_all_arrive() {
    for protocol in ["http/protobuf", "grpc"] {
        down_at_start(protocol);
    }
}
