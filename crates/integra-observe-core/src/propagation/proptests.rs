//! Property tests: no parser panics on any input, and valid values round-trip.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    // No regression files: the crate's source tree is not ours to write into.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that are often close to valid headers, plus arbitrary text.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F:%3-]{0,80}",
        "[ \t]{0,2}[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]{0,8})?[ \t]{0,2}",
        "[a-z0-9@_*/=, \t-]{0,120}",
        "[ -~]{0,200}",
    ]
}

/// Arbitrary bytes read leniently as text, so that every parser also sees broken UTF-8 remnants.
fn lossy_bytes() -> impl Strategy<Value = String> {
    vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

const NAMES: [&str; 9] = [
    TRACEPARENT,
    TRACESTATE,
    BAGGAGE,
    SENTRY_TRACE,
    UBER_TRACE_ID,
    X_TRACE_ID,
    X_SPAN_ID,
    X_PARENT_SPAN_ID,
    "TraceParent",
];

fn parse_everything(s: &str) {
    let _ = TraceParent::parse(s);
    let _ = TraceState::parse(&[s]);
    let _ = TraceState::parse(&[s, s]);
    let _ = Baggage::parse(&[s]);
    let _ = SentryTrace::parse(s);
    let _ = UberTraceId::parse(s);
    if let Some(b) = Baggage::parse(&[s]) {
        let _ = DynamicSamplingContext::from_baggage(&b);
        assert!(b.to_header().len() <= Baggage::MAX_BYTES);
    }
}

/// A valid tracestate key, simple or multi-tenant.
fn ts_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_*/-]{0,20}",
        "[a-z0-9][a-z0-9_*/-]{0,10}@[a-z][a-z0-9_*/-]{0,13}",
    ]
}

/// A valid tracestate value.
fn ts_value() -> impl Strategy<Value = String> {
    "[ -+\\--<>-~]{0,30}[!-+\\--<>-~]"
}

/// Any text short enough that 30 members stay within 8192 bytes once encoded.
fn any_text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..16).prop_map(String::from_iter)
}

/// An HTTP token.
fn token() -> impl Strategy<Value = String> {
    "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsers_never_panic_on_text(s in header_text()) {
        parse_everything(&s);
    }

    #[test]
    fn parsers_never_panic_on_bytes(s in lossy_bytes()) {
        parse_everything(&s);
    }

    #[test]
    fn extract_never_panics(
        headers in vec((0..NAMES.len(), header_text()), 0..8),
        raw in vec((0..NAMES.len(), vec(any::<u8>(), 0..80)), 0..4),
    ) {
        let pairs: Vec<(&str, &str)> =
            headers.iter().map(|(i, v)| (NAMES[*i], v.as_str())).collect();
        let ex = extract(&pairs);
        prop_assert_eq!(ex.remote.is_some(), ex.source != ContextSource::None);
        if ex.source != ContextSource::TraceParent {
            prop_assert!(ex.tracestate.is_none());
        }
        // Raw bytes, including invalid UTF-8.
        struct Raw<'a>(&'a [(usize, Vec<u8>)]);
        impl HeaderSource for Raw<'_> {
            fn values(&self, name: &str) -> Vec<&[u8]> {
                self.0
                    .iter()
                    .filter(|(i, _)| NAMES[*i].eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_slice())
                    .collect()
            }
        }
        let _ = extract(&Raw(&raw));
    }

    #[test]
    fn valid_traceparent_reinjects_byte_for_byte(
        version in 0u8..=0xfe,
        trace in any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]),
        parent in any::<[u8; 8]>().prop_filter("non-zero", |b| *b != [0; 8]),
        flags in any::<u8>(),
    ) {
        let input = format!(
            "{version:02x}-{}-{}-{flags:02x}",
            TraceId::from_bytes(trace),
            SpanId::from_bytes(parent)
        );
        let tp = TraceParent::parse(&input);
        prop_assert!(tp.is_some(), "{}", input);
        let tp = tp.unwrap();
        prop_assert_eq!(tp.to_header(), input.clone());
        prop_assert_eq!(tp.flags, flags);
        // Through extract and inject (as version 00), the flags byte is kept.
        let r = extract(&[("traceparent", input.as_str())]).remote.unwrap();
        let ctx = SpanContext::new(r.trace_id, r.span_id, tp.sampled());
        let out = inject(&ctx, Some(r.flags), &[Propagator::TraceContext], None, None, None);
        prop_assert_eq!(&out[0].1[3..], &input[3..]);
    }

    #[test]
    fn mutated_traceparent_never_panics(pos in 0usize..60, c in any::<char>()) {
        let mut s: Vec<char> = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".chars().collect();
        if pos < s.len() { s[pos] = c } else { s.push(c) }
        let s: String = s.into_iter().collect();
        if let Some(tp) = TraceParent::parse(&s) {
            // Whatever is accepted is canonical lowercase hex.
            prop_assert_eq!(tp.to_header(), s.trim_matches([' ', '\t']).to_string());
        }
    }

    #[test]
    fn valid_tracestate_round_trips(members in btree_map(ts_key(), ts_value(), 1..=32)) {
        let header = members
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let ts = TraceState::parse(&[&header]);
        prop_assert!(ts.is_some(), "{}", header);
        let ts = ts.unwrap();
        prop_assert_eq!(ts.len(), members.len());
        prop_assert_eq!(ts.to_header(), header.clone());
        // Split across headers at any member boundary.
        let parts: Vec<&str> = header.split(',').collect();
        prop_assert_eq!(TraceState::parse(&parts), Some(ts));
    }

    #[test]
    fn valid_baggage_round_trips(members in btree_map(token(), any_text(), 1..30)) {
        let mut b = Baggage::new();
        for (k, v) in &members {
            prop_assert!(b.insert(k, v));
        }
        let header = b.to_header();
        prop_assert!(header.len() <= Baggage::MAX_BYTES);
        let back = Baggage::parse(&[&header]);
        prop_assert_eq!(back.as_ref(), Some(&b));
        for (k, v) in &members {
            prop_assert_eq!(back.as_ref().and_then(|b| b.get(k)), Some(v.as_str()));
        }
    }

    #[test]
    fn sentry_trace_round_trips(
        trace in any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]),
        span in any::<[u8; 8]>().prop_filter("non-zero", |b| *b != [0; 8]),
        sampled in any::<Option<bool>>(),
    ) {
        let st = SentryTrace::new(TraceId::from_bytes(trace), SpanId::from_bytes(span), sampled);
        prop_assert_eq!(SentryTrace::parse(&st.to_header()), Some(st));
    }

    #[test]
    fn uber_trace_id_round_trips(
        trace in any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]),
        span in any::<[u8; 8]>().prop_filter("non-zero", |b| *b != [0; 8]),
        parent in any::<[u8; 8]>(),
        flags in any::<u8>(),
    ) {
        let parent = SpanId::from_bytes(parent);
        let j = UberTraceId {
            trace_id: TraceId::from_bytes(trace),
            span_id: SpanId::from_bytes(span),
            parent_span_id: parent.is_valid().then_some(parent),
            flags,
        };
        prop_assert_eq!(UberTraceId::parse(&j.to_header()), Some(j));
    }

    #[test]
    fn inject_then_extract_agrees(
        trace in any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]),
        span in any::<[u8; 8]>().prop_filter("non-zero", |b| *b != [0; 8]),
        sampled in any::<bool>(),
        flags in any::<Option<u8>>(),
        which in 0usize..4,
    ) {
        let ctx = SpanContext::new(TraceId::from_bytes(trace), SpanId::from_bytes(span), sampled);
        let all = [Propagator::TraceContext, Propagator::Sentry, Propagator::Jaeger];
        let props: &[Propagator] = if which == 3 { &all } else { &all[which..=which] };
        let out = inject(&ctx, flags, props, None, None, None);
        let pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = extract(&pairs).remote.unwrap();
        prop_assert_eq!((r.trace_id, r.span_id, r.sampled), (ctx.trace_id, ctx.span_id, Some(sampled)));
    }
}
