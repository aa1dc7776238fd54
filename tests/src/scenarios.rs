// The scenarios, shared by the `scenario` binary (all features) and `scenario-sentry-only`
// (without OpenTelemetry): each plays a service in its own process. Not a module of the library:
// it is included into both binaries.

use std::error::Error;
use std::fmt;

use integra_observe::backends::sentry_sdk;
use integra_observe::Config;
use serde_json::json;
use tracing::{error, info, info_span, warn, Instrument};

#[derive(Debug)]
struct VerificationError {
    source: std::io::Error,
}

impl fmt::Display for VerificationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("token signature could not be verified")
    }
}

impl Error for VerificationError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// The id of the last Sentry event captured, remembered where it was captured: the Sentry span
/// layer gives each span its own hub, so it must be read inside the span.
static EVENT_ID: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The ids of the innermost span, as integra-observe reports them.
static SPAN: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);

fn remember_event_id() {
    let id = sentry_sdk::last_event_id().map(|id| id.simple().to_string());
    *EVENT_ID.lock().unwrap_or_else(|p| p.into_inner()) = id;
}

fn report(guard: &integra_observe::Guard, extra: serde_json::Value) {
    let last = EVENT_ID.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let stats = guard.stats();
    let span = SPAN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut r = json!({
        "event_id": last,
        "trace_id": span.as_ref().map(|s| s.0.clone()),
        "span_id": span.as_ref().map(|s| s.1.clone()),
        "backends": stats.backends.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    });
    if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("REPORT {r}");
}

/// A three-level span tree (server → internal → client) with a breadcrumb and an error carrying a
/// source chain in the innermost span.
fn nested_error() {
    let guard = integra_observe::init(Config::from_env().service_name("scenario-nested"));
    {
        let _root = info_span!(
            "handle_request",
            otel.kind = "server",
            http.route = "/api/documents"
        )
        .entered();
        let _mid = info_span!("verify_user", user.id = 42).entered();
        let _inner = info_span!("fetch_keys", otel.kind = "client").entered();
        let ids = integra_observe::current_span_context();
        *SPAN.lock().unwrap_or_else(|p| p.into_inner()) = ids.map(|c| (c.trace_id.to_string(), c.span_id.to_string()));
        info!("fetching signing keys");
        warn!(attempt = 2, "token near expiry");
        let err = VerificationError {
            source: std::io::Error::other("connection reset by key server"),
        };
        error!(
            error = &err as &dyn Error,
            tags.component = "auth",
            user.id = 42,
            "verification failed"
        );
        remember_event_id();
    }
    report(&guard, json!({}));
}

#[tracing::instrument]
async fn load_case(case_id: u64) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let spawned = tokio::spawn(
        register_on_chain(case_id).instrument(info_span!("spawned_task", otel.kind = "internal")),
    );
    spawned.await.unwrap_or(0)
}

#[tracing::instrument]
async fn register_on_chain(case_id: u64) -> u64 {
    tokio::task::yield_now().await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    error!(case.id = case_id, "blockchain node unavailable");
    remember_event_id();
    case_id
}

/// An error raised in a spawned, instrumented task, after several `.await`s.
fn async_error() {
    let guard = integra_observe::init(Config::from_env().service_name("scenario-async"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let Ok(runtime) = runtime else { return };
    runtime.block_on(async {
        load_case(7)
            .instrument(info_span!("handle_request", otel.kind = "server"))
            .await;
    });
    drop(runtime);
    report(&guard, json!({}));
}

/// A panic inside a span: captured and flushed before the process dies.
fn panic_in_span() {
    let _guard = integra_observe::init(Config::from_env().service_name("scenario-panic"));
    let _span = info_span!("settle_case", case.id = 9).entered();
    let values: Vec<u32> = Vec::new();
    let index = std::env::args().count() + 10;
    println!("about to index {index}");
    let _ = values[index]; // panics: index out of bounds
}

/// `try_init` with whatever the environment says: prints the error and exits 3 on failure.
fn try_init() {
    match integra_observe::try_init(Config::from_env().service_name("scenario-try")) {
        Ok(guard) => {
            let second = integra_observe::try_init(Config::from_env());
            info!("started");
            report(
                &guard,
                json!({"second_init": second.err().map(|e| e.to_string())}),
            );
        }
        Err(e) => {
            println!("INIT ERROR: {e}");
            std::process::exit(3);
        }
    }
}

/// One service of a request chain: `POST /hop` calls `NEXT_URL` (if set) with the trace headers,
/// fails with 500 when `FAIL=1` (raising an error), answers 502 when the next hop failed.
/// Prints `LISTENING <port>`; `POST /shutdown` stops it cleanly (the guard flushes).
fn chain_service() {
    let name = std::env::var("SERVICE_NAME").unwrap_or_else(|_| "chain".into());
    let guard = integra_observe::init(Config::from_env().service_name(name.clone()));
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() else {
        return;
    };
    runtime.block_on(async move {
        let next = std::env::var("NEXT_URL").ok();
        let fail = std::env::var("FAIL").is_ok_and(|v| v == "1");
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(integra_observe::reqwest::TracingMiddleware)
            .build();
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let stop_route = stop.clone();
        let app = axum::Router::new()
            .route(
                "/hop",
                axum::routing::post(move || hop(name.clone(), next.clone(), fail, client.clone())),
            )
            .route(
                "/shutdown",
                axum::routing::post(move || {
                    stop_route.notify_one();
                    async { "bye" }
                }),
            )
            .layer(integra_observe::axum::TraceLayer::new().record_request_headers(["x-request-id", "authorization"]));
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else { return };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        println!("LISTENING {port}");
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.notified().await }).await;
    });
    drop(runtime);
    report(&guard, json!({}));
}

#[tracing::instrument(skip(client))]
async fn hop(
    service: String,
    next: Option<String>,
    fail: bool,
    client: reqwest_middleware::ClientWithMiddleware,
) -> axum::http::StatusCode {
    info!("handling hop");
    let mut downstream_failed = false;
    if let Some(url) = next {
        match client.post(&url).send().await {
            Ok(resp) => downstream_failed = !resp.status().is_success(),
            Err(e) => {
                warn!(error = %e, "next hop unreachable");
                downstream_failed = true;
            }
        }
    }
    if fail {
        error!(service = %service, "{service} could not process the hop");
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    if downstream_failed {
        return axum::http::StatusCode::BAD_GATEWAY;
    }
    axum::http::StatusCode::OK
}

/// Spans and an error sent to backends that accept and never answer, then a timed shutdown.
fn hung_shutdown() {
    let guard = integra_observe::init(Config::from_env().service_name("scenario-hung"));
    for i in 0..50 {
        let _span = info_span!("work", i).entered();
        if i == 49 {
            error!("last one failed");
        }
    }
    let running: Vec<&str> = guard.stats().backends.iter().map(|(n, _)| *n).collect();
    let started = std::time::Instant::now();
    let flushed = guard.shutdown();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    report(&guard, json!({"running": running, "shutdown_ms": elapsed_ms, "flushed": flushed}));
}

/// Secrets in every place a service may put them: span fields, event fields, messages,
/// breadcrumbs, URLs. The test greps what reached the servers for the `CORPUS-` values.
fn secrets() {
    let guard = integra_observe::init(Config::from_env().service_name("scenario-secrets"));
    {
        let _span = info_span!(
            "login",
            password = "CORPUS-pw-7f3a",
            http.request.header.authorization = "Bearer CORPUS-bearer-91c2",
            url.full = "https://bob:CORPUS-urlpw-55d1@h.example/cb?token=CORPUS-qtok-0a9e&id=1",
            user.api_key = "CORPUS-apikey-3b7c",
            user.id = 42,
            note = %"N".repeat(10_000)
        )
        .entered();
        info!(cookie = "session=CORPUS-cookie-88aa", "retrying with Bearer CORPUS-bearer2-1d4f");
        warn!(secret = "CORPUS-secret-6e21", "calling https://alice:CORPUS-urlpw2-77b0@x.example/");
        error!(
            private_key = "CORPUS-pk-2c5d",
            credentials = "CORPUS-cred-9f0e",
            "login failed, see https://h.example/r?access_token=CORPUS-qtok2-4e8b"
        );
        remember_event_id();
        let ids = integra_observe::current_span_context();
        *SPAN.lock().unwrap_or_else(|p| p.into_inner()) = ids.map(|c| (c.trace_id.to_string(), c.span_id.to_string()));
        // More events than a span may keep (OTEL_SPAN_EVENT_COUNT_LIMIT, 128 by default).
        let _chatty = info_span!("chatty").entered();
        for i in 0..200 {
            info!(i, "progress");
        }
    }
    report(&guard, json!({}));
}

/// `BURST` errors (default 5), each in its own span, then a shutdown; reports every backend's
/// counters after it, to check what a faulty server made the SDK do.
fn burst() {
    let guard = integra_observe::init(Config::from_env().service_name("scenario-burst"));
    let n: u32 = std::env::var("BURST").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    for i in 0..n {
        let _span = info_span!("job", i).entered();
        error!(i, "job failed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let started = std::time::Instant::now();
    guard.shutdown();
    let stats: serde_json::Map<String, serde_json::Value> = guard
        .stats()
        .backends
        .iter()
        .map(|(name, s)| {
            let v = json!({"sent": s.sent, "queue_full": s.dropped_queue_full, "rate_limited": s.dropped_rate_limited,
                "rejected": s.dropped_rejected, "send_failed": s.dropped_send_failed, "retried": s.retried});
            (name.to_string(), v)
        })
        .collect();
    report(&guard, json!({"shutdown_ms": started.elapsed().as_millis() as u64, "stats": stats}));
}

/// Every backend's counters, as `burst` reports them.
fn stats_json(guard: &integra_observe::Guard) -> serde_json::Value {
    let stats: serde_json::Map<String, serde_json::Value> = guard
        .stats()
        .backends
        .iter()
        .map(|(name, s)| {
            let v = json!({"sent": s.sent, "queue_full": s.dropped_queue_full, "rate_limited": s.dropped_rate_limited,
                "rejected": s.dropped_rejected, "send_failed": s.dropped_send_failed, "retried": s.retried});
            (name.to_string(), v)
        })
        .collect();
    serde_json::Value::Object(stats)
}

/// A service the test drives line by line on stdin, so that it can act on a receiver between
/// two steps: `emit NAME N` ends a root span `NAME` with `N` children `NAME.0000`, … and prints
/// `EMITTED NAME <trace id> <microseconds the calls took>`; `stats` prints `STATS {counters}`.
/// At the end of stdin it shuts down and reports the counters.
fn driven() {
    use std::io::BufRead;
    let guard = integra_observe::init(Config::from_env().service_name("scenario-driven"));
    println!("READY");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["emit", name, n] => {
                let n: u32 = n.parse().unwrap_or(0);
                let started = std::time::Instant::now();
                let trace_id = {
                    let _root = info_span!("phase", otel.name = *name).entered();
                    for i in 0..n {
                        let _child = info_span!("step", otel.name = format!("{name}.{i:04}").as_str(), i).entered();
                    }
                    integra_observe::current_span_context().map(|c| c.trace_id.to_string())
                };
                let micros = started.elapsed().as_micros();
                println!("EMITTED {name} {} {micros}", trace_id.unwrap_or_default());
            }
            ["stats"] => println!("STATS {}", stats_json(&guard)),
            _ => println!("UNKNOWN {line}"),
        }
    }
    let started = std::time::Instant::now();
    guard.shutdown();
    report(&guard, json!({"shutdown_ms": started.elapsed().as_millis() as u64, "stats": stats_json(&guard)}));
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("burst") => burst(),
        Some("secrets") => secrets(),
        Some("hung-shutdown") => hung_shutdown(),
        Some("chain-service") => chain_service(),
        Some("nested-error") => nested_error(),
        Some("async-error") => async_error(),
        Some("panic") => panic_in_span(),
        Some("try-init") => try_init(),
        Some("driven") => driven(),
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
}
