//! Trace-context propagation: W3C `traceparent`/`tracestate`, W3C `baggage`, Sentry `sentry-trace`
//! with its dynamic sampling context, Jaeger `uber-trace-id`, and the edge team's `x-trace-id`.
//!
//! Its job is to turn the headers of an incoming request into the remote parent of our first span
//! ([`extract`]), and to write one consistent set of headers on an outgoing request ([`inject`]):
//! every format carries the same trace id, span id and sampling decision. Header values are
//! untrusted input, so this module must never panic, never let one bad header spoil another
//! (an invalid `tracestate` or baggage member is dropped, the `traceparent` is kept), and never
//! guess: a value that breaks its specification is treated as absent and the caller starts a new
//! trace. It must never do I/O, read the clock, or spawn threads, so that it builds for wasm32.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::{SpanContext, SpanId, TraceId};

mod baggage;
mod jaeger;
mod sentry;
mod w3c;

#[cfg(test)]
mod proptests;

pub use baggage::Baggage;
pub use jaeger::{EdgeTraceIds, UberTraceId};
pub use sentry::{DynamicSamplingContext, SentryTrace};
pub use w3c::{TraceParent, TraceState};

/// The W3C Trace Context header that carries the trace id, parent id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C Trace Context header that carries vendor-specific state.
pub const TRACESTATE: &str = "tracestate";
/// The W3C Baggage header.
pub const BAGGAGE: &str = "baggage";
/// Sentry's trace header.
pub const SENTRY_TRACE: &str = "sentry-trace";
/// Jaeger's trace header.
pub const UBER_TRACE_ID: &str = "uber-trace-id";
/// The edge team's trace id header (32 lowercase hex digits).
pub const X_TRACE_ID: &str = "x-trace-id";
/// The edge team's span id header (16 lowercase hex digits): the caller's span.
pub const X_SPAN_ID: &str = "x-span-id";
/// The edge team's parent span id header (16 lowercase hex digits), read only.
pub const X_PARENT_SPAN_ID: &str = "x-parent-span-id";

/// Where header values are read from: implemented for slices, arrays and `Vec`s of
/// `(name, value)` pairs and for `HashMap<String, String>`, all matching names without regard
/// to ASCII case.
pub trait HeaderSource {
    /// Every value of the header `name` (given in lowercase), in the order received; an absent
    /// header gives an empty `Vec`. Values that are not UTF-8 are later treated as absent.
    fn values(&self, name: &str) -> Vec<&[u8]>;
}

impl<T: HeaderSource + ?Sized> HeaderSource for &T {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        (**self).values(name)
    }
}

impl HeaderSource for [(&str, &str)] {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
            .collect()
    }
}

impl<const N: usize> HeaderSource for [(&str, &str); N] {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.as_slice().values(name)
    }
}

impl HeaderSource for Vec<(&str, &str)> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.as_slice().values(name)
    }
}

impl HeaderSource for [(String, String)] {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
            .collect()
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.as_slice().values(name)
    }
}

impl<S: BuildHasher> HeaderSource for HashMap<String, String, S> {
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
            .collect()
    }
}

/// Which header the remote context was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContextSource {
    /// A valid W3C `traceparent`.
    TraceParent,
    /// A valid Sentry `sentry-trace`.
    SentryTrace,
    /// A valid Jaeger `uber-trace-id`.
    Jaeger,
    /// Valid `x-trace-id` and `x-span-id` headers.
    XTraceId,
    /// No valid trace header: the request starts a new trace.
    #[default]
    None,
}

impl ContextSource {
    /// The header name the context came from, or `"new"` for a new trace.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextSource::TraceParent => TRACEPARENT,
            ContextSource::SentryTrace => SENTRY_TRACE,
            ContextSource::Jaeger => UBER_TRACE_ID,
            ContextSource::XTraceId => X_TRACE_ID,
            ContextSource::None => "new",
        }
    }
}

/// The caller's position in its trace: our first span's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteContext {
    /// The trace to continue.
    pub trace_id: TraceId,
    /// The caller's span, which becomes our parent.
    pub span_id: SpanId,
    /// The caller's sampling decision; `None` when the caller deferred it (a `sentry-trace`
    /// without its `-1`/`-0` part, or the `x-trace-id` headers, which carry no decision).
    pub sampled: Option<bool>,
    /// The W3C flags byte to keep when we re-inject (bits we do not know included, such as the
    /// `random` bit `0x02`); for other sources only the sampled bit.
    pub flags: u8,
}

/// What [`extract`] found in a request's headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    /// The remote parent, or `None` when the request starts a new trace.
    pub remote: Option<RemoteContext>,
    /// Which header [`Self::remote`] came from.
    pub source: ContextSource,
    /// The `tracestate`, kept only when `traceparent` was the source and the state is valid.
    pub tracestate: Option<TraceState>,
    /// The W3C baggage without its `sentry-*` members (those are in [`Self::dsc`]); `None` when
    /// no valid member is left.
    pub baggage: Option<Baggage>,
    /// Sentry's dynamic sampling context from the `sentry-*` baggage members, kept only when its
    /// trace id is the remote trace id (a context for another trace must not be reused).
    pub dsc: Option<DynamicSamplingContext>,
}

/// A propagation format, as named in `OTEL_PROPAGATORS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Propagator {
    /// W3C Trace Context (`traceparent`, `tracestate`): `tracecontext`.
    TraceContext,
    /// W3C Baggage (`baggage`): `baggage`.
    Baggage,
    /// Sentry (`sentry-trace`, plus the `sentry-*` members of `baggage`): `sentry`.
    Sentry,
    /// Jaeger (`uber-trace-id`): `jaeger`.
    Jaeger,
}

impl Propagator {
    /// The default set: `tracecontext,baggage,sentry`.
    pub const DEFAULT: [Propagator; 3] = [
        Propagator::TraceContext,
        Propagator::Baggage,
        Propagator::Sentry,
    ];

    /// The propagator named `name` (surrounding whitespace and ASCII case ignored), or `None`
    /// for a name we do not implement.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        [
            Propagator::TraceContext,
            Propagator::Baggage,
            Propagator::Sentry,
            Propagator::Jaeger,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// The `OTEL_PROPAGATORS` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagator::TraceContext => "tracecontext",
            Propagator::Baggage => "baggage",
            Propagator::Sentry => "sentry",
            Propagator::Jaeger => "jaeger",
        }
    }
}

/// Reads the remote trace context, `tracestate`, baggage and Sentry dynamic sampling context from
/// a request's headers.
///
/// Precedence: a valid `traceparent`, then `sentry-trace`, then `uber-trace-id`, then
/// `x-trace-id` with `x-span-id`; an invalid (or repeated) header falls through to the next
/// format, and when none is valid the request starts a new trace ([`ContextSource::None`]).
/// Header names match without regard to case; values that are not UTF-8 count as absent.
///
/// ```
/// use integra_observe_core::propagation::{extract, ContextSource};
///
/// let headers = [
///     ("TraceParent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"),
///     ("tracestate", "congo=t61rcWkgMzE"),
///     ("baggage", "userId=alice,sentry-trace_id=4bf92f3577b34da6a3ce929d0e0e4736,sentry-public_key=abc"),
/// ];
/// let ex = extract(&headers);
/// assert_eq!(ex.source, ContextSource::TraceParent);
/// let remote = ex.remote.unwrap();
/// assert_eq!(remote.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(remote.span_id.to_string(), "00f067aa0ba902b7");
/// assert_eq!((remote.sampled, remote.flags), (Some(true), 0x03));
/// assert_eq!(ex.tracestate.unwrap().get("congo"), Some("t61rcWkgMzE"));
/// assert_eq!(ex.baggage.unwrap().get("userId"), Some("alice"));
/// assert_eq!(ex.dsc.unwrap().public_key, "abc");
///
/// // Nothing valid: a new trace.
/// let ex = extract(&[("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")]);
/// assert_eq!(ex.source, ContextSource::None);
/// assert!(ex.remote.is_none());
/// ```
pub fn extract(headers: &(impl HeaderSource + ?Sized)) -> Extracted {
    let mut out = Extracted::default();
    let sampled_bit = |sampled: bool| {
        if sampled {
            TraceParent::FLAG_SAMPLED
        } else {
            0
        }
    };

    if let Some(tp) = single_value(headers, TRACEPARENT).and_then(TraceParent::parse) {
        out.source = ContextSource::TraceParent;
        out.remote = Some(RemoteContext {
            trace_id: tp.trace_id,
            span_id: tp.parent_id,
            sampled: Some(tp.sampled()),
            flags: tp.flags,
        });
        out.tracestate = TraceState::parse(&utf8_values(headers, TRACESTATE));
    } else if let Some(st) = single_value(headers, SENTRY_TRACE).and_then(SentryTrace::parse) {
        out.source = ContextSource::SentryTrace;
        out.remote = Some(RemoteContext {
            trace_id: st.trace_id,
            span_id: st.span_id,
            sampled: st.sampled,
            flags: sampled_bit(st.sampled == Some(true)),
        });
    } else if let Some(j) = single_value(headers, UBER_TRACE_ID).and_then(UberTraceId::parse) {
        out.source = ContextSource::Jaeger;
        out.remote = Some(RemoteContext {
            trace_id: j.trace_id,
            span_id: j.span_id,
            sampled: Some(j.sampled()),
            flags: sampled_bit(j.sampled()),
        });
    } else if let Some(edge) = EdgeTraceIds::from_headers(headers) {
        out.source = ContextSource::XTraceId;
        out.remote = Some(RemoteContext {
            trace_id: edge.trace_id,
            span_id: edge.span_id,
            sampled: None,
            flags: 0,
        });
    }

    if let Some(mut baggage) = Baggage::parse(&utf8_values(headers, BAGGAGE)) {
        let remote_trace = out.remote.map(|r| r.trace_id);
        out.dsc = DynamicSamplingContext::from_baggage(&baggage)
            .filter(|dsc| Some(dsc.trace_id) == remote_trace);
        baggage.retain(|key, _| !sentry::is_sentry_key(key));
        out.baggage = (!baggage.is_empty()).then_some(baggage);
    }
    out
}

/// Writes the headers of an outgoing request for the span `ctx`, one set per propagator.
///
/// - `flags`: the W3C flags byte to keep (from [`RemoteContext::flags`]); its sampled bit is
///   replaced by `ctx.sampled`, the other bits are kept. `None` writes only the sampled bit.
/// - `tracecontext` ([`Propagator::TraceContext`]): `traceparent` (version `00`) and
///   `tracestate` when non-empty.
/// - `baggage` ([`Propagator::Baggage`]): the members of `baggage` (without its `sentry-*`
///   members when [`Propagator::Sentry`] is also on).
/// - `sentry` ([`Propagator::Sentry`]): `sentry-trace`, and the `dsc` as `sentry-*` members of
///   `baggage` (first, so that they survive the 8192-byte limit) with `sentry-sampled` set to
///   `ctx.sampled`; a `dsc` for another trace id is not written.
/// - `jaeger` ([`Propagator::Jaeger`]): `uber-trace-id`.
///
/// Headers come in that order, each at most once, names in lowercase.
///
/// ```
/// use integra_observe_core::propagation::{extract, inject, Propagator};
/// use integra_observe_core::{SpanContext, SpanId};
///
/// let incoming = [
///     ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"),
///     ("baggage", "userId=alice"),
/// ];
/// let ex = extract(&incoming);
/// let remote = ex.remote.unwrap();
///
/// // Our span continues the caller's trace.
/// let span_id = SpanId::from_hex("b7ad6b7169203331").unwrap();
/// let ctx = SpanContext::new(remote.trace_id, span_id, remote.sampled.unwrap_or(true));
/// let headers = inject(
///     &ctx,
///     Some(remote.flags),
///     &Propagator::DEFAULT,
///     ex.tracestate.as_ref(),
///     ex.baggage.as_ref(),
///     ex.dsc.as_ref(),
/// );
/// assert_eq!(
///     headers,
///     vec![
///         ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-03".to_string()),
///         ("baggage", "userId=alice".to_string()),
///         ("sentry-trace", "4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-1".to_string()),
///     ]
/// );
/// ```
pub fn inject(
    ctx: &SpanContext,
    flags: Option<u8>,
    propagators: &[Propagator],
    tracestate: Option<&TraceState>,
    baggage: Option<&Baggage>,
    dsc: Option<&DynamicSamplingContext>,
) -> Vec<(&'static str, String)> {
    let on = |p: Propagator| propagators.contains(&p);
    let sampled_bit = if ctx.sampled {
        TraceParent::FLAG_SAMPLED
    } else {
        0
    };
    let mut out = Vec::new();

    if on(Propagator::TraceContext) {
        let flags = (flags.unwrap_or(0) & !TraceParent::FLAG_SAMPLED) | sampled_bit;
        let tp = TraceParent::new(ctx.trace_id, ctx.span_id, flags);
        out.push((TRACEPARENT, tp.to_header()));
        if let Some(ts) = tracestate.filter(|ts| !ts.is_empty()) {
            out.push((TRACESTATE, ts.to_header()));
        }
    }

    if on(Propagator::Baggage) || on(Propagator::Sentry) {
        let mut outgoing = match baggage {
            Some(b) if on(Propagator::Baggage) => b.clone(),
            _ => Baggage::new(),
        };
        if on(Propagator::Sentry) {
            // Sentry owns the `sentry-*` members: stale ones never pass through.
            outgoing.retain(|key, _| !sentry::is_sentry_key(key));
            if let Some(dsc) = dsc.filter(|d| d.trace_id == ctx.trace_id) {
                let mut dsc = dsc.clone();
                dsc.sampled = Some(ctx.sampled);
                dsc.write_to(&mut outgoing);
            }
        }
        let header = outgoing.to_header();
        if !header.is_empty() {
            out.push((BAGGAGE, header));
        }
    }

    if on(Propagator::Sentry) {
        let st = SentryTrace::new(ctx.trace_id, ctx.span_id, Some(ctx.sampled));
        out.push((SENTRY_TRACE, st.to_header()));
    }

    if on(Propagator::Jaeger) {
        let j = UberTraceId::new(ctx.trace_id, ctx.span_id, sampled_bit);
        out.push((UBER_TRACE_ID, j.to_header()));
    }
    out
}

/// The UTF-8 values of header `name`; others are treated as absent.
fn utf8_values<'a>(headers: &'a (impl HeaderSource + ?Sized), name: &str) -> Vec<&'a str> {
    headers
        .values(name)
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .collect()
}

/// The value of a header that must appear once: a repeated header is invalid (W3C Trace Context
/// says so for `traceparent`; the other single-valued formats follow the same rule).
fn single_value<'a>(headers: &'a (impl HeaderSource + ?Sized), name: &str) -> Option<&'a str> {
    match utf8_values(headers, name).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Trims HTTP optional whitespace (spaces and horizontal tabs) from both ends.
fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// The value of one lowercase hex digit.
fn lower_hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The value of one hex digit of either case.
fn any_hex_digit(c: u8) -> Option<u8> {
    lower_hex_digit(c.to_ascii_lowercase())
}

/// Exactly `2 * N` lowercase hex digits as `N` bytes.
fn lower_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (lower_hex_digit(*hi)? << 4) | lower_hex_digit(*lo)?;
    }
    Some(out)
}

/// Strict `%XX` decoding: `None` on a malformed escape or a result that is not UTF-8.
fn percent_decode_strict(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = any_hex_digit(*bytes.get(i + 1)?)?;
            let lo = any_hex_digit(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const SENTRY: &str = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0";
    const JAEGER: &str = "1234567890abcdef1234567890abcdef:1234567890abcdef:0:1";

    fn tid(s: &str) -> TraceId {
        TraceId::from_hex(s).unwrap()
    }
    fn sid(s: &str) -> SpanId {
        SpanId::from_hex(s).unwrap()
    }

    /// A header source with raw bytes, to send values that are not UTF-8.
    struct Raw<'a>(Vec<(&'a str, &'a [u8])>);
    impl HeaderSource for Raw<'_> {
        fn values(&self, name: &str) -> Vec<&[u8]> {
            self.0
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .collect()
        }
    }

    #[test]
    fn header_sources_match_names_case_insensitively() {
        let pairs = [("TraceParent", TP), ("other", "x")];
        assert_eq!(pairs.values("traceparent"), vec![TP.as_bytes()]);
        assert_eq!(pairs[..].values("traceparent").len(), 1);
        assert_eq!(pairs.to_vec().values("traceparent").len(), 1);
        let owned: Vec<(String, String)> = vec![("TRACEPARENT".into(), TP.into())];
        assert_eq!(owned.values("traceparent").len(), 1);
        let map: HashMap<String, String> = [("TrAcEpArEnT".to_string(), TP.to_string())].into();
        assert_eq!(HeaderSource::values(&map, "traceparent").len(), 1);
        assert!(HeaderSource::values(&map, "tracestate").is_empty());
        assert_eq!(extract(&map).source, ContextSource::TraceParent);
        assert_eq!(extract(&owned).source, ContextSource::TraceParent);
        assert_eq!(extract(&pairs.to_vec()).source, ContextSource::TraceParent);
        // Wrong names (test.py: test_traceparent_header_name).
        assert_eq!(extract(&[("trace-parent", TP)]).source, ContextSource::None);
        assert_eq!(extract(&[("trace.parent", TP)]).source, ContextSource::None);
    }

    #[test]
    fn non_utf8_values_are_absent() {
        let h = Raw(vec![
            ("traceparent", b"\xff\xfe"),
            ("traceparent", TP.as_bytes()),
        ]);
        let ex = extract(&h);
        assert_eq!(ex.source, ContextSource::TraceParent);
        let h = Raw(vec![
            ("traceparent", b"00-\xff"),
            ("sentry-trace", SENTRY.as_bytes()),
        ]);
        assert_eq!(extract(&h).source, ContextSource::SentryTrace);
    }

    #[test]
    fn context_source_names() {
        assert_eq!(ContextSource::TraceParent.as_str(), "traceparent");
        assert_eq!(ContextSource::SentryTrace.as_str(), "sentry-trace");
        assert_eq!(ContextSource::Jaeger.as_str(), "uber-trace-id");
        assert_eq!(ContextSource::XTraceId.as_str(), "x-trace-id");
        assert_eq!(ContextSource::None.as_str(), "new");
        assert_eq!(ContextSource::default(), ContextSource::None);
    }

    #[test]
    fn propagator_names() {
        for p in [
            Propagator::TraceContext,
            Propagator::Baggage,
            Propagator::Sentry,
            Propagator::Jaeger,
        ] {
            assert_eq!(Propagator::parse(p.as_str()), Some(p));
        }
        assert_eq!(
            Propagator::parse(" TraceContext "),
            Some(Propagator::TraceContext)
        );
        assert_eq!(Propagator::parse("b3"), None);
        assert_eq!(Propagator::parse(""), None);
    }

    #[test]
    fn extract_precedence_and_fall_through() {
        let x = [("x-trace-id", TRACE), ("x-span-id", SPAN)];
        let all = |tp: &'static str, st: &'static str, j: &'static str| {
            vec![
                ("traceparent", tp),
                ("sentry-trace", st),
                ("uber-trace-id", j),
                x[0],
                x[1],
            ]
        };
        let ex = extract(&all(TP, SENTRY, JAEGER));
        assert_eq!(ex.source, ContextSource::TraceParent);
        assert_eq!(ex.remote.unwrap().trace_id, tid(TRACE));

        let ex = extract(&all("00-bad", SENTRY, JAEGER));
        assert_eq!(ex.source, ContextSource::SentryTrace);
        let r = ex.remote.unwrap();
        assert_eq!(r.trace_id, tid("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(r.span_id, sid("b7ad6b7169203331"));
        assert_eq!((r.sampled, r.flags), (Some(false), 0));

        let ex = extract(&all("00-bad", "bad", JAEGER));
        assert_eq!(ex.source, ContextSource::Jaeger);
        let r = ex.remote.unwrap();
        assert_eq!(r.trace_id, tid("1234567890abcdef1234567890abcdef"));
        assert_eq!((r.sampled, r.flags), (Some(true), 1));

        let ex = extract(&all("00-bad", "bad", "bad"));
        assert_eq!(ex.source, ContextSource::XTraceId);
        let r = ex.remote.unwrap();
        assert_eq!((r.trace_id, r.span_id), (tid(TRACE), sid(SPAN)));
        assert_eq!((r.sampled, r.flags), (None, 0));

        let ex = extract(&[("x-trace-id", "bad"), ("x-span-id", SPAN)]);
        assert_eq!(ex.source, ContextSource::None);
        assert_eq!(ex.remote, None);
        assert_eq!(extract(&[] as &[(&str, &str)]), Extracted::default());
    }

    #[test]
    fn repeated_traceparent_restarts_or_falls_through() {
        // test.py: test_traceparent_duplicated.
        let tp2 = "00-12345678901234567890123456789012-1234567890123456-01";
        let ex = extract(&[("traceparent", TP), ("traceparent", tp2)]);
        assert_eq!(ex.source, ContextSource::None);
        // Even two identical headers.
        let ex = extract(&[
            ("traceparent", TP),
            ("traceparent", TP),
            ("tracestate", "a=1"),
        ]);
        assert_eq!((ex.source, ex.tracestate), (ContextSource::None, None));
        let ex = extract(&[
            ("traceparent", TP),
            ("traceparent", tp2),
            ("sentry-trace", SENTRY),
        ]);
        assert_eq!(ex.source, ContextSource::SentryTrace);
        // Repeated sentry-trace / uber-trace-id are invalid too.
        let ex = extract(&[("sentry-trace", SENTRY), ("sentry-trace", SENTRY)]);
        assert_eq!(ex.source, ContextSource::None);
        let ex = extract(&[("uber-trace-id", JAEGER), ("uber-trace-id", JAEGER)]);
        assert_eq!(ex.source, ContextSource::None);
    }

    #[test]
    fn tracestate_kept_only_with_traceparent() {
        let ex = extract(&[("traceparent", TP), ("tracestate", "foo=1,bar=2")]);
        assert_eq!(ex.tracestate.unwrap().to_header(), "foo=1,bar=2");
        // An invalid tracestate is dropped, the traceparent kept.
        let ex = extract(&[("traceparent", TP), ("tracestate", "foo=1,foo=2")]);
        assert_eq!(ex.source, ContextSource::TraceParent);
        assert_eq!(ex.tracestate, None);
        // A tracestate without its traceparent is discarded.
        let ex = extract(&[("sentry-trace", SENTRY), ("tracestate", "foo=1")]);
        assert_eq!(
            (ex.source, ex.tracestate),
            (ContextSource::SentryTrace, None)
        );
        let ex = extract(&[("tracestate", "foo=1")]);
        assert_eq!((ex.source, ex.tracestate), (ContextSource::None, None));
        // Case-insensitive name, several headers combined in order.
        let ex = extract(&[
            ("traceparent", TP),
            ("TraceState", "foo=1"),
            ("tracestate", ""),
            ("TRACESTATE", "bar=2"),
        ]);
        assert_eq!(ex.tracestate.unwrap().to_header(), "foo=1,bar=2");
    }

    #[test]
    fn traceparent_flags_byte_is_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        let r = extract(&[("traceparent", tp)]).remote.unwrap();
        assert_eq!((r.sampled, r.flags), (Some(true), 0x03));
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe";
        let r = extract(&[("traceparent", tp)]).remote.unwrap();
        assert_eq!((r.sampled, r.flags), (Some(false), 0xfe));
    }

    #[test]
    fn baggage_and_dsc_are_split_and_checked() {
        let bag = format!(
            "userId=alice,sentry-trace_id={TRACE},sentry-public_key=pk,sentry-sampled=true,k=v"
        );
        let ex = extract(&[("traceparent", TP), ("baggage", bag.as_str())]);
        let b = ex.baggage.unwrap();
        assert_eq!(b.to_header(), "userId=alice,k=v");
        let dsc = ex.dsc.unwrap();
        assert_eq!((dsc.trace_id, dsc.public_key.as_str()), (tid(TRACE), "pk"));
        assert_eq!(dsc.sampled, Some(true));

        // A DSC for another trace is dropped, as are its members.
        let ex = extract(&[("sentry-trace", SENTRY), ("baggage", bag.as_str())]);
        assert_eq!(ex.dsc, None);
        assert_eq!(ex.baggage.unwrap().to_header(), "userId=alice,k=v");
        // No remote context: no DSC; only sentry members: no baggage.
        let only = format!("sentry-trace_id={TRACE},sentry-public_key=pk");
        let ex = extract(&[("baggage", only.as_str())]);
        assert_eq!((ex.dsc, ex.baggage), (None, None));
        // Baggage is read whatever the trace source, repeated headers combined.
        let ex = extract(&[("baggage", "a=1"), ("Baggage", "b=2")]);
        assert_eq!(ex.baggage.unwrap().to_header(), "a=1,b=2");
    }

    fn ctx(sampled: bool) -> SpanContext {
        SpanContext::new(tid(TRACE), sid("b7ad6b7169203331"), sampled)
    }

    #[test]
    fn inject_default_set_is_consistent() {
        let mut ts = TraceState::new();
        assert!(ts.insert("congo", "t61rcWkgMzE"));
        let mut bag = Baggage::new();
        assert!(bag.insert("userId", "alice smith"));
        assert!(bag.insert("sentry-stale", "x"));
        let mut dsc = DynamicSamplingContext::new(tid(TRACE), "pk");
        dsc.sampled = Some(true);
        dsc.transaction = Some("GET /users/{id}".into());
        for sampled in [true, false] {
            let h = inject(
                &ctx(sampled),
                Some(0x02),
                &Propagator::DEFAULT,
                Some(&ts),
                Some(&bag),
                Some(&dsc),
            );
            let names: Vec<_> = h.iter().map(|(k, _)| *k).collect();
            assert_eq!(
                names,
                ["traceparent", "tracestate", "baggage", "sentry-trace"]
            );
            let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let tp = TraceParent::parse(pairs[0].1).unwrap();
            assert_eq!(tp.flags, 0x02 | u8::from(sampled));
            let st = SentryTrace::parse(pairs[3].1).unwrap();
            assert_eq!((st.trace_id, st.span_id), (tp.trace_id, tp.parent_id));
            assert_eq!(st.sampled, Some(sampled));
            // Round trip through extract: every format agrees.
            let ex = extract(&pairs);
            let r = ex.remote.unwrap();
            assert_eq!(
                (r.trace_id, r.span_id, r.sampled),
                (tid(TRACE), sid("b7ad6b7169203331"), Some(sampled))
            );
            assert_eq!(ex.tracestate.as_ref(), Some(&ts));
            let d = ex.dsc.unwrap();
            assert_eq!(d.sampled, Some(sampled));
            assert_eq!(d.transaction.as_deref(), Some("GET /users/{id}"));
            let b = ex.baggage.unwrap();
            assert_eq!(b.get("userId"), Some("alice smith"));
            assert_eq!(b.get("sentry-stale"), None);
            // The sentry members come first.
            assert!(pairs[2].1.starts_with("sentry-trace_id="));
            // Without traceparent, sentry-trace and baggage give the same context.
            let ex = extract(&[pairs[2], pairs[3]]);
            assert_eq!(ex.source, ContextSource::SentryTrace);
            assert!(ex.dsc.is_some());
        }
    }

    #[test]
    fn inject_selected_propagators() {
        let c = ctx(true);
        assert!(inject(&c, None, &[], None, None, None).is_empty());
        let h = inject(&c, None, &[Propagator::Jaeger], None, None, None);
        assert_eq!(
            h,
            vec![("uber-trace-id", format!("{TRACE}:b7ad6b7169203331:0:1"))]
        );
        let j = UberTraceId::parse(&h[0].1).unwrap();
        assert_eq!(
            (j.trace_id, j.span_id, j.sampled()),
            (c.trace_id, c.span_id, true)
        );

        // Baggage without Sentry keeps third-party members, writes no DSC.
        let mut bag = Baggage::new();
        assert!(bag.insert("a", "1"));
        let dsc = DynamicSamplingContext::new(tid(TRACE), "pk");
        let h = inject(
            &c,
            None,
            &[Propagator::Baggage],
            None,
            Some(&bag),
            Some(&dsc),
        );
        assert_eq!(h, vec![("baggage", "a=1".to_string())]);
        // Sentry without Baggage writes only the DSC members.
        let h = inject(
            &c,
            None,
            &[Propagator::Sentry],
            None,
            Some(&bag),
            Some(&dsc),
        );
        assert_eq!(h[0].0, "baggage");
        assert_eq!(
            h[0].1,
            format!("sentry-trace_id={TRACE},sentry-public_key=pk,sentry-sampled=true")
        );
        assert_eq!(
            h[1],
            ("sentry-trace", format!("{TRACE}-b7ad6b7169203331-1"))
        );
        // A DSC for another trace is not written; an empty tracestate is not written.
        let other = DynamicSamplingContext::new(tid("0af7651916cd43dd8448eb211c80319c"), "pk");
        let h = inject(
            &c,
            None,
            &[Propagator::TraceContext, Propagator::Sentry],
            Some(&TraceState::new()),
            None,
            Some(&other),
        );
        let names: Vec<_> = h.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["traceparent", "sentry-trace"]);
        // Duplicated propagators give each header once.
        let h = inject(
            &c,
            None,
            &[Propagator::TraceContext, Propagator::TraceContext],
            None,
            None,
            None,
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].1, format!("00-{TRACE}-b7ad6b7169203331-01"));
    }

    #[test]
    fn inject_unsampled_clears_only_the_sampled_bit() {
        let h = inject(
            &ctx(false),
            Some(0x03),
            &[Propagator::TraceContext, Propagator::Jaeger],
            None,
            None,
            None,
        );
        assert_eq!(h[0].1, format!("00-{TRACE}-b7ad6b7169203331-02"));
        assert_eq!(h[1].1, format!("{TRACE}:b7ad6b7169203331:0:0"));
    }

    #[test]
    fn helpers() {
        assert_eq!(trim_ows(" \t a b\t "), "a b");
        assert_eq!(trim_ows("\na\r"), "\na\r");
        assert_eq!(lower_hex::<2>(b"0aff"), Some([0x0a, 0xff]));
        assert_eq!(lower_hex::<2>(b"0AFF"), None);
        assert_eq!(lower_hex::<2>(b"0af"), None);
        assert_eq!(percent_decode_strict("a%3Ab%3ac"), Some("a:b:c".into()));
        assert_eq!(percent_decode_strict("%+1"), None);
        assert_eq!(percent_decode_strict("%4"), None);
        assert_eq!(percent_decode_strict("%ff"), None);
    }
}
