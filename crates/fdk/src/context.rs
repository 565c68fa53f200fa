//! What a handler learns about the call it is serving.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Used when `Fn-Deadline` is missing or unreadable: the open-source default function timeout.
pub const DEFAULT_CALL_BUDGET: Duration = Duration::from_secs(30);

/// The function's configuration: on Fn, app and function config keys arrive as environment variables.
#[derive(Clone, Default)]
pub struct FnConfig {
    vars: Arc<Vec<(String, String)>>,
}

impl FnConfig {
    /// From `(key, value)` pairs.
    pub fn new(vars: Vec<(String, String)>) -> Self {
        FnConfig {
            vars: Arc::new(vars),
        }
    }

    /// Snapshot of the process environment (non-UTF-8 entries are skipped).
    pub fn from_process_env() -> Self {
        Self::new(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Names only: values may hold secrets (resource-principal material can be passed by content).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(k, _)| k.as_str())
    }
}

impl std::fmt::Debug for FnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnConfig")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The HTTP request behind an API Gateway call (`Fn-Intent: httprequest`).
#[derive(Debug, Clone, Default)]
pub struct GatewayRequest {
    /// The client's method (`Fn-Http-Method`).
    pub method: Option<String>,
    /// The client's URL (`Fn-Http-Request-Url`).
    pub request_url: Option<String>,
    /// The client's headers with the `Fn-Http-H-` prefix removed.
    pub headers: Vec<(String, String)>,
}

/// Per-call context.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallContext {
    /// `Fn-Call-Id`, when it was valid text.
    pub call_id: Option<String>,
    /// When the handler must be done. The FDK answers 504 itself at this instant, which is a little before
    /// the platform's own cutoff, so the container survives a slow call.
    pub deadline: Instant,
    /// The deadline as the platform sent it, when it could be read.
    pub platform_deadline: Option<SystemTime>,
    /// `Fn-Intent` (`httprequest` for API Gateway calls).
    pub intent: Option<String>,
    /// The client's request, on API Gateway calls.
    pub gateway: Option<GatewayRequest>,
    /// The body's `Content-Type`.
    pub content_type: Option<String>,
    /// Every request header as received.
    pub headers: HeaderMap,
    /// The function's configuration.
    pub config: FnConfig,
}

impl CallContext {
    /// A context with only a deadline and configuration, as a handler's own tests need it.
    pub fn for_test(deadline: Instant, config: FnConfig) -> Self {
        CallContext {
            call_id: None,
            deadline,
            platform_deadline: None,
            intent: None,
            gateway: None,
            content_type: None,
            headers: HeaderMap::new(),
            config,
        }
    }

    /// Time left before the FDK gives up on the handler.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether the call came through API Gateway.
    pub fn is_gateway(&self) -> bool {
        self.intent
            .as_deref()
            .is_some_and(|i| i.eq_ignore_ascii_case("httprequest"))
    }

    /// A request header as text, if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reads `Fn-Deadline`: RFC 3339 with `Z` or an offset, with or without a fraction. Every time at or
/// before 1970-01-01 reads as the epoch: all are long past, and all must leave the same (zero) budget,
/// whether `0001-01-01` or `1969-12-31` (nanoseconds before the epoch do not fit a `u64` for years
/// before about 1385, which once made `0001-01-01` read as "no deadline").
pub fn parse_deadline(value: &str) -> Option<SystemTime> {
    let parsed = OffsetDateTime::parse(value.trim(), &Rfc3339).ok()?;
    match u64::try_from(parsed.unix_timestamp_nanos()) {
        Ok(nanos) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(nanos)),
        Err(_) => Some(SystemTime::UNIX_EPOCH),
    }
}

/// How long the handler may run: the time left until the platform's deadline, less a safety margin that
/// leaves room to write the 504. A deadline already past leaves no budget at all.
pub fn handler_budget(
    platform_deadline: SystemTime,
    now: SystemTime,
    margin: Duration,
) -> Duration {
    platform_deadline
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_forms() {
        let z = parse_deadline("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(
            z.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_893_456_000
        );
        let frac = parse_deadline("2030-01-01T00:00:00.250Z").unwrap();
        assert_eq!(frac.duration_since(z).unwrap(), Duration::from_millis(250));
        let offset = parse_deadline("2030-01-01T01:00:00+01:00").unwrap();
        assert_eq!(offset, z);
        let lower = parse_deadline("2030-01-01t00:00:00z");
        assert!(lower.is_none() || lower == Some(z));
        assert!(parse_deadline("").is_none());
        assert!(parse_deadline("tomorrow").is_none());
        assert!(parse_deadline("2030-13-01T00:00:00Z").is_none());
        // Every past deadline alike: the epoch, whatever year before it.
        for past in [
            "1960-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00.000000001+23:59",
            "1969-12-31T23:59:59.999Z",
        ] {
            assert_eq!(parse_deadline(past), Some(SystemTime::UNIX_EPOCH), "{past}");
        }
    }

    #[test]
    fn budget_never_underflows() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let margin = Duration::from_millis(300);
        assert_eq!(
            handler_budget(now + Duration::from_secs(2), now, margin),
            Duration::from_millis(1700)
        );
        assert_eq!(
            handler_budget(now - Duration::from_secs(2), now, margin),
            Duration::ZERO
        );
        assert_eq!(
            handler_budget(now + Duration::from_millis(100), now, margin),
            Duration::ZERO
        );
    }
}
