//! Configuration: a builder, a snapshot of the environment, and their resolution into settings.
//!
//! One order of precedence holds for every setting: a value set on the builder, then the backend's
//! own variable (`SENTRY_*`), then the generic OpenTelemetry one (`OTEL_*`), then the default.
//! Resolution never panics and never stops at the first bad value: each invalid value becomes an
//! [`InitError`] and the setting falls back as if it were unset (a backend whose required setting is
//! invalid is switched off), so `init` can log every problem and keep the service running.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{InitError, Source};
use crate::redact::redact_dsn;

/// How console logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Multi-line, human-friendly output for local work.
    Pretty,
    /// One line per event, human-readable.
    Compact,
    /// One JSON object per line, for log collectors in production.
    Json,
}

impl LogFormat {
    const EXPECTED: &'static str = "one of `pretty`, `compact`, `json`";

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" => Some(Self::Pretty),
            "compact" | "text" => Some(Self::Compact),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Who the service is: the identity shared by Sentry events and OpenTelemetry resources.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// `service.name`.
    pub name: String,
    /// `service.version`, when known.
    pub version: Option<String>,
    /// `deployment.environment.name`, also Sentry's environment.
    pub environment: String,
    /// Sentry's release.
    pub release: Option<String>,
    /// Every attribute from `OTEL_RESOURCE_ATTRIBUTES`, in the order given.
    pub resource_attributes: Vec<(String, String)>,
}

/// Console logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogSettings {
    /// Whether the console layer is installed.
    pub enabled: bool,
    /// An `EnvFilter` directive string.
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

/// Settings shared by every backend.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// Service identity.
    pub service: ServiceInfo,
    /// `OTEL_SDK_DISABLED`: every export is off.
    pub sdk_disabled: bool,
    /// Console logging.
    pub log: LogSettings,
    /// How long the guard may spend flushing all backends on shutdown.
    pub shutdown_timeout: Duration,
    /// The local trace view (`INTEGRA_TRACE_VIEW`; only used with the `console` feature).
    pub trace_view: TraceViewMode,
    /// Keys whose values are redacted in every pipeline, on top of the defaults
    /// ([`crate::DEFAULT_SECRET_KEYS`]).
    pub redact_keys: Vec<String>,
    /// Size limits of spans and event fields.
    pub limits: Limits,
    /// Whether an incoming trace context is continued (`true`, internal services) or only
    /// linked, with a new trace started here (`false`, public endpoints).
    pub trust_incoming_context: bool,
}

/// Size limits (`OTEL_SPAN_*_COUNT_LIMIT`, `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Attributes per span; more are dropped.
    pub attribute_count: u32,
    /// Events per span; more are dropped.
    pub event_count: u32,
    /// Links per span; more are dropped.
    pub link_count: u32,
    /// Characters per attribute or field value; longer values are truncated.
    pub value_length: usize,
}

/// What the local trace view (feature `console`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceViewMode {
    /// Nothing.
    Off,
    /// Print each finished trace as a waterfall, and a dependency map at shutdown.
    Tree,
    /// Print each finished span as a JSON line on stdout, for a parent process to assemble.
    Forward,
}

/// Settings of the Sentry backend, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentrySettings {
    /// The DSN, validated.
    pub dsn: Dsn,
    /// Share of error events sent.
    pub sample_rate: f32,
    /// Share of traces sent as transactions.
    pub traces_sample_rate: f32,
    /// Whether events may carry personal data.
    pub send_default_pii: bool,
    /// Breadcrumbs kept per scope.
    pub max_breadcrumbs: usize,
    /// Envelopes queued before new ones are dropped.
    pub queue_size: usize,
    /// Timeout of one HTTP request to Sentry.
    pub request_timeout: Duration,
    /// Extra secret keys (see [`Settings::redact_keys`]).
    pub redact_keys: Vec<String>,
    /// Characters kept per field value (see [`Limits::value_length`]).
    pub value_length: usize,
}

/// The OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// gRPC (Jaeger and Collectors listen on 4317).
    Grpc,
    /// Protobuf over HTTP (port 4318, path `/v1/traces`).
    HttpProtobuf,
    /// JSON over HTTP (port 4318, path `/v1/traces`).
    HttpJson,
}

impl OtlpProtocol {
    const EXPECTED: &'static str = "one of `grpc`, `http/protobuf`, `http/json`";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            "http/json" => Some(Self::HttpJson),
            _ => None,
        }
    }
}

/// The root decision of a sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SamplerKind {
    /// Sample every trace.
    AlwaysOn,
    /// Sample no trace.
    AlwaysOff,
    /// Sample this share of traces, decided from the trace id.
    TraceIdRatio(f64),
}

/// A sampler: a root decision, optionally deferring to the parent's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Sampler {
    /// Decision for spans without a parent (or every span when not parent-based).
    pub root: SamplerKind,
    /// Whether a parent's sampled flag decides for its children.
    pub parent_based: bool,
}

impl Sampler {
    /// A sampler from its parts.
    pub fn new(root: SamplerKind, parent_based: bool) -> Self {
        Sampler { root, parent_based }
    }
}

/// Batching of span exports (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSettings {
    /// Time between two exports.
    pub schedule_delay: Duration,
    /// Time one batch export may take.
    pub export_timeout: Duration,
    /// Spans queued before new ones are dropped.
    pub max_queue_size: usize,
    /// Spans per export request.
    pub max_export_batch_size: usize,
}

/// Settings of the OTLP backend, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OtlpSettings {
    /// The URL exports go to: for HTTP the full `/v1/traces` URL, for gRPC the base URL.
    pub endpoint: String,
    /// The wire protocol.
    pub protocol: OtlpProtocol,
    /// Headers sent with every export. Never log their values.
    pub headers: Vec<(String, String)>,
    /// Timeout of one export request.
    pub timeout: Duration,
    /// The sampler.
    pub sampler: Sampler,
    /// Batching.
    pub batch: BatchSettings,
}

/// A parsed Sentry DSN: `SCHEME://PUBLIC_KEY@HOST[:PORT]/[PATH/]PROJECT_ID`.
///
/// Its `Debug` output masks the public key, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    raw: String,
    scheme: String,
    public_key: String,
    host: String,
    port: Option<u16>,
    path: String,
    project_id: String,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_dsn(&self.raw))
    }
}

impl Dsn {
    /// The form a DSN must have, for error messages.
    pub const EXPECTED: &'static str =
        "a Sentry DSN of the form https://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID";

    /// Parses a DSN, returning `None` when it is not of the form [`Dsn::EXPECTED`].
    pub fn parse(raw: &str) -> Option<Dsn> {
        let raw = raw.trim();
        let (scheme, rest) = raw.split_once("://")?;
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let (userinfo, rest) = rest.split_once('@')?;
        let public_key = userinfo.split(':').next()?;
        if public_key.is_empty() || !public_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return None,
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, Some(p.parse::<u16>().ok()?))
            }
            _ => (authority, None),
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return None;
        }
        let path = path.trim_end_matches('/');
        let (prefix, project_id) = path.rsplit_once('/')?;
        if project_id.is_empty() || !project_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Dsn {
            raw: raw.to_owned(),
            scheme: scheme.to_owned(),
            public_key: public_key.to_owned(),
            host: host.to_owned(),
            port,
            path: prefix.to_owned(),
            project_id: project_id.to_owned(),
        })
    }

    /// The DSN as given. Contains the public key: do not log it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The public key.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The project id.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The envelope endpoint: `SCHEME://HOST[:PORT][/PATH]/api/PROJECT_ID/envelope/`.
    pub fn envelope_url(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{}{}/api/{}/envelope/",
            self.scheme, self.host, port, self.path, self.project_id
        )
    }
}

/// Builder for everything `integra_observe::init` sets up.
///
/// `Config::new()` starts from defaults only; [`Config::from_env`] also reads the environment
/// variables listed in [`crate::ENV_VARS`]. Values set on the builder win over the environment.
///
/// ```
/// use integra_observe_core::Config;
/// let config = Config::from_env_vars([("SENTRY_ENVIRONMENT", "staging")])
///     .service_name("auth-worker");
/// let settings = config.resolve().settings;
/// assert_eq!(settings.service.name, "auth-worker");
/// assert_eq!(settings.service.environment, "staging");
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Config {
    env: BTreeMap<String, String>,
    service_name: Option<String>,
    service_version: Option<String>,
    environment: Option<String>,
    release: Option<String>,
    sentry_dsn: Option<String>,
    sample_rate: Option<f32>,
    traces_sample_rate: Option<f32>,
    send_default_pii: Option<bool>,
    max_breadcrumbs: Option<usize>,
    sentry_queue_size: Option<usize>,
    sentry_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    log_filter: Option<String>,
    log_format: Option<LogFormat>,
    console: Option<bool>,
    sdk_disabled: Option<bool>,
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<OtlpProtocol>,
    otlp_headers: Option<Vec<(String, String)>>,
    otlp_timeout: Option<Duration>,
    sampler: Option<Sampler>,
    trace_view: Option<TraceViewMode>,
    redact_keys: Option<Vec<String>>,
    trust_incoming_context: Option<bool>,
}

/// The outcome of [`Config::resolve`]: usable settings plus every problem found on the way.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Resolved {
    /// Settings shared by every backend; invalid values were replaced by their defaults.
    pub settings: Settings,
    /// Sentry's settings, or `None` when Sentry is off (no DSN, `OTEL_SDK_DISABLED`, or an invalid
    /// DSN, which is then in `errors`).
    pub sentry: Option<SentrySettings>,
    /// OTLP's settings, or `None` when OTLP is off (no endpoint, `OTEL_TRACES_EXPORTER=none`,
    /// `OTEL_SDK_DISABLED`, or an invalid OTLP setting, which is then in `errors`).
    pub otlp: Option<OtlpSettings>,
    /// The sampler, whether or not OTLP export is on (`OTEL_TRACES_SAMPLER`).
    pub sampler: Sampler,
    /// The header formats to inject on outgoing requests (`OTEL_PROPAGATORS`).
    pub propagators: Vec<String>,
    /// Every invalid value, in the order found.
    pub errors: Vec<InitError>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<$ty>) -> Self {
            self.$field = Some(value.into());
            self
        }
    };
}

impl Config {
    /// A configuration with defaults only: no environment variable is read.
    pub fn new() -> Self {
        Self::default()
    }

    /// A configuration that reads the process environment (see [`crate::ENV_VARS`]).
    pub fn from_env() -> Self {
        Self::from_env_vars(std::env::vars_os().filter_map(|(k, v)| {
            // A variable that is not UTF-8 is treated as unset.
            Some((k.into_string().ok()?, v.into_string().ok()?))
        }))
    }

    /// A configuration that reads the given variables instead of the process environment, for
    /// tests and for services that load their environment from elsewhere.
    pub fn from_env_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Config {
            env: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Self::default()
        }
    }

    setter!(
        /// The service name (`service.name`). Wins over `OTEL_SERVICE_NAME`.
        service_name: String => service_name);
    setter!(
        /// The service version (`service.version`).
        service_version: String => service_version);
    setter!(
        /// The deployment environment. Wins over `SENTRY_ENVIRONMENT`.
        environment: String => environment);
    setter!(
        /// The Sentry release. Wins over `SENTRY_RELEASE`.
        release: String => release);
    setter!(
        /// The Sentry DSN. Wins over `SENTRY_DSN`; an empty string turns Sentry off.
        sentry_dsn: String => sentry_dsn);
    setter!(
        /// Share of error events sent to Sentry, 0.0 to 1.0.
        sample_rate: f32 => sample_rate);
    setter!(
        /// Share of traces sent to Sentry as transactions, 0.0 to 1.0.
        traces_sample_rate: f32 => traces_sample_rate);
    setter!(
        /// Whether Sentry events may carry personal data. Off by default.
        send_default_pii: bool => send_default_pii);
    setter!(
        /// Breadcrumbs kept per scope.
        max_breadcrumbs: usize => max_breadcrumbs);
    setter!(
        /// Envelopes the Sentry transport queues before it drops new ones.
        sentry_queue_size: usize => sentry_queue_size);
    setter!(
        /// Timeout of one HTTP request to Sentry.
        sentry_timeout: Duration => sentry_timeout);
    setter!(
        /// How long the guard may spend flushing every backend on shutdown. Default 2 s.
        shutdown_timeout: Duration => shutdown_timeout);
    setter!(
        /// An `EnvFilter` directive string. Wins over `RUST_LOG`.
        log_filter: String => log_filter);
    setter!(
        /// The console format.
        log_format: LogFormat => log_format);
    setter!(
        /// Whether console logging is on. Default on.
        console: bool => console);
    setter!(
        /// Turns every export off while keeping console logging, like `OTEL_SDK_DISABLED=true`.
        sdk_disabled: bool => sdk_disabled);
    setter!(
        /// Base URL of the OTLP receiver; turns OTLP on. Wins over the `OTEL_EXPORTER_OTLP_*ENDPOINT`
        /// variables. For HTTP, `/v1/traces` is appended unless the URL already has a path.
        otlp_endpoint: String => otlp_endpoint);
    setter!(
        /// The OTLP protocol. Wins over `OTEL_EXPORTER_OTLP_PROTOCOL`.
        otlp_protocol: OtlpProtocol => otlp_protocol);
    setter!(
        /// Timeout of one OTLP export request.
        otlp_timeout: Duration => otlp_timeout);
    setter!(
        /// The sampler. Wins over `OTEL_TRACES_SAMPLER`.
        sampler: Sampler => sampler);
    setter!(
        /// The local trace view (feature `console`). Wins over `INTEGRA_TRACE_VIEW`.
        trace_view: TraceViewMode => trace_view);

    /// Whether incoming trace context is continued (default) or, for a public endpoint, only
    /// linked while a new trace starts here, so an outside caller cannot choose trace ids or
    /// force sampling. Wins over `INTEGRA_TRUST_INCOMING_CONTEXT`.
    pub fn trust_incoming_context(mut self, trust: bool) -> Self {
        self.trust_incoming_context = Some(trust);
        self
    }

    /// More keys whose values are secrets, redacted in spans, span events, Sentry events and
    /// breadcrumbs on top of [`crate::DEFAULT_SECRET_KEYS`]. Wins over `INTEGRA_REDACT_KEYS`.
    pub fn redact_keys<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.redact_keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Headers sent with every OTLP export (e.g. an API key). Wins over `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn otlp_headers<K: Into<String>, V: Into<String>>(
        mut self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.otlp_headers = Some(
            headers
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// A variable from the snapshot, trimmed; empty counts as unset.
    fn var(&self, name: &'static str) -> Option<&str> {
        debug_assert!(
            crate::EnvVar::find(name).is_some(),
            "{name} missing from ENV_VARS"
        );
        self.env
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Resolves every setting, collecting invalid values into [`Resolved::errors`].
    pub fn resolve(&self) -> Resolved {
        let mut errors = Vec::new();
        let settings = self.resolve_common(&mut errors);
        let sentry = self.resolve_sentry(&settings, &mut errors);
        let otlp = self.resolve_otlp(&settings, &mut errors);
        // Errors in the sampler variables were reported by `resolve_otlp` already.
        let sampler = self
            .sampler
            .unwrap_or_else(|| self.resolve_sampler(&mut Vec::new()));
        let propagators = self.resolve_propagators(&mut errors);
        Resolved {
            settings,
            sentry,
            otlp,
            sampler,
            propagators,
            errors,
        }
    }

    fn resolve_common(&self, errors: &mut Vec<InitError>) -> Settings {
        let resource_attributes = match self.var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(raw) => parse_key_values(raw).unwrap_or_else(|| {
                errors.push(InitError::invalid(
                    Source::Env("OTEL_RESOURCE_ATTRIBUTES"),
                    raw,
                    "comma-separated key=value pairs with percent-encoded values, e.g. \
                     service.version=1.2.3,deployment.environment.name=prod",
                ));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let attr = |key: &str| {
            resource_attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let name = self
            .service_name
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.var("OTEL_SERVICE_NAME").map(str::to_owned))
            .or_else(|| attr("service.name"))
            .unwrap_or_else(default_service_name);
        let version = self
            .service_version
            .clone()
            .or_else(|| attr("service.version"));
        let environment = self
            .environment
            .clone()
            .or_else(|| self.var("SENTRY_ENVIRONMENT").map(str::to_owned))
            .or_else(|| attr("deployment.environment.name"))
            .or_else(|| attr("deployment.environment"))
            .unwrap_or_else(|| {
                if cfg!(debug_assertions) {
                    "development"
                } else {
                    "production"
                }
                .to_owned()
            });
        let release = self
            .release
            .clone()
            .or_else(|| self.var("SENTRY_RELEASE").map(str::to_owned))
            .or_else(|| version.as_ref().map(|v| format!("{name}@{v}")));

        let sdk_disabled = self
            .sdk_disabled
            .unwrap_or_else(|| self.bool_var("OTEL_SDK_DISABLED", errors).unwrap_or(false));
        let console = self
            .console
            .unwrap_or_else(|| self.bool_var("INTEGRA_CONSOLE", errors).unwrap_or(true));
        let filter = self
            .log_filter
            .clone()
            .or_else(|| self.var("RUST_LOG").map(str::to_owned))
            .unwrap_or_else(|| "info".to_owned());
        let format = self.log_format.unwrap_or_else(|| {
            match self.var("INTEGRA_LOG_FORMAT") {
                Some(raw) => LogFormat::parse(raw).or_else(|| {
                    errors.push(InitError::invalid(
                        Source::Env("INTEGRA_LOG_FORMAT"),
                        raw,
                        LogFormat::EXPECTED,
                    ));
                    None
                }),
                None => None,
            }
            .unwrap_or(if matches!(environment.as_str(), "production" | "prod") {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            })
        });
        let shutdown_timeout = self
            .shutdown_timeout
            .or_else(|| self.millis_var("INTEGRA_SHUTDOWN_TIMEOUT", errors))
            .unwrap_or(Duration::from_secs(2));
        let trace_view = self
            .trace_view
            .unwrap_or_else(|| match self.var("INTEGRA_TRACE_VIEW") {
                None | Some("tree") => TraceViewMode::Tree,
                Some("off") => TraceViewMode::Off,
                Some("forward") => TraceViewMode::Forward,
                Some(raw) => {
                    errors.push(InitError::invalid(
                        Source::Env("INTEGRA_TRACE_VIEW"),
                        raw,
                        "one of `tree`, `forward`, `off`",
                    ));
                    TraceViewMode::Tree
                }
            });

        let redact_keys = self.redact_keys.clone().unwrap_or_else(|| {
            self.var("INTEGRA_REDACT_KEYS")
                .map(|raw| {
                    raw.split(',')
                        .map(|k| k.trim().to_owned())
                        .filter(|k| !k.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        });

        let limit = |var: &'static str, errors: &mut Vec<InitError>, default: usize| {
            self.count_var(var, errors).unwrap_or(default)
        };
        let limits = Limits {
            attribute_count: limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", errors, 128)
                .min(u32::MAX as usize) as u32,
            event_count: limit("OTEL_SPAN_EVENT_COUNT_LIMIT", errors, 128).min(u32::MAX as usize)
                as u32,
            link_count: limit("OTEL_SPAN_LINK_COUNT_LIMIT", errors, 128).min(u32::MAX as usize)
                as u32,
            value_length: self
                .count_var("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", errors)
                .or_else(|| self.count_var("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", errors))
                .unwrap_or(4096)
                .max(16),
        };
        let trust_incoming_context = self.trust_incoming_context.unwrap_or_else(|| {
            self.bool_var("INTEGRA_TRUST_INCOMING_CONTEXT", errors)
                .unwrap_or(true)
        });

        Settings {
            service: ServiceInfo {
                name,
                version,
                environment,
                release,
                resource_attributes,
            },
            sdk_disabled,
            log: LogSettings {
                enabled: console,
                filter,
                format,
            },
            shutdown_timeout,
            trace_view,
            redact_keys,
            limits,
            trust_incoming_context,
        }
    }

    fn resolve_sentry(
        &self,
        settings: &Settings,
        errors: &mut Vec<InitError>,
    ) -> Option<SentrySettings> {
        let (raw, source) = match &self.sentry_dsn {
            Some(dsn) => (dsn.trim(), Source::Builder("sentry_dsn")),
            None => (
                self.var("SENTRY_DSN").unwrap_or(""),
                Source::Env("SENTRY_DSN"),
            ),
        };
        let errors_before = errors.len();
        let sample_rate = self.rate(
            self.sample_rate,
            "sample_rate",
            "SENTRY_SAMPLE_RATE",
            1.0,
            errors,
        );
        let traces_sample_rate = self.rate(
            self.traces_sample_rate,
            "traces_sample_rate",
            "SENTRY_TRACES_SAMPLE_RATE",
            0.0,
            errors,
        );
        let send_default_pii = self.send_default_pii.unwrap_or_else(|| {
            self.bool_var("SENTRY_SEND_DEFAULT_PII", errors)
                .unwrap_or(false)
        });
        let max_breadcrumbs = self
            .max_breadcrumbs
            .or_else(|| self.count_var("SENTRY_MAX_BREADCRUMBS", errors))
            .unwrap_or(100);
        let queue_size = self
            .sentry_queue_size
            .or_else(|| self.count_var("SENTRY_QUEUE_SIZE", errors))
            .unwrap_or(100)
            .max(1);
        let request_timeout = self
            .sentry_timeout
            .or_else(|| self.millis_var("SENTRY_TIMEOUT", errors))
            .unwrap_or(Duration::from_secs(5));

        if raw.is_empty() || settings.sdk_disabled || errors.len() > errors_before {
            // An invalid Sentry setting switches Sentry off rather than run it half-configured.
            return None;
        }
        let Some(dsn) = Dsn::parse(raw) else {
            errors.push(InitError::invalid(source, redact_dsn(raw), Dsn::EXPECTED));
            return None;
        };
        Some(SentrySettings {
            dsn,
            sample_rate,
            traces_sample_rate,
            send_default_pii,
            max_breadcrumbs,
            queue_size,
            request_timeout,
            redact_keys: settings.redact_keys.clone(),
            value_length: settings.limits.value_length,
        })
    }

    fn resolve_otlp(
        &self,
        settings: &Settings,
        errors: &mut Vec<InitError>,
    ) -> Option<OtlpSettings> {
        let errors_before = errors.len();
        let exporter_on = match self.var("OTEL_TRACES_EXPORTER") {
            None | Some("otlp") => true,
            Some("none") => false,
            Some(raw) => {
                errors.push(InitError::invalid(
                    Source::Env("OTEL_TRACES_EXPORTER"),
                    raw,
                    "`otlp` or `none`",
                ));
                false
            }
        };
        let protocol = self.otlp_protocol.or_else(|| {
            let var = [
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ]
            .into_iter()
            .find(|v| self.var(v).is_some())?;
            let raw = self.var(var)?;
            OtlpProtocol::parse(raw).or_else(|| {
                errors.push(InitError::invalid(
                    Source::Env(var),
                    raw,
                    OtlpProtocol::EXPECTED,
                ));
                None
            })
        });
        let protocol = protocol.unwrap_or(OtlpProtocol::HttpProtobuf);
        // (value, where it came from, whether it is a base URL that needs the signal path)
        let endpoint = match &self.otlp_endpoint {
            Some(e) => Some((e.clone(), Source::Builder("otlp_endpoint"), true)),
            None => match self.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(e) => Some((
                    e.to_owned(),
                    Source::Env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                    false,
                )),
                None => self.var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| {
                    (
                        e.to_owned(),
                        Source::Env("OTEL_EXPORTER_OTLP_ENDPOINT"),
                        true,
                    )
                }),
            },
        };
        let endpoint = endpoint.and_then(|(raw, source, is_base)| match valid_http_url(&raw) {
            Some(has_path) => Some(match protocol {
                OtlpProtocol::Grpc => raw,
                _ if is_base && !has_path => format!("{}/v1/traces", raw.trim_end_matches('/')),
                _ if is_base && matches!(source, Source::Env(_)) => {
                    format!("{}/v1/traces", raw.trim_end_matches('/'))
                }
                _ => raw,
            }),
            None => {
                errors.push(InitError::invalid(
                    source,
                    crate::redact_dsn(&raw),
                    "an http:// or https:// URL such as http://localhost:4317",
                ));
                None
            }
        });
        let mut headers = Vec::new();
        if let Some(h) = &self.otlp_headers {
            headers = h.clone();
        } else {
            for var in [
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            ] {
                let Some(raw) = self.var(var) else { continue };
                match parse_key_values(raw) {
                    Some(kv) => {
                        for (k, v) in kv {
                            headers
                                .retain(|(hk, _): &(String, String)| !hk.eq_ignore_ascii_case(&k));
                            headers.push((k, v));
                        }
                    }
                    None => errors.push(InitError::invalid(
                        Source::Env(var),
                        // Header values are secrets (API keys): show only the keys' shape.
                        crate::redact_secret_value(raw),
                        "comma-separated key=value pairs with percent-encoded values",
                    )),
                }
            }
        }
        let timeout = self
            .otlp_timeout
            .or_else(|| self.millis_var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", errors))
            .or_else(|| self.millis_var("OTEL_EXPORTER_OTLP_TIMEOUT", errors))
            .unwrap_or(Duration::from_secs(10));
        let sampler = self.sampler.unwrap_or_else(|| self.resolve_sampler(errors));
        let max_queue_size = self
            .count_var("OTEL_BSP_MAX_QUEUE_SIZE", errors)
            .unwrap_or(2048)
            .max(1);
        let batch = BatchSettings {
            schedule_delay: self
                .millis_var("OTEL_BSP_SCHEDULE_DELAY", errors)
                .unwrap_or(Duration::from_millis(5000)),
            export_timeout: self
                .millis_var("OTEL_BSP_EXPORT_TIMEOUT", errors)
                .unwrap_or(Duration::from_millis(30000)),
            max_queue_size,
            max_export_batch_size: self
                .count_var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", errors)
                .unwrap_or(512)
                .clamp(1, max_queue_size),
        };
        if !exporter_on || settings.sdk_disabled || errors.len() > errors_before {
            return None;
        }
        Some(OtlpSettings {
            endpoint: endpoint?,
            protocol,
            headers,
            timeout,
            sampler,
            batch,
        })
    }

    fn resolve_sampler(&self, errors: &mut Vec<InitError>) -> Sampler {
        let default = Sampler::new(SamplerKind::AlwaysOn, true);
        let mut ratio = || -> f64 {
            match self.var("OTEL_TRACES_SAMPLER_ARG") {
                None => 1.0,
                Some(raw) => match raw.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => {
                        errors.push(InitError::invalid(
                            Source::Env("OTEL_TRACES_SAMPLER_ARG"),
                            raw,
                            "a number from 0.0 to 1.0",
                        ));
                        1.0
                    }
                },
            }
        };
        let Some(raw) = self.var("OTEL_TRACES_SAMPLER") else {
            return default;
        };
        let (kind, parent_based) = match raw {
            "always_on" => (SamplerKind::AlwaysOn, false),
            "always_off" => (SamplerKind::AlwaysOff, false),
            "traceidratio" => (SamplerKind::TraceIdRatio(ratio()), false),
            "parentbased_always_on" => (SamplerKind::AlwaysOn, true),
            "parentbased_always_off" => (SamplerKind::AlwaysOff, true),
            "parentbased_traceidratio" => (SamplerKind::TraceIdRatio(ratio()), true),
            _ => {
                errors.push(InitError::invalid(
                    Source::Env("OTEL_TRACES_SAMPLER"),
                    raw,
                    "one of always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off, parentbased_traceidratio",
                ));
                return default;
            }
        };
        Sampler::new(kind, parent_based)
    }

    fn resolve_propagators(&self, errors: &mut Vec<InitError>) -> Vec<String> {
        const KNOWN: &[&str] = &["tracecontext", "baggage", "sentry", "jaeger", "none"];
        let default = || {
            ["tracecontext", "baggage", "sentry"]
                .map(String::from)
                .to_vec()
        };
        let Some(raw) = self.var("OTEL_PROPAGATORS") else {
            return default();
        };
        let list: Vec<String> = raw
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(bad) = list.iter().find(|p| !KNOWN.contains(&p.as_str())) {
            errors.push(InitError::invalid(
                Source::Env("OTEL_PROPAGATORS"),
                raw,
                format!(
                    "a comma-separated list of {} (`{bad}` is not supported)",
                    KNOWN.join(", ")
                ),
            ));
            return default();
        }
        if list.iter().any(|p| p == "none") {
            return Vec::new();
        }
        list
    }

    fn rate(
        &self,
        builder: Option<f32>,
        method: &'static str,
        var: &'static str,
        default: f32,
        errors: &mut Vec<InitError>,
    ) -> f32 {
        const EXPECTED: &str = "a number from 0.0 to 1.0";
        if let Some(v) = builder {
            if (0.0..=1.0).contains(&v) {
                return v;
            }
            errors.push(InitError::invalid(
                Source::Builder(method),
                v.to_string(),
                EXPECTED,
            ));
            return default;
        }
        match self.var(var) {
            Some(raw) => match raw.parse::<f32>() {
                Ok(v) if (0.0..=1.0).contains(&v) => v,
                _ => {
                    errors.push(InitError::invalid(Source::Env(var), raw, EXPECTED));
                    default
                }
            },
            None => default,
        }
    }

    fn bool_var(&self, var: &'static str, errors: &mut Vec<InitError>) -> Option<bool> {
        let raw = self.var(var)?;
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => {
                errors.push(InitError::invalid(
                    Source::Env(var),
                    raw,
                    "`true` or `false`",
                ));
                None
            }
        }
    }

    fn count_var(&self, var: &'static str, errors: &mut Vec<InitError>) -> Option<usize> {
        let raw = self.var(var)?;
        raw.parse::<usize>().ok().or_else(|| {
            errors.push(InitError::invalid(
                Source::Env(var),
                raw,
                "a whole number, e.g. 100",
            ));
            None
        })
    }

    fn millis_var(&self, var: &'static str, errors: &mut Vec<InitError>) -> Option<Duration> {
        let raw = self.var(var)?;
        raw.parse::<u64>()
            .ok()
            .map(Duration::from_millis)
            .or_else(|| {
                errors.push(InitError::invalid(
                    Source::Env(var),
                    raw,
                    "a whole number of milliseconds, e.g. 2000",
                ));
                None
            })
    }
}

/// `Some(has_path)` when `raw` is an `http://` or `https://` URL with a host; `has_path` tells
/// whether it has a path beyond `/`.
fn valid_http_url(raw: &str) -> Option<bool> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_ok = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && !port.contains(']') => port.parse::<u16>().is_ok(),
        _ => !host.is_empty(),
    };
    if !host_ok || raw.contains(char::is_whitespace) {
        return None;
    }
    Some(!path.trim_end_matches('/').is_empty())
}

/// `unknown_service:<executable name>`, the OpenTelemetry default.
fn default_service_name() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()));
    match exe {
        Some(exe) => format!("unknown_service:{exe}"),
        None => "unknown_service".to_owned(),
    }
}

/// Parses `k1=v1,k2=v2` with percent-encoded values (the W3C Baggage form used by
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`). `None` when malformed.
pub fn parse_key_values(raw: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        let k = k.trim();
        if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        out.push((k.to_owned(), percent_decode(v.trim())?));
    }
    Some(out)
}

/// Decodes `%XX` escapes; `None` on a malformed escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)], f: impl FnOnce(Config) -> Config) -> Resolved {
        f(Config::from_env_vars(vars.iter().copied())).resolve()
    }

    #[test]
    fn precedence_builder_then_sentry_then_otel_then_default() {
        let attrs = (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=otel-env,service.version=9.9",
        );
        // default
        let r = resolve(&[], |c| c);
        assert_eq!(r.settings.service.environment, "development");
        assert_eq!(r.settings.service.release, None);
        // generic OTEL_* only
        let r = resolve(&[attrs], |c| c.service_name("svc"));
        assert_eq!(r.settings.service.environment, "otel-env");
        assert_eq!(r.settings.service.release.as_deref(), Some("svc@9.9"));
        // SENTRY_* beats OTEL_*
        let vars = [
            attrs,
            ("SENTRY_ENVIRONMENT", "sentry-env"),
            ("SENTRY_RELEASE", "r1"),
        ];
        let r = resolve(&vars, |c| c);
        assert_eq!(r.settings.service.environment, "sentry-env");
        assert_eq!(r.settings.service.release.as_deref(), Some("r1"));
        // builder beats both
        let r = resolve(&vars, |c| c.environment("builder-env").release("r2"));
        assert_eq!(r.settings.service.environment, "builder-env");
        assert_eq!(r.settings.service.release.as_deref(), Some("r2"));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }

    #[test]
    fn service_name_precedence() {
        let attrs = ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs");
        assert_eq!(resolve(&[attrs], |c| c).settings.service.name, "from-attrs");
        let vars = [attrs, ("OTEL_SERVICE_NAME", "from-var")];
        assert_eq!(resolve(&vars, |c| c).settings.service.name, "from-var");
        assert_eq!(
            resolve(&vars, |c| c.service_name("b"))
                .settings
                .service
                .name,
            "b"
        );
        assert!(resolve(&[], |c| c)
            .settings
            .service
            .name
            .starts_with("unknown_service"));
    }

    #[test]
    fn sentry_off_without_dsn_or_when_disabled() {
        assert!(resolve(&[], |c| c).sentry.is_none());
        let dsn = ("SENTRY_DSN", "https://abc@127.0.0.1:9000/1");
        assert!(resolve(&[dsn], |c| c).sentry.is_some());
        assert!(resolve(&[dsn, ("OTEL_SDK_DISABLED", "true")], |c| c)
            .sentry
            .is_none());
        assert!(resolve(&[dsn], |c| c.sentry_dsn("")).sentry.is_none());
    }

    #[test]
    fn invalid_dsn_names_variable_value_and_form_without_the_key() {
        let r = resolve(&[("SENTRY_DSN", "not-a-dsn")], |c| c);
        assert!(r.sentry.is_none());
        let msg = r.errors[0].to_string();
        assert!(
            msg.contains("SENTRY_DSN") && msg.contains("not-a-dsn") && msg.contains("PROJECT_ID"),
            "{msg}"
        );

        let r = resolve(&[], |c| c.sentry_dsn("https://secretkey@host/"));
        let msg = r.errors[0].to_string();
        assert!(msg.contains("Config::sentry_dsn"), "{msg}");
        assert!(!msg.contains("secretkey"), "{msg}");
    }

    #[test]
    fn sample_rates_must_be_in_range() {
        let dsn = ("SENTRY_DSN", "https://abc@h/1");
        let r = resolve(&[dsn, ("SENTRY_SAMPLE_RATE", "1.5")], |c| c);
        assert!(
            r.sentry.is_none(),
            "an invalid Sentry setting switches Sentry off"
        );
        assert_eq!(
            resolve(&[dsn, ("SENTRY_SAMPLE_RATE", "0.25")], |c| c)
                .sentry
                .unwrap()
                .sample_rate,
            0.25
        );
        assert_eq!(
            r.errors,
            vec![InitError::invalid(
                Source::Env("SENTRY_SAMPLE_RATE"),
                "1.5",
                "a number from 0.0 to 1.0"
            )]
        );
        let r = resolve(&[dsn], |c| c.traces_sample_rate(-0.1));
        assert!(r.errors[0]
            .to_string()
            .contains("Config::traces_sample_rate"));
        let r = resolve(&[dsn, ("SENTRY_TRACES_SAMPLE_RATE", "abc")], |c| c);
        assert!(r.errors[0]
            .to_string()
            .contains("SENTRY_TRACES_SAMPLE_RATE"));
    }

    #[test]
    fn unknown_format_and_bad_bools_are_errors() {
        let r = resolve(
            &[
                ("INTEGRA_LOG_FORMAT", "xml"),
                ("OTEL_SDK_DISABLED", "maybe"),
            ],
            |c| c,
        );
        let msgs: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert!(
            msgs.iter().any(|m| m.contains("INTEGRA_LOG_FORMAT")
                && m.contains("xml")
                && m.contains("json")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("OTEL_SDK_DISABLED") && m.contains("maybe")),
            "{msgs:?}"
        );
        assert_eq!(r.settings.log.format, LogFormat::Pretty);
    }

    #[test]
    fn json_in_production_pretty_elsewhere() {
        assert_eq!(
            resolve(&[], |c| c.environment("production"))
                .settings
                .log
                .format,
            LogFormat::Json
        );
        assert_eq!(
            resolve(&[], |c| c.environment("staging"))
                .settings
                .log
                .format,
            LogFormat::Pretty
        );
        assert_eq!(
            resolve(&[("INTEGRA_LOG_FORMAT", "compact")], |c| c
                .environment("production"))
            .settings
            .log
            .format,
            LogFormat::Compact
        );
    }

    #[test]
    fn dsn_forms() {
        let d = Dsn::parse("https://key@o1.ingest.sentry.io/42").unwrap();
        assert_eq!(
            d.envelope_url(),
            "https://o1.ingest.sentry.io/api/42/envelope/"
        );
        let d = Dsn::parse("http://key:secret@127.0.0.1:8000/sub/path/7").unwrap();
        assert_eq!(
            d.envelope_url(),
            "http://127.0.0.1:8000/sub/path/api/7/envelope/"
        );
        assert_eq!(d.public_key(), "key");
        for bad in [
            "",
            "key@host/1",
            "ftp://k@h/1",
            "https://@h/1",
            "https://k@h",
            "https://k@h/",
            "https://k@h:99999/1",
            "https://k@/1",
        ] {
            assert!(Dsn::parse(bad).is_none(), "{bad}");
        }
        assert!(
            !format!("{:?}", Dsn::parse("https://topsecret@h/1").unwrap()).contains("topsecret")
        );
    }

    #[test]
    fn otlp_endpoints_protocols_and_errors() {
        assert!(resolve(&[], |c| c).otlp.is_none(), "no endpoint, no OTLP");
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let o = resolve(&[base], |c| c).otlp.unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            (
                "http://127.0.0.1:4318/v1/traces",
                OtlpProtocol::HttpProtobuf
            )
        );
        let o = resolve(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], |c| c)
            .otlp
            .unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            ("http://127.0.0.1:4318", OtlpProtocol::Grpc)
        );
        let signal = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:1/custom");
        assert_eq!(
            resolve(&[base, signal], |c| c).otlp.unwrap().endpoint,
            "http://h:1/custom"
        );
        assert_eq!(
            resolve(&[base, signal], |c| c.otlp_endpoint("http://b:2"))
                .otlp
                .unwrap()
                .endpoint,
            "http://b:2/v1/traces"
        );
        assert!(resolve(&[base, ("OTEL_TRACES_EXPORTER", "none")], |c| c)
            .otlp
            .is_none());
        assert!(resolve(&[base, ("OTEL_SDK_DISABLED", "true")], |c| c)
            .otlp
            .is_none());

        let r = resolve(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")], |c| c);
        assert!(r.otlp.is_none());
        assert!(
            r.errors[0]
                .to_string()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL")
                && r.errors[0].to_string().contains("thrift")
        );
        let r = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317")], |c| c);
        assert!(r.otlp.is_none());
        assert!(r.errors[0]
            .to_string()
            .contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let r = resolve(&[base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")], |c| c);
        assert!(r.errors[0]
            .to_string()
            .contains("OTEL_EXPORTER_OTLP_TIMEOUT"));
    }

    #[test]
    fn otlp_headers_never_echo_values() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318");
        let o = resolve(
            &[
                base,
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt,x=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x=2"),
            ],
            |c| c,
        )
        .otlp
        .unwrap();
        assert_eq!(
            o.headers,
            vec![
                ("api-key".into(), "s3cr=t".into()),
                ("x".into(), "2".into())
            ]
        );
        let r = resolve(
            &[
                base,
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=topsecret,broken"),
            ],
            |c| c,
        );
        let msg = r.errors[0].to_string();
        assert!(
            msg.contains("OTEL_EXPORTER_OTLP_HEADERS") && !msg.contains("topsecret"),
            "{msg}"
        );
    }

    #[test]
    fn samplers() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318");
        let s = |vars: &[(&str, &str)]| resolve(vars, |c| c).otlp.map(|o| o.sampler);
        assert_eq!(s(&[base]), Some(Sampler::new(SamplerKind::AlwaysOn, true)));
        assert_eq!(
            s(&[
                base,
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1")
            ]),
            Some(Sampler::new(SamplerKind::TraceIdRatio(0.1), true))
        );
        assert_eq!(
            s(&[base, ("OTEL_TRACES_SAMPLER", "always_off")]),
            Some(Sampler::new(SamplerKind::AlwaysOff, false))
        );
        let r = resolve(&[base, ("OTEL_TRACES_SAMPLER", "sometimes")], |c| c);
        assert!(r.otlp.is_none() && r.errors[0].to_string().contains("OTEL_TRACES_SAMPLER"));
        let r = resolve(
            &[
                base,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
            |c| c,
        );
        assert!(r.errors[0].to_string().contains("OTEL_TRACES_SAMPLER_ARG"));
    }

    #[test]
    fn propagators() {
        assert_eq!(
            resolve(&[], |c| c).propagators,
            vec!["tracecontext", "baggage", "sentry"]
        );
        assert_eq!(
            resolve(&[("OTEL_PROPAGATORS", "tracecontext,jaeger")], |c| c).propagators,
            vec!["tracecontext", "jaeger"]
        );
        assert!(resolve(&[("OTEL_PROPAGATORS", "none")], |c| c)
            .propagators
            .is_empty());
        let r = resolve(&[("OTEL_PROPAGATORS", "b3")], |c| c);
        assert!(r.errors[0].to_string().contains("`b3` is not supported"));
    }

    #[test]
    fn limits_and_trust() {
        let r = resolve(&[], |c| c);
        assert_eq!(
            (
                r.settings.limits.attribute_count,
                r.settings.limits.value_length
            ),
            (128, 4096)
        );
        assert!(r.settings.trust_incoming_context);
        let r = resolve(
            &[
                ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5"),
                ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100"),
                ("INTEGRA_TRUST_INCOMING_CONTEXT", "false"),
            ],
            |c| c,
        );
        assert_eq!(
            (
                r.settings.limits.attribute_count,
                r.settings.limits.value_length
            ),
            (5, 100)
        );
        assert!(!r.settings.trust_incoming_context);
        let r = resolve(&[("OTEL_SPAN_EVENT_COUNT_LIMIT", "many")], |c| c);
        assert!(r.errors[0]
            .to_string()
            .contains("OTEL_SPAN_EVENT_COUNT_LIMIT"));
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_values("a=1, b=x%20y").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert!(parse_key_values("novalue").is_none());
        assert!(parse_key_values("a=%zz").is_none());
    }
}
