//! IP ranges (CIDR blocks) and Cloudflare's published ones.
//!
//! The embedded list is <https://www.cloudflare.com/ips-v4> and `ips-v6` as of the crate's
//! release; it changes rarely, and a deployment can replace it (`TrustPolicy::edge_ranges`, or
//! `INTEGRA_CLOUDFLARE_IP_RANGES` through the facade) without a new release.

use std::net::IpAddr;

/// Cloudflare's published IPv4 ranges.
pub const CLOUDFLARE_IPV4: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
];

/// Cloudflare's published IPv6 ranges.
pub const CLOUDFLARE_IPV6: &[&str] = &[
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// One CIDR block, IPv4 or IPv6. An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) matches the
/// IPv4 block it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `addr/prefix` (or a bare address, a block of one). Host bits must be zero.
    ///
    /// ```
    /// use integra_observe_cloudflare::IpRange;
    /// let r = IpRange::parse("173.245.48.0/20").unwrap();
    /// assert!(r.contains("173.245.63.255".parse().unwrap()));
    /// assert!(IpRange::parse("173.245.48.1/20").is_none()); // host bits set
    /// ```
    pub fn parse(s: &str) -> Option<IpRange> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?))
            }
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        let range = IpRange {
            network: addr,
            prefix,
        };
        (range.mask(addr) == bits(addr)).then_some(range)
    }

    /// Parses a comma-separated list; `Err` carries the first entry that is not a CIDR block.
    pub fn parse_list(s: &str) -> Result<Vec<IpRange>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| IpRange::parse(e).ok_or_else(|| e.to_owned()))
            .collect()
    }

    fn mask(&self, addr: IpAddr) -> u128 {
        let max = if self.network.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(max - self.prefix);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        bits(addr) & mask
    }

    /// Whether `addr` is in this block.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        addr.is_ipv4() == self.network.is_ipv4() && self.mask(addr) == bits(self.network)
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Cloudflare's published ranges, IPv4 and IPv6.
pub fn cloudflare_ranges() -> Vec<IpRange> {
    CLOUDFLARE_IPV4
        .iter()
        .chain(CLOUDFLARE_IPV6)
        .filter_map(|r| IpRange::parse(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_embedded_range_parses() {
        assert_eq!(
            cloudflare_ranges().len(),
            CLOUDFLARE_IPV4.len() + CLOUDFLARE_IPV6.len()
        );
    }

    #[test]
    fn cloudflare_v4_and_v6_addresses_match() {
        let cf = cloudflare_ranges();
        let any = |a: &str| cf.iter().any(|r| r.contains(ip(a)));
        for inside in [
            "173.245.48.1",
            "162.159.255.255",
            "104.16.0.0",
            "104.23.255.255",
            "2606:4700::6810:85e5",
            "2a06:98c0:3600::103", // the address Workers' subrequests come from
            "::ffff:172.64.1.1",
        ] {
            assert!(any(inside), "{inside}");
        }
        for outside in [
            "127.0.0.1",
            "10.0.0.1",
            "173.245.64.0",
            "104.32.0.0",
            "2606:4701::1",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!any(outside), "{outside}");
        }
    }

    #[test]
    fn parse_rejects_what_is_not_a_block() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "example.com/8",
        ] {
            assert_eq!(IpRange::parse(bad), None, "{bad:?}");
        }
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!IpRange::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("2001:db8::1")));
        assert!(IpRange::parse("10.1.2.3").unwrap().contains(ip("10.1.2.3")));
        assert_eq!(
            IpRange::parse_list("10.0.0.0/8, fd00::/8,").unwrap().len(),
            2
        );
        assert_eq!(IpRange::parse_list("10.0.0.0/8,nope"), Err("nope".into()));
    }
}
