//! What a call came to: a bounded [`Answer`], or a [`Failure`] that says how it ends.

use std::time::Duration;

use oci_signer::{CredentialError, SignError};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

/// Why a call did not succeed. Causes are kept as [`source`](std::error::Error::source), never
/// repeated in the message; [`Failure`]'s `Display` prints the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with a status that is not success.
    #[error("{service} answered {status}{}{}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default(), message_id.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(), hint.map(|h| format!("; {h}")).unwrap_or_default())]
    Status {
        /// The service, as the call names it.
        service: &'static str,
        /// The HTTP status answered.
        status: StatusCode,
        /// The error body's `detail` (SCIM) or `message` (OCI), when it held one.
        detail: Option<String>,
        /// Oracle's `messageId` (SCIM) or `code` (OCI), when present.
        message_id: Option<String>,
        /// What the operator can check, when there is a known cause.
        hint: Option<&'static str>,
    },
    /// A 401 again after the credentials were re-read: the credential is not accepted.
    #[error("{service} rejected the credentials twice (401) signing as {credential}{}{}", hint.map(|h| format!("; {h}")).unwrap_or_default(), detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotAuthorized {
        /// The service, as the call names it.
        service: &'static str,
        /// The credential in use, as the provider describes it.
        credential: String,
        /// What to check, from the call's hints.
        hint: Option<&'static str>,
        /// The error body's `detail`, when it held one.
        detail: Option<String>,
    },
    /// No usable answer: connection refused or reset, TLS failure, a body cut short.
    #[error("network error talking to {service}")]
    Transport {
        /// The service, as the call names it.
        service: &'static str,
        /// The HTTP client's error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// One attempt got no answer in time.
    #[error("{service} did not answer within {timeout:?}")]
    Timeout {
        /// The service, as the call names it.
        service: &'static str,
        /// How long the attempt was given.
        timeout: Duration,
    },
    /// The caller's deadline left no time for another attempt.
    #[error("stopped before the call deadline")]
    Deadline,
    /// A successful answer over the call's size limit.
    #[error("the answer is larger than {limit} bytes; it was not read further")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A successful answer that is not what was expected; says what was wrong.
    #[error("unexpected answer: {0}")]
    InvalidResponse(String),
    /// The credentials could not be obtained (key file, resource principal token).
    #[error("credentials")]
    Credentials(#[source] CredentialError),
    /// The request could not be signed.
    #[error("request signing")]
    Sign(#[source] SignError),
    /// The request could not be put together or may not be sent (a URL that is neither `https`
    /// nor loopback, a header the HTTP client refuses).
    #[error("cannot send the request: {0}")]
    Request(String),
}

impl Error {
    /// The HTTP status the service answered, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::NotAuthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            _ => None,
        }
    }

    /// The error body's `detail`, when the service gave one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Status { detail, .. } | Error::NotAuthorized { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }
}

/// How a call that did not succeed ends for the work that needed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A retry (a redelivery of the batch) could fix it.
    Failed,
    /// Final: retrying cannot help.
    Rejected,
}

/// A call that did not succeed, how it ends, and the request ids seen on the way.
#[derive(Debug)]
pub struct Failure {
    /// The last attempt's error.
    pub error: Error,
    /// Whether a retry could fix it.
    pub settled: Settled,
    /// The request id of each attempt that carried one, in order (see [`Answer::request_ids`]).
    pub request_ids: Vec<String>,
}

impl Failure {
    /// A failure a retry could fix.
    pub fn failed(error: Error, request_ids: Vec<String>) -> Self {
        Failure {
            error,
            settled: Settled::Failed,
            request_ids,
        }
    }

    /// Whether retrying cannot help.
    pub fn is_rejected(&self) -> bool {
        self.settled == Settled::Rejected
    }
}

/// The error and each of its causes, `: `-separated (the report and the log show the whole story).
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)?;
        let mut source = std::error::Error::source(&self.error);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Its `Display` already prints the whole chain, so it names no further source.
impl std::error::Error for Failure {}

/// A successful (2xx) answer, read to the end within the call's limit.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status (2xx).
    pub status: StatusCode,
    /// The answer's headers (`opc-next-page`, `etag`, …).
    pub headers: HeaderMap,
    /// The body, at most the call's answer limit.
    pub body: Vec<u8>,
    /// The request id of each attempt that carried one, in order: `X-ORACLE-DMS-ECID` (identity
    /// domains), else `opc-request-id` (other OCI services). Logs name them for Oracle support.
    pub request_ids: Vec<String>,
}

impl Answer {
    /// The value of header `name`, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON of type `T`; a body that is not is a [`Failure`] a retry may fix (a 200
    /// that is not the JSON asked for is most often a proxy or a hiccup).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Failure::failed(
                Error::InvalidResponse(format!("not the JSON expected ({e})")),
                self.request_ids.clone(),
            )
        })
    }

    /// The body as a JSON object.
    pub fn json_object(&self) -> Result<serde_json::Value, Failure> {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) if v.is_object() => Ok(v),
            Ok(_) => Err(self.invalid("expected a JSON object")),
            Err(e) => Err(self.invalid(&format!("not JSON ({e})"))),
        }
    }

    /// A [`Failure`] for an answer whose content is not usable, carrying its request ids.
    pub fn invalid(&self, why: &str) -> Failure {
        Failure::failed(
            Error::InvalidResponse(why.to_owned()),
            self.request_ids.clone(),
        )
    }
}

/// `detail` and `messageId` from a SCIM error body, or `message` and `code` from an OCI error body;
/// anything else (an HTML error page) yields nothing rather than an error. What a server says is
/// quoted in reports and logs, so both are bounded.
pub fn error_detail(bytes: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        detail: Option<String>,
        message: Option<String>,
        code: Option<String>,
        #[serde(rename = "urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error")]
        oracle: Option<OracleExt>,
    }
    #[derive(serde::Deserialize)]
    struct OracleExt {
        #[serde(rename = "messageId")]
        message_id: Option<String>,
    }
    match serde_json::from_slice::<Body>(bytes) {
        Ok(b) => {
            let detail = b.detail.or(b.message).map(|d| truncated(&d, 300));
            let id = b.oracle.and_then(|o| o.message_id).or(b.code);
            (detail, id.map(|m| truncated(&m, 120)))
        }
        Err(_) => (None, None),
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_and_oci_errors_are_read_and_other_bodies_tolerated() {
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error","urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error"],"detail":"Missing required attribute(s)","status":"400","urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error":{"messageId":"error.common.validation.missingReqAttributes"}}"#;
        let (detail, id) = error_detail(body);
        assert_eq!(detail.as_deref(), Some("Missing required attribute(s)"));
        assert_eq!(
            id.as_deref(),
            Some("error.common.validation.missingReqAttributes")
        );
        let oci = br#"{"code":"NotAuthorizedOrNotFound","message":"Authorization failed"}"#;
        assert_eq!(
            error_detail(oci),
            (
                Some("Authorization failed".into()),
                Some("NotAuthorizedOrNotFound".into())
            )
        );
        assert_eq!(error_detail(b"<html>bad gateway</html>"), (None, None));
        assert_eq!(error_detail(br#"{"detail": 5}"#), (None, None));
        let long = format!(r#"{{"detail":"{}"}}"#, "x".repeat(400));
        let (detail, _) = error_detail(long.as_bytes());
        assert_eq!(detail.unwrap().chars().count(), 301);
    }

    #[test]
    fn a_failure_prints_its_whole_cause_chain() {
        let failure = Failure::failed(Error::Credentials(CredentialError::Poisoned), Vec::new());
        let text = failure.to_string();
        assert!(text.starts_with("credentials: "), "{text}");
        assert!(text.len() > "credentials: ".len(), "{text}");
    }
}
