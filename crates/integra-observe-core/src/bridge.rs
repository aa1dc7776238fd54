//! The seam between the error backend (Sentry) and the span backend (OpenTelemetry).
//!
//! When OpenTelemetry is on it owns span identity: the Sentry backend asks an [`ActiveSpan`] for
//! the ids of the span an event happened in, and tells it the event id so the span leads back to
//! the event. Implementations must be cheap and must never block or panic: they run on the
//! thread that emitted the event.

use crate::SpanContext;

/// What an error event tells the span it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// The Sentry event id, 32 lowercase hex digits.
    pub event_id: String,
    /// The error message.
    pub message: String,
    /// The exception type, when the event carries one.
    pub exception_type: Option<String>,
}

impl ErrorInfo {
    /// An error description from its parts.
    pub fn new(event_id: String, message: String, exception_type: Option<String>) -> Self {
        ErrorInfo {
            event_id,
            message,
            exception_type,
        }
    }
}

/// Access to the active span of the span backend.
pub trait ActiveSpan: Send + Sync + 'static {
    /// The ids of the span active on this thread (or task), if any.
    fn current(&self) -> Option<SpanContext>;

    /// Marks the active span as failed with `error` (status error, an exception event and the
    /// `sentry.event_id` attribute).
    fn record_error(&self, error: &ErrorInfo);
}

/// Tags for the Sentry events raised in a span or its descendants, kept in the span's extensions
/// (`tracing-subscriber` registry). The Sentry backend adds them to each event whose active span
/// has them in scope (the innermost wins; tags set on the event itself win over all). The server
/// span puts the Cloudflare edge context here (`cloudflare.ray_id`, `cloudflare.colo`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanTags(pub Vec<(String, String)>);
