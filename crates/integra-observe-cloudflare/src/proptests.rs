//! The header parsers never panic, whatever arrives.

use proptest::prelude::*;

use crate::edge_header::{sign, verify, EdgeClaims};
use crate::{IpRange, RayId};

proptest! {
    #[test]
    fn ray_parsing_never_panics(s in "\\PC{0,40}") {
        if let Some(r) = RayId::parse(&s) {
            prop_assert_eq!(r.id().len(), 16);
            let _ = r.colo();
        }
    }

    #[test]
    fn ray_like_input_never_panics(s in "[0-9a-fA-F]{14,18}(-[A-Za-z0-9ñ]{0,10})?") {
        let _ = RayId::parse(&s).map(|r| (r.trace_id(), r.colo().map(str::len)));
    }

    #[test]
    fn edge_header_verification_never_panics(s in "\\PC{0,200}", now in any::<u64>(), skew in any::<u64>()) {
        let _ = verify(&s, &[b"secret"], now, skew);
    }

    #[test]
    fn edge_header_like_input_never_panics(
        fields in proptest::collection::vec("(ts|ray|tp|ip|cc|colo|proto|sig|x)=[0-9a-f;=.:-]{0,70}", 0..8),
        now in any::<u64>(),
    ) {
        let value = format!("v1;{}", fields.join(";"));
        let _ = verify(&value, &[b"secret"], now, 300);
    }

    #[test]
    fn whatever_is_signed_verifies(ts in any::<u64>(), ray in "\\PC{0,30}", ip in "\\PC{0,30}") {
        let mut c = EdgeClaims::new(ts);
        c.ray = Some(ray);
        c.client_ip = Some(ip);
        let header = sign(&c, b"k");
        prop_assert!(verify(&header, &[b"k"], ts, 0).is_ok());
    }

    #[test]
    fn cidr_parsing_never_panics(s in "\\PC{0,50}") {
        let _ = IpRange::parse(&s);
        let _ = IpRange::parse_list(&s);
    }
}

#[cfg(feature = "server")]
mod server {
    use super::*;
    use std::collections::HashMap;

    proptest! {
        #[test]
        fn evaluating_any_headers_never_panics(
            values in proptest::collection::vec("\\PC{0,60}", 7),
            peer in any::<std::net::IpAddr>(),
        ) {
            let names = ["cf-ray", "cf-connecting-ip", "cf-ipcountry", "cf-visitor", "cf-worker", "x-forwarded-for", "x-integra-edge"];
            let headers: HashMap<String, String> =
                names.iter().map(|n| (*n).to_owned()).zip(values).collect();
            let policy = crate::TrustPolicy::default()
                .trust_cloudflare_ips()
                .behind_ingress(IpRange::parse_list("0.0.0.0/0,::/0").unwrap_or_default())
                .edge_secret("secret");
            let _ = policy.evaluate(&headers, Some(peer), 0);
        }
    }
}
