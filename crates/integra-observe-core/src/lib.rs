#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bridge;
mod config;
mod env;
mod error;
mod ids;
mod redact;

pub use bridge::{ActiveSpan, ErrorInfo};
pub use config::{
    parse_key_values, percent_decode, Config, Dsn, LogFormat, LogSettings, Resolved, SentrySettings,
    ServiceInfo, Settings,
};
pub use env::{EnvVar, ENV_VARS};
pub use error::{InitError, Source};
pub use ids::{SpanContext, SpanId, TraceId};
pub use redact::{redact_dsn, redact_secret_value};
