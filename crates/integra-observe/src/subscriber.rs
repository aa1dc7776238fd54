//! Builds the one `tracing` subscriber: a global filter, then the console, then each backend.
//!
//! Every destination is an `Option<Layer>`, so a backend that is compiled out or switched off
//! does not change the subscriber's type. This module must never panic: a backend that fails to
//! start is reported and left out.

use std::sync::atomic::{AtomicBool, Ordering};

use integra_observe_core::{InitError, LogFormat, LogSettings, Resolved};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::guard::{Backend, Guard};

static STARTED: AtomicBool = AtomicBool::new(false);

type Base = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// Targets of the export stack itself: never exported, or an export would trace itself.
#[allow(dead_code)] // used by the OTLP backend
pub(crate) const EXPORT_STACK_TARGETS: &[&str] =
    &["h2", "hyper", "hyper_util", "tonic", "tower", "reqwest", "ureq", "rustls", "opentelemetry"];

pub(crate) fn start(resolved: Resolved) -> Result<(Guard, Vec<&'static str>), InitError> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialized);
    }
    let result = build(resolved);
    if result.is_err() {
        STARTED.store(false, Ordering::SeqCst);
    }
    result
}

fn build(resolved: Resolved) -> Result<(Guard, Vec<&'static str>), InitError> {
    let Resolved { settings, sentry, .. } = resolved;
    let filter = EnvFilter::try_new(&settings.log.filter).map_err(|e| {
        InitError::invalid(
            integra_observe_core::Source::Env("RUST_LOG"),
            settings.log.filter.clone(),
            format!("an EnvFilter directive such as `info,my_crate=debug` ({e})"),
        )
    })?;
    let console = console_layer(&settings.log);
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    let mut started = Vec::new();

    #[cfg(feature = "sentry")]
    let sentry_layer: Option<BoxedLayer> = match &sentry {
        Some(sentry) => {
            let backend = integra_observe_sentry::init(sentry, &settings.service, settings.shutdown_timeout, None)?;
            backends.push(Box::new(SentryHandle(backend)));
            started.push("sentry");
            Some(Box::new(integra_observe_sentry::layer::<Base>(true)))
        }
        None => None,
    };
    #[cfg(not(feature = "sentry"))]
    let sentry_layer: Option<BoxedLayer> = {
        let _ = sentry;
        None
    };

    // Each destination is an Option: a switched-off backend is `None`, the type never changes.
    let layers: Vec<BoxedLayer> = [console, sentry_layer].into_iter().flatten().collect();
    let subscriber = tracing_subscriber::registry().with(filter).with(layers);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| InitError::AlreadyInitialized)?;
    // `log` records from dependencies join the same path; a logger set elsewhere is kept.
    let _ = tracing_log::LogTracer::init();
    Ok((Guard::new(backends, settings.shutdown_timeout), started))
}

fn console_layer(log: &LogSettings) -> Option<BoxedLayer> {
    if !log.enabled {
        return None;
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let layer = tracing_subscriber::fmt::layer().with_ansi(ansi);
    Some(match log.format {
        LogFormat::Json => Box::new(layer.json().flatten_event(true).with_current_span(true)),
        LogFormat::Compact => Box::new(layer.compact()),
        _ => Box::new(layer.pretty()),
    })
}

#[cfg(feature = "sentry")]
struct SentryHandle(integra_observe_sentry::SentryBackend);

#[cfg(feature = "sentry")]
impl Backend for SentryHandle {
    fn name(&self) -> &'static str {
        "sentry"
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
