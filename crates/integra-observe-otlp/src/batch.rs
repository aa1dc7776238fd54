//! The export queue of the OTLP backend: a span processor that takes every finished, sampled span
//! into a bounded queue and hands it, in batches, to the OTLP exporter on one worker thread
//! (`integra-otlp-batch`), retrying failed exports with exponential backoff and jitter.
//!
//! It replaces the SDK's `BatchSpanProcessor`, which drops spans at its full queue and reports
//! them only in one log line at shutdown. Here every span the processor is handed ends up in
//! exactly one of the backend's [`Counters`]: `sent`, or dropped as `queue_full` (the queue was
//! full, or already shut down), `rejected` (refused for good, or in an OTLP partial success) or
//! `send_failed` (still held when shutdown's deadline came).
//!
//! A batch whose export fails in a way worth retrying (the receiver unreachable, a timeout, 408,
//! 429, 502, 503, 504) stays at the head and is tried again, with backoff, for as long as the
//! process runs: the spans that end meanwhile queue behind it up to the queue's bound, so an
//! outage loses nothing until the queue is full, and then exactly the spans that did not fit.
//!
//! What it must never do: block the thread that ends a span for longer than one short critical
//! section (a push onto a `Vec` under an uncontended mutex); wake the worker for every span;
//! lose a span without counting it; or let `shutdown` and `force_flush` wait past their bound,
//! whatever the exporter does.
//!
//! The exporter's future is polled on the worker thread inside the backend's Tokio runtime
//! context (`Handle::enter`), by a small park-based loop rather than `Handle::block_on`:
//! `block_on` marks the thread as running inside the runtime, and the HTTP exporter's blocking
//! reqwest client panics there ("Cannot drop a runtime in a context where blocking is not
//! allowed", debug builds). The loop also gives every attempt a deadline that does not depend on
//! the runtime's timer, so a hung export is abandoned even after the runtime has been shut down.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Wake, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use integra_observe_core::{Counters, DropReason, OtlpSettings};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// How the processor queues, batches and retries.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Spans held (queued or being exported) before new ones are dropped.
    pub(crate) max_queue_size: usize,
    /// Spans per export request.
    pub(crate) max_export_batch_size: usize,
    /// Longest time a span waits in the queue before an export starts.
    pub(crate) schedule_delay: Duration,
    /// Time one export request may take.
    pub(crate) attempt_timeout: Duration,
    /// How long `force_flush` (which has no timeout parameter) waits for the worker.
    pub(crate) export_timeout: Duration,
    /// Backoff before the first retry; it doubles for each further retry.
    pub(crate) initial_backoff: Duration,
    /// Longest backoff between two attempts.
    pub(crate) max_backoff: Duration,
    /// Longest wait a receiver's `Retry-After` can impose before the next attempt.
    pub(crate) max_retry_after: Duration,
}

impl Options {
    /// The OTLP settings' batch values (`OTEL_BSP_*`), the request timeout of the exporter, and
    /// the retry policy: retries without a limit on their number, backoff 250 ms doubling up to
    /// 5 s, each delay drawn between half and all of its step; a `Retry-After` is waited for, up
    /// to 30 s. A receiver that comes back is therefore tried again within 5 s (or its
    /// `Retry-After`), however long it was down.
    pub(crate) fn from_settings(settings: &OtlpSettings) -> Self {
        Options {
            max_queue_size: settings.batch.max_queue_size,
            max_export_batch_size: settings.batch.max_export_batch_size,
            schedule_delay: settings.batch.schedule_delay,
            attempt_timeout: super::export_timeout(settings),
            export_timeout: settings.batch.export_timeout,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }

    /// Values that cannot stall or spin the worker: a queue of at least one span, batches no
    /// larger than the queue, and no zero delays.
    fn sanitized(mut self) -> Self {
        const MIN: Duration = Duration::from_millis(1);
        self.max_queue_size = self.max_queue_size.max(1);
        self.max_export_batch_size = self.max_export_batch_size.clamp(1, self.max_queue_size);
        self.schedule_delay = self.schedule_delay.max(MIN);
        self.attempt_timeout = self.attempt_timeout.max(MIN);
        self.export_timeout = self.export_timeout.max(MIN);
        self.initial_backoff = self.initial_backoff.max(MIN);
        self.max_backoff = self.max_backoff.max(self.initial_backoff);
        self
    }
}

/// What the receiver said about the last request beyond success or failure, reported by the
/// exporter's HTTP client ([`crate::http_client`]) while the worker polls the export.
///
/// opentelemetry-otlp's exporter returns only `Ok` or an error text, so its client hands these
/// over through a slot of the polling thread: the worker clears it before each attempt and reads
/// it after. On any other thread nothing reads the slot, and a report there is lost harmlessly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Feedback {
    /// Spans of an accepted request that the receiver rejected (OTLP partial success).
    rejected: u64,
    /// The `Retry-After` of a refused request.
    retry_after: Option<Duration>,
}

thread_local! {
    static FEEDBACK: std::cell::Cell<Feedback> = const {
        std::cell::Cell::new(Feedback { rejected: 0, retry_after: None })
    };
}

/// Reports that the receiver accepted the request being exported but rejected `n` of its spans.
pub(crate) fn report_rejected(n: u64) {
    FEEDBACK.with(|f| {
        let mut v = f.get();
        v.rejected = v.rejected.saturating_add(n);
        f.set(v);
    });
}

/// Reports that the receiver asked, with `Retry-After`, not to be tried again for `delay`.
pub(crate) fn report_retry_after(delay: Duration) {
    FEEDBACK.with(|f| {
        let mut v = f.get();
        v.retry_after = Some(delay);
        f.set(v);
    });
}

fn take_feedback() -> Feedback {
    FEEDBACK.with(std::cell::Cell::take)
}

/// A `SpanProcessor` with a bounded queue, exact drop counts and retried exports.
pub(crate) struct BatchProcessor {
    shared: Arc<Shared>,
    max_queue_size: usize,
    max_export_batch_size: usize,
    /// How long `force_flush` (which has no timeout parameter) waits for the worker.
    flush_timeout: Duration,
    /// The worker, to wake it out of an export when shutdown starts.
    worker_thread: Thread,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("max_queue_size", &self.max_queue_size)
            .field("max_export_batch_size", &self.max_export_batch_size)
            .field("stats", &self.shared.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// What the callers and the worker share.
struct Shared {
    state: Mutex<State>,
    /// The worker waits here: for a full batch, a flush, shutdown, or the end of a backoff.
    work: Condvar,
    /// `force_flush` and `shutdown` wait here for the worker.
    done: Condvar,
    counters: Arc<Counters>,
    /// `queue.len() + in_flight`, written under the lock: a full queue rejects a span without
    /// taking the lock, so threads that hit it at once do not contend for it.
    held: AtomicUsize,
}

struct State {
    /// Spans waiting for the worker.
    queue: Vec<SpanData>,
    /// Spans the worker took and has not finished with (sent or counted as dropped). They
    /// count against the queue's bound, so the processor never holds more than
    /// `max_queue_size` spans, and the drop count does not depend on the worker's timing.
    in_flight: usize,
    /// The worker sleeps on `work` and wants a notification when a batch is full.
    worker_idle: bool,
    /// `force_flush` calls so far, and the number of them the worker has completed.
    flush_requested: u64,
    flush_done: u64,
    /// Whether every export of the last completed flush round succeeded.
    flush_ok: bool,
    /// Set by shutdown: nothing more is queued, and the worker exports what it holds until then.
    shutdown_deadline: Option<Instant>,
    /// The worker has finished and shut the exporter down.
    stopped: bool,
    /// The provider's resource, for the worker to hand to the exporter before it exports.
    resource: Option<Resource>,
}

/// Waits once for the worker to report progress (`done`), at most until `deadline`; `None` once
/// the deadline has passed.
fn wait_done<'a>(
    shared: &Shared,
    state: MutexGuard<'a, State>,
    deadline: Instant,
) -> Option<MutexGuard<'a, State>> {
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    Some(
        shared
            .done
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0,
    )
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while the lock was held leaves the state consistent (every update is one
    // statement), so a poisoned lock is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchProcessor {
    /// Starts the worker thread. `runtime` is the context the exporter runs in (the gRPC
    /// exporter needs one); `counters` receive sent, dropped and retried.
    pub(crate) fn new<E>(
        exporter: E,
        options: Options,
        runtime: Option<tokio::runtime::Handle>,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self>
    where
        E: SpanExporter + 'static,
    {
        let options = options.sanitized();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::with_capacity(options.max_export_batch_size),
                in_flight: 0,
                worker_idle: false,
                flush_requested: 0,
                flush_done: 0,
                flush_ok: true,
                shutdown_deadline: None,
                stopped: false,
                resource: None,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            counters,
            held: AtomicUsize::new(0),
        });
        let worker = Worker {
            shared: shared.clone(),
            exporter,
            runtime,
            rng: Jitter::new(),
            options: options.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("integra-otlp-batch".into())
            .spawn(move || worker.run())?;
        Ok(BatchProcessor {
            shared,
            max_queue_size: options.max_queue_size,
            max_export_batch_size: options.max_export_batch_size,
            flush_timeout: options.export_timeout,
            worker_thread: handle.thread().clone(),
            worker: Mutex::new(Some(handle)),
        })
    }

    /// Waits at most `timeout` for the worker to export everything queued before this call.
    pub(crate) fn flush_within(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = deadline_after(timeout);
        let mut state = lock(&self.shared.state);
        if state.shutdown_deadline.is_some() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        state.flush_requested += 1;
        let ticket = state.flush_requested;
        state.worker_idle = false;
        self.shared.work.notify_all();
        loop {
            if state.flush_done >= ticket {
                return if state.flush_ok {
                    Ok(())
                } else {
                    Err(OTelSdkError::InternalFailure(
                        "some spans could not be exported; see the backend's send_failed count"
                            .into(),
                    ))
                };
            }
            if state.stopped {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            state =
                wait_done(&self.shared, state, deadline).ok_or(OTelSdkError::Timeout(timeout))?;
        }
    }

    /// Starts shutdown with `deadline` unless it has started; `false` if it had.
    fn begin_shutdown(&self, deadline: Instant) -> bool {
        let mut state = lock(&self.shared.state);
        if state.shutdown_deadline.is_some() {
            return false;
        }
        state.shutdown_deadline = Some(deadline);
        state.worker_idle = false;
        drop(state);
        self.shared.work.notify_all();
        // Wakes the worker if it is polling an export, so the export ends at the deadline.
        self.worker_thread.unpark();
        true
    }
}

impl SpanProcessor for BatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.shared.held.load(Ordering::Relaxed) >= self.max_queue_size {
            self.shared.counters.dropped(DropReason::QueueFull, 1);
            return;
        }
        let mut state = lock(&self.shared.state);
        // After shutdown the queue is closed: such a span is lost as surely as at a full queue,
        // and counted the same way.
        if state.shutdown_deadline.is_some()
            || state.queue.len() + state.in_flight >= self.max_queue_size
        {
            drop(state);
            self.shared.counters.dropped(DropReason::QueueFull, 1);
            return;
        }
        state.queue.push(span);
        self.shared
            .held
            .store(state.queue.len() + state.in_flight, Ordering::Relaxed);
        // One notification per batch, and none while the worker is busy: it looks at the queue
        // again before it sleeps.
        let wake = state.worker_idle && state.queue.len() >= self.max_export_batch_size;
        if wake {
            state.worker_idle = false;
        }
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_within(self.flush_timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = deadline_after(timeout);
        if !self.begin_shutdown(deadline) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        // The worker gives up what it holds at `deadline` and counts it as `send_failed`; waiting a
        // moment longer lets that count land before the caller reads the counters, so every
        // span ends in exactly one of them. (The backend's own bound leaves room for this.)
        let counted_by = deadline + SHUTDOWN_GRACE;
        let mut state = lock(&self.shared.state);
        while !state.stopped {
            state =
                wait_done(&self.shared, state, counted_by).ok_or(OTelSdkError::Timeout(timeout))?;
        }
        drop(state);
        // The worker has set `stopped` and is returning: joining does not wait for anything.
        let handle = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The provider calls this while it is built, before any span of it can end; the worker
        // hands it to the exporter at the start of its next round, before that round's export.
        lock(&self.shared.state).resource = Some(resource.clone());
    }
}

impl Drop for BatchProcessor {
    fn drop(&mut self) {
        // The provider shuts its processors down before it drops them; this is for a processor
        // dropped without that. It does not wait; the worker gets at most 5 s to export.
        let timeout = self.flush_timeout.min(Duration::from_secs(5));
        self.begin_shutdown(deadline_after(timeout));
    }
}

/// How long shutdown waits past its deadline for the worker to count what it gave up.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(50);

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// The worker thread: owns the exporter.
struct Worker<E> {
    shared: Arc<Shared>,
    exporter: E,
    runtime: Option<tokio::runtime::Handle>,
    rng: Jitter,
    options: Options,
}

/// One round's spans, taken from the queue at once.
struct Round {
    spans: Vec<SpanData>,
    flush_ticket: u64,
    shutdown_deadline: Option<Instant>,
}

impl<E: SpanExporter> Worker<E> {
    fn run(mut self) {
        // The exporter's own telemetry (tonic, hyper) must not come back as spans to export.
        let _suppressed = opentelemetry::Context::enter_telemetry_suppressed_scope();
        // Swapped with the queue each round, so neither side allocates once both have grown.
        let mut spare: Vec<SpanData> = Vec::with_capacity(self.options.max_export_batch_size);
        let mut next_export = Instant::now() + self.options.schedule_delay;
        loop {
            let round = self.next_round(&mut spare, next_export);
            if round.spans.is_empty() {
                if let Some(deadline) = round.shutdown_deadline {
                    self.finish(deadline, round.flush_ticket);
                    return;
                }
            }
            let Round {
                mut spans,
                flush_ticket,
                ..
            } = round;
            let ok = self.export_all(&mut spans);
            spare = spans;
            next_export = Instant::now() + self.options.schedule_delay;
            let mut state = lock(&self.shared.state);
            if flush_ticket > state.flush_done {
                state.flush_done = flush_ticket;
                state.flush_ok = ok;
                self.shared.done.notify_all();
            }
        }
    }

    /// Waits until a batch is full, the schedule delay has passed, a flush is asked for or
    /// shutdown has started, then takes the whole queue.
    fn next_round(&mut self, spare: &mut Vec<SpanData>, next_export: Instant) -> Round {
        let batch = self.options.max_export_batch_size;
        let mut state = lock(&self.shared.state);
        loop {
            if state.shutdown_deadline.is_some()
                || state.flush_requested > state.flush_done
                || state.queue.len() >= batch
            {
                break;
            }
            let now = Instant::now();
            if now >= next_export {
                break;
            }
            state.worker_idle = true;
            state = self
                .shared
                .work
                .wait_timeout(state, next_export - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.worker_idle = false;
        }
        if let Some(resource) = state.resource.take() {
            self.exporter.set_resource(&resource);
        }
        std::mem::swap(&mut state.queue, spare);
        let spans = std::mem::take(spare);
        state.in_flight += spans.len();
        self.shared
            .held
            .store(state.queue.len() + state.in_flight, Ordering::Relaxed);
        Round {
            spans,
            flush_ticket: state.flush_requested,
            shutdown_deadline: state.shutdown_deadline,
        }
    }

    /// Exports `spans` in batches, leaving the vector empty (with its capacity). `false` if any
    /// batch was lost.
    fn export_all(&mut self, spans: &mut Vec<SpanData>) -> bool {
        let mut ok = true;
        while !spans.is_empty() {
            let n = spans.len().min(self.options.max_export_batch_size);
            let batch: Vec<SpanData> = spans.drain(..n).collect();
            ok &= self.export_batch(batch);
            let mut state = lock(&self.shared.state);
            state.in_flight = state.in_flight.saturating_sub(n);
            self.shared
                .held
                .store(state.queue.len() + state.in_flight, Ordering::Relaxed);
        }
        ok
    }

    /// Exports one batch. A failure worth retrying is retried, with backoff, until the batch is
    /// accepted or shutdown's deadline comes: the batch holds its place in the queue's bound
    /// meanwhile, and the spans behind it wait. Every span is counted: `sent`, `rejected`
    /// (refused for good, or rejected in a partial success) or, at shutdown's deadline,
    /// `send_failed`. `false` if any span was not sent.
    fn export_batch(&mut self, batch: Vec<SpanData>) -> bool {
        let n = batch.len() as u64;
        let mut attempt = 1u32;
        loop {
            let limit = self.limit();
            let now = Instant::now();
            if now >= limit {
                break;
            }
            let timeout = self.options.attempt_timeout.min(limit - now);
            take_feedback();
            // The exporter takes the batch; the copy is kept for the next attempt.
            let outcome = self.attempt(batch.clone(), timeout);
            let feedback = take_feedback();
            match outcome {
                Outcome::Accepted => {
                    // An OTLP partial success: the receiver took the request and dropped these.
                    let rejected = feedback.rejected.min(n);
                    self.shared.counters.sent(n - rejected);
                    if rejected > 0 {
                        self.shared.counters.dropped(DropReason::Rejected, rejected);
                    }
                    return rejected == 0;
                }
                Outcome::Refused => {
                    // The receiver said no for good (a 4xx other than 408/429, or 500/501):
                    // another attempt would be refused the same way.
                    self.shared.counters.dropped(DropReason::Rejected, n);
                    return false;
                }
                Outcome::Failed => {}
            }
            let mut delay = self.backoff(attempt);
            if let Some(asked) = feedback.retry_after {
                delay = delay.max(asked.min(self.options.max_retry_after));
            }
            // At shutdown, a retry that could not start before the deadline is not waited for.
            if deadline_after(delay) >= self.limit() {
                break;
            }
            self.shared.counters.retried();
            self.sleep(delay);
            attempt = attempt.saturating_add(1);
        }
        self.shared.counters.dropped(DropReason::SendFailed, n);
        false
    }

    /// The end of the current batch's time: shutdown's deadline, or none (far away) before
    /// shutdown.
    fn limit(&self) -> Instant {
        lock(&self.shared.state)
            .shutdown_deadline
            .unwrap_or_else(|| deadline_after(Duration::MAX))
    }

    /// One export request, given at most `timeout` (less if shutdown starts meanwhile). A
    /// timeout or a panic is a failure worth retrying; an error is classified by [`classify`].
    fn attempt(&self, batch: Vec<SpanData>, timeout: Duration) -> Outcome {
        let attempt_end = deadline_after(timeout);
        let _runtime = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        let exporter = &self.exporter;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll_until(exporter.export(batch), || self.limit().min(attempt_end))
        }));
        match outcome {
            Ok(Some(Ok(()))) => Outcome::Accepted,
            Ok(Some(Err(e))) => classify(&e.to_string()),
            _ => Outcome::Failed,
        }
    }

    /// The backoff before retry number `attempt`: `initial_backoff · 2^(attempt-1)`, capped, and
    /// drawn uniformly from its upper half so that many processes do not retry in step.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let unit = self.rng.next_unit();
        backoff(
            self.options.initial_backoff,
            self.options.max_backoff,
            attempt,
            unit,
        )
    }

    /// Sleeps `backoff` on the `work` condition; shutdown starting cuts it short, so the batch is
    /// tried once more before the deadline. During shutdown it sleeps in full (bounded by the
    /// deadline through [`Worker::limit`]), so a refusing receiver is not hammered.
    fn sleep(&self, backoff: Duration) {
        let until = deadline_after(backoff);
        let mut state = lock(&self.shared.state);
        let in_shutdown = state.shutdown_deadline.is_some();
        loop {
            let now = Instant::now();
            if now >= until || (!in_shutdown && state.shutdown_deadline.is_some()) {
                return;
            }
            state = self
                .shared
                .work
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Shuts the exporter down with the time left and tells the waiters.
    fn finish(&mut self, deadline: Instant, flush_ticket: u64) {
        let left = deadline.saturating_duration_since(Instant::now());
        let _runtime = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        let exporter = &self.exporter;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exporter.shutdown_with_timeout(left)
        }));
        let mut state = lock(&self.shared.state);
        if flush_ticket > state.flush_done {
            state.flush_done = flush_ticket;
        }
        state.stopped = true;
        self.shared.done.notify_all();
    }
}

/// `initial · 2^(attempt-1)`, capped at `max`, scaled into its upper half by `unit` in `[0, 1)`.
fn backoff(initial: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let step = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let half = step / 2;
    step - half + half.mul_f64(unit)
}

/// Polls `future` on this thread until it completes or `deadline()` (read again after every
/// wake-up, so it may move closer) has passed; `None` on time-out, and the future is dropped.
fn poll_until<F: Future>(future: F, deadline: impl Fn() -> Instant) -> Option<F::Output> {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        let now = Instant::now();
        let end = deadline();
        if now >= end {
            return None;
        }
        std::thread::park_timeout(end - now);
        // Not polled again once time is up: a wake-up may come from a runtime shutting down,
        // whose timers panic when polled.
        if Instant::now() >= deadline() {
            return None;
        }
    }
}

/// A small xorshift generator for backoff jitter, seeded per processor from std's random
/// hasher keys (no dependency, and no need for quality beyond spreading retries).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        Jitter(hasher.finish() | 1)
    }

    /// A number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one export request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    /// Worth retrying: network trouble, a timeout, 408, 429, 502, 503, 504. Over HTTP the
    /// receiver's `Retry-After` comes through [`Feedback`]; over gRPC opentelemetry-otlp has
    /// already retried inside the request, honouring the server's `RetryInfo`.
    Failed,
    /// Refused for good.
    Refused,
}

/// Classifies an exporter error by the HTTP status it reports (`… status code: 400`), or the
/// gRPC code (`InvalidArgument`, `Unimplemented`, …). Anything unrecognised is retried.
fn classify(error: &str) -> Outcome {
    let status = error
        .rsplit_once("status code: ")
        .and_then(|(_, rest)| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(408 | 429) => Outcome::Failed,
        Some(400..=501) => Outcome::Refused,
        Some(_) => Outcome::Failed,
        None => {
            let permanent = [
                "InvalidArgument",
                "Unimplemented",
                "PermissionDenied",
                "Unauthenticated",
                "NotFound",
            ];
            if permanent.iter().any(|p| error.contains(p)) {
                Outcome::Refused
            } else {
                Outcome::Failed
            }
        }
    }
}

#[cfg(test)]
mod classify_tests {
    use super::{classify, Outcome};

    #[test]
    fn statuses_and_grpc_codes() {
        assert_eq!(
            classify("HTTP export failed with status code: 400"),
            Outcome::Refused
        );
        assert_eq!(
            classify("HTTP export failed with status code: 500"),
            Outcome::Refused
        );
        assert_eq!(
            classify("HTTP export failed with status code: 503"),
            Outcome::Failed
        );
        assert_eq!(
            classify("HTTP export failed with status code: 429"),
            Outcome::Failed
        );
        assert_eq!(
            classify("HTTP export failed: network error"),
            Outcome::Failed
        );
        assert_eq!(
            classify("status: InvalidArgument, message: bad"),
            Outcome::Refused
        );
        assert_eq!(classify("status: Unavailable"), Outcome::Failed);
    }
}

#[cfg(test)]
// Tests state their expectations with unwrap and panics.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, Tracer as _,
        TracerProvider as _,
    };
    use opentelemetry::InstrumentationScope;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanEvents, SpanLinks};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::SystemTime;

    /// A gate an exporter waits at, blocking its thread, until the test opens it.
    #[derive(Debug, Default)]
    struct Gate {
        open: Mutex<bool>,
        cv: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
        }
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    #[derive(Debug, Clone)]
    enum Behaviour {
        Succeed,
        /// Fails its first `n` calls, then succeeds.
        FailFirst(u64),
        /// Fails while the flag is set (a receiver that is down).
        FailWhile(Arc<AtomicBool>),
        AlwaysFail,
        /// Refused for good (a 400).
        Refuse,
        /// Accepted, with this many spans of each batch rejected (an OTLP partial success).
        PartialSuccess(u64),
        /// Fails its first call with a `Retry-After` of this long, then succeeds.
        RetryAfterOnce(Duration),
        /// Blocks the exporting thread until the gate opens, then succeeds.
        BlockThread(Arc<Gate>),
        /// A future that never completes.
        NeverReturn,
    }

    /// What a fake exporter saw.
    #[derive(Debug, Default)]
    struct Log {
        calls: AtomicU64,
        /// The size of each batch handed to the exporter, in order.
        sizes: Mutex<Vec<usize>>,
        delivered: Mutex<Vec<u64>>,
        resource: Mutex<Option<Resource>>,
        /// The `service.name` the exporter had been given when its first export began.
        service_at_first_export: Mutex<Option<Option<String>>>,
        /// An export that never returns has been dropped (given up) by the processor.
        abandoned: AtomicBool,
    }

    /// Sets `abandoned` when the export future holding it is dropped.
    struct OnDrop(Arc<Log>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.abandoned.store(true, Ordering::SeqCst);
        }
    }

    impl Log {
        fn delivered(&self) -> usize {
            self.delivered.lock().unwrap().len()
        }
    }

    #[derive(Debug)]
    struct Fake {
        behaviour: Behaviour,
        log: Arc<Log>,
    }

    impl SpanExporter for Fake {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let call = self.log.calls.fetch_add(1, Ordering::SeqCst);
            self.log.sizes.lock().unwrap().push(batch.len());
            if call == 0 {
                let service = self.log.resource.lock().unwrap().as_ref().and_then(|r| {
                    r.get(&opentelemetry::Key::from_static_str("service.name"))
                        .map(|v| v.to_string())
                });
                *self.log.service_at_first_export.lock().unwrap() = Some(service);
            }
            let fail = || Err(OTelSdkError::InternalFailure("receiver unavailable".into()));
            match &self.behaviour {
                Behaviour::Succeed => {}
                Behaviour::FailFirst(n) if call < *n => return fail(),
                Behaviour::FailFirst(_) => {}
                Behaviour::FailWhile(down) if down.load(Ordering::SeqCst) => return fail(),
                Behaviour::FailWhile(_) => {}
                Behaviour::AlwaysFail => return fail(),
                Behaviour::Refuse => {
                    return Err(OTelSdkError::InternalFailure(
                        "HTTP export failed with status code: 400".into(),
                    ))
                }
                Behaviour::PartialSuccess(n) => report_rejected(*n),
                Behaviour::RetryAfterOnce(delay) if call == 0 => {
                    report_retry_after(*delay);
                    return Err(OTelSdkError::InternalFailure(
                        "HTTP export failed with status code: 429".into(),
                    ));
                }
                Behaviour::RetryAfterOnce(_) => {}
                Behaviour::BlockThread(gate) => gate.wait(),
                Behaviour::NeverReturn => {
                    let _on_drop = OnDrop(self.log.clone());
                    std::future::pending::<()>().await
                }
            }
            let ids = batch.iter().map(id_of).collect::<Vec<_>>();
            self.log.delivered.lock().unwrap().extend(ids);
            Ok(())
        }

        fn set_resource(&mut self, resource: &Resource) {
            *self.log.resource.lock().unwrap() = Some(resource.clone());
        }
    }

    fn id_of(span: &SpanData) -> u64 {
        u64::from_be_bytes(span.span_context.span_id().to_bytes())
    }

    fn span(i: u64) -> SpanData {
        span_with_flags(i, TraceFlags::SAMPLED)
    }

    fn span_with_flags(i: u64, flags: TraceFlags) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes((u128::from(i) + 1).to_be_bytes()),
                SpanId::from_bytes((i + 1).to_be_bytes()),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "op".into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::default(),
        }
    }

    /// Small, fast options: retries with millisecond backoffs, generous timeouts.
    fn options(queue: usize, batch: usize) -> Options {
        Options {
            max_queue_size: queue,
            max_export_batch_size: batch,
            schedule_delay: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(5),
        }
    }

    struct Setup {
        processor: BatchProcessor,
        counters: Arc<Counters>,
        log: Arc<Log>,
    }

    fn setup(behaviour: Behaviour, options: Options) -> Setup {
        let log = Arc::new(Log::default());
        let counters = Arc::new(Counters::default());
        let exporter = Fake {
            behaviour,
            log: log.clone(),
        };
        let processor = BatchProcessor::new(exporter, options, None, counters.clone()).unwrap();
        Setup {
            processor,
            counters,
            log,
        }
    }

    /// Waits (at most 10 s) until `done` holds.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        done()
    }

    #[test]
    fn a_full_queue_drops_and_counts_exactly_the_overflow() {
        let gate = Arc::new(Gate::default());
        let s = setup(Behaviour::BlockThread(gate.clone()), options(100, 10));
        for i in 0..1000 {
            s.processor.on_end(span(i));
        }
        // The exporter has not returned, so the processor holds exactly its 100 spans (queued
        // or in the blocked export) and counted the other 900.
        let stats = s.counters.snapshot();
        assert_eq!(stats.dropped_queue_full, 900, "{stats}");
        assert_eq!(stats.sent, 0, "{stats}");
        gate.open();
        s.processor.flush_within(Duration::from_secs(10)).unwrap();
        let stats = s.counters.snapshot();
        assert_eq!(stats.sent, 100, "{stats}");
        assert_eq!(stats.dropped(), 900, "{stats}");
        assert_eq!(s.log.delivered(), 100);
        s.processor
            .shutdown_with_timeout(Duration::from_secs(5))
            .unwrap();
    }

    #[test]
    fn failed_exports_are_retried_and_then_delivered() {
        let s = setup(Behaviour::FailFirst(3), options(1000, 100));
        for i in 0..500 {
            s.processor.on_end(span(i));
        }
        s.processor.flush_within(Duration::from_secs(10)).unwrap();
        let stats = s.counters.snapshot();
        assert_eq!(stats.sent, 500, "{stats}");
        assert_eq!(stats.dropped(), 0, "{stats}");
        assert_eq!(stats.retried, 3, "{stats}");
        let delivered: HashSet<u64> = s.log.delivered.lock().unwrap().iter().copied().collect();
        assert_eq!(delivered.len(), 500);
    }

    #[test]
    fn spans_queued_during_an_outage_are_delivered_when_the_receiver_returns() {
        let down = Arc::new(AtomicBool::new(true));
        // Backoffs of at most 10 ms against an outage of 400 ms: dozens of retries of the same
        // batch, where a limit on attempts would have given it up.
        let s = setup(Behaviour::FailWhile(down.clone()), options(1000, 50));
        for burst in 0..4 {
            for i in 0..100 {
                s.processor.on_end(span(burst * 100 + i));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let during = s.counters.snapshot();
        assert_eq!((during.sent, during.dropped()), (0, 0), "{during}");
        down.store(false, Ordering::SeqCst);
        s.processor.flush_within(Duration::from_secs(10)).unwrap();
        let stats = s.counters.snapshot();
        assert_eq!(stats.sent, 400, "{stats}");
        assert_eq!(stats.dropped(), 0, "{stats}");
        assert!(stats.retried > 20, "{stats}");
        assert_eq!(s.log.delivered(), 400);
    }

    #[test]
    fn a_receiver_that_stays_down_costs_the_overflow_then_send_failed_at_shutdown_exactly() {
        let s = setup(Behaviour::AlwaysFail, options(100, 10));
        for i in 0..1000 {
            s.processor.on_end(span(i));
        }
        // The head batch is retried without end; the queue holds 100 spans and refuses the rest.
        assert!(eventually(|| s.counters.snapshot().retried >= 10));
        assert!(matches!(
            s.processor.flush_within(Duration::from_millis(200)),
            Err(OTelSdkError::Timeout(_))
        ));
        let stats = s.counters.snapshot();
        assert_eq!(
            (
                stats.sent,
                stats.dropped_queue_full,
                stats.dropped_send_failed
            ),
            (0, 900, 0),
            "{stats}"
        );
        // Shutdown gives up what is still held when its time is up, and counts it.
        s.processor
            .shutdown_with_timeout(Duration::from_millis(300))
            .unwrap();
        let stats = s.counters.snapshot();
        assert_eq!(
            (
                stats.sent,
                stats.dropped_queue_full,
                stats.dropped_send_failed
            ),
            (0, 900, 100),
            "{stats}"
        );
    }

    #[test]
    fn a_refusal_is_counted_as_rejected_at_once_and_not_retried() {
        let s = setup(Behaviour::Refuse, options(1000, 100));
        for i in 0..250 {
            s.processor.on_end(span(i));
        }
        assert!(s.processor.flush_within(Duration::from_secs(10)).is_err());
        let stats = s.counters.snapshot();
        assert_eq!(
            (stats.sent, stats.dropped_rejected, stats.retried),
            (0, 250, 0),
            "{stats}"
        );
        // One request per batch: every span was handed to the exporter once.
        let sizes = s.log.sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 250, "{sizes:?}");
    }

    #[test]
    fn spans_rejected_in_a_partial_success_are_counted_as_rejected_not_sent() {
        let s = setup(Behaviour::PartialSuccess(2), options(1000, 10));
        for i in 0..25 {
            s.processor.on_end(span(i));
        }
        s.processor
            .shutdown_with_timeout(Duration::from_secs(5))
            .unwrap();
        // Two spans of each batch (of at most 10) rejected, the others sent.
        let stats = s.counters.snapshot();
        let sizes = s.log.sizes.lock().unwrap().clone();
        let rejected: u64 = sizes.iter().map(|&n| (n as u64).min(2)).sum();
        assert_eq!(sizes.iter().sum::<usize>(), 25, "{sizes:?}");
        assert!(rejected >= 6, "{sizes:?}");
        assert_eq!(
            (stats.sent, stats.dropped_rejected, stats.retried),
            (25 - rejected, rejected, 0),
            "{stats}"
        );
    }

    #[test]
    fn retry_after_is_waited_for_and_capped() {
        let s = setup(
            Behaviour::RetryAfterOnce(Duration::from_millis(300)),
            options(1000, 10),
        );
        let start = Instant::now();
        s.processor.on_end(span(1));
        s.processor.flush_within(Duration::from_secs(10)).unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "retried after {took:?}");
        let stats = s.counters.snapshot();
        assert_eq!((stats.sent, stats.retried), (1, 1), "{stats}");

        // A Retry-After of an hour is cut to the cap (100 ms here).
        let mut opts = options(1000, 10);
        opts.max_retry_after = Duration::from_millis(100);
        let s = setup(Behaviour::RetryAfterOnce(Duration::from_secs(3600)), opts);
        s.processor.on_end(span(1));
        s.processor.flush_within(Duration::from_secs(5)).unwrap();
        assert_eq!(s.counters.snapshot().sent, 1);
    }

    #[test]
    fn shutdown_returns_within_its_timeout_when_the_export_never_returns() {
        let mut opts = options(1000, 10);
        opts.attempt_timeout = Duration::from_secs(60);
        opts.export_timeout = Duration::from_secs(60);
        let s = setup(Behaviour::NeverReturn, opts);
        for i in 0..10 {
            s.processor.on_end(span(i));
        }
        assert!(eventually(|| s.log.calls.load(Ordering::SeqCst) > 0));
        let start = Instant::now();
        let result = s
            .processor
            .shutdown_with_timeout(Duration::from_millis(300));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
        // The worker gives the export up (drops it) at shutdown's deadline and counts its spans.
        assert!(eventually(|| s.log.abandoned.load(Ordering::SeqCst)));
        assert!(
            eventually(|| s.counters.snapshot().dropped_send_failed == 10),
            "{result:?} {}",
            s.counters.snapshot()
        );
    }

    #[test]
    fn shutdown_returns_within_its_timeout_when_the_exporter_blocks_its_thread() {
        let gate = Arc::new(Gate::default());
        let s = setup(Behaviour::BlockThread(gate.clone()), options(1000, 10));
        for i in 0..10 {
            s.processor.on_end(span(i));
        }
        assert!(eventually(|| s.log.calls.load(Ordering::SeqCst) > 0));
        let start = Instant::now();
        let result = s
            .processor
            .shutdown_with_timeout(Duration::from_millis(300));
        let took = start.elapsed();
        assert!(
            matches!(result, Err(OTelSdkError::Timeout(_))),
            "{result:?}"
        );
        assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
        gate.open();
        assert!(eventually(|| {
            let stats = s.counters.snapshot();
            stats.sent + stats.dropped_send_failed == 10
        }));
    }

    #[test]
    fn no_span_is_lost_at_normal_load() {
        let s = setup(Behaviour::Succeed, options(2048, 512));
        for burst in 0..20 {
            for i in 0..500 {
                s.processor.on_end(span(burst * 500 + i));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        s.processor
            .shutdown_with_timeout(Duration::from_secs(10))
            .unwrap();
        let stats = s.counters.snapshot();
        assert_eq!(stats.sent, 10_000, "{stats}");
        assert_eq!(stats.dropped(), 0, "{stats}");
        let delivered: HashSet<u64> = s.log.delivered.lock().unwrap().iter().copied().collect();
        assert_eq!(delivered.len(), 10_000);
    }

    #[test]
    fn the_provider_resource_reaches_the_exporter_before_its_first_export() {
        let log = Arc::new(Log::default());
        let counters = Arc::new(Counters::default());
        let exporter = Fake {
            behaviour: Behaviour::Succeed,
            log: log.clone(),
        };
        let processor =
            BatchProcessor::new(exporter, options(100, 10), None, counters.clone()).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("batch-test").build())
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..3 {
            tracer.in_span("op", |_| {});
        }
        provider
            .shutdown_with_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(counters.snapshot().sent, 3);
        assert_eq!(
            *log.service_at_first_export.lock().unwrap(),
            Some(Some("batch-test".to_owned()))
        );
    }

    #[test]
    fn unsampled_spans_are_not_exported() {
        let s = setup(Behaviour::Succeed, options(100, 10));
        s.processor
            .on_end(span_with_flags(1, TraceFlags::NOT_SAMPLED));
        s.processor.on_end(span(2));
        s.processor
            .shutdown_with_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(s.counters.snapshot().sent, 1);
        assert_eq!(s.counters.snapshot().dropped(), 0);
    }

    #[test]
    fn after_shutdown_spans_are_counted_and_calls_say_already_shut_down() {
        let s = setup(Behaviour::Succeed, options(100, 10));
        s.processor
            .shutdown_with_timeout(Duration::from_secs(5))
            .unwrap();
        s.processor.on_end(span(1));
        assert_eq!(s.counters.snapshot().dropped_queue_full, 1);
        assert!(matches!(
            s.processor.shutdown_with_timeout(Duration::from_secs(1)),
            Err(OTelSdkError::AlreadyShutdown)
        ));
        assert!(matches!(
            s.processor.force_flush(),
            Err(OTelSdkError::AlreadyShutdown)
        ));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_its_cap() {
        let mut rng = Jitter::new();
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for attempt in 1..10 {
            let step = initial.saturating_mul(1 << (attempt - 1)).min(max);
            for _ in 0..100 {
                let d = backoff(initial, max, attempt, rng.next_unit());
                assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
            }
        }
    }
}
