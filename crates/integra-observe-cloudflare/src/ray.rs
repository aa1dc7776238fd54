//! Cloudflare ray ids (`CF-Ray: 230b030023ae2822-SJC`) and the trace id every hop derives from one.
//!
//! A ray id is 16 hex digits, a dash and the colo (the data centre's IATA code). Cloudflare does not
//! promise it is unique, and every Worker subrequest gets a new one, so a backend behind a Worker
//! must not take its own `cf-ray` for the user's. The derivation lets the Worker and every backend
//! agree on a trace id without talking to each other: the first 16 bytes of
//! SHA-256(`"cf-ray:v1:"` + the full header value). Nothing here reads the clock or the network,
//! so it runs in a Worker (wasm32) as well as in a service.

use integra_observe_core::{SpanId, TraceId};
use sha2::{Digest, Sha256};

/// The prefix hashed before the ray header: a version, so the derivation can change safely.
pub const DERIVATION_PREFIX: &str = "cf-ray:v1:";

/// Longest `CF-Ray` value accepted (16 hex digits, a dash, a colo code of up to 8 characters).
pub const MAX_RAY_LEN: usize = 25;

/// A parsed `CF-Ray` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RayId {
    header: String,
    colo_at: Option<usize>,
}

impl RayId {
    /// Parses a `CF-Ray` value: 16 hex digits (either case), optionally followed by `-` and a
    /// colo code of 1 to 8 ASCII letters or digits. Surrounding spaces are ignored; anything
    /// else (including a missing or malformed id) is `None`.
    ///
    /// ```
    /// let ray = integra_observe_cloudflare::RayId::parse("230b030023ae2822-SJC").unwrap();
    /// assert_eq!(ray.id(), "230b030023ae2822");
    /// assert_eq!(ray.colo(), Some("SJC"));
    /// assert!(integra_observe_cloudflare::RayId::parse("not-a-ray").is_none());
    /// ```
    pub fn parse(value: &str) -> Option<RayId> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if value.len() > MAX_RAY_LEN {
            return None;
        }
        let (id, colo) = match value.split_once('-') {
            Some((id, colo)) => (id, Some(colo)),
            None => (value, None),
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if let Some(colo) = colo {
            if colo.is_empty() || colo.len() > 8 || !colo.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return None;
            }
        }
        Some(RayId {
            header: value.to_owned(),
            colo_at: colo.map(|_| 17),
        })
    }

    /// The full header value as received (`230b030023ae2822-SJC`): what the derivation hashes.
    pub fn as_str(&self) -> &str {
        &self.header
    }

    /// The 16 hex digits.
    pub fn id(&self) -> &str {
        self.header.get(..16).unwrap_or_default()
    }

    /// The colo code (`SJC`), when the header carries one.
    pub fn colo(&self) -> Option<&str> {
        self.colo_at.and_then(|at| self.header.get(at..))
    }

    /// The trace id derived from this ray id ([`derive_trace_id`]).
    pub fn trace_id(&self) -> TraceId {
        derive_trace_id(&self.header)
    }

    /// The span id derived from this ray id ([`derive_span_id`]).
    pub fn span_id(&self) -> SpanId {
        derive_span_id(&self.header)
    }
}

impl std::fmt::Display for RayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.header)
    }
}

fn digest(ray_header: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DERIVATION_PREFIX.as_bytes());
    hasher.update(ray_header.as_bytes());
    hasher.finalize().into()
}

/// The trace id for a request that reached Cloudflare with ray header `ray_header` and no trace
/// context: the first 16 bytes of SHA-256(`"cf-ray:v1:"` + `ray_header`), the header hashed
/// exactly as received (`230b030023ae2822-SJC`, colo included). The Worker and every backend
/// compute the same id. (All zeros, the invalid id, has probability 2⁻¹²⁸; callers check
/// [`TraceId::is_valid`] and start a new trace then.)
///
/// ```
/// let id = integra_observe_cloudflare::derive_trace_id("230b030023ae2822-SJC");
/// assert_eq!(id.to_string(), "d68476f3b29aee2c4aa8940519c9e755");
/// ```
pub fn derive_trace_id(ray_header: &str) -> TraceId {
    let d = digest(ray_header);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    TraceId::from_bytes(out)
}

/// The span id that stands for the edge hop of a trace derived from a ray id: bytes 16 to 23 of
/// the same digest. A Worker that starts a trace from the ray id uses it as its own span id, so a
/// backend that derives the trace from a forwarded `cf-ray` gets the Worker's span as its parent.
///
/// ```
/// let id = integra_observe_cloudflare::derive_span_id("230b030023ae2822-SJC");
/// assert_eq!(id.to_string(), "0e5692a19d076c91");
/// ```
pub fn derive_span_id(ray_header: &str) -> SpanId {
    let d = digest(ray_header);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[16..24]);
    SpanId::from_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_ray_ids() {
        let r = RayId::parse("230b030023ae2822-SJC").unwrap();
        assert_eq!((r.id(), r.colo()), ("230b030023ae2822", Some("SJC")));
        assert_eq!(r.as_str(), "230b030023ae2822-SJC");
        let r = RayId::parse(" 8F1A2B3C4D5E6F70 ").unwrap();
        assert_eq!((r.id(), r.colo()), ("8F1A2B3C4D5E6F70", None));
        assert_eq!(
            RayId::parse("230b030023ae2822-LHR1").unwrap().colo(),
            Some("LHR1")
        );
    }

    #[test]
    fn rejects_bad_ray_ids() {
        for bad in [
            "",
            "-",
            "230b030023ae2822-",
            "230b030023ae282-SJC",
            "230b030023ae28221-SJC",
            "230b030023ae282g-SJC",
            "230b030023ae2822-SJC-X",
            "230b030023ae2822-S C",
            "230b030023ae2822-ABCDEFGHI",
            "230b030023ae2822;SJC",
            "ñ30b030023ae2822-SJC",
        ] {
            assert_eq!(RayId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn derivation_matches_the_documented_vector() {
        // sha256("cf-ray:v1:230b030023ae2822-SJC"), computed independently (see docs/cloudflare.md).
        let full = "d68476f3b29aee2c4aa8940519c9e7550e5692a19d076c91";
        assert_eq!(
            derive_trace_id("230b030023ae2822-SJC").to_string(),
            full[..32]
        );
        assert_eq!(
            derive_span_id("230b030023ae2822-SJC").to_string(),
            full[32..]
        );
        let ray = RayId::parse("230b030023ae2822-SJC").unwrap();
        assert_eq!(ray.trace_id(), derive_trace_id("230b030023ae2822-SJC"));
        // The colo is part of the input: another colo, another trace.
        assert_ne!(derive_trace_id("230b030023ae2822-LHR"), ray.trace_id());
    }
}
