#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The README shows `fn main` on purpose: init belongs at the start of main.
#![allow(clippy::needless_doctest_main)]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub mod console;
mod guard;
pub mod propagation;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
mod subscriber;

pub use guard::{BackendStats, Guard};
pub use integra_observe_core::{
    Config, FinishedSpan, InitError, LogFormat, OtlpProtocol, Sampler, SamplerKind, Source,
    SpanContext, SpanId, Stats, TraceId, TraceViewMode, ENV_VARS,
};

/// The backend crates, each behind the feature that brings it.
pub mod backends {
    /// The Sentry backend (feature `sentry`).
    #[cfg(feature = "sentry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
    pub use integra_observe_sentry as sentry;

    /// The OTLP backend (feature `otlp`, or its alias `jaeger`).
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub use integra_observe_otlp as otlp;

    /// The Cloudflare backend (feature `cloudflare`): edge context, trust policy, signed edge
    /// header, trace ids derived from ray ids.
    #[cfg(feature = "cloudflare")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
    pub use integra_observe_cloudflare as cloudflare;

    /// The Sentry SDK itself (feature `sentry`), for scopes, users and manual captures.
    #[cfg(feature = "sentry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentry")))]
    pub use integra_observe_sentry::sentry as sentry_sdk;
}

#[cfg(feature = "test")]
#[cfg_attr(docsrs, doc(cfg(feature = "test")))]
pub mod test;

/// The ids of the span active on this thread (or task): OpenTelemetry's when the OTLP backend
/// runs, Sentry's when Sentry runs alone, `None` otherwise or outside any span. These are the ids a
/// Sentry event raised here carries.
///
/// ```
/// assert!(integra_observe::current_span_context().is_none()); // not initialised: no ids
/// ```
pub fn current_span_context() -> Option<SpanContext> {
    if let Some(active) = subscriber::ACTIVE_SPAN.get() {
        return active.current();
    }
    #[cfg(feature = "sentry")]
    if subscriber::STARTED.load(std::sync::atomic::Ordering::Relaxed) {
        return integra_observe_sentry::current_span_context();
    }
    None
}

/// Starts integra-observe: console logging, and every backend that is compiled in and configured.
/// Returns the first configuration error instead of starting, or
/// [`InitError::AlreadyInitialized`] on a second call.
///
/// ```no_run
/// # fn main() -> Result<(), integra_observe::InitError> {
/// let _guard = integra_observe::try_init(
///     integra_observe::Config::from_env().service_name("auth-worker"),
/// )?;
/// tracing::info!("ready");
/// # Ok(()) }
/// ```
pub fn try_init(config: Config) -> Result<Guard, InitError> {
    let resolved = config.resolve();
    if let Some(error) = resolved.errors.first() {
        return Err(error.clone());
    }
    subscriber::start(resolved, true).map(|started| started.guard)
}

/// Builds the same subscriber and backends as [`try_init`] without installing the subscriber
/// globally: for benchmarks, and for code that scopes it with [`tracing::dispatcher::with_default`].
/// The Sentry client is still bound to Sentry's main hub. Fails on the first invalid setting.
///
/// ```
/// let (dispatch, guard) = integra_observe::try_build(integra_observe::Config::new().console(false))?;
/// tracing::dispatcher::with_default(&dispatch, || tracing::info!("only seen by this subscriber"));
/// drop(guard);
/// # Ok::<(), integra_observe::InitError>(())
/// ```
pub fn try_build(config: Config) -> Result<(tracing::Dispatch, Guard), InitError> {
    let resolved = config.resolve();
    if let Some(error) = resolved.errors.first() {
        return Err(error.clone());
    }
    subscriber::build(resolved, true).map(|started| (started.dispatch, started.guard))
}

/// Starts integra-observe like [`try_init`], but never fails: an invalid setting is logged (with
/// the variable, the value and the expected form) and its backend runs switched off, while the
/// console keeps logging. On a second call it logs the error and returns a guard that does nothing.
///
/// ```no_run
/// let _guard = integra_observe::init(integra_observe::Config::from_env().service_name("auth-worker"));
/// let _span = tracing::info_span!("verify_user", user.id = 42).entered();
/// tracing::warn!("token near expiry"); // a breadcrumb
/// tracing::error!("verification failed"); // a Sentry event, in that span
/// ```
pub fn init(config: Config) -> Guard {
    let resolved = config.resolve();
    let errors = resolved.errors.clone();
    match subscriber::start(resolved, false) {
        Ok(started) => {
            for error in errors.iter().chain(&started.errors) {
                tracing::error!(target: "integra_observe", "{error}; running with that backend off");
            }
            tracing::debug!(target: "integra_observe", backends = ?started.backends, "integra-observe started");
            started.guard
        }
        Err(error) => {
            // No subscriber of ours is installed: log through whatever is there, and stderr.
            tracing::error!(target: "integra_observe", "{error}");
            eprintln!("integra-observe: {error}");
            Guard::noop()
        }
    }
}
