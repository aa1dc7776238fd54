//! Redaction of the console log: the service's own stdout goes through the same
//! [`Redactor`] as the spans and Sentry events, so `info!(password = "…")`, a `Bearer …` token
//! in a message or a URL with credentials is printed masked.
//!
//! Two wrappers around `tracing_subscriber::fmt`'s formatters: [`RedactFields`] for the fields
//! of spans (every format stores them through the layer's `FormatFields`), and [`RedactEvent`]
//! for events (the pretty and JSON formats record an event's fields themselves, without
//! `FormatFields`). Each records the fields once, masks what is secret by key or by value, and
//! hands the inner formatter a copy of the event or record holding the masked values; when
//! nothing is secret it hands over the original, unchanged.
//!
//! What it must never do: print a value the redactor masks, drop a field, or panic.

use std::fmt;

use integra_observe_core::{Redactor, REDACTED};
use tracing::field::{DisplayValue, Field, FieldSet, Value, ValueSet, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Most fields one callsite may have (`tracing`'s limit).
const MAX_FIELDS: usize = 32;

/// A field's value as the inner formatter should see it: the original type when it is kept,
/// text when it was masked.
enum Kept {
    Str(String),
    /// Printed as is (no quotes), as `Debug` values and messages are.
    Raw(DisplayValue<String>),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
}

impl Kept {
    fn as_value(&self) -> &dyn Value {
        match self {
            Kept::Str(v) => v,
            Kept::Raw(v) => v,
            Kept::I64(v) => v,
            Kept::U64(v) => v,
            Kept::I128(v) => v,
            Kept::U128(v) => v,
            Kept::F64(v) => v,
            Kept::Bool(v) => v,
        }
    }
}

/// Records every field, masking secrets; `changed` says whether anything was masked.
struct Collect<'r> {
    redactor: &'r Redactor,
    fields: Vec<(Field, Kept)>,
    changed: bool,
}

impl<'r> Collect<'r> {
    fn new(redactor: &'r Redactor) -> Self {
        Collect {
            redactor,
            fields: Vec::new(),
            changed: false,
        }
    }

    /// A non-text value: kept unless its key names a secret.
    fn keep(&mut self, field: &Field, value: Kept) {
        if self.redactor.is_secret(field.name()) {
            self.changed = true;
            self.fields
                .push((field.clone(), Kept::Str(REDACTED.to_owned())));
        } else {
            self.fields.push((field.clone(), value));
        }
    }

    /// Text: masked by key, or the secrets inside it (tokens, URL credentials) masked.
    fn text(&mut self, field: &Field, text: String, raw: bool) {
        let text = match self.redactor.redact(field.name(), &text) {
            Some(masked) => {
                self.changed = true;
                masked
            }
            None => text,
        };
        let kept = if raw {
            Kept::Raw(tracing::field::display(text))
        } else {
            Kept::Str(text)
        };
        self.fields.push((field.clone(), kept));
    }

    /// The collected values as a `ValueSet` of `fields` (at most [`MAX_FIELDS`]); calls `f` with
    /// it. `None` when there is nothing to build one from.
    fn with_values<T>(&self, fields: &FieldSet, f: impl FnOnce(&ValueSet<'_>) -> T) -> Option<T> {
        let (first, _) = self.fields.first()?;
        let mut values: [(&Field, Option<&dyn Value>); MAX_FIELDS] = [(first, None); MAX_FIELDS];
        for (slot, (field, kept)) in values.iter_mut().zip(&self.fields) {
            *slot = (field, Some(kept.as_value()));
        }
        Some(f(&fields.value_set(&values)))
    }
}

impl Visit for Collect<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.keep(field, Kept::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.keep(field, Kept::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.keep(field, Kept::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.keep(field, Kept::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.keep(field, Kept::U128(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.keep(field, Kept::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_owned(), false);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its sources as one line: a source's text may hold a secret too.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.text(field, text, true);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, format!("{value:?}"), true);
    }
}

/// A `FormatFields` that masks secrets in span fields before `N` formats them.
#[derive(Debug, Clone)]
pub(crate) struct RedactFields<N> {
    inner: N,
    redactor: Redactor,
}

impl<N> RedactFields<N> {
    /// `inner` (`DefaultFields`, `Pretty`, `JsonFields`) behind `redactor`.
    pub(crate) fn new(inner: N, redactor: Redactor) -> Self {
        RedactFields { inner, redactor }
    }

    /// The fields recorded by `record`, masked; `None` when nothing needed masking.
    fn masked(&self, record: impl FnOnce(&mut dyn Visit)) -> Option<Collect<'_>> {
        let mut collect = Collect::new(&self.redactor);
        record(&mut collect);
        collect.changed.then_some(collect)
    }
}

/// The field set a masked copy of a record is built on: an empty one with the callsite of the
/// recorded fields, which is all `ValueSet::record` compares.
fn field_set_of(collect: &Collect<'_>) -> Option<FieldSet> {
    let (first, _) = collect.fields.first()?;
    Some(FieldSet::new(&[], first.callsite()))
}

impl<'writer, N> FormatFields<'writer> for RedactFields<N>
where
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let Some(collect) = self.masked(|v| fields.record(v)) else {
            return self.inner.format_fields(writer, fields);
        };
        let Some(set) = field_set_of(&collect) else {
            return self.inner.format_fields(writer, fields);
        };
        collect
            .with_values(&set, |values| {
                self.inner
                    .format_fields(writer, tracing::span::Record::new(values))
            })
            .unwrap_or(Ok(()))
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // The inner formatter adds to what it wrote before in its own way (JSON merges objects),
        // so it gets the text as its own type.
        let mut own = FormattedFields::<N>::new(std::mem::take(&mut current.fields));
        let result = match self.masked(|v| fields.record(v)) {
            None => self.inner.add_fields(&mut own, fields),
            Some(collect) => match field_set_of(&collect) {
                Some(set) => collect
                    .with_values(&set, |values| {
                        self.inner
                            .add_fields(&mut own, &tracing::span::Record::new(values))
                    })
                    .unwrap_or(Ok(())),
                None => Ok(()),
            },
        };
        current.fields = own.fields;
        result
    }
}

/// A `FormatEvent` that masks secrets in an event's fields before `E` formats it.
#[derive(Debug, Clone)]
pub(crate) struct RedactEvent<E> {
    inner: E,
    redactor: Redactor,
}

impl<E> RedactEvent<E> {
    /// `inner` (a `tracing_subscriber::fmt::format::Format`) behind `redactor`.
    pub(crate) fn new(inner: E, redactor: Redactor) -> Self {
        RedactEvent { inner, redactor }
    }
}

impl<S, N, E> FormatEvent<S, N> for RedactEvent<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut collect = Collect::new(&self.redactor);
        event.record(&mut collect);
        if !collect.changed {
            return self.inner.format_event(ctx, writer, event);
        }
        let metadata = event.metadata();
        collect
            .with_values(metadata.fields(), |values| {
                let masked = if event.is_contextual() {
                    Event::new(metadata, values)
                } else {
                    Event::new_child_of(event.parent().cloned(), metadata, values)
                };
                self.inner.format_event(ctx, writer, &masked)
            })
            .unwrap_or(Ok(()))
    }
}

#[cfg(test)]
// Tests state their expectations with unwrap and panics.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, Pretty};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Failure;
    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("login to https://eve:SECRET-err@db.example/ failed")
        }
    }
    impl std::error::Error for Failure {}

    /// Logs a secret in every way a service may, through `layer`.
    fn log_secrets<L>(layer: L)
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
    {
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "login",
                password = "SECRET-pw",
                user.id = 42,
                later = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("later", "https://bob:SECRET-later@h.example/");
            tracing::info!(token = 1234u64, "retrying with Bearer SECRET-bearer");
            tracing::warn!(
                url = %"https://alice:SECRET-url@x.example/?access_token=SECRET-q&id=7",
                "calling"
            );
            tracing::error!(error = &Failure as &dyn std::error::Error, "failed");
            tracing::info!(count = 3, "nothing secret here");
        });
    }

    fn run(format: &str) -> String {
        let buf = Buf::default();
        let redactor = Redactor::default();
        let base = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(buf.clone());
        let fmt = tracing_subscriber::fmt::format();
        match format {
            "json" => log_secrets(
                base.fmt_fields(RedactFields::new(JsonFields::new(), redactor.clone()))
                    .event_format(RedactEvent::new(
                        fmt.json().flatten_event(true).with_current_span(true),
                        redactor,
                    )),
            ),
            "pretty" => log_secrets(
                base.fmt_fields(RedactFields::new(Pretty::default(), redactor.clone()))
                    .event_format(RedactEvent::new(fmt.pretty(), redactor)),
            ),
            _ => log_secrets(
                base.fmt_fields(RedactFields::new(DefaultFields::new(), redactor.clone()))
                    .event_format(RedactEvent::new(fmt.compact(), redactor)),
            ),
        };
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn no_format_prints_a_secret_and_every_line_is_kept() {
        for format in ["compact", "pretty", "json"] {
            let out = run(format);
            eprintln!("--- {format}\n{out}");
            assert!(!out.contains("SECRET-"), "{format}:\n{out}");
            for kept in [
                "retrying with Bearer [redacted]",
                "x.example/?access_token=REDACTED&id=7",
                "db.example/ failed",
                "nothing secret here",
                "[redacted]",
                "42",
            ] {
                assert!(out.contains(kept), "{format}: {kept:?} missing in\n{out}");
            }
            // A field recorded after the span started is masked too (JSON merges it into the
            // span's object rather than appending text).
            assert!(out.contains("https://h.example/"), "{format}:\n{out}");
            if format == "json" {
                for line in out.lines() {
                    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
                    assert!(line.contains(r#""later":"https://h.example/""#), "{line}");
                }
            }
        }
    }
}
