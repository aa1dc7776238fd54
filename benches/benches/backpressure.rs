//! Back-pressure and throughput of the OTLP export path (issue 7, items 3 and 4).
//!
//! **Back-pressure** (`pressure`): 1,000,000 spans of the benchmark workload, as fast as one thread
//! makes them, through integra-observe with Sentry on (its DSN on a closed port: the workload's
//! `info!` is a breadcrumb, nothing is sent) and OTLP/gRPC pointing at
//!
//! - (r) a reachable real receiver: otelite, from `INTEGRA_TEST_OTLP_GRPC_ENDPOINT`;
//! - (a) a closed loopback port (`127.0.0.1:9`);
//! - (b) a TCP listener in the same process that accepts and never reads or answers.
//!
//! Each case runs in a child process (this binary, re-executed), so that its peak RSS (`VmHWM`) is
//! its own. The child times every span (wall clock around each workload call), then calls
//! `Guard::shutdown` (timeout 1 s, as in `ours_config`) and reads the final `Guard::stats`. It
//! installs a global `fmt` subscriber on stderr (`warn,integra_observe=info`) for what the
//! library logs outside the workload's scoped subscriber (its own threads, and the guard's
//! shutdown, which is called outside that scope); the parent counts the warnings about drops.
//!
//! **Throughput** (`throughput`): a producer at a fixed rate for 10 s per step, with the default
//! settings (queue 2048, batches of 512, schedule delay 5 s, shutdown timeout 2 s) and Sentry
//! off, into otelite over gRPC and over HTTP/protobuf; after each step `Guard::stats` and
//! otelite's REST API (`GET /api/traces?service=…`, page by page) say whether every span was
//! delivered. A third series sends to an in-process OTLP/HTTP sink that answers `200` at once:
//! not a receiver to test against, but the exporter's own ceiling, to tell where the limit is.
//! A series stops after its second step with loss.
//!
//! **Queue bound in bytes** (`heap`): the RSS a full queue holds, from two children at the closed
//! port with queues of 2,048 and 65,536 spans.
//!
//! Run with the real receiver started:
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/integra-observe/target
//! INTEGRA_TEST_SERVERS=otelite source scripts/start-servers.sh
//! cargo bench -p integra-observe-benches --bench backpressure   # or: -- pressure | throughput | heap
//! stop_servers
//! ```
//!
//! Without `--bench` (as under `cargo test --benches`; plain `cargo test` does not build it) it
//! makes 10,000 spans per case and one 0.3 s throughput step per series. Without the receiver's
//! variables, (r) and the otelite series are skipped, and the output says so.

// A benchmark binary: a set-up that fails should stop the run loudly, not be worked around.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use integra_observe::{Config, OtlpProtocol, SamplerKind, Stats};
use integra_observe_benches::{ours_config, span_workload, Stack, OTLP_ENDPOINT};

/// The shutdown timeout of the back-pressure cases (that of `ours_config`).
const PRESSURE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
/// The default shutdown timeout (`INTEGRA_SHUTDOWN_TIMEOUT`), which the throughput steps keep.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// The default queue bound (`OTEL_BSP_MAX_QUEUE_SIZE`).
const DEFAULT_QUEUE: u64 = 2048;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2..]);
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    // `cargo bench -- throughput` passes the filter after `--bench`.
    let parts: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| parts.is_empty() || parts.contains(&part);
    // Leaked: the throughput series borrow it for the rest of the run.
    let receiver: Result<&'static Receiver, &str> =
        Receiver::from_env().map(|r| &*Box::leak(Box::new(r)));
    if let Err(missing) = &receiver {
        println!(
            "\nNOTE: {missing} is not set, so the cases that need a real receiver (r, and every \
             otelite series of the throughput steps) are skipped. Start otelite first:\n  \
             INTEGRA_TEST_SERVERS=otelite source scripts/start-servers.sh\n"
        );
    }
    if wants("pressure") {
        pressure(bench, receiver.ok());
    }
    if wants("heap") {
        heap(bench);
    }
    if wants("throughput") {
        throughput(bench, receiver.ok());
    }
}

/// The otelite `scripts/start-servers.sh` started.
struct Receiver {
    grpc: String,
    http: String,
    api: String,
    /// The pid of otelite, from the pid file `start-servers.sh` keeps beside its log directory.
    pid: Option<u32>,
}

impl Receiver {
    fn from_env() -> Result<Receiver, &'static str> {
        let var = |name: &'static str| std::env::var(name).map_err(|_| name);
        let pid = std::env::var("INTEGRA_TEST_LOG_DIR").ok().and_then(|dir| {
            std::fs::read_to_string(std::path::Path::new(&dir).join("../otelite.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        Ok(Receiver {
            grpc: var("INTEGRA_TEST_OTLP_GRPC_ENDPOINT")?,
            http: var("INTEGRA_TEST_OTLP_HTTP_ENDPOINT")?,
            api: var("INTEGRA_TEST_OTELITE_URL")?,
            pid,
        })
    }

    /// CPU seconds otelite has used so far (all its threads).
    fn cpu(&self) -> Option<f64> {
        proc_cpu(&format!("/proc/{}/stat", self.pid?))
    }

    /// The ids of the traces otelite holds for `service` that started in `[from, to]` (unix ns).
    ///
    /// otelite's list answers at most 1,000 traces and ignores `offset` beyond them (its `total`
    /// is the page's size), so a full page is split in two time windows, which overlap by 1 ms
    /// (a span that straddles the middle is in one of them whichever time the filters read),
    /// and the ids are merged. The list is cached per filter set for 5 min; each window is read
    /// once.
    fn trace_ids(&self, service: &str, from: u64, to: u64, ids: &mut HashSet<String>) -> bool {
        const PAGE: usize = 1000;
        const OVERLAP: u64 = 1_000_000;
        let page: Option<serde_json::Value> = ureq::get(&format!(
            "{}/api/traces?service={service}&limit={PAGE}&start_time={from}&end_time={to}",
            self.api
        ))
        .timeout(Duration::from_secs(60))
        .call()
        .ok()
        .and_then(|r| r.into_json().ok());
        let Some(traces) = page.as_ref().and_then(|p| p["traces"].as_array()) else {
            return false;
        };
        if traces.len() < PAGE {
            ids.extend(
                traces
                    .iter()
                    .filter_map(|t| t["trace_id"].as_str().map(str::to_owned)),
            );
            return true;
        }
        if to - from <= 4 * OVERLAP {
            // More than a page in 4 ms: not at the rates these steps reach otelite.
            return false;
        }
        let mid = from + (to - from) / 2;
        self.trace_ids(service, from, mid + OVERLAP, ids)
            && self.trace_ids(service, mid - OVERLAP, to, ids)
    }

    /// Spans otelite holds for `service` from `[from, to]` (unix ns): every span of the
    /// workload is a trace of its own.
    fn spans(&self, service: &str, from: u64, to: u64) -> Option<u64> {
        let mut ids = HashSet::new();
        self.trace_ids(service, from, to, &mut ids)
            .then_some(ids.len() as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: runs the children and prints the tables.

/// Runs this binary as a child with `args` (and `env`); its `RESULT` line as a map, and its stderr.
fn run_child(args: &[String], env: &[(&str, String)]) -> (BTreeMap<String, String>, String) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.arg("child")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        panic!(
            "child {args:?} printed no RESULT (exit {:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status.code()
        );
    };
    let map = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (map, stderr)
}

fn num(map: &BTreeMap<String, String>, key: &str) -> f64 {
    map.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn int(map: &BTreeMap<String, String>, key: &str) -> u64 {
    map.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ns(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1} ms", v / 1e6)
    } else if v >= 10_000.0 {
        format!("{:.0} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// Lines of a child's stderr at WARN level, and those of them about dropped telemetry.
fn warnings(stderr: &str) -> (Vec<&str>, usize) {
    let warns: Vec<&str> = stderr.lines().filter(|l| l.contains(" WARN ")).collect();
    let drops = warns
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("drop"))
        .count();
    (warns, drops)
}

fn pressure(bench: bool, receiver: Option<&Receiver>) {
    let n: u64 = if bench { 1_000_000 } else { 10_000 };
    let mut cases: Vec<(&str, &str, String)> = Vec::new();
    if let Some(r) = receiver {
        cases.push(("r", "(r) otelite, reachable (gRPC)", r.grpc.clone()));
    }
    cases.push(("a", "(a) closed port (127.0.0.1:9)", "closed".into()));
    cases.push((
        "b",
        "(b) listener that accepts and never answers",
        "silent".into(),
    ));
    let mut rows = Vec::new();
    for (id, label, target) in &cases {
        eprintln!("backpressure: case {id}, {n} spans ...");
        let (map, stderr) = run_child(&["pressure".into(), target.clone(), n.to_string()], &[]);
        rows.push((*id, *label, map, stderr));
    }
    println!(
        "\n## Back-pressure: {} spans, one thread, Sentry on (closed port), OTLP/gRPC to each \
         endpoint\n",
        thousands(n)
    );
    println!(
        "| endpoint | spans/s | p50 | p99 | p99.9 | max | sent | dropped: queue_full | \
         send_failed | other | retried | every span counted | `shutdown()` (timeout 1 s): took, returned | \
         peak RSS − baseline | drop warnings on stderr |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|");
    for (_, label, m, stderr) in &rows {
        let (_, drop_warns) = warnings(stderr);
        let sent = int(m, "sent");
        let dropped = int(m, "queue_full")
            + int(m, "send_failed")
            + int(m, "rejected")
            + int(m, "rate_limited");
        let counted = sent + dropped;
        println!(
            "| {label} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} s, {} | \
             {} (baseline {}) | {drop_warns} |",
            num(m, "spans_per_s"),
            ns(num(m, "p50")),
            ns(num(m, "p99")),
            ns(num(m, "p999")),
            ns(num(m, "max")),
            thousands(sent),
            thousands(int(m, "queue_full")),
            thousands(int(m, "send_failed")),
            thousands(int(m, "rejected") + int(m, "rate_limited")),
            int(m, "retried"),
            if counted == n {
                "yes".to_string()
            } else {
                format!("**no**: {} of {}", thousands(counted), thousands(n))
            },
            num(m, "shutdown_s"),
            m.get("shutdown_ok").map_or("?", String::as_str),
            mib(num(m, "hwm_kib") - num(m, "baseline_hwm_kib")),
            mib(num(m, "baseline_hwm_kib")),
        );
    }
    let p99 = |id: &str| rows.iter().find(|r| r.0 == id).map(|r| num(&r.2, "p99"));
    println!();
    match p99("r") {
        Some(r) => {
            for id in ["a", "b"] {
                if let Some(x) = p99(id) {
                    let ratio = x / r;
                    println!(
                        "- p99({id}) / p99(r) = {ratio:.2}× (target ≤ 1.1×: {})",
                        if ratio <= 1.1 { "met" } else { "**not met**" }
                    );
                }
            }
        }
        None => println!("- p99 ratios: no (r) row (no receiver), not computed"),
    }
    for (id, _, m, stderr) in &rows {
        let (warns, drops) = warnings(stderr);
        println!(
            "- ({id}) before shutdown: sent {}, queue_full {}, send_failed {}, retried {}; \
             {} WARN lines on stderr, {drops} about drops; OTLP's line at shutdown: `{}`",
            thousands(int(m, "pre_sent")),
            thousands(int(m, "pre_queue_full")),
            thousands(int(m, "pre_send_failed")),
            int(m, "pre_retried"),
            warns.len(),
            stderr
                .lines()
                .find(|l| l.contains("shut down") && l.contains("\"otlp\""))
                .map(|l| l.split_once(" INFO ").map_or(l, |(_, t)| t).trim())
                .unwrap_or("(none)")
        );
        let mut distinct: Vec<&str> = Vec::new();
        for w in &warns {
            let text = w.split_once(" WARN ").map_or(*w, |(_, t)| t);
            if !distinct.contains(&text) && distinct.len() < 3 {
                distinct.push(text);
            }
        }
        for d in distinct {
            println!("  - WARN: `{}`", d.trim());
        }
    }
}

fn heap(bench: bool) {
    let big: u64 = if bench { 65_536 } else { 8_192 };
    let mut measured = Vec::new();
    for queue in [DEFAULT_QUEUE, big] {
        eprintln!("backpressure: heap, queue {queue} ...");
        let (map, _) = run_child(&["heap".into(), queue.to_string()], &[]);
        measured.push((queue, map));
    }
    let (q1, m1) = &measured[0];
    let (q2, m2) = &measured[1];
    let d1 = num(m1, "rss_kib") - num(m1, "baseline_rss_kib");
    let d2 = num(m2, "rss_kib") - num(m2, "baseline_rss_kib");
    let per_span = (d2 - d1) * 1024.0 / (q2 - q1) as f64;
    println!("\n## The queue bound in bytes (closed port, Sentry off)\n");
    println!(
        "| queue (spans) | spans made | held when measured | RSS with the queue full − before |"
    );
    println!("|--:|--:|--:|--:|");
    for (q, m) in &measured {
        println!(
            "| {} | {} | {} | {} |",
            thousands(*q),
            thousands(int(m, "made")),
            thousands(int(m, "held")),
            mib(num(m, "rss_kib") - num(m, "baseline_rss_kib"))
        );
    }
    println!(
        "\n- per queued span: ({:.0} − {:.0}) KiB / {} spans = **{per_span:.0} bytes** (measured; \
         `size_of::<SpanData>()` = {} of it)",
        d2,
        d1,
        q2 - q1,
        int(m1, "size_of_span_data")
    );
    println!(
        "- the default queue bound: 2,048 × {per_span:.0} B = **{}**",
        mib(2048.0 * per_span / 1024.0)
    );
}

/// One series of throughput steps: where the spans go.
struct Series {
    label: &'static str,
    protocol: &'static str,
    /// An OTLP endpoint, or `sink` for the in-process receiver that answers at once.
    endpoint: String,
    /// otelite, to count what it stored; `None` for the sink.
    receiver: Option<&'static Receiver>,
    rates: &'static [u64],
}

/// One step's outcome.
struct Step {
    label: &'static str,
    rate: u64,
    result: BTreeMap<String, String>,
    receiver_cpu: Option<f64>,
    stored: Option<u64>,
    lost: bool,
}

fn throughput(bench: bool, receiver: Option<&'static Receiver>) {
    let millis: u64 = if bench { 10_000 } else { 300 };
    let small: &'static [u64] = &[1_000];
    let pick = |full: &'static [u64]| if bench { full } else { small };
    let mut series = Vec::new();
    if let Some(r) = receiver {
        let rates = pick(&[500, 1_000, 2_000, 3_000, 5_000, 10_000, 20_000]);
        series.push(Series {
            label: "otelite, gRPC",
            protocol: "grpc",
            endpoint: r.grpc.clone(),
            receiver: Some(r),
            rates,
        });
        series.push(Series {
            label: "otelite, HTTP/protobuf",
            protocol: "http/protobuf",
            endpoint: format!("{}/v1/traces", r.http),
            receiver: Some(r),
            rates,
        });
    }
    series.push(Series {
        label: "in-process sink (HTTP/protobuf, answers 200 at once; not a real receiver)",
        protocol: "http/protobuf",
        endpoint: "sink".into(),
        receiver: None,
        rates: pick(&[10_000, 20_000, 50_000, 100_000, 200_000, 400_000]),
    });
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut steps = Vec::new();
    for s in &series {
        let mut lossy_steps = 0;
        for &rate in s.rates {
            let service = format!("bench-tp-{}-{rate}-{nonce}", s.protocol.replace('/', "-"));
            eprintln!("backpressure: throughput, {} at {rate}/s ...", s.label);
            let cpu_before = s.receiver.and_then(Receiver::cpu);
            let (result, _) = run_child(
                &[
                    "rate".into(),
                    rate.to_string(),
                    millis.to_string(),
                    s.protocol.into(),
                    s.endpoint.clone(),
                    service.clone(),
                ],
                &[],
            );
            let receiver_cpu = match (cpu_before, s.receiver.and_then(Receiver::cpu)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            let stored = s.receiver.and_then(|r| {
                let margin = 2_000_000_000;
                r.spans(
                    &service,
                    int(&result, "start_unix_ns").saturating_sub(margin),
                    int(&result, "end_unix_ns") + margin,
                )
            });
            let produced = int(&result, "produced");
            let lost = int(&result, "sent") != produced
                || (s.receiver.is_some() && stored != Some(produced));
            lossy_steps += u32::from(lost);
            steps.push(Step {
                label: s.label,
                rate,
                result,
                receiver_cpu,
                stored,
                lost,
            });
            // Two lossy steps show where the limit is; faster ones only lose more.
            if lossy_steps >= 2 {
                break;
            }
        }
    }
    println!(
        "\n## Throughput: default settings (queue 2048, batch 512, delay 5 s, shutdown 2 s), \
         Sentry off, {:.1} s per step\n",
        millis as f64 / 1000.0
    );
    println!(
        "| receiver | target spans/s | achieved | produced | sent | queue_full | send_failed | \
         retried | stored in otelite | lost | delivered/s | export thread CPU | other background \
         CPU | receiver CPU per stored span | shutdown |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|");
    for step in &steps {
        let m = &step.result;
        let elapsed = num(m, "elapsed_s");
        let sent = int(m, "sent");
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.1} % | {:.1} % | \
             {} | {:.3} s{} |",
            step.label,
            thousands(step.rate),
            num(m, "achieved"),
            thousands(int(m, "produced")),
            thousands(sent),
            thousands(int(m, "queue_full")),
            thousands(int(m, "send_failed")),
            int(m, "retried"),
            step.stored.map_or("–".to_string(), thousands),
            if step.lost { "**yes**" } else { "no" },
            sent as f64 / (elapsed + num(m, "shutdown_s")),
            100.0 * num(m, "worker_cpu_s") / elapsed,
            100.0 * (num(m, "background_cpu_s") - num(m, "worker_cpu_s")) / elapsed,
            match (step.receiver_cpu, step.stored) {
                (Some(c), Some(n)) if n > 0 => format!("{:.2} ms", 1000.0 * c / n as f64),
                _ => "–".to_string(),
            },
            num(m, "shutdown_s"),
            if m.get("shutdown_ok").map(String::as_str) == Some("true") {
                ""
            } else {
                ", returned false"
            },
        );
    }
    println!();
    for s in &series {
        let best = steps
            .iter()
            .filter(|r| r.label == s.label && !r.lost)
            .map(|r| r.rate)
            .max();
        let first_lossy = steps
            .iter()
            .find(|r| r.label == s.label && r.lost)
            .map(|r| r.rate);
        println!(
            "- {}: highest rate without loss {}; first rate with loss {}",
            s.label,
            best.map_or("none".to_string(), |r| format!("{} spans/s", thousands(r))),
            first_lossy.map_or("none up to the last step".to_string(), |r| format!(
                "{} spans/s",
                thousands(r)
            )),
        );
    }
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------------
// The children.

fn child(args: &[String]) {
    match args.first().map(String::as_str) {
        Some("pressure") => pressure_child(&args[1], args[2].parse().expect("n")),
        Some("heap") => heap_child(args[1].parse().expect("queue size")),
        Some("rate") => rate_child(
            args[1].parse().expect("rate"),
            args[2].parse().expect("millis"),
            &args[3],
            &args[4],
            &args[5],
        ),
        other => panic!("unknown child mode {other:?}"),
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a `/proc/.../stat` file, in seconds (assuming 100 ticks per second).
fn proc_cpu(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces; the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds of this process's threads named `name` (as `/proc` shows it: 15 characters).
fn thread_cpu(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| name.starts_with(c.trim()) && !c.trim().is_empty())
        })
        .filter_map(|t| proc_cpu(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// Logs what the library says outside the workload's scoped subscriber, on stderr.
fn log_to_stderr() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,integra_observe=info",
        ))
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
}

/// A loopback listener that accepts every connection and never reads or answers: an OTLP
/// receiver that hangs.
fn silent_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::Builder::new()
        .name("silent-listener".into())
        .spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        })
        .expect("spawn listener");
    format!("http://{addr}")
}

/// An OTLP/HTTP receiver in this process that reads each request and answers `200` with an
/// empty `ExportTraceServiceResponse` at once: the exporter's own ceiling, without a receiver's
/// storage behind it. Not a real receiver; the throughput table labels it so.
fn sink() -> String {
    use std::io::{BufRead as _, BufReader, Read as _};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().expect("clone stream");
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                                      content-length: 0\r\n\r\n";
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        })
        .expect("spawn sink");
    format!("http://{addr}/v1/traces")
}

fn otlp_stats(stack: &Stack) -> Stats {
    stack
        .guard()
        .and_then(|g| g.stats().get("otlp"))
        .unwrap_or_default()
}

fn print_result(fields: &[(&str, String)]) {
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(" "));
}

fn stats_fields(prefix: &str, s: &Stats) -> Vec<(String, String)> {
    [
        ("sent", s.sent),
        ("queue_full", s.dropped_queue_full),
        ("send_failed", s.dropped_send_failed),
        ("rejected", s.dropped_rejected),
        ("rate_limited", s.dropped_rate_limited),
        ("retried", s.retried),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{prefix}{k}"), v.to_string()))
    .collect()
}

fn pressure_child(target: &str, n: usize) {
    let endpoint = match target {
        "closed" => {
            let addr = OTLP_ENDPOINT.trim_start_matches("http://");
            let probe = TcpStream::connect_timeout(
                &addr.parse().expect("socket address"),
                Duration::from_secs(1),
            );
            assert!(probe.is_err(), "{OTLP_ENDPOINT} is open on this machine");
            OTLP_ENDPOINT.to_string()
        }
        "silent" => silent_listener(),
        url => url.to_string(),
    };
    log_to_stderr();
    let stack = Stack::ours_with(ours_config(SamplerKind::AlwaysOn).otlp_endpoint(endpoint))
        .expect("integra-observe builds");
    // Written now, so that its pages are in the baseline and not in the peak.
    let mut latency = vec![u32::MAX; n];
    let baseline_hwm = status_kib("VmHWM");
    let baseline_rss = status_kib("VmRSS");
    let start = Instant::now();
    stack.run(|| {
        for slot in latency.iter_mut() {
            let t = Instant::now();
            span_workload();
            *slot = u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX);
        }
    });
    let elapsed = start.elapsed();
    let before = otlp_stats(&stack);
    let guard = stack.guard().expect("ours has a guard");
    let t = Instant::now();
    let shutdown_ok = guard.shutdown();
    let shutdown = t.elapsed();
    let after = otlp_stats(&stack);
    let hwm = status_kib("VmHWM");
    latency.sort_unstable();
    let pct = |q: f64| {
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        latency[i]
    };
    let mut fields: Vec<(String, String)> = vec![
        ("n".into(), n.to_string()),
        ("elapsed_s".into(), format!("{:.3}", elapsed.as_secs_f64())),
        (
            "spans_per_s".into(),
            format!("{:.0}", n as f64 / elapsed.as_secs_f64()),
        ),
        ("p50".into(), pct(0.5).to_string()),
        ("p99".into(), pct(0.99).to_string()),
        ("p999".into(), pct(0.999).to_string()),
        ("max".into(), latency[n - 1].to_string()),
        (
            "shutdown_s".into(),
            format!("{:.3}", shutdown.as_secs_f64()),
        ),
        ("shutdown_ok".into(), shutdown_ok.to_string()),
        (
            "shutdown_timeout_s".into(),
            PRESSURE_SHUTDOWN_TIMEOUT.as_secs_f64().to_string(),
        ),
        ("baseline_hwm_kib".into(), baseline_hwm.to_string()),
        ("baseline_rss_kib".into(), baseline_rss.to_string()),
        ("hwm_kib".into(), hwm.to_string()),
    ];
    fields.extend(stats_fields("pre_", &before));
    fields.extend(stats_fields("", &after));
    let fields: Vec<(&str, String)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    // The guard's own drop is a no-op now; the stack's is quick.
    drop(stack);
    print_result(&fields);
}

fn heap_child(queue: u64) {
    let config = Config::from_env_vars([("OTEL_BSP_MAX_QUEUE_SIZE", queue.to_string())])
        .console(false)
        .log_filter("info")
        .otlp_endpoint(OTLP_ENDPOINT)
        .otlp_protocol(OtlpProtocol::Grpc)
        .shutdown_timeout(PRESSURE_SHUTDOWN_TIMEOUT);
    let stack = Stack::ours_with(config).expect("integra-observe builds");
    // A few spans first, so that one-time costs (callsite registration, the first connection
    // attempt, thread-locals) are in the baseline; they are counted in `made`.
    let warm = 16;
    stack.run(|| (0..warm).for_each(|_| span_workload()));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = status_kib("VmRSS");
    let made = queue + 10_000;
    stack.run(|| (warm..made).for_each(|_| span_workload()));
    std::thread::sleep(Duration::from_millis(300));
    let rss = status_kib("VmRSS");
    let s = otlp_stats(&stack);
    print_result(&[
        ("made", made.to_string()),
        ("held", (made - s.sent - s.dropped()).to_string()),
        ("baseline_rss_kib", baseline.to_string()),
        ("rss_kib", rss.to_string()),
        (
            "size_of_span_data",
            std::mem::size_of::<opentelemetry_sdk::trace::SpanData>().to_string(),
        ),
    ]);
    // The spans still held are retried until the guard's 1 s shutdown; nothing to wait for.
    drop(stack);
}

fn rate_child(rate: u64, millis: u64, protocol: &str, endpoint: &str, service: &str) {
    log_to_stderr();
    let protocol = match protocol {
        "grpc" => OtlpProtocol::Grpc,
        _ => OtlpProtocol::HttpProtobuf,
    };
    let endpoint = match endpoint {
        "sink" => sink(),
        url => url.to_string(),
    };
    // The defaults but for the endpoint: queue 2048, batch 512, delay 5 s, shutdown 2 s.
    let config = Config::new()
        .console(false)
        .log_filter("info")
        .service_name(service)
        .otlp_endpoint(endpoint)
        .otlp_protocol(protocol);
    let stack = Stack::ours_with(config).expect("integra-observe builds");
    let total = rate * millis / 1000;
    let mut produced = 0u64;
    let start_unix = unix_ns();
    let start = Instant::now();
    stack.run(|| {
        let mut tick = 0u64;
        while produced < total {
            tick += 1;
            let due = (rate * tick / 1000).min(total);
            while produced < due {
                span_workload();
                produced += 1;
            }
            let next = start + Duration::from_millis(tick);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
    let elapsed = start.elapsed();
    let worker_cpu = thread_cpu("integra-otlp-batch");
    // Everything but this (the producing) thread: the export worker, the exporter's runtime or
    // HTTP client threads, Sentry's transport.
    let background_cpu = proc_cpu("/proc/self/stat").unwrap_or(f64::NAN)
        - proc_cpu("/proc/thread-self/stat").unwrap_or(f64::NAN);
    let guard = stack.guard().expect("ours has a guard");
    let t = Instant::now();
    let shutdown_ok = guard.shutdown();
    let shutdown = t.elapsed();
    let s = otlp_stats(&stack);
    let mut fields = vec![
        ("produced".to_string(), produced.to_string()),
        ("start_unix_ns".into(), start_unix.to_string()),
        ("end_unix_ns".into(), unix_ns().to_string()),
        ("elapsed_s".into(), format!("{:.3}", elapsed.as_secs_f64())),
        (
            "achieved".into(),
            format!("{:.0}", produced as f64 / elapsed.as_secs_f64()),
        ),
        ("worker_cpu_s".into(), format!("{worker_cpu:.2}")),
        ("background_cpu_s".into(), format!("{background_cpu:.2}")),
        (
            "shutdown_s".into(),
            format!("{:.3}", shutdown.as_secs_f64()),
        ),
        ("shutdown_ok".into(), shutdown_ok.to_string()),
        (
            "shutdown_timeout_s".into(),
            DEFAULT_SHUTDOWN_TIMEOUT.as_secs_f64().to_string(),
        ),
    ];
    fields.extend(stats_fields("", &s));
    let fields: Vec<(&str, String)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    drop(stack);
    print_result(&fields);
}
