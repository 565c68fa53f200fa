//! The policy: which capability profile each user gets.
//!
//! A policy is a `default` profile, rules laid over it in file order, and (with `TAG_NAMESPACE`)
//! per-user defined tags laid over the rules. [`Policy::decide`] is a pure function of the facts
//! read about one user ([`UserFacts`]); the batch, reconcile and `plan` all use it, so a user gets
//! the same profile whichever way it is reached.
//!
//! ```
//! use oci_user_capabilities::decision::policy::{Decision, Policy, UserFacts};
//!
//! let policy = Policy::parse(
//!     r#"
//!     default = "api_keys=off,smtp_credentials=off"
//!     [[rule]]
//!     name = "mailers"
//!     groups = ["Mail Senders"]
//!     capabilities = "smtp_credentials=on"
//!     "#,
//!     None,
//!     None,
//! )
//! .unwrap();
//! let user: serde_json::Value = serde_json::json!({
//!     "userName": "relay@example.com",
//!     "groups": [{"value": "5a1c", "display": "mail senders", "type": "indirect"}]
//! });
//! let facts = UserFacts::from_scim(&user, Vec::new()).unwrap();
//! let Decision::Enforce { profile, policy, .. } = policy.decide(&facts) else { panic!() };
//! assert_eq!(profile.describe(), "api_keys=off,smtp_credentials=on");
//! assert_eq!(policy, ["mailers"]);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decision::profile::{parse_switch, Capability, Profile};
use crate::intake::names::shown;

/// The shipped policy, compiled in.
pub const BAKED_IN: &str = include_str!("../../policies/capabilities.toml");
/// Where [`BAKED_IN`] comes from, for messages.
pub const BAKED_IN_NAME: &str = "policies/capabilities.toml";

/// `groups` is `returned: request`: it appears only when named.
pub const GROUPS_ATTRIBUTE: &str = "groups";
const FEDERATED_ATTRIBUTE: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User:isFederatedUser";
const SERVICE_USER_ATTRIBUTE: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User:serviceUser";
/// The user's tags extension (no `:User` suffix, unlike the other extensions).
pub const TAGS_URN: &str = "urn:ietf:params:scim:schemas:oracle:idcs:extension:OCITags";
const DEFINED_TAGS_ATTRIBUTE: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:OCITags:definedTags";
/// The OCID of the domain a user lives in (a readOnly core attribute), asked for when a rule's
/// `domains` names the domain by OCID or display name: a path that knows the domain only by its
/// `idcs-` name learns the rest from it (issue 24).
pub const DOMAIN_OCID_ATTRIBUTE: &str = "domainOcid";

/// A policy larger than this is surely not hand-written.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
const MAX_RULE_NAME_CHARS: usize = 64;
const MAX_VALUE_CHARS: usize = 512;
const MAX_TAG_NAMESPACE_CHARS: usize = 100;
/// The tag key that exempts a user.
const EXEMPT_TAG_KEY: &str = "exempt";
/// What [`Decision::Enforce`] names when neither a rule nor a tag took part.
pub const DEFAULT_DECIDER: &str = "default";

/// A mistake in a policy: where (rule, field) and why. Display: `rule "developers": groups: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// `rule "developers"`, or `rule 3` when the rule has no usable name; `None` at top level.
    pub rule: Option<String>,
    /// The field (or TOML path) at fault, when there is one.
    pub field: Option<String>,
    /// Why it was refused, in words an operator can act on.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    fn top(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            rule: None,
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
}

/// `TAG_NAMESPACE`: the defined-tag namespace whose keys override capabilities per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagNamespace(String);

impl TagNamespace {
    /// 1–100 ASCII letters, digits, `-`, `_` or `.` (OCI's characters for namespace names).
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TAG_NAMESPACE_CHARS
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "expected 1 to {MAX_TAG_NAMESPACE_CHARS} letters, digits, '-', '_' or '.', got {}",
                shown(s)
            ))
        }
    }

    /// The namespace name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Lays these capabilities over the profile so far.
    Capabilities(Profile),
    /// Leaves the user untouched.
    Exempt,
}

/// A `userName` pattern: `*` matches any run of characters; compared ASCII case-insensitively, so a
/// look-alike such as the Kelvin sign (U+212A, which Unicode folds to `k`) never matches `k`: names
/// come from the identity provider, and an exemption must not be reachable by a homoglyph.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The ASCII-lower-cased pattern split at every `*`.
    parts: Vec<String>,
}

impl Pattern {
    fn new(pattern: &str) -> Self {
        Self {
            parts: pattern
                .to_ascii_lowercase()
                .split('*')
                .map(str::to_owned)
                .collect(),
        }
    }

    fn matches(&self, text: &str) -> bool {
        let text = text.to_ascii_lowercase();
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            // No `*`: the whole text must be the pattern.
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }
}

/// One `[[rule]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's `name`, unique ignoring case; reports name the rules that decided.
    pub(crate) name: String,
    users: Vec<Pattern>,
    groups: Vec<String>,
    domains: Vec<String>,
    federated: Option<bool>,
    service_user: Option<bool>,
    action: Action,
}

/// A fact about a user that only a read of the user can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Fact {
    UserName,
    Groups,
    IsFederatedUser,
    ServiceUser,
    DefinedTags,
    /// The user's `domainOcid`, and the display name `GetDomain` gives for it: whether a rule's
    /// `domains` holds when the record names the domain another way.
    DomainOcid,
}

/// Whether a rule applies to a user of whom only the record is known (for `plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prospect {
    Applies,
    CannotApply,
    /// Applies if these facts, read from the domain, say so.
    Depends(Vec<Fact>),
}

impl Rule {
    /// Every matcher the rule has holds (and it has at least one, by construction).
    pub fn matches(&self, facts: &UserFacts) -> bool {
        (self.users.is_empty() || facts.user_name.as_deref().is_some_and(|n| self.users_hold(n)))
            && (self.groups.is_empty() || self.groups_hold(&facts.groups))
            && (self.domains.is_empty() || self.domains_hold(&facts.domains))
            // A user the domain reports nothing for is taken as not federated / not a service user.
            && self
                .federated
                .is_none_or(|want| facts.federated.unwrap_or(false) == want)
            && self
                .service_user
                .is_none_or(|want| facts.service_user.unwrap_or(false) == want)
    }

    /// What can be said from a record alone: its user name (when it gives one) and domain values.
    fn prospect(&self, user_name: Option<&str>, domains: &[String]) -> Prospect {
        let mut pending = Vec::new();
        if !self.users.is_empty() {
            match user_name {
                Some(n) if !self.users_hold(n) => return Prospect::CannotApply,
                Some(_) => {}
                None => pending.push(Fact::UserName),
            }
        }
        if !self.domains.is_empty() && !self.domains_hold(domains) {
            // A kind of name the record does not give is learned from the read (issue 24).
            let known: Vec<&str> = domains.iter().map(|d| domain_value_kind(d)).collect();
            if self
                .domains
                .iter()
                .all(|w| known.contains(&domain_value_kind(w)))
            {
                return Prospect::CannotApply;
            }
            pending.push(Fact::DomainOcid);
        }
        if !self.groups.is_empty() {
            pending.push(Fact::Groups);
        }
        if self.federated.is_some() {
            pending.push(Fact::IsFederatedUser);
        }
        if self.service_user.is_some() {
            pending.push(Fact::ServiceUser);
        }
        if pending.is_empty() {
            Prospect::Applies
        } else {
            Prospect::Depends(pending)
        }
    }

    fn users_hold(&self, user_name: &str) -> bool {
        self.users.iter().any(|p| p.matches(user_name))
    }

    /// A listed value names a group by display name (case-insensitive), id or OCID; every
    /// membership the domain reports counts, direct or indirect.
    fn groups_hold(&self, groups: &[GroupMembership]) -> bool {
        self.groups.iter().any(|wanted| {
            let lower = wanted.to_lowercase();
            groups.iter().any(|g| {
                g.id.as_deref() == Some(wanted.as_str())
                    || g.ocid.as_deref() == Some(wanted.as_str())
                    || g.display
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase() == lower)
            })
        })
    }

    /// Every matcher but `domains` holds.
    fn holds_besides_domains(&self, facts: &UserFacts) -> bool {
        (self.users.is_empty()
            || facts
                .user_name
                .as_deref()
                .is_some_and(|n| self.users_hold(n)))
            && (self.groups.is_empty() || self.groups_hold(&facts.groups))
            && self
                .federated
                .is_none_or(|want| facts.federated.unwrap_or(false) == want)
            && self
                .service_user
                .is_none_or(|want| facts.service_user.unwrap_or(false) == want)
    }

    fn domains_hold(&self, domains: &[String]) -> bool {
        self.domains
            .iter()
            .any(|wanted| domains.iter().any(|d| d.eq_ignore_ascii_case(wanted)))
    }
}

/// Rules described for the posture report (`report`): one line each, in the file's words.
impl Rule {
    /// `developers: groups OCI Developers → api_keys=on,auth_tokens=on`, or `… → exempt`.
    pub fn describe(&self) -> String {
        let mut matchers = Vec::new();
        if !self.users.is_empty() {
            let users: Vec<String> = self.users.iter().map(|p| p.parts.join("*")).collect();
            matchers.push(format!("users {}", users.join(", ")));
        }
        if !self.groups.is_empty() {
            matchers.push(format!("groups {}", self.groups.join(", ")));
        }
        if !self.domains.is_empty() {
            matchers.push(format!("domains {}", self.domains.join(", ")));
        }
        if let Some(f) = self.federated {
            matchers.push(format!("federated = {f}"));
        }
        if let Some(s) = self.service_user {
            matchers.push(format!("service_user = {s}"));
        }
        let action = match &self.action {
            Action::Exempt => "exempt".to_owned(),
            Action::Capabilities(p) => p.describe(),
        };
        format!("{}: {} → {action}", self.name, matchers.join("; "))
    }
}

/// Which optional facts the policy reads, so a read asks for exactly those attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    groups: bool,
    federated: bool,
    service_user: bool,
    tags: bool,
    /// Some rule's `domains` names a domain by OCID or display name.
    domain_ocid: bool,
}

impl Needs {
    /// Whether reads ask for the user's `domainOcid` (a rule's `domains` names a domain by OCID
    /// or display name).
    pub(crate) fn domain_ocid(&self) -> bool {
        self.domain_ocid
    }

    /// The SCIM attribute names to add to a read's `attributes` (which replaces the default set).
    pub(crate) fn attributes(&self) -> Vec<&'static str> {
        [
            (self.groups, GROUPS_ATTRIBUTE),
            (self.federated, FEDERATED_ATTRIBUTE),
            (self.service_user, SERVICE_USER_ATTRIBUTE),
            (self.tags, DEFINED_TAGS_ATTRIBUTE),
            (self.domain_ocid, DOMAIN_OCID_ATTRIBUTE),
        ]
        .into_iter()
        .filter_map(|(needed, attribute)| needed.then_some(attribute))
        .collect()
    }
}

/// The whole policy, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The profile every user starts from (`CAPABILITIES`, else the file's `default`).
    pub default: Profile,
    /// The `[[rule]]`s in file order.
    pub rules: Vec<Rule>,
    /// `TAG_NAMESPACE`: whose defined tags override capabilities per user; `None` reads no tags.
    pub(crate) tag_namespace: Option<TagNamespace>,
}

impl Default for Policy {
    /// The baked-in file; its validity is checked by a unit test, and [`Profile::default`] (the
    /// same profile) stands in should it ever not parse.
    fn default() -> Self {
        Self::parse(BAKED_IN, None, None).unwrap_or(Self {
            default: Profile::default(),
            rules: Vec::new(),
            tag_namespace: None,
        })
    }
}

/// A user's membership of one group, as the domain reports it in `groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupMembership {
    /// `value`: the group's SCIM id.
    id: Option<String>,
    ocid: Option<String>,
    display: Option<String>,
    /// `type`: `direct` or `indirect` (shown in reports; both count).
    kind: Option<String>,
}

/// One entry of the OCITags extension's `definedTags`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DefinedTag {
    namespace: String,
    key: String,
    /// `None` when the value is not a string (null, a number, missing): only a tag of the
    /// configured namespace is ever looked at, and then it is noted as unusable.
    value: Option<String>,
}

/// What the policy may look at for one user. Attributes the read did not ask for are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    user_name: Option<String>,
    /// The domain's name, display name or OCID as the record or reconcile request gave it.
    domains: Vec<String>,
    groups: Vec<GroupMembership>,
    federated: Option<bool>,
    service_user: Option<bool>,
    defined_tags: Vec<DefinedTag>,
}

impl UserFacts {
    /// From a SCIM user resource. Missing attributes are simply absent (SCIM leaves out empty
    /// ones); an attribute of the wrong shape is an error, since the answer is then not the JSON
    /// asked for.
    pub fn from_scim(user: &Value, domains: Vec<String>) -> Result<Self, String> {
        let user_name = user
            .get("userName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let groups = match user.get(GROUPS_ATTRIBUTE) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(group_membership)
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("the user's groups is not a list".into()),
        };
        let extension = match user.get(crate::decision::profile::USER_EXTENSION_URN) {
            None | Some(Value::Null) => None,
            Some(Value::Object(ext)) => Some(ext),
            Some(_) => return Err("the user extension is not an object".into()),
        };
        let flag = |name: &str| match extension.and_then(|e| e.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("the user extension's {name} is not a boolean")),
        };
        let federated = flag("isFederatedUser")?;
        let service_user = flag("serviceUser")?;
        let defined_tags = match user.get(TAGS_URN).map(|t| (t, t.get("definedTags"))) {
            None | Some((Value::Null, _)) | Some((_, None | Some(Value::Null))) => Vec::new(),
            Some((Value::Object(_), Some(Value::Array(tags)))) => {
                tags.iter().filter_map(defined_tag).collect()
            }
            Some(_) => return Err("the user's OCITags definedTags is not a list".into()),
        };
        Ok(Self {
            user_name,
            domains,
            groups,
            federated,
            service_user,
            defined_tags,
        })
    }
}

fn group_membership(item: &Value) -> Result<GroupMembership, String> {
    let Value::Object(g) = item else {
        return Err("an entry of the user's groups is not an object".into());
    };
    let text = |k: &str| g.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(GroupMembership {
        id: text("value"),
        ocid: text("ocid"),
        display: text("display"),
        kind: text("type"),
    })
}

/// One `definedTags` entry; `None` for an entry with no string namespace or key, which no namespace
/// can claim. A tag of another namespace is kept whatever its value and never looked at: only the
/// configured namespace's tags may fail a user's decision, and none does (see [`read_tags`]).
fn defined_tag(item: &Value) -> Option<DefinedTag> {
    let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(DefinedTag {
        namespace: text("namespace")?,
        key: text("key")?,
        value: text("value"),
    })
}

/// What the policy decided for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bring the user to `profile`. `policy` names what decided it (rule names, `tag:<ns>.<key>`,
    /// or `default`); `notes` explain tags that were not used.
    Enforce {
        /// The capabilities to force (default, rules, then tags).
        profile: Profile,
        /// What decided it, in the order it was applied.
        policy: Vec<String>,
        /// Why a tag of the namespace was not used (bad value, a disagreeing tag); may be empty.
        notes: Vec<String>,
    },
    /// Leave the user untouched.
    Exempt {
        /// The rule name or `tag:<ns>.<key>` that exempted the user.
        policy: Vec<String>,
        /// The same, said for the report, e.g. "exempt by rule break-glass".
        reason: String,
    },
}

impl Decision {
    /// What decided it, for the report's `policy` field.
    pub fn policy(&self) -> &[String] {
        match self {
            Decision::Enforce { policy, .. } | Decision::Exempt { policy, .. } => policy,
        }
    }
}

/// The capability a tag key names: a capability name, or Oracle's sample's spelling
/// `o_auth2_client_credentials`; ASCII case-insensitive.
fn capability_for_tag_key(key: &str) -> Option<Capability> {
    if key.eq_ignore_ascii_case("o_auth2_client_credentials") {
        return Some(Capability::OAuth2ClientCredentials);
    }
    Capability::ALL
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(key))
}

/// Tag values use the configuration's one switch syntax (`yes`/`on`/`true`/`1`, `no`/`off`/`false`/`0`).
fn tag_switch(value: &str) -> Option<bool> {
    parse_switch(value.trim())
}

/// The tag overrides for one user: capability → (on, label), exemption, and unusable tags.
struct TagReading {
    exempt: Option<String>,
    overrides: Vec<(Capability, bool, String)>,
    notes: Vec<String>,
}

fn read_tags(namespace: &TagNamespace, tags: &[DefinedTag]) -> TagReading {
    let mut reading = TagReading {
        exempt: None,
        overrides: Vec::new(),
        notes: Vec::new(),
    };
    for tag in tags
        .iter()
        .filter(|t| t.namespace.eq_ignore_ascii_case(namespace.as_str()))
    {
        let label = format!("{namespace}.{}", tag.key);
        let is_exempt_key = tag.key.eq_ignore_ascii_case(EXEMPT_TAG_KEY);
        let capability = capability_for_tag_key(&tag.key);
        if !is_exempt_key && capability.is_none() {
            continue; // other keys of the namespace are not ours
        }
        let Some(on) = tag.value.as_deref().and_then(tag_switch) else {
            let value = tag
                .value
                .as_deref()
                .map_or("that is not text".to_owned(), shown);
            reading.notes.push(format!(
                "tag {label} ignored: value {value} is not yes/on/true or no/off/false"
            ));
            continue;
        };
        match capability {
            None => {
                if on && reading.exempt.is_none() {
                    reading.exempt = Some(label);
                }
            }
            Some(c) => match reading.overrides.iter_mut().find(|(k, _, _)| *k == c) {
                None => reading.overrides.push((c, on, label)),
                // Two tags for one capability that disagree: off wins (least privilege).
                Some(existing) if existing.1 != on => {
                    reading.notes.push(format!(
                        "tags {} and {label} disagree on {c}: off wins",
                        existing.2
                    ));
                    if !on {
                        *existing = (c, on, label);
                    }
                }
                Some(_) => {}
            },
        }
    }
    reading.overrides.sort_by_key(|(c, _, _)| *c);
    reading
}

impl Policy {
    /// Parses and validates a policy. `capabilities` (the `CAPABILITIES` key) replaces the file's `default`; `tag_namespace` is
    /// `TAG_NAMESPACE`.
    pub fn parse(
        text: &str,
        capabilities: Option<Profile>,
        tag_namespace: Option<TagNamespace>,
    ) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                rule: None,
                field: None,
                reason: format!("is {} bytes; the limit is {MAX_POLICY_BYTES}", text.len()),
            });
        }
        let raw: RawPolicy = serde_path_to_error::deserialize(
            toml::de::Deserializer::parse(text).map_err(|e| toml_error(text, &e, String::new()))?,
        )
        .map_err(|e| {
            let mut err = toml_error(text, e.inner(), e.path().to_string());
            if e.path().to_string() == "rule" && rule_is_one_table(text) {
                err.reason = SINGLE_RULE_TABLE.to_owned();
            }
            err
        })?;
        // Without `default`, the product's baked-in profile: a one-line POLICY can then be just
        // `rule = [{...}, {...}]` (TOML allows one key per line).
        let default = match (capabilities, raw.default) {
            (Some(profile), _) => profile,
            (None, Some(spec)) => {
                Profile::parse(&spec).map_err(|e| PolicyError::top("default", e.to_string()))?
            }
            (None, None) => Profile::default(),
        };
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
        for (i, table) in raw.rule.into_iter().enumerate() {
            let rule = Rule::from_table(i + 1, table)?;
            if let Some(earlier) = rules
                .iter()
                .position(|r| r.name.eq_ignore_ascii_case(&rule.name))
            {
                return Err(PolicyError {
                    rule: Some(format!("rule {}", shown(&rule.name))),
                    field: Some("name".into()),
                    reason: format!(
                        "rule {} already uses this name (names must be unique, ignoring case)",
                        earlier + 1
                    ),
                });
            }
            rules.push(rule);
        }
        Ok(Self {
            default,
            rules,
            tag_namespace,
        })
    }

    /// The optional facts this policy reads.
    pub(crate) fn needs(&self) -> Needs {
        let any = |f: fn(&Rule) -> bool| self.rules.iter().any(f);
        Needs {
            groups: any(|r| !r.groups.is_empty()),
            federated: any(|r| r.federated.is_some()),
            service_user: any(|r| r.service_user.is_some()),
            tags: self.tag_namespace.is_some(),
            domain_ocid: any(|r| {
                r.domains
                    .iter()
                    .any(|d| matches!(domain_value_kind(d), "OCID" | "display name"))
            }),
        }
    }

    /// True when some user's decided profile may turn `c` off: the default or a rule does, or a
    /// per-user tag can (any capability, with `TAG_NAMESPACE`).
    pub(crate) fn may_turn_off(&self, c: Capability) -> bool {
        self.default.get(c) == Some(false)
            || self.tag_namespace.is_some()
            || self
                .rules
                .iter()
                .any(|r| matches!(&r.action, Action::Capabilities(p) if p.get(c) == Some(false)))
    }

    /// True when the record alone settles that the user is exempt: an exempt rule applies whatever a
    /// read would say (a matching exempt rule wins over every other rule and tag). Such a user's
    /// read does not ask for credentials.
    pub(crate) fn certainly_exempt(&self, user_name: Option<&str>, domains: &[String]) -> bool {
        self.rules.iter().any(|r| {
            r.action == Action::Exempt && r.prospect(user_name, domains) == Prospect::Applies
        })
    }

    /// Why the decision for `facts` cannot be trusted: a rule whose other matchers hold lists a
    /// domain by a kind of name (OCID, `idcs-` name or display name) that none of the user's known
    /// domain values is, so whether it applies is unknown on this path. `None`: every rule is
    /// decided. A domain value's kind is read from its shape: `ocid1.domain.…` is an OCID,
    /// `idcs-` + 32 hex a name, anything else a display name.
    pub fn undecided_domains(&self, facts: &UserFacts) -> Option<String> {
        let known: Vec<&str> = facts.domains.iter().map(|d| domain_value_kind(d)).collect();
        self.rules
            .iter()
            .filter(|r| !r.domains.is_empty() && !r.domains_hold(&facts.domains))
            .filter(|r| r.holds_besides_domains(facts))
            .find_map(|r| {
                let wanted = r
                    .domains
                    .iter()
                    .find(|w| !known.contains(&domain_value_kind(w)))?;
                Some(format!(
                    "rule {} lists domain {} by {}, and this user's domain is known here only as \
                     {}: the rule cannot be decided, so nothing was written (name the domain in \
                     the rule as the records and reconcile requests name it, or send the \
                     domain's OCID)",
                    r.name,
                    shown(wanted),
                    domain_value_kind(wanted),
                    facts
                        .domains
                        .iter()
                        .map(|d| shown(d))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The profile for one user: `default`, each matching rule's capabilities in file order,
    /// then the user's tags; a matching exempt rule or an `exempt` tag leaves the user alone.
    pub fn decide(&self, facts: &UserFacts) -> Decision {
        let mut profile = self.default;
        let mut policy = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(facts)) {
            match &rule.action {
                Action::Exempt => {
                    return Decision::Exempt {
                        policy: vec![rule.name.clone()],
                        reason: format!("exempt by rule {}", rule.name),
                    }
                }
                Action::Capabilities(over) => {
                    profile = profile.overlaid(over);
                    policy.push(rule.name.clone());
                }
            }
        }
        let mut notes = Vec::new();
        if let Some(namespace) = &self.tag_namespace {
            let tags = read_tags(namespace, &facts.defined_tags);
            if let Some(label) = tags.exempt {
                return Decision::Exempt {
                    policy: vec![format!("tag:{label}")],
                    reason: format!("exempt by tag {label}"),
                };
            }
            for (c, on, label) in tags.overrides {
                profile.set(c, on);
                policy.push(format!("tag:{label}"));
            }
            notes = tags.notes;
        }
        if policy.is_empty() {
            policy.push(DEFAULT_DECIDER.to_owned());
        }
        Decision::Enforce {
            profile,
            policy,
            notes,
        }
    }

    /// What `plan` can say for a record before any read: the rules that could apply, the facts
    /// that would decide, and the decision itself when nothing is left to read.
    pub(crate) fn outlook(&self, user_name: Option<&str>, domains: &[String]) -> Outlook {
        let mut could_apply = Vec::new();
        let mut reads: Vec<Fact> = Vec::new();
        // `default` with the rules already certain to apply, for the PUT body `plan` shows.
        let mut known = self.default;
        for rule in &self.rules {
            let needs = match rule.prospect(user_name, domains) {
                Prospect::CannotApply => continue,
                Prospect::Applies => {
                    if let Action::Capabilities(p) = &rule.action {
                        known = known.overlaid(p);
                    }
                    Vec::new()
                }
                Prospect::Depends(facts) => facts,
            };
            reads.extend(&needs);
            could_apply.push(Candidate {
                rule: rule.name.clone(),
                needs,
                capabilities: match &rule.action {
                    Action::Capabilities(p) => Some(p.describe()),
                    Action::Exempt => None,
                },
                exempt: rule.action == Action::Exempt,
            });
        }
        if self.tag_namespace.is_some() {
            reads.push(Fact::DefinedTags);
        }
        reads.sort();
        reads.dedup();
        // With every candidate certain to apply and no tags to read, the record's facts decide.
        let decided = reads.is_empty().then(|| {
            let certain = UserFacts {
                user_name: user_name.map(str::to_owned),
                domains: domains.to_vec(),
                ..UserFacts::default()
            };
            self.decide(&certain)
        });
        Outlook {
            could_apply,
            reads,
            decided,
            known_profile: known,
        }
    }
}

/// The kind of name a domain value is, read from its shape: `ocid1.domain.…` is an `OCID`,
/// `idcs-` and 32 hex digits a `name`, text with `://` a `URL` (known on every path), anything
/// else a `display name`.
fn domain_value_kind(value: &str) -> &'static str {
    if crate::intake::names::DomainOcid::parse(value).is_ok() {
        "OCID"
    } else if value.contains("://") {
        "URL"
    } else if crate::intake::names::DomainName::parse(value).is_ok() {
        "name"
    } else {
        "display name"
    }
}

/// [`Policy::outlook`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outlook {
    /// The rules that could apply, in file order.
    pub(crate) could_apply: Vec<Candidate>,
    /// The facts a read must bring before the policy can decide (empty when it has decided).
    pub(crate) reads: Vec<Fact>,
    /// The decision, when the record alone settles it; `None` while facts are pending.
    pub(crate) decided: Option<Decision>,
    /// `default` with every rule certain to apply laid over it (tags and pending rules left out).
    pub(crate) known_profile: Profile,
}

/// A rule that could apply to a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    /// The rule's name.
    rule: String,
    /// Facts still to read before it is known to apply (empty: it applies).
    needs: Vec<Fact>,
    /// The capabilities it lays over the profile; `None` for an exempt rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<String>,
    /// True when the rule exempts the user.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    exempt: bool,
}

// The TOML as written. Rules are read as tables first so each error can name its rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<String>,
    #[serde(default)]
    rule: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    users: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    domains: Option<Vec<String>>,
    federated: Option<bool>,
    service_user: Option<bool>,
    capabilities: Option<String>,
    exempt: Option<bool>,
}

/// What to write instead of `[rule]`, the commonest slip in a policy file.
const SINGLE_RULE_TABLE: &str = "written as [rule] (one table); each rule is an entry of an \
     array of tables: write [[rule]] (two brackets) above each rule, or on one line \
     rule = [{name = \"…\", …}, {…}]";

/// True when `text` has `rule` as a single table (`[rule]` or `rule = {…}`), not an array.
fn rule_is_one_table(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("rule").map(toml::Value::is_table))
        .unwrap_or(false)
}

/// One line from a TOML error: the path or line, and the message without the source excerpt.
fn toml_error(text: &str, e: &toml::de::Error, path: String) -> PolicyError {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim().replace('\n', " ");
    let field = match (path.as_str(), line) {
        ("" | ".", Some(line)) => Some(format!("line {line}")),
        ("" | ".", None) => None,
        (path, _) => Some(path.to_owned()),
    };
    PolicyError {
        rule: None,
        field,
        reason: message,
    }
}

impl Rule {
    fn from_table(position: usize, table: toml::Table) -> Result<Self, PolicyError> {
        let label = match table.get("name").and_then(toml::Value::as_str) {
            Some(name) if !name.trim().is_empty() => format!("rule {}", shown(name)),
            _ => format!("rule {position}"),
        };
        let err = |field: &str, reason: String| PolicyError {
            rule: Some(label.clone()),
            field: (!field.is_empty()).then(|| field.to_owned()),
            reason,
        };
        let raw: RawRule = serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            err(&path, e.inner().message().trim().replace('\n', " "))
        })?;
        check_name(&raw.name).map_err(|reason| err("name", reason))?;
        let users = list("users", raw.users).map_err(|(f, r)| err(f, r))?;
        let groups = list("groups", raw.groups).map_err(|(f, r)| err(f, r))?;
        let domains = list("domains", raw.domains).map_err(|(f, r)| err(f, r))?;
        if users.is_empty()
            && groups.is_empty()
            && domains.is_empty()
            && raw.federated.is_none()
            && raw.service_user.is_none()
        {
            return Err(err(
                "",
                "has no matcher: give users, groups, domains, federated or service_user".into(),
            ));
        }
        let capabilities = raw
            .capabilities
            .map(|spec| Profile::parse(&spec))
            .transpose()
            .map_err(|e| err("capabilities", e.to_string()))?;
        let action = match (capabilities, raw.exempt.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(err(
                    "exempt",
                    "exempt = true with capabilities: an exempt user is never changed, so \
                     remove one of them"
                        .into(),
                ))
            }
            (None, true) => Action::Exempt,
            (Some(profile), false) => Action::Capabilities(profile),
            (None, false) => {
                return Err(err(
                    "",
                    "does nothing: give capabilities, or exempt = true".into(),
                ))
            }
        };
        Ok(Rule {
            name: raw.name,
            users: users.iter().map(|p| Pattern::new(p)).collect(),
            groups,
            domains,
            federated: raw.federated,
            service_user: raw.service_user,
            action,
        })
    }
}

/// Rule names appear in reports and log lines and in `exempt by rule <name>`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_RULE_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "expected 1 to {MAX_RULE_NAME_CHARS} letters, digits, '-', '_' or '.', got {}",
            shown(name)
        ));
    }
    if name.eq_ignore_ascii_case(DEFAULT_DECIDER) {
        return Err(format!(
            "{} is reserved: reports use it when no rule matched",
            shown(name)
        ));
    }
    Ok(())
}

/// A matcher list: absent is fine; given, it must list something, and every entry must be a
/// non-empty, reasonably short value without control characters.
fn list(
    field: &'static str,
    values: Option<Vec<String>>,
) -> Result<Vec<String>, (&'static str, String)> {
    let Some(values) = values else {
        return Ok(Vec::new());
    };
    if values.is_empty() {
        return Err((field, "lists nothing; remove it or list a value".into()));
    }
    for (i, v) in values.iter().enumerate() {
        let bad = if v.trim().is_empty() {
            Some("is empty")
        } else if v.chars().count() > MAX_VALUE_CHARS {
            Some("is too long")
        } else if v.chars().any(char::is_control) {
            Some("holds a control character")
        } else if v.trim() != v {
            Some("has leading or trailing spaces")
        } else {
            None
        };
        if let Some(bad) = bad {
            return Err((field, format!("entry {} {bad}", i + 1)));
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        Policy::parse(text, None, None).unwrap_err().to_string()
    }

    const DEFAULT_ALL_OFF: &str = "default = \"api_keys=off,auth_tokens=off,console_password=off,customer_secret_keys=off,db_credentials=off,oauth2_client_credentials=off,smtp_credentials=off\"\n";

    fn user(name: &str) -> UserFacts {
        UserFacts {
            user_name: Some(name.into()),
            ..UserFacts::default()
        }
    }

    fn group(display: &str, id: &str, kind: &str) -> GroupMembership {
        GroupMembership {
            id: Some(id.into()),
            ocid: Some(format!("ocid1.group.oc1..{id}")),
            display: Some(display.into()),
            kind: Some(kind.into()),
        }
    }

    fn enforced(d: &Decision) -> (String, Vec<String>) {
        match d {
            Decision::Enforce {
                profile, policy, ..
            } => (profile.describe(), policy.clone()),
            Decision::Exempt { reason, .. } => panic!("exempt: {reason}"),
        }
    }

    #[test]
    fn baked_in_file_is_the_product_profile_with_no_rules() {
        let p = Policy::parse(BAKED_IN, None, None).unwrap();
        assert_eq!(p.default, Profile::default());
        assert!(p.rules.is_empty());
        assert_eq!(p, Policy::default());
        assert_eq!(p.needs(), Needs::default());
        let d = p.decide(&user("anyone"));
        assert_eq!(
            enforced(&d),
            (Profile::default().describe(), vec!["default".to_string()])
        );
    }

    #[test]
    fn attribute_names_are_the_extension_urns() {
        use crate::decision::profile::USER_EXTENSION_URN;
        assert_eq!(
            FEDERATED_ATTRIBUTE,
            format!("{USER_EXTENSION_URN}:isFederatedUser")
        );
        assert_eq!(
            SERVICE_USER_ATTRIBUTE,
            format!("{USER_EXTENSION_URN}:serviceUser")
        );
        assert_eq!(DEFINED_TAGS_ATTRIBUTE, format!("{TAGS_URN}:definedTags"));
    }

    #[test]
    fn every_example_policy_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policies");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Policy::parse(&text, None, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn capabilities_key_replaces_default_and_default_may_then_be_omitted() {
        let p = Policy::parse(
            "[[rule]]\nname = \"a\"\nusers = [\"x\"]\nexempt = true\n",
            Some(Profile::parse("smtp_credentials=off").unwrap()),
            None,
        )
        .unwrap();
        assert_eq!(p.default.describe(), "smtp_credentials=off");
        let p = Policy::parse(
            BAKED_IN,
            Some(Profile::parse("api_keys=off").unwrap()),
            None,
        )
        .unwrap();
        assert_eq!(p.default.describe(), "api_keys=off");
        assert_eq!(policy(""), Policy::default());
        // One line: rules as an inline array, the default from the product.
        let one_line = policy(
            r#"rule = [{name = "break-glass", users = ["bg-*"], exempt = true}, {name = "dev", groups = ["Dev"], capabilities = "api_keys=on"}]"#,
        );
        assert_eq!(one_line.default, Profile::default());
        assert_eq!(one_line.rules.len(), 2);
        assert_eq!(one_line.rules[1].name, "dev");
    }

    #[test]
    fn mistakes_name_the_rule_and_the_field() {
        let rule = |body: &str| format!("{DEFAULT_ALL_OFF}[[rule]]\n{body}");
        let cases = [
            (
                rule("name = \"dev\"\ngrups = [\"x\"]\ncapabilities = \"api_keys=on\""),
                "rule \"dev\": grups: unknown field `grups`",
            ),
            (
                rule("name = \"dev\"\ngroups = [\"x\"]\ncapabilities = \"api_kyes=on\""),
                "rule \"dev\": capabilities: entry \"api_kyes=on\": unknown capability",
            ),
            (
                rule("name = \"dev\"\ncapabilities = \"api_keys=on\""),
                "rule \"dev\": has no matcher",
            ),
            (
                rule("name = \"dev\"\ngroups = []\ncapabilities = \"api_keys=on\""),
                "rule \"dev\": groups: lists nothing",
            ),
            (
                rule("name = \"dev\"\nusers = [\"\"]\nexempt = true"),
                "rule \"dev\": users: entry 1 is empty",
            ),
            (
                rule("name = \"dev\"\nusers = \"a*\"\nexempt = true"),
                "rule \"dev\": users: invalid type: string \"a*\", expected a sequence",
            ),
            (
                rule("name = \"dev\"\nfederated = \"yes\"\nexempt = true"),
                "rule \"dev\": federated: invalid type: string \"yes\", expected a boolean",
            ),
            (
                rule("name = \"dev\"\nusers = [\"a\"]\nexempt = true\ncapabilities = \"api_keys=on\""),
                "rule \"dev\": exempt: exempt = true with capabilities",
            ),
            (
                rule("name = \"dev\"\nusers = [\"a\"]"),
                "rule \"dev\": does nothing",
            ),
            (
                rule("users = [\"a\"]\nexempt = true"),
                "rule 1: missing field `name`",
            ),
            (
                rule("name = \"two words\"\nusers = [\"a\"]\nexempt = true"),
                "rule \"two words\": name: expected 1 to 64 letters",
            ),
            (
                rule("name = \"Default\"\nusers = [\"a\"]\nexempt = true"),
                "rule \"Default\": name: \"Default\" is reserved",
            ),
            (
                format!("{}[[rule]]\nname = \"Dev\"\nusers = [\"b\"]\nexempt = true\n", rule("name = \"dev\"\nusers = [\"a\"]\nexempt = true\n")),
                "rule \"Dev\": name: rule 1 already uses this name",
            ),
            (
                format!("{DEFAULT_ALL_OFF}rules = []\n"),
                "rules: unknown field `rules`, expected `default` or `rule`",
            ),
            (
                "default = \"api_keys=maybe\"".to_string(),
                "default: entry \"api_keys=maybe\": value \"maybe\" is not on or off",
            ),
            (
                format!("{DEFAULT_ALL_OFF}[rule]\nname = \"x\"\n"),
                "rule: written as [rule] (one table); each rule is an entry of an array of \
                 tables: write [[rule]] (two brackets)",
            ),
            (
                "default = \"api_keys=on\"\n[[rule]\n".to_string(),
                "line 2: ",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            let e = error(&text);
            if !e.starts_with(expected) || e.contains('\n') {
                wrong.push(format!("{text}\n=> {e}\nexpected {expected}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }

    #[test]
    fn users_patterns_are_case_insensitive_globs() {
        for (pattern, text, expected) in [
            ("breakglass-*", "BreakGlass-01@example.com", true),
            ("breakglass-*", "xbreakglass-1", false),
            ("*@example.com", "Ana@Example.COM", true),
            ("*@example.com", "ana@example.com.evil", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("exact", "EXACT", true),
            ("exact", "exactly", false),
            ("*", "", true),
            ("a**", "a", true),
            ("*aa", "a", false),
            // ASCII case folding only: other letters compare exactly, and the Kelvin sign
            // (U+212A) is not `k`.
            ("ÄRGER*", "ärger-1", false),
            ("ärger*", "ärger-1", true),
            ("breakglass-*", "brea\u{212A}glass-x", false),
            ("breakglass-*", "BREAKGLASS-x", true),
        ] {
            assert_eq!(
                Pattern::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn groups_match_by_display_name_id_or_ocid_direct_or_indirect() {
        let p = policy(&format!(
            "{DEFAULT_ALL_OFF}[[rule]]\nname = \"dev\"\ngroups = [\"OCI Developers\", \"g-2\", \"ocid1.group.oc1..g-3\"]\ncapabilities = \"api_keys=on\"\n"
        ));
        let with = |g: GroupMembership| UserFacts {
            groups: vec![group("Other", "zz", "direct"), g],
            ..user("u")
        };
        for g in [
            group("oci developers", "g-1", "direct"),
            group("OCI DEVELOPERS", "g-1", "indirect"),
            group("Renamed", "g-2", "indirect"),
            group("Renamed", "g-3", "direct"),
        ] {
            assert_eq!(enforced(&p.decide(&with(g))).1, ["dev"]);
        }
        let none = p.decide(&with(group("OCI Developers 2", "g-9", "direct")));
        assert_eq!(enforced(&none).1, ["default"]);
        assert!(p.needs().groups);
        assert_eq!(p.needs().attributes(), [GROUPS_ATTRIBUTE]);
    }

    #[test]
    fn overlay_in_file_order_and_exempt_wins() {
        let p = policy(&format!(
            "{DEFAULT_ALL_OFF}\
             [[rule]]\nname = \"dev\"\ngroups = [\"dev\"]\ncapabilities = \"api_keys=on,auth_tokens=on\"\n\
             [[rule]]\nname = \"mail\"\ngroups = [\"mail\"]\ncapabilities = \"smtp_credentials=on,auth_tokens=off\"\n\
             [[rule]]\nname = \"break-glass\"\nusers = [\"breakglass-*\"]\nexempt = true\n"
        ));
        let member = |name: &str, groups: &[&str]| UserFacts {
            groups: groups.iter().map(|g| group(g, g, "direct")).collect(),
            ..user(name)
        };
        let (profile, by) = enforced(&p.decide(&member("ana", &["dev", "mail"])));
        assert_eq!(
            profile,
            "api_keys=on,auth_tokens=off,console_password=off,customer_secret_keys=off,\
             db_credentials=off,oauth2_client_credentials=off,smtp_credentials=on"
        );
        assert_eq!(by, ["dev", "mail"]);
        assert_eq!(
            p.decide(&member("breakglass-1", &["dev"])),
            Decision::Exempt {
                policy: vec!["break-glass".into()],
                reason: "exempt by rule break-glass".into()
            }
        );
    }

    #[test]
    fn domains_federated_and_service_user_matchers() {
        let p = policy(&format!(
            "{DEFAULT_ALL_OFF}\
             [[rule]]\nname = \"prod\"\ndomains = [\"Production\", \"ocid1.domain.oc1..p\"]\ncapabilities = \"db_credentials=on\"\n\
             [[rule]]\nname = \"local\"\nfederated = false\ncapabilities = \"console_password=on\"\n\
             [[rule]]\nname = \"svc\"\nservice_user = true\ncapabilities = \"oauth2_client_credentials=on,api_keys=on\"\n"
        ));
        let facts = UserFacts {
            domains: vec!["idcs-x".into(), "production".into()],
            federated: Some(true),
            ..user("u")
        };
        assert_eq!(enforced(&p.decide(&facts)).1, ["prod"]);
        let facts = UserFacts {
            domains: vec!["ocid1.domain.oc1..p".into()],
            federated: None,
            service_user: Some(true),
            ..user("u")
        };
        assert_eq!(enforced(&p.decide(&facts)).1, ["prod", "local", "svc"]);
        let needs = p.needs();
        assert!(needs.federated && needs.service_user && !needs.groups && !needs.tags);
        // "Production" and an OCID are learned from the user's domainOcid on a path that knows
        // the domain only by its idcs- name; a rule naming only idcs- names needs no such read.
        assert_eq!(
            needs.attributes(),
            [
                FEDERATED_ATTRIBUTE,
                SERVICE_USER_ATTRIBUTE,
                DOMAIN_OCID_ATTRIBUTE
            ]
        );
        let by_name = policy(&format!(
            "[[rule]]\nname = \"n\"\ndomains = [\"idcs-{}\"]\ncapabilities = \"api_keys=on\"\n",
            "0".repeat(32)
        ));
        assert!(!by_name.needs().domain_ocid());
    }

    fn tagged(tags: &[(&str, &str, &str)]) -> UserFacts {
        UserFacts {
            defined_tags: tags
                .iter()
                .map(|(n, k, v)| DefinedTag {
                    namespace: (*n).into(),
                    key: (*k).into(),
                    value: Some((*v).into()),
                })
                .collect(),
            groups: vec![group("dev", "dev", "direct")],
            ..user("ana")
        }
    }

    #[test]
    fn tags_override_after_every_rule_and_can_exempt() {
        let p = Policy::parse(
            &format!("{DEFAULT_ALL_OFF}[[rule]]\nname = \"dev\"\ngroups = [\"dev\"]\ncapabilities = \"api_keys=on,smtp_credentials=on\"\n"),
            None,
            Some(TagNamespace::parse("Security").unwrap()),
        )
        .unwrap();
        assert_eq!(
            p.needs().attributes(),
            [GROUPS_ATTRIBUTE, DEFINED_TAGS_ATTRIBUTE]
        );
        let d = p.decide(&tagged(&[
            ("Security", "smtp_credentials", "No"),
            ("security", "o_auth2_client_credentials", "Yes"),
            ("Security", "cost_center", "42"),
            ("Other", "api_keys", "no"),
        ]));
        let Decision::Enforce {
            profile,
            policy,
            notes,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(profile.get(Capability::ApiKeys), Some(true));
        assert_eq!(profile.get(Capability::SmtpCredentials), Some(false));
        assert_eq!(profile.get(Capability::OAuth2ClientCredentials), Some(true));
        assert_eq!(
            policy,
            [
                "dev",
                "tag:Security.o_auth2_client_credentials",
                "tag:Security.smtp_credentials"
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");

        assert_eq!(
            p.decide(&tagged(&[("Security", "exempt", "yes")])),
            Decision::Exempt {
                policy: vec!["tag:Security.exempt".into()],
                reason: "exempt by tag Security.exempt".into()
            }
        );
        assert_eq!(
            enforced(&p.decide(&tagged(&[("Security", "exempt", "no")]))).1,
            ["dev"]
        );
        let Decision::Enforce { profile, notes, .. } = p.decide(&tagged(&[
            ("Security", "api_keys", "maybe"),
            ("Security", "auth_tokens", "on"),
            ("Security", "AUTH_TOKENS", "off"),
        ])) else {
            panic!()
        };
        assert_eq!(profile.get(Capability::ApiKeys), Some(true));
        assert_eq!(profile.get(Capability::AuthTokens), Some(false));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("Security.api_keys ignored"), "{notes:?}");
    }

    #[test]
    fn facts_from_the_scim_answer() {
        let user = json!({
            "userName": "ana@example.com",
            "groups": [
                {"value": "g1", "display": "Developers", "ocid": "ocid1.group.oc1..g1", "type": "direct", "$ref": "x"},
                {"value": "g2", "display": "Everyone", "type": "indirect"}
            ],
            "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User": {"isFederatedUser": true, "serviceUser": false},
            "urn:ietf:params:scim:schemas:oracle:idcs:extension:OCITags": {
                "definedTags": [{"namespace": "Security", "key": "api_keys", "value": "yes"}],
                "freeformTags": [{"key": "k", "value": "v"}]
            }
        });
        let facts = UserFacts::from_scim(&user, vec!["Default".into()]).unwrap();
        assert_eq!(facts.user_name.as_deref(), Some("ana@example.com"));
        assert_eq!(facts.groups.len(), 2);
        assert_eq!(facts.groups[1].kind.as_deref(), Some("indirect"));
        assert_eq!(facts.federated, Some(true));
        assert_eq!(facts.service_user, Some(false));
        assert_eq!(facts.defined_tags[0].key, "api_keys");
        assert_eq!(facts.domains, ["Default"]);

        let empty = UserFacts::from_scim(&json!({"id": "x"}), Vec::new()).unwrap();
        assert_eq!(empty, UserFacts::default());
        for bad in [
            json!({"groups": "dev"}),
            json!({"groups": ["dev"]}),
            json!({"urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User": {"isFederatedUser": "yes"}}),
            json!({"urn:ietf:params:scim:schemas:oracle:idcs:extension:OCITags": {"definedTags": {}}}),
        ] {
            assert!(UserFacts::from_scim(&bad, Vec::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_of_other_namespaces_are_ignored_whatever_their_values() {
        let user = json!({
            "userName": "ana",
            "urn:ietf:params:scim:schemas:oracle:idcs:extension:OCITags": {"definedTags": [
                {"namespace": "Finance", "key": "CostCenter", "value": null},
                {"namespace": "Finance", "key": "Budget", "value": 42},
                {"namespace": "Finance", "key": "Owner"},
                {"key": "no-namespace"},
                "not an object",
                {"namespace": "Security", "key": "api_keys", "value": "off"},
                {"namespace": "Security", "key": "auth_tokens", "value": 1},
                {"namespace": "Security", "key": "unrelated", "value": null}
            ]}
        });
        let facts = UserFacts::from_scim(&user, Vec::new()).unwrap();
        let p = Policy::parse(
            DEFAULT_ALL_OFF,
            None,
            Some(TagNamespace::parse("Security").unwrap()),
        )
        .unwrap();
        let Decision::Enforce { policy, notes, .. } = p.decide(&facts) else {
            panic!("not exempt");
        };
        assert_eq!(policy, ["tag:Security.api_keys"]);
        // Our namespace's number is not a switch (1 is not `yes`): noted, not used.
        assert_eq!(
            notes,
            ["tag Security.auth_tokens ignored: value that is not text is not yes/on/true or no/off/false"]
        );
    }

    #[test]
    fn outlook_shows_candidates_and_the_facts_to_read() {
        let p = policy(&format!(
            "{DEFAULT_ALL_OFF}\
             [[rule]]\nname = \"dev\"\ngroups = [\"dev\"]\ncapabilities = \"api_keys=on\"\n\
             [[rule]]\nname = \"prod\"\ndomains = [\"prod\"]\ncapabilities = \"db_credentials=on\"\n\
             [[rule]]\nname = \"bg\"\nusers = [\"bg-*\"]\nexempt = true\n"
        ));
        let o = p.outlook(Some("ana"), &["prod".to_string()]);
        let names: Vec<&str> = o.could_apply.iter().map(|c| c.rule.as_str()).collect();
        assert_eq!(names, ["dev", "prod"]);
        assert_eq!(o.reads, [Fact::Groups]);
        assert_eq!(o.decided, None);
        assert_eq!(o.known_profile.get(Capability::DbCredentials), Some(true));
        assert_eq!(o.known_profile.get(Capability::ApiKeys), Some(false));

        let o = p.outlook(None, &[]);
        assert_eq!(o.reads, [Fact::UserName, Fact::Groups, Fact::DomainOcid]);
        // A record naming the domain only by its idcs- name: "prod" (a display name) is learned
        // from the read; a record that gives another display name settles that it cannot apply.
        let idcs = format!("idcs-{}", "0".repeat(32));
        let o = p.outlook(Some("ana"), &[idcs]);
        assert_eq!(o.reads, [Fact::Groups, Fact::DomainOcid]);
        let o = p.outlook(Some("ana"), &["Staging".to_string()]);
        assert_eq!(o.reads, [Fact::Groups]);

        let o = p.outlook(Some("BG-1"), &[]);
        assert!(o.decided.is_none(), "groups still pending");
        let only_users = policy(&format!(
            "{DEFAULT_ALL_OFF}[[rule]]\nname = \"bg\"\nusers = [\"bg-*\"]\nexempt = true\n"
        ));
        assert!(matches!(
            only_users.outlook(Some("bg-1"), &[]).decided,
            Some(Decision::Exempt { .. })
        ));
        assert!(matches!(
            only_users.outlook(Some("ana"), &[]).decided,
            Some(Decision::Enforce { .. })
        ));
    }

    #[test]
    fn tag_namespace_rules() {
        assert!(TagNamespace::parse("Security").is_ok());
        assert!(TagNamespace::parse("Sec-Ops_1.x").is_ok());
        for bad in ["", "a b", "a,b", &"x".repeat(101)] {
            assert!(TagNamespace::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn arb_facts() -> impl Strategy<Value = UserFacts> {
        (
            "[a-dA-D*]{0,6}",
            proptest::collection::vec("[a-c]{1,2}", 0..3),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::collection::vec(
                (
                    prop_oneof!["Security", "security", "Other"],
                    prop_oneof!["api_keys", "exempt", "smtp_credentials", "x"],
                    prop_oneof!["yes", "no", "maybe", "ON"],
                ),
                0..3,
            ),
        )
            .prop_map(|(name, groups, federated, service_user, tags)| UserFacts {
                user_name: Some(name),
                domains: vec!["d".into()],
                groups: groups.iter().map(|g| group(g, g, "direct")).collect(),
                federated,
                service_user,
                defined_tags: tags
                    .into_iter()
                    .map(|(n, k, v)| DefinedTag {
                        namespace: n,
                        key: k,
                        value: Some(v),
                    })
                    .collect(),
            })
    }

    fn arb_capabilities() -> impl Strategy<Value = Profile> {
        proptest::collection::vec(proptest::option::of(any::<bool>()), 8).prop_map(|v| {
            let mut p = Profile::unmanaged();
            for (c, on) in Capability::ALL.into_iter().zip(v) {
                if let Some(on) = on {
                    p.set(c, on);
                }
            }
            p
        })
    }

    fn arb_rule(i: usize) -> impl Strategy<Value = Rule> {
        (
            proptest::option::of(proptest::collection::vec("[a-d*]{1,3}", 1..3)),
            proptest::option::of(proptest::collection::vec("[a-c]{1,2}", 1..3)),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            arb_capabilities(),
            proptest::bool::weighted(0.2),
        )
            .prop_map(
                move |(users, groups, federated, service_user, caps, exempt)| {
                    let mut users = users.unwrap_or_default();
                    // Every rule needs a matcher.
                    if groups.is_none() && federated.is_none() && service_user.is_none() {
                        users.push("*".into());
                    }
                    Rule {
                        name: format!("r{i}"),
                        users: users.iter().map(|u| Pattern::new(u)).collect(),
                        groups: groups.unwrap_or_default(),
                        domains: Vec::new(),
                        federated,
                        service_user,
                        action: if exempt || caps.is_unmanaged() {
                            Action::Exempt
                        } else {
                            Action::Capabilities(caps)
                        },
                    }
                },
            )
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            arb_capabilities(),
            (0usize..5).prop_flat_map(|n| (0..n).map(arb_rule).collect::<Vec<_>>()),
            any::<bool>(),
        )
            .prop_map(|(default, rules, tags)| Policy {
                default,
                rules,
                tag_namespace: tags.then(|| TagNamespace::parse("Security").unwrap()),
            })
    }

    proptest! {
        /// The decision is the reference model: default, then each matching rule in order, then tags.
        #[test]
        fn decision_follows_the_overlay_model(p in arb_policy(), facts in arb_facts()) {
            let matching: Vec<&Rule> = p.rules.iter().filter(|r| r.matches(&facts)).collect();
            let exempt_rule = matching.iter().find(|r| r.action == Action::Exempt);
            let tags_on = p.tag_namespace.is_some();
            let tag_exempt = tags_on && facts.defined_tags.iter().any(|t| {
                t.namespace.eq_ignore_ascii_case("Security") && t.key == "exempt"
                    && t.value.as_deref().and_then(tag_switch) == Some(true)
            });
            match p.decide(&facts) {
                Decision::Exempt { policy, reason } => {
                    prop_assert!(exempt_rule.is_some() || tag_exempt);
                    if let Some(r) = exempt_rule {
                        prop_assert_eq!(reason, format!("exempt by rule {}", r.name));
                        prop_assert_eq!(policy, vec![r.name.clone()]);
                    }
                }
                Decision::Enforce { profile, policy, .. } => {
                    prop_assert!(exempt_rule.is_none() && !tag_exempt);
                    prop_assert!(!policy.is_empty());
                    for c in Capability::ALL {
                        let tag = if tags_on {
                            let values: Vec<bool> = facts.defined_tags.iter()
                                .filter(|t| t.namespace.eq_ignore_ascii_case("Security") && t.key == c.name())
                                .filter_map(|t| t.value.as_deref().and_then(tag_switch))
                                .collect();
                            if values.is_empty() { None } else { Some(values.iter().all(|v| *v)) }
                        } else { None };
                        let ruled = matching.iter().rev().find_map(|r| match &r.action {
                            Action::Capabilities(p) => p.get(c),
                            Action::Exempt => None,
                        });
                        prop_assert_eq!(profile.get(c), tag.or(ruled).or(p.default.get(c)), "{}", c);
                    }
                    let rule_names: Vec<String> = matching.iter().map(|r| r.name.clone()).collect();
                    if rule_names.is_empty() && !policy.iter().any(|x| x.starts_with("tag:")) {
                        prop_assert_eq!(policy, vec!["default".to_string()]);
                    } else {
                        prop_assert_eq!(&policy[..rule_names.len()], &rule_names[..]);
                    }
                }
            }
        }

        /// What `plan` says offline never contradicts the decision made once the facts are read.
        #[test]
        fn outlook_never_contradicts_the_decision(p in arb_policy(), facts in arb_facts()) {
            let o = p.outlook(facts.user_name.as_deref(), &facts.domains);
            let matching: Vec<String> = p.rules.iter().filter(|r| r.matches(&facts)).map(|r| r.name.clone()).collect();
            for name in &matching {
                prop_assert!(o.could_apply.iter().any(|c| &c.rule == name), "{} missing", name);
            }
            if let Some(decided) = o.decided {
                let no_tags = UserFacts { defined_tags: Vec::new(), ..facts.clone() };
                prop_assert_eq!(decided, p.decide(&no_tags));
            }
        }

        /// The pattern matcher agrees with a textbook dynamic-programming wildcard match.
        #[test]
        fn patterns_agree_with_a_reference_matcher(pattern in "[ab*]{0,6}", text in "[abAB]{0,8}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.to_lowercase().chars().collect();
            // m[i][j]: the first i pattern chars match the first j text chars.
            let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
            m[0][0] = true;
            for i in 1..=p.len() {
                for j in 0..=t.len() {
                    m[i][j] = if p[i - 1] == '*' {
                        m[i - 1][j] || (j > 0 && m[i][j - 1])
                    } else {
                        j > 0 && m[i - 1][j - 1] && p[i - 1] == t[j - 1]
                    };
                }
            }
            prop_assert_eq!(Pattern::new(&pattern).matches(&text), m[p.len()][t.len()]);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Policy::parse(&text, None, None);
        }
    }
}
