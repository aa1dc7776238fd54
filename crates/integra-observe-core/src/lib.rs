#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bridge;
mod config;
mod env;
mod error;
mod ids;
pub mod propagation;
mod redact;
mod span;
mod stats;

pub use bridge::{ActiveSpan, ErrorInfo, SpanTags};
pub use config::{
    parse_key_values, percent_decode, BatchSettings, Config, Dsn, Limits, LogFormat, LogSettings,
    OtlpProtocol, OtlpSettings, Resolved, Sampler, SamplerKind, SentrySettings, ServiceInfo,
    Settings, TraceViewMode,
};
pub use env::{EnvVar, ENV_VARS};
pub use error::{InitError, Source};
pub use ids::{SpanContext, SpanId, TraceId};
pub use redact::{
    is_secret_key, redact_dsn, redact_secret_value, redact_url, redact_value, Redactor,
    DEFAULT_SECRET_KEYS, REDACTED,
};
pub use span::{FinishedSpan, SpanEvent, SpanKind, SpanSink};
pub use stats::{Counters, DropReason, Stats};
