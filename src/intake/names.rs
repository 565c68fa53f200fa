//! Validated names: identity-domain names, user ids and identity-domain URLs.
//!
//! Each type can only hold a value that passed its check, so code further down never has to ask
//! again whether a string is safe to put in a URL.
//!
//! ```
//! use oci_user_capabilities::intake::names::{DomainName, DomainUrl, UserId};
//!
//! let domain = DomainName::parse("idcs-0123456789abcdef0123456789abcdef").unwrap();
//! let user = UserId::parse("8f2e4c6a1b3d5f7091a2b3c4d5e6f708").unwrap();
//! let base = DomainUrl::parse(&format!("https://{domain}.identity.oraclecloud.com:443/")).unwrap();
//! let url = base.endpoint(&["admin", "v1", "Users", user.as_str()], &[("attributes", "userName")]);
//! assert_eq!(
//!     url.as_str(),
//!     "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com\
//!      /admin/v1/Users/8f2e4c6a1b3d5f7091a2b3c4d5e6f708?attributes=userName"
//! );
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Serialize, Serializer};
use url::{Host, Url};

/// Longest part of an offending value that an error message repeats.
const SHOWN_CHARS: usize = 80;

/// Everything but RFC 3986 "unreserved" characters is encoded, in path segments and in query
/// pairs alike, so no value can add a segment, a query, or a fragment.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const DOMAIN_PREFIX: &str = "idcs-";
const HEX_ID_LEN: usize = 32;

/// A value from outside cut to [`SHOWN_CHARS`] characters ("…" marks the cut), so reports and
/// logs stay bounded whatever the input held.
pub(crate) fn truncated(value: &str) -> String {
    truncated_to(value, SHOWN_CHARS)
}

/// A value from outside cut to `max` characters ("…" marks the cut).
pub(crate) fn truncated_to(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// [`truncated`], quoted with escapes, so an error message stays one readable line.
pub(crate) fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Why a name was refused. Display says what was expected and repeats the value (truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not `idcs-` and 32 lower-case hex digits.
    #[error("domain name: expected \"idcs-\" followed by 32 lower-case hex digits, got {}", shown(.value))]
    DomainName {
        /// The refused text, in full.
        value: String,
    },
    /// Not 32 lower-case hex digits.
    #[error("user id: expected 32 lower-case hex digits, got {}", shown(.value))]
    UserId {
        /// The refused text, in full.
        value: String,
    },
    /// Not an https (or loopback http) URL of scheme, host and port only.
    #[error("domain URL: {reason}, got {}", shown(.value))]
    DomainUrl {
        /// The refused text, in full.
        value: String,
        /// Which rule it broke, e.g. "must not have a query".
        reason: String,
    },
    /// Neither a SCIM user id nor a user OCID.
    #[error("user id: expected 32 lower-case hex digits or a user OCID (ocid1.user.<realm>..<id>), got {}", shown(.value))]
    UserRef {
        /// The refused text, in full.
        value: String,
    },
    /// A credential id (an API key's, an auth token's, …) that is not 32 lower-case hex digits.
    #[error("credential id: expected 32 lower-case hex digits, got {}", shown(.value))]
    CredentialId {
        /// The refused text, in full.
        value: String,
    },
    /// Not a global `ocid1.domain.<realm>..<id>`.
    #[error("domain OCID: expected ocid1.domain.<realm>..<id> (lower-case letters and digits), got {}", shown(.value))]
    DomainOcid {
        /// The refused text, in full.
        value: String,
    },
    /// Not an OCID of the expected kind (`ocid1.<kind>.<realm>.[region].<id>`).
    #[error("{what}: expected {pattern} (lower-case letters and digits), got {}", shown(.value))]
    Ocid {
        /// What the OCID names, e.g. "compartment".
        what: &'static str,
        /// The accepted form, e.g. "ocid1.compartment.<realm>..<id>".
        pattern: &'static str,
        /// The refused text, in full.
        value: String,
    },
}

macro_rules! string_like {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

fn is_lower_hex(s: &str) -> bool {
    // Bytes, not chars: any multi-byte look-alike fails here.
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True for a SCIM id: exactly 32 lower-case hex digits.
fn is_hex_id(s: &str) -> bool {
    s.len() == HEX_ID_LEN && is_lower_hex(s)
}

/// Defines a newtype over `String` that can only hold text its check accepts: the type's doc and
/// name, `parse`'s doc, the check (`fn(&str) -> bool`), and how a refusal names the field and the
/// reason (`fn(String) -> NameError`, given the refused text in full). `Display`, `Serialize`,
/// `FromStr` and `AsRef<str>` come with it.
macro_rules! checked_name {
    (
        $(#[$doc:meta])* $name:ident,
        $(#[$parse_doc:meta])* valid: $valid:expr,
        refused: $refused:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            $(#[$parse_doc])*
            pub fn parse(s: &str) -> Result<Self, NameError> {
                checked(s, $valid, $refused).map(Self)
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        string_like!($name);
    };
}

/// `s` as owned text when `valid` accepts it, else the error `refused` makes of it.
fn checked(
    s: &str,
    valid: impl Fn(&str) -> bool,
    refused: impl FnOnce(String) -> NameError,
) -> Result<String, NameError> {
    if valid(s) {
        Ok(s.to_owned())
    } else {
        Err(refused(s.to_owned()))
    }
}

checked_name! {
    /// An identity-domain name: `idcs-` and 32 lower-case hex digits, nothing else.
    DomainName,
    /// Accepts `s` only if it is an identity-domain name as described above; the error repeats it.
    valid: |s| s.len() == DOMAIN_PREFIX.len() + HEX_ID_LEN
        && s.strip_prefix(DOMAIN_PREFIX).is_some_and(is_lower_hex),
    refused: |value| NameError::DomainName { value }
}

/// A user's SCIM id: 32 lower-case hex digits, held in place (no allocation: a batch may name
/// tens of thousands of users, each id copied into its grouping key and its result).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId([u8; HEX_ID_LEN]);

impl UserId {
    /// Accepts `s` only if it is a SCIM user id as described above; the error repeats it.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match <[u8; HEX_ID_LEN]>::try_from(s.as_bytes()) {
            Ok(bytes) if is_hex_id(s) => Ok(Self(bytes)),
            _ => Err(NameError::UserId {
                value: s.to_owned(),
            }),
        }
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored, so this is always the whole id.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserId").field(&self.as_str()).finish()
    }
}

string_like!(UserId);

checked_name! {
    /// The SCIM id of one of a user's credentials (API key, auth token, customer secret key, SMTP
    /// credential, OAuth2 client credential, DB credential): 32 lower-case hex digits, like a user
    /// id, because it goes into a `DELETE /admin/v1/<type>/{id}` path.
    CredentialId,
    /// Accepts `s` only if it is 32 lower-case hex digits; the error repeats it.
    valid: is_hex_id,
    refused: |value| NameError::CredentialId { value }
}

/// Longest OCID accepted; real ones are well under 100 characters.
const MAX_OCID_LEN: usize = 255;

/// What follows `ocid1.<kind>.` in `s`, if it starts so.
fn after_ocid_kind<'a>(s: &'a str, kind: &str) -> Option<&'a str> {
    s.strip_prefix("ocid1.")
        .and_then(|r| r.strip_prefix(kind))
        .and_then(|r| r.strip_prefix('.'))
}

/// True for `ocid1.<kind>.<realm>..<id>`: a realm and an id of lower-case letters and digits, and
/// the empty region of a global resource. Nothing in it needs escaping in a URL path, and no part
/// can be "." or "..".
fn is_global_ocid(s: &str, kind: &str) -> bool {
    let alnum = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if s.len() > MAX_OCID_LEN {
        return false;
    }
    let Some(rest) = after_ocid_kind(s, kind) else {
        return false;
    };
    match rest.split_once("..") {
        Some((realm, id)) => alnum(realm) && alnum(id),
        None => false,
    }
}

/// True for `ocid1.<kind>.<realm>.<region>.<id>` where the region may be empty (a global
/// resource) or a region key or name (lower-case letters, digits and `-`): a regional resource
/// such as a function.
fn is_regional_ocid(s: &str, kind: &str) -> bool {
    if is_global_ocid(s, kind) {
        return true;
    }
    let part = |p: &str, dash: bool| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || (dash && b == b'-'))
    };
    let Some(rest) = after_ocid_kind(s, kind) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    s.len() <= MAX_OCID_LEN
        && matches!(parts.as_slice(), [realm, region, id]
            if part(realm, false) && part(region, true) && part(id, false))
}

checked_name! {
    /// A compartment to list identity domains in: a compartment OCID or the tenancy's OCID (the
    /// root compartment).
    CompartmentOcid,
    /// Accepts `ocid1.compartment.<realm>..<id>` or `ocid1.tenancy.<realm>..<id>`.
    valid: |s| is_global_ocid(s, "compartment") || is_global_ocid(s, "tenancy"),
    refused: |value| NameError::Ocid {
        what: "compartment",
        pattern: "ocid1.compartment.<realm>..<id> or ocid1.tenancy.<realm>..<id>",
        value,
    }
}

checked_name! {
    /// A function's OCID (`FN_FN_ID`), `ocid1.fnfunc.<realm>.<region>.<id>`.
    FunctionOcid,
    /// Accepts `s` only if it is a function OCID as described above.
    valid: |s| is_regional_ocid(s, "fnfunc"),
    refused: |value| NameError::Ocid {
        what: "function id",
        pattern: "ocid1.fnfunc.<realm>.<region>.<id>",
        value,
    }
}

/// The domain every OCI Functions invoke endpoint lives under (`https://<id>.<region>.functions.oci.oraclecloud.com`).
const FUNCTIONS_HOST_SUFFIX: &str = ".oci.oraclecloud.com";

/// Whether `url` may receive a signed invocation: an `https` host under `oci.oraclecloud.com`, or,
/// when `loopback_allowed` (a test platform), a loopback `http` address.
pub fn check_invoke_endpoint(url: &DomainUrl, loopback_allowed: bool) -> Result<(), String> {
    if url.is_loopback() {
        return if loopback_allowed {
            Ok(())
        } else {
            Err(format!(
                "{} is a loopback address, accepted only from a loopback Functions endpoint (tests)",
                shown(url.as_str())
            ))
        };
    }
    let host = url.host();
    let labels_ok = host
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if url.as_str().starts_with("https://")
        && url.port().is_none()
        && labels_ok
        && host.ends_with(FUNCTIONS_HOST_SUFFIX)
    {
        Ok(())
    } else {
        Err(format!(
            "{} is not an OCI Functions invoke endpoint (an https host under oci.oraclecloud.com)",
            shown(url.as_str())
        ))
    }
}

checked_name! {
    /// A user's OCID, `ocid1.user.<realm>..<id>`: the identity domain accepts it in place of the
    /// SCIM id in `/admin/v1/Users/{id}`.
    UserOcid,
    /// Accepts `s` only if it is a user OCID as described above; the error repeats it.
    valid: |s| is_global_ocid(s, "user"),
    refused: |value| NameError::UserRef { value }
}

impl UserOcid {
    /// True when `s` claims to be a user OCID (whether or not it is a valid one).
    pub fn is_claimed_by(s: &str) -> bool {
        s.starts_with("ocid1.user.")
    }
}

checked_name! {
    /// An identity domain's OCID, `ocid1.domain.<realm>..<id>`, resolved to its URL through the
    /// IAM control plane (`GetDomain`).
    DomainOcid,
    /// Accepts `s` only if it is a domain OCID as described above; the error repeats it.
    valid: |s| is_global_ocid(s, "domain"),
    refused: |value| NameError::DomainOcid { value }
}

/// How a record names a user: by SCIM id, or by OCID (read first, then written by the id the
/// answer gives).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserRef {
    /// The SCIM id: usable in a write as it is.
    Id(UserId),
    /// The OCID: the user is read first to learn its SCIM id.
    Ocid(UserOcid),
}

impl UserRef {
    /// 32 lower-case hex digits, or a user OCID.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if let Ok(id) = UserId::parse(s) {
            return Ok(Self::Id(id));
        }
        UserOcid::parse(s).map(Self::Ocid)
    }

    /// The id or OCID as given.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Id(id) => id.as_str(),
            Self::Ocid(ocid) => ocid.as_str(),
        }
    }
}

impl From<UserId> for UserRef {
    fn from(id: UserId) -> Self {
        Self::Id(id)
    }
}

/// The base URL of an identity domain: `https://host[:port]`, or `http://` to a loopback address
/// (for local tests), with no path, query, fragment or credentials.
///
/// Cheap to clone (shared): every record and result of a batch names its domain, and a batch of
/// 39,000 records would otherwise hold 39,000 copies of the same parsed URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainUrl(std::sync::Arc<ParsedUrl>);

/// What a [`DomainUrl`] shares between its clones.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ParsedUrl {
    url: Url,
    /// The serialisation without the trailing '/' that `Url` always keeps.
    base: String,
}

impl DomainUrl {
    /// Accepts `https://host[:port]` (or `http://` to a loopback address) with nothing after the
    /// port but an optional '/'; anything else is refused with the rule it broke.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::DomainUrl {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        // The URL parser silently strips surrounding spaces and inner tabs/newlines and reads '\'
        // as '/'; refuse them instead of guessing what was meant.
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(refuse(
                "must not contain spaces, control characters or '\\'",
            ));
        }
        let url = Url::parse(s).map_err(|e| refuse(&format!("not a valid URL ({e})")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(refuse(
                    "http is allowed only to a loopback address; use https",
                ))
            }
            _ => return Err(refuse("expected an https URL")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(refuse("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("must not contain a user name or password"));
        }
        if url.query().is_some() {
            return Err(refuse("must not have a query"));
        }
        if url.fragment().is_some() {
            return Err(refuse("must not have a fragment"));
        }
        // Check the raw text too: the parser resolves "/." and "/x/.." to "/", which would hide
        // a path the operator typed.
        let after_scheme = s.split_once("://").map_or(s, |(_, rest)| rest);
        let raw_path_ok = match after_scheme.find('/') {
            None => true,
            Some(i) => i + 1 == after_scheme.len(),
        };
        if url.path() != "/" || !raw_path_ok {
            return Err(refuse(
                "must not have a path (only the scheme, host and port)",
            ));
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self(std::sync::Arc::new(ParsedUrl { url, base })))
    }

    /// E.g. `https://idcs-….identity.oraclecloud.com` (no trailing '/').
    pub fn as_str(&self) -> &str {
        &self.0.base
    }

    /// The host as it goes in the `host` header (IPv6 in brackets), without the port.
    pub fn host(&self) -> &str {
        self.0.url.host_str().unwrap_or_default()
    }

    /// The explicit port, if any (a default port for the scheme is never kept).
    pub fn port(&self) -> Option<u16> {
        self.0.url.port()
    }

    /// True for http(s) to 127.0.0.0/8, ::1 or "localhost".
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.0.url)
    }

    /// base + "/" + the given path segments, each percent-encoded as a path segment (ids are
    /// already safe; this is defence in depth), plus query pairs percent-encoded (space as %20).
    ///
    /// A segment that is only "." or ".." would be collapsed by any URL parser and so address a
    /// parent path; such a segment is sent with its '%' escaped as well ("%252E"), which names a
    /// resource that cannot exist instead of a different endpoint.
    pub fn endpoint(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            if matches!(*segment, "." | "..") {
                path.push_str(&"%252E".repeat(segment.len()));
            } else {
                path.extend(utf8_percent_encode(segment, STRICT));
            }
        }
        let mut url = self.0.url.clone();
        url.set_path(if path.is_empty() { "/" } else { &path });
        if query.is_empty() {
            url.set_query(None);
        } else {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        utf8_percent_encode(k, STRICT),
                        utf8_percent_encode(v, STRICT)
                    )
                })
                .collect();
            url.set_query(Some(&pairs.join("&")));
        }
        url
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

string_like!(DomainUrl);
string_like!(UserRef);

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn domain_name_accepts_exact_form() {
        let name = format!("idcs-{HEX}");
        let d = DomainName::parse(&name).unwrap();
        assert_eq!(d.as_str(), name);
        assert_eq!(d.to_string(), name);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{name}\""));
    }

    #[test]
    fn credential_ids_are_32_lower_hex_digits_and_nothing_else() {
        assert_eq!(CredentialId::parse(HEX).unwrap().as_str(), HEX);
        for bad in [
            "",
            "../../admin/v1/Users",
            &HEX[1..],
            &format!("{HEX}0"),
            &HEX.to_uppercase(),
            &format!("{}/", &HEX[1..]),
            &format!("{}%2f", &HEX[3..]),
            &HEX.replacen('c', "\u{441}", 1),
            "ocid1.credential.oc1..aaaa",
        ] {
            let err = CredentialId::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("credential id: expected 32"), "{err}");
        }
    }

    #[test]
    fn domain_name_refuses_adversarial_inputs() {
        let cases = [
            "evil.example#".to_owned(),
            format!("idcs-{HEX}@evil.example"),
            "../".to_owned(),
            format!("idcs-%30{}", &HEX[1..]),
            format!("idcs-{}", HEX.to_uppercase()),
            format!("IDCS-{HEX}"),
            // Cyrillic 'с' (U+0441) in place of the hex 'c'.
            format!("idcs-{}", HEX.replacen('c', "\u{441}", 1)),
            // Fullwidth digit zero.
            format!("idcs-\u{ff10}{}", &HEX[1..]),
            format!("idcs-{HEX}\n"),
            format!("idcs-{HEX} "),
            format!(" idcs-{HEX}"),
            format!("idcs-{HEX}0"),
            format!("idcs-{}", &HEX[1..]),
            format!("idcs-{}", "a".repeat(10_000)),
            format!("idcs-{HEX}.identity.oraclecloud.com"),
            "".to_owned(),
            "idcs-".to_owned(),
            HEX.to_owned(),
        ];
        for case in &cases {
            assert!(DomainName::parse(case).is_err(), "accepted {case:?}");
        }
    }

    #[test]
    fn ocids_accept_the_global_form_only() {
        let user = "ocid1.user.oc1..aaaaaaaaexampleuser0000000000000000000000000000000000";
        assert_eq!(UserOcid::parse(user).unwrap().as_str(), user);
        assert_eq!(
            UserRef::parse(user).unwrap(),
            UserRef::Ocid(UserOcid::parse(user).unwrap())
        );
        assert_eq!(
            UserRef::parse(HEX).unwrap(),
            UserRef::Id(UserId::parse(HEX).unwrap())
        );
        let domain = "ocid1.domain.oc1..aaaaaaaaexampledomain00000000000000000000000000000000";
        assert_eq!(DomainOcid::parse(domain).unwrap().to_string(), domain);
        assert!(UserOcid::is_claimed_by(user));
        assert!(!UserOcid::is_claimed_by(domain));
        let bad = [
            "ocid1.user.oc1.aaaa".to_owned(),
            "ocid1.user.oc1...aaaa".to_owned(),
            "ocid1.user.oc1..".to_owned(),
            "ocid1.user...aaaa".to_owned(),
            "ocid1.user.oc1.iad.aaaa".to_owned(),
            "ocid1.user.oc1..AAAA".to_owned(),
            "ocid1.user.oc1..aa/../x".to_owned(),
            "ocid1.user.oc1..aa%2f".to_owned(),
            "ocid1.user.oc1..aa?x".to_owned(),
            "ocid1.user.oc1..aa ".to_owned(),
            " ocid1.user.oc1..aa".to_owned(),
            "ocid1.user.oc1..a\u{441}".to_owned(),
            "ocid1.group.oc1..aaaa".to_owned(),
            "ocid2.user.oc1..aaaa".to_owned(),
            format!("ocid1.user.oc1..{}", "a".repeat(300)),
            String::new(),
        ];
        for case in &bad {
            assert!(UserOcid::parse(case).is_err(), "accepted {case:?}");
            assert!(UserRef::parse(case).is_err(), "accepted {case:?}");
            let as_domain = case.replace("ocid1.user.", "ocid1.domain.");
            assert!(
                DomainOcid::parse(&as_domain).is_err(),
                "accepted {as_domain:?}"
            );
        }
        // Each kind only its own.
        assert!(DomainOcid::parse(user).is_err());
        assert!(UserOcid::parse(domain).is_err());
        let e = UserRef::parse("nope").unwrap_err().to_string();
        assert!(
            e.starts_with("user id: expected 32 lower-case hex digits or a user OCID"),
            "{e}"
        );
        let e = DomainOcid::parse("nope").unwrap_err().to_string();
        assert!(e.starts_with("domain OCID: expected ocid1.domain."), "{e}");
    }

    #[test]
    fn user_id_accepts_exact_form() {
        let id = UserId::parse(HEX).unwrap();
        assert_eq!(id.as_str(), HEX);
        assert_eq!(serde_json::to_value(&id).unwrap(), serde_json::json!(HEX));
    }

    #[test]
    fn user_id_refuses_adversarial_inputs() {
        let cases = [
            "../x".to_owned(),
            "?filter=".to_owned(),
            "%2e%2e".to_owned(),
            HEX[..31].to_owned(),
            format!("{HEX}0"),
            HEX.to_uppercase(),
            format!("{HEX}\n"),
            format!("{HEX} "),
            format!("{}\u{441}", &HEX[..31]),
            format!("\u{ff10}{}", &HEX[1..]),
            format!("{}/..", &HEX[..28]),
            format!("{}%2F", &HEX[..29]),
            "ocid1.user.oc1..aaaaaaaaexample".to_owned(),
            "g".repeat(32),
            "".to_owned(),
            "a".repeat(100_000),
        ];
        for case in &cases {
            assert!(UserId::parse(case).is_err(), "accepted {case:?}");
        }
    }

    #[test]
    fn errors_say_what_was_expected_and_truncate_the_value() {
        let long = "x".repeat(500);
        let msg = UserId::parse(&long).unwrap_err().to_string();
        assert!(msg.starts_with("user id: expected 32 lower-case hex digits, got \"xxx"));
        assert!(msg.ends_with('…'), "{msg}");
        assert!(msg.len() < 150, "{msg}");

        let msg = DomainName::parse("idcs-x\n").unwrap_err().to_string();
        assert_eq!(
            msg,
            "domain name: expected \"idcs-\" followed by 32 lower-case hex digits, got \"idcs-x\\n\""
        );

        // Truncation counts characters, so a multi-byte value never splits a character.
        let wide = "é".repeat(200);
        let msg = UserId::parse(&wide).unwrap_err().to_string();
        assert!(msg.contains(&"é".repeat(80)));
        assert!(!msg.contains(&"é".repeat(81)));
    }

    #[test]
    fn domain_url_normalises_port_and_slash() {
        let u = DomainUrl::parse("https://x.identity.oraclecloud.com:443/").unwrap();
        assert_eq!(u.as_str(), "https://x.identity.oraclecloud.com");
        assert_eq!(u.host(), "x.identity.oraclecloud.com");
        assert_eq!(u.port(), None);
        assert!(!u.is_loopback());
        assert_eq!(u.to_string(), u.as_str());
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"https://x.identity.oraclecloud.com\""
        );

        let u = DomainUrl::parse("https://x.example:8443").unwrap();
        assert_eq!(u.as_str(), "https://x.example:8443");
        assert_eq!(u.port(), Some(8443));
    }

    #[test]
    fn domain_url_allows_http_to_loopback_only() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:3000/",
            "http://[::1]:9000",
        ] {
            let u = DomainUrl::parse(ok).unwrap();
            assert!(u.is_loopback(), "{ok}");
            assert!(!u.as_str().ends_with('/'), "{ok}");
        }
        assert_eq!(
            DomainUrl::parse("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            DomainUrl::parse("http://[::1]:9000").unwrap().host(),
            "[::1]"
        );
        assert!(DomainUrl::parse("https://127.0.0.1").unwrap().is_loopback());
    }

    #[test]
    fn domain_url_refuses_unsafe_forms() {
        let cases = [
            "http://example.com",
            "http://10.0.0.1",
            "http://localhost.evil.example",
            "http://[::2]",
            "https://user@host",
            "https://user:pw@host",
            "ftp://host",
            "ftp://",
            "https://h/path",
            "https://h/.",
            "https://h/x/..",
            "https://h//",
            "https://h?q",
            "https://h?",
            "https://h#f",
            "https://h#",
            "https://",
            "host.example",
            " https://h",
            "https://h ",
            "https://h\n",
            "https://h\\x",
            "https:\\\\h",
            "file:///etc/passwd",
            "",
        ];
        for case in cases {
            assert!(DomainUrl::parse(case).is_err(), "accepted {case:?}");
        }
        let msg = DomainUrl::parse("http://example.com")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "domain URL: http is allowed only to a loopback address; use https, got \"http://example.com\""
        );
    }

    #[test]
    fn endpoint_encodes_segments_and_query() {
        let base = DomainUrl::parse("https://h.example").unwrap();
        let url = base.endpoint(
            &["admin", "v1", "Users", HEX],
            &[
                ("filter", "userName eq \"a b\"&x=#"),
                ("attributes", "userName,urn:x:User"),
            ],
        );
        assert_eq!(
            url.as_str(),
            format!(
                "https://h.example/admin/v1/Users/{HEX}\
                 ?filter=userName%20eq%20%22a%20b%22%26x%3D%23\
                 &attributes=userName%2Curn%3Ax%3AUser"
            )
        );
        assert_eq!(url.host_str(), Some("h.example"));
    }

    #[test]
    fn endpoint_cannot_be_steered_by_a_segment() {
        let base = DomainUrl::parse("http://127.0.0.1:8080").unwrap();
        let url = base.endpoint(&["Users", "../x?filter=#f/%2e%2e"], &[]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/Users/..%2Fx%3Ffilter%3D%23f%2F%252e%252e"
        );
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);

        for dots in [".", ".."] {
            let url = base.endpoint(&["admin", "v1", "Users", dots], &[]);
            assert!(
                url.path().starts_with("/admin/v1/Users/%252E"),
                "{}",
                url.path()
            );
        }
        let url = base.endpoint(&[], &[]);
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn compartment_and_function_ocids() {
        for ok in [
            "ocid1.tenancy.oc1..aaaa0000",
            "ocid1.compartment.oc1..aaaa0000",
        ] {
            assert_eq!(CompartmentOcid::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "ocid1.user.oc1..aaaa",
            "ocid1.compartment.oc1.iad.aaaa",
            "ocid1.compartment.oc1../x",
            "",
        ] {
            let e = CompartmentOcid::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("compartment: expected"), "{e}");
        }
        for ok in [
            "ocid1.fnfunc.oc1.iad.aaaa0000",
            "ocid1.fnfunc.oc1.us-ashburn-1.aaaa0000",
            "ocid1.fnfunc.oc1..test",
        ] {
            assert_eq!(FunctionOcid::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "ocid1.fnfunc.oc1.iad.aa/../x",
            "ocid1.fnfunc.oc1.iad.aa.bb",
            "ocid1.fnapp.oc1.iad.aaaa",
            "ocid1.fnfunc.OC1.iad.aaaa",
        ] {
            assert!(FunctionOcid::parse(bad).is_err(), "{bad}");
        }
    }
}
