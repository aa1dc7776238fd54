//! The document upload path of the platform, as five small real services on loopback, each
//! initialised with `integra_observe::init`:
//!
//! ```text
//! trust-platform (edge; starts the trace, adds a cf-ray) ─┬─> auth-worker  verify_user
//!                                                         └─> aaa-service  create_case ─┬─> blockchain register_transaction (slow)
//!                                                                                       └─> database   store_metadata
//! ```
//!
//! Run it (no server needed):
//!
//! ```text
//! cargo run -p upload-flow
//! ```
//!
//! It sends three uploads; the second fails because the blockchain node is unavailable. What to
//! look at: a waterfall per request (the critical path marked ●, the bottleneck flagged, the
//! failed spans with their error and Sentry event id) and, at the end, the dependency map with
//! call counts, error rates and p50/p99. The view is built from the very spans that go to Jaeger:
//! each service forwards its finished spans to this launcher (`INTEGRA_TRACE_VIEW=forward`).
//!
//! With real backends, set `SENTRY_DSN` and `OTEL_EXPORTER_OTLP_ENDPOINT` (and
//! `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` for port 4317): every service sends to them, and the failed
//! upload's Sentry event and its Jaeger trace share the trace id printed in the summary.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use integra_observe::console::{self, TraceView};
use tracing::{error, info, instrument};

const SERVICES: [&str; 5] = [
    "database",
    "blockchain",
    "aaa-service",
    "auth-worker",
    "trust-platform",
];

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("service") => service(&args.next().unwrap_or_default()),
        _ => launcher(),
    }
}

// ---------------------------------------------------------------------------------------------
// The launcher: starts the services, sends the uploads, shows the traces.

enum Line {
    Listening(String, u16),
    Span(Box<integra_observe::FinishedSpan>),
}

fn launcher() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return eprintln!("cannot find my own executable: {e}"),
    };
    let (tx, rx) = mpsc::channel();
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut ports: HashMap<String, u16> = HashMap::new();
    for name in SERVICES {
        let mut cmd = Command::new(&exe);
        cmd.args(["service", name])
            .env("INTEGRA_TRACE_VIEW", "forward")
            .env("INTEGRA_CONSOLE", "false")
            .stdout(Stdio::piped());
        for (dep, port) in &ports {
            cmd.env(
                format!("URL_{}", dep.replace('-', "_").to_uppercase()),
                format!("http://127.0.0.1:{port}"),
            );
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return eprintln!("cannot start {name}: {e}"),
        };
        if let Some(stdout) = child.stdout.take() {
            let tx = tx.clone();
            let name = name.to_owned();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let msg = if let Some(port) = line.strip_prefix("LISTENING ") {
                        Line::Listening(name.clone(), port.trim().parse().unwrap_or(0))
                    } else if let Some(span) = console::from_json_line(&line) {
                        Line::Span(Box::new(span))
                    } else {
                        continue;
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            });
        }
        children.push((name.to_owned(), child));
        // Wait until it listens: the next service needs its port.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ports.contains_key(name) && Instant::now() < deadline {
            if let Ok(Line::Listening(n, p)) = rx.recv_timeout(Duration::from_millis(100)) {
                ports.insert(n, p);
            }
        }
        if !ports.contains_key(name) {
            eprintln!("{name} did not start");
            return stop(&mut children, &ports);
        }
    }

    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut view = TraceView::new(color);
    let edge = format!("http://127.0.0.1:{}/api/documents", ports["trust-platform"]);
    let mut summary = Vec::new();
    for n in 1..=3 {
        let status = send_upload(&edge);
        // The trace is complete when the edge's root span arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rendered = None;
        while rendered.is_none() && Instant::now() < deadline {
            if let Ok(Line::Span(span)) = rx.recv_timeout(Duration::from_millis(100)) {
                let trace_id = span.trace_id;
                if let Some(text) = view.add(*span) {
                    rendered = Some((trace_id, text));
                }
            }
        }
        match rendered {
            Some((trace_id, text)) => {
                println!("\nupload {n}: HTTP {status}\n{text}");
                summary.push(format!("{trace_id} {status}"));
            }
            None => println!("\nupload {n}: HTTP {status} (its trace did not complete in time)"),
        }
    }
    stop(&mut children, &ports);
    println!("\n{}", view.dependency_map());
    for line in summary {
        println!("upload-flow: trace {line}");
    }
}

fn send_upload(url: &str) -> u16 {
    post(url, r#"{"document":"contract.pdf","size":48213}"#)
}

fn post(url: &str, body: &'static str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else { return 0 };
    runtime.block_on(async {
        match reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => {
                eprintln!("upload failed: {e}");
                0
            }
        }
    })
}

fn stop(children: &mut [(String, Child)], ports: &HashMap<String, u16>) {
    // The edge first, so no service is asked to call one that is gone.
    for (name, child) in children.iter_mut().rev() {
        if let Some(port) = ports.get(name.as_str()) {
            post(&format!("http://127.0.0.1:{port}/shutdown"), "");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The services.

#[derive(Clone)]
struct Ctx {
    client: reqwest_middleware::ClientWithMiddleware,
    calls: Arc<AtomicU64>,
}

fn url(service: &str, path: &str) -> String {
    let var = format!("URL_{}", service.replace('-', "_").to_uppercase());
    format!("{}{path}", std::env::var(var).unwrap_or_default())
}

async fn call(
    ctx: &Ctx,
    service: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<(), StatusCode> {
    let mut req = ctx.client.post(url(service, path));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(resp.status()),
        Err(_) => Err(StatusCode::BAD_GATEWAY),
    }
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[instrument(skip(ctx))]
async fn upload_document(ctx: Ctx) -> StatusCode {
    // The edge: the trace starts here, and the request gets a Cloudflare ray id.
    let n = ctx.calls.fetch_add(1, Ordering::Relaxed);
    let ray = format!("{:016x}-FRA", 0x230b_0300_23ae_2822_u64 ^ n);
    pause(30).await;
    if let Err(status) = call(&ctx, "auth-worker", "/verify", &[("cf-ray", &ray)]).await {
        return status;
    }
    match call(&ctx, "aaa-service", "/cases", &[("cf-ray", &ray)]).await {
        Ok(()) => StatusCode::CREATED,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[instrument(skip(_ctx))]
async fn verify_user(_ctx: Ctx) -> StatusCode {
    pause(60).await;
    info!(user.id = 42, "token verified");
    StatusCode::OK
}

#[instrument(skip(ctx))]
async fn create_case(ctx: Ctx) -> StatusCode {
    pause(40).await;
    if let Err(status) = call(&ctx, "blockchain", "/transactions", &[]).await {
        error!(
            upstream.status = status.as_u16(),
            "arbitration case could not be registered"
        );
        return StatusCode::BAD_GATEWAY;
    }
    match call(&ctx, "database", "/metadata", &[]).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[instrument(skip(ctx))]
async fn register_transaction(ctx: Ctx) -> StatusCode {
    let n = ctx.calls.fetch_add(1, Ordering::Relaxed);
    pause(400).await;
    if n == 1 {
        error!(node = "chain-node-2", "blockchain node unavailable");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

#[instrument(skip(_ctx))]
async fn store_metadata(_ctx: Ctx) -> StatusCode {
    pause(25).await;
    StatusCode::OK
}

type Handler = fn(Ctx) -> std::pin::Pin<Box<dyn std::future::Future<Output = StatusCode> + Send>>;

fn service(name: &str) {
    let _guard = integra_observe::init(integra_observe::Config::from_env().service_name(name));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let Ok(runtime) = runtime else { return };
    let name = name.to_owned();
    runtime.block_on(async move {
        let ctx = Ctx {
            client: reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                .with(integra_observe::reqwest::TracingMiddleware)
                .build(),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let (path, handler): (&str, Handler) = match name.as_str() {
            "trust-platform" => ("/api/documents", |c| Box::pin(upload_document(c))),
            "auth-worker" => ("/verify", |c| Box::pin(verify_user(c))),
            "aaa-service" => ("/cases", |c| Box::pin(create_case(c))),
            "blockchain" => ("/transactions", |c| Box::pin(register_transaction(c))),
            _ => ("/metadata", |c| Box::pin(store_metadata(c))),
        };
        let stop = Arc::new(tokio::sync::Notify::new());
        let stop_route = stop.clone();
        let app = axum::Router::new()
            .route(path, axum::routing::post(move || handler(ctx.clone())))
            .route(
                "/shutdown",
                axum::routing::post(move || {
                    stop_route.notify_one();
                    async { "bye" }
                }),
            )
            .layer(integra_observe::axum::TraceLayer::new().record_request_headers(["cf-ray"]));
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        println!(
            "LISTENING {}",
            listener.local_addr().map(|a| a.port()).unwrap_or(0)
        );
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.notified().await })
            .await;
    });
}
