//! The HTTP client of the OTLP/HTTP exporter: the blocking reqwest client opentelemetry-otlp
//! would use on its own, wrapped to read two things of each answer that the exporter does not
//! pass on to the span processor.
//!
//! - A `200` carrying an OTLP partial success (`partial_success.rejected_spans`, protobuf or
//!   JSON): opentelemetry-otlp 0.33 only logs it (behind a feature we do not enable) and returns
//!   `Ok`, so the rejected spans would count as `sent`. Here they are reported to the export queue
//!   ([`crate::batch::report_rejected`]), which counts them as `rejected`, and one warning line
//!   names the receiver's `error_message`, at most once a minute.
//! - `Retry-After` on a refusal (429, 503): reported to the export queue
//!   ([`crate::batch::report_retry_after`]), which waits at least that long (capped) before it
//!   tries the batch again. The exporter's own retries are off for HTTP (see `build_exporter`), so
//!   every retry is the queue's, counted in `retried`.
//!
//! Both reports go through a thread-local slot of the export thread: the exporter's future, and
//! this client inside it, is polled on that thread (see `batch`).
//!
//! What it must never do: send without a timeout (the reqwest client has the OTLP timeout for
//! the whole request, body included); read an unbounded body (4 MiB, as opentelemetry-http);
//! panic on a body it cannot decode (it is then a plain success, as upstream treats it); or log
//! once per request.

use std::io::Read;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

/// Larger answers are refused, as opentelemetry-http's own clients do.
const MAX_RESPONSE_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// At most one partial-success warning in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A `Retry-After` longer than this is read as this (the queue caps it further).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How the receiver encodes its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

/// The OTLP/HTTP exporter's client: see the module documentation.
#[derive(Debug)]
pub(crate) struct ObservingClient {
    inner: reqwest::blocking::Client,
    encoding: Encoding,
    warnings: Mutex<Warnings>,
}

/// The partial-success warning's rate limit.
#[derive(Debug, Default)]
struct Warnings {
    last: Option<Instant>,
    /// Partial successes and rejected spans since the last warning, not yet reported.
    unreported_answers: u64,
    unreported_spans: u64,
}

impl ObservingClient {
    /// A client whose requests (connection, request and whole answer) take at most `timeout`.
    ///
    /// The blocking reqwest client is built on a thread of its own, as opentelemetry-otlp does:
    /// it starts a runtime, which must not happen inside another runtime's context.
    pub(crate) fn new(timeout: Duration, encoding: Encoding) -> Result<Self, String> {
        let inner = std::thread::Builder::new()
            .name("integra-otlp-client".into())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
            })
            .map_err(|e| format!("could not start a thread to build the HTTP client: {e}"))?
            .join()
            .map_err(|_| "building the HTTP client panicked".to_owned())?
            .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
        Ok(ObservingClient {
            inner,
            encoding,
            warnings: Mutex::new(Warnings::default()),
        })
    }

    /// Reports what the answer says beyond its status: a partial success, or `Retry-After`.
    fn observe(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) {
        if status.is_success() {
            if let Some((rejected, message)) = partial_success(body, self.encoding) {
                if rejected > 0 {
                    crate::batch::report_rejected(rejected);
                }
                self.warn(rejected, &message);
            }
        } else if let Some(delay) = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
        {
            crate::batch::report_retry_after(delay);
        }
    }

    /// One warning line for a partial success, unless one was written less than a minute ago
    /// (then it is counted into the next line).
    fn warn(&self, rejected: u64, message: &str) {
        let now = Instant::now();
        let mut w = self.warnings.lock().unwrap_or_else(PoisonError::into_inner);
        w.unreported_answers += 1;
        w.unreported_spans += rejected;
        if w.last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            return;
        }
        let (answers, spans) = (w.unreported_answers, w.unreported_spans);
        *w = Warnings {
            last: Some(now),
            ..Warnings::default()
        };
        drop(w);
        // The receiver's message may echo what it was sent: redacted, and kept short.
        let message: String = integra_observe_core::redact_value(message)
            .unwrap_or_else(|| message.to_owned())
            .chars()
            .take(300)
            .collect();
        tracing::warn!(
            target: "integra_observe",
            rejected_spans = spans,
            answers,
            "the OTLP receiver accepted a batch only in part (partial success) and rejected \
             {spans} span(s), counted as `rejected`: {message:?}"
        );
    }
}

#[async_trait::async_trait]
impl HttpClient for ObservingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request: reqwest::blocking::Request = request.try_into()?;
        let mut response = self.inner.execute(request)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let capacity = response
            .content_length()
            .unwrap_or(0)
            .min(MAX_RESPONSE_BODY_BYTES) as usize;
        let mut body = Vec::with_capacity(capacity);
        response
            .take(MAX_RESPONSE_BODY_BYTES + 1)
            .read_to_end(&mut body)?;
        if body.len() as u64 > MAX_RESPONSE_BODY_BYTES {
            return Err(Box::new(ResponseBodyTooLarge::new()));
        }
        self.observe(status, &headers, &body);
        let mut out = Response::builder().status(status).body(Bytes::from(body))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// `(rejected_spans, error_message)` of an `ExportTraceServiceResponse` that carries a partial
/// success; `None` for a full success or a body that is not one.
fn partial_success(body: &[u8], encoding: Encoding) -> Option<(u64, String)> {
    if body.is_empty() {
        return None;
    }
    let (rejected, message) = match encoding {
        Encoding::Protobuf => {
            let response = <ExportTraceServiceResponse as prost::Message>::decode(body).ok()?;
            let partial = response.partial_success?;
            (
                u64::try_from(partial.rejected_spans).unwrap_or(0),
                partial.error_message,
            )
        }
        Encoding::Json => {
            // Read by hand rather than through opentelemetry-proto's serde feature: receivers
            // write the int64 as a string or a number, and some use the proto field names.
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let partial = value
                .get("partialSuccess")
                .or_else(|| value.get("partial_success"))?;
            let rejected = partial
                .get("rejectedSpans")
                .or_else(|| partial.get("rejected_spans"))
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .unwrap_or(0);
            let message = partial
                .get("errorMessage")
                .or_else(|| partial.get("error_message"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (rejected, message)
        }
    };
    (rejected > 0 || !message.is_empty()).then_some((rejected, message))
}

/// `Retry-After` as seconds or as an HTTP date (a date in the past is no wait); `None` if it is
/// neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
// Tests state their expectations with unwrap and panics.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    fn protobuf(rejected: i64, message: &str) -> Vec<u8> {
        prost::Message::encode_to_vec(&ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message.to_owned(),
            }),
        })
    }

    #[test]
    fn partial_success_in_protobuf() {
        assert_eq!(
            partial_success(&protobuf(3, "too old"), Encoding::Protobuf),
            Some((3, "too old".to_owned()))
        );
        // A warning without rejected spans is still reported (nothing to count).
        assert_eq!(
            partial_success(&protobuf(0, "slow down"), Encoding::Protobuf),
            Some((0, "slow down".to_owned()))
        );
        // A full success: an empty body, or an empty partial_success.
        assert_eq!(partial_success(&[], Encoding::Protobuf), None);
        assert_eq!(partial_success(&protobuf(0, ""), Encoding::Protobuf), None);
        assert_eq!(partial_success(&[0xff, 0xff], Encoding::Protobuf), None);
    }

    #[test]
    fn partial_success_in_json() {
        for body in [
            r#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"too old"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":2,"errorMessage":"too old"}}"#,
            r#"{"partial_success":{"rejected_spans":"2","error_message":"too old"}}"#,
        ] {
            assert_eq!(
                partial_success(body.as_bytes(), Encoding::Json),
                Some((2, "too old".to_owned())),
                "{body}"
            );
        }
        assert_eq!(partial_success(b"{}", Encoding::Json), None);
        assert_eq!(
            partial_success(br#"{"partialSuccess":{}}"#, Encoding::Json),
            None
        );
        assert_eq!(partial_success(b"not json", Encoding::Json), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
