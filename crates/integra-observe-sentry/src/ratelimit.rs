//! Sentry's rate limits: `X-Sentry-Rate-Limits`, `Retry-After` and bare 429s.
//!
//! Per category, the later of two deadlines wins (a shorter limit never shortens a longer one),
//! and every deadline is capped so a bogus header cannot silence Sentry for days.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest back-off any header can impose.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The back-off for a 429 without usable headers.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// Deadlines per category; the empty category means "every category".
#[derive(Debug, Default)]
pub struct RateLimits {
    until: HashMap<String, Instant>,
}

impl RateLimits {
    fn extend(&mut self, category: &str, after: Duration, now: Instant) {
        let deadline = now + after.min(MAX_BACKOFF);
        let slot = self.until.entry(category.to_owned()).or_insert(deadline);
        if deadline > *slot {
            *slot = deadline;
        }
    }

    /// Applies `X-Sentry-Rate-Limits: <secs>:<cat>;<cat>:<scope>[:<reason>], ...`.
    pub fn update_from_sentry_header(&mut self, header: &str, now: Instant) {
        for group in header.split(',') {
            let mut parts = group.trim().split(':');
            let Some(Ok(secs)) = parts.next().map(|s| s.trim().parse::<f64>()) else {
                continue;
            };
            if !secs.is_finite() || secs < 0.0 {
                continue;
            }
            let after = Duration::from_secs_f64(secs.min(MAX_BACKOFF.as_secs_f64()));
            let categories = parts.next().unwrap_or("");
            if categories.is_empty() {
                self.extend("", after, now);
            }
            for cat in categories.split(';').filter(|c| !c.is_empty()) {
                self.extend(cat, after, now);
            }
        }
    }

    /// Applies `Retry-After` (seconds; an HTTP date or garbage counts as the default back-off).
    pub fn update_from_retry_after(&mut self, header: Option<&str>, now: Instant) {
        let after = header
            .and_then(|h| h.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(MAX_BACKOFF.as_secs_f64())))
            .unwrap_or(DEFAULT_BACKOFF);
        self.extend("", after, now);
    }

    /// Whether `category` may be sent at `now`.
    pub fn is_limited(&self, category: &str, now: Instant) -> bool {
        [category, ""]
            .iter()
            .any(|c| self.until.get(*c).is_some_and(|deadline| *deadline > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_category_longer_deadline_kept_and_capped() {
        let now = Instant::now();
        let mut rl = RateLimits::default();
        rl.update_from_sentry_header("60:error;transaction:key, 5:session:org", now);
        assert!(rl.is_limited("error", now + Duration::from_secs(59)));
        assert!(!rl.is_limited("error", now + Duration::from_secs(61)));
        assert!(rl.is_limited("session", now + Duration::from_secs(4)));
        assert!(!rl.is_limited("attachment", now));
        // a shorter limit does not shorten the longer one
        rl.update_from_sentry_header("1:error:key", now);
        assert!(rl.is_limited("error", now + Duration::from_secs(30)));
        // capped
        rl.update_from_sentry_header("999999999:transaction:key", now);
        assert!(!rl.is_limited("transaction", now + MAX_BACKOFF + Duration::from_secs(1)));
        // empty categories = everything
        rl.update_from_sentry_header("10::organization", now);
        assert!(rl.is_limited("attachment", now + Duration::from_secs(9)));
    }

    #[test]
    fn retry_after_forms() {
        let now = Instant::now();
        let mut rl = RateLimits::default();
        rl.update_from_retry_after(Some("2"), now);
        assert!(rl.is_limited("error", now + Duration::from_secs(1)));
        assert!(!rl.is_limited("error", now + Duration::from_secs(3)));
        let mut rl = RateLimits::default();
        rl.update_from_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), now);
        assert!(rl.is_limited("error", now + DEFAULT_BACKOFF - Duration::from_secs(1)));
        let mut rl = RateLimits::default();
        rl.update_from_sentry_header("garbage, :, -5:error:x, NaN::x", now);
        assert!(!rl.is_limited("error", now));
    }
}
