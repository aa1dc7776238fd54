//! The guard `init` returns: it owns every backend and shuts them down, in parallel and within
//! the shutdown timeout, when dropped or when [`Guard::shutdown`] is called.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use integra_observe_core::Stats;

/// One running backend, as the guard sees it.
pub(crate) trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn flush(&self, timeout: Duration) -> bool;
    fn shutdown(&self, timeout: Duration) -> bool;
    fn stats(&self) -> Stats;
}

/// Keeps integra-observe running. Dropping it flushes and shuts down every backend, waiting at
/// most the shutdown timeout (default 2 s).
///
/// ```no_run
/// let guard = integra_observe::init(integra_observe::Config::from_env());
/// tracing::info!("serving");
/// guard.shutdown(); // or let it drop at the end of main
/// ```
#[must_use = "dropping the guard shuts integra-observe down at once: bind it with `let _guard = ...` for the life of main"]
pub struct Guard {
    backends: Mutex<Vec<Box<dyn Backend>>>,
    /// Counters of the backends that were shut down, as they were at the end.
    finished: Mutex<Vec<(&'static str, Stats)>>,
    timeout: Duration,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("stats", &self.stats())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What each backend sent and dropped, from [`Guard::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStats {
    /// `(backend name, its counters)`, e.g. `("sentry", …)`.
    pub backends: Vec<(&'static str, Stats)>,
}

impl BackendStats {
    /// The counters of one backend (`"sentry"` or `"otlp"`), if it runs.
    pub fn get(&self, backend: &str) -> Option<Stats> {
        self.backends
            .iter()
            .find(|(n, _)| *n == backend)
            .map(|(_, s)| *s)
    }
}

impl Guard {
    pub(crate) fn new(backends: Vec<Box<dyn Backend>>, timeout: Duration) -> Self {
        Guard {
            backends: Mutex::new(backends),
            finished: Mutex::default(),
            timeout,
        }
    }

    /// A guard with nothing to shut down (returned by `init` when it could not start).
    pub(crate) fn noop() -> Self {
        Self::new(Vec::new(), Duration::ZERO)
    }

    fn backends(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn Backend>>> {
        // A poisoned lock only means a backend panicked mid-call; its state is still usable.
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every backend at once, without waiting for queues to drain.
    pub(crate) fn shutdown_now(&self) {
        for b in std::mem::take(&mut *self.backends()) {
            b.shutdown(Duration::ZERO);
        }
    }

    /// Counters of every backend: live while it runs, final once it was shut down.
    pub fn stats(&self) -> BackendStats {
        let mut backends: Vec<(&'static str, Stats)> = self
            .backends()
            .iter()
            .map(|b| (b.name(), b.stats()))
            .collect();
        backends.extend(
            self.finished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied(),
        );
        BackendStats { backends }
    }

    /// Sends what is queued, waiting at most `timeout` in all. `false` if time ran out.
    pub fn flush(&self, timeout: Duration) -> bool {
        let backends = self.backends();
        let deadline = Instant::now() + timeout;
        backends
            .iter()
            .all(|b| b.flush(deadline.saturating_duration_since(Instant::now())))
    }

    /// Flushes and shuts every backend down in parallel, returning within the shutdown timeout
    /// even if a backend hangs. Logs the counters once. Calling it again does nothing.
    pub fn shutdown(&self) -> bool {
        let backends = std::mem::take(&mut *self.backends());
        if backends.is_empty() {
            return true;
        }
        let deadline = Instant::now() + self.timeout;
        let (tx, rx) = mpsc::channel();
        let count = backends.len();
        // What each backend had counted when shutdown began, kept for one that does not finish.
        let mut pending: Vec<(&'static str, Stats)> =
            backends.iter().map(|b| (b.name(), b.stats())).collect();
        for backend in backends {
            let tx = tx.clone();
            let timeout = self.timeout;
            let spawned = thread::Builder::new()
                .name("integra-shutdown".into())
                .spawn(move || {
                    let ok = backend.shutdown(timeout);
                    let stats = backend.stats();
                    let _ = tx.send((backend.name(), ok, stats));
                });
            if spawned.is_err() {
                return false;
            }
        }
        let mut all_ok = true;
        for _ in 0..count {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((name, ok, stats)) => {
                    all_ok &= ok;
                    pending.retain(|(n, _)| *n != name);
                    self.finished
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((name, stats));
                    // One line per backend; a warning when anything was lost, with the exact counts.
                    if stats.dropped() > 0 {
                        tracing::warn!(target: "integra_observe", backend = name, flushed = ok, "shut down, data was dropped: {stats}");
                    } else {
                        tracing::info!(target: "integra_observe", backend = name, flushed = ok, "shut down: {stats}");
                    }
                }
                Err(_) => {
                    tracing::warn!(target: "integra_observe", timeout_ms = self.timeout.as_millis() as u64,
                        "a backend did not shut down within the shutdown timeout; its queue is abandoned");
                    self.finished
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(pending);
                    return false;
                }
            }
        }
        all_ok
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown();
    }
}
