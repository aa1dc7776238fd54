//! Phase 1: a service that sends its errors to Sentry, written with plain `tracing`.
//!
//! ```text
//! cargo run -p phase1-sentry
//! SENTRY_DSN=https://KEY@sentry.example.com/42 SENTRY_ENVIRONMENT=staging cargo run -p phase1-sentry
//! ```
//!
//! What to look at: the console log of a request that fails (pretty locally, JSON when
//! SENTRY_ENVIRONMENT=production). Without SENTRY_DSN nothing is sent, and the example prints the
//! Sentry event it *would* send: message, tags from the event's fields, the exception chain, the
//! breadcrumbs and `contexts.trace` with the ids of the span the error happened in. With a DSN, the
//! same event appears in Sentry as an issue.

use std::error::Error;
use std::fmt;

use tracing::{error, info, info_span, warn};

#[derive(Debug)]
struct TokenError(std::io::Error);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("token signature could not be verified")
    }
}

impl Error for TokenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// What the service does for one request: plain tracing, nothing Sentry-specific.
fn verify_user(user_id: u64) {
    let _span = info_span!("verify_user", user.id = user_id).entered();
    info!("loading signing keys");
    warn!(expires_in_s = 30, "token near expiry");
    let err = TokenError(std::io::Error::other("connection reset by key server"));
    error!(
        error = &err as &dyn Error,
        tags.component = "auth",
        "verification failed"
    );
}

fn main() {
    let config = integra_observe::Config::from_env().service_name("auth-worker");
    let sends = std::env::var("SENTRY_DSN").is_ok_and(|d| !d.is_empty());
    let guard = integra_observe::init(config);

    verify_user(42);

    if !sends {
        // Nothing was sent. Replay the request with the same layers capturing in memory, to show
        // the event Sentry would have received.
        let events = integra_observe::test::with_captured_events(|| verify_user(42));
        for event in events {
            let json = serde_json::to_string_pretty(&event).unwrap_or_default();
            println!("\nSENTRY_DSN is unset, so nothing was sent. This is the event Sentry would receive:\n{json}");
        }
    }
    println!("\nintegra-observe counters: {:?}", guard.stats());
}
