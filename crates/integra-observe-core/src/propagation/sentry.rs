//! Sentry's `sentry-trace` header and its dynamic sampling context, carried in `sentry-*` baggage
//! members (<https://develop.sentry.dev/sdk/telemetry/traces/>).

use super::Baggage;
use crate::{SpanId, TraceId};

/// The prefix of the baggage members Sentry owns.
const PREFIX: &str = "sentry-";

/// Whether a baggage key belongs to Sentry's dynamic sampling context.
pub(super) fn is_sentry_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// A `sentry-trace` header: `{trace_id}-{span_id}[-{sampled}]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SentryTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span.
    pub span_id: SpanId,
    /// `-1` sampled, `-0` not sampled; `None` when the caller deferred the decision.
    pub sampled: Option<bool>,
}

impl SentryTrace {
    /// A header from its parts.
    pub fn new(trace_id: TraceId, span_id: SpanId, sampled: Option<bool>) -> Self {
        SentryTrace {
            trace_id,
            span_id,
            sampled,
        }
    }

    /// Parses one `sentry-trace` value: 32 and 16 lowercase hex digits, then optionally `-1` or
    /// `-0`. ASCII whitespace around the value is ignored. Uppercase hex is rejected, as Sentry's
    /// own SDKs (whose pattern is `[0-9a-f]`) reject it; all-zero ids are invalid.
    ///
    /// ```
    /// use integra_observe_core::propagation::SentryTrace;
    /// let st = SentryTrace::parse("771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1").unwrap();
    /// assert_eq!(st.sampled, Some(true));
    /// assert_eq!(SentryTrace::parse("771a43a4192642f0b136d5159a501700-b7ad6b7169203331").unwrap().sampled, None);
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .split('-');
        let trace_id = TraceId::from_hex(parts.next()?)?;
        let span_id = SpanId::from_hex(parts.next()?)?;
        let sampled = match parts.next() {
            None => None,
            Some("1") => Some(true),
            Some("0") => Some(false),
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(SentryTrace {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let sampled = match self.sampled {
            Some(true) => "-1",
            Some(false) => "-0",
            None => "",
        };
        format!("{}-{}{}", self.trace_id, self.span_id, sampled)
    }
}

/// Sentry's dynamic sampling context (DSC): the trace's sampling-relevant facts, set by the
/// service that started the trace and passed on unchanged as `sentry-*` baggage members.
///
/// ```
/// use integra_observe_core::propagation::{Baggage, DynamicSamplingContext};
/// let baggage = Baggage::parse(&[
///     "other=1,sentry-trace_id=771a43a4192642f0b136d5159a501700,sentry-public_key=49d0f7386ad645858ae85020e393bef3,sentry-sample_rate=0.25,sentry-sampled=true",
/// ]).unwrap();
/// let dsc = DynamicSamplingContext::from_baggage(&baggage).unwrap();
/// assert_eq!(dsc.sample_rate.as_deref(), Some("0.25"));
///
/// let mut out = Baggage::parse(&["other=2,sentry-release=old"]).unwrap();
/// dsc.write_to(&mut out);
/// assert_eq!(out.get("other"), Some("2"));
/// assert_eq!(out.get("sentry-release"), None);
/// assert_eq!(DynamicSamplingContext::from_baggage(&out), Some(dsc));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamicSamplingContext {
    /// `sentry-trace_id` (required).
    pub trace_id: TraceId,
    /// `sentry-public_key`: the DSN's public key (required).
    pub public_key: String,
    /// `sentry-sample_rate`, as written.
    pub sample_rate: Option<String>,
    /// `sentry-sample_rand`, as written.
    pub sample_rand: Option<String>,
    /// `sentry-sampled`: `true` or `false`; any other value reads as `None`.
    pub sampled: Option<bool>,
    /// `sentry-environment`.
    pub environment: Option<String>,
    /// `sentry-release`.
    pub release: Option<String>,
    /// `sentry-transaction`.
    pub transaction: Option<String>,
    /// `sentry-org_id`.
    pub org_id: Option<String>,
    /// `sentry-replay_id`.
    pub replay_id: Option<String>,
    /// Other `sentry-*` members, by name without the prefix, kept so that they pass on.
    pub other: Vec<(String, String)>,
}

impl DynamicSamplingContext {
    /// A context with only its required fields.
    pub fn new(trace_id: TraceId, public_key: impl Into<String>) -> Self {
        DynamicSamplingContext {
            trace_id,
            public_key: public_key.into(),
            sample_rate: None,
            sample_rand: None,
            sampled: None,
            environment: None,
            release: None,
            transaction: None,
            org_id: None,
            replay_id: None,
            other: Vec::new(),
        }
    }

    /// Reads the `sentry-*` members of `baggage`. `None` without a valid `sentry-trace_id`
    /// (32 lowercase hex) and a non-empty `sentry-public_key`. Empty optional values read as
    /// absent.
    pub fn from_baggage(baggage: &Baggage) -> Option<Self> {
        let mut trace_id = None;
        let mut dsc = DynamicSamplingContext::new(TraceId::from_bytes([0; 16]), String::new());
        for (key, value) in baggage.iter() {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            let text = (!value.is_empty()).then(|| value.to_owned());
            match name {
                "trace_id" => trace_id = Some(TraceId::from_hex(value)),
                "public_key" => dsc.public_key = value.to_owned(),
                "sample_rate" => dsc.sample_rate = text,
                "sample_rand" => dsc.sample_rand = text,
                "sampled" => {
                    dsc.sampled = match value {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    }
                }
                "environment" => dsc.environment = text,
                "release" => dsc.release = text,
                "transaction" => dsc.transaction = text,
                "org_id" => dsc.org_id = text,
                "replay_id" => dsc.replay_id = text,
                _ => dsc.other.push((name.to_owned(), value.to_owned())),
            }
        }
        dsc.trace_id = trace_id.flatten()?;
        (!dsc.public_key.is_empty()).then_some(dsc)
    }

    /// Writes this context into `baggage` as `sentry-*` members placed first (so that they are
    /// the last to be dropped by the size limit), after removing every existing `sentry-*`
    /// member; members of other vendors are kept in their order.
    pub fn write_to(&self, baggage: &mut Baggage) {
        baggage.retain(|key, _| !is_sentry_key(key));
        let mut pairs = vec![
            ("trace_id".to_owned(), self.trace_id.to_string()),
            ("public_key".to_owned(), self.public_key.clone()),
        ];
        let optional = [
            ("sample_rate", &self.sample_rate),
            ("sample_rand", &self.sample_rand),
        ];
        pairs.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?))),
        );
        if let Some(sampled) = self.sampled {
            pairs.push(("sampled".to_owned(), sampled.to_string()));
        }
        let optional = [
            ("environment", &self.environment),
            ("release", &self.release),
            ("transaction", &self.transaction),
            ("org_id", &self.org_id),
            ("replay_id", &self.replay_id),
        ];
        pairs.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?))),
        );
        pairs.extend(self.other.iter().cloned());
        baggage.prepend(
            pairs
                .into_iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), v))
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "771a43a4192642f0b136d5159a501700";
    const S: &str = "b7ad6b7169203331";

    fn st(s: &str) -> Option<SentryTrace> {
        SentryTrace::parse(s)
    }

    #[test]
    fn sentry_trace_forms() {
        let v = st(&format!("{T}-{S}-1")).unwrap();
        assert_eq!(
            (v.trace_id.to_string(), v.span_id.to_string()),
            (T.into(), S.into())
        );
        assert_eq!(v.sampled, Some(true));
        assert_eq!(st(&format!("{T}-{S}-0")).unwrap().sampled, Some(false));
        assert_eq!(st(&format!("{T}-{S}")).unwrap().sampled, None);
        for s in [
            format!("{T}-{S}-1"),
            format!("{T}-{S}-0"),
            format!("{T}-{S}"),
        ] {
            assert_eq!(st(&s).unwrap().to_header(), s);
        }
    }

    #[test]
    fn sentry_trace_whitespace_is_lenient() {
        for s in [
            format!(" {T}-{S}-1 "),
            format!("\t{T}-{S}-1\t"),
            format!("\r\n {T}-{S}-1\n"),
        ] {
            assert_eq!(st(&s).unwrap().sampled, Some(true), "{s:?}");
        }
        assert_eq!(st(&format!("{T} -{S}-1")), None);
        assert_eq!(st(&format!("{T}-{S}- 1")), None);
    }

    #[test]
    fn sentry_trace_invalid() {
        let upper_t = T.to_uppercase();
        let upper_s = S.to_uppercase();
        for s in [
            String::new(),
            "-".into(),
            T.into(),
            format!("{T}-"),
            format!("-{S}"),
            format!("{upper_t}-{S}-1"),
            format!("{T}-{upper_s}-1"),
            format!("{T}-{S}-"),
            format!("{T}-{S}-2"),
            format!("{T}-{S}-true"),
            format!("{T}-{S}-01"),
            format!("{T}-{S}-1-1"),
            format!("{T}0-{S}-1"),
            format!("{T}-{S}0-1"),
            format!("{}-{S}-1", &T[1..]),
            format!("00000000000000000000000000000000-{S}-1"),
            format!("{T}-0000000000000000-1"),
            format!("{T}_{S}_1"),
            format!("00-{T}-{S}-01"),
        ] {
            assert_eq!(st(&s), None, "{s}");
        }
    }

    fn baggage(s: &str) -> Baggage {
        Baggage::parse(&[s]).unwrap()
    }

    #[test]
    fn dsc_reads_sentry_members() {
        let b = baggage(&format!(
            "other=1,sentry-trace_id={T},sentry-public_key=pk,sentry-sample_rate=0.5,\
             sentry-sample_rand=0.1234,sentry-sampled=false,sentry-environment=prod,\
             sentry-release=app%401.0,sentry-transaction=GET%20%2Fusers,sentry-org_id=42,\
             sentry-replay_id=r1,sentry-user_segment=vip,sentry-empty="
        ));
        let d = DynamicSamplingContext::from_baggage(&b).unwrap();
        assert_eq!(d.trace_id.to_string(), T);
        assert_eq!(d.public_key, "pk");
        assert_eq!(d.sample_rate.as_deref(), Some("0.5"));
        assert_eq!(d.sample_rand.as_deref(), Some("0.1234"));
        assert_eq!(d.sampled, Some(false));
        assert_eq!(d.environment.as_deref(), Some("prod"));
        assert_eq!(d.release.as_deref(), Some("app@1.0"));
        assert_eq!(d.transaction.as_deref(), Some("GET /users"));
        assert_eq!(d.org_id.as_deref(), Some("42"));
        assert_eq!(d.replay_id.as_deref(), Some("r1"));
        assert_eq!(
            d.other,
            vec![
                ("user_segment".to_string(), "vip".to_string()),
                ("empty".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn dsc_requires_trace_id_and_public_key() {
        let from = |s: &str| DynamicSamplingContext::from_baggage(&baggage(s));
        assert!(from(&format!("sentry-trace_id={T},sentry-public_key=pk")).is_some());
        assert_eq!(from("sentry-public_key=pk"), None);
        assert_eq!(from(&format!("sentry-trace_id={T}")), None);
        assert_eq!(
            from(&format!("sentry-trace_id={T},sentry-public_key=")),
            None
        );
        let upper = T.to_uppercase();
        assert_eq!(
            from(&format!("sentry-trace_id={upper},sentry-public_key=pk")),
            None
        );
        assert_eq!(from("sentry-trace_id=abc,sentry-public_key=pk"), None);
        assert_eq!(from("other=1"), None);
        let d = from(&format!(
            "sentry-trace_id={T},sentry-public_key=pk,sentry-sampled=yes"
        ))
        .unwrap();
        assert_eq!(d.sampled, None);
    }

    #[test]
    fn dsc_round_trip_keeps_third_party_members() {
        let tid = TraceId::from_hex(T).unwrap();
        let mut d = DynamicSamplingContext::new(tid, "pk");
        d.sample_rate = Some("0.25".into());
        d.sampled = Some(true);
        d.environment = Some("prod".into());
        d.release = Some("app@1.0+abc".into());
        d.transaction = Some("GET /users/{id}, list".into());
        d.other.push(("custom".into(), "x".into()));

        let mut b = baggage("vendor=1,sentry-release=old,sentry-stale=1,zz=2");
        d.write_to(&mut b);
        assert_eq!(
            b.to_header(),
            format!(
                "sentry-trace_id={T},sentry-public_key=pk,sentry-sample_rate=0.25,\
                 sentry-sampled=true,sentry-environment=prod,sentry-release=app@1.0+abc,\
                 sentry-transaction=GET%20/users/{{id}}%2C%20list,sentry-custom=x,vendor=1,zz=2"
            )
        );
        let back = DynamicSamplingContext::from_baggage(&baggage(&b.to_header())).unwrap();
        assert_eq!(back, d);

        // Writing again replaces, never duplicates.
        d.sampled = Some(false);
        d.other.clear();
        d.write_to(&mut b);
        assert_eq!(b.get("sentry-sampled"), Some("false"));
        assert_eq!(b.get("sentry-custom"), None);
        assert_eq!(DynamicSamplingContext::from_baggage(&b), Some(d));
    }

    #[test]
    fn dsc_invalid_other_keys_are_skipped_on_write() {
        let tid = TraceId::from_hex(T).unwrap();
        let mut d = DynamicSamplingContext::new(tid, "pk");
        d.other.push(("bad key".into(), "x".into()));
        let mut b = Baggage::new();
        d.write_to(&mut b);
        assert_eq!(b.len(), 2);
    }
}
