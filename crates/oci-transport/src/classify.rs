//! What each answer from an OCI service means for the call that got it: one pure classifier, the
//! backoff between attempts, and `Retry-After`.
//!
//! Every call is judged here and nowhere else, row by row as the product's table "How each answer
//! from a server is treated" has it. Nothing here does I/O or reads the clock, so every row is a
//! unit test. The same table judges a whole answer and, for a batch API such as SCIM Bulk, each
//! operation's own status inside it.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// What a call does to the service, which decides what a 403 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Reads (a GET, a search by POST): a 403 means a role missing or not yet propagated, which an
    /// administrator's fix or time can cure, so the call ends `failed`.
    Read,
    /// Changes something after the caller has read it: a 403 is about this object (the role may
    /// not change it), so the call ends `rejected`.
    Write,
}

/// The most of a successful answer read for one object (a user, a write's echo, a domain).
pub const SMALL_ANSWER_LIMIT: usize = 1024 * 1024;
/// The most of a successful answer read for one page of a listing (1,000 users with their
/// extensions stay far below it).
pub const PAGE_ANSWER_LIMIT: usize = 32 * 1024 * 1024;
/// How much of an error answer is read for its `detail`; the rest is never looked at.
pub const ERROR_ANSWER_LIMIT: usize = 64 * 1024;

/// One attempt's answer, reduced to what the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The server answered with this status (`retry_after` from its `Retry-After`, when given).
    Status {
        /// The HTTP status of the answer.
        status: StatusCode,
        /// The wait the server asked for; `None` when absent or unreadable.
        retry_after: Option<Duration>,
    },
    /// No answer within the attempt's time.
    Timeout,
    /// Connection refused or reset, TLS failure, a body cut short.
    Network,
    /// A successful answer larger than the call's limit; it was not read to the end.
    TooLarge,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: use the answer.
    Success,
    /// Try again within the deadline, after the server's delay when it gave one; `failed` when
    /// attempts or time run out.
    RetryAfter(Option<Duration>),
    /// Re-read the credentials once and try again (401).
    RefreshCredentials,
    /// Stop now with `failed`: not worth another attempt in this call, but a redelivery of the batch
    /// can succeed (a role not yet propagated, a redirect, an oversized answer).
    Fail,
    /// Stop now with `rejected`: retrying cannot help.
    Reject,
}

/// The table in PRODUCT.md, "How each answer from a server is treated".
pub fn classify(intent: Intent, observed: Observed) -> Verdict {
    let (status, retry_after) = match observed {
        Observed::Timeout | Observed::Network => return Verdict::RetryAfter(None),
        Observed::TooLarge => return Verdict::Fail,
        Observed::Status {
            status,
            retry_after,
        } => (status, retry_after),
    };
    if status.is_success() {
        return Verdict::Success;
    }
    if status.is_redirection() {
        // A signed request is never sent on to another host.
        return Verdict::Fail;
    }
    match status {
        StatusCode::UNAUTHORIZED => Verdict::RefreshCredentials,
        StatusCode::FORBIDDEN => match intent {
            // After a successful read, a refused write is about this object (an administrator, say).
            Intent::Write => Verdict::Reject,
            // A role missing or not yet propagated: an administrator's fix, or time, helps.
            Intent::Read => Verdict::Fail,
        },
        StatusCode::NOT_FOUND => Verdict::Reject,
        StatusCode::REQUEST_TIMEOUT
        | StatusCode::CONFLICT
        | StatusCode::TOO_EARLY
        | StatusCode::TOO_MANY_REQUESTS => Verdict::RetryAfter(retry_after),
        StatusCode::NOT_IMPLEMENTED | StatusCode::HTTP_VERSION_NOT_SUPPORTED => Verdict::Reject,
        s if s.is_server_error() => Verdict::RetryAfter(retry_after),
        s if s.is_client_error() => Verdict::Reject,
        // 1xx never reaches here through the HTTP client; anything else unexpected is not trusted.
        _ => Verdict::Fail,
    }
}

/// A sentence for the report when the status alone does not say what to do about it, and the
/// call gave no hint of its own.
pub fn generic_hint(status: StatusCode) -> Option<&'static str> {
    status
        .is_redirection()
        .then_some("redirects are not followed: a signed request goes to no other host")
}

/// Exponential backoff with full jitter: a uniform delay below `base · 2^attempt`, capped at `max`.
/// `jitter` is a number in `[0, 1)`; the caller draws it, so this stays a pure function.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The longest `Retry-After` honoured: a hostile or mistaken value cannot park a call.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(120);

/// `Retry-After` as delta-seconds or an HTTP date, seen at `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Intent; 2] = [Intent::Read, Intent::Write];

    fn status(code: u16) -> Observed {
        Observed::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
        }
    }

    fn every_intent(observed: Observed) -> Vec<Verdict> {
        ALL.iter().map(|p| classify(*p, observed)).collect()
    }

    #[test]
    fn row_network_timeout_and_transient_statuses_are_retried() {
        let retried = Verdict::RetryAfter(None);
        assert_eq!(every_intent(Observed::Network), [retried; 2]);
        assert_eq!(every_intent(Observed::Timeout), [retried; 2]);
        let transient = [
            408, 409, 425, 429, 500, 502, 503, 504, 506, 507, 508, 510, 511, 599,
        ];
        for code in transient {
            assert_eq!(every_intent(status(code)), [retried; 2], "{code}");
        }
    }

    #[test]
    fn row_retry_after_is_carried_with_the_retry() {
        let after = Some(Duration::from_secs(3));
        for code in [429, 503, 409] {
            let observed = Observed::Status {
                status: StatusCode::from_u16(code).unwrap(),
                retry_after: after,
            };
            assert_eq!(
                every_intent(observed),
                [Verdict::RetryAfter(after); 2],
                "{code}"
            );
        }
    }

    #[test]
    fn row_401_refreshes_credentials() {
        assert_eq!(every_intent(status(401)), [Verdict::RefreshCredentials; 2]);
    }

    #[test]
    fn row_403_fails_a_read_and_rejects_a_write() {
        assert_eq!(classify(Intent::Read, status(403)), Verdict::Fail);
        assert_eq!(classify(Intent::Write, status(403)), Verdict::Reject);
    }

    #[test]
    fn row_404_is_rejected() {
        assert_eq!(every_intent(status(404)), [Verdict::Reject; 2]);
    }

    #[test]
    fn row_3xx_is_never_followed_and_fails() {
        for code in [300, 301, 302, 303, 304, 307, 308] {
            assert_eq!(every_intent(status(code)), [Verdict::Fail; 2], "{code}");
            assert!(generic_hint(StatusCode::from_u16(code).unwrap()).is_some());
        }
    }

    #[test]
    fn row_other_4xx_501_and_505_are_rejected() {
        for code in [
            400, 402, 405, 406, 410, 411, 412, 413, 415, 422, 428, 431, 451, 499, 501, 505,
        ] {
            assert_eq!(every_intent(status(code)), [Verdict::Reject; 2], "{code}");
        }
    }

    #[test]
    fn row_oversized_answers_fail() {
        assert_eq!(every_intent(Observed::TooLarge), [Verdict::Fail; 2]);
        assert_eq!(SMALL_ANSWER_LIMIT, 1 << 20);
        assert_eq!(PAGE_ANSWER_LIMIT, 32 << 20);
    }

    #[test]
    fn success_is_any_2xx() {
        for code in [200, 201, 204] {
            assert_eq!(every_intent(status(code)), [Verdict::Success; 2], "{code}");
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(10);
        assert_eq!(backoff(1, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(1, base, max, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_millis(800));
        assert_eq!(backoff(30, base, max, 0.999_999), max.mul_f64(0.999_999));
        assert_eq!(backoff(2, base, max, 7.0), Duration::from_millis(800));
        assert_eq!(backoff(u32::MAX, base, max, 1.0), max);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999", now), Some(RETRY_AFTER_MAX));
        let soon = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&soon, now), Some(Duration::from_secs(5)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
