//! Self-observability: what each backend sent, dropped and retried.
//!
//! Counters are plain relaxed atomics, bumped on the export path only (never on the caller's
//! path except a drop at enqueue), so reading them is free and exact.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one backend. Shared between the backend's worker and the guard.
#[derive(Debug, Default)]
pub struct Counters {
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_rate_limited: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_send_failed: AtomicU64,
    retried: AtomicU64,
}

/// Why an item was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The bounded queue was full.
    QueueFull,
    /// The server asked us to back off (429 / rate-limit headers) and the item fell in that window.
    RateLimited,
    /// The server refused the item for good (4xx other than 429, or 500).
    Rejected,
    /// The network failed (connection refused, timeout, DNS) and retries were exhausted.
    SendFailed,
}

impl Counters {
    /// Counts `n` items delivered.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` items dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        let c = match reason {
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::RateLimited => &self.dropped_rate_limited,
            DropReason::Rejected => &self.dropped_rejected,
            DropReason::SendFailed => &self.dropped_send_failed,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one retried request.
    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_rate_limited: self.dropped_rate_limited.load(Ordering::Relaxed),
            dropped_rejected: self.dropped_rejected.load(Ordering::Relaxed),
            dropped_send_failed: self.dropped_send_failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one backend's [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Items delivered.
    pub sent: u64,
    /// Items dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Items dropped inside a rate-limit window.
    pub dropped_rate_limited: u64,
    /// Items the server refused for good.
    pub dropped_rejected: u64,
    /// Items lost to network failure after retries.
    pub dropped_send_failed: u64,
    /// Requests retried.
    pub retried: u64,
}

impl Stats {
    /// Every dropped item, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_rate_limited
            + self.dropped_rejected
            + self.dropped_send_failed
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} dropped={} (queue_full={} rate_limited={} rejected={} send_failed={}) retried={}",
            self.sent,
            self.dropped(),
            self.dropped_queue_full,
            self.dropped_rate_limited,
            self.dropped_rejected,
            self.dropped_send_failed,
            self.retried
        )
    }
}
