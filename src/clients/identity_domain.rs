//! The identity-domain REST client: read a user, change its capabilities, list users.
//!
//! Each call is a value ([`Call`]: method, URL, body, purpose); [`IdentityDomainClient::send`] is the
//! loop around one signed attempt, and [`crate::transport::retry::classify`] alone
//! decides what each answer means. Every attempt is signed afresh (new `date`, current credentials),
//! so retries never replay a stale signature; retries honour `Retry-After` and never sleep past the
//! caller's deadline; a 401 re-reads the credentials once and retries once. Answers are read only up
//! to their purpose's limit, so memory stays bounded whatever a server sends.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use crate::decision::profile::{Capability, CAPABILITIES_URN, USER_EXTENSION_URN};
use crate::intake::names::{truncated_to, DomainUrl, UserId, UserRef};
use crate::signer::{
    sign_request, CredentialError, CredentialKind, Credentials, CredentialsProvider, SignError,
    SignableRequest, SignedRequest,
};
use crate::transport::rate_limit::RateLimiter;
use crate::transport::retry::{
    backoff, classify, hint, parse_retry_after, Observed, Purpose, Verdict, ERROR_ANSWER_LIMIT,
};

/// Attributes read for one user: enough to cross-check the name and compare capabilities, plus
/// `policy` (the policy's facts: groups, tags, user-extension flags). `attributes` replaces the
/// service's default set, so everything used is named, each capability by its full path
/// (`…:capabilities:User:canUseApiKeys`), the form Oracle's docs show: the bare extension URN
/// appears in none of them, and a service that ignored it would leave every read without its
/// capabilities.
pub fn user_attributes(policy: &[&str]) -> String {
    join_attributes(&base_attributes(&[]), policy)
}

/// `userName`, every capability attribute's full path, then `more`.
fn base_attributes(more: &[&str]) -> Vec<String> {
    let mut base = vec!["userName".to_owned()];
    base.extend(
        Capability::ALL
            .into_iter()
            .map(|c| format!("{CAPABILITIES_URN}:{}", c.attribute())),
    );
    base.extend(more.iter().map(|m| (*m).to_owned()));
    base
}

/// The JIT marker is `returned: request`, so listing names it explicitly; `meta.created` is the
/// reconcile's cursor, named so no service leaves it out; `policy` as for [`user_attributes`].
pub fn list_attributes(policy: &[&str]) -> String {
    let federated = format!("{USER_EXTENSION_URN}:isFederatedUser");
    let creation = format!("{USER_EXTENSION_URN}:creationMechanism");
    join_attributes(
        &base_attributes(&[&federated, &creation, "meta.created"]),
        policy,
    )
}

fn join_attributes(base: &[String], extra: &[&str]) -> String {
    let mut all: Vec<&str> = base.iter().map(String::as_str).collect();
    for a in extra {
        if !all.contains(a) {
            all.push(a);
        }
    }
    all.join(",")
}

/// How the client connects, times out, retries and paces; [`Default`] holds the product's values.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Limit on establishing a connection to the service.
    pub connect_timeout: Duration,
    /// Upper bound for one attempt; the caller's deadline shortens it further.
    pub attempt_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The backoff unit: attempt n waits a random delay below `base_backoff · 2^n` (full jitter).
    pub base_backoff: Duration,
    /// Cap on a backoff delay; a server's `Retry-After` is used instead when it gives one.
    pub max_backoff: Duration,
    /// Ceiling of the adaptive rate limiter ([`RateLimiter`]) shared by all concurrent work; `None`
    /// turns it off.
    pub max_requests_per_second: Option<f64>,
    /// The `User-Agent` header of every request.
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

/// Why a request did not succeed. Causes are kept as [`source`](std::error::Error::source), never
/// repeated in the message; [`Failure`]'s `Display` prints the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum IdcsError {
    #[error("{} answered {status}{}{}{}", service_name(*purpose), detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default(), message_id.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(), hint.map(|h| format!("; {h}")).unwrap_or_default())]
    /// The service answered with a status that is not success.
    Status {
        /// What the call was for.
        purpose: Purpose,
        /// The HTTP status answered.
        status: StatusCode,
        /// The SCIM error's `detail`, when the body held one.
        detail: Option<String>,
        /// Oracle's `messageId` from the SCIM error's Oracle extension, when present.
        message_id: Option<String>,
        /// What the operator can check for this status and purpose, when there is a known cause.
        hint: Option<&'static str>,
    },
    #[error("{} rejected the credentials twice (401) signing as {credential}; {}{}", service_name(*purpose), unauthorized_hint(*kind), detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    /// A 401 again after the credentials were re-read: the credential is not accepted.
    NotAuthorized {
        /// What the call was for.
        purpose: Purpose,
        /// The credential in use, as [`CredentialsProvider::describe`] names it.
        credential: String,
        /// Its kind, which decides the hint.
        kind: CredentialKind,
        /// The SCIM error's `detail`, when the body held one.
        detail: Option<String>,
    },
    #[error("network error talking to {}", service_name(*purpose))]
    /// No usable answer: connection refused or reset, TLS failure, a body cut short.
    Transport {
        /// What the call was for.
        purpose: Purpose,
        /// The HTTP client's error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    #[error("{} did not answer within {timeout:?}", service_name(*purpose))]
    /// One attempt got no answer in time.
    Timeout {
        /// What the call was for.
        purpose: Purpose,
        /// How long the attempt was given.
        timeout: Duration,
    },
    /// The caller's deadline left no time for another attempt.
    #[error("stopped before the call deadline")]
    Deadline,
    /// A successful answer over the purpose's size limit.
    #[error("the answer is larger than {limit} bytes; it was not read further")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A successful answer that is not the JSON expected; says what was wrong.
    #[error("unexpected answer: {0}")]
    InvalidResponse(String),
    /// The credentials could not be obtained (key file, resource principal token).
    #[error("credentials")]
    Credentials(#[source] CredentialError),
    /// The request could not be signed.
    #[error("request signing")]
    Sign(#[source] SignError),
    /// The signed request could not be put together (e.g. a header the HTTP client refuses).
    #[error("cannot build the request: {0}")]
    Request(String),
}

fn service_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::LookupDomain => "the identity control plane",
        Purpose::Functions => "OCI Functions",
        Purpose::ReadUser | Purpose::WriteCapabilities | Purpose::ListUsers => {
            "the identity domain"
        }
    }
}

/// What most likely makes a domain refuse a credential that signs correctly, by kind of credential.
fn unauthorized_hint(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::ResourcePrincipal => "check that the function's dynamic group matches this function and holds the User Administrator role in this domain",
        CredentialKind::SessionToken => "the session may have expired (run `oci session refresh` or `oci session authenticate`), or its user lacks the User Administrator role in this domain",
        _ => "check that the key's fingerprint and user match an API key uploaded for that user, and that the user holds the User Administrator role in this domain",
    }
}

impl IdcsError {
    /// The HTTP status the service answered, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            IdcsError::Status { status, .. } => Some(*status),
            IdcsError::NotAuthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            _ => None,
        }
    }
}

/// How a request that did not succeed ends for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A retry (a redelivery of the batch) could fix it.
    Failed,
    /// Final: retrying cannot help.
    Rejected,
}

/// A successful answer with the request ids the service gave for it (one per attempt).
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// The answer, parsed for the call.
    pub value: T,
    /// The `X-ORACLE-DMS-ECID` of each attempt that carried one, in order.
    pub ecids: Vec<String>,
    /// The `opc-next-page` header of an OCI list answer: there is a further page, asked for with
    /// `page=<this>`.
    pub next_page: Option<String>,
}

/// A request that did not succeed, how it ends, and the request ids seen on the way.
#[derive(Debug)]
pub struct Failure {
    /// The last attempt's error.
    pub error: IdcsError,
    /// Whether a retry of the batch could fix it.
    pub settled: Settled,
    /// The `X-ORACLE-DMS-ECID` of each attempt that carried one, in order.
    pub ecids: Vec<String>,
}

impl Failure {
    fn failed(error: IdcsError, ecids: Vec<String>) -> Self {
        Failure {
            error,
            settled: Settled::Failed,
            ecids,
        }
    }

    pub(crate) fn is_rejected(&self) -> bool {
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

/// One page of `GET /admin/v1/Users`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserPage {
    /// Absent on a page from a misbehaving server: the scan cannot know where the end is.
    #[serde(rename = "totalResults", default)]
    pub total_results: Option<u64>,
    /// `startIndex`: the 1-based index of the page's first user, as the server reports it.
    #[serde(rename = "startIndex", default)]
    pub start_index: Option<u64>,
    /// `itemsPerPage`: how many users the server says the page holds.
    #[serde(rename = "itemsPerPage", default)]
    pub items_per_page: Option<u64>,
    /// `Resources`: the users, as SCIM JSON objects (absent on an empty page).
    #[serde(rename = "Resources", default)]
    pub resources: Vec<serde_json::Value>,
}

/// One request, as data: what to send and what it is for. Any OCI endpoint fits (the identity
/// domain's REST API, the identity control plane); [`IdentityDomainClient::send`] signs it, sends it
/// and retries it as [`classify`] decides.
#[derive(Debug, Clone)]
pub struct Call {
    /// The HTTP method.
    pub method: Method,
    /// The full URL, built from validated names only.
    pub url: url::Url,
    /// The JSON body of a write; `None` for a read.
    pub body: Option<Vec<u8>>,
    /// What the call is for, which decides how its answers are judged.
    pub purpose: Purpose,
    /// Headers sent besides the signed ones (e.g. `fn-invoke-type`).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Call {
    /// `GET /admin/v1/Users/{id or OCID}` with the attributes the comparison needs, and `ocid`
    /// when asked by OCID.
    pub fn read_user(domain: &DomainUrl, user: &UserRef, policy: &[&str]) -> Self {
        let mut attributes = user_attributes(policy);
        if matches!(user, UserRef::Ocid(_)) {
            attributes.push_str(",ocid");
        }
        Call {
            method: Method::GET,
            url: domain.endpoint(
                &["admin", "v1", "Users", user.as_str()],
                &[("attributes", &attributes)],
            ),
            body: None,
            purpose: Purpose::ReadUser,
            headers: Vec::new(),
        }
    }

    /// `PUT /admin/v1/UserCapabilitiesChanger/{id}` with a complete capability body.
    pub fn write_capabilities(domain: &DomainUrl, user: &UserId, body: Vec<u8>) -> Self {
        Call {
            method: Method::PUT,
            url: domain.endpoint(
                &["admin", "v1", "UserCapabilitiesChanger", user.as_str()],
                &[],
            ),
            body: Some(body),
            purpose: Purpose::WriteCapabilities,
            headers: Vec::new(),
        }
    }

    /// One page of `GET /admin/v1/Users`, sorted by creation time so pages stay stable while users
    /// are added during the scan.
    pub fn list_page(
        domain: &DomainUrl,
        filter: &str,
        start_index: u64,
        count: u64,
        policy: &[&str],
    ) -> Self {
        let attributes = list_attributes(policy);
        let start = start_index.to_string();
        let count = count.to_string();
        Call {
            method: Method::GET,
            url: domain.endpoint(
                &["admin", "v1", "Users"],
                &[
                    ("filter", filter),
                    ("attributes", &attributes),
                    ("sortBy", "meta.created"),
                    // The SDK's enum spelling; it accepts nothing else.
                    ("sortOrder", "ASCENDING"),
                    ("startIndex", &start),
                    ("count", &count),
                ],
            ),
            body: None,
            purpose: Purpose::ListUsers,
            headers: Vec::new(),
        }
    }
}

/// One attempt's result, with the request id the service gave it.
#[derive(Debug)]
struct Attempt {
    result: AttemptResult,
    /// `X-ORACLE-DMS-ECID`, when the service answered with one.
    request_id: Option<String>,
    /// `opc-next-page`, when the answer is a page of an OCI list with more to come.
    next_page: Option<String>,
}

/// What one attempt came to, as [`classify`] judged it.
#[derive(Debug)]
enum AttemptResult {
    Done(Vec<u8>),
    /// Worth another attempt (after the server's delay, when it gave one).
    Retry {
        error: IdcsError,
        after: Option<Duration>,
    },
    /// 401: re-read the credentials, then try again once.
    RefreshCredentials(IdcsError),
    /// No further attempt.
    Final {
        error: IdcsError,
        settled: Settled,
    },
}

impl AttemptResult {
    fn failed(error: IdcsError) -> Self {
        AttemptResult::Final {
            error,
            settled: Settled::Failed,
        }
    }
}

/// The signed HTTP client for identity domains and the IAM control plane; cheap to clone, and
/// one is shared by all work so connections, credentials and the rate limit are shared too.
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

/// The HTTP client could not be set up; Display says why.
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

    /// The credential in use, described for logs, e.g. "api key (profile DEFAULT)".
    pub fn credentials_label(&self) -> String {
        self.inner.credentials.describe()
    }

    /// `GET /admin/v1/Users/{id or OCID}` with the capability and user extensions (and `ocid`
    /// when asked by OCID, so [`answered_user_id`] can check the answer is the user asked for).
    pub async fn get_user(
        &self,
        domain: &DomainUrl,
        user: &UserRef,
        policy: &[&str],
        deadline: Instant,
    ) -> Result<Answer<serde_json::Value>, Failure> {
        let answer = self
            .send(&Call::read_user(domain, user, policy), deadline)
            .await?;
        let value = json_object(&answer.value)
            .map_err(|error| Failure::failed(error, answer.ecids.clone()))?;
        Ok(Answer {
            value,
            ecids: answer.ecids,
            next_page: answer.next_page,
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
        let call = Call {
            method: Method::GET,
            url,
            body: None,
            purpose: Purpose::LookupDomain,
            headers: Vec::new(),
        };
        let answer = self.send(&call, deadline).await?;
        let value = json_object(&answer.value)
            .map_err(|error| Failure::failed(error, answer.ecids.clone()))?;
        Ok(Answer {
            value,
            ecids: answer.ecids,
            next_page: answer.next_page,
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
        let call = Call::write_capabilities(domain, user, body);
        let answer = self.send(&call, deadline).await?;
        Ok(Answer {
            value: (),
            ecids: answer.ecids,
            next_page: None,
        })
    }

    /// One page of `GET /admin/v1/Users` (see [`Call::list_page`]).
    pub async fn list_users(
        &self,
        domain: &DomainUrl,
        filter: &str,
        start_index: u64,
        count: u64,
        policy: &[&str],
        deadline: Instant,
    ) -> Result<Answer<UserPage>, Failure> {
        let call = Call::list_page(domain, filter, start_index, count, policy);
        let answer = self.send(&call, deadline).await?;
        let page = serde_json::from_slice::<UserPage>(&answer.value).map_err(|e| {
            Failure::failed(
                IdcsError::InvalidResponse(format!("user list: {e}")),
                answer.ecids.clone(),
            )
        })?;
        Ok(Answer {
            value: page,
            ecids: answer.ecids,
            next_page: answer.next_page,
        })
    }

    /// Sends one call, signed afresh for every attempt, until [`classify`] says it is done or the
    /// attempts, or the time before `deadline`, run out. Works for any OCI endpoint.
    pub async fn send(&self, call: &Call, deadline: Instant) -> Result<Answer<Vec<u8>>, Failure> {
        let mut ecids = Vec::new();
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let Attempt {
                result,
                request_id,
                next_page,
            } = self.attempt(call, deadline).await;
            ecids.extend(request_id);
            let (error, after) = match result {
                AttemptResult::Done(bytes) => {
                    return Ok(Answer {
                        value: bytes,
                        ecids,
                        next_page,
                    })
                }
                AttemptResult::Final { error, settled } => {
                    return Err(Failure {
                        error,
                        settled,
                        ecids,
                    })
                }
                AttemptResult::RefreshCredentials(error) => {
                    if refreshed {
                        let detail = match error {
                            IdcsError::Status { detail, .. } => detail,
                            _ => None,
                        };
                        let error = IdcsError::NotAuthorized {
                            purpose: call.purpose,
                            credential: self.credentials_label(),
                            kind: self.inner.credentials.kind(),
                            detail,
                        };
                        return Err(Failure::failed(error, ecids));
                    }
                    // The token may have been rotated under us: re-read once and retry once.
                    refreshed = true;
                    tracing::warn!(url = %call.url.path(), "answered 401; re-reading credentials and retrying once");
                    if let Err(e) = self.inner.credentials.refresh(SystemTime::now()) {
                        return Err(Failure::failed(IdcsError::Credentials(e), ecids));
                    }
                    continue;
                }
                AttemptResult::Retry { error, after } => (error, after),
            };
            if attempt >= self.inner.settings.max_attempts {
                return Err(Failure::failed(error, ecids));
            }
            let s = &self.inner.settings;
            let delay = after.unwrap_or_else(|| {
                backoff(attempt, s.base_backoff, s.max_backoff, fastrand::f64())
            });
            if Instant::now() + delay >= deadline {
                tracing::warn!(url = %call.url.path(), error = %error, "not retrying: the next attempt would pass the call deadline");
                return Err(Failure::failed(error, ecids));
            }
            tracing::info!(url = %call.url.path(), error = %error, attempt, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One signed attempt, judged by [`classify`].
    async fn attempt(&self, call: &Call, deadline: Instant) -> Attempt {
        let result = |result| Attempt {
            result,
            request_id: None,
            next_page: None,
        };
        let request = match self.signed_request(call).await {
            Ok(request) => request,
            Err(error) => return result(AttemptResult::failed(error)),
        };
        // Paced after signing, right before the send: signing time (which varies under load) then
        // cannot bunch requests up on the wire.
        let grant = match self.inner.limiter.acquire(deadline).await {
            Ok(grant) => grant,
            Err(_) => return result(AttemptResult::failed(IdcsError::Deadline)),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return result(AttemptResult::failed(IdcsError::Deadline));
        }
        let timeout = remaining.min(self.inner.settings.attempt_timeout);
        let purpose = call.purpose;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                (IdcsError::Timeout { purpose, timeout }, Observed::Timeout)
            } else {
                (
                    IdcsError::Transport {
                        purpose,
                        source: e.without_url(),
                    },
                    Observed::Network,
                )
            }
        };
        let mut response = match request.timeout(timeout).send().await {
            Ok(r) => r,
            Err(e) => {
                let (error, observed) = transport(e);
                return result(judge(purpose, observed, error));
            }
        };
        let status = response.status();
        self.inner
            .limiter
            .record(grant, status == StatusCode::TOO_MANY_REQUESTS);
        let request_id = response
            .headers()
            .get("x-oracle-dms-ecid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let next_page = response
            .headers()
            .get("opc-next-page")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // The one place every answer's status is seen (a 429 is the service throttling us).
        let observed = Observed::Status {
            status,
            retry_after,
        };
        let verdict = classify(purpose, observed);
        let limit = if verdict == Verdict::Success {
            purpose.answer_limit()
        } else {
            ERROR_ANSWER_LIMIT
        };
        let body = match read_capped(&mut response, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) if verdict != Verdict::Success => None,
            Err(BodyError::TooLarge) => {
                return Attempt {
                    result: judge(purpose, Observed::TooLarge, IdcsError::TooLarge { limit }),
                    request_id,
                    next_page: None,
                }
            }
            Err(BodyError::Transport(e)) => {
                let (error, observed) = transport(e);
                return Attempt {
                    result: judge(purpose, observed, error),
                    request_id,
                    next_page: None,
                };
            }
        };
        let result = match (verdict, body) {
            (Verdict::Success, Some(bytes)) => AttemptResult::Done(bytes),
            (_, body) => {
                let (detail, message_id) = body.as_deref().map(scim_error).unwrap_or_default();
                let error = IdcsError::Status {
                    purpose,
                    status,
                    detail,
                    message_id,
                    hint: hint(purpose, status),
                };
                verdict_result(verdict, error)
            }
        };
        Attempt {
            result,
            request_id,
            next_page,
        }
    }

    /// The reqwest request for `call`, signed now with the current credentials.
    async fn signed_request(&self, call: &Call) -> Result<reqwest::RequestBuilder, IdcsError> {
        let credentials = self
            .inner
            .credentials
            .credentials(SystemTime::now())
            .map_err(IdcsError::Credentials)?;
        let signed = sign_here(call, &credentials)?;
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
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(headers);
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        Ok(request)
    }
}
/// Signs in place, on the worker running the request. With AWS-LC a signature takes about 0.35 ms
/// (it took 3-4.5 ms with the `rsa` crate, when signing had to move to the blocking pool to use both
/// cores); a batch's 400 signatures now fit in a fraction of its time on one core, and handing each to
/// another thread cost more in wake-ups and copies than it saved (see README, "Performance").
fn sign_here(call: &Call, credentials: &Credentials) -> Result<SignedRequest, IdcsError> {
    let mut headers = vec![("accept", "application/scim+json, application/json")];
    headers.extend(call.headers.iter().copied());
    sign_request(
        &SignableRequest {
            method: call.method.as_str(),
            url: call.url.as_str(),
            headers: &headers,
            body: call.body.as_deref().unwrap_or_default(),
        },
        &credentials.key_id,
        credentials.key.as_ref(),
        SystemTime::now(),
    )
    .map_err(IdcsError::Sign)
}

/// An attempt that ended without a usable answer, judged by [`classify`].
fn judge(purpose: Purpose, observed: Observed, error: IdcsError) -> AttemptResult {
    verdict_result(classify(purpose, observed), error)
}

fn verdict_result(verdict: Verdict, error: IdcsError) -> AttemptResult {
    match verdict {
        Verdict::RetryAfter(after) => AttemptResult::Retry { error, after },
        Verdict::RefreshCredentials => AttemptResult::RefreshCredentials(error),
        Verdict::Reject => AttemptResult::Final {
            error,
            settled: Settled::Rejected,
        },
        // `Success` only reaches here with no body, which cannot happen; failing is the safe side.
        Verdict::Fail | Verdict::Success => AttemptResult::failed(error),
    }
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the answer chunk by chunk and stops past `limit`: memory stays bounded whatever the server
/// sends, a declared length over the limit is refused before any byte is read, and an endless
/// answer ends at the limit (or at the attempt's timeout, if it trickles).
async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, BodyError> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
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
                crate::intake::names::shown(other.unwrap_or("<none>"))
            )),
        },
        UserRef::Ocid(wanted) => match field("ocid") {
            Some(ocid) if ocid == wanted.as_str() => UserId::parse(id.unwrap_or_default())
                .map_err(|e| format!("the user asked for by OCID has an unusable {e}")),
            other => Err(format!(
                "the identity domain answered for OCID {} when asked for {wanted}",
                crate::intake::names::shown(other.unwrap_or("<none>"))
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
            // What a server says is quoted in reports and logs: bounded, whatever it sent.
            let detail = b.detail.map(|d| truncated_to(&d, 300));
            let message_id = b
                .oracle
                .and_then(|o| o.message_id)
                .map(|m| truncated_to(&m, 120));
            (detail, message_id)
        }
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_exactly_the_attributes_used() {
        let caps = format!(
            "{CAPABILITIES_URN}:canUseApiKeys,{CAPABILITIES_URN}:canUseAuthTokens,\
             {CAPABILITIES_URN}:canUseConsolePassword,{CAPABILITIES_URN}:canUseCustomerSecretKeys,\
             {CAPABILITIES_URN}:canUseDbCredentials,{CAPABILITIES_URN}:canUseOAuth2ClientCredentials,\
             {CAPABILITIES_URN}:canUseSmtpCredentials,{CAPABILITIES_URN}:canUseConsole"
        );
        assert_eq!(user_attributes(&[]), format!("userName,{caps}"));
        assert_eq!(
            user_attributes(&["groups", "urn:x:OCITags:definedTags"]),
            format!("userName,{caps},groups,urn:x:OCITags:definedTags")
        );
        let federated = format!("{USER_EXTENSION_URN}:isFederatedUser");
        let listed = list_attributes(&[&federated, "groups"]);
        assert_eq!(listed.matches("isFederatedUser").count(), 1, "{listed}");
        assert!(listed.ends_with(",groups"), "{listed}");
    }

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
    fn a_failure_prints_its_whole_cause_chain() {
        let failure = Failure::failed(
            IdcsError::Credentials(CredentialError::Poisoned),
            Vec::new(),
        );
        let text = failure.to_string();
        assert!(text.starts_with("credentials: "), "{text}");
        assert!(text.len() > "credentials: ".len(), "{text}");
    }

    #[test]
    fn calls_are_data() {
        let domain = DomainUrl::parse(
            "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com",
        )
        .unwrap();
        let user = UserId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let read = Call::read_user(&domain, &UserRef::Id(user.clone()), &[]);
        assert_eq!(
            (read.method.clone(), read.purpose),
            (Method::GET, Purpose::ReadUser)
        );
        assert!(read
            .url
            .path()
            .ends_with("/admin/v1/Users/0123456789abcdef0123456789abcdef"));
        let write = Call::write_capabilities(&domain, &user, b"{}".to_vec());
        assert_eq!(write.method, Method::PUT);
        assert_eq!(write.body.as_deref(), Some(&b"{}"[..]));
        let page = Call::list_page(&domain, "userName pr", 51, 100, &[]);
        assert_eq!(page.purpose, Purpose::ListUsers);
        let query = page.url.query().unwrap();
        assert!(
            query.contains("startIndex=51") && query.contains("count=100"),
            "{query}"
        );
    }
}
