//! The transport: one pooled HTTP client, the credentials, a rate limiter per host and group, and
//! the loop that takes a [`Call`] to a classified outcome.
//!
//! One attempt is four steps, in this order: wait for the rate limiter, sign (the `date` is taken
//! now, after the wait, so a request paced at a low rate never arrives with a stale signature),
//! send, and read the answer within the call's limit while [`classify`] judges it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oci_signer::{sign_request, CredentialsProvider, SignableRequest};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::call::{Call, RateGroup};
use crate::classify::{
    backoff, classify, generic_hint, parse_retry_after, Observed, Verdict, ERROR_ANSWER_LIMIT,
};
use crate::error::{error_detail, Answer, Error, Failure, Settled};
use crate::rate_limit::{Grant, RateLimiter};

/// How the transport connects, times out, retries and paces; [`Default`] holds sensible values.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Upper bound for one attempt; the caller's deadline shortens it further.
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The backoff unit: attempt n waits a random delay below `base_backoff · 2^n` (full jitter).
    pub base_backoff: Duration,
    /// Cap on a backoff delay; a server's `Retry-After` is used instead when it gives one.
    pub max_backoff: Duration,
    /// Ceiling of [`RateGroup::DEFAULT`]'s adaptive limiter, per host; `None` turns it off.
    pub max_requests_per_second: Option<f64>,
    /// Ceilings of other groups, per host (`None`: off); a group not listed uses the default's.
    pub group_rates: Vec<(RateGroup, Option<f64>)>,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(20),
            max_attempts: 6,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_requests_per_second: Some(20.0),
            group_rates: Vec::new(),
            user_agent: format!("oci-transport/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl Settings {
    /// The ceiling for `group`.
    fn ceiling(&self, group: RateGroup) -> Option<f64> {
        self.group_rates
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(self.max_requests_per_second, |(_, c)| *c)
    }
}

/// The HTTP client could not be set up; Display says why.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(String);

/// Signed calls to OCI services; cheap to clone, and one is shared by all work of a process so
/// connections, credentials and rate limits are shared too.
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    credentials: Arc<dyn CredentialsProvider>,
    settings: Settings,
    /// One limiter per (host with port, group), made on first use.
    limiters: Mutex<HashMap<(String, RateGroup), Arc<RateLimiter>>>,
    /// 429 answers met since the start, whatever the service (for metrics).
    throttled: AtomicU64,
}

/// One attempt's result, with the request id the service gave it.
#[derive(Debug)]
struct Attempt {
    result: AttemptResult,
    request_id: Option<String>,
}

/// What one attempt came to, as [`classify`] judged it.
#[derive(Debug)]
enum AttemptResult {
    Done(Answer),
    /// Worth another attempt (after the server's delay, when it gave one).
    Retry {
        error: Error,
        after: Option<Duration>,
    },
    /// 401: re-read the credentials, then try again once.
    RefreshCredentials(Error),
    /// No further attempt.
    Final {
        error: Error,
        settled: Settled,
    },
}

impl AttemptResult {
    fn failed(error: Error) -> Self {
        AttemptResult::Final {
            error,
            settled: Settled::Failed,
        }
    }

    fn judged(verdict: Verdict, error: Error) -> Self {
        match verdict {
            Verdict::RetryAfter(after) => AttemptResult::Retry { error, after },
            Verdict::RefreshCredentials => AttemptResult::RefreshCredentials(error),
            Verdict::Reject => AttemptResult::Final {
                error,
                settled: Settled::Rejected,
            },
            // `Success` only reaches here with no usable body; failing is the safe side.
            Verdict::Fail | Verdict::Success => AttemptResult::failed(error),
        }
    }
}

impl Transport {
    /// One pooled HTTP/1.1 client for every call of the process: the TLS setup is paid once.
    /// Redirects are never followed and no proxy is used: a signed request goes to no other host.
    pub fn new(
        credentials: Arc<dyn CredentialsProvider>,
        settings: Settings,
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
        Ok(Transport {
            inner: Arc::new(Inner {
                http,
                credentials,
                settings,
                limiters: Mutex::new(HashMap::new()),
                throttled: AtomicU64::new(0),
            }),
        })
    }

    /// The credential in use, described for logs, e.g. "api key (profile DEFAULT)".
    pub fn credentials_label(&self) -> String {
        self.inner.credentials.describe()
    }

    /// How many 429 answers (a service throttling us) the transport has met since it was made;
    /// the difference over a piece of work is that work's count.
    pub fn throttled_answers(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// The rate `group` is allowed now towards `url`'s host, in requests per second; `None` when
    /// unlimited.
    pub fn current_rate(&self, url: &url::Url, group: RateGroup) -> Option<f64> {
        self.limiter(url, group).current_rate()
    }

    /// Sends `call` until [`classify`] says it is done, or the attempts or the time before
    /// `deadline` run out. Every attempt waits its turn, is signed afresh (new `date`, current
    /// credentials) and is read only up to the call's limit; `Retry-After` is honoured; a 401
    /// re-reads the credentials once and retries once.
    pub async fn send(&self, call: &Call, deadline: Instant) -> Result<Answer, Failure> {
        check_url(&call.url).map_err(|e| Failure {
            error: e,
            settled: Settled::Rejected,
            request_ids: Vec::new(),
        })?;
        let mut request_ids = Vec::new();
        let mut refreshed = false;
        for attempt in 1.. {
            let Attempt { result, request_id } = self.attempt(call, deadline).await;
            request_ids.extend(request_id);
            let (error, after) = match result {
                AttemptResult::Done(mut answer) => {
                    answer.request_ids = request_ids;
                    return Ok(answer);
                }
                AttemptResult::Final { error, settled } => {
                    return Err(Failure {
                        error,
                        settled,
                        request_ids,
                    })
                }
                AttemptResult::RefreshCredentials(error) if refreshed => {
                    return Err(Failure::failed(
                        self.not_authorized(call, error),
                        request_ids,
                    ))
                }
                AttemptResult::RefreshCredentials(_) => {
                    refreshed = true;
                    self.refresh_credentials(call)
                        .map_err(|e| Failure::failed(e, request_ids.clone()))?;
                    continue;
                }
                AttemptResult::Retry { error, after } => (error, after),
            };
            let delay = self
                .retry_delay(call, attempt, after, deadline, &error)
                .ok_or_else(|| Failure::failed(error, request_ids.clone()))?;
            tokio::time::sleep(delay).await;
        }
        unreachable!("the attempt loop only ends by returning")
    }

    /// The wait before the next attempt, or `None` when attempts or time have run out.
    fn retry_delay(
        &self,
        call: &Call,
        attempt: u32,
        after: Option<Duration>,
        deadline: Instant,
        error: &Error,
    ) -> Option<Duration> {
        let s = &self.inner.settings;
        if attempt >= s.max_attempts {
            return None;
        }
        let delay = after
            .unwrap_or_else(|| backoff(attempt, s.base_backoff, s.max_backoff, fastrand::f64()));
        if Instant::now() + delay >= deadline {
            tracing::warn!(url = %call.url.path(), error = %error, "not retrying: the next attempt would pass the call deadline");
            return None;
        }
        tracing::info!(url = %call.url.path(), error = %error, attempt, delay_ms = delay.as_millis() as u64, "retrying");
        Some(delay)
    }

    /// The token may have been rotated under us: re-read once (the caller then retries once).
    fn refresh_credentials(&self, call: &Call) -> Result<(), Error> {
        tracing::warn!(url = %call.url.path(), "answered 401; re-reading credentials and retrying once");
        self.inner
            .credentials
            .refresh(SystemTime::now())
            .map(|_| ())
            .map_err(Error::Credentials)
    }

    fn not_authorized(&self, call: &Call, error: Error) -> Error {
        let kind = self.inner.credentials.kind();
        Error::NotAuthorized {
            service: call.service,
            credential: self.credentials_label(),
            hint: call.hints.unauthorized.map(|hint| hint(kind)),
            detail: error.detail().map(str::to_owned),
        }
    }

    fn limiter(&self, url: &url::Url, group: RateGroup) -> Arc<RateLimiter> {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut limiters = self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = (host, group);
        let made = || {
            let label = format!("{} {}", key.0, group.name());
            Arc::new(RateLimiter::named(
                self.inner.settings.ceiling(group),
                label,
            ))
        };
        Arc::clone(limiters.entry(key.clone()).or_insert_with(made))
    }

    /// One attempt: wait for the limiter, sign, send, read and judge the answer.
    async fn attempt(&self, call: &Call, deadline: Instant) -> Attempt {
        let unanswered = |result| Attempt {
            result,
            request_id: None,
        };
        let limiter = self.limiter(&call.url, call.group);
        let Ok(grant) = limiter.acquire(deadline).await else {
            return unanswered(AttemptResult::failed(Error::Deadline));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return unanswered(AttemptResult::failed(Error::Deadline));
        }
        let timeout = remaining.min(self.inner.settings.attempt_timeout);
        // Signed only now, after the wait: the `date` is fresh when the request leaves.
        let request = match self.signed_request(call) {
            Ok(request) => request,
            Err(error) => return unanswered(AttemptResult::failed(error)),
        };
        match request.timeout(timeout).send().await {
            Ok(response) => {
                self.answered(call, response, &limiter, grant, timeout)
                    .await
            }
            Err(e) => unanswered(judge_transport(call, e, timeout)),
        }
    }

    /// The reqwest request for `call`, signed now with the current credentials.
    fn signed_request(&self, call: &Call) -> Result<reqwest::RequestBuilder, Error> {
        let credentials = self
            .inner
            .credentials
            .credentials(SystemTime::now())
            .map_err(Error::Credentials)?;
        let mut extra: Vec<(&str, &str)> = vec![("accept", "application/json")];
        extra.extend(call.headers.iter().map(|(n, v)| (*n, v.as_str())));
        if extra
            .iter()
            .skip(1)
            .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
        {
            extra.remove(0);
        }
        // Signed in place, on the worker running the request: with AWS-LC a signature takes
        // 0.4 to 0.9 ms of CPU on the machines measured (bench/README.md), and a hand-off to
        // another thread would only add to it.
        let signed = sign_request(
            &SignableRequest {
                method: call.method.as_str(),
                url: call.url.as_str(),
                headers: &extra,
                body: call.body.as_deref().unwrap_or_default(),
            },
            &credentials.key_id,
            credentials.key.as_ref(),
            SystemTime::now(),
        )
        .map_err(Error::Sign)?;
        let mut headers = HeaderMap::new();
        for (name, value) in signed.headers() {
            // The signer has already refused anything that is not a plain ASCII header.
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Request(format!("header name {name:?} is not valid")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::Request(format!("the value of header {name} is not valid")))?;
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

    /// Judges an answer by its status, then reads its body within the limit that verdict allows.
    async fn answered(
        &self,
        call: &Call,
        mut response: reqwest::Response,
        limiter: &RateLimiter,
        grant: Grant,
        timeout: Duration,
    ) -> Attempt {
        let status = response.status();
        // The one place every answer's status is seen (a 429 is the service throttling us).
        let throttled = status == StatusCode::TOO_MANY_REQUESTS;
        limiter.record(grant, throttled);
        if throttled {
            self.inner.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let request_id = request_id(response.headers());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let verdict = classify(
            call.intent,
            Observed::Status {
                status,
                retry_after,
            },
        );
        let limit = if verdict == Verdict::Success {
            call.answer_limit
        } else {
            ERROR_ANSWER_LIMIT
        };
        let result = match read_capped(&mut response, limit).await {
            Ok(body) if verdict == Verdict::Success => AttemptResult::Done(Answer {
                status,
                headers: std::mem::take(response.headers_mut()),
                body,
                request_ids: Vec::new(),
            }),
            Ok(body) => AttemptResult::judged(verdict, status_error(call, status, Some(&body))),
            // An error answer too long to quote is judged by its status alone.
            Err(BodyError::TooLarge) if verdict != Verdict::Success => {
                AttemptResult::judged(verdict, status_error(call, status, None))
            }
            Err(BodyError::TooLarge) => AttemptResult::judged(
                classify(call.intent, Observed::TooLarge),
                Error::TooLarge { limit },
            ),
            Err(BodyError::Transport(e)) => judge_transport(call, e, timeout),
        };
        Attempt { result, request_id }
    }
}

/// Signed requests go to `https` hosts, or to a loopback address over `http` (local tests).
fn check_url(url: &url::Url) -> Result<(), Error> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(Error::Request(format!(
            "a signed request goes only to an https URL (or http on a loopback address), not to {}://{}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ))),
    }
}

/// `X-ORACLE-DMS-ECID` (identity domains), else `opc-request-id` (other OCI services).
fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-oracle-dms-ecid", "opc-request-id"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(|v| crate::error::truncated(v, 200))
}

fn status_error(call: &Call, status: StatusCode, body: Option<&[u8]>) -> Error {
    let (detail, message_id) = body.map(error_detail).unwrap_or_default();
    let hint = match status {
        StatusCode::FORBIDDEN => call.hints.forbidden,
        _ => generic_hint(status),
    };
    Error::Status {
        service: call.service,
        status,
        detail,
        message_id,
        hint,
    }
}

/// An attempt that ended without an answer (or with one cut short).
fn judge_transport(call: &Call, e: reqwest::Error, timeout: Duration) -> AttemptResult {
    let service = call.service;
    let (error, observed) = if e.is_timeout() {
        (Error::Timeout { service, timeout }, Observed::Timeout)
    } else {
        let source = e.without_url();
        (Error::Transport { service, source }, Observed::Network)
    };
    AttemptResult::judged(classify(call.intent, observed), error)
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the answer chunk by chunk and stops past `limit`: memory stays bounded whatever the server
/// sends, a declared length over the limit is refused before any byte is read, and an endless
/// answer ends at the limit (or at the attempt's timeout, if it trickles).
async fn read_capped(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
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
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_go_only_to_https_or_loopback() {
        for ok in [
            "https://identity.us-ashburn-1.oci.oraclecloud.com/x",
            "http://127.0.0.1:9000/x",
            "http://[::1]:9000/x",
            "http://localhost:1/x",
        ] {
            assert!(check_url(&url::Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "http://identity.us-ashburn-1.oci.oraclecloud.com/x",
            "http://10.0.0.1/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
        ] {
            assert!(check_url(&url::Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_ceilings_fall_back_to_the_default() {
        let bulk = RateGroup::new("bulk");
        let settings = Settings {
            max_requests_per_second: Some(20.0),
            group_rates: vec![(bulk, Some(3.0))],
            ..Settings::default()
        };
        assert_eq!(settings.ceiling(bulk), Some(3.0));
        assert_eq!(settings.ceiling(RateGroup::DEFAULT), Some(20.0));
        assert_eq!(settings.ceiling(RateGroup::new("other")), Some(20.0));
    }
}
