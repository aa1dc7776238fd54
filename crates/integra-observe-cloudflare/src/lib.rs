#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod edge_header;
mod ranges;
mod ray;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
mod trust;
#[cfg(feature = "worker")]
#[cfg_attr(docsrs, doc(cfg(feature = "worker")))]
pub mod worker;

#[cfg(test)]
mod proptests;

pub use edge_header::{EdgeClaims, EdgeHeaderError};
pub use ranges::{cloudflare_ranges, IpRange, CLOUDFLARE_IPV4, CLOUDFLARE_IPV6};
pub use ray::{derive_span_id, derive_trace_id, RayId, DERIVATION_PREFIX, MAX_RAY_LEN};
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use trust::{right_most_untrusted_hop, EdgeContext, EdgeTrust, TrustPolicy};
