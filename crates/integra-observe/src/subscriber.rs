//! Builds the one `tracing` subscriber: a global filter, then the console, then each backend.
//!
//! Every destination is an `Option<Layer>`, so a backend that is compiled out or switched off
//! does not change the subscriber's type. When OTLP is on it owns span identity and Sentry's own
//! span layer stays off (it would mint a second identity). This module must never panic: a
//! backend that fails to start is reported and, in lenient mode, left out.

use std::sync::atomic::{AtomicBool, Ordering};

use integra_observe_core::{InitError, LogFormat, LogSettings, Resolved, Source};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::guard::{Backend, Guard};

pub(crate) static STARTED: AtomicBool = AtomicBool::new(false);

/// The span backend's view of the active span, set once when OTLP starts.
pub(crate) static ACTIVE_SPAN: std::sync::OnceLock<
    std::sync::Arc<dyn integra_observe_core::ActiveSpan>,
> = std::sync::OnceLock::new();

type Base = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// What `start` did.
pub(crate) struct Started {
    pub guard: Guard,
    /// The subscriber, not yet installed.
    pub dispatch: tracing::Dispatch,
    /// Backends that run.
    pub backends: Vec<&'static str>,
    /// Backends that failed to start (lenient mode only; strict mode returns the first).
    pub errors: Vec<InitError>,
}

/// Installs the global subscriber. `strict`: a backend that fails to start fails the whole call;
/// otherwise it is left out and its error returned in [`Started::errors`].
pub(crate) fn start(resolved: Resolved, strict: bool) -> Result<Started, InitError> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialized);
    }
    let result = build(resolved, strict).and_then(|started| {
        if tracing::dispatcher::set_global_default(started.dispatch.clone()).is_err() {
            started.guard.shutdown_now();
            return Err(InitError::AlreadyInitialized);
        }
        // `log` records from dependencies join the same path; a logger set elsewhere is kept.
        let _ = tracing_log::LogTracer::init();
        Ok(started)
    });
    if result.is_err() {
        STARTED.store(false, Ordering::SeqCst);
    }
    result
}

/// Builds the subscriber and starts the backends without installing anything globally.
// Which backends are compiled in decides which of these bindings are mutated.
#[allow(unused_mut)]
pub(crate) fn build(resolved: Resolved, strict: bool) -> Result<Started, InitError> {
    let Resolved {
        settings,
        sentry,
        otlp,
        sampler: resolved_sampler,
        propagators,
        ..
    } = resolved;
    let dsc = sentry.as_ref().map(|s| {
        let mut dsc = crate::propagation::DynamicSamplingContext::new(
            integra_observe_core::TraceId::from_bytes([1; 16]), // replaced per request
            s.dsn.public_key(),
        );
        dsc.sample_rate = Some(s.traces_sample_rate.to_string());
        dsc.environment = Some(settings.service.environment.clone());
        dsc.release = settings.service.release.clone();
        dsc
    });
    crate::propagation::configure(crate::propagation::Outgoing::new(
        &propagators,
        dsc,
        settings.trust_incoming_context,
    ));
    let filter = EnvFilter::try_new(&settings.log.filter).map_err(|e| {
        InitError::invalid(
            Source::Env("RUST_LOG"),
            settings.log.filter.clone(),
            format!("an EnvFilter directive such as `info,my_crate=debug` ({e})"),
        )
    })?;
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    let mut errors = Vec::new();
    layers.extend(console_layer(&settings.log, &settings.redact_keys));

    // A failed backend: fatal in strict mode (after stopping what already started), else noted.
    let mut failed =
        |e: InitError, backends: &mut Vec<Box<dyn Backend>>| -> Result<(), InitError> {
            if strict {
                for b in backends.drain(..) {
                    b.shutdown(std::time::Duration::ZERO);
                }
                return Err(e);
            }
            errors.push(e);
            Ok(())
        };

    // The edge trust policy (feature `cloudflare`): an invalid value fails `try_init` like any
    // other setting; `init` logs it and trusts nothing from the edge.
    #[cfg(feature = "cloudflare")]
    match crate::propagation::cloudflare_policy_from_env() {
        Ok(policy) => {
            let _ = crate::propagation::set_cloudflare_policy(policy);
        }
        Err(e) => {
            let _ = crate::propagation::set_cloudflare_policy(
                integra_observe_cloudflare::TrustPolicy::trust_nothing(),
            );
            failed(e, &mut backends)?;
        }
    }

    // With OpenTelemetry compiled in (`otlp`), it owns span identity even when nothing is
    // exported: spans get W3C ids, incoming context is continued and outgoing headers injected (a
    // service in the middle of a path must not break the trace), and Sentry events and
    // transactions carry those ids. Without it (phase 1 and 2 services) Sentry owns the ids.
    let pipeline_wanted = cfg!(feature = "otlp") && !settings.sdk_disabled;

    #[cfg(feature = "sentry")]
    let sentry_backend = match &sentry {
        Some(s) => {
            #[cfg(feature = "otlp")]
            let bridge = pipeline_wanted.then(integra_observe_otlp::active_span);
            #[cfg(not(feature = "otlp"))]
            let bridge = None;
            match integra_observe_sentry::init(
                s,
                &settings.service,
                settings.shutdown_timeout,
                bridge,
            ) {
                Ok(backend) => Some(backend),
                Err(e) => {
                    failed(e, &mut backends)?;
                    None
                }
            }
        }
        None => None,
    };
    #[cfg(not(feature = "sentry"))]
    let _ = &sentry;

    let mut pipeline_ok = false;
    #[cfg(feature = "otlp")]
    if pipeline_wanted {
        let mut pipeline = integra_observe_otlp::Pipeline::new(otlp.as_ref(), resolved_sampler)
            .with_redact_keys(settings.redact_keys.clone())
            .with_limits(settings.limits);
        // Sentry performance: transactions built from the OpenTelemetry spans, with their ids.
        #[cfg(feature = "sentry")]
        if let (Some(backend), Some(s)) = (&sentry_backend, &sentry) {
            if s.traces_sample_rate > 0.0 {
                pipeline = pipeline.with_sink(backend.transaction_sink(s.traces_sample_rate));
            }
        }
        #[cfg(feature = "console")]
        {
            let mode = match settings.trace_view {
                integra_observe_core::TraceViewMode::Tree => Some(crate::console::Mode::Tree),
                integra_observe_core::TraceViewMode::Forward => Some(crate::console::Mode::Forward),
                _ => None,
            };
            if let Some(mode) = mode {
                pipeline =
                    pipeline.with_sink(std::sync::Arc::new(crate::console::ConsoleSink::new(mode)));
            }
        }
        match integra_observe_otlp::init(pipeline, &settings.service) {
            Ok(backend) => {
                layers.push(Box::new(backend.layer::<Base>()));
                let _ = ACTIVE_SPAN.set(integra_observe_otlp::active_span());
                let name = if otlp.is_some() { "otlp" } else { "spans" };
                backends.push(Box::new(OtlpHandle(backend, name)));
                pipeline_ok = true;
            }
            Err(e) => failed(e, &mut backends)?,
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (&otlp, pipeline_wanted, resolved_sampler);

    #[cfg(feature = "sentry")]
    if let Some(backend) = sentry_backend {
        // Sentry's own span layer only when OpenTelemetry does not own span identity, or it
        // would mint a second identity for every span.
        layers.push(Box::new(integra_observe_sentry::layer::<Base>(
            !pipeline_ok,
        )));
        backends.push(Box::new(SentryHandle(backend, "sentry")));
    }
    #[cfg(not(feature = "sentry"))]
    let _ = (pipeline_ok, &mut failed);

    let names = backends.iter().map(|b| b.name()).collect();
    let subscriber = tracing_subscriber::registry().with(filter).with(layers);
    Ok(Started {
        guard: Guard::new(backends, settings.shutdown_timeout),
        dispatch: tracing::Dispatch::new(subscriber),
        backends: names,
        errors,
    })
}

// The console's own redaction (here rather than in lib.rs: only this module uses it).
#[path = "console_redact.rs"]
mod console_redact;

/// The console layer; its output goes through the same redaction as the exported data.
fn console_layer(log: &LogSettings, redact_keys: &[String]) -> Option<BoxedLayer> {
    use console_redact::{RedactEvent, RedactFields};
    use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, Pretty};
    if !log.enabled {
        return None;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let redactor = integra_observe_core::Redactor::new(redact_keys.to_vec());
    let layer = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let format = tracing_subscriber::fmt::format();
    Some(match log.format {
        LogFormat::Json => Box::new(
            layer
                .with_ansi(false)
                .fmt_fields(RedactFields::new(JsonFields::new(), redactor.clone()))
                .event_format(RedactEvent::new(
                    format.json().flatten_event(true).with_current_span(true),
                    redactor,
                )),
        ),
        LogFormat::Compact => Box::new(
            layer
                .fmt_fields(RedactFields::new(DefaultFields::new(), redactor.clone()))
                .event_format(RedactEvent::new(format.compact(), redactor)),
        ),
        _ => Box::new(
            layer
                .fmt_fields(RedactFields::new(Pretty::default(), redactor.clone()))
                .event_format(RedactEvent::new(format.pretty(), redactor)),
        ),
    })
}

/// Adapts a backend crate's handle to the guard's [`Backend`].
macro_rules! backend_handle {
    ($feature:literal, $handle:ident, $ty:ty) => {
        #[cfg(feature = $feature)]
        struct $handle($ty, &'static str);

        #[cfg(feature = $feature)]
        impl Backend for $handle {
            fn name(&self) -> &'static str {
                self.1
            }
            fn flush(&self, timeout: std::time::Duration) -> bool {
                self.0.flush(timeout)
            }
            fn shutdown(&self, timeout: std::time::Duration) -> bool {
                self.0.shutdown(timeout)
            }
            fn stats(&self) -> integra_observe_core::Stats {
                self.0.stats()
            }
        }
    };
}

backend_handle!(
    "sentry",
    SentryHandle,
    integra_observe_sentry::SentryBackend
);
backend_handle!("otlp", OtlpHandle, integra_observe_otlp::OtlpBackend);
