//! Breadcrumbs that cost a few tens of nanoseconds until an event needs them.
//!
//! `INFO` and `WARN` events are written into a ring of the last `max_breadcrumbs` records of the
//! calling thread, reusing its buffers; they become Sentry breadcrumbs only when an event is sent
//! from that thread (in `before_send`), merged with the scope's own breadcrumbs by time. Sentry's
//! breadcrumb layer instead builds a map of the fields, formats the message and pushes into the
//! hub's scope for every `info!`, which is most of what a log line costs an instrumented service.
//!
//! It never allocates in the steady state for events without string fields, never blocks and
//! never panics.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use sentry::protocol::{Breadcrumb, Map, Value};
use tracing::field::{Field, Visit};
use tracing::Level;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Records `INFO` and `WARN` events into the thread's ring of [`MAX`] records.
pub(crate) struct BreadcrumbLayer;

/// The client's `max_breadcrumbs`, set when its options are built.
pub(crate) static MAX: AtomicUsize = AtomicUsize::new(100);

enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

struct Slot {
    time: SystemTime,
    level: Level,
    target: &'static str,
    message: String,
    fields: Vec<(&'static str, FieldValue)>,
}

#[derive(Default)]
struct Ring {
    slots: Vec<Slot>,
    /// Where the next record goes once the ring is full.
    next: usize,
}

thread_local! {
    static RING: RefCell<Ring> = RefCell::new(Ring::default());
}

impl<S: tracing::Subscriber> Layer<S> for BreadcrumbLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        let max = MAX.load(Ordering::Relaxed);
        if !(level == Level::INFO || level == Level::WARN) || max == 0 {
            return;
        }
        let _ = RING.try_with(|ring| {
            let Ok(mut ring) = ring.try_borrow_mut() else {
                return;
            };
            let ring = &mut *ring;
            if ring.slots.len() > max {
                *ring = Ring::default();
            }
            let slot = if ring.slots.len() < max {
                ring.slots.push(Slot {
                    time: SystemTime::UNIX_EPOCH,
                    level,
                    target: "",
                    message: String::new(),
                    fields: Vec::new(),
                });
                let last = ring.slots.len() - 1;
                &mut ring.slots[last]
            } else {
                let i = ring.next % ring.slots.len();
                ring.next = (i + 1) % ring.slots.len();
                &mut ring.slots[i]
            };
            slot.time = SystemTime::now();
            slot.level = level;
            slot.target = meta.target();
            slot.message.clear();
            slot.fields.clear();
            event.record(&mut SlotVisitor(slot));
        });
    }
}

struct SlotVisitor<'a>(&'a mut Slot);

impl Visit for SlotVisitor<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.fields.push((field.name(), FieldValue::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.fields.push((field.name(), FieldValue::U64(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.fields.push((field.name(), FieldValue::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.fields.push((field.name(), FieldValue::Bool(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.message.push_str(value);
        } else {
            self.0
                .fields
                .push((field.name(), FieldValue::Str(value.to_owned())));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0.message, "{value:?}");
        } else {
            self.0
                .fields
                .push((field.name(), FieldValue::Str(format!("{value:?}"))));
        }
    }
}

fn level_of(level: Level) -> sentry::Level {
    match level {
        Level::WARN => sentry::Level::Warning,
        Level::ERROR => sentry::Level::Error,
        Level::INFO => sentry::Level::Info,
        _ => sentry::Level::Debug,
    }
}

/// The thread's breadcrumbs as Sentry breadcrumbs, oldest first (the form sentry-tracing gives
/// them: type `log`, the target as category, the fields as data).
fn thread_breadcrumbs() -> Vec<Breadcrumb> {
    RING.try_with(|ring| {
        let Ok(ring) = ring.try_borrow() else {
            return Vec::new();
        };
        let n = ring.slots.len();
        let start = if n == 0 { 0 } else { ring.next % n };
        (0..n)
            .map(|k| &ring.slots[(start + k) % n])
            .map(|s| {
                let data: Map<String, Value> = s
                    .fields
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            FieldValue::Str(s) => Value::from(s.clone()),
                            FieldValue::I64(i) => Value::from(*i),
                            FieldValue::U64(u) => Value::from(*u),
                            FieldValue::F64(f) => Value::from(*f),
                            FieldValue::Bool(b) => Value::from(*b),
                        };
                        ((*k).to_owned(), v)
                    })
                    .collect();
                Breadcrumb {
                    timestamp: s.time,
                    ty: "log".into(),
                    category: Some(s.target.to_owned()),
                    level: level_of(s.level),
                    message: (!s.message.is_empty()).then(|| s.message.clone()),
                    data,
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Adds the thread's breadcrumbs to `event` (beside those added to the scope by hand), in time
/// order, keeping the newest `max`.
pub(crate) fn attach(event: &mut sentry::protocol::Event<'static>, max: usize) {
    let ours = thread_breadcrumbs();
    if ours.is_empty() {
        return;
    }
    let values = &mut event.breadcrumbs.values;
    values.extend(ours);
    values.sort_by_key(|b| b.timestamp);
    if values.len() > max {
        let excess = values.len() - max;
        values.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn clear() {
        RING.with(|r| *r.borrow_mut() = Ring::default());
    }

    #[test]
    fn keeps_the_newest_in_order_with_fields_and_levels() {
        clear();
        // MAX is the default 100 here (every client set-up in this process stores its default).
        let subscriber = tracing_subscriber::registry().with(BreadcrumbLayer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..102 {
                tracing::info!(i, user = "ann", "step {i}");
            }
            tracing::warn!(ok = true, "careful");
            tracing::debug!("not a breadcrumb");
            tracing::error!("an event, not a breadcrumb");
        });
        let crumbs = thread_breadcrumbs();
        let messages: Vec<_> = crumbs.iter().map(|b| b.message.clone().unwrap()).collect();
        assert_eq!(messages.len(), 100);
        assert_eq!(messages[0], "step 3");
        assert_eq!(messages[98..], ["step 101", "careful"]);
        assert_eq!(crumbs[99].level, sentry::Level::Warning);
        assert_eq!(crumbs[0].data["i"], Value::from(3i64));
        assert_eq!(crumbs[0].data["user"], Value::from("ann"));
        assert_eq!(crumbs[0].ty, "log");
        assert!(crumbs[0].timestamp <= crumbs[99].timestamp);

        let mut event = sentry::protocol::Event::default();
        event.breadcrumbs.values.push(Breadcrumb {
            timestamp: SystemTime::UNIX_EPOCH,
            message: Some("by hand".into()),
            ..Default::default()
        });
        attach(&mut event, 3);
        let messages: Vec<_> = event
            .breadcrumbs
            .values
            .iter()
            .map(|b| b.message.clone().unwrap())
            .collect();
        assert_eq!(
            messages,
            ["step 100", "step 101", "careful"],
            "the oldest go first"
        );
    }
}
