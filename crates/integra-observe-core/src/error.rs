//! Errors of `integra_observe::try_init`.
//!
//! Every message names what was wrong (the variable or builder method), the value that was given and
//! the form that was expected, so that a misconfigured deployment can be fixed from the log line alone.
//! Secrets never appear in a message: values are passed through [`crate::redact_secret_value`] first.

use std::fmt;

/// Where a setting came from: a builder method or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Set in code through the named `Config` method, e.g. `Config::sentry_dsn`.
    Builder(&'static str),
    /// Read from the named environment variable.
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Builder(method) => write!(f, "Config::{method}"),
            Source::Env(var) => write!(f, "{var}"),
        }
    }
}

/// Why `integra_observe::try_init` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// A setting has a value that cannot be used.
    InvalidSetting {
        /// The variable or builder method the value came from.
        source: Source,
        /// The value, with any secret part masked.
        value: String,
        /// The form that was expected.
        expected: String,
    },
    /// `init` or `try_init` was already called in this process, or another global `tracing`
    /// subscriber is installed.
    AlreadyInitialized,
    /// A backend could not be started for a reason other than its configuration.
    Backend {
        /// The backend: `"sentry"` or `"otlp"`.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl InitError {
    /// An [`InitError::InvalidSetting`] for `source`, `value` and `expected`.
    pub fn invalid(source: Source, value: impl Into<String>, expected: impl Into<String>) -> Self {
        InitError::InvalidSetting {
            source,
            value: value.into(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::InvalidSetting { source, value, expected } => {
                write!(f, "invalid value {value:?} for {source}: expected {expected}")
            }
            InitError::AlreadyInitialized => f.write_str(
                "integra-observe is already initialised (or another global tracing subscriber is set): \
                 call init/try_init once, at the start of main",
            ),
            InitError::Backend { backend, message } => {
                write!(f, "the {backend} backend could not start: {message}")
            }
        }
    }
}

impl std::error::Error for InitError {}
