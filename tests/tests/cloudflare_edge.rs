//! Services behind Cloudflare: the TypeScript Worker of docs/cloudflare.md, running in Cloudflare's
//! own runtime (workerd, on loopback), in front of real services. The service continues the
//! Worker's trace, believes the Worker's signed edge header, and derives the same trace id from a
//! ray id as the Worker did; spans of both land in otelite and the service's error in Bugsink with
//! that id. Edge headers sent straight to the service (forged, tampered, expired, or plain `CF-*`)
//! are ignored and the request still succeeds.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::time::Duration;

use integra_observe::backends::cloudflare::{derive_span_id, derive_trace_id, edge_header};
use integra_observe_tests::{
    esbuild_ts, free_port, new_ray, poll, post, server_env, Bugsink, Otelite, Service, Workerd,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");
const SECRET: &str = "edge-secret-for-tests-0123456789abcdef";

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The workerd config: one Worker (the compiled worker.ts) per `(socket port, origin)`, each on
/// its own socket that takes `request.cf` from the `cf-blob` header, with a network service that
/// may reach loopback as their outbound (the default one refuses local addresses).
fn workerd_config(workers: &[(u16, String)], otlp_traces_url: &str) -> String {
    let mut services = String::new();
    let mut sockets = String::new();
    let mut defs = String::new();
    for (i, (port, origin)) in workers.iter().enumerate() {
        services.push_str(&format!("    (name = \"edge{i}\", worker = .edge{i}),\n"));
        sockets.push_str(&format!(
            "    (name = \"http{i}\", address = \"127.0.0.1:{port}\", http = (cfBlobHeader = \"cf-blob\"), service = \"edge{i}\"),\n"
        ));
        defs.push_str(&format!(
            r#"const edge{i} :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "2024-09-23",
  bindings = [
    (name = "ORIGIN", text = "{origin}"),
    (name = "EDGE_SECRET", text = "{SECRET}"),
    (name = "OTLP_TRACES_URL", text = "{otlp_traces_url}"),
    (name = "SERVICE_NAME", text = "edge-worker"),
  ],
  globalOutbound = "loopback",
);
"#
        ));
    }
    format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
{services}    (name = "loopback", network = (allow = ["local"])),
  ],
  sockets = [
{sockets}  ],
);
{defs}"#
    )
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn service_of(span: &Value) -> &str {
    span["resource"]["attributes"]["service.name"]
        .as_str()
        .unwrap_or_default()
}

/// The spans of `trace_id`, once both the Worker's and the service's server span arrived.
fn worker_and_server(otelite: &Otelite, trace_id: &str, service: &str) -> (Value, Value) {
    let mut found = None;
    poll(Duration::from_secs(15), || {
        let spans = otelite.spans(trace_id, 2);
        let worker = spans
            .iter()
            .find(|s| service_of(s) == "edge-worker")
            .cloned();
        let server = spans
            .iter()
            .find(|s| service_of(s) == service && s["kind"] == "Server")
            .cloned();
        found = worker.zip(server);
        found.is_some().then_some(())
    });
    found.unwrap_or_else(|| {
        panic!(
            "worker and {service} spans of trace {trace_id}: {:#?}",
            otelite.spans(trace_id, 0)
        )
    })
}

#[test]
fn the_worker_and_the_service_share_one_trace_id() {
    // First, so a missing tool fails before any service starts.
    let worker_js = esbuild_ts(&repo_file("tests/cloudflare/worker.ts"));
    server_env("INTEGRA_TEST_WORKERD");
    let bugsink = Bugsink::from_env();
    let otelite = Otelite::from_env();
    let otlp = server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT");
    let project = bugsink.new_project("cloudflare-edge");
    let service = |name: &str, fail: bool| {
        let mut env = vec![
            ("SERVICE_NAME", name.to_owned()),
            ("SENTRY_DSN", project.dsn.clone()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("INTEGRA_EDGE_SECRET", SECRET.to_owned()),
        ];
        if fail {
            env.push(("FAIL", "1".to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Service::start(BIN, &env)
    };
    let ok = service("svc-cf-origin", false);
    let failing = service("svc-cf-failing", true);
    let (ok_port, fail_port) = (free_port(), free_port());
    let config = workerd_config(
        &[
            (ok_port, format!("http://127.0.0.1:{}", ok.port)),
            (fail_port, format!("http://127.0.0.1:{}", failing.port)),
        ],
        &format!("{}/v1/traces", otlp.trim_end_matches('/')),
    );
    let workerd = Workerd::start(
        &[
            ("config.capnp", config.as_bytes()),
            ("worker.js", &worker_js),
        ],
        &[ok_port, fail_port],
    );
    // What Cloudflare would put in `request.cf`.
    let cf_blob = |colo: &str| format!(r#"{{"colo":"{colo}","country":"US"}}"#);

    // (a) The client sent its own traceparent: the Worker continues it, the service continues the
    // Worker's span, and believes the signed ray id, colo and country.
    // Unique per run: otelite keeps the traces of earlier runs.
    let client_trace = derive_trace_id(&new_ray("CLIENT")).to_string();
    let ray_a = new_ray("SJC");
    let status = post(
        &format!("http://127.0.0.1:{ok_port}/hop"),
        &[
            (
                "traceparent",
                &format!("00-{client_trace}-1122334455667788-01"),
            ),
            ("cf-ray", &ray_a),
            ("cf-blob", &cf_blob("SJC")),
            ("cf-connecting-ip", "203.0.113.7"),
        ],
    );
    assert_eq!(status, 200);

    // (b) Only a ray id: the Worker derives the trace id, and so does every backend.
    let ray_b = new_ray("LHR");
    let status = post(
        &format!("http://127.0.0.1:{ok_port}/hop"),
        &[("cf-ray", &ray_b), ("cf-blob", &cf_blob("LHR"))],
    );
    assert_eq!(status, 200);

    // (d) The service fails: its Sentry event carries the derived trace id and the edge tags.
    let ray_d = new_ray("FRA");
    let status = post(
        &format!("http://127.0.0.1:{fail_port}/hop"),
        &[("cf-ray", &ray_d), ("cf-blob", &cf_blob("FRA"))],
    );
    assert_eq!(status, 500);

    ok.stop();
    failing.stop();

    let (worker, server) = worker_and_server(&otelite, &client_trace, "svc-cf-origin");
    assert_eq!(worker["parent_span_id"], "1122334455667788", "{worker:#}");
    assert_eq!(attr(&worker, "integra.trace_id.source"), "traceparent");
    assert_eq!(server["parent_span_id"], worker["span_id"], "{server:#}");
    assert_eq!(attr(&server, "integra.trace_id.source"), "traceparent");
    assert_eq!(
        attr(&server, "cloudflare.edge.trust"),
        "signed",
        "{server:#}"
    );
    assert_eq!(attr(&server, "cloudflare.ray_id"), ray_a.as_str());
    assert_eq!(attr(&server, "cloudflare.colo"), "SJC");
    assert_eq!(attr(&server, "geo.country.code"), "US");
    assert!(
        attr(&server, "client.address").is_null(),
        "no client address without PII allowed: {server:#}"
    );

    let derived_b = derive_trace_id(&ray_b).to_string();
    let (worker, server) = worker_and_server(&otelite, &derived_b, "svc-cf-origin");
    assert_eq!(attr(&worker, "integra.trace_id.source"), "cf-ray");
    assert_eq!(
        worker["span_id"],
        derive_span_id(&ray_b).to_string(),
        "the Worker's span id is derived too"
    );
    assert!(worker["parent_span_id"].is_null(), "{worker:#}");
    assert_eq!(server["parent_span_id"], worker["span_id"]);
    assert_eq!(attr(&server, "cloudflare.ray_id"), ray_b.as_str());
    assert_eq!(attr(&server, "cloudflare.colo"), "LHR");

    let derived_d = derive_trace_id(&ray_d).to_string();
    let (worker, server) = worker_and_server(&otelite, &derived_d, "svc-cf-failing");
    assert_eq!(worker["status"]["code"], "Error", "{worker:#}");
    assert_eq!(server["status"]["code"], "Error", "{server:#}");
    drop(workerd); // kept running until here: its spans are exported after each response
    let events = bugsink.all_events(&project);
    let event = events
        .iter()
        .find(|e| e["contexts"]["trace"]["trace_id"] == derived_d.as_str())
        .unwrap_or_else(|| panic!("an event of trace {derived_d}: {events:#?}"));
    let tags = &event["tags"];
    let tag = |k: &str| -> Option<String> {
        // Bugsink keeps tags as Sentry sent them: an object, or a list of pairs.
        match tags {
            Value::Object(m) => m.get(k).and_then(Value::as_str).map(str::to_owned),
            Value::Array(a) => a
                .iter()
                .find_map(|p| (p[0] == k).then(|| p[1].as_str().unwrap_or_default().to_owned())),
            _ => None,
        }
    };
    assert_eq!(
        tag("cloudflare.ray_id").as_deref(),
        Some(ray_d.as_str()),
        "{event:#}"
    );
    assert_eq!(tag("cloudflare.colo").as_deref(), Some("FRA"));
    assert_eq!(tag("geo.country.code").as_deref(), Some("US"));
}

/// The server span of the request with `x-request-id: request_id`, from otelite's list of the
/// service's traces.
fn server_span_by_request_id(service: &str, request_id: &str) -> Value {
    Otelite::from_env()
        .find_span(service, Duration::from_secs(15), |s| {
            s["kind"] == "Server"
                && s["attributes"]["http.request.header.x-request-id"] == request_id
        })
        .unwrap_or_else(|| panic!("the server span of request {request_id} in otelite"))
}

#[test]
fn edge_headers_sent_straight_to_the_service_are_ignored_unless_signed() {
    let otlp = server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT");
    let name = format!("svc-cf-direct-{}", std::process::id());
    let svc = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", &name),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("INTEGRA_EDGE_SECRET", SECRET),
        ],
    );
    let signed = |claims: &edge_header::EdgeClaims, secret: &str| {
        edge_header::sign(claims, secret.as_bytes())
    };
    let claims = |ray: &str, ts: u64, tp: Option<String>| {
        let mut c = edge_header::EdgeClaims::new(ts);
        c.ray = Some(ray.to_owned());
        c.traceparent = tp;
        c.country = Some("DE".to_owned());
        c
    };
    // (request id, the ray id it carries, its headers)
    type Case = (&'static str, String, Vec<(&'static str, String)>);
    let mut cases: Vec<Case> = Vec::new();
    // Forged: signed with another secret, with the matching plain CF-Ray beside it.
    let forged_ray = new_ray("SJC");
    cases.push((
        "forged",
        forged_ray.clone(),
        vec![
            (
                "x-integra-edge",
                signed(
                    &claims(&forged_ray, now(), None),
                    "not-the-secret-not-the-secret-0123",
                ),
            ),
            ("cf-ray", forged_ray.clone()),
            ("cf-connecting-ip", "203.0.113.66".to_owned()),
            ("cf-ipcountry", "US".to_owned()),
        ],
    ));
    // Plain Cloudflare headers from loopback: nobody vouches for them.
    let plain_ray = new_ray("SJC");
    cases.push((
        "plain",
        plain_ray.clone(),
        vec![("cf-ray", plain_ray.clone())],
    ));
    // Genuine but an hour old (replayed).
    let old_ray = new_ray("SJC");
    cases.push((
        "expired",
        old_ray.clone(),
        vec![(
            "x-integra-edge",
            signed(&claims(&old_ray, now() - 3600, None), SECRET),
        )],
    ));
    // Genuine, then another ray id written over it.
    let tampered_ray = new_ray("SJC");
    let genuine = signed(&claims(&new_ray("AMS"), now(), None), SECRET);
    let tampered = format!(
        "v1;ts={};ray={tampered_ray};cc={}",
        now(),
        genuine.split_once(";cc=").unwrap().1.replace("DE", "US")
    );
    cases.push((
        "tampered",
        tampered_ray.clone(),
        vec![("x-integra-edge", tampered)],
    ));
    for (case, _, headers) in &cases {
        let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        h.push(("x-request-id", case));
        assert_eq!(
            post(&svc.hop_url(), &h),
            200,
            "{case}: the request still succeeds"
        );
    }
    // A forged header beside a client's traceparent: the traceparent is continued as usual.
    let client_trace = "6a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let forged_with_tp = new_ray("SJC");
    assert_eq!(
        post(
            &svc.hop_url(),
            &[
                ("x-request-id", "forged-with-traceparent"),
                (
                    "traceparent",
                    &format!("00-{client_trace}-0102030405060708-01")
                ),
                (
                    "x-integra-edge",
                    &signed(
                        &claims(&forged_with_tp, now(), None),
                        "not-the-secret-not-the-secret-0123"
                    )
                ),
            ],
        ),
        200
    );
    // Genuine headers, no traceparent: the signed context wins (edge), else the signed ray (cf-ray).
    let edge_trace = "7b2c3d4e5f60718293a4b5c6d7e8f901";
    let signed_ray = new_ray("NRT");
    let with_tp = signed(
        &claims(
            &new_ray("NRT"),
            now(),
            Some(format!("00-{edge_trace}-1112131415161718-01")),
        ),
        SECRET,
    );
    assert_eq!(
        post(
            &svc.hop_url(),
            &[("x-request-id", "signed-tp"), ("x-integra-edge", &with_tp)]
        ),
        200
    );
    let ray_only = signed(&claims(&signed_ray, now(), None), SECRET);
    assert_eq!(
        post(
            &svc.hop_url(),
            &[
                ("x-request-id", "signed-ray"),
                ("x-integra-edge", &ray_only),
                ("cf-ray", "0000000000000001-AMS"), // the origin's own ray (a subrequest's): not the user's
            ]
        ),
        200
    );
    svc.stop();

    for (case, ray, _) in &cases {
        let span = server_span_by_request_id(&name, case);
        assert_eq!(
            attr(&span, "integra.trace_id.source"),
            "new",
            "{case}: {span:#}"
        );
        assert_ne!(span["trace_id"], derive_trace_id(ray).to_string(), "{case}");
        assert!(span["parent_span_id"].is_null(), "{case}: {span:#}");
        for key in [
            "cloudflare.ray_id",
            "cloudflare.edge.trust",
            "geo.country.code",
            "client.address",
        ] {
            assert!(
                attr(&span, key).is_null(),
                "{case}: {key} recorded: {span:#}"
            );
        }
    }
    let span = server_span_by_request_id(&name, "forged-with-traceparent");
    assert_eq!(span["trace_id"], client_trace);
    assert_eq!(attr(&span, "integra.trace_id.source"), "traceparent");
    assert!(attr(&span, "cloudflare.ray_id").is_null(), "{span:#}");

    let span = server_span_by_request_id(&name, "signed-tp");
    assert_eq!(span["trace_id"], edge_trace);
    assert_eq!(span["parent_span_id"], "1112131415161718");
    assert_eq!(attr(&span, "integra.trace_id.source"), "edge");
    assert_eq!(attr(&span, "cloudflare.edge.trust"), "signed");
    assert_eq!(attr(&span, "geo.country.code"), "DE");

    let span = server_span_by_request_id(&name, "signed-ray");
    assert_eq!(span["trace_id"], derive_trace_id(&signed_ray).to_string());
    assert_eq!(
        span["parent_span_id"],
        derive_span_id(&signed_ray).to_string()
    );
    assert_eq!(attr(&span, "integra.trace_id.source"), "cf-ray");
    assert_eq!(attr(&span, "cloudflare.ray_id"), signed_ray.as_str());
    assert_eq!(attr(&span, "cloudflare.colo"), "NRT");
}

/// docs/cloudflare.md shows the Worker this test runs, byte for byte.
#[test]
fn the_documented_worker_is_the_tested_one() {
    let doc = std::fs::read_to_string(repo_file("docs/cloudflare.md")).expect("docs/cloudflare.md");
    let worker =
        std::fs::read_to_string(repo_file("tests/cloudflare/worker.ts")).expect("worker.ts");
    let block = doc
        .split("```ts\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a ```ts block in docs/cloudflare.md");
    assert_eq!(
        block.trim_end(),
        worker.trim_end(),
        "docs/cloudflare.md's TypeScript Worker differs from tests/cloudflare/worker.ts: copy the file into the doc"
    );
}
