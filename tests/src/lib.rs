//! Helpers for the end-to-end tests: clients for the real servers that `scripts/test` starts
//! (Bugsink, a Sentry-compatible server; otelite, an OTLP receiver), and a runner for the
//! `scenario` binary, which plays a service: each scenario is its own process, as in production,
//! because a process has one global subscriber.

// Test support: a failed lookup must fail the test loudly, so panicking is the point here.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads a variable `scripts/test` exports, failing with a hint when the servers are not running.
pub fn server_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is unset: these tests need the real servers; run them with `scripts/test`")
    })
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// The scenario binary built without OpenTelemetry (a phase 1/2 service), next to this test's
/// executable; `scripts/test` builds it on its own.
pub fn sentry_only_bin() -> String {
    sibling_bin("scenario-sentry-only")
}

/// A binary of another workspace package, next to this test's executable (`scripts/test` builds
/// them on their own).
pub fn sibling_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with scripts/test (it builds it)",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Bugsink server's REST API.
pub struct Bugsink {
    url: String,
    token: String,
}

/// A Bugsink project of one test, so tests never see each other's events.
pub struct Project {
    /// Numeric id.
    pub id: String,
    /// Its DSN.
    pub dsn: String,
}

impl Bugsink {
    /// The server `scripts/test` started.
    pub fn from_env() -> Self {
        Bugsink {
            url: server_env("INTEGRA_TEST_BUGSINK_URL"),
            token: server_env("INTEGRA_TEST_BUGSINK_TOKEN"),
        }
    }

    fn get(&self, path: &str) -> Option<Value> {
        let resp = agent()
            .get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call();
        match resp {
            Ok(r) => r.into_json().ok(),
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => panic!("Bugsink GET {path}: {e}"),
        }
    }

    /// Creates a fresh project (unique name) and returns its id and DSN.
    pub fn new_project(&self, name: &str) -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let unique = format!("{name}-{}-{nanos}", std::process::id());
        let created: Value = agent()
            .post(&format!("{}/api/canonical/0/projects/", self.url))
            .set("Authorization", &format!("Bearer {}", self.token))
            .send_json(serde_json::json!({"name": unique, "team": server_env("INTEGRA_TEST_BUGSINK_TEAM")}))
            .expect("create Bugsink project")
            .into_json()
            .expect("project JSON");
        let id = match &created["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let project = self
            .get(&format!("/api/canonical/0/projects/{id}/"))
            .expect("project");
        Project {
            id,
            dsn: project["dsn"].as_str().expect("dsn").to_owned(),
        }
    }

    /// The stored event body (`data`) of `event_id` in `project`, waiting up to 10 s for it.
    pub fn event(&self, project: &Project, event_id: &str) -> Value {
        poll(Duration::from_secs(10), || {
            self.get(&format!(
                "/api/canonical/0/events/lookup/?project={}&event_id={event_id}",
                project.id
            ))
        })
        .unwrap_or_else(|| {
            panic!(
                "event {event_id} never reached Bugsink project {}",
                project.id
            )
        })["data"]
            .clone()
    }

    /// How many events the project stored.
    pub fn event_count(&self, project: &Project) -> u64 {
        let p = self
            .get(&format!("/api/canonical/0/projects/{}/", project.id))
            .expect("project");
        p["stored_event_count"].as_u64().unwrap_or(0)
    }

    /// The stored bodies of every event in the project (via its issues), waiting up to 10 s for
    /// at least one.
    pub fn all_events(&self, project: &Project) -> Vec<Value> {
        let issues = poll(Duration::from_secs(10), || {
            let list = self.get(&format!("/api/canonical/0/issues/?project={}", project.id))?;
            let results = list["results"].as_array()?.clone();
            (!results.is_empty()).then_some(results)
        })
        .unwrap_or_default();
        let mut out = Vec::new();
        for issue in issues {
            let events = self
                .get(&format!(
                    "/api/canonical/0/events/?issue={}",
                    issue["id"].as_str().unwrap_or("")
                ))
                .unwrap_or_default();
            for e in events["results"].as_array().cloned().unwrap_or_default() {
                let id = e["event_id"].as_str().unwrap_or_default().replace('-', "");
                out.push(self.event(project, &id));
            }
        }
        out
    }
}

/// otelite's REST API.
pub struct Otelite {
    url: String,
}

impl Otelite {
    /// The server `scripts/test` started.
    pub fn from_env() -> Self {
        Otelite {
            url: server_env("INTEGRA_TEST_OTELITE_URL"),
        }
    }

    /// The spans of `trace_id`, waiting up to 10 s until there are at least `min_spans`.
    pub fn spans(&self, trace_id: &str, min_spans: usize) -> Vec<Value> {
        let mut last = Vec::new();
        poll(Duration::from_secs(10), || {
            let r = agent()
                .get(&format!("{}/api/traces/{trace_id}", self.url))
                .call()
                .ok()?;
            let v: Value = r.into_json().ok()?;
            last = v["spans"].as_array().cloned().unwrap_or_default();
            (last.len() >= min_spans).then_some(())
        });
        last
    }

    /// The first span of `service`'s traces that `pred` accepts, polling until `timeout`.
    pub fn find_span(
        &self,
        service: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let agent = agent();
        let mut attempt = 0;
        poll(timeout, || {
            attempt += 1;
            // The list API caches per query: vary `limit` on every poll.
            let list: Value = agent
                .get(&format!(
                    "{}/api/traces?service={service}&limit={}",
                    self.url,
                    100 + attempt
                ))
                .call()
                .ok()?
                .into_json()
                .ok()?;
            list["traces"].as_array()?.iter().find_map(|t| {
                let trace: Value = agent
                    .get(&format!(
                        "{}/api/traces/{}",
                        self.url,
                        t["trace_id"].as_str()?
                    ))
                    .call()
                    .ok()?
                    .into_json()
                    .ok()?;
                trace["spans"].as_array()?.iter().find(|s| pred(s)).cloned()
            })
        })
    }
}

/// A fresh `CF-Ray` value per call: 16 hex digits and `colo`.
pub fn new_ray(colo: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::thread::sleep(Duration::from_micros(1));
    format!(
        "{:016x}-{colo}",
        (nanos as u64) ^ (u64::from(std::process::id()) << 40)
    )
}

/// The OTLP endpoints of the running otelite: `(protocol, endpoint)` for gRPC and HTTP.
pub fn otlp_endpoints() -> [(&'static str, String); 2] {
    [
        ("grpc", server_env("INTEGRA_TEST_OTLP_GRPC_ENDPOINT")),
        (
            "http/protobuf",
            server_env("INTEGRA_TEST_OTLP_HTTP_ENDPOINT"),
        ),
    ]
}

/// `bin scenario` with a clean environment (PATH and HOME kept, compact logs) plus `env`: a
/// service sees only the configuration its test gives it.
fn scenario_command(bin: &str, scenario: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(scenario)
        .env_clear()
        .env("INTEGRA_LOG_FORMAT", "compact")
        // The real servers share two cores with the whole suite running in parallel; a Bugsink
        // under that load can take longer than the 2 s default to accept an envelope. Tests that
        // check the bound itself set their own value.
        .env("INTEGRA_SHUTDOWN_TIMEOUT", "15000");
    for keep in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(keep) {
            cmd.env(keep, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the `scenario` binary with a clean environment plus `env`, and returns its output.
pub fn run_scenario(bin: &str, scenario: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = scenario_command(bin, scenario, env);
    let out = cmd.output().expect("run scenario");
    eprintln!(
        "--- scenario {scenario} exit={:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON report a scenario prints as its last stdout line starting with `REPORT `.
pub fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("REPORT "))
        .expect("scenario printed no REPORT line");
    serde_json::from_str(line).expect("REPORT is JSON")
}

/// A span from otelite's list by name.
pub fn span<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

/// A `scenario chain-service` process listening on loopback.
pub struct Service {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    output: Option<std::thread::JoinHandle<String>>,
}

/// A test that fails before `stop` must not leave its services running.
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `scenario chain-service` with a clean environment plus `env`, and waits until it
    /// listens.
    pub fn start(bin: &str, env: &[(&str, &str)]) -> Service {
        use std::io::BufRead;
        let mut cmd = scenario_command(bin, "chain-service", env);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn service");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let output = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("service did not start listening");
        Service {
            child,
            port,
            output: Some(output),
        }
    }

    /// `http://127.0.0.1:PORT/hop`.
    pub fn hop_url(&self) -> String {
        format!("http://127.0.0.1:{}/hop", self.port)
    }

    /// Stops it cleanly (its guard flushes every backend) and returns what it printed.
    pub fn stop(mut self) -> String {
        let _ = agent()
            .post(&format!("http://127.0.0.1:{}/shutdown", self.port))
            .call();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = self
            .output
            .take()
            .and_then(|o| o.join().ok())
            .unwrap_or_default();
        eprintln!("--- service output\n{out}");
        out
    }
}

/// POSTs to `url` with extra headers and returns the status.
pub fn post(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("POST {url}: {e}"),
    }
}

impl Bugsink {
    /// Every raw envelope Bugsink received for `project` (kept because the test servers run with
    /// `KEEP_ENVELOPES`), including transactions, which Bugsink does not otherwise store.
    pub fn raw_envelopes(&self, project: &Project) -> Vec<String> {
        let db = server_env("INTEGRA_TEST_BUGSINK_DB");
        let script = "import sqlite3,sys,json\n\
            c=sqlite3.connect(sys.argv[1])\n\
            rows=c.execute('SELECT data FROM ingest_envelope WHERE project_pk=? ORDER BY id',(int(sys.argv[2]),)).fetchall()\n\
            print(json.dumps([bytes(r[0]).decode('utf-8','replace') for r in rows]))";
        let out = Command::new("python3")
            .args(["-c", script, &db, &project.id])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("envelopes JSON")
    }
}

/// Every item of `item_type` (`"transaction"`, `"event"`) that Spotlight received, in arrival
/// order (all tests share it: select by trace id). `scripts/test` records each envelope as one
/// JSON line before Spotlight answers, so what an SDK sent is readable once it flushed.
pub fn spotlight_items(item_type: &str) -> Vec<Value> {
    let path = server_env("INTEGRA_TEST_SPOTLIGHT_EVENTS");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|env| env["items"].as_array().cloned().unwrap_or_default())
        .filter(|item| item["header"]["type"] == item_type)
        .map(|item| item["body"].clone())
        .collect()
}

/// An in-process HTTP server for faults a real one cannot be made to show (a given status with
/// given headers): answers request `i` (from 0) with `respond(i)`, and counts requests.
pub fn fault_server(
    respond: impl Fn(usize) -> (u16, Vec<(String, String)>) + Send + 'static,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream);
            while read_http_request(&mut reader).is_some() {
                let i = seen.fetch_add(1, Ordering::SeqCst);
                let (status, headers) = respond(i);
                let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n");
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                if reader.get_mut().write_all(resp.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (port, count)
}

/// What [`reply_server`] answers one request with.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
}

/// Like [`fault_server`], for answers with a body or a delay: answers request `i` (from 0) with
/// `respond(i)`, and keeps every request's body.
pub fn reply_server(
    respond: impl Fn(usize) -> Reply + Send + Sync + 'static,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let seen = bodies.clone();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (seen, respond) = (seen.clone(), respond.clone());
            // A connection per thread: a client may open a second one while the first waits.
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                while let Some(body) = read_http_request(&mut reader) {
                    let i = {
                        let mut all = seen.lock().unwrap();
                        all.push(body);
                        all.len() - 1
                    };
                    let reply = respond(i);
                    std::thread::sleep(reply.delay);
                    let mut resp = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    let mut bytes = resp.into_bytes();
                    bytes.extend_from_slice(&reply.body);
                    if reader.get_mut().write_all(&bytes).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, bodies)
}

/// A TCP proxy on loopback to `127.0.0.1:target` that forwards what the client sends at once and
/// holds each chunk of the server's answer for `delay`: a slow receiver in front of a real one.
pub fn slow_proxy(target: u16, delay: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    std::thread::sleep(delay);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client, server, Duration::ZERO));
            std::thread::spawn(move || pump(s2, c2, delay));
        }
    });
    port
}

/// A listener on loopback that accepts every connection and never answers.
pub fn black_hole() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Otelite {
    /// An otelite whose REST API is at `url`.
    pub fn at(url: &str) -> Self {
        Otelite {
            url: url.to_owned(),
        }
    }
}

/// An otelite of one test's own, which the test may kill and restart on the same ports and
/// storage (the shared one must stay up for the other tests). The binary is the one
/// `scripts/start-servers.sh` runs (`INTEGRA_TEST_OTELITE_BIN_PATH`).
pub struct OwnOtelite {
    bin: String,
    dir: std::path::PathBuf,
    ports: [u16; 3],
    child: Option<std::process::Child>,
}

impl OwnOtelite {
    /// Starts one on fresh ports and storage and waits until it answers.
    pub fn start(name: &str) -> Self {
        let bin = server_env("INTEGRA_TEST_OTELITE_BIN_PATH");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "integra-own-otelite-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("otelite dir");
        std::fs::create_dir_all(dir.join("config")).expect("otelite dir");
        // Held together until all three are known, so that they differ.
        let sockets: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let ports = [0, 1, 2].map(|i| sockets[i].local_addr().expect("addr").port());
        drop(sockets);
        let mut otelite = OwnOtelite {
            bin,
            dir,
            ports,
            child: None,
        };
        otelite.restart();
        otelite
    }

    /// `http://127.0.0.1:PORT` of its REST API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// Its OTLP/gRPC endpoint.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[1])
    }

    /// Its OTLP/HTTP endpoint.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[2])
    }

    /// The REST client for it.
    pub fn client(&self) -> Otelite {
        Otelite::at(&self.url())
    }

    /// Kills it (SIGKILL: no chance to finish anything).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same ports and storage, and waits up to 30 s until its REST API
    /// and both OTLP ports answer.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("otelite.log"))
            .expect("otelite log");
        let child = Command::new(&self.bin)
            .args(["serve", "--addr", &format!("127.0.0.1:{}", self.ports[0])])
            .arg("--storage-path")
            .arg(self.dir.join("data"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("OTELITE_OTLP_GRPC_PORT", self.ports[1].to_string())
            .env("OTELITE_OTLP_HTTP_PORT", self.ports[2].to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start otelite");
        self.child = Some(child);
        let up = poll(Duration::from_secs(30), || {
            let ok = |url: String| agent().get(&url).call().is_ok();
            (ok(format!("{}/api/health", self.url()))
                && ok(format!("{}/health", self.http_endpoint()))
                && std::net::TcpStream::connect(("127.0.0.1", self.ports[1])).is_ok())
            .then_some(())
        });
        assert!(
            up.is_some(),
            "otelite did not come up: {}",
            std::fs::read_to_string(self.dir.join("otelite.log")).unwrap_or_default()
        );
    }
}

impl Drop for OwnOtelite {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `scenario` process the test talks to line by line: commands on its stdin, answers from its
/// stdout.
pub struct Driven {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    all: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Driven {
    /// Starts `bin scenario` with a clean environment plus `env` (as [`run_scenario`]).
    pub fn start(bin: &str, scenario: &str, env: &[(&str, &str)]) -> Driven {
        use std::io::BufRead;
        let mut cmd = scenario_command(bin, scenario, env);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn scenario");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = std::sync::mpsc::channel();
        let all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = all.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                {
                    let mut all = kept.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        Driven {
            child,
            stdin,
            lines,
            all,
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to scenario");
        stdin.flush().expect("flush to scenario");
    }

    /// The rest of the first line starting with `prefix` that the scenario prints within `timeout`.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(_) => panic!(
                    "no line {prefix:?} within {timeout:?}; output so far:\n{}",
                    self.all.lock().unwrap()
                ),
            }
        }
    }

    /// Closes its stdin (the scenario then shuts down), waits up to 60 s for it to exit, and
    /// returns everything it printed.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends at EOF; give it a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let out = self.all.lock().unwrap().clone();
        eprintln!("--- driven scenario output\n{out}");
        out
    }
}

/// A `workerd serve` process (Cloudflare's Worker runtime, `INTEGRA_TEST_WORKERD`, installed by
/// scripts/install-workerd.sh) running a config written into its own temporary directory. Killed
/// on drop.
pub struct Workerd {
    child: std::process::Child,
    /// The directory holding the config and its embedded files.
    pub dir: std::path::PathBuf,
}

impl Workerd {
    /// Writes `files` (the config as `config.capnp`, and the modules it embeds) into a fresh
    /// directory, starts `workerd serve config.capnp` there and waits until every port in
    /// `ports` accepts connections.
    pub fn start(files: &[(&str, &[u8])], ports: &[u16]) -> Workerd {
        let bin = server_env("INTEGRA_TEST_WORKERD");
        let dir = std::env::temp_dir().join(format!(
            "integra-workerd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("workerd dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write workerd file");
        }
        let child = Command::new(bin)
            .args(["serve", "config.capnp", "--verbose"])
            .current_dir(&dir)
            .env("PWD", &dir)
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn workerd");
        let mut w = Workerd { child, dir };
        for port in ports {
            let up = poll(Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", *port)).ok()
            });
            if up.is_none() {
                let _ = w.child.kill();
                panic!("workerd did not listen on {port} within 30 s");
            }
        }
        w
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An unused TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Compiles a TypeScript Worker to an ES module with esbuild (`INTEGRA_TEST_ESBUILD`, installed by
/// scripts/install-workerd.sh) and returns the JavaScript.
pub fn esbuild_ts(path: &std::path::Path) -> Vec<u8> {
    let bin = server_env("INTEGRA_TEST_ESBUILD");
    let out = Command::new(bin)
        .arg(path)
        .args(["--format=esm", "--target=es2022", "--log-level=warning"])
        .output()
        .expect("run esbuild");
    assert!(
        out.status.success(),
        "esbuild {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Reads one HTTP/1.1 request (headers, then the body by `content-length`) and returns its body;
/// `None` at the end of the connection or on a read error.
fn read_http_request(reader: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut length = 0usize;
    let mut line = String::new();
    let mut got_any = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        got_any = true;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    if !got_any {
        return None;
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}
