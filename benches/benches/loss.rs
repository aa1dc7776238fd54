//! Spans lost at single-thread saturation (issue 7): 1,000,000 spans of the benchmark workload
//! as fast as one thread can make them, through
//!
//! - (c) tracing-opentelemetry over the SDK's default batch processor and a counting, dropping
//!   exporter: lost = produced − what reached the exporter;
//! - (f) the OpenTelemetry API directly, over the same pipeline;
//! - integra-observe with Sentry and OTLP on (closed ports, so nothing is delivered): what its
//!   `Guard::stats()` accounts for, and what it does not, after `Guard::shutdown` (bounded by the
//!   1 s timeout of `ours_config`): the spans its queue still held were retried until then and
//!   are counted `send_failed`.
//!
//! Run with `cargo bench -p integra-observe-benches --bench loss`. Without `--bench` (as under
//! `cargo test`) it makes 10,000 spans instead.

// A benchmark binary: a set-up that fails should stop the run loudly, not be worked around.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use integra_observe::SamplerKind;
use integra_observe_benches::{otel_workload, span_workload, Stack};

struct Row {
    pipeline: &'static str,
    elapsed: Duration,
    reached: String,
    lost: String,
    exposed: String,
}

fn produce(stack: &Stack, n: u64) -> Duration {
    let start = Instant::now();
    match stack.tracer() {
        Some(tracer) => stack.run(|| (0..n).for_each(|_| otel_workload(tracer))),
        None => stack.run(|| (0..n).for_each(|_| span_workload())),
    }
    start.elapsed()
}

fn upstream(pipeline: &'static str, stack: Stack, n: u64) -> Row {
    let elapsed = produce(&stack, n);
    stack.shutdown_provider();
    let exported = stack.exported_spans().unwrap_or(0);
    Row {
        pipeline,
        elapsed,
        reached: exported.to_string(),
        lost: n.saturating_sub(exported).to_string(),
        exposed: "no: one log line at shutdown (`dropped_span_count`), no counter to read".into(),
    }
}

fn ours(n: u64) -> Row {
    let stack = Stack::ours(SamplerKind::AlwaysOn).expect("integra-observe builds");
    let elapsed = produce(&stack, n);
    let guard = stack.guard().expect("ours has a guard");
    // The spans the queue still holds are retried against the closed port until shutdown's
    // deadline (the 1 s of `ours_config`), then counted `send_failed`; the counters are final
    // once `shutdown` returns.
    let start = Instant::now();
    let flushed = guard.shutdown();
    let took = start.elapsed();
    let otlp = guard.stats().get("otlp").unwrap_or_default();
    let accounted = otlp.sent + otlp.dropped();
    Row {
        pipeline: "ours: Sentry + OTLP (closed port), sampled",
        elapsed,
        reached: format!(
            "{} (sent {}, failed to send {} after {} retries)",
            otlp.sent + otlp.dropped_send_failed,
            otlp.sent,
            otlp.dropped_send_failed,
            otlp.retried
        ),
        lost: n.saturating_sub(otlp.sent).to_string(),
        exposed: format!(
            "{} of {} drops counted (`Guard::stats`: queue_full {}, send_failed {}); {} \
             unaccounted after `Guard::shutdown` ({:.2} s, timeout 1 s, flushed: {flushed})",
            otlp.dropped(),
            n.saturating_sub(otlp.sent),
            otlp.dropped_queue_full,
            otlp.dropped_send_failed,
            n.saturating_sub(accounted),
            took.as_secs_f64()
        ),
    }
}

fn main() {
    let n: u64 = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let rows = vec![
        upstream(
            "(c) tracing-opentelemetry + batch + dropping exporter",
            Stack::otel_layer(),
            n,
        ),
        upstream(
            "(f) OpenTelemetry API + batch + dropping exporter",
            Stack::otel_api(),
            n,
        ),
        ours(n),
    ];
    println!("\n## Spans lost at single-thread saturation ({n} spans, one thread)\n");
    println!("| pipeline | spans/s | reached the exporter | lost | drop count exposed |");
    println!("|---|--:|--:|--:|---|");
    for row in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} |",
            row.pipeline,
            n as f64 / row.elapsed.as_secs_f64(),
            row.reached,
            row.lost,
            row.exposed
        );
    }
}
