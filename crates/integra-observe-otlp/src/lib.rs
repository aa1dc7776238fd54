#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod http_client;
mod recorder;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integra_observe_core::{
    ActiveSpan, Counters, FinishedSpan, InitError, OtlpProtocol, OtlpSettings, ServiceInfo,
    SpanEvent, SpanId, SpanKind, SpanSink, Stats, TraceId,
};
use opentelemetry::trace::Status;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The versions this crate is built on, written down because they must move together.
pub const STACK: &str = "opentelemetry 0.33, opentelemetry_sdk 0.33, opentelemetry-otlp 0.33";

/// Targets of the export stack itself: their spans and events are never exported, or an
/// export would trace itself.
pub const EXPORT_STACK_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "reqwest",
    "ureq",
    "rustls",
    "opentelemetry",
];

/// A running OTLP pipeline: the span recorder's processors (the export queue, the sinks), and the
/// runtime the gRPC exporter needs.
pub struct OtlpBackend {
    shared: Arc<recorder::Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for OtlpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpBackend")
            .field("stats", &self.stats())
            .finish()
    }
}

/// What the OpenTelemetry pipeline is made of.
#[derive(Clone)]
#[non_exhaustive]
pub struct Pipeline<'a> {
    /// The OTLP exporter's settings; `None` builds a pipeline without export, which still owns
    /// span identity and feeds the sinks (e.g. Sentry performance without Jaeger).
    pub exporter: Option<&'a OtlpSettings>,
    /// The sampler.
    pub sampler: integra_observe_core::Sampler,
    /// Destinations that receive every finished, sampled span.
    pub sinks: Vec<Arc<dyn SpanSink>>,
    /// Extra secret keys, redacted before any span leaves the pipeline (see
    /// [`integra_observe_core::Redactor`]).
    pub redact_keys: Vec<String>,
    /// Span size limits; `None` keeps the SDK's.
    pub limits: Option<integra_observe_core::Limits>,
}

impl<'a> Pipeline<'a> {
    /// A pipeline exporting with `exporter` (if any), sampling with `sampler`.
    pub fn new(exporter: Option<&'a OtlpSettings>, sampler: integra_observe_core::Sampler) -> Self {
        Pipeline {
            exporter,
            sampler,
            sinks: Vec::new(),
            redact_keys: Vec::new(),
            limits: None,
        }
    }

    /// Adds extra secret keys to redact.
    pub fn with_redact_keys(mut self, keys: Vec<String>) -> Self {
        self.redact_keys = keys;
        self
    }

    /// Sets the span size limits.
    pub fn with_limits(mut self, limits: integra_observe_core::Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Adds a sink.
    pub fn with_sink(mut self, sink: Arc<dyn SpanSink>) -> Self {
        self.sinks.push(sink);
        self
    }
}

/// Starts the OpenTelemetry pipeline.
///
/// The exporter runs on a small Tokio runtime of its own (one worker thread), so a plain
/// `fn main` works and a `#[tokio::main]` service is not disturbed: nothing is spawned on the
/// caller's runtime, and the SDK's runtime is shut down in the background, never dropped inside
/// async code.
pub fn init(pipeline: Pipeline<'_>, service: &ServiceInfo) -> Result<OtlpBackend, InitError> {
    let backend_err = |message: String| InitError::Backend {
        backend: "otlp",
        message,
    };
    let counters = Arc::new(Counters::default());
    let mut processors: Vec<Box<dyn SpanProcessor>> = Vec::new();
    let mut redactor = integra_observe_core::Redactor::new(pipeline.redact_keys.clone());
    if let Some(limits) = pipeline.limits {
        redactor = redactor.with_max_value_len(limits.value_length);
    }
    let mut runtime = None;
    if let Some(settings) = pipeline.exporter {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("integra-otlp")
            .enable_all()
            .build()
            .map_err(|e| backend_err(format!("could not start its runtime: {e}")))?;
        // Built on a plain thread inside our runtime: tonic spawns its connection task on the
        // current runtime, and reqwest's blocking client must not be built inside async code.
        let handle = rt.handle().clone();
        let exporter = std::thread::scope(|s| {
            s.spawn(|| {
                let _enter = handle.enter();
                build_exporter(settings)
            })
            .join()
        })
        .map_err(|_| backend_err("building the exporter panicked".into()))??;
        // Our own queue in front of the exporter: it counts every span it drops, retries failed
        // exports, and runs the exporter in this runtime's context (see `batch`).
        let exporter = RedactingExporter {
            inner: exporter,
            redactor: redactor.clone(),
        };
        let mut processor = batch::BatchProcessor::new(
            exporter,
            batch::Options::from_settings(settings),
            Some(handle),
            counters.clone(),
        )
        .map_err(|e| backend_err(format!("could not start its export thread: {e}")))?;
        processor.set_resource(&resource(service));
        processors.push(Box::new(processor));
        runtime = Some(rt);
    }
    for sink in pipeline.sinks {
        processors.push(Box::new(SinkProcessor {
            sink,
            service: service.name.clone(),
            redactor: redactor.clone(),
        }));
    }
    let shared = recorder::Shared {
        processors,
        sampler: pipeline.sampler,
        limits: pipeline.limits,
        scope: opentelemetry::InstrumentationScope::builder("integra-observe").build(),
    };
    Ok(OtlpBackend {
        shared: Arc::new(shared),
        runtime: Mutex::new(runtime),
        counters,
    })
}

fn build_exporter(settings: &OtlpSettings) -> Result<opentelemetry_otlp::SpanExporter, InitError> {
    let built = match settings.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic_metadata();
            for (k, v) in &settings.headers {
                let key = k.to_ascii_lowercase();
                match (key.parse::<MetadataKey>(), v.parse::<MetadataValue>()) {
                    (Ok(key), Ok(value)) => {
                        metadata.insert(key, value);
                    }
                    _ => {
                        return Err(InitError::invalid(
                            integra_observe_core::Source::Env("OTEL_EXPORTER_OTLP_HEADERS"),
                            integra_observe_core::redact_secret_value(k),
                            "header names and values that are valid in HTTP/2 metadata",
                        ))
                    }
                }
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(export_timeout(settings))
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let (protocol, encoding) = if settings.protocol == OtlpProtocol::HttpJson {
                (Protocol::HttpJson, http_client::Encoding::Json)
            } else {
                (Protocol::HttpBinary, http_client::Encoding::Protobuf)
            };
            // Our client reads partial success and Retry-After for the export queue; the
            // exporter's own retries are off, so every retry is the queue's (counted, with
            // Retry-After honoured).
            let client = http_client::ObservingClient::new(export_timeout(settings), encoding)
                .map_err(|message| InitError::Backend {
                    backend: "otlp",
                    message,
                })?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
                .with_protocol(protocol)
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(export_timeout(settings))
                .with_headers(settings.headers.iter().cloned().collect())
                .build()
        }
        #[allow(unreachable_patterns)] // OtlpProtocol is non_exhaustive
        _ => {
            return Err(InitError::Backend {
                backend: "otlp",
                message: "unsupported protocol".into(),
            })
        }
    };
    built.map_err(|e| InitError::Backend {
        backend: "otlp",
        message: format!("the exporter could not be built: {e}"),
    })
}

type MetadataKey = tonic::metadata::MetadataKey<tonic::metadata::Ascii>;
type MetadataValue = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

fn tonic_metadata() -> tonic::metadata::MetadataMap {
    tonic::metadata::MetadataMap::new()
}

/// One request may take the OTLP timeout, and never longer than a whole batch export may.
fn export_timeout(settings: &OtlpSettings) -> Duration {
    settings.timeout.min(settings.batch.export_timeout)
}

/// service.*, deployment.environment.name, telemetry.sdk.*, host and process attributes, plus
/// every `OTEL_RESOURCE_ATTRIBUTES` entry.
fn resource(service: &ServiceInfo) -> Resource {
    let mut attrs: Vec<KeyValue> = service
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    if let Some(v) = &service.version {
        attrs.push(KeyValue::new("service.version", v.clone()));
    }
    attrs.push(KeyValue::new(
        "deployment.environment.name",
        service.environment.clone(),
    ));
    if let Some(host) = host_name() {
        attrs.push(KeyValue::new("host.name", host));
    }
    attrs.push(KeyValue::new("process.pid", i64::from(std::process::id())));
    if let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        attrs.push(KeyValue::new("process.executable.name", exe));
    }
    attrs.push(KeyValue::new("process.runtime.name", "rust"));
    Resource::builder_empty()
        .with_detector(Box::new(
            opentelemetry_sdk::resource::TelemetryResourceDetector,
        ))
        .with_attributes(attrs)
        .with_service_name(service.name.clone())
        .build()
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

impl OtlpBackend {
    /// The `tracing` layer that records spans of this pipeline. It keeps the ids of the entered
    /// span for this thread (on every poll of an instrumented future too), which is what
    /// [`active_span`] reads.
    ///
    /// Spans and events of the export stack's own crates ([`EXPORT_STACK_TARGETS`]) are not
    /// recorded; the filter is decided once per callsite.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_default(tracing::Level::TRACE)
            .with_targets(
                EXPORT_STACK_TARGETS
                    .iter()
                    .map(|t| (*t, tracing_subscriber::filter::LevelFilter::OFF)),
            );
        recorder::RecorderLayer {
            shared: self.shared.clone(),
        }
        .with_filter(filter)
    }

    /// Exports what is queued, waiting at most `timeout`. `false` if time ran out or it failed.
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = self.shared.clone();
        run_bounded(timeout, move || {
            shared.processors.iter().all(|p| p.force_flush().is_ok())
        })
    }

    /// Exports what is queued and stops, within `timeout`. Safe to call twice.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let shared = self.shared.clone();
        // The batch worker gives an unfinished export up at its own deadline. A little before
        // ours, so that it has dropped the export before the runtime stops under it (a tokio
        // timer polled after that panics).
        // The margin also covers the processor's short wait past its deadline for the worker to
        // count what it gave up (`batch::SHUTDOWN_GRACE`, 50 ms).
        let margin = (timeout / 10)
            .clamp(Duration::from_millis(60), Duration::from_millis(100))
            .min(timeout / 2);
        let worker_timeout = timeout.saturating_sub(margin);
        let ok = run_bounded(timeout, move || {
            let mut ok = true;
            for p in &shared.processors {
                ok &= p.shutdown_with_timeout(worker_timeout).is_ok();
            }
            ok
        });
        self.stop_runtime();
        ok
    }

    fn stop_runtime(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = runtime {
            // Never blocks, and never panics inside async code as dropping a runtime would.
            rt.shutdown_background();
        }
    }

    /// Spans exported and dropped so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

impl Drop for OtlpBackend {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}

/// Runs `f` on its own thread and waits at most `timeout` for it.
fn run_bounded(timeout: Duration, f: impl FnOnce() -> bool + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("integra-otlp-stop".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    spawned.is_ok() && rx.recv_timeout(timeout).unwrap_or(false)
}

/// The bridge the Sentry backend uses to take the span ids of the OpenTelemetry pipeline (any
/// pipeline of this crate: it reads the span entered on the calling thread).
pub fn active_span() -> Arc<dyn ActiveSpan> {
    Arc::new(recorder::RecorderActiveSpan)
}

/// Makes `span` (not yet entered) continue a trace from another service: its parent becomes the
/// remote span `parent_span_id` of `trace_id`, with the caller's flags byte (sampled bit and all)
/// and tracestate, so a parent-based sampler follows the caller. Ignored once the span has been
/// entered or has children, since its ids are then fixed.
pub fn set_remote_parent(
    span: &tracing::Span,
    trace_id: TraceId,
    parent_span_id: SpanId,
    flags: u8,
    tracestate: Option<&str>,
) {
    recorder::set_remote_parent(
        span,
        remote_context(trace_id, parent_span_id, flags, tracestate),
    );
}

/// Runs `make`, which creates a span, so that the span continues a trace from another service:
/// its parent is the remote span `parent_span_id` of `trace_id`, with the caller's flags byte and
/// tracestate, and the sampling decision is taken with that parent from the start. This is the
/// way to continue an incoming trace; [`set_remote_parent`] after creation cannot bring back the
/// fields of a span the root sampler had dropped.
///
/// ```
/// use integra_observe_core::{SpanId, TraceId};
/// let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
/// let parent = SpanId::from_hex("00f067aa0ba902b7").unwrap();
/// let span = integra_observe_otlp::with_remote_parent(trace, parent, 0x01, None, || {
///     tracing::info_span!("handle request")
/// });
/// # drop(span);
/// ```
pub fn with_remote_parent<T>(
    trace_id: TraceId,
    parent_span_id: SpanId,
    flags: u8,
    tracestate: Option<&str>,
    make: impl FnOnce() -> T,
) -> T {
    recorder::with_remote_parent(
        remote_context(trace_id, parent_span_id, flags, tracestate),
        make,
    )
}

fn remote_context(
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
    tracestate: Option<&str>,
) -> opentelemetry::trace::SpanContext {
    let state = tracestate
        .and_then(|ts| ts.parse::<opentelemetry::trace::TraceState>().ok())
        .unwrap_or_default();
    opentelemetry::trace::SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(trace_id.to_bytes()),
        opentelemetry::trace::SpanId::from_bytes(span_id.to_bytes()),
        opentelemetry::trace::TraceFlags::new(flags),
        true,
        state,
    )
}

/// Links `span` to a remote span without making it the parent: the trace starts here, and the
/// caller's span can still be found.
pub fn add_remote_link(span: &tracing::Span, trace_id: TraceId, span_id: SpanId, flags: u8) {
    recorder::add_link(span, remote_context(trace_id, span_id, flags, None));
}

/// Sets an attribute on the recorded span of `span` (for names known only at run time).
pub fn set_attribute(span: &tracing::Span, key: &str, value: &str) {
    recorder::set_attribute(span, KeyValue::new(key.to_owned(), value.to_owned()));
}

/// The one redaction step on a span before it leaves the process: secret keys lose their value,
/// and credentials inside values, event names and the status message are masked.
fn redact_span(span: &mut SpanData, r: &integra_observe_core::Redactor) {
    let redact_kvs = |kvs: &mut Vec<KeyValue>| {
        for kv in kvs.iter_mut() {
            let replacement = match &kv.value {
                _ if r.is_secret(kv.key.as_str()) => {
                    Some(integra_observe_core::REDACTED.to_owned())
                }
                opentelemetry::Value::String(v) => r.redact(kv.key.as_str(), v.as_str()),
                _ => None,
            };
            if let Some(new) = replacement {
                kv.value = opentelemetry::Value::from(new);
            }
        }
    };
    redact_kvs(&mut span.attributes);
    for event in span.events.events.iter_mut() {
        redact_kvs(&mut event.attributes);
        if let Some(new) = integra_observe_core::redact_value(&event.name) {
            event.name = new.into();
        }
    }
    if let Status::Error { description } = &mut span.status {
        if let Some(new) = integra_observe_core::redact_value(description) {
            *description = new.into();
        }
    }
}

/// Redacts every span of a batch on the export thread, off the caller's path.
#[derive(Debug)]
struct RedactingExporter<E> {
    inner: E,
    redactor: integra_observe_core::Redactor,
}

impl<E: SpanExporter> SpanExporter for RedactingExporter<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        for span in batch.iter_mut() {
            redact_span(span, &self.redactor);
        }
        self.inner.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Hands every finished span to a [`SpanSink`], converted to the core's plain form.
struct SinkProcessor {
    sink: Arc<dyn SpanSink>,
    service: String,
    redactor: integra_observe_core::Redactor,
}

impl std::fmt::Debug for SinkProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkProcessor")
    }
}

impl SpanProcessor for SinkProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            let mut span = span;
            redact_span(&mut span, &self.redactor);
            self.sink.on_end(&finished_span(span, &self.service));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.sink.shutdown();
        Ok(())
    }
}

fn finished_span(span: SpanData, service: &str) -> FinishedSpan {
    let sc = &span.span_context;
    let parent = span.parent_span_id;
    let kind = match span.span_kind {
        opentelemetry::trace::SpanKind::Server => SpanKind::Server,
        opentelemetry::trace::SpanKind::Client => SpanKind::Client,
        opentelemetry::trace::SpanKind::Producer => SpanKind::Producer,
        opentelemetry::trace::SpanKind::Consumer => SpanKind::Consumer,
        opentelemetry::trace::SpanKind::Internal => SpanKind::Internal,
    };
    let error = match &span.status {
        Status::Error { description } => Some(description.to_string()),
        _ => None,
    };
    let mut out = FinishedSpan::new(
        TraceId::from_bytes(sc.trace_id().to_bytes()),
        SpanId::from_bytes(sc.span_id().to_bytes()),
        span.name.into_owned(),
        kind,
        span.start_time,
        span.end_time,
    );
    out.parent_span_id = (parent != opentelemetry::trace::SpanId::INVALID)
        .then(|| SpanId::from_bytes(parent.to_bytes()));
    out.parent_is_remote = span.parent_span_is_remote;
    out.sampled = sc.is_sampled();
    out.attributes = span
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    out.events = span
        .events
        .events
        .iter()
        .map(|e| {
            SpanEvent::new(
                e.name.to_string(),
                e.timestamp,
                e.attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect(),
            )
        })
        .collect();
    out.error = error;
    out.service_name = service.to_owned();
    out
}
