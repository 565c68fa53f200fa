//! The function's configuration, read from environment variables and fully validated at start,
//! so the process never runs with a half-understood setting.
//!
//! ```
//! use oci_user_capabilities::config::{Config, DomainDecision};
//!
//! let env = |key: &str| match key {
//!     "DOMAINS" => Some("Default=https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com".to_owned()),
//!     "DRY_RUN" => Some("yes".to_owned()),
//!     _ => None,
//! };
//! let config = Config::from_lookup(&env).unwrap();
//! assert!(config.dry_run);
//! assert!(matches!(config.domains.resolve("Default"), DomainDecision::Allowed { .. }));
//! assert_eq!(config.domains.resolve("Other"), DomainDecision::OutsideAllowList);
//! ```

use crate::names::{shown, DomainName, DomainUrl};
use crate::profile::{parse_switch, split_list, ListError, Profile};

pub const KEY_CAPABILITIES: &str = "CAPABILITIES";
pub const KEY_EVENT_TYPES: &str = "EVENT_TYPES";
pub const KEY_DOMAINS: &str = "DOMAINS";
pub const KEY_TEMPLATE: &str = "IDENTITY_DOMAIN_URL_TEMPLATE";
pub const KEY_DRY_RUN: &str = "DRY_RUN";
pub const KEY_MAX_CONCURRENCY: &str = "MAX_CONCURRENCY";
pub const KEY_MAX_RPS: &str = "MAX_REQUESTS_PER_SECOND";
pub const KEY_LOG_FORMAT: &str = "LOG_FORMAT";

pub const DEFAULT_EVENT_TYPES: &str = "UserJit";
pub const DEFAULT_TEMPLATE: &str = "https://{domain}.identity.oraclecloud.com";
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
pub const MAX_CONCURRENCY_LIMIT: usize = 64;
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: f64 = 20.0;
/// Far above any identity domain's published limit; a larger value is surely a typo.
const MAX_REQUESTS_PER_SECOND_LIMIT: f64 = 10_000.0;

const PLACEHOLDER: &str = "{domain}";
/// Substituted into the template at start to prove it yields a valid URL.
const SAMPLE_DOMAIN: &str = "idcs-0123456789abcdef0123456789abcdef";

/// A configuration key and why its value was refused. Display: `KEY: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Names that select a record (see [`EventTypes::selects`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(Vec<String>);

impl EventTypes {
    /// Comma-separated names; surrounding ASCII whitespace is ignored, empty entries are errors.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let names = list_for(s, KEY_EVENT_TYPES, "event type names")?;
        Ok(Self(names.into_iter().map(str::to_owned).collect()))
    }

    /// True when a name equals (ASCII case-insensitive) `event_name`, `event_id`, or the last
    /// '.'-segment of `type_`.
    pub fn selects(
        &self,
        event_name: Option<&str>,
        event_id: Option<&str>,
        type_: Option<&str>,
    ) -> bool {
        let type_tail = type_.and_then(|t| t.rsplit('.').next());
        let candidates = [event_name, event_id, type_tail];
        self.0.iter().any(|name| {
            candidates
                .iter()
                .flatten()
                .any(|c| c.eq_ignore_ascii_case(name))
        })
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl Default for EventTypes {
    fn default() -> Self {
        Self(vec![DEFAULT_EVENT_TYPES.to_owned()])
    }
}

/// [`split_list`] with its errors named for `key`.
fn list_for<'a>(s: &'a str, key: &'static str, what: &str) -> Result<Vec<&'a str>, ConfigError> {
    split_list(s).map_err(|e| match e {
        ListError::Empty => ConfigError::new(key, format!("lists no {what}")),
        ListError::EmptyEntry { position } => {
            ConfigError::new(key, format!("entry {position} is empty (stray comma?)"))
        }
    })
}

/// `IDENTITY_DOMAIN_URL_TEMPLATE`, split around its single `{domain}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    prefix: String,
    suffix: String,
    /// The host with the sample domain substituted, split around it; `None` when `{domain}` is
    /// not inside the host (then URLs cannot be matched back to a domain name).
    host_affixes: Option<(String, String)>,
    loopback: bool,
    /// A loopback URL without `{domain}`: every domain goes to that one test server (the reference
    /// function's convention for local runs). Never allowed for a non-loopback URL.
    fixed: Option<DomainUrl>,
}

impl Template {
    fn parse(template: &str) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::new(KEY_TEMPLATE, reason);
        let Some((prefix, suffix)) = template.split_once(PLACEHOLDER) else {
            if let Ok(url) = DomainUrl::parse(template) {
                if url.is_loopback() {
                    return Ok(Self {
                        prefix: template.to_owned(),
                        suffix: String::new(),
                        host_affixes: None,
                        loopback: true,
                        fixed: Some(url),
                    });
                }
            }
            return Err(err(format!(
                "must contain {PLACEHOLDER} once, got {}",
                shown(template)
            )));
        };
        if suffix.contains(PLACEHOLDER) {
            return Err(err(format!(
                "must contain {PLACEHOLDER} only once, got {}",
                shown(template)
            )));
        }
        let sample_url = format!("{prefix}{SAMPLE_DOMAIN}{suffix}");
        let sample = DomainUrl::parse(&sample_url).map_err(|e| {
            err(format!(
                "does not give a valid URL for {SAMPLE_DOMAIN}: {e}"
            ))
        })?;
        let host_affixes = sample
            .host()
            .split_once(SAMPLE_DOMAIN)
            .map(|(before, after)| (before.to_owned(), after.to_owned()));
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            host_affixes,
            loopback: sample.is_loopback(),
            fixed: None,
        })
    }

    fn url_for(&self, name: &DomainName) -> Result<DomainUrl, String> {
        if let Some(url) = &self.fixed {
            return Ok(url.clone());
        }
        // Only an already-validated name is substituted, and its character set is the sample's,
        // so this cannot fail for a template that passed `parse`; report rather than assume.
        DomainUrl::parse(&format!("{}{name}{}", self.prefix, self.suffix))
            .map_err(|e| e.to_string())
    }

    /// The domain name whose template URL is exactly `url`, if there is one.
    fn name_for(&self, url: &DomainUrl) -> Option<DomainName> {
        let (before, after) = self.host_affixes.as_ref()?;
        let middle = url
            .host()
            .strip_prefix(before.as_str())?
            .strip_suffix(after.as_str())?;
        let name = DomainName::parse(middle).ok()?;
        (self.url_for(&name).ok()? == *url).then_some(name)
    }
}

/// Which identity domains the function may act in, and their URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPolicy {
    template: Template,
    /// `None`: DOMAINS unset, any valid domain name through the template.
    allowed: Option<Vec<(String, DomainUrl)>>,
}

/// What [`DomainPolicy::resolve`] decided for a record's domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainDecision {
    Allowed { url: DomainUrl },
    OutsideAllowList,
    Invalid { reason: String },
}

impl DomainPolicy {
    /// `domains` is DOMAINS: comma-separated; each `idcs-<32 hex>` (URL from the template) or
    /// `NAME=URL` (NAME matched exactly against the record's domain value; may be a display name
    /// or an OCID). `None` allows any valid domain name. Every URL is validated here.
    pub fn new(domains: Option<&str>, template: &str) -> Result<Self, ConfigError> {
        let template = Template::parse(template)?;
        let allowed = match domains {
            None => None,
            Some(list) => Some(parse_domains(list, &template)?),
        };
        Ok(Self { template, allowed })
    }

    /// Decides for the domain value found in a record (compared exactly, no trimming or case
    /// folding).
    pub fn resolve(&self, domain_value: &str) -> DomainDecision {
        match &self.allowed {
            Some(list) => match list.iter().find(|(name, _)| name == domain_value) {
                Some((_, url)) => DomainDecision::Allowed { url: url.clone() },
                None => DomainDecision::OutsideAllowList,
            },
            None => match DomainName::parse(domain_value) {
                Ok(name) => match self.template.url_for(&name) {
                    Ok(url) => DomainDecision::Allowed { url },
                    Err(reason) => DomainDecision::Invalid { reason },
                },
                Err(e) => DomainDecision::Invalid {
                    reason: e.to_string(),
                },
            },
        }
    }

    /// For reconcile requests: `s` is a configured name (as for [`resolve`](Self::resolve)) or a
    /// URL that must equal one of the allowed URLs. With DOMAINS unset, a URL is accepted when it
    /// is exactly what the template gives for some valid domain name, or, when the template
    /// itself points at a loopback address, any loopback URL.
    pub fn resolve_for_reconcile(&self, s: &str) -> Result<DomainUrl, String> {
        if let DomainDecision::Allowed { url } = self.resolve(s) {
            return Ok(url);
        }
        let url = DomainUrl::parse(s).map_err(|e| match &self.allowed {
            Some(_) => format!(
                "{} is neither a name in DOMAINS nor a valid URL ({e})",
                shown(s)
            ),
            None => format!(
                "{} is neither a valid domain name nor a valid URL ({e})",
                shown(s)
            ),
        })?;
        match &self.allowed {
            Some(list) => list
                .iter()
                .find(|(_, allowed)| *allowed == url)
                .map(|(_, allowed)| allowed.clone())
                .ok_or_else(|| {
                    format!("{} is not one of the URLs in DOMAINS", shown(url.as_str()))
                }),
            None => {
                if self.template.name_for(&url).is_some()
                    || (self.template.loopback && url.is_loopback())
                {
                    Ok(url)
                } else {
                    Err(format!(
                        "{} is not an identity-domain URL of the form {}{{domain}}{}",
                        shown(url.as_str()),
                        self.template.prefix,
                        self.template.suffix
                    ))
                }
            }
        }
    }

    /// True when DOMAINS was given.
    pub fn has_allow_list(&self) -> bool {
        self.allowed.is_some()
    }
}

fn parse_domains(list: &str, template: &Template) -> Result<Vec<(String, DomainUrl)>, ConfigError> {
    let err = |reason: String| ConfigError::new(KEY_DOMAINS, reason);
    let mut allowed: Vec<(String, DomainUrl)> = Vec::new();
    for entry in list_for(list, KEY_DOMAINS, "domains")? {
        let (name, url) = match entry.split_once('=') {
            Some((name, url)) => {
                let name = name.trim_ascii();
                if name.is_empty() {
                    return Err(err(format!(
                        "entry {}: the name before '=' is empty",
                        shown(entry)
                    )));
                }
                let url = DomainUrl::parse(url.trim_ascii())
                    .map_err(|e| err(format!("entry {}: {e}", shown(entry))))?;
                (name.to_owned(), url)
            }
            None => {
                let name = DomainName::parse(entry).map_err(|e| {
                    err(format!(
                        "entry {}: expected idcs-<32 hex> or NAME=URL ({e})",
                        shown(entry)
                    ))
                })?;
                let url = template
                    .url_for(&name)
                    .map_err(|e| ConfigError::new(KEY_TEMPLATE, e))?;
                (name.as_str().to_owned(), url)
            }
        };
        if allowed.iter().any(|(known, _)| *known == name) {
            return Err(err(format!("{} is listed more than once", shown(&name))));
        }
        allowed.push((name, url));
    }
    Ok(allowed)
}

/// Everything the function needs from its configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: Profile,
    pub event_types: EventTypes,
    pub domains: DomainPolicy,
    pub dry_run: bool,
    /// 1..=64.
    pub max_concurrency: usize,
    /// `None` when disabled ("0" or "off").
    pub max_requests_per_second: Option<f64>,
    pub log_format: LogFormat,
}

impl Config {
    /// Reads the keys of PRODUCT.md's table through `lookup` (the environment in production, a
    /// closure in tests). An empty or all-whitespace value counts as unset (but for `CAPABILITIES` and
    /// `EVENT_TYPES`, where it is an error); other values have
    /// surrounding ASCII whitespace removed. The first invalid key is reported.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim_ascii().to_owned())
                .filter(|v| !v.is_empty())
        };

        // Unlike the other keys, an empty profile or event list is refused: an operator who cleared it
        // most likely meant "manage nothing" or "act on nothing", and the default does the opposite.
        for key in [KEY_CAPABILITIES, KEY_EVENT_TYPES] {
            if lookup(key).is_some_and(|v| v.trim_ascii().is_empty()) {
                return Err(ConfigError::new(
                    key,
                    "set but empty; remove the key to use the default, or list at least one name",
                ));
            }
        }
        let profile = match get(KEY_CAPABILITIES) {
            Some(v) => {
                Profile::parse(&v).map_err(|e| ConfigError::new(KEY_CAPABILITIES, e.to_string()))?
            }
            None => Profile::default(),
        };
        let event_types = match get(KEY_EVENT_TYPES) {
            Some(v) => EventTypes::parse(&v)?,
            None => EventTypes::default(),
        };
        let template = get(KEY_TEMPLATE).unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
        let domains = DomainPolicy::new(get(KEY_DOMAINS).as_deref(), &template)?;
        let dry_run = match get(KEY_DRY_RUN) {
            Some(v) => parse_switch(&v).ok_or_else(|| {
                ConfigError::new(
                    KEY_DRY_RUN,
                    format!(
                        "expected true/false, yes/no, on/off or 1/0, got {}",
                        shown(&v)
                    ),
                )
            })?,
            None => false,
        };
        let max_concurrency = match get(KEY_MAX_CONCURRENCY) {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_CONCURRENCY_LIMIT).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        KEY_MAX_CONCURRENCY,
                        format!(
                            "expected a whole number from 1 to {MAX_CONCURRENCY_LIMIT}, got {}",
                            shown(&v)
                        ),
                    )
                })?,
            None => DEFAULT_MAX_CONCURRENCY,
        };
        let max_requests_per_second = match get(KEY_MAX_RPS) {
            Some(v) => parse_rate(&v)?,
            None => Some(DEFAULT_MAX_REQUESTS_PER_SECOND),
        };
        let log_format = match get(KEY_LOG_FORMAT) {
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(v) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(v) => {
                return Err(ConfigError::new(
                    KEY_LOG_FORMAT,
                    format!("expected json or text, got {}", shown(&v)),
                ))
            }
            None => LogFormat::Json,
        };

        Ok(Self {
            profile,
            event_types,
            domains,
            dry_run,
            max_concurrency,
            max_requests_per_second,
            log_format,
        })
    }
}

fn parse_rate(v: &str) -> Result<Option<f64>, ConfigError> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(r) if r.is_finite() && r > 0.0 && r <= MAX_REQUESTS_PER_SECOND_LIMIT => Ok(Some(r)),
        _ => Err(ConfigError::new(
            KEY_MAX_RPS,
            format!(
                "expected a number above 0 and at most {MAX_REQUESTS_PER_SECOND_LIMIT}, or 0/off to \
                 disable, got {}",
                shown(v)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NAME: &str = "idcs-0123456789abcdef0123456789abcdef";
    const OTHER: &str = "idcs-fedcba9876543210fedcba9876543210";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&|k: &str| map.get(k).cloned())
    }

    fn key_of(pairs: &[(&str, &str)]) -> &'static str {
        config(pairs).unwrap_err().key
    }

    fn url(s: &str) -> DomainUrl {
        DomainUrl::parse(s).unwrap()
    }

    fn default_policy() -> DomainPolicy {
        DomainPolicy::new(None, DEFAULT_TEMPLATE).unwrap()
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.profile, Profile::default());
        assert_eq!(c.event_types.names(), ["UserJit"]);
        assert!(!c.domains.has_allow_list());
        assert!(!c.dry_run);
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.max_requests_per_second, Some(20.0));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn empty_values_count_as_unset() {
        for key in [KEY_CAPABILITIES, KEY_EVENT_TYPES] {
            let err = config(&[(key, " ")]).unwrap_err();
            assert!(err.to_string().starts_with(key) && err.to_string().contains("empty"));
        }
        let keys = [
            KEY_DOMAINS,
            KEY_TEMPLATE,
            KEY_DRY_RUN,
            KEY_MAX_CONCURRENCY,
            KEY_MAX_RPS,
            KEY_LOG_FORMAT,
        ];
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, "")).collect();
        let c = config(&pairs).unwrap();
        assert_eq!(c.profile, Profile::default());
        assert!(!c.domains.has_allow_list());
        assert_eq!(c.max_requests_per_second, Some(20.0));
    }

    #[test]
    fn values_are_read() {
        let c = config(&[
            (KEY_CAPABILITIES, "smtp_credentials=off"),
            (KEY_EVENT_TYPES, "UserJit, admin.user.create.success"),
            (KEY_DRY_RUN, "YES"),
            (KEY_MAX_CONCURRENCY, " 64 "),
            (KEY_MAX_RPS, "2.5"),
            (KEY_LOG_FORMAT, "Text"),
        ])
        .unwrap();
        assert_eq!(c.profile.describe(), "smtp_credentials=off");
        assert_eq!(
            c.event_types.names(),
            ["UserJit", "admin.user.create.success"]
        );
        assert!(c.dry_run);
        assert_eq!(c.max_concurrency, 64);
        assert_eq!(c.max_requests_per_second, Some(2.5));
        assert_eq!(c.log_format, LogFormat::Text);

        for off in ["0", "off", "OFF", "0.0"] {
            let c = config(&[(KEY_MAX_RPS, off)]).unwrap();
            assert_eq!(c.max_requests_per_second, None, "{off}");
        }
        for (v, expected) in [
            ("true", true),
            ("1", true),
            ("Yes", true),
            ("FALSE", false),
            ("0", false),
            ("no", false),
        ] {
            assert_eq!(
                config(&[(KEY_DRY_RUN, v)]).unwrap().dry_run,
                expected,
                "{v}"
            );
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            key_of(&[(KEY_CAPABILITIES, "api_keys=maybe")]),
            KEY_CAPABILITIES
        );
        assert_eq!(key_of(&[(KEY_CAPABILITIES, "bogus=on")]), KEY_CAPABILITIES);
        assert_eq!(key_of(&[(KEY_EVENT_TYPES, "UserJit,,x")]), KEY_EVENT_TYPES);
        assert_eq!(key_of(&[(KEY_EVENT_TYPES, ",")]), KEY_EVENT_TYPES);
        assert_eq!(key_of(&[(KEY_DOMAINS, "idcs-ABC")]), KEY_DOMAINS);
        assert_eq!(
            key_of(&[(KEY_DOMAINS, "x=http://example.com")]),
            KEY_DOMAINS
        );
        assert_eq!(key_of(&[(KEY_DOMAINS, "=https://h")]), KEY_DOMAINS);
        assert_eq!(
            key_of(&[(KEY_DOMAINS, &format!("{NAME},{NAME}"))]),
            KEY_DOMAINS
        );
        assert_eq!(
            key_of(&[(KEY_TEMPLATE, "https://example.com")]),
            KEY_TEMPLATE
        );
        assert_eq!(
            key_of(&[(KEY_TEMPLATE, "http://{domain}.identity.oraclecloud.com")]),
            KEY_TEMPLATE
        );
        assert_eq!(key_of(&[(KEY_DRY_RUN, "maybe")]), KEY_DRY_RUN);
        for bad in ["0", "65", "-1", "four", "1.5"] {
            assert_eq!(
                key_of(&[(KEY_MAX_CONCURRENCY, bad)]),
                KEY_MAX_CONCURRENCY,
                "{bad}"
            );
        }
        for bad in ["-1", "NaN", "inf", "fast", "1e9"] {
            assert_eq!(key_of(&[(KEY_MAX_RPS, bad)]), KEY_MAX_RPS, "{bad}");
        }
        assert_eq!(key_of(&[(KEY_LOG_FORMAT, "yaml")]), KEY_LOG_FORMAT);

        let e = config(&[(KEY_CAPABILITIES, "api_kyes=on")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("CAPABILITIES: entry \"api_kyes=on\": unknown capability"),
            "{e}"
        );
        let e = config(&[(KEY_MAX_CONCURRENCY, "100")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MAX_CONCURRENCY: expected a whole number from 1 to 64, got \"100\""
        );
        let e = config(&[(KEY_DOMAINS, "Default=http://example.com")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DOMAINS: entry \"Default=http://example.com\": domain URL: http is allowed only to \
             a loopback address; use https, got \"http://example.com\""
        );
    }

    #[test]
    fn template_rules() {
        let err = |t: &str| DomainPolicy::new(None, t).unwrap_err();
        assert!(err("https://identity.oraclecloud.com")
            .reason
            .contains("once"));
        assert!(err("https://{domain}.{domain}.example")
            .reason
            .contains("only once"));
        assert!(err("https://{domain}.example/path").reason.contains("path"));
        assert!(err("https://example.com/{domain}").reason.contains("path"));
        assert!(err("https://example.com?d={domain}")
            .reason
            .contains("query"));
        assert!(err("ftp://{domain}.example").reason.contains("https"));
        assert_eq!(err("http://{domain}.example").key, KEY_TEMPLATE);
        // Without {domain}, only a loopback test server is accepted, and it serves every domain.
        assert!(
            err("https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com")
                .reason
                .contains("once")
        );
        let p = DomainPolicy::new(None, "http://127.0.0.1:18080").unwrap();
        assert_eq!(
            p.resolve(NAME),
            DomainDecision::Allowed {
                url: url("http://127.0.0.1:18080")
            }
        );
        assert!(matches!(
            p.resolve("not-a-domain"),
            DomainDecision::Invalid { .. }
        ));

        // The :443 and a trailing slash are normalised away.
        let p = DomainPolicy::new(None, "https://{domain}.identity.oraclecloud.com:443/").unwrap();
        assert_eq!(
            p.resolve(NAME),
            DomainDecision::Allowed {
                url: url(&format!("https://{NAME}.identity.oraclecloud.com"))
            }
        );
        // A regional form with the domain not first in the host.
        let p = DomainPolicy::new(None, "https://auth-{domain}.example:8443").unwrap();
        assert_eq!(
            p.resolve(NAME),
            DomainDecision::Allowed {
                url: url(&format!("https://auth-{NAME}.example:8443"))
            }
        );
    }

    #[test]
    fn unset_domains_allow_any_valid_name_through_the_template() {
        let p = default_policy();
        assert_eq!(
            p.resolve(NAME),
            DomainDecision::Allowed {
                url: url(&format!("https://{NAME}.identity.oraclecloud.com"))
            }
        );
        for bad in [
            "Default",
            "idcs-0123456789ABCDEF0123456789abcdef",
            "evil.example#",
            "",
        ] {
            assert!(
                matches!(p.resolve(bad), DomainDecision::Invalid { .. }),
                "{bad}"
            );
        }
        let DomainDecision::Invalid { reason } = p.resolve(&format!("{NAME} ")) else {
            panic!("trailing space accepted");
        };
        assert!(reason.starts_with("domain name: expected"), "{reason}");
    }

    #[test]
    fn domains_with_names_and_urls() {
        let domains = format!(
            "Default=https://{NAME}.identity.oraclecloud.com:443, {OTHER}, \
             ocid1.domain.oc1..aaaaexample=http://127.0.0.1:8080/"
        );
        let p = DomainPolicy::new(Some(&domains), DEFAULT_TEMPLATE).unwrap();
        assert!(p.has_allow_list());
        assert_eq!(
            p.resolve("Default"),
            DomainDecision::Allowed {
                url: url(&format!("https://{NAME}.identity.oraclecloud.com"))
            }
        );
        assert_eq!(
            p.resolve(OTHER),
            DomainDecision::Allowed {
                url: url(&format!("https://{OTHER}.identity.oraclecloud.com"))
            }
        );
        assert_eq!(
            p.resolve("ocid1.domain.oc1..aaaaexample"),
            DomainDecision::Allowed {
                url: url("http://127.0.0.1:8080")
            }
        );
        // Exact match only, and a valid name not listed is outside the list.
        for outside in ["default", "Default ", NAME, "idcs-nothex", ""] {
            assert_eq!(
                p.resolve(outside),
                DomainDecision::OutsideAllowList,
                "{outside:?}"
            );
        }
    }

    #[test]
    fn reconcile_with_domains_set() {
        let domains = format!("Default=https://{NAME}.identity.oraclecloud.com,{OTHER}");
        let p = DomainPolicy::new(Some(&domains), DEFAULT_TEMPLATE).unwrap();
        let default_url = url(&format!("https://{NAME}.identity.oraclecloud.com"));
        assert_eq!(p.resolve_for_reconcile("Default").unwrap(), default_url);
        assert_eq!(
            p.resolve_for_reconcile(&format!("https://{NAME}.identity.oraclecloud.com:443/"))
                .unwrap(),
            default_url
        );
        assert_eq!(
            p.resolve_for_reconcile(OTHER).unwrap().as_str(),
            format!("https://{OTHER}.identity.oraclecloud.com")
        );
        // A valid name or URL that DOMAINS does not list.
        assert!(p.resolve_for_reconcile(NAME).is_err());
        let e = p
            .resolve_for_reconcile(
                "https://idcs-11111111111111111111111111111111.identity.oraclecloud.com",
            )
            .unwrap_err();
        assert!(e.contains("not one of the URLs in DOMAINS"), "{e}");
        assert!(p.resolve_for_reconcile("http://example.com").is_err());
    }

    #[test]
    fn reconcile_with_domains_unset() {
        let p = default_policy();
        let expected = url(&format!("https://{NAME}.identity.oraclecloud.com"));
        assert_eq!(p.resolve_for_reconcile(NAME).unwrap(), expected);
        assert_eq!(
            p.resolve_for_reconcile(&format!("https://{NAME}.identity.oraclecloud.com/"))
                .unwrap(),
            expected
        );
        for bad in [
            "https://evil.example".to_owned(),
            format!("https://{NAME}.identity.oraclecloud.com.evil.example"),
            format!("https://{NAME}.identity.oraclecloud.com:8443"),
            format!("https://x{NAME}.identity.oraclecloud.com"),
            "https://idcs-0123.identity.oraclecloud.com".to_owned(),
            "http://127.0.0.1:8080".to_owned(),
            "Default".to_owned(),
            "".to_owned(),
        ] {
            assert!(p.resolve_for_reconcile(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_types_select_by_name_id_or_type_tail() {
        let e = EventTypes::parse("UserJit, admin.user.create.success").unwrap();
        assert!(e.selects(Some("userjit"), None, None));
        assert!(e.selects(None, Some("ADMIN.USER.CREATE.SUCCESS"), None));
        assert!(e.selects(None, None, Some("com.oraclecloud.identitysignon.userjit")));
        assert!(e.selects(None, None, Some("UserJit")));
        assert!(!e.selects(None, None, Some("com.oraclecloud.UserJit.other")));
        assert!(!e.selects(
            Some("ListEvents"),
            None,
            Some("com.oraclecloud.Audit.ListEvents")
        ));
        assert!(!e.selects(None, None, None));
        // The full type is not compared, only its last segment.
        assert!(!e.selects(None, None, Some("admin.user.create.success.x")));
        assert!(EventTypes::parse("").is_err());
        assert!(EventTypes::parse("a,").is_err());
        assert!(EventTypes::default().selects(Some("UserJit"), None, None));
    }
}
