//! Shared set-up of the benchmarks for issue 7: the one workload, the baseline stacks, the stacks
//! of integra-observe, a dropping OpenTelemetry exporter, a dropping Sentry transport and the two
//! clocks (CPU time of the calling thread, and wall time).
//!
//! Every stack is built the same way and used through [`Stack::run`], which scopes its subscriber
//! (and, for the naive stack, its Sentry hub) to the calling thread, so the baselines and ours
//! share one process set-up. Nothing here reaches the network on its own: the exporters and the
//! transport drop what they get, and integra-observe points at closed loopback ports unless a
//! benchmark gives [`Stack::ours_with`] another endpoint (`backpressure`: a real receiver, a
//! listener that never answers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use integra_observe::{Config, Guard, InitError, OtlpProtocol, Sampler, SamplerKind};
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing::Dispatch;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

/// A Sentry DSN on a closed loopback port: integra-observe's transport fails to send and counts.
pub const SENTRY_DSN: &str = "http://key@127.0.0.1:9/1";
/// An OTLP endpoint on a closed loopback port.
pub const OTLP_ENDPOINT: &str = "http://127.0.0.1:9";

/// The workload of every `tracing` benchmark: `info_span!("op", user_id = 42)` entered, with one
/// `info!` inside.
#[inline(never)]
pub fn span_workload() {
    let _span = tracing::info_span!("op", user_id = 42).entered();
    tracing::info!("inside");
}

/// The same workload one level down (`debug_span!` and `debug!`), for a subscriber that filters
/// at `info`.
#[inline(never)]
pub fn debug_workload() {
    let _span = tracing::debug_span!("op", user_id = 42).entered();
    tracing::debug!("inside");
}

/// The workload with an `error!` after the `info!`: a Sentry event, in the span. The `info!` keeps
/// the scope's breadcrumbs at their maximum in every stack, so each event carries the same load
/// whatever ran before it.
#[inline(never)]
pub fn error_workload() {
    let _span = tracing::info_span!("op", user_id = 42).entered();
    tracing::info!("inside");
    tracing::error!("operation failed");
}

/// The workload through the OpenTelemetry API directly: `tracer.in_span` with the same attribute
/// and one event.
#[inline(never)]
pub fn otel_workload(tracer: &SdkTracer) {
    tracer.in_span("op", |cx| {
        let span = cx.span();
        span.set_attribute(KeyValue::new("user_id", 42_i64));
        span.add_event("inside", Vec::new());
    });
}

/// A span exporter that drops every batch and counts the spans it was handed, so that what a batch
/// processor lost is `spans produced - spans()`.
#[derive(Debug, Clone, Default)]
pub struct DroppingExporter {
    spans: Arc<AtomicU64>,
}

impl DroppingExporter {
    /// Spans handed to the exporter so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

impl SpanExporter for DroppingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A Sentry transport that drops every envelope and counts them.
#[derive(Debug, Default)]
pub struct DroppingTransport {
    envelopes: AtomicU64,
}

impl DroppingTransport {
    /// Envelopes handed to the transport so far.
    pub fn envelopes(&self) -> u64 {
        self.envelopes.load(Ordering::Relaxed)
    }
}

impl sentry::Transport for DroppingTransport {
    fn send_envelope(&self, envelope: sentry::Envelope) {
        self.envelopes.fetch_add(1, Ordering::Relaxed);
        drop(envelope);
    }
}

/// The upstream OpenTelemetry pipeline of the baselines: the SDK's default batch processor (queue
/// 2048, batches of 512) in front of `exporter`, sampling every span.
pub fn otel_provider(exporter: DroppingExporter) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .build()
}

/// The configuration of integra-observe in the benchmarks: Sentry and OTLP (gRPC) both on, both
/// pointing at closed ports, no console, `info` filter, and the given root sampler (parent-based).
pub fn ours_config(root: SamplerKind) -> Config {
    Config::new()
        .console(false)
        .log_filter("info")
        .sentry_dsn(SENTRY_DSN)
        .otlp_endpoint(OTLP_ENDPOINT)
        .otlp_protocol(OtlpProtocol::Grpc)
        .sampler(Sampler::new(root, true))
        .shutdown_timeout(Duration::from_secs(1))
}

/// One subscriber set-up under test, with whatever keeps its pipeline alive.
pub struct Stack {
    dispatch: Dispatch,
    hub: Option<Arc<sentry::Hub>>,
    provider: Option<SdkTracerProvider>,
    tracer: Option<SdkTracer>,
    exporter: Option<DroppingExporter>,
    transport: Option<Arc<DroppingTransport>>,
    guard: Option<Guard>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("exported_spans", &self.exported_spans())
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl Stack {
    fn with_dispatch(dispatch: Dispatch) -> Self {
        Stack {
            dispatch,
            hub: None,
            provider: None,
            tracer: None,
            exporter: None,
            transport: None,
            guard: None,
        }
    }

    /// (a) No subscriber. Build it after every other stack is dropped: it recomputes tracing's
    /// global maximum level from the live subscribers, which is then `OFF`.
    pub fn none() -> Self {
        tracing::callsite::rebuild_interest_cache();
        Self::with_dispatch(Dispatch::none())
    }

    /// (b) The `tracing-subscriber` registry alone.
    pub fn registry() -> Self {
        Self::with_dispatch(Dispatch::new(tracing_subscriber::registry()))
    }

    /// (c) The registry plus the tracing-opentelemetry layer (its defaults) over [`otel_provider`].
    pub fn otel_layer() -> Self {
        let exporter = DroppingExporter::default();
        let provider = otel_provider(exporter.clone());
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        let mut stack =
            Self::with_dispatch(Dispatch::new(tracing_subscriber::registry().with(layer)));
        stack.provider = Some(provider);
        stack.exporter = Some(exporter);
        stack
    }

    /// (e) The naive stack: (c) plus the sentry-tracing layers as Sentry's migration guide sets
    /// them up (spans at `INFO` and above as transactions, `INFO`/`WARN` events as breadcrumbs,
    /// `ERROR` events as Sentry events), with every trace sampled and a dropping transport.
    pub fn naive() -> Self {
        use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer, SpanLayer};
        let exporter = DroppingExporter::default();
        let provider = otel_provider(exporter.clone());
        let transport = Arc::new(DroppingTransport::default());
        let mut options = sentry::ClientOptions::new().traces_sample_rate(1.0);
        options.dsn = SENTRY_DSN.parse().ok();
        options.transport = Some(Arc::new(transport.clone()));
        let client = Arc::new(sentry::Client::from(sentry::apply_defaults(options)));
        let hub = Arc::new(sentry::Hub::new(Some(client), Arc::default()));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")))
            .with(SpanLayer::new().with_filter(LevelFilter::INFO))
            .with(BreadcrumbLayer::new().with_filter(filter_fn(|m| {
                matches!(*m.level(), tracing::Level::INFO | tracing::Level::WARN)
            })))
            .with(ErrorLayer::new().with_filter(LevelFilter::ERROR));
        let mut stack = Self::with_dispatch(Dispatch::new(subscriber));
        stack.hub = Some(hub);
        stack.provider = Some(provider);
        stack.exporter = Some(exporter);
        stack.transport = Some(transport);
        stack
    }

    /// (f) The OpenTelemetry API directly, over [`otel_provider`]; no `tracing` subscriber.
    pub fn otel_api() -> Self {
        let exporter = DroppingExporter::default();
        let provider = otel_provider(exporter.clone());
        let mut stack = Self::with_dispatch(Dispatch::none());
        stack.tracer = Some(provider.tracer("bench"));
        stack.provider = Some(provider);
        stack.exporter = Some(exporter);
        stack
    }

    /// integra-observe with Sentry and OTLP both on ([`ours_config`]), built with
    /// `integra_observe::try_build` and not installed globally.
    pub fn ours(root: SamplerKind) -> Result<Self, InitError> {
        Self::ours_with(ours_config(root))
    }

    /// integra-observe built from `config` with `integra_observe::try_build` and not installed
    /// globally: [`ours_config`] with another endpoint, or the defaults.
    pub fn ours_with(config: Config) -> Result<Self, InitError> {
        let (dispatch, guard) = integra_observe::try_build(config)?;
        let mut stack = Self::with_dispatch(dispatch);
        stack.guard = Some(guard);
        Ok(stack)
    }

    /// Runs `f` on this thread with this stack's subscriber (and Sentry hub) as the default.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.hub {
            Some(hub) => sentry::Hub::run(hub.clone(), || {
                tracing::dispatcher::with_default(&self.dispatch, f)
            }),
            None => tracing::dispatcher::with_default(&self.dispatch, f),
        }
    }

    /// The tracer of (f).
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.as_ref()
    }

    /// Spans the dropping exporter received so far (baselines with a pipeline only).
    pub fn exported_spans(&self) -> Option<u64> {
        self.exporter.as_ref().map(DroppingExporter::spans)
    }

    /// Envelopes the dropping Sentry transport received (the naive stack only).
    pub fn sentry_envelopes(&self) -> Option<u64> {
        self.transport.as_ref().map(|t| t.envelopes())
    }

    /// integra-observe's guard (its `stats()`), for [`Stack::ours`].
    pub fn guard(&self) -> Option<&Guard> {
        self.guard.as_ref()
    }

    /// Exports what the upstream batch processor still holds and stops it.
    pub fn shutdown_provider(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown_provider();
    }
}

/// Which clock a measurement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what other work on a noisy
    /// machine, and this process's own background threads, do not inflate.
    ThreadCpu,
    /// Elapsed wall time.
    Wall,
}

impl Clock {
    /// Runs `f` `iters` times on this thread and returns the time it took on this clock.
    pub fn measure(self, iters: u64, mut f: impl FnMut()) -> Duration {
        match self {
            Clock::ThreadCpu => {
                let start = ThreadTime::now();
                for _ in 0..iters {
                    f();
                }
                start.elapsed()
            }
            Clock::Wall => {
                let start = Instant::now();
                for _ in 0..iters {
                    f();
                }
                start.elapsed()
            }
        }
    }
}

/// Runs `workload` `iters` times on each of two threads at once, both under `stack`, and returns
/// the time one thread needed for its `iters` runs: the mean of the two threads' CPU times, or the
/// wall time until both finished.
pub fn two_threads(
    stack: &Stack,
    clock: Clock,
    iters: u64,
    workload: &(dyn Fn() + Sync),
) -> Duration {
    let barrier = Barrier::new(2);
    let times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    stack.run(|| {
                        barrier.wait();
                        clock.measure(iters, workload)
                    })
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    match clock {
        Clock::ThreadCpu => times.iter().sum::<Duration>() / times.len().max(1) as u32,
        Clock::Wall => times.into_iter().max().unwrap_or_default(),
    }
}
