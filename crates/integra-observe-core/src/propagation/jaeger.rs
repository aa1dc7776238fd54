//! Jaeger's `uber-trace-id` header
//! (<https://www.jaegertracing.io/docs/1.21/client-libraries/#propagation-format>) and the edge
//! team's `x-trace-id` / `x-span-id` / `x-parent-span-id` headers.

use super::{
    any_hex_digit, percent_decode_strict, single_value, trim_ows, HeaderSource, X_PARENT_SPAN_ID,
    X_SPAN_ID, X_TRACE_ID,
};
use crate::{SpanId, TraceId};

/// An `uber-trace-id` header: `{trace-id}:{span-id}:{parent-span-id}:{flags}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UberTraceId {
    /// The trace (64-bit ids are read as 128-bit ids with a zero upper half).
    pub trace_id: TraceId,
    /// The caller's span.
    pub span_id: SpanId,
    /// The caller's parent span (deprecated by Jaeger); `None` for `0`.
    pub parent_span_id: Option<SpanId>,
    /// The flags byte: `0x01` sampled, `0x02` debug, `0x08` firehose.
    pub flags: u8,
}

impl UberTraceId {
    /// The `sampled` flag bit.
    pub const FLAG_SAMPLED: u8 = 0x01;
    /// The `debug` flag bit.
    pub const FLAG_DEBUG: u8 = 0x02;

    /// A header from its parts, without a parent span.
    pub fn new(trace_id: TraceId, span_id: SpanId, flags: u8) -> Self {
        UberTraceId {
            trace_id,
            span_id,
            parent_span_id: None,
            flags,
        }
    }

    /// Parses one `uber-trace-id` value.
    ///
    /// The value may be URL-encoded (`%3A` for `:`), as some HTTP clients send it. Ids are hex of
    /// either case with leading zeros optional: trace id 1-32 digits, span and parent span id
    /// 1-16 digits; flags are 1-2 hex digits, as Jaeger's format defines them. The trace and span
    /// ids must not be zero. Spaces and tabs around the value are ignored.
    ///
    /// ```
    /// use integra_observe_core::propagation::UberTraceId;
    /// let j = UberTraceId::parse("5d76e0cc2e2f5a2a%3A5d76e0cc2e2f5a2a%3A0%3A1").unwrap();
    /// assert_eq!(j.trace_id.to_string(), "00000000000000005d76e0cc2e2f5a2a");
    /// assert!(j.sampled());
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        let value = trim_ows(value);
        let decoded;
        let value = if value.contains('%') {
            decoded = percent_decode_strict(value)?;
            decoded.as_str()
        } else {
            value
        };
        let mut parts = value.split(':');
        let trace = parts.next()?;
        let span = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let trace_id = TraceId::from_bytes(hex_number(trace, 32)?.to_be_bytes());
        let span_id = SpanId::from_bytes(u64::try_from(hex_number(span, 16)?).ok()?.to_be_bytes());
        let parent_span_id =
            SpanId::from_bytes(u64::try_from(hex_number(parent, 16)?).ok()?.to_be_bytes());
        let flags = u8::try_from(hex_number(flags, 2)?).ok()?;
        (trace_id.is_valid() && span_id.is_valid()).then_some(UberTraceId {
            trace_id,
            span_id,
            parent_span_id: parent_span_id.is_valid().then_some(parent_span_id),
            flags,
        })
    }

    /// The header value: 32-digit trace id, 16-digit span id, parent span id (or `0`), flags
    /// in hex.
    pub fn to_header(&self) -> String {
        let parent = self
            .parent_span_id
            .map_or_else(|| "0".to_owned(), |p| p.to_string());
        format!(
            "{}:{}:{}:{:x}",
            self.trace_id, self.span_id, parent, self.flags
        )
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & Self::FLAG_SAMPLED != 0
    }
}

/// 1 to `max_digits` (at most 32) hex digits of either case.
fn hex_number(s: &str, max_digits: usize) -> Option<u128> {
    if s.is_empty() || s.len() > max_digits.min(32) {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, c| {
        Some((acc << 4) | u128::from(any_hex_digit(c)?))
    })
}

/// The edge team's headers: `x-trace-id` (32 lowercase hex), `x-span-id` (16 lowercase hex, the
/// caller's span) and, read only, `x-parent-span-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EdgeTraceIds {
    /// `x-trace-id`.
    pub trace_id: TraceId,
    /// `x-span-id`: the caller's span.
    pub span_id: SpanId,
    /// `x-parent-span-id`, when present and valid (informational: it is the caller's parent).
    pub parent_span_id: Option<SpanId>,
}

impl EdgeTraceIds {
    /// Reads the headers; `None` unless `x-trace-id` and `x-span-id` each appear once and are
    /// valid (lowercase hex, not zero; spaces and tabs around them ignored). An invalid
    /// `x-parent-span-id` is ignored.
    pub fn from_headers(headers: &(impl HeaderSource + ?Sized)) -> Option<Self> {
        let id = |name| single_value(headers, name).map(trim_ows);
        Some(EdgeTraceIds {
            trace_id: TraceId::from_hex(id(X_TRACE_ID)?)?,
            span_id: SpanId::from_hex(id(X_SPAN_ID)?)?,
            parent_span_id: id(X_PARENT_SPAN_ID).and_then(SpanId::from_hex),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "1234567890abcdef1234567890abcdef";
    const S: &str = "1234567890abcdef";

    fn j(s: &str) -> Option<UberTraceId> {
        UberTraceId::parse(s)
    }

    #[test]
    fn full_ids() {
        let v = j(&format!("{T}:{S}:0:1")).unwrap();
        assert_eq!(v.trace_id.to_string(), T);
        assert_eq!(v.span_id.to_string(), S);
        assert_eq!(v.parent_span_id, None);
        assert_eq!(v.flags, 1);
        assert!(v.sampled());
        assert_eq!(v.to_header(), format!("{T}:{S}:0:1"));
        let v = j(&format!("{T}:{S}:fedcba0987654321:0")).unwrap();
        assert_eq!(v.parent_span_id.unwrap().to_string(), "fedcba0987654321");
        assert!(!v.sampled());
        assert_eq!(v.to_header(), format!("{T}:{S}:fedcba0987654321:0"));
    }

    #[test]
    fn short_ids_are_left_padded() {
        let v = j("abc:1:0:1").unwrap();
        assert_eq!(v.trace_id.to_string(), "00000000000000000000000000000abc");
        assert_eq!(v.span_id.to_string(), "0000000000000001");
        let v = j("5d76e0cc2e2f5a2a:5d76e0cc2e2f5a2a:0:3").unwrap();
        assert_eq!(v.trace_id.to_string(), "00000000000000005d76e0cc2e2f5a2a");
        assert_eq!(
            v.to_header(),
            "00000000000000005d76e0cc2e2f5a2a:5d76e0cc2e2f5a2a:0:3"
        );
        // Uppercase is hex too; it is written back in lowercase.
        let v = j("ABC:DEF:0:1").unwrap();
        assert_eq!(
            v.to_header(),
            "00000000000000000000000000000abc:0000000000000def:0:1"
        );
    }

    #[test]
    fn url_encoded() {
        for s in [
            format!("{T}%3A{S}%3A0%3A1"),
            format!("{T}%3a{S}%3a0%3a1"),
            format!("{T}%3A{S}:0%3A1"),
        ] {
            assert_eq!(j(&s).unwrap().to_header(), format!("{T}:{S}:0:1"), "{s}");
        }
        assert_eq!(j(&format!("{T}%3{S}:0:1")), None);
        assert_eq!(j(&format!("{T}%3G{S}:0:1")), None);
        assert_eq!(j(&format!("{T}%FF{S}:0:1")), None);
        assert_eq!(j(&format!("{T}%2B3A{S}:0:1")), None);
    }

    #[test]
    fn flags() {
        for (f, v) in [
            ("0", 0),
            ("1", 1),
            ("2", 2),
            ("3", 3),
            ("9", 9),
            ("b", 11),
            ("0b", 11),
            ("ff", 255),
        ] {
            assert_eq!(j(&format!("{T}:{S}:0:{f}")).unwrap().flags, v, "{f}");
        }
        assert!(j(&format!("{T}:{S}:0:3")).unwrap().sampled());
        assert!(!j(&format!("{T}:{S}:0:2")).unwrap().sampled());
        assert_eq!(j(&format!("{T}:{S}:0:001")), None);
        assert_eq!(j(&format!("{T}:{S}:0:")), None);
        assert_eq!(j(&format!("{T}:{S}:0:x")), None);
        assert_eq!(j(&format!("{T}:{S}:0:-1")), None);
        assert_eq!(j(&format!("{T}:{S}:0:+1")), None);
        assert_eq!(
            UberTraceId::new(
                TraceId::from_hex(T).unwrap(),
                SpanId::from_hex(S).unwrap(),
                11
            )
            .to_header(),
            format!("{T}:{S}:0:b")
        );
    }

    #[test]
    fn invalid_forms() {
        for s in [
            String::new(),
            ":::".into(),
            format!("{T}:{S}:0"),
            format!("{T}:{S}:0:1:1"),
            format!(":{S}:0:1"),
            format!("{T}::0:1"),
            format!("{T}:{S}::1"),
            format!("{T}0:{S}:0:1"),
            format!("{T}:{S}0:0:1"),
            format!("{T}:{S}:{S}0:1"),
            format!("0:{S}:0:1"),
            format!("{T}:0000:0:1"),
            format!("{T}:{S}:0:1 extra"),
            format!("{T}-{S}-0-1"),
            format!("{T}:+{}:0:1", &S[1..]),
            format!("{T}:{S}:é:1"),
        ] {
            assert_eq!(j(&s), None, "{s}");
        }
        assert!(j(&format!(" \t{T}:{S}:0:1\t ")).is_some());
    }

    #[test]
    fn edge_ids() {
        let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
        let sid = "00f067aa0ba902b7";
        let e = EdgeTraceIds::from_headers(&[("X-Trace-Id", tid), ("x-span-id", sid)]).unwrap();
        assert_eq!(
            (e.trace_id.to_string(), e.span_id.to_string()),
            (tid.into(), sid.into())
        );
        assert_eq!(e.parent_span_id, None);
        let e = EdgeTraceIds::from_headers(&[
            ("x-trace-id", tid),
            ("x-span-id", sid),
            ("x-parent-span-id", "b7ad6b7169203331"),
        ])
        .unwrap();
        assert_eq!(e.parent_span_id.unwrap().to_string(), "b7ad6b7169203331");
        let e = EdgeTraceIds::from_headers(&[
            ("x-trace-id", tid),
            ("x-span-id", sid),
            ("x-parent-span-id", "bad"),
        ])
        .unwrap();
        assert_eq!(e.parent_span_id, None);
        assert!(EdgeTraceIds::from_headers(&[("x-trace-id", tid)]).is_none());
        assert!(EdgeTraceIds::from_headers(&[("x-span-id", sid)]).is_none());
        assert!(EdgeTraceIds::from_headers(&[
            ("x-trace-id", tid.to_uppercase().as_str()),
            ("x-span-id", sid)
        ])
        .is_none());
        assert!(
            EdgeTraceIds::from_headers(&[("x-trace-id", &tid[1..]), ("x-span-id", sid)]).is_none()
        );
        assert!(EdgeTraceIds::from_headers(&[
            ("x-trace-id", tid),
            ("x-trace-id", tid),
            ("x-span-id", sid)
        ])
        .is_none());
        assert!(EdgeTraceIds::from_headers(&[
            ("x-trace-id", " 4bf92f3577b34da6a3ce929d0e0e4736 "),
            ("x-span-id", sid)
        ])
        .is_some());
    }
}
