//! A Rust Worker (wasm32, workers-rs) in Cloudflare's runtime `workerd` calls a Rust backend on
//! loopback: the Worker's spans, sent by `integra_observe_cloudflare::worker` as OTLP/HTTP JSON,
//! land in otelite in the same trace as the backend's spans (the backend's server span a child of
//! the Worker's client span), and the Worker's `error!` (and a panic) land in Bugsink with that
//! trace id. The Worker is `examples/rust-worker`, built by worker-build.
//!
//! `#[ignore]`d in a plain `cargo test`, because it needs the Worker built for wasm32 (tools that
//! take minutes to install the first time). `scripts/test` (and `scripts/test-worker`, this test
//! alone) installs them once (`scripts/install-worker-tools.sh`, cached), builds the Worker and
//! runs this test with `--ignored` against the servers it started. Run without the built Worker,
//! the test fails and names that script, unless `INTEGRA_TEST_SKIP_WASM=1` says the wasm step is
//! skipped on purpose.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integra_observe::backends::cloudflare::{derive_span_id, derive_trace_id};
use integra_observe_tests::{new_ray, poll, server_env, Bugsink, Otelite, Service};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");
/// The edge secret the Worker signs with and the backend verifies with.
const EDGE_SECRET: &str = "rust-worker-test-secret-of-32-bytes!";

/// The built Worker (`index.js` and `index_bg.wasm`), or `None` when the wasm step is skipped.
fn built_worker() -> Option<PathBuf> {
    if std::env::var("INTEGRA_TEST_SKIP_WASM").is_ok_and(|v| v == "1") {
        eprintln!("INTEGRA_TEST_SKIP_WASM=1: the Rust Worker test is skipped on purpose");
        return None;
    }
    let dir = std::env::var("INTEGRA_TEST_RUST_WORKER_DIR").unwrap_or_else(|_| {
        panic!(
            "INTEGRA_TEST_RUST_WORKER_DIR is unset: build the Rust Worker and run this test with \
             scripts/test-worker (it installs the tools with scripts/install-worker-tools.sh), or \
             set INTEGRA_TEST_SKIP_WASM=1 to skip it on purpose"
        )
    });
    let dir = PathBuf::from(dir);
    for file in ["index.js", "index_bg.wasm"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: build the Worker with scripts/test-worker (tools from \
             scripts/install-worker-tools.sh)",
            dir.join(file).display()
        );
    }
    Some(dir)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// workerd serving the built Worker on loopback; killed on drop.
struct Workerd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Workerd {
    fn start(worker: &Path, bindings: &[(&str, &str)]) -> Workerd {
        let workerd = server_env("INTEGRA_TEST_WORKERD");
        let dir = std::env::temp_dir().join(format!(
            "integra-rust-worker-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for file in ["index.js", "index_bg.wasm"] {
            std::fs::copy(worker.join(file), dir.join(file)).expect("copy the built Worker");
        }
        let port = free_port();
        let bindings: Vec<String> = bindings
            .iter()
            .map(|(k, v)| format!("(name = {k:?}, text = {v:?})"))
            .collect();
        // The default outbound refuses loopback addresses: a `network` service that allows
        // `local` is the Worker's globalOutbound, so it can reach the backend and the servers.
        let config = format!(
            r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "loopback", network = (allow = ["local", "private", "public"])),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:{port}", http = (cfBlobHeader = "cf-blob"), service = "main"),
  ],
);
const worker :Workerd.Worker = (
  modules = [
    (name = "index.js", esModule = embed "index.js"),
    (name = "index_bg.wasm", wasm = embed "index_bg.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  bindings = [ {} ],
  globalOutbound = "loopback",
);
"#,
            bindings.join(", ")
        );
        std::fs::write(dir.join("config.capnp"), config).expect("write config");
        let child = Command::new(workerd)
            .arg("serve")
            .arg(dir.join("config.capnp"))
            .arg("--verbose")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn workerd");
        let mut w = Workerd { child, port, dir };
        let up = poll(Duration::from_secs(30), || {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("workerd exited with {status}:\n{}", w.output());
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "workerd did not listen on {port}");
        w
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What workerd printed (after it was killed).
    fn output(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let out = self.output();
        eprintln!("--- workerd output\n{out}");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends a request to the Worker; returns its status and body.
fn call(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = ureq::post(url).timeout(Duration::from_secs(30));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request to the Worker failed: {e}"),
    }
}

fn of<'a>(spans: &'a [Value], service: &str, kind: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["resource"]["attributes"]["service.name"] == service && s["kind"] == kind)
        .collect()
}

fn by_name<'a>(spans: &'a [Value], service: &str, name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["resource"]["attributes"]["service.name"] == service && s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} of {service} in {spans:#?}"))
}

/// The Worker's spans and the backend's share the trace; the hop's parents are right; the
/// backend believed the Worker's signed edge header and its ray id.
fn assert_one_trace(spans: &[Value], trace_id: &str, ray: &str) {
    let worker_server = of(spans, "rust-worker", "Server");
    let worker_client = of(spans, "rust-worker", "Client");
    let backend_server = of(spans, "backend", "Server");
    assert_eq!(
        (
            worker_server.len(),
            worker_client.len(),
            backend_server.len()
        ),
        (1, 1, 1),
        "{spans:#?}"
    );
    for s in spans {
        assert_eq!(s["trace_id"], trace_id, "{s:#?}");
    }
    let checkout = by_name(spans, "rust-worker", "checkout");
    assert_eq!(checkout["parent_span_id"], worker_server[0]["span_id"]);
    assert_eq!(worker_client[0]["parent_span_id"], checkout["span_id"]);
    assert_eq!(
        backend_server[0]["parent_span_id"], worker_client[0]["span_id"],
        "the backend continues the Worker's client span"
    );
    assert_eq!(worker_server[0]["name"], "POST /checkout");
    assert_eq!(worker_server[0]["status"]["code"], "Error");
    assert_eq!(
        worker_server[0]["attributes"]["http.response.status_code"],
        "500" // otelite shows every attribute value as a string
    );
    assert_eq!(
        worker_client[0]["attributes"]["http.response.status_code"],
        "200"
    );
    assert_eq!(checkout["status"]["code"], "Error");
    let backend = &backend_server[0]["attributes"];
    assert_eq!(backend["cloudflare.edge.trust"], "signed", "{backend:#}");
    assert_eq!(backend["cloudflare.ray_id"], ray, "{backend:#}");
}

fn worker_event(events: &[Value], trace_id: &str) -> Value {
    events
        .iter()
        .find(|e| e["contexts"]["trace"]["trace_id"] == trace_id)
        .cloned()
        .unwrap_or_else(|| panic!("no Worker event with trace {trace_id} in {events:#?}"))
}

#[test]
#[ignore = "needs the wasm tools and a built Worker: run with scripts/test-worker"]
fn rust_worker_spans_and_errors_share_the_backends_trace() {
    let Some(worker_dir) = built_worker() else {
        return;
    };
    let bugsink = Bugsink::from_env();
    let otelite = Otelite::from_env();
    let otlp = server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT");
    let project = bugsink.new_project("rust-worker");

    let backend = Service::start(
        BIN,
        &[
            ("SERVICE_NAME", "backend"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("INTEGRA_EDGE_SECRET", EDGE_SECRET),
        ],
    );
    let backend_url = backend.hop_url();
    let backend_host = format!("127.0.0.1:{}", backend.port);
    let workerd = Workerd::start(
        &worker_dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("SENTRY_DSN", &project.dsn),
            ("BACKEND_URL", &backend_url),
            ("INTEGRA_PROPAGATE_TO", &backend_host),
            ("EDGE_SECRET", EDGE_SECRET),
        ],
    );

    // 1. The caller's traceparent is continued: the Worker's root span is its child.
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let ray_a = new_ray("SJC");
    let (status, body) = call(
        &workerd.url("/checkout"),
        &[
            ("traceparent", &format!("00-{trace}-{caller_span}-01")),
            ("cf-ray", &ray_a),
        ],
    );
    assert_eq!(status, 500, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("Worker JSON");
    assert_eq!(reply["trace_id"], trace);
    assert_eq!(reply["source"], "traceparent");
    assert_eq!(reply["backend_status"], 200);
    let spans = otelite.spans(trace, 5);
    assert_one_trace(&spans, trace, &ray_a);
    let root = &of(&spans, "rust-worker", "Server")[0];
    assert_eq!(root["parent_span_id"], caller_span);
    assert_eq!(root["attributes"]["integra.trace_id.source"], "traceparent");
    assert_eq!(root["attributes"]["cloudflare.ray_id"], ray_a.as_str());

    // 2. No trace header: the trace id is derived from the ray id, as every backend derives it,
    // and the Worker's root span takes the derived span id.
    let ray_b = new_ray("LHR");
    let derived = derive_trace_id(&ray_b).to_string();
    let derived = derived.as_str();
    let (status, body) = call(&workerd.url("/checkout"), &[("cf-ray", &ray_b)]);
    assert_eq!(status, 500, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("Worker JSON");
    assert_eq!(
        (&reply["trace_id"], &reply["source"]),
        (&derived.into(), &"cf-ray".into())
    );
    let spans = otelite.spans(derived, 5);
    assert_one_trace(&spans, derived, &ray_b);
    let root = &of(&spans, "rust-worker", "Server")[0];
    assert_eq!(root["span_id"], derive_span_id(&ray_b).to_string());
    assert!(
        root.get("parent_span_id").is_none_or(Value::is_null),
        "{root:#?}"
    );
    assert_eq!(root["attributes"]["integra.trace_id.source"], "cf-ray");

    // Both errors reached Bugsink with their trace id and the span they happened in.
    let events = poll(Duration::from_secs(20), || {
        let events = bugsink.all_events(&project);
        (events.len() >= 2).then_some(events)
    })
    .unwrap_or_else(|| panic!("the Worker's two error events never reached Bugsink"));
    for (trace_id, n) in [(trace, 1), (derived, 2)] {
        let e = worker_event(&events, trace_id);
        let spans = otelite.spans(trace_id, 5);
        let checkout = by_name(&spans, "rust-worker", "checkout");
        assert_eq!(
            e["contexts"]["trace"]["span_id"], checkout["span_id"],
            "event {n}"
        );
        assert_eq!(e["message"], "checkout failed", "event {n}: {e:#?}");
        assert_eq!(
            e["tags"]["integra.trace_id.source"],
            if n == 1 { "traceparent" } else { "cf-ray" }
        );
        assert_eq!(e["extra"]["backend.status"], "200");
    }

    // 3. A panic: the Worker answers 500, and the panic hook sends the event and the open spans.
    let (status, _) = call(&workerd.url("/panic"), &[("cf-ray", &new_ray("AMS"))]);
    assert_eq!(status, 500);
    let panicked = poll(Duration::from_secs(20), || {
        bugsink
            .all_events(&project)
            .into_iter()
            .find(|e| e["exception"]["values"][0]["type"] == "panic")
    })
    .unwrap_or_else(|| panic!("the Worker's panic never reached Bugsink"));
    let value = panicked["exception"]["values"][0]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(
        value.contains("the Worker panicked on purpose"),
        "{panicked:#?}"
    );
    let panic_trace = panicked["contexts"]["trace"]["trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spans = otelite.spans(&panic_trace, 3);
    let checkout = by_name(&spans, "rust-worker", "checkout");
    assert_eq!(checkout["status"]["code"], "Error");
    assert_eq!(
        panicked["contexts"]["trace"]["span_id"],
        checkout["span_id"]
    );

    drop(workerd);
    backend.stop();
}

#[test]
fn the_documented_rust_worker_is_the_tested_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/cloudflare.md")).expect("docs/cloudflare.md");
    let example = std::fs::read_to_string(root.join("examples/rust-worker/src/lib.rs"))
        .expect("examples/rust-worker/src/lib.rs");
    let block = doc
        .split("## Rust Workers (feature `worker`)")
        .nth(1)
        .and_then(|section| section.split("```rust\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("a ```rust block in the Rust Workers section of docs/cloudflare.md");
    assert_eq!(
        block.trim_end(),
        example.trim_end(),
        "docs/cloudflare.md's Rust Worker differs from examples/rust-worker/src/lib.rs: copy the file into the doc"
    );
}
