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
    "INTEGRA_TRACE_VIEW", "With the `console` feature: `tree` prints each finished trace as a waterfall and a dependency map at shutdown; `forward` prints each finished span as a JSON line on stdout for a parent process; `off`.", "`tree`", "`off`";
    "INTEGRA_REDACT_KEYS", "Comma-separated keys whose values are redacted everywhere (span attributes and events, Sentry event fields, breadcrumbs), on top of the defaults: authorization, cookie, set-cookie, x-api-key, password, passwd, secret, token, api_key, apikey, auth, credentials, bearer, private_key.", "none", "`ssn,card_number`";
    "INTEGRA_TRUST_INCOMING_CONTEXT", "`false` on public endpoints: an incoming trace context is not continued; a new trace starts and the caller's ids are kept as a span link (and `integra.incoming.trace`), so outside callers cannot choose trace ids or force sampling.", "`true`", "`false`";
    "INTEGRA_CLOUDFLARE_TRUST", "With the `cloudflare` feature: `cloudflare-ips` believes `CF-Ray`, `CF-Connecting-IP`, `CF-IPCountry`, `CF-Visitor` and `CF-Worker` from Cloudflare's IP ranges (checked against the right-most `X-Forwarded-For` hop outside `INTEGRA_CLOUDFLARE_INGRESS_RANGES`); `none` believes no edge header except a verified signed one. See docs/cloudflare.md.", "`none`", "`cloudflare-ips`";
    "INTEGRA_CLOUDFLARE_IP_RANGES", "Comma-separated CIDR blocks that replace the embedded list of Cloudflare's published ranges.", "Cloudflare's ranges as of the release", "`173.245.48.0/20,2400:cb00::/32`";
    "INTEGRA_CLOUDFLARE_INGRESS_RANGES", "Comma-separated CIDR blocks of our own ingress or load balancers: their hops are skipped, right to left, through `X-Forwarded-For` to find the address that reached us.", "none", "`10.0.0.0/8,fd00::/8`";
    "INTEGRA_EDGE_SECRET", "With the `cloudflare` feature: the secret (at least 32 bytes) shared with our Worker; a `x-integra-edge` header signed with it (HMAC-SHA256) is believed: its trace context, user-facing ray id, colo, country and client address. Never logged.", "unset (signed header ignored)", "`<32+ random bytes>`";
    "INTEGRA_EDGE_SECRET_PREVIOUS", "The previous edge secret while rotating: headers signed with either verify.", "unset", "`<the old secret>`";
    "INTEGRA_EDGE_MAX_SKEW", "Seconds a signed edge header's timestamp may differ from the clock, either way (0 to 86400).", "`300`", "`60`";
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "Attributes kept per span.", "`128`", "`64`";
    "OTEL_SPAN_EVENT_COUNT_LIMIT", "Events kept per span.", "`128`", "`64`";
    "OTEL_SPAN_LINK_COUNT_LIMIT", "Links kept per span.", "`128`", "`16`";
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "Characters kept per attribute value (span attributes, span event attributes, Sentry event fields); longer values are truncated.", "`4096`", "`1024`";
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "The same as `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, which wins.", "`4096`", "`1024`";
    "INTEGRA_SHUTDOWN_TIMEOUT", "Milliseconds the guard may spend flushing all backends on shutdown.", "`2000`", "`5000`";
    "SENTRY_DSN", "Sentry DSN. Unset or empty: nothing is sent to Sentry.", "unset", "`https://public@o1.ingest.sentry.io/42`";
    "SENTRY_ENVIRONMENT", "Sentry environment (also `deployment.environment.name`).", "`deployment.environment.name`, else `production` in release builds and `development` in debug builds", "`staging`";
    "SENTRY_RELEASE", "Sentry release.", "`<service.name>@<service.version>` when a version is known, else unset", "`auth-worker@1.4.2`";
    "SENTRY_SAMPLE_RATE", "Share of error events sent, 0.0 to 1.0.", "`1.0`", "`0.5`";
    "SENTRY_TRACES_SAMPLE_RATE", "Share of traces sent to Sentry as transactions (performance), 0.0 to 1.0.", "`0.0`", "`0.2`";
    "SENTRY_SEND_DEFAULT_PII", "`true` lets Sentry events carry personal data (client IP, user e-mail); with the `cloudflare` feature it also allows `client.address` from the edge.", "`false`", "`true`";
    "SENTRY_MAX_BREADCRUMBS", "Breadcrumbs kept per scope and sent with an error.", "`100`", "`50`";
    "SENTRY_QUEUE_SIZE", "Envelopes the Sentry transport queues before it drops (and counts) new ones.", "`100`", "`500`";
    "SENTRY_TIMEOUT", "Milliseconds one request to Sentry may take.", "`5000`", "`2000`";
    "OTEL_TRACES_EXPORTER", "`otlp` or `none`. `none` turns the OTLP backend off.", "`otlp`", "`none`";
    "OTEL_EXPORTER_OTLP_ENDPOINT", "Base URL of the OTLP receiver (Jaeger, a Collector). Setting it turns the OTLP backend on; for HTTP, `/v1/traces` is appended.", "unset (OTLP off)", "`http://jaeger-collector:4317`";
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "Full URL for traces, used as given. Wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.", "unset", "`http://jaeger-collector:4318/v1/traces`";
    "OTEL_EXPORTER_OTLP_PROTOCOL", "`grpc`, `http/protobuf` or `http/json`.", "`http/protobuf`", "`grpc`";
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "Protocol for traces. Wins over `OTEL_EXPORTER_OTLP_PROTOCOL`.", "unset", "`http/json`";
    "OTEL_EXPORTER_OTLP_HEADERS", "Headers sent with every export, `key=value` pairs, values percent-encoded. Never logged.", "none", "`authorization=Bearer%20abc`";
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Headers for trace exports; added to (and winning over) `OTEL_EXPORTER_OTLP_HEADERS`.", "none", "`x-tenant=blue`";
    "OTEL_EXPORTER_OTLP_TIMEOUT", "Milliseconds one export request may take.", "`10000`", "`5000`";
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "Timeout for trace exports. Wins over `OTEL_EXPORTER_OTLP_TIMEOUT`.", "unset", "`3000`";
    "OTEL_TRACES_SAMPLER", "`always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off` or `parentbased_traceidratio`.", "`parentbased_always_on`", "`parentbased_traceidratio`";
    "OTEL_TRACES_SAMPLER_ARG", "The ratio, 0.0 to 1.0, for the `*traceidratio` samplers.", "`1.0`", "`0.25`";
    "OTEL_BSP_SCHEDULE_DELAY", "Milliseconds between two batch exports.", "`5000`", "`1000`";
    "OTEL_BSP_EXPORT_TIMEOUT", "Milliseconds one export request may take at most (caps `OTEL_EXPORTER_OTLP_TIMEOUT`), and how long a flush waits.", "`30000`", "`10000`";
    "OTEL_BSP_MAX_QUEUE_SIZE", "Spans queued before new ones are dropped (and counted).", "`2048`", "`8192`";
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "Spans per export request, at most the queue size.", "`512`", "`1024`";
    "OTEL_PROPAGATORS", "Header formats injected on outgoing requests: `tracecontext`, `baggage`, `sentry`, `jaeger`, or `none`.", "`tracecontext,baggage,sentry`", "`tracecontext,baggage,jaeger`";
}

impl EnvVar {
    /// Looks a variable up in [`ENV_VARS`].
    pub fn find(name: &str) -> Option<&'static EnvVar> {
        ENV_VARS.iter().find(|v| v.name == name)
    }
}
