//! A per-request tracer for Rust Workers (workers-rs, `wasm32-unknown-unknown`): feature `worker`.
//!
//! sentry-rust does not run on wasm and opentelemetry-rust's SDK needs threads, `SystemTime` and a
//! blocking runtime, none of which a Worker has. This module is the small part of both that a
//! Worker needs: plain `tracing` spans and events, recorded for one request by a subscriber of
//! that request only (so requests interleaved in one isolate never mix), timed with the JS clock,
//! with ids from `crypto.getRandomValues`; buffered in memory and sent **once** when the request
//! ends, through `ctx.waitUntil` so the response does not wait:
//!
//! - the spans as OTLP/HTTP JSON to `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces` (what the
//!   OpenTelemetry JS SDKs send, read by Jaeger's and the Collector's OTLP receivers);
//! - each `error!` event, and a panic, as a Sentry envelope to the DSN's envelope endpoint, with
//!   `contexts.trace` holding the same trace id and span id as the spans.
//!
//! The incoming trace is continued — a valid `traceparent`, else `sentry-trace` — or, without one,
//! derived from the `cf-ray` header ([`crate::derive_trace_id`]) exactly as the backends derive
//! it, else new. [`RequestTrace::fetch`] opens a client span and, only for hosts on the allow-list,
//! injects `traceparent`, `sentry-trace` and the signed edge header ([`crate::edge_header`]).
//! A trace that is not sampled is still sent when it had an error.
//!
//! It never blocks, spawns, reads `SystemTime::now` (which panics on wasm32) or panics itself, and
//! a failed export is never an error for the request.

mod encode;
mod layer;
mod runtime;

use std::fmt;

use integra_observe_core::Dsn;

pub use layer::TraceIdSource;
pub use runtime::{RequestTrace, WorkerTracer};

/// The `OTEL_SERVICE_NAME` binding.
const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// The `OTEL_EXPORTER_OTLP_ENDPOINT` binding (base URL; `/v1/traces` is appended).
const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` binding (full URL).
const OTLP_TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The `OTEL_EXPORTER_OTLP_HEADERS` binding.
const OTLP_HEADERS_VAR: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// The `OTEL_TRACES_SAMPLER_ARG` binding: the ratio of new traces sampled.
const SAMPLE_RATE_VAR: &str = "OTEL_TRACES_SAMPLER_ARG";
/// The `SENTRY_DSN` binding.
const SENTRY_DSN_VAR: &str = "SENTRY_DSN";
/// The `SENTRY_ENVIRONMENT` binding.
const SENTRY_ENVIRONMENT_VAR: &str = "SENTRY_ENVIRONMENT";
/// The `SENTRY_RELEASE` binding.
const SENTRY_RELEASE_VAR: &str = "SENTRY_RELEASE";
/// The `INTEGRA_TRUST_INCOMING_CONTEXT` binding.
const TRUST_VAR: &str = "INTEGRA_TRUST_INCOMING_CONTEXT";
/// The `INTEGRA_PROPAGATE_TO` binding: comma-separated hosts that get the trace headers.
const PROPAGATE_TO_VAR: &str = "INTEGRA_PROPAGATE_TO";
/// The `EDGE_SECRET` binding (a Worker secret, the backends' `INTEGRA_EDGE_SECRET`): the key of
/// the signed edge header; the TypeScript Worker reads the same binding.
const EDGE_SECRET_VAR: &str = "EDGE_SECRET";

/// What a [`WorkerTracer`] sends where. Built in code, or from the Worker's bindings with
/// [`WorkerConfig::from_env`]; its `Debug` output hides the DSN's key and the edge secret.
#[derive(Clone)]
#[must_use]
pub struct WorkerConfig {
    pub(crate) service_name: String,
    pub(crate) otlp_traces_url: Option<String>,
    pub(crate) otlp_headers: Vec<(String, String)>,
    pub(crate) sentry_dsn: Option<Dsn>,
    pub(crate) environment: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) sample_rate: f64,
    pub(crate) trust_incoming_context: bool,
    pub(crate) propagate_to: Vec<String>,
    pub(crate) edge_secret: Option<Vec<u8>>,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("service_name", &self.service_name)
            .field("otlp_traces_url", &self.otlp_traces_url)
            .field(
                "otlp_headers",
                &self.otlp_headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("sentry_dsn", &self.sentry_dsn)
            .field("environment", &self.environment)
            .field("release", &self.release)
            .field("sample_rate", &self.sample_rate)
            .field("trust_incoming_context", &self.trust_incoming_context)
            .field("propagate_to", &self.propagate_to)
            .field(
                "edge_secret",
                &self.edge_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl WorkerConfig {
    /// Sends nothing until an OTLP endpoint or a DSN is set; samples every new trace; continues
    /// incoming trace headers; injects trace headers nowhere.
    pub fn new(service_name: impl Into<String>) -> Self {
        WorkerConfig {
            service_name: service_name.into(),
            otlp_traces_url: None,
            otlp_headers: Vec::new(),
            sentry_dsn: None,
            environment: None,
            release: None,
            sample_rate: 1.0,
            trust_incoming_context: true,
            propagate_to: Vec::new(),
            edge_secret: None,
        }
    }

    /// Reads the Worker's bindings (`[vars]` and secrets), each optional:
    /// `OTEL_SERVICE_NAME` (else `default_service_name`), `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`,
    /// `OTEL_TRACES_SAMPLER_ARG`, `SENTRY_DSN`, `SENTRY_ENVIRONMENT`, `SENTRY_RELEASE`,
    /// `INTEGRA_TRUST_INCOMING_CONTEXT`, `INTEGRA_PROPAGATE_TO` (comma-separated hosts) and the
    /// secret `EDGE_SECRET` (the backends' `INTEGRA_EDGE_SECRET`). A value that does not parse is ignored (logged to the console).
    pub fn from_env(env: &worker::Env, default_service_name: &str) -> Self {
        Self::from_lookup(
            |name| {
                env.var(name)
                    .map(|v| v.to_string())
                    .or_else(|_| env.secret(name).map(|v| v.to_string()))
                    .ok()
            },
            default_service_name,
            |msg| worker::console_warn!("integra-observe: {msg}"),
        )
    }

    /// [`Self::from_env`] over any lookup: `warn` receives what was ignored.
    fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        default_service_name: &str,
        warn: impl Fn(&str),
    ) -> Self {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut c = WorkerConfig::new(
            get(SERVICE_NAME_VAR).unwrap_or_else(|| default_service_name.to_owned()),
        );
        if let Some(url) = get(OTLP_TRACES_ENDPOINT_VAR) {
            c = c.otlp_traces_endpoint(url);
        } else if let Some(base) = get(OTLP_ENDPOINT_VAR) {
            c = c.otlp_endpoint(base);
        }
        if let Some(raw) = get(OTLP_HEADERS_VAR) {
            match integra_observe_core::parse_key_values(&raw) {
                Some(pairs) => c.otlp_headers = pairs,
                None => warn(&format!(
                    "{OTLP_HEADERS_VAR} is not key=value pairs; ignored"
                )),
            }
        }
        if let Some(raw) = get(SAMPLE_RATE_VAR) {
            match raw.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => c.sample_rate = r,
                _ => warn(&format!(
                    "{SAMPLE_RATE_VAR}={raw} is not a ratio from 0.0 to 1.0; ignored"
                )),
            }
        }
        if let Some(raw) = get(SENTRY_DSN_VAR) {
            match Dsn::parse(&raw) {
                Some(dsn) => c.sentry_dsn = Some(dsn),
                None => warn(&format!(
                    "{SENTRY_DSN_VAR} is not {}; ignored",
                    Dsn::EXPECTED
                )),
            }
        }
        c.environment = get(SENTRY_ENVIRONMENT_VAR);
        c.release = get(SENTRY_RELEASE_VAR);
        if let Some(raw) = get(TRUST_VAR) {
            match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => c.trust_incoming_context = true,
                "false" | "0" => c.trust_incoming_context = false,
                _ => warn(&format!("{TRUST_VAR}={raw} is not true or false; ignored")),
            }
        }
        if let Some(raw) = get(PROPAGATE_TO_VAR) {
            c = c.propagate_to(raw.split(',').map(str::trim).filter(|h| !h.is_empty()));
        }
        if let Some(secret) = get(EDGE_SECRET_VAR) {
            c = c.edge_secret(secret.into_bytes());
        }
        c
    }

    /// The OTLP/HTTP base URL (`http://collector:4318`): spans go to `{base}/v1/traces`.
    pub fn otlp_endpoint(mut self, base: impl Into<String>) -> Self {
        let base = base.into();
        self.otlp_traces_url = Some(format!("{}/v1/traces", base.trim_end_matches('/')));
        self
    }

    /// The full OTLP/HTTP traces URL, used as given.
    pub fn otlp_traces_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp_traces_url = Some(url.into());
        self
    }

    /// A header sent with every OTLP export (an API key, for example).
    pub fn otlp_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.otlp_headers.push((name.into(), value.into()));
        self
    }

    /// The Sentry DSN errors and panics go to.
    pub fn sentry_dsn(mut self, dsn: Dsn) -> Self {
        self.sentry_dsn = Some(dsn);
        self
    }

    /// Sentry's `environment`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// Sentry's `release`.
    pub fn release(mut self, release: impl Into<String>) -> Self {
        self.release = Some(release.into());
        self
    }

    /// The share of new traces (no sampled flag from the caller) whose spans are sent, 0.0 to 1.0,
    /// decided from the trace id so every hop that derives the same id decides the same. Traces
    /// with an error are sent whatever the decision.
    pub fn sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = if rate.is_nan() {
            1.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// `false` on a public endpoint whose callers' trace headers must not be continued: the trace
    /// then comes from `cf-ray`, or is new.
    pub fn trust_incoming_context(mut self, trust: bool) -> Self {
        self.trust_incoming_context = trust;
        self
    }

    /// Hosts that receive the trace headers and the signed edge header on
    /// [`RequestTrace::fetch`]: `api.example.com` (exactly), `.example.com` (any subdomain) or
    /// `127.0.0.1:8080` (that host and port). Other hosts get no header at all.
    pub fn propagate_to<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.propagate_to
            .extend(hosts.into_iter().map(|h| h.into().to_ascii_lowercase()));
        self
    }

    /// The secret shared with the backends that signs the edge header
    /// ([`crate::edge_header::sign`]); without it no edge header is sent.
    pub fn edge_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.edge_secret = Some(secret.into());
        self
    }

    /// Whether the trace headers may go to `host` (lowercase) on `port`.
    pub(crate) fn may_propagate_to(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.propagate_to.iter().any(|allowed| {
            if let Some(suffix) = allowed.strip_prefix('.') {
                return host.ends_with(&format!(".{suffix}")) || host == suffix;
            }
            if let Some((h, p)) = allowed.rsplit_once(':') {
                if let Ok(want) = p.parse::<u16>() {
                    return h == host && port == Some(want);
                }
            }
            *allowed == host
        })
    }

    /// Whether a new trace with this id is sampled: the trace id's last 8 bytes against the
    /// rate, as OpenTelemetry's `TraceIdRatioBased` sampler decides.
    pub(crate) fn samples(&self, trace_id: integra_observe_core::TraceId) -> bool {
        if self.sample_rate >= 1.0 {
            return true;
        }
        let bytes = trace_id.to_bytes();
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        let x = u64::from_be_bytes(low) >> 1;
        (x as f64) < self.sample_rate * (1u64 << 63) as f64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn from_lookup_reads_the_bindings_and_ignores_bad_values() {
        let vars: HashMap<&str, &str> = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=abc"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("SENTRY_DSN", "not a dsn"),
            (
                "INTEGRA_PROPAGATE_TO",
                "api.example.com, 127.0.0.1:8080 ,.internal",
            ),
            ("EDGE_SECRET", "s3cret"),
            ("INTEGRA_TRUST_INCOMING_CONTEXT", "false"),
        ]
        .into();
        let warnings = RefCell::new(Vec::new());
        let c = WorkerConfig::from_lookup(
            |n| vars.get(n).map(|v| v.to_string()),
            "edge",
            |m| warnings.borrow_mut().push(m.to_owned()),
        );
        assert_eq!(c.service_name, "edge");
        assert_eq!(
            c.otlp_traces_url.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(c.otlp_headers, vec![("x-api-key".into(), "abc".into())]);
        assert_eq!(c.sample_rate, 1.0);
        assert!(c.sentry_dsn.is_none());
        assert!(!c.trust_incoming_context);
        assert_eq!(warnings.borrow().len(), 2, "{:?}", warnings.borrow());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("abc"));

        assert!(c.may_propagate_to("api.example.com", Some(443)));
        assert!(c.may_propagate_to("API.example.com", None));
        assert!(!c.may_propagate_to("evil.com", None));
        assert!(!c.may_propagate_to("api.example.com.evil.com", None));
        assert!(c.may_propagate_to("127.0.0.1", Some(8080)));
        assert!(!c.may_propagate_to("127.0.0.1", Some(8081)));
        assert!(c.may_propagate_to("db.internal", None));
        assert!(!c.may_propagate_to("notinternal", None));
    }

    #[test]
    fn sampling_follows_the_trace_id() {
        let low =
            integra_observe_core::TraceId::from_hex("ffffffffffffffff0000000000000001").unwrap();
        let high =
            integra_observe_core::TraceId::from_hex("0000000000000000ffffffffffffffff").unwrap();
        let c = WorkerConfig::new("x").sample_rate(0.5);
        assert!(c.samples(low));
        assert!(!c.samples(high));
        assert!(WorkerConfig::new("x").samples(high));
        assert!(!WorkerConfig::new("x").sample_rate(0.0).samples(low));
    }
}
