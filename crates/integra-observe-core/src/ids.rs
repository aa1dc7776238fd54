//! Trace and span ids, as W3C Trace Context carries them (lowercase hex).

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The id from its bytes. All zeros is the invalid id (see [`Self::is_valid`]).
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The id's bytes.
            pub const fn to_bytes(self) -> [u8; $len] {
                self.0
            }

            /// Whether the id is not all zeros.
            pub fn is_valid(&self) -> bool {
                self.0 != [0; $len]
            }

            /// Parses exactly
            #[doc = concat!(stringify!($len), " bytes as ", stringify!($len), "×2 lowercase hex digits.")]
            /// Uppercase, other lengths and the all-zero id are rejected.
            pub fn from_hex(s: &str) -> Option<Self> {
                let s = s.as_bytes();
                if s.len() != $len * 2 {
                    return None;
                }
                let mut out = [0u8; $len];
                for (i, pair) in s.chunks_exact(2).enumerate() {
                    out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
                }
                let id = Self(out);
                id.is_valid().then_some(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

id_type!(
    /// A 16-byte trace id.
    ///
    /// ```
    /// use integra_observe_core::TraceId;
    /// let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    /// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert!(TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
    /// ```
    TraceId, 16);
id_type!(
    /// An 8-byte span id.
    SpanId, 8);

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The identity of one span: what a Sentry event's `contexts.trace` and a W3C `traceparent` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpanContext {
    /// The trace the span belongs to.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// Whether the trace is sampled (recorded and exported).
    pub sampled: bool,
}

impl SpanContext {
    /// A span context from its parts.
    pub fn new(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Self {
        SpanContext {
            trace_id,
            span_id,
            sampled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let s = "00f067aa0ba902b7";
        assert_eq!(SpanId::from_hex(s).unwrap().to_string(), s);
        assert!(SpanId::from_hex("0000000000000000").is_none());
        assert!(SpanId::from_hex("00f067aa0ba902b").is_none());
        assert!(SpanId::from_hex("00f067aa0ba902bg").is_none());
        assert!(SpanId::from_hex("00f067aa0ba902b7a").is_none());
    }
}
