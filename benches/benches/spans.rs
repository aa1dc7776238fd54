//! What one span costs through integra-observe, next to its baselines, in one process and one run
//! (issue 7). Run with `cargo bench -p integra-observe-benches --bench spans`.
//!
//! Every case runs the same workload (`info_span!("op", user_id = 42)` entered, one `info!`
//! inside) under its own subscriber scoped to the calling thread. Each case is timed twice: the
//! `cpu` group reads the CPU time of the calling thread (immune to other work on a noisy machine
//! and to the pipelines' own background threads), the `wall` group reads wall time. At the end the
//! run prints one markdown table: ns per span and the ratios the targets of issue 7 name.

// A benchmark binary: a set-up that fails should stop the run loudly, not be worked around.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use criterion::Criterion;
use integra_observe::SamplerKind;
use integra_observe_benches::{
    debug_workload, error_workload, otel_workload, span_workload, two_threads, Clock, Stack,
};

const SAMPLE_SIZE: usize = 20;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASUREMENT: Duration = Duration::from_secs(2);

/// Every timing criterion asked for, per benchmark id: `(iterations, time)`. The last
/// `SAMPLE_SIZE` of a benchmark are its samples (criterion warms up first, then samples).
static TIMINGS: Mutex<BTreeMap<String, Vec<(u64, Duration)>>> = Mutex::new(BTreeMap::new());

fn record(id: &str, iters: u64, time: Duration) -> Duration {
    TIMINGS
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push((iters, time));
    time
}

/// Median ns per iteration over the samples of `id`, and every iteration run (warm-up included).
fn estimate(id: &str) -> Option<(f64, u64)> {
    let timings = TIMINGS.lock().unwrap();
    let all = timings.get(id)?;
    let total_iters = all.iter().map(|(n, _)| n).sum();
    let samples = &all[all.len().saturating_sub(SAMPLE_SIZE)..];
    let mut per_iter: Vec<f64> = samples
        .iter()
        .map(|(n, t)| t.as_nanos() as f64 / (*n).max(1) as f64)
        .collect();
    per_iter.sort_by(f64::total_cmp);
    let mid = per_iter.len() / 2;
    let median = if per_iter.len().is_multiple_of(2) {
        (per_iter[mid - 1] + per_iter[mid]) / 2.0
    } else {
        per_iter[mid]
    };
    Some((median, total_iters))
}

#[derive(Clone, Copy)]
enum Run {
    /// `tracing` workload on the calling thread.
    Tracing(fn()),
    /// [`otel_workload`] with the stack's tracer.
    OtelApi,
    /// `tracing` workload on two threads at once.
    TwoThreads(fn()),
    /// [`otel_workload`] on two threads at once.
    OtelApiTwoThreads,
}

struct Case {
    name: &'static str,
    label: &'static str,
    build: fn() -> Stack,
    run: Run,
}

fn ours(root: SamplerKind) -> Stack {
    Stack::ours(root).expect("integra-observe builds with Sentry and OTLP on closed ports")
}

fn cases() -> Vec<Case> {
    let case = |name, label, build, run| Case {
        name,
        label,
        build,
        run,
    };
    vec![
        case(
            "a-no-subscriber",
            "(a) no subscriber",
            Stack::none,
            Run::Tracing(span_workload),
        ),
        case(
            "b-registry",
            "(b) registry only",
            Stack::registry,
            Run::Tracing(span_workload),
        ),
        case(
            "c-otel-layer",
            "(c) registry + tracing-opentelemetry, batch, dropping exporter",
            Stack::otel_layer,
            Run::Tracing(span_workload),
        ),
        case(
            "e-naive",
            "(e) c + sentry-tracing span/breadcrumb/error layers, dropping transport",
            Stack::naive,
            Run::Tracing(span_workload),
        ),
        case(
            "f-otel-api",
            "(f) OpenTelemetry API directly (`tracer.in_span`)",
            Stack::otel_api,
            Run::OtelApi,
        ),
        case(
            "ours-sampled",
            "ours: Sentry + OTLP, sampled (always_on)",
            || ours(SamplerKind::AlwaysOn),
            Run::Tracing(span_workload),
        ),
        case(
            "ours-always-off",
            "ours: Sentry + OTLP, unsampled (always_off)",
            || ours(SamplerKind::AlwaysOff),
            Run::Tracing(span_workload),
        ),
        case(
            "ours-ratio-0.1",
            "ours: Sentry + OTLP, ratio 0.1",
            || ours(SamplerKind::TraceIdRatio(0.1)),
            Run::Tracing(span_workload),
        ),
        case(
            "ours-filtered",
            "ours: span filtered out by level (`debug_span!` under `info`)",
            || ours(SamplerKind::AlwaysOn),
            Run::Tracing(debug_workload),
        ),
        case(
            "ours-error-event",
            "ours: the workload plus an `error!` (a Sentry event)",
            || ours(SamplerKind::AlwaysOn),
            Run::Tracing(error_workload),
        ),
        case(
            "e-naive-error-event",
            "(e) naive: the workload plus an `error!` (a Sentry event)",
            Stack::naive,
            Run::Tracing(error_workload),
        ),
        case(
            "c-otel-layer-2-threads",
            "(c) on 2 threads at once (control: per span, per thread)",
            Stack::otel_layer,
            Run::TwoThreads(span_workload),
        ),
        case(
            "f-otel-api-2-threads",
            "(f) on 2 threads at once (control: per span, per thread)",
            Stack::otel_api,
            Run::OtelApiTwoThreads,
        ),
        case(
            "ours-sampled-2-threads",
            "ours: sampled, 2 threads at once (per span, per thread)",
            || ours(SamplerKind::AlwaysOn),
            Run::TwoThreads(span_workload),
        ),
    ]
}

fn group_name(clock: Clock) -> &'static str {
    match clock {
        Clock::ThreadCpu => "cpu",
        Clock::Wall => "wall",
    }
}

/// What the pipeline behind a case received, read after its benchmark: spans produced vs spans
/// that reached the exporter, or integra-observe's own counters.
fn pipeline_note(stack: &Stack, produced: u64) -> Option<String> {
    if let Some(guard) = stack.guard() {
        // Read before shutdown: shutting down hands the backends (and their counters) over.
        let flushed = guard.flush(Duration::from_secs(1));
        let stats = guard.stats();
        let otlp = stats.get("otlp").map(|s| s.to_string()).unwrap_or_default();
        let sentry = stats
            .get("sentry")
            .map(|s| s.to_string())
            .unwrap_or_default();
        return Some(format!(
            "{produced} spans produced; otlp: {otlp}; sentry: {sentry}{}",
            if flushed {
                ""
            } else {
                " (flush timed out after 1 s)"
            }
        ));
    }
    stack.shutdown_provider();
    let exported = stack.exported_spans()?;
    Some(format!(
        "{produced} spans produced, {exported} reached the exporter ({} dropped at the queue{})",
        produced.saturating_sub(exported),
        stack
            .sentry_envelopes()
            .map(|n| format!("; {n} Sentry envelopes"))
            .unwrap_or_default()
    ))
}

fn bench_all(c: &mut Criterion, notes: &mut Vec<(String, String)>) {
    for clock in [Clock::ThreadCpu, Clock::Wall] {
        let group_id = group_name(clock);
        let mut group = c.benchmark_group(group_id);
        for case in cases() {
            let id = format!("{group_id}/{}", case.name);
            // One stack at a time: tracing recomputes its global interest from the live
            // subscribers, and (a) must see none.
            let stack = (case.build)();
            group.bench_function(case.name, |b| {
                b.iter_custom(|iters| {
                    let time = match case.run {
                        Run::Tracing(workload) => stack.run(|| clock.measure(iters, workload)),
                        Run::OtelApi => {
                            let tracer = stack.tracer().expect("(f) has a tracer");
                            stack.run(|| clock.measure(iters, || otel_workload(tracer)))
                        }
                        Run::TwoThreads(workload) => two_threads(&stack, clock, iters, &workload),
                        Run::OtelApiTwoThreads => {
                            let tracer = stack.tracer().expect("(f) has a tracer");
                            two_threads(&stack, clock, iters, &|| otel_workload(tracer))
                        }
                    };
                    record(&id, iters, time)
                })
            });
            let produced = estimate(&id).map_or(0, |(_, n)| n)
                * if matches!(case.run, Run::TwoThreads(_) | Run::OtelApiTwoThreads) {
                    2
                } else {
                    1
                };
            if clock == Clock::ThreadCpu {
                if let Some(note) = pipeline_note(&stack, produced) {
                    notes.push((case.name.to_owned(), note));
                }
            }
            drop(stack);
        }
        group.finish();
    }
}

fn fmt_ns(v: Option<f64>) -> String {
    match v {
        Some(ns) if ns < 10.0 => format!("{ns:.2}"),
        Some(ns) if ns < 100.0 => format!("{ns:.1}"),
        Some(ns) => format!("{ns:.0}"),
        None => "—".into(),
    }
}

fn print_table(notes: &[(String, String)]) {
    let ns = |clock: Clock, name: &str| {
        estimate(&format!("{}/{name}", group_name(clock))).map(|(ns, _)| ns)
    };
    println!("\n## Results\n");
    println!("| case | CPU ns/span | wall ns/span |");
    println!("|---|--:|--:|");
    for case in cases() {
        println!(
            "| {} | {} | {} |",
            case.label,
            fmt_ns(ns(Clock::ThreadCpu, case.name)),
            fmt_ns(ns(Clock::Wall, case.name))
        );
    }

    // (ratio name, numerator, denominator, bound, whether the bound is an upper one)
    let targets: [(&str, &str, &str, Option<f64>, bool); 10] = [
        (
            "ours sampled / (f)",
            "ours-sampled",
            "f-otel-api",
            Some(1.5),
            true,
        ),
        (
            "(e) / ours sampled",
            "e-naive",
            "ours-sampled",
            Some(6.0),
            false,
        ),
        (
            "ours always_off / (b)",
            "ours-always-off",
            "b-registry",
            Some(2.0),
            true,
        ),
        (
            "ours ratio 0.1 / (b)",
            "ours-ratio-0.1",
            "b-registry",
            Some(2.0),
            true,
        ),
        (
            "ours filtered by level / (a)",
            "ours-filtered",
            "a-no-subscriber",
            Some(2.0),
            true,
        ),
        (
            "ours 2 threads / ours 1 thread (per span)",
            "ours-sampled-2-threads",
            "ours-sampled",
            Some(1.1),
            true,
        ),
        (
            "control: (c) 2 threads / (c) 1 thread",
            "c-otel-layer-2-threads",
            "c-otel-layer",
            None,
            true,
        ),
        (
            "control: (f) 2 threads / (f) 1 thread",
            "f-otel-api-2-threads",
            "f-otel-api",
            None,
            true,
        ),
        (
            "ours `error!` event / ours sampled span",
            "ours-error-event",
            "ours-sampled",
            None,
            true,
        ),
        (
            "ours `error!` event / (e) `error!` event",
            "ours-error-event",
            "e-naive-error-event",
            None,
            true,
        ),
    ];
    println!("\n| ratio | CPU | wall | target (on CPU) | met |");
    println!("|---|--:|--:|---|---|");
    for (label, num, den, bound, upper) in targets {
        let ratio = |clock| Some(ns(clock, num)? / ns(clock, den)?);
        let cpu = ratio(Clock::ThreadCpu);
        let wall = ratio(Clock::Wall);
        let (target, met) = match (bound, cpu) {
            (Some(b), Some(r)) => {
                let ok = if upper { r <= b } else { r >= b };
                (
                    format!("{} {b}×", if upper { "≤" } else { "≥" }),
                    if ok { "met" } else { "**not met**" }.to_owned(),
                )
            }
            (Some(b), None) => (format!("{b}×"), "—".into()),
            (None, _) => ("(no target)".into(), "".into()),
        };
        let fmt = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}×"));
        println!(
            "| {label} | {} | {} | {target} | {met} |",
            fmt(cpu),
            fmt(wall)
        );
    }

    println!("\n| case (cpu group) | pipeline after the benchmark |");
    println!("|---|---|");
    for (name, note) in notes {
        println!("| {name} | {note} |");
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .configure_from_args();
    let mut notes = Vec::new();
    bench_all(&mut criterion, &mut notes);
    criterion.final_summary();
    // `cargo bench` passes `--bench`; without it (cargo test) criterion only checks each case once.
    if std::env::args().any(|a| a == "--bench") {
        print_table(&notes);
    }
}
