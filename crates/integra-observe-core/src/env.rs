//! The environment variables integra-observe reads, in one table.
//!
//! This table is the single source for docs/configuration.md: a test checks that the document lists
//! exactly these variables, so neither can drift from the other.

/// One environment variable read by integra-observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// What it sets.
    pub meaning: &'static str,
    /// The value used when it is unset.
    pub default: &'static str,
    /// An example value.
    pub example: &'static str,
}

macro_rules! vars {
    ($( $name:literal, $meaning:literal, $default:literal, $example:literal; )*) => {
        /// Every environment variable read by `Config::from_env`, in documentation order.
        pub const ENV_VARS: &[EnvVar] = &[ $( EnvVar { name: $name, meaning: $meaning, default: $default, example: $example } ),* ];
    };
}

vars! {
    "OTEL_SERVICE_NAME", "Service name (`service.name`) for Sentry and OpenTelemetry.", "`service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else `unknown_service:<executable>`", "`auth-worker`";
    "OTEL_RESOURCE_ATTRIBUTES", "Extra resource attributes, `key=value` pairs separated by commas, values percent-encoded. `service.version` and `deployment.environment.name` are also used as Sentry's release and environment when the `SENTRY_*` variables are unset.", "none", "`service.version=1.4.2,deployment.environment.name=staging`";
    "OTEL_SDK_DISABLED", "`true` turns every export off (Sentry and OTLP); console logging stays.", "`false`", "`true`";
    "RUST_LOG", "Which spans and events are recorded, in `tracing-subscriber`'s `EnvFilter` syntax. Applies to every destination.", "`info`", "`info,my_crate=debug`";
    "INTEGRA_LOG_FORMAT", "Console format: `pretty`, `compact` or `json`.", "`json` when the environment is `production`, else `pretty`", "`json`";
    "INTEGRA_CONSOLE", "`false` turns console logging off.", "`true`", "`false`";
    "INTEGRA_SHUTDOWN_TIMEOUT", "Milliseconds the guard may spend flushing all backends on shutdown.", "`2000`", "`5000`";
    "SENTRY_DSN", "Sentry DSN. Unset or empty: nothing is sent to Sentry.", "unset", "`https://public@o1.ingest.sentry.io/42`";
    "SENTRY_ENVIRONMENT", "Sentry environment (also `deployment.environment.name`).", "`deployment.environment.name`, else `production` in release builds and `development` in debug builds", "`staging`";
    "SENTRY_RELEASE", "Sentry release.", "`<service.name>@<service.version>` when a version is known, else unset", "`auth-worker@1.4.2`";
    "SENTRY_SAMPLE_RATE", "Share of error events sent, 0.0 to 1.0.", "`1.0`", "`0.5`";
    "SENTRY_TRACES_SAMPLE_RATE", "Share of traces sent to Sentry as transactions (performance), 0.0 to 1.0.", "`0.0`", "`0.2`";
    "SENTRY_SEND_DEFAULT_PII", "`true` lets Sentry events carry personal data (client IP, user e-mail).", "`false`", "`true`";
    "SENTRY_MAX_BREADCRUMBS", "Breadcrumbs kept per scope and sent with an error.", "`100`", "`50`";
    "SENTRY_QUEUE_SIZE", "Envelopes the Sentry transport queues before it drops (and counts) new ones.", "`100`", "`500`";
    "SENTRY_TIMEOUT", "Milliseconds one request to Sentry may take.", "`5000`", "`2000`";
}

impl EnvVar {
    /// Looks a variable up in [`ENV_VARS`].
    pub fn find(name: &str) -> Option<&'static EnvVar> {
        ENV_VARS.iter().find(|v| v.name == name)
    }
}
