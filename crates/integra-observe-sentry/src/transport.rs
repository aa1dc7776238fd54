//! A Sentry transport that real servers accept and that cannot hang the service.
//!
//! Envelopes go through a bounded queue to one worker thread that POSTs them with
//! `Content-Type: application/x-sentry-envelope` and a per-request timeout, obeying Sentry's rate
//! limits. The caller never blocks: a full queue drops the envelope and counts it. `flush` and
//! `shutdown` wait at most their timeout; a worker stuck in a request is left to time out on its own.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use integra_observe_core::{Counters, DropReason, Dsn};
use sentry::protocol::EnvelopeItem;
use sentry::{ClientOptions, Envelope, Transport, TransportFactory};

use crate::ratelimit::RateLimits;

// Send is by far the common case; boxing it would cost an allocation per envelope.
#[allow(clippy::large_enum_variant)]
enum Task {
    Send(Envelope),
    Flush(SyncSender<()>),
}

/// The HTTP transport: a bounded queue in front of one sending thread.
pub struct HttpTransport {
    queue: SyncSender<Task>,
    counters: Arc<Counters>,
}

/// Builds [`HttpTransport`]s for a Sentry client.
#[derive(Clone)]
pub struct HttpTransportFactory {
    pub(crate) dsn: Dsn,
    pub(crate) queue_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) counters: Arc<Counters>,
}

impl TransportFactory for HttpTransportFactory {
    fn create_transport(&self, _options: &ClientOptions) -> Arc<dyn Transport> {
        Arc::new(HttpTransport::spawn(self))
    }
}

impl HttpTransport {
    fn spawn(f: &HttpTransportFactory) -> Self {
        let (queue, rx) = sync_channel(f.queue_size);
        let worker = Worker {
            url: f.dsn.envelope_url(),
            auth: format!(
                "Sentry sentry_version=7, sentry_client=integra-observe/{}, sentry_key={}",
                env!("CARGO_PKG_VERSION"),
                f.dsn.public_key()
            ),
            agent: ureq::AgentBuilder::new()
                .timeout(f.request_timeout)
                .timeout_connect(f.request_timeout.min(Duration::from_secs(5)))
                .redirects(0)
                .build(),
            limits: RateLimits::default(),
            counters: f.counters.clone(),
        };
        let spawned = thread::Builder::new()
            .name("integra-sentry-transport".into())
            .spawn(move || worker.run(rx));
        if let Err(e) = spawned {
            // Without a thread the queue fills and every envelope is counted as dropped.
            eprintln!("integra-observe: could not start the Sentry transport thread: {e}");
        }
        HttpTransport {
            queue,
            counters: f.counters.clone(),
        }
    }

    /// Sends a flush marker and waits for the worker to reach it, at most until `deadline`.
    fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = sync_channel(1);
        let mut task = Task::Flush(tx);
        loop {
            match self.queue.try_send(task) {
                Ok(()) => break,
                Err(TrySendError::Full(t)) if Instant::now() < deadline => {
                    task = t;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        match self.queue.try_send(Task::Send(envelope)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped(DropReason::QueueFull, 1);
            }
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.wait_drained(timeout)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        // Dropping the last sender (with the client) ends the worker once the queue is empty.
        self.wait_drained(timeout)
    }
}

struct Worker {
    url: String,
    auth: String,
    agent: ureq::Agent,
    limits: RateLimits,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Task>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(3600)) {
                Ok(Task::Send(envelope)) => self.send(envelope),
                Ok(Task::Flush(done)) => {
                    let _ = done.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn send(&mut self, envelope: Envelope) {
        let now = Instant::now();
        if self.limits.is_limited(category(&envelope), now) {
            self.counters.dropped(DropReason::RateLimited, 1);
            return;
        }
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.counters.dropped(DropReason::Rejected, 1);
            return;
        }
        let result = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/x-sentry-envelope")
            .set("X-Sentry-Auth", &self.auth)
            .send_bytes(&body);
        match result {
            Ok(resp) => {
                if let Some(h) = resp.header("X-Sentry-Rate-Limits") {
                    self.limits.update_from_sentry_header(h, now);
                }
                self.counters.sent(1);
            }
            Err(ureq::Error::Status(code, resp)) => {
                if code == 429 {
                    match resp.header("X-Sentry-Rate-Limits") {
                        Some(h) => self.limits.update_from_sentry_header(h, now),
                        None => self
                            .limits
                            .update_from_retry_after(resp.header("Retry-After"), now),
                    }
                    self.counters.dropped(DropReason::RateLimited, 1);
                } else {
                    if let Some(h) = resp.header("X-Sentry-Rate-Limits") {
                        self.limits.update_from_sentry_header(h, now);
                    }
                    self.counters.dropped(DropReason::Rejected, 1);
                }
            }
            Err(ureq::Error::Transport(_)) => self.counters.dropped(DropReason::SendFailed, 1),
        }
    }
}

/// The rate-limit category of an envelope, by its first item.
fn category(envelope: &Envelope) -> &'static str {
    match envelope.items().next() {
        Some(EnvelopeItem::Event(_)) => "error",
        Some(EnvelopeItem::Transaction(_)) => "transaction",
        Some(EnvelopeItem::SessionUpdate(_) | EnvelopeItem::SessionAggregates(_)) => "session",
        Some(EnvelopeItem::Attachment(_)) => "attachment",
        _ => "default",
    }
}
