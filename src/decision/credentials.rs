//! Credentials that outlive a capability: which of a user's existing credentials the decided profile
//! leaves without a capability (*lingering*), and what `CREDENTIALS` says to do about them.
//!
//! Switching a capability off decides what a user can *create*; an API key or auth token made before
//! is a separate object. The read brings the user's credentials (the `userCredentials` extension,
//! asked for by name), and a credential counts as lingering exactly when the user's decided profile
//! turns its capability **off**: capabilities left on or unmanaged are never counted, an exempt user
//! is never looked at, and `console_password` and `console` have no credential object. Pure: no I/O.
//!
//! ```
//! use oci_user_capabilities::decision::credentials::{lingering, CredentialType};
//! use oci_user_capabilities::decision::profile::Profile;
//! use serde_json::json;
//!
//! let user = json!({
//!     "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User": {
//!         "apiKeys": [{"value": "0123456789abcdef0123456789abcdef", "ocid": "ocid1.credential.oc1..a"}],
//!         "smtpCredentials": [{"value": "fedcba9876543210fedcba9876543210"}]
//!     }
//! });
//! // The baked-in profile keeps API keys on and turns SMTP credentials off.
//! let held = lingering(&user, &Profile::default()).unwrap();
//! assert_eq!(held.len(), 1);
//! assert_eq!(held[0].kind, CredentialType::SmtpCredentials);
//! assert_eq!(held[0].id.as_ref().unwrap().as_str(), "fedcba9876543210fedcba9876543210");
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::decision::policy::Policy;
use crate::decision::profile::{Capability, Profile};
use crate::intake::names::{shown, CredentialId, NameError};

/// The user extension that lists a user's credentials (`returned: request`: only when named).
pub const USER_CREDENTIALS_URN: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User";

/// `CREDENTIALS`: what to do with credentials a user already holds for a capability the profile
/// turns off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialsMode {
    /// Read them, count them in the result and log each id; delete nothing (the default).
    #[default]
    Report,
    /// Read them and delete each, after the capability is off.
    Revoke,
    /// Never ask for them.
    Off,
}

impl CredentialsMode {
    /// `report`, `revoke` or `off`, ASCII case-insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Report, Self::Revoke, Self::Off]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Revoke => "revoke",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for CredentialsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the six kinds of credential object a user can hold (PRODUCT.md's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialType {
    /// API signing keys (`apiKeys`, `/admin/v1/ApiKeys`).
    ApiKeys,
    /// Auth tokens (`authTokens`, `/admin/v1/AuthTokens`).
    AuthTokens,
    /// Customer secret keys (`customerSecretKeys`, `/admin/v1/CustomerSecretKeys`).
    CustomerSecretKeys,
    /// SMTP credentials (`smtpCredentials`, `/admin/v1/SmtpCredentials`).
    SmtpCredentials,
    /// OAuth 2.0 client credentials (`oAuth2ClientCredentials`, `/admin/v1/OAuth2ClientCredentials`).
    OAuth2ClientCredentials,
    /// Database credentials (`dbCredentials`, `/admin/v1/UserDbCredentials`).
    DbCredentials,
}

impl CredentialType {
    /// In the order of PRODUCT.md's table.
    pub const ALL: [CredentialType; 6] = [
        CredentialType::ApiKeys,
        CredentialType::AuthTokens,
        CredentialType::CustomerSecretKeys,
        CredentialType::SmtpCredentials,
        CredentialType::OAuth2ClientCredentials,
        CredentialType::DbCredentials,
    ];

    /// The attribute in the `userCredentials` extension, e.g. `apiKeys`; also the key of the
    /// report's `lingering` and `revoked` maps.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::ApiKeys => "apiKeys",
            Self::AuthTokens => "authTokens",
            Self::CustomerSecretKeys => "customerSecretKeys",
            Self::SmtpCredentials => "smtpCredentials",
            Self::OAuth2ClientCredentials => "oAuth2ClientCredentials",
            Self::DbCredentials => "dbCredentials",
        }
    }

    /// The attribute's full name, as a read's `attributes` names it.
    pub fn scim_attribute(self) -> &'static str {
        match self {
            Self::ApiKeys => {
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User:apiKeys"
            }
            Self::AuthTokens => {
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User:authTokens"
            }
            Self::CustomerSecretKeys => {
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User:customerSecretKeys"
            }
            Self::SmtpCredentials => {
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User:smtpCredentials"
            }
            Self::OAuth2ClientCredentials => {
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User:oAuth2ClientCredentials"
            }
            Self::DbCredentials => {
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User:dbCredentials"
            }
        }
    }

    /// The resource type's path segment under `/admin/v1/` (`DELETE /admin/v1/<this>/{id}`).
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::ApiKeys => "ApiKeys",
            Self::AuthTokens => "AuthTokens",
            Self::CustomerSecretKeys => "CustomerSecretKeys",
            Self::SmtpCredentials => "SmtpCredentials",
            Self::OAuth2ClientCredentials => "OAuth2ClientCredentials",
            Self::DbCredentials => "UserDbCredentials",
        }
    }

    /// The capability that lets a user create credentials of this type.
    pub fn capability(self) -> Capability {
        match self {
            Self::ApiKeys => Capability::ApiKeys,
            Self::AuthTokens => Capability::AuthTokens,
            Self::CustomerSecretKeys => Capability::CustomerSecretKeys,
            Self::SmtpCredentials => Capability::SmtpCredentials,
            Self::OAuth2ClientCredentials => Capability::OAuth2ClientCredentials,
            Self::DbCredentials => Capability::DbCredentials,
        }
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

impl Serialize for CredentialType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.attribute())
    }
}

/// The credential types some user's profile may turn off under `policy`, so the read asks for
/// exactly those: the default's and every rule's `off`s, and all six when tags can turn anything
/// off. Empty for [`CredentialsMode::Off`].
pub fn types_to_read(policy: &Policy, mode: CredentialsMode) -> Vec<CredentialType> {
    if mode == CredentialsMode::Off {
        return Vec::new();
    }
    CredentialType::ALL
        .into_iter()
        .filter(|t| policy.may_turn_off(t.capability()))
        .collect()
}

/// The `attributes` entries for [`types_to_read`].
pub fn attributes_to_read(policy: &Policy, mode: CredentialsMode) -> Vec<&'static str> {
    types_to_read(policy, mode)
        .into_iter()
        .map(CredentialType::scim_attribute)
        .collect()
}

/// One credential a user holds, as the read listed it: its type and its id (`value`), checked
/// before any path is built from it. Key material is never read into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// What kind of credential it is.
    pub kind: CredentialType,
    /// The credential's SCIM id; `Err` when the domain listed one that is not 32 lower-case hex
    /// digits (counted, logged escaped, never put in a path).
    pub id: Result<CredentialId, NameError>,
}

impl Held {
    /// The id for logs and reasons: as validated, or escaped and cut short when it is not valid.
    pub fn shown_id(&self) -> String {
        match &self.id {
            Ok(id) => id.as_str().to_owned(),
            Err(NameError::CredentialId { value }) => shown(value),
            Err(other) => other.to_string(),
        }
    }
}

/// The credentials of `user` (a SCIM user read with [`attributes_to_read`]) that `profile` leaves
/// without a capability, in [`CredentialType::ALL`] order. Types whose capability is on or unmanaged
/// are not even looked at. `Err` says what in the answer is not the shape asked for (a list of
/// `{value, …}` objects).
pub fn lingering(user: &Value, profile: &Profile) -> Result<Vec<Held>, String> {
    let extension = match user.get(USER_CREDENTIALS_URN) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(ext)) => ext,
        Some(_) => return Err(format!("{USER_CREDENTIALS_URN} is not an object")),
    };
    let mut held = Vec::new();
    for kind in CredentialType::ALL {
        if profile.get(kind.capability()) != Some(false) {
            continue;
        }
        let items = match extension.get(kind.attribute()) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(_) => return Err(format!("userCredentials {kind} is not a list")),
        };
        for item in items {
            let value = item
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("userCredentials {kind}: an entry has no string value"))?;
            held.push(Held {
                kind,
                id: CredentialId::parse(value),
            });
        }
    }
    Ok(held)
}

/// Credential type attribute → how many; serialised as `{"apiKeys": 2, …}`.
pub type Counts = BTreeMap<&'static str, usize>;

/// How many of each type `held` has.
pub fn counts(held: &[Held]) -> Counts {
    let mut counts = Counts::new();
    for h in held {
        *counts.entry(h.kind.attribute()).or_insert(0) += 1;
    }
    counts
}

/// Adds `more` into `total` (summary lines and reconcile totals).
pub fn add_counts(total: &mut Counts, more: &Counts) {
    for (kind, n) in more {
        *total.entry(kind).or_insert(0) += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn user(ext: Value) -> Value {
        json!({ "id": A, USER_CREDENTIALS_URN: ext })
    }

    fn every_type_once() -> Value {
        let mut ext = serde_json::Map::new();
        for kind in CredentialType::ALL {
            ext.insert(kind.attribute().into(), json!([{"value": A, "ocid": "x"}]));
        }
        user(Value::Object(ext))
    }

    #[test]
    fn only_types_whose_capability_the_profile_turns_off_linger() {
        let held = lingering(&every_type_once(), &Profile::default()).unwrap();
        let kinds: Vec<_> = held.iter().map(|h| h.kind).collect();
        // API keys and auth tokens stay on in the baked-in profile; the other four are off.
        assert_eq!(
            kinds,
            [
                CredentialType::CustomerSecretKeys,
                CredentialType::SmtpCredentials,
                CredentialType::OAuth2ClientCredentials,
                CredentialType::DbCredentials
            ]
        );
        // Unmanaged capabilities are never counted.
        let only_api_off = Profile::parse("api_keys=off").unwrap();
        let held = lingering(&every_type_once(), &only_api_off).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].kind, CredentialType::ApiKeys);
        // Turning off a capability with no credential object counts nothing.
        let no_objects = Profile::parse("console_password=off,console=off").unwrap();
        assert!(lingering(&every_type_once(), &no_objects)
            .unwrap()
            .is_empty());
        assert!(lingering(&every_type_once(), &Profile::unmanaged())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn counts_by_type_and_keeps_bad_ids_unusable() {
        let u = user(json!({
            "smtpCredentials": [{"value": A}, {"value": "../../Users/x"}],
            "dbCredentials": []
        }));
        let held = lingering(&u, &Profile::default()).unwrap();
        assert_eq!(counts(&held), Counts::from([("smtpCredentials", 2)]));
        assert!(held[0].id.is_ok());
        assert!(held[1].id.is_err());
        assert_eq!(held[1].shown_id(), "\"../../Users/x\"");
        let mut total = counts(&held);
        add_counts(
            &mut total,
            &Counts::from([("smtpCredentials", 1), ("apiKeys", 3)]),
        );
        assert_eq!(
            total,
            Counts::from([("smtpCredentials", 3), ("apiKeys", 3)])
        );
    }

    #[test]
    fn an_answer_without_the_extension_holds_nothing_and_a_malformed_one_is_refused() {
        assert!(lingering(&json!({"id": A}), &Profile::default())
            .unwrap()
            .is_empty());
        for bad in [
            json!("x"),
            json!({"smtpCredentials": {"value": A}}),
            json!({"smtpCredentials": [{"ocid": "x"}]}),
            json!({"smtpCredentials": [{"value": 5}]}),
        ] {
            assert!(
                lingering(&user(bad.clone()), &Profile::default()).is_err(),
                "{bad}"
            );
        }
        // A malformed list of a capability that stays on is never looked at.
        let u = user(json!({"apiKeys": "oops", "smtpCredentials": [{"value": B}]}));
        assert_eq!(lingering(&u, &Profile::default()).unwrap().len(), 1);
    }

    #[test]
    fn names_paths_and_modes() {
        for kind in CredentialType::ALL {
            assert_eq!(
                kind.scim_attribute(),
                format!("{USER_CREDENTIALS_URN}:{}", kind.attribute())
            );
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.attribute())
            );
        }
        assert_eq!(
            CredentialType::DbCredentials.endpoint(),
            "UserDbCredentials"
        );
        assert_eq!(
            CredentialsMode::parse("Revoke"),
            Some(CredentialsMode::Revoke)
        );
        assert_eq!(CredentialsMode::parse("OFF"), Some(CredentialsMode::Off));
        assert_eq!(CredentialsMode::parse("delete"), None);
        assert_eq!(CredentialsMode::default(), CredentialsMode::Report);
    }

    #[test]
    fn the_read_asks_only_for_types_a_profile_may_turn_off() {
        let default = Policy::default();
        assert_eq!(
            attributes_to_read(&default, CredentialsMode::Report),
            [
                CredentialType::CustomerSecretKeys,
                CredentialType::SmtpCredentials,
                CredentialType::OAuth2ClientCredentials,
                CredentialType::DbCredentials
            ]
            .map(CredentialType::scim_attribute)
        );
        assert!(attributes_to_read(&default, CredentialsMode::Off).is_empty());
        let rule_off = Policy::parse(
            "default = \"smtp_credentials=off\"\n[[rule]]\nname = \"x\"\nusers = [\"a*\"]\ncapabilities = \"api_keys=off\"",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            types_to_read(&rule_off, CredentialsMode::Revoke),
            [CredentialType::ApiKeys, CredentialType::SmtpCredentials]
        );
        let tagged = Policy::parse(
            "default = \"console=on\"",
            None,
            Some(crate::decision::policy::TagNamespace::parse("Sec").unwrap()),
        )
        .unwrap();
        assert_eq!(
            types_to_read(&tagged, CredentialsMode::Report),
            CredentialType::ALL
        );
    }
}
