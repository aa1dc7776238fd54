//! A request path across services in different migration phases — A phase 1 (Sentry errors),
//! B phase 2 (Sentry performance), C phase 3 (Sentry + OTLP), D OTLP only — with errors raised in
//! D and B. Every Sentry event (Bugsink), every Sentry transaction and every span (otelite)
//! carries the one trace id; parents are right across hops; an unsampled request stays unsampled.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use integra_observe_tests::{post, span, spotlight_items, Bugsink, Otelite, Service};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

fn trace_of_event(e: &Value) -> &str {
    e["contexts"]["trace"]["trace_id"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn one_trace_id_across_phases_and_sampling_kept_end_to_end() {
    let bugsink = Bugsink::from_env();
    let otlp = integra_observe_tests::server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT");
    let (pa, pc) = (
        bugsink.new_project("chain-a"),
        bugsink.new_project("chain-c"),
    );
    // B (phase 2) sends transactions, which Bugsink does not keep (it rate-limits them for a day,
    // and the SDK obeys): B reports to Spotlight, Sentry's sidecar, which keeps everything.
    let b_dsn = integra_observe_tests::server_env("INTEGRA_TEST_SPOTLIGHT_DSN");
    let fast = ("OTEL_BSP_SCHEDULE_DELAY", "100");

    let d = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", "svc-d"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("FAIL", "1"),
            fast,
        ],
    );
    let d_url = d.hop_url();
    let c = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", "svc-c"),
            ("SENTRY_DSN", &pc.dsn),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("NEXT_URL", &d_url),
            fast,
        ],
    );
    let c_url = c.hop_url();
    // A and B are built without OpenTelemetry, as phase 1 and 2 services are.
    let sentry_only = integra_observe_tests::sentry_only_bin();
    let b = Service::start(
        &sentry_only,
        &[
            ("SERVICE_NAME", "svc-b"),
            ("SENTRY_DSN", &b_dsn),
            ("SENTRY_TRACES_SAMPLE_RATE", "1.0"),
            ("NEXT_URL", &c_url),
            ("FAIL", "1"),
        ],
    );
    let b_url = b.hop_url();
    let a = Service::start(
        &sentry_only,
        &[
            ("SERVICE_NAME", "svc-a"),
            ("SENTRY_DSN", &pa.dsn),
            ("NEXT_URL", &b_url),
        ],
    );

    let sampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    // The caller (an edge or a client SDK) starts the trace; A continues it.
    let status = post(
        &a.hop_url(),
        &[(
            "traceparent",
            &format!("00-{sampled_trace}-00f067aa0ba902b7-01"),
        )],
    );
    assert_eq!(status, 502, "A reports the failure downstream");
    let status = post(
        &a.hop_url(),
        &[(
            "traceparent",
            &format!("00-{unsampled_trace}-00f067aa0ba902b7-00"),
        )],
    );
    assert_eq!(status, 502);

    for s in [a, b, c, d] {
        s.stop();
    }

    // Sentry events: A (502 from the server layer) and C (502) in Bugsink; B (its own error and
    // its 500) in Spotlight.
    for (name, project) in [("A", &pa), ("C", &pc)] {
        let events = bugsink.all_events(project);
        let sampled = events
            .iter()
            .filter(|e| trace_of_event(e) == sampled_trace)
            .count();
        let unsampled = events
            .iter()
            .filter(|e| trace_of_event(e) == unsampled_trace)
            .count();
        assert!(
            sampled >= 1,
            "{name}: events of the sampled request: {events:#?}"
        );
        assert!(
            unsampled >= 1,
            "{name}: errors are sent whatever the trace sampling"
        );
        assert_eq!(
            sampled + unsampled,
            events.len(),
            "{name}: an event with a foreign trace id: {events:#?}"
        );
    }
    let b_events: Vec<Value> = spotlight_items("event")
        .into_iter()
        .filter(|e| e["tags"]["service.name"] == "svc-b")
        .collect();
    let b_sampled: Vec<&Value> = b_events
        .iter()
        .filter(|e| trace_of_event(e) == sampled_trace)
        .collect();
    assert!(
        b_sampled.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("svc-b could not process"))),
        "{b_events:#?}"
    );
    assert!(
        b_events
            .iter()
            .all(|e| [sampled_trace, unsampled_trace].contains(&trace_of_event(e))),
        "{b_events:#?}"
    );

    // Spans of C and D in otelite, with the parents across the hop C → D.
    let spans = Otelite::from_env().spans(sampled_trace, 6);
    let services: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["resource"]["attributes"]["service.name"].as_str())
        .collect();
    assert!(
        services.contains(&"svc-c") && services.contains(&"svc-d"),
        "{services:?}"
    );
    let of = |svc: &str, kind: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| s["resource"]["attributes"]["service.name"] == svc && s["kind"] == kind)
            .collect()
    };
    let c_server = of("svc-c", "Server");
    let c_client = of("svc-c", "Client");
    let d_server = of("svc-d", "Server");
    assert_eq!(
        (c_server.len(), c_client.len(), d_server.len()),
        (1, 1, 1),
        "{spans:#?}"
    );
    assert_eq!(
        d_server[0]["parent_span_id"], c_client[0]["span_id"],
        "D continues C's client span"
    );
    assert_eq!(d_server[0]["status"]["code"], "Error");
    assert_eq!(d_server[0]["attributes"]["http.route"], "/hop");
    assert_eq!(
        d_server[0]["attributes"]["http.response.status_code"],
        "500"
    );
    assert_eq!(
        d_server[0]["attributes"]["integra.trace_id.source"],
        "traceparent"
    );
    assert!(d_server[0]["attributes"]
        .get("http.request.header.authorization")
        .is_none());
    let d_hop = spans
        .iter()
        .find(|s| s["name"] == "hop" && s["resource"]["attributes"]["service.name"] == "svc-d")
        .expect("D's hop span");
    assert_eq!(
        d_hop["status"]["code"], "Error",
        "the error raised in D marks its span"
    );
    assert_eq!(span(&spans, "hop")["trace_id"], sampled_trace);

    // B's transaction (phase 2) has the trace id, OpenTelemetry ids, and C's server span's parent
    // is B's client span.
    let txs: Vec<Value> = spotlight_items("transaction")
        .into_iter()
        .filter(|t| {
            [sampled_trace, unsampled_trace]
                .contains(&t["contexts"]["trace"]["trace_id"].as_str().unwrap_or(""))
        })
        .collect();
    let tx = txs
        .iter()
        .find(|t| t["contexts"]["trace"]["trace_id"] == sampled_trace)
        .unwrap_or_else(|| panic!("no transaction of B: {txs:#?}"));
    let b_client_ids: Vec<&str> = tx["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter(|s| s["op"] == "http.client")
        .filter_map(|s| s["span_id"].as_str())
        .collect();
    assert_eq!(
        c_server[0]["parent_span_id"]
            .as_str()
            .map(|p| b_client_ids.contains(&p)),
        Some(true),
        "C continues B's client span {b_client_ids:?}"
    );
    assert!(
        txs.iter()
            .all(|t| t["contexts"]["trace"]["trace_id"] != unsampled_trace),
        "the unsampled request sent no transaction"
    );

    // Nothing of the unsampled request was recorded as spans anywhere.
    assert!(
        Otelite::from_env().spans(unsampled_trace, 1).is_empty(),
        "an unsampled request stays unsampled"
    );
}
