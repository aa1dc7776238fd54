//! The signed edge header: what our Worker saw at the edge, signed so a backend can believe it.
//!
//! Anyone who reaches an origin directly can send `CF-Ray`, `CF-Connecting-IP` or `traceparent`,
//! and another customer's Worker also connects from Cloudflare's addresses. So our Worker signs
//! the facts it vouches for — the trace context it forwards, the user-facing ray id (the origin's
//! own `cf-ray` is a new one per subrequest), colo, country, client address, scheme — with a
//! timestamp, using HMAC-SHA256 and a secret shared with the backends:
//!
//! ```text
//! x-integra-edge: v1;ts=1732540000;ray=230b030023ae2822-SJC;tp=00-…-01;colo=SJC;cc=US;ip=203.0.113.7;proto=https;sig=<64 hex>
//! ```
//!
//! The signature covers every byte before `;sig=`. A backend accepts the header only when the
//! signature matches (compared in constant time) and the timestamp is within the clock-skew
//! window. Nothing here reads the clock (the caller passes the time) or the network, so the same
//! code signs in a Worker (wasm32) and verifies in a service. A secret never appears in a
//! `Debug` or `Display` output.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER_NAME: &str = "x-integra-edge";
/// The only format version.
pub const VERSION: &str = "v1";
/// The default clock-skew window, in seconds, either way.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;
/// Longest header value accepted.
pub const MAX_HEADER_LEN: usize = 1024;
/// Longest claim value; a longer (or otherwise unsafe) value is left out when signing.
pub const MAX_VALUE_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// What the Worker vouches for. Every field but the timestamp is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EdgeClaims {
    /// When the Worker signed, in seconds since the Unix epoch (`ts`).
    pub timestamp: u64,
    /// The user-facing `CF-Ray` header value the Worker received (`ray`).
    pub ray: Option<String>,
    /// The `traceparent` the Worker sends to the origin (`tp`).
    pub traceparent: Option<String>,
    /// The colo that served the user, `request.cf.colo` (`colo`).
    pub colo: Option<String>,
    /// The user's country, `CF-IPCountry` / `request.cf.country` (`cc`).
    pub country: Option<String>,
    /// The user's address, `CF-Connecting-IP` (`ip`).
    pub client_ip: Option<String>,
    /// The scheme the user spoke to Cloudflare, `http` or `https` (`proto`).
    pub scheme: Option<String>,
}

impl EdgeClaims {
    /// Claims signed at `timestamp` (seconds since the Unix epoch), nothing else set yet.
    pub fn new(timestamp: u64) -> Self {
        EdgeClaims {
            timestamp,
            ..Default::default()
        }
    }

    fn fields(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("ray", self.ray.as_deref()),
            ("tp", self.traceparent.as_deref()),
            ("colo", self.colo.as_deref()),
            ("cc", self.country.as_deref()),
            ("ip", self.client_ip.as_deref()),
            ("proto", self.scheme.as_deref()),
        ]
    }

    /// The signed part of the header: `v1;ts=…` and each safe field in a fixed order.
    fn payload(&self) -> String {
        let mut out = format!("{VERSION};ts={}", self.timestamp);
        for (key, value) in self.fields() {
            if let Some(v) = value.filter(|v| is_safe_value(v)) {
                out.push(';');
                out.push_str(key);
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }
}

/// A value may hold letters, digits and `.` `_` `:` `-` (ray ids, traceparents, IPs, codes).
fn is_safe_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_VALUE_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Why a header was not accepted. The caller ignores the header in every case: it is never an
/// error for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeHeaderError {
    /// Not the `v1;…;sig=<64 hex>` form, too long, or a field is repeated or malformed.
    Malformed,
    /// The signature does not match any configured secret.
    BadSignature,
    /// The timestamp is further from now than the clock-skew window.
    OutsideWindow {
        /// The header's timestamp.
        timestamp: u64,
        /// The verifier's time.
        now: u64,
    },
}

impl std::fmt::Display for EdgeHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeHeaderError::Malformed => write!(f, "malformed {HEADER_NAME} header"),
            EdgeHeaderError::BadSignature => write!(f, "{HEADER_NAME} signature does not match"),
            EdgeHeaderError::OutsideWindow { timestamp, now } => write!(
                f,
                "{HEADER_NAME} timestamp {timestamp} is outside the clock-skew window (now {now})"
            ),
        }
    }
}

impl std::error::Error for EdgeHeaderError {}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => HmacSha256::new(&Default::default()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let v = |c: u8| char::from(c).to_digit(16);
            Some(((v(p[0])? << 4) | v(p[1])?) as u8)
        })
        .collect()
}

/// The header value for `claims`, signed with `secret` (HMAC-SHA256, lowercase hex). A claim
/// whose value is empty, longer than [`MAX_VALUE_LEN`] or holds other characters than letters,
/// digits and `.` `_` `:` `-` is left out.
///
/// ```
/// use integra_observe_cloudflare::edge_header::{sign, verify, EdgeClaims};
/// let mut claims = EdgeClaims::new(1_732_540_000);
/// claims.ray = Some("230b030023ae2822-SJC".into());
/// let header = sign(&claims, b"a shared secret of 32+ bytes....");
/// assert!(header.starts_with("v1;ts=1732540000;ray=230b030023ae2822-SJC;sig="));
/// let back = verify(&header, &[b"a shared secret of 32+ bytes...."], 1_732_540_010, 300).unwrap();
/// assert_eq!(back, claims);
/// ```
pub fn sign(claims: &EdgeClaims, secret: &[u8]) -> String {
    let payload = claims.payload();
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    let sig = hex(&m.finalize().into_bytes());
    format!("{payload};sig={sig}")
}

/// Checks a header value against each of `secrets` (the current one and, while rotating, the
/// previous one) and the clock: `now` in seconds since the Unix epoch, accepted when the
/// timestamp is at most `max_skew_secs` away either way. The signature is compared in constant
/// time; the claims are returned only when it matches.
pub fn verify<K: AsRef<[u8]>>(
    value: &str,
    secrets: &[K],
    now: u64,
    max_skew_secs: u64,
) -> Result<EdgeClaims, EdgeHeaderError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(EdgeHeaderError::Malformed);
    }
    let (payload, sig) = value
        .rsplit_once(";sig=")
        .ok_or(EdgeHeaderError::Malformed)?;
    let sig = match unhex(sig) {
        Some(s) if s.len() == 32 => s,
        _ => return Err(EdgeHeaderError::Malformed),
    };
    let signed = secrets.iter().any(|secret| {
        let mut m = mac(secret.as_ref());
        m.update(payload.as_bytes());
        m.verify_slice(&sig).is_ok() // constant-time comparison
    });
    if !signed {
        return Err(EdgeHeaderError::BadSignature);
    }
    let claims = parse_payload(payload).ok_or(EdgeHeaderError::Malformed)?;
    if claims.timestamp.abs_diff(now) > max_skew_secs {
        return Err(EdgeHeaderError::OutsideWindow {
            timestamp: claims.timestamp,
            now,
        });
    }
    Ok(claims)
}

fn parse_payload(payload: &str) -> Option<EdgeClaims> {
    let mut parts = payload.split(';');
    if parts.next()? != VERSION {
        return None;
    }
    let mut claims = EdgeClaims::default();
    let mut seen_ts = false;
    for part in parts {
        let (key, value) = part.split_once('=')?;
        if !is_safe_value(value) {
            return None;
        }
        let slot = match key {
            "ts" => {
                if seen_ts || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                seen_ts = true;
                claims.timestamp = value.parse().ok()?;
                continue;
            }
            "ray" => &mut claims.ray,
            "tp" => &mut claims.traceparent,
            "colo" => &mut claims.colo,
            "cc" => &mut claims.country,
            "ip" => &mut claims.client_ip,
            "proto" => &mut claims.scheme,
            // A later Worker may sign more; the signature already covers it.
            _ => continue,
        };
        if slot.replace(value.to_owned()).is_some() {
            return None;
        }
    }
    seen_ts.then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_732_540_000;

    fn claims() -> EdgeClaims {
        let mut c = EdgeClaims::new(NOW);
        c.ray = Some("230b030023ae2822-SJC".into());
        c.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        c.colo = Some("SJC".into());
        c.country = Some("US".into());
        c.client_ip = Some("2001:db8::7".into());
        c.scheme = Some("https".into());
        c
    }

    #[test]
    fn round_trips_every_claim() {
        let header = sign(&claims(), SECRET);
        assert_eq!(verify(&header, &[SECRET], NOW, 300), Ok(claims()));
    }

    #[test]
    fn matches_the_documented_vector() {
        // The same value the TypeScript Worker computes (docs/cloudflare.md, tests/cloudflare).
        let mut c = EdgeClaims::new(1_700_000_000);
        c.ray = Some("230b030023ae2822-SJC".into());
        let header = sign(&c, b"test-secret-test-secret-test-sec");
        assert_eq!(
            header,
            "v1;ts=1700000000;ray=230b030023ae2822-SJC;sig=88cb036fb98c83393ba1f753b3b8fbcf406689d5d4dd7b1f8bab647c5c06eafc"
        );
    }

    #[test]
    fn the_clock_skew_window_holds_both_ways() {
        let header = sign(&claims(), SECRET);
        assert!(verify(&header, &[SECRET], NOW + 300, 300).is_ok());
        assert!(verify(&header, &[SECRET], NOW - 300, 300).is_ok());
        assert_eq!(
            verify(&header, &[SECRET], NOW + 301, 300),
            Err(EdgeHeaderError::OutsideWindow {
                timestamp: NOW,
                now: NOW + 301
            })
        );
        assert!(matches!(
            verify(&header, &[SECRET], NOW - 301, 300),
            Err(EdgeHeaderError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn a_forged_or_tampered_header_is_refused() {
        let header = sign(&claims(), SECRET);
        // Another secret.
        let forged = sign(&claims(), b"not-the-secret-not-the-secret-!!");
        assert_eq!(
            verify(&forged, &[SECRET], NOW, 300),
            Err(EdgeHeaderError::BadSignature)
        );
        // A changed claim under the original signature.
        let tampered = header.replace("ray=230b030023ae2822", "ray=ffffffffffffffff");
        assert_eq!(
            verify(&tampered, &[SECRET], NOW, 300),
            Err(EdgeHeaderError::BadSignature)
        );
        let tampered = header.replace("ts=1732540000", "ts=1732549999");
        assert_eq!(
            verify(&tampered, &[SECRET], NOW, 300),
            Err(EdgeHeaderError::BadSignature)
        );
        // A flipped signature digit.
        let mut bytes = header.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            verify(&flipped, &[SECRET], NOW, 300),
            Err(EdgeHeaderError::BadSignature)
        );
        // An expired but genuine header.
        let old = sign(&EdgeClaims::new(NOW - 3600), SECRET);
        assert!(matches!(
            verify(&old, &[SECRET], NOW, 300),
            Err(EdgeHeaderError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn a_previous_secret_still_verifies_while_rotating() {
        let header = sign(&claims(), b"old-secret-old-secret-old-secret");
        let secrets: [&[u8]; 2] = [SECRET, b"old-secret-old-secret-old-secret"];
        assert!(verify(&header, &secrets, NOW, 300).is_ok());
        assert_eq!(
            verify(&header, &[SECRET], NOW, 300),
            Err(EdgeHeaderError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let sig = "0".repeat(64);
        for bad in [
            String::new(),
            "v1;ts=1".into(),
            format!("v1;ts=1;sig={}", "0".repeat(63)),
            format!("v1;ts=1;sig={}", "g".repeat(64)),
            format!("v1;ts=1;sig={sig}00"),
            "x".repeat(MAX_HEADER_LEN + 1),
        ] {
            assert_eq!(
                verify(&bad, &[SECRET], NOW, 300),
                Err(EdgeHeaderError::Malformed),
                "{bad:?}"
            );
        }
        // Well signed but malformed inside: wrong version, repeated field, no timestamp.
        for payload in [
            "v2;ts=1",
            "v1;ts=1;ts=2",
            "v1;ray=a;ray=b;ts=1",
            "v1;ray=a",
            "v1;ts=x",
            "v1;ts=1;ray",
        ] {
            let mut m = mac(SECRET);
            m.update(payload.as_bytes());
            let header = format!("{payload};sig={}", hex(&m.finalize().into_bytes()));
            assert_eq!(
                verify(&header, &[SECRET], 1, 300),
                Err(EdgeHeaderError::Malformed),
                "{payload}"
            );
        }
    }

    #[test]
    fn unsafe_values_are_left_out_when_signing() {
        let mut c = EdgeClaims::new(5);
        c.ray = Some("a;sig=00".into());
        c.colo = Some(String::new());
        c.country = Some("x".repeat(MAX_VALUE_LEN + 1));
        c.scheme = Some("https".into());
        let header = sign(&c, SECRET);
        assert!(header.starts_with("v1;ts=5;proto=https;sig="), "{header}");
        let back = verify(&header, &[SECRET], 5, 0).unwrap();
        assert_eq!((back.ray, back.scheme.as_deref()), (None, Some("https")));
    }

    #[test]
    fn unknown_fields_are_ignored_once_signed() {
        let payload = "v1;ts=7;future=1;ray=230b030023ae2822-SJC";
        let mut m = mac(SECRET);
        m.update(payload.as_bytes());
        let header = format!("{payload};sig={}", hex(&m.finalize().into_bytes()));
        let c = verify(&header, &[SECRET], 7, 0).unwrap();
        assert_eq!(c.ray.as_deref(), Some("230b030023ae2822-SJC"));
    }
}
