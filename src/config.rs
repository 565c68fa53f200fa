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

use crate::decision::credentials::CredentialsMode;
use crate::decision::policy::{Policy, TagNamespace, BAKED_IN, MAX_POLICY_BYTES};
use crate::decision::profile::{parse_switch, split_list, ListError, Profile};
use crate::intake::names::{shown, DomainName, DomainOcid, DomainUrl};
use crate::report::metrics::MetricsConfig;

// The keys of PRODUCT.md's configuration table (fn config keys, read as environment variables).
const KEY_CAPABILITIES: &str = "CAPABILITIES";
const KEY_EVENT_TYPES: &str = "EVENT_TYPES";
const KEY_DOMAINS: &str = "DOMAINS";
const KEY_TEMPLATE: &str = "IDENTITY_DOMAIN_URL_TEMPLATE";
const KEY_DRY_RUN: &str = "DRY_RUN";
const KEY_MAX_CONCURRENCY: &str = "MAX_CONCURRENCY";
const KEY_MAX_RPS: &str = "MAX_REQUESTS_PER_SECOND";
const KEY_LOG_FORMAT: &str = "LOG_FORMAT";
const KEY_POLICY: &str = "POLICY";
const KEY_TAG_NAMESPACE: &str = "TAG_NAMESPACE";
const KEY_BULK: &str = "BULK";
const KEY_BULK_RPS: &str = "BULK_REQUESTS_PER_SECOND";
const KEY_CREDENTIALS: &str = "CREDENTIALS";
/// How a policy file given on the command line is named in errors.
pub const KEY_POLICY_FILE: &str = "--policy";
/// The key that overrides the IAM control plane's endpoint (used to resolve domain OCIDs).
pub const KEY_CONTROL_PLANE: &str = "IDENTITY_CONTROL_PLANE_URL";
/// The function's own invoke endpoint, for reconcile hand-offs.
pub const KEY_INVOKE_ENDPOINT: &str = "FUNCTION_INVOKE_ENDPOINT";
/// The Functions management endpoint the invoke endpoint is resolved from.
pub const KEY_FUNCTIONS_URL: &str = "FUNCTIONS_URL";
/// The most hand-offs one domain's reconcile may chain.
pub const KEY_MAX_HOPS: &str = "RECONCILE_MAX_HOPS";
/// `RECONCILE_MAX_HOPS` unless set.
pub const DEFAULT_MAX_HOPS: u32 = 500;
const MAX_HOPS_LIMIT: u32 = 10_000;

/// Every configuration key PRODUCT.md defines, the ones read by modules that land separately (Bulk,
/// credentials, metrics, tenancy-wide reconcile) included: an environment variable close to one of
/// these but not equal to it gets a warning at start ([`near_misses`]).
pub const KNOWN_KEYS: &[&str] = &[
    KEY_CAPABILITIES,
    KEY_EVENT_TYPES,
    KEY_DOMAINS,
    KEY_TEMPLATE,
    KEY_DRY_RUN,
    KEY_MAX_CONCURRENCY,
    KEY_MAX_RPS,
    KEY_LOG_FORMAT,
    KEY_POLICY,
    KEY_TAG_NAMESPACE,
    KEY_CONTROL_PLANE,
    KEY_BULK,
    KEY_BULK_RPS,
    KEY_CREDENTIALS,
    crate::report::metrics::KEY_COMPARTMENT,
    crate::report::metrics::KEY_NAMESPACE,
    crate::report::metrics::KEY_INGESTION_URL,
    "FUNCTION_INVOKE_ENDPOINT",
    "FUNCTIONS_URL",
    "RECONCILE_MAX_HOPS",
];

/// JIT sign-ins, and user creation as OCI Events (`…identitycontrolplane.createuser`) and its audit
/// record name it.
pub const DEFAULT_EVENT_TYPES: &str = "UserJit,createuser";
/// `IDENTITY_DOMAIN_URL_TEMPLATE` when unset: the commercial realm's domain URLs.
pub const DEFAULT_TEMPLATE: &str = "https://{domain}.identity.oraclecloud.com";
const DEFAULT_MAX_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY_LIMIT: usize = 64;
const DEFAULT_MAX_REQUESTS_PER_SECOND: f64 = 20.0;
/// Below Oracle's 5 `/Bulk` calls a second (and 200 a minute) on every domain type.
const DEFAULT_BULK_REQUESTS_PER_SECOND: f64 = 3.0;
/// Far above any identity domain's published limit; a larger value is surely a typo.
const MAX_REQUESTS_PER_SECOND_LIMIT: f64 = 10_000.0;
/// Below this a cap is surely a mistake (one request every ten seconds), and tiny values would
/// make the request spacing overflow.
const MIN_REQUESTS_PER_SECOND: f64 = 0.1;

const PLACEHOLDER: &str = "{domain}";
/// Substituted into the template at start to prove it yields a valid URL.
const SAMPLE_DOMAIN: &str = "idcs-0123456789abcdef0123456789abcdef";

/// A configuration key and why its value was refused. Display: `KEY: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The configuration key (or `--policy`) whose value was refused.
    pub key: &'static str,
    /// Why, quoting the offending part of the value.
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

/// `LOG_FORMAT`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for the OCI Logging service (the default).
    Json,
    /// Human-readable lines, for a terminal.
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

    /// The configured names, in the order given.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl Default for EventTypes {
    fn default() -> Self {
        Self(DEFAULT_EVENT_TYPES.split(',').map(str::to_owned).collect())
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

/// Where a domain's URL comes from: known already, or to be asked of the IAM control plane.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainRoute {
    /// The domain's base URL, from `DOMAINS` or the URL template.
    Url(DomainUrl),
    /// A domain OCID whose URL `GetDomain` gives.
    Ocid(DomainOcid),
}

impl DomainRoute {
    /// The URL, when it is known without asking the control plane.
    pub fn url(&self) -> Option<&DomainUrl> {
        match self {
            Self::Url(url) => Some(url),
            Self::Ocid(_) => None,
        }
    }
}

/// Which identity domains the function may act in, and their URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPolicy {
    template: Template,
    /// `None`: DOMAINS unset, any valid domain name through the template and any domain OCID
    /// through the control plane.
    allowed: Option<Vec<(String, DomainRoute)>>,
}

/// What [`DomainPolicy::resolve`] decided for a record's domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainDecision {
    /// Allowed, with its URL known.
    Allowed {
        /// The domain's base URL.
        url: DomainUrl,
    },
    /// Allowed; the URL is the control plane's answer for this OCID.
    Resolve {
        /// The domain OCID to resolve.
        ocid: DomainOcid,
    },
    /// `DOMAINS` is set and lists no such domain: the record is `ignored`.
    OutsideAllowList,
    /// Not a usable domain value (only when `DOMAINS` is unset).
    Invalid {
        /// What is wrong with the value.
        reason: String,
    },
}

impl DomainDecision {
    fn from_route(route: &DomainRoute) -> Self {
        match route {
            DomainRoute::Url(url) => Self::Allowed { url: url.clone() },
            DomainRoute::Ocid(ocid) => Self::Resolve { ocid: ocid.clone() },
        }
    }
}

/// The domain fields of a record (`data.additionalDetails`), empty strings already dropped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DomainFields<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) id: Option<&'a str>,
    pub(crate) display_name: Option<&'a str>,
}

impl<'a> DomainFields<'a> {
    /// The present values in the order they are tried: name, id, display name.
    fn present(&self) -> impl Iterator<Item = &'a str> {
        [self.name, self.id, self.display_name]
            .into_iter()
            .flatten()
    }
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

    /// Decides for a record's domain fields (PRODUCT.md "Which records act, on whom"), returning
    /// the value the decision rests on. With DOMAINS set, the first field (name, id, display name)
    /// that equals an entry's name picks the entry. Without it, a valid `idcs-` name gives the
    /// template's URL, else a domain OCID in the id is resolved; anything else is invalid, and
    /// the reason is about the first value present.
    pub(crate) fn route(&self, fields: DomainFields<'_>) -> (Option<String>, DomainDecision) {
        let first = fields.present().next().map(str::to_owned);
        match &self.allowed {
            Some(list) => fields
                .present()
                .find_map(|value| {
                    list.iter()
                        .find(|(name, _)| name == value)
                        .map(|(_, route)| {
                            (Some(value.to_owned()), DomainDecision::from_route(route))
                        })
                })
                .unwrap_or((first, DomainDecision::OutsideAllowList)),
            None => {
                if let Some(name) = fields.name.filter(|n| DomainName::parse(n).is_ok()) {
                    return (Some(name.to_owned()), self.resolve(name));
                }
                if let Some(id) = fields.id {
                    if let Ok(ocid) = DomainOcid::parse(id) {
                        return (Some(id.to_owned()), DomainDecision::Resolve { ocid });
                    }
                }
                let decision = match (fields.name, fields.id) {
                    (None, Some(id)) => DomainDecision::Invalid {
                        reason: DomainOcid::parse(id)
                            .err()
                            .map_or_else(String::new, |e| e.to_string()),
                    },
                    _ => match &first {
                        Some(value) => self.resolve(value),
                        None => DomainDecision::Invalid {
                            reason: "no domain".to_owned(),
                        },
                    },
                };
                (first, decision)
            }
        }
    }

    /// Decides for one domain value (compared exactly, no trimming or case folding). Without
    /// DOMAINS, only an `idcs-` name is accepted here; a record's fields may also name an OCID.
    pub fn resolve(&self, domain_value: &str) -> DomainDecision {
        match &self.allowed {
            Some(list) => match list.iter().find(|(name, _)| name == domain_value) {
                Some((_, route)) => DomainDecision::from_route(route),
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

    /// For reconcile requests: `s` is a configured name (as for [`resolve`](Self::resolve)), a
    /// domain OCID, or a URL that must equal one of the allowed URLs. With DOMAINS unset, any
    /// domain OCID is resolved, and a URL is accepted when it is exactly what the template gives
    /// for some valid domain name, or, when the template itself points at a loopback address, any
    /// loopback URL.
    pub fn resolve_for_reconcile(&self, s: &str) -> Result<DomainRoute, String> {
        match self.resolve(s) {
            DomainDecision::Allowed { url } => return Ok(DomainRoute::Url(url)),
            DomainDecision::Resolve { ocid } => return Ok(DomainRoute::Ocid(ocid)),
            DomainDecision::OutsideAllowList | DomainDecision::Invalid { .. } => {}
        }
        if let Ok(ocid) = DomainOcid::parse(s) {
            return match &self.allowed {
                Some(_) => Err(format!("{} is not listed in DOMAINS", shown(s))),
                None => Ok(DomainRoute::Ocid(ocid)),
            };
        }
        let url = DomainUrl::parse(s).map_err(|e| match &self.allowed {
            Some(_) => format!(
                "{} is neither a name in DOMAINS nor a valid URL ({e})",
                shown(s)
            ),
            None => format!(
                "{} is neither a valid domain name, a domain OCID nor a valid URL ({e})",
                shown(s)
            ),
        })?;
        match &self.allowed {
            Some(list) => list
                .iter()
                .find(|(_, allowed)| *allowed == DomainRoute::Url(url.clone()))
                .map(|(_, allowed)| allowed.clone())
                .ok_or_else(|| {
                    format!("{} is not one of the URLs in DOMAINS", shown(url.as_str()))
                }),
            None => {
                if self.template.name_for(&url).is_some()
                    || (self.template.loopback && url.is_loopback())
                {
                    Ok(DomainRoute::Url(url))
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

    /// True when some DOMAINS entry is a bare OCID, so the control plane is needed.
    pub fn needs_control_plane(&self) -> bool {
        self.allowed
            .iter()
            .flatten()
            .any(|(_, route)| matches!(route, DomainRoute::Ocid(_)))
    }

    /// True when DOMAINS was given.
    pub fn has_allow_list(&self) -> bool {
        self.allowed.is_some()
    }
}

fn parse_domains(
    list: &str,
    template: &Template,
) -> Result<Vec<(String, DomainRoute)>, ConfigError> {
    let err = |reason: String| ConfigError::new(KEY_DOMAINS, reason);
    let mut allowed: Vec<(String, DomainRoute)> = Vec::new();
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
                (name.to_owned(), DomainRoute::Url(url))
            }
            None if entry.starts_with("ocid1.") => {
                let ocid = DomainOcid::parse(entry)
                    .map_err(|e| err(format!("entry {}: {e}", shown(entry))))?;
                (entry.to_owned(), DomainRoute::Ocid(ocid))
            }
            None => {
                let name = DomainName::parse(entry).map_err(|e| {
                    err(format!(
                        "entry {}: expected idcs-<32 hex>, a domain OCID or NAME=URL ({e})",
                        shown(entry)
                    ))
                })?;
                let url = template
                    .url_for(&name)
                    .map_err(|e| ConfigError::new(KEY_TEMPLATE, e))?;
                (name.as_str().to_owned(), DomainRoute::Url(url))
            }
        };
        if allowed.iter().any(|(known, _)| *known == name) {
            return Err(err(format!("{} is listed more than once", shown(&name))));
        }
        allowed.push((name, url));
    }
    Ok(allowed)
}

/// A policy read from a file named on the command line (`--policy FILE`), which replaces both the
/// baked-in policy and `POLICY`.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// The path as given, for error messages.
    path: String,
    /// The file's contents.
    text: String,
}

impl PolicyFile {
    /// Reads the file; too large or unreadable is a configuration error.
    pub fn read(path: &std::path::Path) -> Result<Self, ConfigError> {
        let shown_path = path.display().to_string();
        let err =
            |reason: String| ConfigError::new(KEY_POLICY_FILE, format!("{shown_path}: {reason}"));
        // Read at most one byte past the limit: a policy path pointing at a device or a huge file
        // must not fill memory before it is refused.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                use std::io::Read;
                f.take(MAX_POLICY_BYTES as u64 + 1).read_to_end(&mut bytes)
            })
            .map_err(|e| err(format!("cannot read it ({e})")))?;
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(err(format!(
                "is larger than the limit of {MAX_POLICY_BYTES} bytes"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text".into()))?;
        Ok(Self {
            path: shown_path,
            text,
        })
    }
}

/// Everything the function needs from its configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which profile each user gets: the baked-in file, `POLICY` or `--policy`, with `CAPABILITIES`
    /// as its default when set and `TAG_NAMESPACE` for per-user tags.
    pub policy: Policy,
    /// `EVENT_TYPES`: which records act.
    pub event_types: EventTypes,
    /// `DOMAINS` and `IDENTITY_DOMAIN_URL_TEMPLATE`: where the function may act, and the URLs.
    pub domains: DomainPolicy,
    /// `DRY_RUN`: read and decide, but write nothing.
    pub dry_run: bool,
    /// 1..=64.
    pub max_concurrency: usize,
    /// `None` when disabled ("0" or "off").
    pub max_requests_per_second: Option<f64>,
    /// `BULK` and `BULK_REQUESTS_PER_SECOND`.
    pub bulk: BulkSettings,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// IDENTITY_CONTROL_PLANE_URL; unset means the region's default (see
    /// `control_plane::default_url`).
    pub control_plane_url: Option<DomainUrl>,
    /// FUNCTION_INVOKE_ENDPOINT, checked by `clients::functions::invoke_endpoint`; unset: resolved
    /// from FUNCTIONS_URL.
    pub invoke_endpoint: Option<DomainUrl>,
    /// FUNCTIONS_URL; unset means `https://functions.{region}.oci.oraclecloud.com`.
    pub functions_url: Option<DomainUrl>,
    /// RECONCILE_MAX_HOPS: 1..=10000.
    pub max_hops: u32,
    /// `CREDENTIALS`: report (the default), revoke or never read lingering credentials.
    pub credentials: CredentialsMode,
    /// `METRICS_COMPARTMENT_ID`, `METRICS_NAMESPACE`, `MONITORING_INGESTION_URL`: where each
    /// invocation's counts go in OCI Monitoring; `None` posts no metrics.
    pub metrics: Option<MetricsConfig>,
}

impl Config {
    /// Reads the keys of PRODUCT.md's table through `lookup` (the environment in production, a
    /// closure in tests). An empty or all-whitespace value counts as unset (but for `CAPABILITIES` and
    /// `EVENT_TYPES`, where it is an error); other values have
    /// surrounding ASCII whitespace removed. The first invalid key is reported.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::load(lookup, None)
    }

    /// [`from_lookup`](Self::from_lookup), with the policy taken from `policy_file` when given.
    pub fn load(
        lookup: &dyn Fn(&str) -> Option<String>,
        policy_file: Option<&PolicyFile>,
    ) -> Result<Self, ConfigError> {
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
        let capabilities = match get(KEY_CAPABILITIES) {
            Some(v) => Some(
                Profile::parse(&v)
                    .map_err(|e| ConfigError::new(KEY_CAPABILITIES, e.to_string()))?,
            ),
            None => None,
        };
        let tag_namespace = match get(KEY_TAG_NAMESPACE) {
            Some(v) => {
                Some(TagNamespace::parse(&v).map_err(|e| ConfigError::new(KEY_TAG_NAMESPACE, e))?)
            }
            None => None,
        };
        let env_policy = get(KEY_POLICY);
        let (key, prefix, text) = match (policy_file, &env_policy) {
            (Some(file), _) => (
                KEY_POLICY_FILE,
                format!("{}: ", file.path),
                file.text.as_str(),
            ),
            (None, Some(text)) => (KEY_POLICY, String::new(), text.as_str()),
            // The baked-in file is checked by a unit test; it is parsed like any other.
            (None, None) => (KEY_POLICY, "the baked-in policy: ".to_owned(), BAKED_IN),
        };
        let policy = Policy::parse(text, capabilities, tag_namespace)
            .map_err(|e| ConfigError::new(key, format!("{prefix}{e}")))?;
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
            Some(v) => parse_rate(KEY_MAX_RPS, &v)?,
            None => Some(DEFAULT_MAX_REQUESTS_PER_SECOND),
        };
        let bulk = BulkSettings::load(&get)?;
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
        let control_plane_url = get(KEY_CONTROL_PLANE)
            .map(|v| {
                DomainUrl::parse(&v).map_err(|e| {
                    ConfigError::new(
                        KEY_CONTROL_PLANE,
                        e.to_string().replacen("domain URL", "URL", 1),
                    )
                })
            })
            .transpose()?;
        let url_key = |key: &'static str| {
            get(key)
                .map(|v| {
                    DomainUrl::parse(&v).map_err(|e| {
                        ConfigError::new(key, e.to_string().replacen("domain URL", "URL", 1))
                    })
                })
                .transpose()
        };
        let invoke_endpoint = url_key(KEY_INVOKE_ENDPOINT)?;
        if let Some(url) = &invoke_endpoint {
            crate::intake::names::check_invoke_endpoint(url, url.is_loopback())
                .map_err(|reason| ConfigError::new(KEY_INVOKE_ENDPOINT, reason))?;
        }
        let functions_url = url_key(KEY_FUNCTIONS_URL)?;
        let max_hops = match get(KEY_MAX_HOPS) {
            None => DEFAULT_MAX_HOPS,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_HOPS_LIMIT).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        KEY_MAX_HOPS,
                        format!(
                            "expected a whole number from 1 to {MAX_HOPS_LIMIT}, got {}",
                            shown(&v)
                        ),
                    )
                })?,
        };
        let credentials = match get(KEY_CREDENTIALS) {
            Some(v) => CredentialsMode::parse(&v).ok_or_else(|| {
                ConfigError::new(
                    KEY_CREDENTIALS,
                    format!("expected report, revoke or off, got {}", shown(&v)),
                )
            })?,
            None => CredentialsMode::default(),
        };

        let metrics = MetricsConfig::from_lookup(lookup)?;

        Ok(Self {
            policy,
            event_types,
            domains,
            dry_run,
            max_concurrency,
            max_requests_per_second,
            bulk,
            log_format,
            control_plane_url,
            invoke_endpoint,
            functions_url,
            max_hops,
            credentials,
            metrics,
        })
    }
}

/// `BULK=auto`: read a batch's users with `.search` and write them with `/Bulk`, per domain, falling
/// back to single requests where a domain refuses them; `BULK=off`: one GET and one PUT per user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkSettings {
    /// `BULK`: `true` for `auto`.
    pub enabled: bool,
    /// `BULK_REQUESTS_PER_SECOND`: the ceiling of `/Bulk` calls per domain; `None` when off.
    pub requests_per_second: Option<f64>,
}

impl Default for BulkSettings {
    fn default() -> Self {
        BulkSettings {
            enabled: true,
            requests_per_second: Some(DEFAULT_BULK_REQUESTS_PER_SECOND),
        }
    }
}

impl BulkSettings {
    fn load(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let enabled = match get(KEY_BULK) {
            Some(v) if v.eq_ignore_ascii_case("auto") => true,
            Some(v) if v.eq_ignore_ascii_case("off") => false,
            Some(v) => {
                return Err(ConfigError::new(
                    KEY_BULK,
                    format!("expected auto or off, got {}", shown(&v)),
                ))
            }
            None => true,
        };
        let requests_per_second = match get(KEY_BULK_RPS) {
            Some(v) => parse_rate(KEY_BULK_RPS, &v)?,
            None => Some(DEFAULT_BULK_REQUESTS_PER_SECOND),
        };
        Ok(BulkSettings {
            enabled,
            requests_per_second,
        })
    }
}

fn parse_rate(key: &'static str, v: &str) -> Result<Option<f64>, ConfigError> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(r) if (MIN_REQUESTS_PER_SECOND..=MAX_REQUESTS_PER_SECOND_LIMIT).contains(&r) => {
            Ok(Some(r))
        }
        _ => Err(ConfigError::new(
            key,
            format!(
                "expected a number from {MIN_REQUESTS_PER_SECOND} to {MAX_REQUESTS_PER_SECOND_LIMIT}, \
                 or 0/off to disable, got {}",
                shown(v)
            ),
        )),
    }
}

/// An environment variable that looks like a configuration key but is not one: `found` is ignored,
/// `meant` is probably what the operator wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearMiss {
    /// The variable's name as set.
    pub found: String,
    /// The key it is closest to.
    pub meant: &'static str,
}

impl std::fmt::Display for NearMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not a configuration key and is ignored; did you mean {}?",
            shown(&self.found),
            self.meant
        )
    }
}

/// The variables among `names` that are near one of [`KNOWN_KEYS`] without being one: the same
/// key in another case, singular for plural (`CAPABILITY`, `EVENT_TYPE`), `-` for `_`, or a key one
/// edit away (two for keys of 8 characters or more; short keys only by case, so `BUILD` is never
/// taken for `BULK`). Names of the platform (`FN_…`, `OCI_…`) are never flagged.
pub fn near_misses<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<NearMiss> {
    names
        .into_iter()
        .filter(|name| !KNOWN_KEYS.contains(name))
        .filter(|name| !name.starts_with("FN_") && !name.starts_with("OCI_"))
        .filter_map(|name| {
            let meant = nearest_key(name)?;
            Some(NearMiss {
                found: name.to_owned(),
                meant,
            })
        })
        .collect()
}

fn nearest_key(name: &str) -> Option<&'static str> {
    let folded = fold_key(name);
    if let Some(key) = KNOWN_KEYS.iter().find(|k| fold_key(k) == folded) {
        return Some(key);
    }
    let upper = name.to_ascii_uppercase().replace('-', "_");
    KNOWN_KEYS
        .iter()
        .filter_map(|k| {
            let allowed = match k.len() {
                0..=4 => 0,
                5..=7 => 1,
                _ => 2,
            };
            let d = edit_distance(upper.as_bytes(), k.as_bytes());
            (d <= allowed).then_some((d, *k))
        })
        .min()
        .map(|(_, k)| k)
}

/// Upper case, `-` as `_`, and the plural's ending dropped (`CAPABILITIES` → `CAPABILITY`,
/// `EVENT_TYPES` → `EVENT_TYPE`), so case and number never hide a key.
fn fold_key(name: &str) -> String {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    if let Some(stem) = upper.strip_suffix("IES") {
        format!("{stem}Y")
    } else if let Some(stem) = upper.strip_suffix('S') {
        stem.to_owned()
    } else {
        upper
    }
}

/// Edits (insert, delete, substitute, swap of neighbours) between `a` and `b`.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
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

    #[test]
    fn bulk_is_auto_by_default_with_its_own_rate() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bulk, BulkSettings::default());
        assert!(c.bulk.enabled);
        assert_eq!(c.bulk.requests_per_second, Some(3.0));
        let c = config(&[(KEY_BULK, "OFF"), (KEY_BULK_RPS, "4.5")]).unwrap();
        assert!(!c.bulk.enabled);
        assert_eq!(c.bulk.requests_per_second, Some(4.5));
        assert!(config(&[(KEY_BULK, "auto")]).unwrap().bulk.enabled);
        assert_eq!(
            config(&[(KEY_BULK_RPS, "off")])
                .unwrap()
                .bulk
                .requests_per_second,
            None
        );
        assert_eq!(key_of(&[(KEY_BULK, "on")]), KEY_BULK);
        for bad in ["-1", "0.01", "lots", "20000"] {
            let e = config(&[(KEY_BULK_RPS, bad)]).unwrap_err();
            assert_eq!(e.key, KEY_BULK_RPS, "{bad}");
        }
    }

    fn default_policy() -> DomainPolicy {
        DomainPolicy::new(None, DEFAULT_TEMPLATE).unwrap()
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.policy.default, Profile::default());
        assert_eq!(c.event_types.names(), ["UserJit", "createuser"]);
        assert_eq!(c.control_plane_url, None);
        assert!(!c.domains.has_allow_list());
        assert!(!c.dry_run);
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.max_requests_per_second, Some(20.0));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.credentials, CredentialsMode::Report);
    }

    #[test]
    fn credentials_mode_is_read_and_checked() {
        for (v, mode) in [
            ("report", CredentialsMode::Report),
            (" Revoke ", CredentialsMode::Revoke),
            ("OFF", CredentialsMode::Off),
        ] {
            assert_eq!(config(&[(KEY_CREDENTIALS, v)]).unwrap().credentials, mode);
        }
        let err = config(&[(KEY_CREDENTIALS, "delete")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CREDENTIALS: expected report, revoke or off, got \"delete\""
        );
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
            KEY_POLICY,
            KEY_TAG_NAMESPACE,
            KEY_CREDENTIALS,
        ];
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, "")).collect();
        let c = config(&pairs).unwrap();
        assert_eq!(c.policy, Policy::default());
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
        assert_eq!(c.policy.default.describe(), "smtp_credentials=off");
        assert_eq!(
            c.event_types.names(),
            ["UserJit", "admin.user.create.success"]
        );
        assert!(c.dry_run);
        assert_eq!(c.max_concurrency, 64);
        assert_eq!(c.max_requests_per_second, Some(2.5));
        for edge in [("0.1", 0.1), ("10000", 10_000.0)] {
            let c = config(&[(KEY_MAX_RPS, edge.0)]).unwrap();
            assert_eq!(c.max_requests_per_second, Some(edge.1), "{}", edge.0);
        }
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
        for bad in [
            "-1", "NaN", "inf", "fast", "1e9", "1e-20", "0.09", "-0.5", "10000.5",
        ] {
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
    fn policy_key_file_capabilities_and_tag_namespace() {
        let text = "default = \"api_keys=off\"\n[[rule]]\nname = \"dev\"\ngroups = [\"Developers\"]\ncapabilities = \"api_keys=on\"\n";
        let c = config(&[(KEY_POLICY, text), (KEY_TAG_NAMESPACE, "Security")]).unwrap();
        assert_eq!(c.policy.default.describe(), "api_keys=off");
        assert_eq!(c.policy.rules.len(), 1);
        assert_eq!(
            c.policy.tag_namespace.as_ref().map(|t| t.as_str()),
            Some("Security")
        );
        // CAPABILITIES replaces the policy's default, whichever policy it is.
        let c = config(&[
            (KEY_POLICY, text),
            (KEY_CAPABILITIES, "smtp_credentials=off"),
        ])
        .unwrap();
        assert_eq!(c.policy.default.describe(), "smtp_credentials=off");
        assert_eq!(c.policy.rules.len(), 1);
        // A file named on the command line wins over POLICY.
        let file = PolicyFile {
            path: "p.toml".into(),
            text: "default = \"db_credentials=off\"".into(),
        };
        let map = |k: &str| (k == KEY_POLICY).then(|| text.to_owned());
        let c = Config::load(&map, Some(&file)).unwrap();
        assert_eq!(c.policy.default.describe(), "db_credentials=off");
        assert!(c.policy.rules.is_empty());

        let e = config(&[(
            KEY_POLICY,
            "default = \"api_keys=on\"\n[[rule]]\nname = \"dev\"\ncapabilities = \"api_keys=on\"\n",
        )])
        .unwrap_err();
        assert_eq!(e.key, KEY_POLICY);
        assert_eq!(e.to_string(), "POLICY: rule \"dev\": has no matcher: give users, groups, domains, federated or service_user");
        let bad = PolicyFile {
            path: "p.toml".into(),
            text: "default = 1".into(),
        };
        let e = Config::load(&|_| None, Some(&bad)).unwrap_err();
        assert_eq!(e.key, KEY_POLICY_FILE);
        assert!(
            e.to_string()
                .starts_with("--policy: p.toml: default: invalid type"),
            "{e}"
        );
        assert_eq!(key_of(&[(KEY_TAG_NAMESPACE, "a b")]), KEY_TAG_NAMESPACE);
        // CAPABILITIES is checked first, and named.
        assert_eq!(
            key_of(&[(KEY_POLICY, "x"), (KEY_CAPABILITIES, "bogus=on")]),
            KEY_CAPABILITIES
        );
    }

    #[test]
    fn policy_files_are_read_within_a_limit() {
        let dir = std::env::temp_dir().join(format!("policy-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "default = \"api_keys=off\"\n").unwrap();
        assert_eq!(
            PolicyFile::read(&ok).unwrap().text,
            "default = \"api_keys=off\"\n"
        );
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_POLICY_BYTES + 1]).unwrap();
        let e = PolicyFile::read(&big).unwrap_err();
        assert_eq!(e.key, KEY_POLICY_FILE);
        assert!(e.reason.contains("larger than the limit"), "{e}");
        let e = PolicyFile::read(&dir.join("missing.toml")).unwrap_err();
        assert!(e.reason.contains("missing.toml: cannot read it"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
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
    fn domains_with_ocids_and_the_control_plane_url() {
        let ocid = "ocid1.domain.oc1..aaaaaaaaexampledomain";
        let p = DomainPolicy::new(Some(&format!("{ocid}, {NAME}")), DEFAULT_TEMPLATE).unwrap();
        assert!(p.needs_control_plane());
        assert_eq!(
            p.resolve(ocid),
            DomainDecision::Resolve {
                ocid: DomainOcid::parse(ocid).unwrap()
            }
        );
        assert_eq!(
            p.resolve_for_reconcile(ocid).unwrap(),
            DomainRoute::Ocid(DomainOcid::parse(ocid).unwrap())
        );
        // An OCID not listed is refused for reconcile; any OCID is resolved without DOMAINS.
        let e = p
            .resolve_for_reconcile("ocid1.domain.oc1..other")
            .unwrap_err();
        assert!(e.contains("not listed in DOMAINS"), "{e}");
        assert!(matches!(
            default_policy().resolve_for_reconcile("ocid1.domain.oc1..other"),
            Ok(DomainRoute::Ocid(_))
        ));
        // OCID=URL needs no control plane.
        let p = DomainPolicy::new(
            Some(&format!("{ocid}=https://{NAME}.identity.oraclecloud.com")),
            DEFAULT_TEMPLATE,
        )
        .unwrap();
        assert!(!p.needs_control_plane());
        let e = config(&[(KEY_DOMAINS, "ocid1.domain.oc1..BAD")]).unwrap_err();
        assert_eq!(e.key, KEY_DOMAINS);
        assert!(e.reason.contains("domain OCID: expected"), "{e}");

        let c = config(&[(
            KEY_CONTROL_PLANE,
            "https://identity.us-ashburn-1.oci.oraclecloud.com/",
        )])
        .unwrap();
        assert_eq!(
            c.control_plane_url.unwrap().as_str(),
            "https://identity.us-ashburn-1.oci.oraclecloud.com"
        );
        assert!(config(&[(KEY_CONTROL_PLANE, "http://127.0.0.1:9000")]).is_ok());
        for bad in [
            "http://identity.example.com",
            "https://h/20160918",
            "ftp://h",
            "x",
        ] {
            assert_eq!(
                key_of(&[(KEY_CONTROL_PLANE, bad)]),
                KEY_CONTROL_PLANE,
                "{bad}"
            );
        }
    }

    #[test]
    fn reconcile_with_domains_set() {
        let domains = format!("Default=https://{NAME}.identity.oraclecloud.com,{OTHER}");
        let p = DomainPolicy::new(Some(&domains), DEFAULT_TEMPLATE).unwrap();
        let default_url = url(&format!("https://{NAME}.identity.oraclecloud.com"));
        assert_eq!(
            p.resolve_for_reconcile("Default").unwrap(),
            DomainRoute::Url(default_url.clone())
        );
        assert_eq!(
            p.resolve_for_reconcile(&format!("https://{NAME}.identity.oraclecloud.com:443/"))
                .unwrap(),
            DomainRoute::Url(default_url)
        );
        assert_eq!(
            p.resolve_for_reconcile(OTHER)
                .unwrap()
                .url()
                .unwrap()
                .as_str(),
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
        assert_eq!(
            p.resolve_for_reconcile(NAME).unwrap(),
            DomainRoute::Url(expected.clone())
        );
        assert_eq!(
            p.resolve_for_reconcile(&format!("https://{NAME}.identity.oraclecloud.com/"))
                .unwrap(),
            DomainRoute::Url(expected)
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

    #[test]
    fn hand_off_keys() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.invoke_endpoint, c.functions_url, c.max_hops),
            (None, None, DEFAULT_MAX_HOPS)
        );
        let c = config(&[
            (
                KEY_INVOKE_ENDPOINT,
                "https://abc123.us-ashburn-1.functions.oci.oraclecloud.com",
            ),
            (KEY_FUNCTIONS_URL, "http://127.0.0.1:9000"),
            (KEY_MAX_HOPS, "7"),
        ])
        .unwrap();
        assert_eq!(c.max_hops, 7);
        assert!(c.invoke_endpoint.is_some() && c.functions_url.is_some());
        for (key, bad) in [
            (KEY_INVOKE_ENDPOINT, "https://evil.example"),
            (
                KEY_INVOKE_ENDPOINT,
                "https://oci.oraclecloud.com.evil.example",
            ),
            (KEY_INVOKE_ENDPOINT, "http://functions.oci.oraclecloud.com"),
            (KEY_FUNCTIONS_URL, "ftp://x"),
            (KEY_MAX_HOPS, "0"),
            (KEY_MAX_HOPS, "10001"),
            (KEY_MAX_HOPS, "many"),
        ] {
            assert_eq!(key_of(&[(key, bad)]), key, "{bad}");
        }
    }

    #[test]
    fn near_misses_name_the_key_meant() {
        let names = [
            "CAPABILITY",
            "capabilities",
            "EVENT_TYPE",
            "Event_Types",
            "MAX_CONCURENCY",
            "DRYRUN",
            "DOMAIN",
            "DRY-RUN",
            "LOG_FROMAT",
            "Bulk",
        ];
        let found: Vec<(String, &str)> = near_misses(names)
            .into_iter()
            .map(|m| (m.found, m.meant))
            .collect();
        let expected = [
            KEY_CAPABILITIES,
            KEY_CAPABILITIES,
            KEY_EVENT_TYPES,
            KEY_EVENT_TYPES,
            KEY_MAX_CONCURRENCY,
            KEY_DRY_RUN,
            KEY_DOMAINS,
            KEY_DRY_RUN,
            KEY_LOG_FORMAT,
            "BULK",
        ];
        let expected: Vec<(String, &str)> =
            names.iter().map(|n| n.to_string()).zip(expected).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn keys_and_unrelated_variables_are_not_near_misses() {
        let names = [
            "CAPABILITIES",
            "EVENT_TYPES",
            "PATH",
            "HOME",
            "BUILD",
            "RUST_LOG",
            "FN_FORMAT",
            "FN_LISTENER",
            "OCI_RESOURCE_PRINCIPAL_REGION",
            "POLICY_FILE_PATH",
            "HOSTNAME",
            "SSL_CERT_FILE",
        ];
        assert_eq!(near_misses(names), []);
        assert_eq!(
            NearMiss {
                found: "CAPABILITY".into(),
                meant: KEY_CAPABILITIES
            }
            .to_string(),
            "\"CAPABILITY\" is not a configuration key and is ignored; did you mean CAPABILITIES?"
        );
    }
}
