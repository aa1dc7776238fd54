//! A local trace view with no servers (feature `console`): when a trace's root span ends, its
//! waterfall is printed as a tree with durations, the critical path and the bottleneck flagged,
//! failed spans marked with their error and Sentry event id; on shutdown, a dependency map of
//! caller → callee with call counts, error rates and p50/p99 latency.
//!
//! It is fed by the same finished spans that go to Jaeger (a [`SpanSink`] on the OpenTelemetry
//! pipeline), never by a second tracing path, and it is not compiled at all without the feature.
//! Spans of other processes can be added with [`TraceView::add`] (see `examples/upload-flow`,
//! whose services forward theirs as JSON lines, [`to_json_line`]). Colour only on a terminal.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integra_observe_core::{FinishedSpan, SpanEvent, SpanId, SpanKind, SpanSink, TraceId};

/// Assembles finished spans into traces and renders them.
#[derive(Debug, Default)]
pub struct TraceView {
    traces: HashMap<TraceId, Vec<FinishedSpan>>,
    edges: BTreeMap<(String, String), Edge>,
    color: bool,
}

#[derive(Debug, Default)]
struct Edge {
    calls: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

/// Traces kept while waiting for their root; the oldest is dropped past this.
const MAX_PENDING_TRACES: usize = 10_000;

impl TraceView {
    /// An empty view; `color` adds ANSI colours (use it only on a terminal).
    pub fn new(color: bool) -> Self {
        TraceView {
            color,
            ..Self::default()
        }
    }

    /// Adds a finished span. When it is the root of its trace (no parent at all), the trace is
    /// complete: it is rendered, returned, and forgotten.
    pub fn add(&mut self, span: FinishedSpan) -> Option<String> {
        let trace_id = span.trace_id;
        let is_root = span.parent_span_id.is_none();
        if self.traces.len() >= MAX_PENDING_TRACES && !self.traces.contains_key(&trace_id) {
            if let Some(old) = self.traces.keys().next().copied() {
                self.traces.remove(&old);
            }
        }
        self.traces.entry(trace_id).or_default().push(span);
        if !is_root {
            return None;
        }
        let spans = self.traces.remove(&trace_id)?;
        self.record_edges(&spans);
        Some(self.render(&spans))
    }

    /// Caller → callee edges: a server span whose parent is a client span of another service.
    fn record_edges(&mut self, spans: &[FinishedSpan]) {
        let by_id: HashMap<SpanId, &FinishedSpan> = spans.iter().map(|s| (s.span_id, s)).collect();
        for server in spans.iter().filter(|s| s.kind == SpanKind::Server) {
            let Some(client) = server.parent_span_id.and_then(|p| by_id.get(&p)) else {
                continue;
            };
            if client.service_name == server.service_name {
                continue;
            }
            let edge = self
                .edges
                .entry((client.service_name.clone(), server.service_name.clone()))
                .or_default();
            edge.calls += 1;
            edge.errors += u64::from(server.error.is_some());
            edge.latencies.push(server.duration());
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// The waterfall of one complete trace.
    pub fn render(&self, spans: &[FinishedSpan]) -> String {
        let mut children: HashMap<Option<SpanId>, Vec<&FinishedSpan>> = HashMap::new();
        let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
        for s in spans {
            // A span whose parent is missing hangs under the root rather than vanishing.
            let parent = s.parent_span_id.filter(|p| ids.contains(p));
            children.entry(parent).or_default().push(s);
        }
        for list in children.values_mut() {
            list.sort_by_key(|s| s.start);
        }
        let roots = children.get(&None).cloned().unwrap_or_default();
        let Some(root) = roots
            .iter()
            .copied()
            .find(|s| s.parent_span_id.is_none())
            .or(roots.first().copied())
        else {
            return String::new();
        };
        let total = root.duration();
        let mut critical = Vec::new();
        critical_path(root, &children, &mut critical);
        // Bottleneck: the span on the critical path with the most time of its own.
        let self_time = |s: &FinishedSpan| {
            let kids: Duration = children
                .get(&Some(s.span_id))
                .map_or(Duration::ZERO, |c| c.iter().map(|k| k.duration()).sum());
            s.duration().saturating_sub(kids)
        };
        let bottleneck = spans
            .iter()
            .filter(|s| critical.contains(&s.span_id) && s.span_id != root.span_id)
            .max_by_key(|s| self_time(s))
            .map(|s| s.span_id);

        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}  {}  {}",
            self.paint("1", &format!("trace {}", root.trace_id)),
            display_name(root),
            fmt_duration(total)
        );
        let width = spans
            .iter()
            .map(|s| s.service_name.len())
            .max()
            .unwrap_or(0);
        let ctx = Render {
            children: &children,
            critical: &critical,
            bottleneck,
            total,
            width,
        };
        let top = children
            .get(&Some(root.span_id))
            .cloned()
            .unwrap_or_default();
        self.render_line(&mut out, root, "", "", &ctx);
        for (i, child) in top.iter().enumerate() {
            let last = i + 1 == top.len();
            self.render_tree(&mut out, child, "", last, &ctx);
        }
        out
    }

    fn render_tree(
        &self,
        out: &mut String,
        span: &FinishedSpan,
        prefix: &str,
        last: bool,
        ctx: &Render<'_>,
    ) {
        let branch = if last { "└─ " } else { "├─ " };
        self.render_line(out, span, prefix, branch, ctx);
        let next_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        let kids = ctx
            .children
            .get(&Some(span.span_id))
            .cloned()
            .unwrap_or_default();
        for (i, child) in kids.iter().enumerate() {
            self.render_tree(out, child, &next_prefix, i + 1 == kids.len(), ctx);
        }
    }

    fn render_line(
        &self,
        out: &mut String,
        span: &FinishedSpan,
        prefix: &str,
        branch: &str,
        ctx: &Render<'_>,
    ) {
        let on_path = ctx.critical.contains(&span.span_id);
        let marker = if on_path { "●" } else { " " };
        let label = format!(
            "{prefix}{branch}{:<w$}  {}",
            span.service_name,
            display_name(span),
            w = ctx.width
        );
        let mut line = format!("{marker} {label:<64} {:>9}", fmt_duration(span.duration()));
        if Some(span.span_id) == ctx.bottleneck {
            let share = if ctx.total.is_zero() {
                0.0
            } else {
                span.duration().as_secs_f64() / ctx.total.as_secs_f64() * 100.0
            };
            line.push_str(&self.paint("33", &format!("  ⚠ bottleneck ({share:.0}% of trace)")));
        }
        if let Some(err) = &span.error {
            let event = span
                .attribute("sentry.event_id")
                .map(|e| format!(" (Sentry event {e})"))
                .unwrap_or_default();
            let msg = error_message(span, err);
            line.push_str(&self.paint("31", &format!("  ✗ {msg}{event}")));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }

    /// Caller → callee, with call counts, error rates and p50/p99 latency of the callee's server
    /// spans, over every trace seen.
    pub fn dependency_map(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}",
            self.paint("1", "dependency map (caller → callee)")
        );
        let _ = writeln!(
            out,
            "{:<34} {:>6} {:>8} {:>9} {:>9}",
            "", "calls", "errors", "p50", "p99"
        );
        for ((caller, callee), edge) in &self.edges {
            let mut lat = edge.latencies.clone();
            lat.sort();
            let rate = edge.errors as f64 / edge.calls.max(1) as f64 * 100.0;
            let _ = writeln!(
                out,
                "{:<34} {:>6} {:>7.0}% {:>9} {:>9}",
                format!("{caller} → {callee}"),
                edge.calls,
                rate,
                fmt_duration(percentile(&lat, 0.50)),
                fmt_duration(percentile(&lat, 0.99)),
            );
        }
        out
    }
}

struct Render<'a> {
    children: &'a HashMap<Option<SpanId>, Vec<&'a FinishedSpan>>,
    critical: &'a [SpanId],
    bottleneck: Option<SpanId>,
    total: Duration,
    width: usize,
}

/// The critical path below `span`: the child that ends last blocks it, then the child that ended
/// last before that one started, and so on; each of them recursively.
fn critical_path(
    span: &FinishedSpan,
    children: &HashMap<Option<SpanId>, Vec<&FinishedSpan>>,
    out: &mut Vec<SpanId>,
) {
    out.push(span.span_id);
    let Some(kids) = children.get(&Some(span.span_id)) else {
        return;
    };
    let mut horizon = span.end;
    loop {
        let next = kids
            .iter()
            .filter(|k| k.end <= horizon && !out.contains(&k.span_id))
            .max_by_key(|k| k.end);
        let Some(next) = next else { break };
        critical_path(next, children, out);
        horizon = next.start;
    }
}

fn display_name(span: &FinishedSpan) -> String {
    span.name.clone()
}

/// The best description of a failed span: its status message, an exception, the `ERROR` event
/// raised in it, or its HTTP status.
fn error_message(span: &FinishedSpan, status_message: &str) -> String {
    if !status_message.is_empty() {
        return status_message.to_owned();
    }
    let attr = |e: &SpanEvent, key: &str| {
        e.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    if let Some(m) = span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .and_then(|e| attr(e, "exception.message"))
    {
        return m;
    }
    if let Some(e) = span
        .events
        .iter()
        .rev()
        .find(|e| attr(e, "level").is_some_and(|l| l == "ERROR"))
    {
        return e.name.clone();
    }
    match span.attribute("http.response.status_code") {
        Some(code) => format!("HTTP {code}"),
        None => "error".to_owned(),
    }
}

/// Nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// Where the console sink sends what it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Render waterfalls (stderr) and the dependency map at shutdown.
    Tree,
    /// Print every finished span as a `INTEGRA-SPAN {json}` line on stdout, for a parent process
    /// that assembles the traces of several services.
    Forward,
}

/// The sink on the OpenTelemetry pipeline.
pub(crate) struct ConsoleSink {
    mode: Mode,
    view: Mutex<TraceView>,
}

impl ConsoleSink {
    pub(crate) fn new(mode: Mode) -> Self {
        let color = std::io::IsTerminal::is_terminal(&std::io::stderr());
        ConsoleSink {
            mode,
            view: Mutex::new(TraceView::new(color)),
        }
    }
}

impl SpanSink for ConsoleSink {
    fn on_end(&self, span: &FinishedSpan) {
        match self.mode {
            Mode::Forward => {
                let line = format!("{FORWARD_PREFIX}{}\n", to_json_line(span));
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            Mode::Tree => {
                let rendered = self
                    .view
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(span.clone());
                if let Some(text) = rendered {
                    let _ = std::io::stderr()
                        .lock()
                        .write_all(format!("\n{text}").as_bytes());
                }
            }
        }
    }

    fn shutdown(&self) {
        if self.mode == Mode::Tree {
            let map = self
                .view
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dependency_map();
            let _ = std::io::stderr()
                .lock()
                .write_all(format!("\n{map}").as_bytes());
        }
    }
}

/// The prefix of a forwarded span line.
pub const FORWARD_PREFIX: &str = "INTEGRA-SPAN ";

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A finished span as one JSON line (for forwarding between processes).
pub fn to_json_line(span: &FinishedSpan) -> String {
    serde_json::json!({
        "trace_id": span.trace_id.to_string(),
        "span_id": span.span_id.to_string(),
        "parent_span_id": span.parent_span_id.map(|p| p.to_string()),
        "parent_is_remote": span.parent_is_remote,
        "name": span.name,
        "kind": span.kind.as_str(),
        "start": nanos(span.start),
        "end": nanos(span.end),
        "attributes": span.attributes,
        "events": span.events.iter().map(|e| serde_json::json!({"name": e.name, "time": nanos(e.time), "attributes": e.attributes})).collect::<Vec<_>>(),
        "error": span.error,
        "service": span.service_name,
    })
    .to_string()
}

/// Parses a line written by [`to_json_line`] (with or without the forwarding prefix).
pub fn from_json_line(line: &str) -> Option<FinishedSpan> {
    let v: serde_json::Value =
        serde_json::from_str(line.strip_prefix(FORWARD_PREFIX).unwrap_or(line)).ok()?;
    let time = |n: &serde_json::Value| UNIX_EPOCH + Duration::from_nanos(n.as_u64().unwrap_or(0));
    let pairs = |a: &serde_json::Value| -> Vec<(String, String)> {
        a.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.get(0)?.as_str()?.to_owned(),
                    p.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let kind = match v["kind"].as_str()? {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => SpanKind::Internal,
    };
    let mut span = FinishedSpan::new(
        TraceId::from_hex(v["trace_id"].as_str()?)?,
        SpanId::from_hex(v["span_id"].as_str()?)?,
        v["name"].as_str()?.to_owned(),
        kind,
        time(&v["start"]),
        time(&v["end"]),
    );
    span.parent_span_id = v["parent_span_id"].as_str().and_then(SpanId::from_hex);
    span.parent_is_remote = v["parent_is_remote"].as_bool().unwrap_or(false);
    span.attributes = pairs(&v["attributes"]);
    span.events = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(SpanEvent::new(
                e["name"].as_str()?.to_owned(),
                time(&e["time"]),
                pairs(&e["attributes"]),
            ))
        })
        .collect();
    span.error = v["error"].as_str().map(str::to_owned);
    span.service_name = v["service"].as_str().unwrap_or_default().to_owned();
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        id: u8,
        parent: Option<u8>,
        service: &str,
        name: &str,
        start_ms: u64,
        end_ms: u64,
        kind: SpanKind,
    ) -> FinishedSpan {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut s = FinishedSpan::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([id; 8]),
            name.into(),
            kind,
            t0 + Duration::from_millis(start_ms),
            t0 + Duration::from_millis(end_ms),
        );
        s.parent_span_id = parent.map(|p| SpanId::from_bytes([p; 8]));
        s.service_name = service.into();
        s
    }

    #[test]
    fn waterfall_marks_bottleneck_and_errors_and_map_counts_edges() {
        let mut view = TraceView::new(false);
        let mut failed = span(
            5,
            Some(4),
            "blockchain",
            "register_transaction",
            300,
            5100,
            SpanKind::Server,
        );
        failed.error = Some("node unavailable".into());
        failed
            .attributes
            .push(("sentry.event_id".into(), "abc123".into()));
        let spans = vec![
            span(
                2,
                Some(1),
                "trust-platform",
                "call auth",
                10,
                130,
                SpanKind::Client,
            ),
            span(
                3,
                Some(2),
                "auth-worker",
                "verify_user",
                12,
                128,
                SpanKind::Server,
            ),
            span(
                4,
                Some(1),
                "trust-platform",
                "call chain",
                290,
                5110,
                SpanKind::Client,
            ),
            failed,
        ];
        for s in spans {
            assert!(view.add(s).is_none(), "not complete before the root ends");
        }
        let out = view
            .add(span(
                1,
                None,
                "trust-platform",
                "POST /api/documents",
                0,
                5210,
                SpanKind::Server,
            ))
            .expect("rendered");
        assert!(
            out.starts_with("trace 07070707070707070707070707070707  POST /api/documents  5.21 s"),
            "{out}"
        );
        let bottleneck = out.lines().find(|l| l.contains("bottleneck")).expect(&out);
        assert!(
            bottleneck.contains("register_transaction") && bottleneck.contains("(92% of trace)"),
            "{out}"
        );
        assert!(
            out.contains("✗ node unavailable (Sentry event abc123)"),
            "{out}"
        );
        assert!(out.contains("└─ "), "{out}");
        let map = view.dependency_map();
        let line = map
            .lines()
            .find(|l| l.contains("trust-platform → blockchain"))
            .expect(&map);
        assert!(line.contains("100%"), "{map}");
        assert!(
            map.lines()
                .any(|l| l.contains("trust-platform → auth-worker") && l.contains(" 0%")),
            "{map}"
        );
    }

    #[test]
    fn json_lines_round_trip() {
        let mut s = span(9, Some(8), "svc", "op", 1, 2, SpanKind::Client);
        s.attributes.push(("k".into(), "v".into()));
        s.error = Some("bad".into());
        s.events.push(SpanEvent::new(
            "exception".into(),
            s.start,
            vec![("exception.message".into(), "bad".into())],
        ));
        assert_eq!(
            from_json_line(&format!("{FORWARD_PREFIX}{}", to_json_line(&s))),
            Some(s)
        );
        assert_eq!(from_json_line("not json"), None);
    }

    #[test]
    fn percentiles() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&l, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&l, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
