//! The trust policy: which edge headers a service believes, and the [`EdgeContext`] it reads from
//! those it believes.
//!
//! The default trusts nothing: `CF-*` headers and the signed edge header are ignored. Two ways to
//! trust, which may be combined:
//!
//! * **Edge ranges** — the `CF-*` headers are believed when the request came from Cloudflare's
//!   addresses (the embedded list, or a replacement). Behind an ingress or load balancer of our
//!   own, the address checked is the right-most `X-Forwarded-For` hop that is not one of our
//!   ingress ranges. Another customer's Worker connects from the same ranges, so this alone does
//!   not prove the request passed *our* zone.
//! * **Edge secret** — the `x-integra-edge` header our Worker signs ([`crate::edge_header`]) is
//!   verified; when it verifies, its claims (user-facing ray id, trace context, colo, country,
//!   client address) are believed wherever the request came from.
//!
//! Nothing here fails a request: a header that is not believed is ignored.

use std::net::IpAddr;

use integra_observe_core::propagation::{HeaderSource, TraceParent};

use crate::edge_header::{self, EdgeClaims, DEFAULT_MAX_SKEW_SECS, HEADER_NAME};
use crate::ranges::{cloudflare_ranges, IpRange};
use crate::ray::RayId;

/// How an [`EdgeContext`] came to be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EdgeTrust {
    /// A signed edge header verified with the shared secret.
    Signed,
    /// The request came from a trusted edge address range.
    Proxy,
}

impl EdgeTrust {
    /// `signed` or `proxy`, as recorded in `cloudflare.edge.trust`.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeTrust::Signed => "signed",
            EdgeTrust::Proxy => "proxy",
        }
    }
}

/// What Cloudflare (or our Worker) says about a request, once believed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EdgeContext {
    /// Why it is believed.
    pub trust: EdgeTrust,
    /// The user-facing ray id: from the signed header, or `CF-Ray` from a trusted range.
    pub ray: Option<RayId>,
    /// The colo (`SJC`): signed, else the ray id's suffix.
    pub colo: Option<String>,
    /// `CF-IPCountry` as sent: an ISO 3166-1 alpha-2 code, `XX` (unknown) or `T1` (Tor).
    pub country: Option<String>,
    /// The scheme the user spoke to Cloudflare (`CF-Visitor`), `http` or `https`.
    pub visitor_scheme: Option<String>,
    /// `CF-Worker`: the zone of the Worker that made this request, when one did.
    pub worker: Option<String>,
    /// The user's address (`CF-Connecting-IP`). Personal data: recorded only when allowed.
    pub client_ip: Option<IpAddr>,
    /// The trace context the Worker signed (only from a verified header).
    pub traceparent: Option<TraceParent>,
    /// Whether [`Self::attributes`] may include `client.address` (the policy's
    /// [`TrustPolicy::allow_pii`]).
    pub pii_allowed: bool,
}

impl EdgeContext {
    /// The span attributes, with Cloudflare's own names: `cloudflare.ray_id`,
    /// `cloudflare.colo`, `geo.country.code` (only an ISO code; `XX` and `T1` go to
    /// `cloudflare.ip_country`), `cloudflare.visitor.scheme`, `cloudflare.worker`,
    /// `cloudflare.edge.trust`, and `client.address` only when [`Self::pii_allowed`].
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("cloudflare.edge.trust", self.trust.as_str().to_owned())];
        if let Some(r) = &self.ray {
            out.push(("cloudflare.ray_id", r.as_str().to_owned()));
        }
        if let Some(c) = &self.colo {
            out.push(("cloudflare.colo", c.clone()));
        }
        match self.country.as_deref() {
            Some(cc) if is_iso_country(cc) => out.push(("geo.country.code", cc.to_owned())),
            Some(cc) => out.push(("cloudflare.ip_country", cc.to_owned())),
            None => {}
        }
        if let Some(s) = &self.visitor_scheme {
            out.push(("cloudflare.visitor.scheme", s.clone()));
        }
        if let Some(w) = &self.worker {
            out.push(("cloudflare.worker", w.clone()));
        }
        if let (true, Some(ip)) = (self.pii_allowed, self.client_ip) {
            out.push(("client.address", ip.to_string()));
        }
        out
    }
}

fn is_iso_country(cc: &str) -> bool {
    cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase()) && cc != "XX"
}

/// Which edge headers to believe. [`Default`] believes none.
///
/// ```
/// use integra_observe_cloudflare::TrustPolicy;
/// let policy = TrustPolicy::trust_nothing()
///     .trust_cloudflare_ips()
///     .behind_ingress(integra_observe_cloudflare::IpRange::parse_list("10.0.0.0/8").unwrap())
///     .edge_secret("a shared secret of at least 32 bytes");
/// assert!(policy.is_active());
/// ```
#[derive(Clone, Default)]
pub struct TrustPolicy {
    edge_ranges: Option<Vec<IpRange>>,
    ingress: Vec<IpRange>,
    secrets: Vec<Vec<u8>>,
    max_skew_secs: Option<u64>,
    allow_pii: bool,
}

impl std::fmt::Debug for TrustPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustPolicy")
            .field("edge_ranges", &self.edge_ranges.as_ref().map(Vec::len))
            .field("ingress", &self.ingress)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("max_skew_secs", &self.max_skew_secs())
            .field("allow_pii", &self.allow_pii)
            .finish()
    }
}

impl TrustPolicy {
    /// Believes no edge header (the default).
    pub fn trust_nothing() -> Self {
        Self::default()
    }

    /// Believes `CF-*` headers from Cloudflare's published ranges (embedded).
    pub fn trust_cloudflare_ips(self) -> Self {
        self.edge_ranges(cloudflare_ranges())
    }

    /// Believes `CF-*` headers from these ranges (replacing the embedded Cloudflare list).
    pub fn edge_ranges(mut self, ranges: Vec<IpRange>) -> Self {
        self.edge_ranges = Some(ranges);
        self
    }

    /// Our own ingress or load balancers: hops from these ranges are skipped, right to left,
    /// through `X-Forwarded-For` to find the address that reached us.
    pub fn behind_ingress(mut self, ranges: Vec<IpRange>) -> Self {
        self.ingress = ranges;
        self
    }

    /// Verifies the signed edge header with this secret. Call again to add a second secret
    /// while rotating (either verifies).
    pub fn edge_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// The clock-skew window for the signed header, either way (default 300 s).
    pub fn max_skew_secs(&self) -> u64 {
        self.max_skew_secs.unwrap_or(DEFAULT_MAX_SKEW_SECS)
    }

    /// Sets the clock-skew window for the signed header, in seconds.
    pub fn with_max_skew_secs(mut self, secs: u64) -> Self {
        self.max_skew_secs = Some(secs);
        self
    }

    /// Whether `client.address` may be recorded (personal data; off by default).
    pub fn allow_pii(mut self, allow: bool) -> Self {
        self.allow_pii = allow;
        self
    }

    /// Whether `client.address` may be recorded.
    pub fn pii_allowed(&self) -> bool {
        self.allow_pii
    }

    /// Whether anything is believed at all.
    pub fn is_active(&self) -> bool {
        self.edge_ranges.is_some() || !self.secrets.is_empty()
    }

    /// The edge context of a request, if any of it is believed. `peer` is the address that
    /// connected to us (`None` when unknown: then no range can be trusted); `now` is seconds since
    /// the Unix epoch, for the signed header's window.
    pub fn evaluate(
        &self,
        headers: &(impl HeaderSource + ?Sized),
        peer: Option<IpAddr>,
        now: u64,
    ) -> Option<EdgeContext> {
        let from_edge = self.came_from_trusted_range(headers, peer);
        if let Some(claims) = self.verified_claims(headers, now) {
            let ray = claims.ray.as_deref().and_then(RayId::parse);
            let colo = claims
                .colo
                .clone()
                .or_else(|| ray.as_ref().and_then(|r| r.colo().map(str::to_owned)));
            return Some(EdgeContext {
                trust: EdgeTrust::Signed,
                colo,
                ray,
                country: claims.country.filter(|c| is_country(c)),
                visitor_scheme: claims.scheme.filter(|s| is_scheme(s)),
                // Who made the request is only known from a trusted range.
                worker: if from_edge {
                    header(headers, "cf-worker").filter(|w| is_zone(w))
                } else {
                    None
                },
                client_ip: claims.client_ip.and_then(|ip| ip.parse().ok()),
                traceparent: claims.traceparent.as_deref().and_then(TraceParent::parse),
                pii_allowed: self.allow_pii,
            });
        }
        if !from_edge {
            return None;
        }
        let ray = header(headers, "cf-ray").and_then(|r| RayId::parse(&r));
        Some(EdgeContext {
            trust: EdgeTrust::Proxy,
            colo: ray.as_ref().and_then(|r| r.colo().map(str::to_owned)),
            ray,
            country: header(headers, "cf-ipcountry").filter(|c| is_country(c)),
            visitor_scheme: header(headers, "cf-visitor").and_then(|v| visitor_scheme(&v)),
            worker: header(headers, "cf-worker").filter(|w| is_zone(w)),
            client_ip: header(headers, "cf-connecting-ip").and_then(|ip| ip.trim().parse().ok()),
            traceparent: None,
            pii_allowed: self.allow_pii,
        })
    }

    fn verified_claims(
        &self,
        headers: &(impl HeaderSource + ?Sized),
        now: u64,
    ) -> Option<EdgeClaims> {
        if self.secrets.is_empty() {
            return None;
        }
        let value = header(headers, HEADER_NAME)?;
        edge_header::verify(&value, &self.secrets, now, self.max_skew_secs()).ok()
    }

    fn came_from_trusted_range(
        &self,
        headers: &(impl HeaderSource + ?Sized),
        peer: Option<IpAddr>,
    ) -> bool {
        let (Some(ranges), Some(peer)) = (&self.edge_ranges, peer) else {
            return false;
        };
        let xff: Vec<String> = headers
            .values("x-forwarded-for")
            .into_iter()
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .collect();
        let xff: Vec<&str> = xff.iter().map(String::as_str).collect();
        right_most_untrusted_hop(peer, &xff, &self.ingress)
            .is_some_and(|hop| ranges.iter().any(|r| r.contains(hop)))
    }
}

/// The address that reached our ingress: starting from `peer` (the socket's address), while the
/// current address is one of `ingress`, step one `X-Forwarded-For` entry to the left. `None` when
/// the chain runs out while still inside our ingress, or an entry is not an address (a forged or
/// garbled chain is not believed). Entries left of the hop are never read: a client can put
/// anything there.
///
/// ```
/// use integra_observe_cloudflare::{right_most_untrusted_hop, IpRange};
/// let ingress = IpRange::parse_list("10.0.0.0/8").unwrap();
/// let hop = right_most_untrusted_hop("10.0.0.5".parse().unwrap(), &["6.6.6.6", "162.158.1.1", "10.0.0.9"], &ingress);
/// assert_eq!(hop, Some("162.158.1.1".parse().unwrap()));
/// ```
pub fn right_most_untrusted_hop(peer: IpAddr, xff: &[&str], ingress: &[IpRange]) -> Option<IpAddr> {
    let mut current = peer;
    let mut left = xff.iter().rev();
    while ingress.iter().any(|r| r.contains(current)) {
        current = parse_hop(left.next()?)?;
    }
    Some(current)
}

fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// One header value, when it appears exactly once and is UTF-8.
fn header(headers: &(impl HeaderSource + ?Sized), name: &str) -> Option<String> {
    let values = headers.values(name);
    match values.as_slice() {
        [one] => std::str::from_utf8(one).ok().map(|s| s.trim().to_owned()),
        _ => None,
    }
}

fn is_country(cc: &str) -> bool {
    cc.len() == 2
        && cc
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn is_scheme(s: &str) -> bool {
    matches!(s, "http" | "https")
}

fn is_zone(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 253
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

/// The scheme in `CF-Visitor: {"scheme":"https"}`.
fn visitor_scheme(v: &str) -> Option<String> {
    let rest = &v[v.find("\"scheme\"")? + "\"scheme\"".len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let scheme = &rest[..rest.find('"')?];
    is_scheme(scheme).then(|| scheme.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_732_540_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cf_headers() -> HashMap<String, String> {
        headers(&[
            ("cf-ray", "230b030023ae2822-SJC"),
            ("cf-connecting-ip", "203.0.113.7"),
            ("cf-ipcountry", "US"),
            ("cf-visitor", "{\"scheme\":\"https\"}"),
            ("cf-worker", "example.com"),
        ])
    }

    #[test]
    fn the_default_trusts_nothing() {
        let policy = TrustPolicy::default();
        assert!(!policy.is_active());
        assert_eq!(
            policy.evaluate(&cf_headers(), Some(ip("162.158.1.1")), NOW),
            None
        );
    }

    #[test]
    fn cloudflare_headers_from_cloudflare_addresses_are_believed() {
        let policy = TrustPolicy::default().trust_cloudflare_ips();
        let edge = policy
            .evaluate(&cf_headers(), Some(ip("162.158.1.1")), NOW)
            .unwrap();
        assert_eq!(edge.trust, EdgeTrust::Proxy);
        assert_eq!(
            edge.ray.as_ref().map(RayId::as_str),
            Some("230b030023ae2822-SJC")
        );
        assert_eq!(edge.colo.as_deref(), Some("SJC"));
        assert_eq!(edge.country.as_deref(), Some("US"));
        assert_eq!(edge.visitor_scheme.as_deref(), Some("https"));
        assert_eq!(edge.worker.as_deref(), Some("example.com"));
        assert_eq!(edge.client_ip, Some(ip("203.0.113.7")));
        let v6 = policy.evaluate(&cf_headers(), Some(ip("2a06:98c0:3600::103")), NOW);
        assert!(v6.is_some());
        // Anyone else: ignored.
        assert_eq!(
            policy.evaluate(&cf_headers(), Some(ip("127.0.0.1")), NOW),
            None
        );
        assert_eq!(policy.evaluate(&cf_headers(), None, NOW), None);
    }

    #[test]
    fn attributes_use_cloudflare_names_and_keep_the_address_out_without_pii() {
        let policy = TrustPolicy::default().trust_cloudflare_ips();
        let edge = policy
            .evaluate(&cf_headers(), Some(ip("162.158.1.1")), NOW)
            .unwrap();
        let attrs = edge.attributes();
        let get =
            |a: &[(&str, String)], k: &str| a.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get(&attrs, "cloudflare.ray_id").as_deref(),
            Some("230b030023ae2822-SJC")
        );
        assert_eq!(get(&attrs, "cloudflare.colo").as_deref(), Some("SJC"));
        assert_eq!(get(&attrs, "geo.country.code").as_deref(), Some("US"));
        assert_eq!(get(&attrs, "client.address"), None);
        let with_pii = policy.clone().allow_pii(true);
        let edge = with_pii
            .evaluate(&cf_headers(), Some(ip("162.158.1.1")), NOW)
            .unwrap();
        assert_eq!(
            get(&edge.attributes(), "client.address").as_deref(),
            Some("203.0.113.7")
        );
        let mut tor = cf_headers();
        tor.insert("cf-ipcountry".into(), "T1".into());
        let attrs = policy
            .evaluate(&tor, Some(ip("162.158.1.1")), NOW)
            .unwrap()
            .attributes();
        assert_eq!(get(&attrs, "geo.country.code"), None);
        assert_eq!(get(&attrs, "cloudflare.ip_country").as_deref(), Some("T1"));
    }

    #[test]
    fn behind_an_ingress_the_right_most_untrusted_hop_decides() {
        let ingress = IpRange::parse_list("10.0.0.0/8,fd00::/8").unwrap();
        let policy = TrustPolicy::default()
            .trust_cloudflare_ips()
            .behind_ingress(ingress.clone());
        let peer = Some(ip("10.0.0.5"));
        let mut h = cf_headers();
        h.insert(
            "x-forwarded-for".into(),
            "6.6.6.6, 162.158.1.1, 10.1.1.1".into(),
        );
        assert!(policy.evaluate(&h, peer, NOW).is_some());
        // A client that writes a Cloudflare address itself sits left of the real hop.
        h.insert("x-forwarded-for".into(), "162.158.1.1, 6.6.6.6".into());
        assert_eq!(policy.evaluate(&h, peer, NOW), None);
        // The chain runs out inside our ingress: nobody to trust.
        h.insert("x-forwarded-for".into(), "10.2.2.2".into());
        assert_eq!(policy.evaluate(&h, peer, NOW), None);
        // Garbage at the hop.
        h.insert("x-forwarded-for".into(), "162.158.1.1, nonsense".into());
        assert_eq!(policy.evaluate(&h, peer, NOW), None);
        // Not behind the ingress: X-Forwarded-For is not read at all.
        h.insert("x-forwarded-for".into(), "162.158.1.1".into());
        assert_eq!(policy.evaluate(&h, Some(ip("6.6.6.6")), NOW), None);

        let hop = |peer: &str, xff: &[&str]| right_most_untrusted_hop(ip(peer), xff, &ingress);
        assert_eq!(hop("6.6.6.6", &["162.158.1.1"]), Some(ip("6.6.6.6")));
        assert_eq!(
            hop("10.0.0.1", &["[2606:4700::1]", "fd00::1"]),
            Some(ip("2606:4700::1"))
        );
        assert_eq!(
            hop("10.0.0.1", &["162.158.1.1:443"]),
            Some(ip("162.158.1.1"))
        );
        assert_eq!(hop("10.0.0.1", &[]), None);
    }

    #[test]
    fn a_signed_header_is_believed_from_anywhere_and_a_forged_one_is_not() {
        let policy = TrustPolicy::default().edge_secret(SECRET);
        let mut claims = EdgeClaims::new(NOW);
        claims.ray = Some("230b030023ae2822-SJC".into());
        claims.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        claims.country = Some("DE".into());
        claims.client_ip = Some("203.0.113.9".into());
        let mut h = cf_headers();
        h.insert(HEADER_NAME.into(), edge_header::sign(&claims, SECRET));
        // The origin's own cf-ray (a subrequest's) differs from the signed, user-facing one.
        h.insert("cf-ray".into(), "1111111111111111-AMS".into());
        let edge = policy.evaluate(&h, Some(ip("127.0.0.1")), NOW + 5).unwrap();
        assert_eq!(edge.trust, EdgeTrust::Signed);
        assert_eq!(
            edge.ray.as_ref().map(RayId::as_str),
            Some("230b030023ae2822-SJC")
        );
        assert_eq!(edge.colo.as_deref(), Some("SJC"));
        assert_eq!(edge.country.as_deref(), Some("DE"));
        assert_eq!(edge.client_ip, Some(ip("203.0.113.9")));
        assert_eq!(edge.worker, None, "CF-Worker is not believed from loopback");
        assert_eq!(
            edge.traceparent.map(|t| t.trace_id.to_string()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // Forged (another secret), expired, or repeated: ignored, and CF-* from loopback too.
        h.insert(
            HEADER_NAME.into(),
            edge_header::sign(&claims, b"forged-forged-forged-forged-forg"),
        );
        assert_eq!(policy.evaluate(&h, Some(ip("127.0.0.1")), NOW), None);
        h.insert(HEADER_NAME.into(), edge_header::sign(&claims, SECRET));
        assert_eq!(policy.evaluate(&h, Some(ip("127.0.0.1")), NOW + 301), None);
        assert!(format!("{policy:?}").contains("<1 redacted>"));
        assert!(!format!("{policy:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn visitor_scheme_is_read_from_the_json() {
        assert_eq!(
            visitor_scheme("{\"scheme\":\"https\"}").as_deref(),
            Some("https")
        );
        assert_eq!(
            visitor_scheme("{ \"scheme\" : \"http\" }").as_deref(),
            Some("http")
        );
        assert_eq!(visitor_scheme("{\"scheme\":\"gopher\"}"), None);
        assert_eq!(visitor_scheme("{\"scheme\":"), None);
        assert_eq!(visitor_scheme("garbage"), None);
    }
}
