//! The identity-domain REST client: read a user, change its capabilities, list users.
//!
//! Every attempt is signed afresh (new `date`, current credentials), so retries never replay a stale
//! signature. Retries cover 429, 500, 502, 503, 504 and transport errors, with exponential backoff and
//! full jitter, honour `Retry-After`, and never sleep past the caller's deadline. A 401 re-reads the
//! credentials once and retries once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::time::Instant;

use crate::names::{DomainUrl, UserId, UserRef};
use crate::profile::{CAPABILITIES_URN, USER_EXTENSION_URN};
use crate::rate_limit::RateLimiter;
use crate::signer::{
    sign_request, CredentialError, Credentials, CredentialsProvider, SignError, SignableRequest,
    SignedRequest,
};

/// Attributes read for one user: enough to cross-check the name and compare capabilities.
pub fn user_attributes() -> String {
    format!("userName,{CAPABILITIES_URN},{USER_EXTENSION_URN}")
}

/// The JIT marker is `returned: request`, so listing names it explicitly.
pub fn list_attributes() -> String {
    format!("userName,{CAPABILITIES_URN},{USER_EXTENSION_URN}:isFederatedUser,{USER_EXTENSION_URN}:creationMechanism")
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Upper bound for one attempt; the caller's deadline shortens it further.
    pub attempt_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Ceiling of the adaptive rate limiter ([`RateLimiter`]) shared by all concurrent work; `None` is
    /// no ceiling (a 429 still lowers the rate).
    pub max_requests_per_second: Option<f64>,
    pub user_agent: String,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(20),
            max_attempts: 6,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_requests_per_second: Some(20.0),
            user_agent: format!("oci-user-capabilities/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum IdcsError {
    #[error("identity domain answered {status}{}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default(), message_id.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Status {
        status: u16,
        detail: Option<String>,
        message_id: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("identity domain rejected the credentials twice (401); check that the function's dynamic group holds the User Administrator role in this domain{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotAuthorized { detail: Option<String> },
    #[error("network error talking to the identity domain: {0}")]
    Transport(String),
    #[error("the identity domain did not answer within {0:?}")]
    Timeout(Duration),
    #[error("stopped before the call deadline")]
    Deadline,
    #[error("unexpected identity-domain response: {0}")]
    InvalidResponse(String),
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialError),
    #[error("request signing: {0}")]
    Sign(#[from] SignError),
    #[error("cannot build the request: {0}")]
    Request(String),
}

impl IdcsError {
    /// Whether a later retry (a redelivery of the batch) could succeed.
    pub fn retryable(&self) -> bool {
        match self {
            IdcsError::Status { status, .. } => is_retryable_status(*status),
            IdcsError::Transport(_) | IdcsError::Timeout(_) | IdcsError::Deadline => true,
            // A garbled answer is most often a proxy or a service hiccup.
            IdcsError::InvalidResponse(_) => true,
            // Rotated or not yet mounted credentials can recover; a bad role grant needs an administrator,
            // but failing loudly (and being retried) is the right signal for it.
            IdcsError::NotAuthorized { .. } | IdcsError::Credentials(_) => true,
            IdcsError::Sign(_) | IdcsError::Request(_) => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            IdcsError::Status { status, .. } => Some(*status),
            IdcsError::NotAuthorized { .. } => Some(401),
            _ => None,
        }
    }
}

fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// A successful answer with the request ids the service gave for it (one per attempt).
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub ecids: Vec<String>,
}

/// A failed request with the request ids seen on the way.
#[derive(Debug)]
pub struct Failure {
    pub error: IdcsError,
    pub ecids: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// One page of `GET /admin/v1/Users`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserPage {
    #[serde(rename = "totalResults", default)]
    pub total_results: u64,
    #[serde(rename = "startIndex", default)]
    pub start_index: Option<u64>,
    #[serde(rename = "itemsPerPage", default)]
    pub items_per_page: Option<u64>,
    #[serde(rename = "Resources", default)]
    pub resources: Vec<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct IdentityDomainClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    credentials: Arc<dyn CredentialsProvider>,
    limiter: RateLimiter,
    settings: ClientSettings,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(String);

impl IdentityDomainClient {
    /// One pooled HTTP/1.1 client for every request of the process: the TLS setup is paid once.
    pub fn new(
        credentials: Arc<dyn CredentialsProvider>,
        settings: ClientSettings,
    ) -> Result<Self, BuildError> {
        // TLS on the library that signs (AWS-LC); with the `fips` feature this is its FIPS module.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(settings.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        let limiter = RateLimiter::new(settings.max_requests_per_second);
        Ok(IdentityDomainClient {
            inner: Arc::new(Inner {
                http,
                credentials,
                limiter,
                settings,
            }),
        })
    }

    pub fn credentials_label(&self) -> String {
        self.inner.credentials.describe()
    }

    /// `GET /admin/v1/Users/{id or OCID}` with the capability and user extensions (and `ocid`
    /// when asked by OCID, so [`answered_user_id`] can check it).
    pub async fn get_user(
        &self,
        domain: &DomainUrl,
        user: &UserRef,
        deadline: Instant,
    ) -> Result<Answer<serde_json::Value>, Failure> {
        let mut attributes = user_attributes();
        if matches!(user, UserRef::Ocid(_)) {
            attributes.push_str(",ocid");
        }
        let url = domain.endpoint(
            &["admin", "v1", "Users", user.as_str()],
            &[("attributes", &attributes)],
        );
        let answer = self.send("GET", url, None, deadline).await?;
        let value = json_object(&answer.value).map_err(|error| Failure {
            error,
            ecids: answer.ecids.clone(),
        })?;
        Ok(Answer {
            value,
            ecids: answer.ecids,
        })
    }

    /// A signed `GET` of a JSON object from any service the same credentials reach (the IAM
    /// control plane's `GetDomain`), through the same retries and failure classes as the
    /// identity-domain calls.
    pub async fn get_json(
        &self,
        url: url::Url,
        deadline: Instant,
    ) -> Result<Answer<serde_json::Value>, Failure> {
        let answer = self.send("GET", url, None, deadline).await?;
        let value = json_object(&answer.value).map_err(|error| Failure {
            error,
            ecids: answer.ecids.clone(),
        })?;
        Ok(Answer {
            value,
            ecids: answer.ecids,
        })
    }

    /// `PUT /admin/v1/UserCapabilitiesChanger/{id}` with a complete capability body.
    pub async fn put_capabilities(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<Answer<()>, Failure> {
        let url = domain.endpoint(
            &["admin", "v1", "UserCapabilitiesChanger", user.as_str()],
            &[],
        );
        let answer = self.send("PUT", url, Some(body), deadline).await?;
        Ok(Answer {
            value: (),
            ecids: answer.ecids,
        })
    }

    /// One page of `GET /admin/v1/Users`, sorted by creation time so pages stay stable while users are
    /// added during the scan.
    pub async fn list_users(
        &self,
        domain: &DomainUrl,
        filter: &str,
        start_index: u64,
        count: u64,
        deadline: Instant,
    ) -> Result<Answer<UserPage>, Failure> {
        let attributes = list_attributes();
        let start = start_index.to_string();
        let count = count.to_string();
        let url = domain.endpoint(
            &["admin", "v1", "Users"],
            &[
                ("filter", filter),
                ("attributes", &attributes),
                ("sortBy", "meta.created"),
                ("sortOrder", "ascending"),
                ("startIndex", &start),
                ("count", &count),
            ],
        );
        let answer = self.send("GET", url, None, deadline).await?;
        let page = serde_json::from_slice::<UserPage>(&answer.value).map_err(|e| Failure {
            error: IdcsError::InvalidResponse(format!("user list: {e}")),
            ecids: answer.ecids.clone(),
        })?;
        Ok(Answer {
            value: page,
            ecids: answer.ecids,
        })
    }

    async fn send(
        &self,
        method: &'static str,
        url: url::Url,
        body: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<Answer<Vec<u8>>, Failure> {
        let mut ecids = Vec::new();
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let outcome = self
                .attempt(method, &url, body.as_deref(), deadline, refreshed)
                .await;
            let (result, ecid) = match outcome {
                Ok((result, ecid)) => (result, ecid),
                Err(error) => return Err(Failure { error, ecids }),
            };
            ecids.extend(ecid);
            let error = match result {
                Ok(bytes) => {
                    return Ok(Answer {
                        value: bytes,
                        ecids,
                    })
                }
                Err(error) => error,
            };
            if let IdcsError::Status {
                status: 401,
                detail,
                ..
            } = &error
            {
                if refreshed {
                    return Err(Failure {
                        error: IdcsError::NotAuthorized {
                            detail: detail.clone(),
                        },
                        ecids,
                    });
                }
                // The token may have been rotated under us: re-read once and retry once.
                refreshed = true;
                tracing::warn!(url = %url.path(), "identity domain answered 401; re-reading credentials and retrying once");
                if let Err(e) = self.inner.credentials.refresh(SystemTime::now()) {
                    return Err(Failure {
                        error: e.into(),
                        ecids,
                    });
                }
                continue;
            }
            let retry = match &error {
                IdcsError::Status { status, .. } => is_retryable_status(*status),
                IdcsError::Transport(_) | IdcsError::Timeout(_) => true,
                _ => false,
            };
            if !retry || attempt >= self.inner.settings.max_attempts {
                return Err(Failure { error, ecids });
            }
            let delay = match &error {
                IdcsError::Status {
                    retry_after: Some(after),
                    ..
                } => *after,
                _ => self.backoff(attempt),
            };
            if Instant::now() + delay >= deadline {
                tracing::warn!(url = %url.path(), error = %error, "not retrying: the next attempt would pass the call deadline");
                return Err(Failure { error, ecids });
            }
            tracing::info!(url = %url.path(), error = %error, attempt, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Exponential backoff with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let s = &self.inner.settings;
        let cap = s
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(s.max_backoff);
        cap.mul_f64(fastrand::f64())
    }

    /// One signed attempt. The outer `Err` ends the request at once (nothing to retry); the inner result
    /// is the attempt's outcome.
    async fn attempt(
        &self,
        method: &'static str,
        url: &url::Url,
        body: Option<&[u8]>,
        deadline: Instant,
        after_refresh: bool,
    ) -> Result<(Result<Vec<u8>, IdcsError>, Option<String>), IdcsError> {
        let grant = self
            .inner
            .limiter
            .acquire(deadline)
            .await
            .map_err(|_| IdcsError::Deadline)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(IdcsError::Deadline);
        }
        let credentials = self.inner.credentials.credentials(SystemTime::now())?;
        let signed = sign_here(method, url, body, &credentials)?;
        let mut headers = HeaderMap::new();
        for (name, value) in signed.headers() {
            // The signer has already refused anything that is not a plain ASCII header.
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| IdcsError::Request(format!("header name {name:?} is not valid")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                IdcsError::Request(format!("the value of header {name} is not valid"))
            })?;
            headers.insert(header, value);
        }
        let timeout = remaining.min(self.inner.settings.attempt_timeout);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = self
            .inner
            .http
            .request(method, url.clone())
            .headers(headers)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        let _ = after_refresh;
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Ok((Err(IdcsError::Timeout(timeout)), None)),
            Err(e) => return Ok((Err(IdcsError::Transport(transport_reason(&e))), None)),
        };
        let status = response.status().as_u16();
        self.inner.limiter.record(grant, status == 429);
        let ecid = response
            .headers()
            .get("x-oracle-dms-ecid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match response.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) if e.is_timeout() => return Ok((Err(IdcsError::Timeout(timeout)), ecid)),
            Err(e) => return Ok((Err(IdcsError::Transport(transport_reason(&e))), ecid)),
        };
        if (200..300).contains(&status) {
            return Ok((Ok(bytes), ecid));
        }
        let (detail, message_id) = scim_error(&bytes);
        Ok((
            Err(IdcsError::Status {
                status,
                detail,
                message_id,
                retry_after,
            }),
            ecid,
        ))
    }
}

/// Signs in place, on the worker running the request. With AWS-LC a signature takes about 0.35 ms
/// (it took 3-4.5 ms with the `rsa` crate, when signing had to move to the blocking pool to use both
/// cores); a batch's 400 signatures now fit in a fraction of its time on one core, and handing each to
/// another thread cost more in wake-ups and copies than it saved (see README, "Performance").
fn sign_here(
    method: &'static str,
    url: &url::Url,
    body: Option<&[u8]>,
    credentials: &Credentials,
) -> Result<SignedRequest, IdcsError> {
    let accept = [("accept", "application/scim+json, application/json")];
    Ok(sign_request(
        &SignableRequest {
            method,
            url: url.as_str(),
            headers: &accept,
            body: body.unwrap_or_default(),
        },
        &credentials.key_id,
        credentials.key.as_ref(),
        SystemTime::now(),
    )?)
}

/// The transport error chain, without the URL (which is logged separately) and without any header.
fn transport_reason(e: &reqwest::Error) -> String {
    let mut reason = if e.is_connect() {
        "connect failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason
}

/// The SCIM id to write with, once the answer to [`IdentityDomainClient::get_user`] is known to
/// be the user asked for: asked by id, the answer's `id` must equal it; asked by OCID, the
/// answer's `ocid` must equal it and its `id` must be 32 lower-case hex. Anything else means the
/// answer is not trustworthy, and nothing may be written.
pub fn answered_user_id(requested: &UserRef, user: &serde_json::Value) -> Result<UserId, String> {
    let field = |name: &str| user.get(name).and_then(serde_json::Value::as_str);
    let id = field("id");
    match requested {
        UserRef::Id(wanted) => match id {
            Some(id) if id == wanted.as_str() => Ok(wanted.clone()),
            other => Err(format!(
                "the identity domain answered for id {} when asked for {wanted}",
                crate::names::shown(other.unwrap_or("<none>"))
            )),
        },
        UserRef::Ocid(wanted) => match field("ocid") {
            Some(ocid) if ocid == wanted.as_str() => UserId::parse(id.unwrap_or_default())
                .map_err(|e| format!("the user asked for by OCID has an unusable {e}")),
            other => Err(format!(
                "the identity domain answered for OCID {} when asked for {wanted}",
                crate::names::shown(other.unwrap_or("<none>"))
            )),
        },
    }
}

fn json_object(bytes: &[u8]) -> Result<serde_json::Value, IdcsError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(IdcsError::InvalidResponse("expected a JSON object".into())),
        Err(e) => Err(IdcsError::InvalidResponse(format!("not JSON ({e})"))),
    }
}

/// `detail` and Oracle's `messageId` from a SCIM error body; anything else (an HTML error page) yields
/// nothing rather than an error.
pub fn scim_error(bytes: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Body {
        detail: Option<String>,
        #[serde(rename = "urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error")]
        oracle: Option<OracleExt>,
    }
    #[derive(Deserialize)]
    struct OracleExt {
        #[serde(rename = "messageId")]
        message_id: Option<String>,
    }
    match serde_json::from_slice::<Body>(bytes) {
        Ok(b) => {
            let detail = b.detail.map(|d| d.chars().take(300).collect());
            (detail, b.oracle.and_then(|o| o.message_id))
        }
        Err(_) => (None, None),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date; capped so a hostile value cannot park a call.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(Duration::from_secs(120)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_must_be_the_user_asked_for() {
        let id = "8f2e4c6a1b3d5f7091a2b3c4d5e6f708";
        let ocid = "ocid1.user.oc1..aaaaexample";
        let by_id = UserRef::parse(id).unwrap();
        let by_ocid = UserRef::parse(ocid).unwrap();
        let user = serde_json::json!({"id": id, "ocid": ocid, "userName": "x"});
        assert_eq!(answered_user_id(&by_id, &user).unwrap().as_str(), id);
        assert_eq!(answered_user_id(&by_ocid, &user).unwrap().as_str(), id);
        for (asked, answer) in [
            (&by_id, serde_json::json!({"id": "0".repeat(32)})),
            (&by_id, serde_json::json!({"ocid": ocid})),
            (&by_ocid, serde_json::json!({"id": id})),
            (
                &by_ocid,
                serde_json::json!({"id": id, "ocid": "ocid1.user.oc1..other"}),
            ),
            (&by_ocid, serde_json::json!({"id": "../x", "ocid": ocid})),
            (
                &by_ocid,
                serde_json::json!({"id": id.to_uppercase(), "ocid": ocid}),
            ),
            (&by_ocid, serde_json::json!({"ocid": ocid})),
        ] {
            assert!(answered_user_id(asked, &answer).is_err(), "{answer}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(120)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d <= Duration::from_secs(5) && d >= Duration::from_secs(3),
            "{d:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn scim_errors_are_read_and_other_bodies_tolerated() {
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error","urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error"],"detail":"Missing required attribute(s)","status":"400","urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error":{"messageId":"error.common.validation.missingReqAttributes"}}"#;
        let (detail, id) = scim_error(body);
        assert_eq!(detail.as_deref(), Some("Missing required attribute(s)"));
        assert_eq!(
            id.as_deref(),
            Some("error.common.validation.missingReqAttributes")
        );
        assert_eq!(scim_error(b"<html>bad gateway</html>"), (None, None));
        assert_eq!(scim_error(br#"{"detail": 5}"#), (None, None));
    }

    #[test]
    fn classification() {
        let status = |s| IdcsError::Status {
            status: s,
            detail: None,
            message_id: None,
            retry_after: None,
        };
        for s in [429, 500, 502, 503, 504] {
            assert!(status(s).retryable(), "{s}");
        }
        for s in [400, 403, 404, 405, 409, 412, 415] {
            assert!(!status(s).retryable(), "{s}");
        }
        assert!(IdcsError::Transport("reset".into()).retryable());
        assert!(IdcsError::Deadline.retryable());
    }
}
