//! The capability profile: which of a user's eight capabilities are forced on or off, and the
//! `UserCapabilitiesChanger` body that applies it.
//!
//! ```
//! use oci_user_capabilities::decision::profile::{Capability, CurrentCapabilities, Profile};
//!
//! let profile = Profile::parse("api_keys=on,smtp_credentials=off").unwrap();
//! let current = Capability::ALL
//!     .into_iter()
//!     .fold(CurrentCapabilities::default(), |c, cap| c.with(cap, Some(true)))
//!     .with(Capability::Console, Some(false));
//! let changes = profile.diff(&current);
//! assert_eq!(changes.len(), 1);
//! assert_eq!(changes[0].capability, Capability::SmtpCredentials);
//! // All eight: managed values from the profile, the others copied.
//! assert_eq!(
//!     String::from_utf8(profile.put_body(&current).unwrap()).unwrap(),
//!     concat!(
//!         r#"{"schemas":["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"],"#,
//!         r#""canUseApiKeys":true,"canUseAuthTokens":true,"canUseConsolePassword":true,"#,
//!         r#""canUseCustomerSecretKeys":true,"canUseDbCredentials":true,"#,
//!         r#""canUseOAuth2ClientCredentials":true,"canUseSmtpCredentials":false,"canUseConsole":false}"#
//!     )
//! );
//! ```

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::intake::names::shown;

/// The SCIM schema extension of a user resource that holds the eight `canUse…` booleans.
pub const CAPABILITIES_URN: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:capabilities:User";
/// The Oracle user extension (federation flag, creation mechanism, per-user tags).
pub(crate) const USER_EXTENSION_URN: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User";
/// The schema of the `PUT /admin/v1/UserCapabilitiesChanger/{id}` body.
pub const CHANGER_SCHEMA: &str = "urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger";

/// What `plan` shows for a capability the profile leaves alone.
pub const UNMANAGED_PLACEHOLDER: &str = "<unchanged: depends on the user's current value>";

/// One of the eight capabilities. The discriminant is the index into [`Capability::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// API signing keys (`canUseApiKeys`).
    ApiKeys,
    /// Auth tokens (`canUseAuthTokens`).
    AuthTokens,
    /// A local console password (`canUseConsolePassword`).
    ConsolePassword,
    /// Customer secret keys for the S3-compatible API (`canUseCustomerSecretKeys`).
    CustomerSecretKeys,
    /// Database credentials (`canUseDbCredentials`).
    DbCredentials,
    /// OAuth 2.0 client credentials (`canUseOAuth2ClientCredentials`).
    OAuth2ClientCredentials,
    /// SMTP credentials for Email Delivery (`canUseSmtpCredentials`).
    SmtpCredentials,
    /// Access to the Console (`canUseConsole`).
    Console,
}

impl Capability {
    /// In the order of PRODUCT.md's table, which is also the key order of the PUT body.
    pub const ALL: [Capability; 8] = [
        Capability::ApiKeys,
        Capability::AuthTokens,
        Capability::ConsolePassword,
        Capability::CustomerSecretKeys,
        Capability::DbCredentials,
        Capability::OAuth2ClientCredentials,
        Capability::SmtpCredentials,
        Capability::Console,
    ];

    /// The configuration name, e.g. `api_keys`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::ApiKeys => "api_keys",
            Capability::AuthTokens => "auth_tokens",
            Capability::ConsolePassword => "console_password",
            Capability::CustomerSecretKeys => "customer_secret_keys",
            Capability::DbCredentials => "db_credentials",
            Capability::OAuth2ClientCredentials => "oauth2_client_credentials",
            Capability::SmtpCredentials => "smtp_credentials",
            Capability::Console => "console",
        }
    }

    /// The SCIM attribute, e.g. `canUseApiKeys` (spellings as in the identity-domains SDK models).
    pub fn attribute(self) -> &'static str {
        match self {
            Capability::ApiKeys => "canUseApiKeys",
            Capability::AuthTokens => "canUseAuthTokens",
            Capability::ConsolePassword => "canUseConsolePassword",
            Capability::CustomerSecretKeys => "canUseCustomerSecretKeys",
            Capability::DbCredentials => "canUseDbCredentials",
            Capability::OAuth2ClientCredentials => "canUseOAuth2ClientCredentials",
            Capability::SmtpCredentials => "canUseSmtpCredentials",
            Capability::Console => "canUseConsole",
        }
    }

    /// Exact, case-sensitive match on the configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Why a `CAPABILITIES` value was refused; each variant names the entry and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Nothing but white space.
    #[error("lists no capabilities; expected NAME=on|off entries separated by commas")]
    Empty,
    /// An empty entry between commas.
    #[error("entry {position} is empty (stray comma?)")]
    EmptyEntry {
        /// The entry's 1-based position.
        position: usize,
    },
    /// An entry without `=`.
    #[error("entry {}: expected NAME=on or NAME=off", shown(.entry))]
    MissingValue {
        /// The entry as written (trimmed).
        entry: String,
    },
    /// A name that is not one of the eight capabilities.
    #[error("entry {}: unknown capability {} (known: {})", shown(.entry), shown(.name), known_names())]
    UnknownName {
        /// The entry as written (trimmed).
        entry: String,
        /// The unknown name.
        name: String,
    },
    /// A value that is not a switch (see [`parse_switch`]).
    #[error("entry {}: value {} is not on or off (nor true/false, yes/no, 1/0)", shown(.entry), shown(.value))]
    BadValue {
        /// The entry as written (trimmed).
        entry: String,
        /// The refused value.
        value: String,
    },
    /// A capability set twice.
    #[error("entry {}: capability {name} is listed more than once", shown(.entry))]
    Duplicate {
        /// The second entry naming it, as written (trimmed).
        entry: String,
        /// The capability's configuration name.
        name: &'static str,
    },
}

fn known_names() -> String {
    Capability::ALL.map(Capability::name).join(", ")
}

/// Per capability: `Some(true)` on, `Some(false)` off, `None` unmanaged (left as the user has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    values: [Option<bool>; 8],
}

impl Default for Profile {
    /// PRODUCT.md's baked-in profile: API keys and auth tokens on, every other credential off,
    /// console unmanaged.
    fn default() -> Self {
        let mut values = [Some(false); 8];
        values[Capability::ApiKeys.index()] = Some(true);
        values[Capability::AuthTokens.index()] = Some(true);
        values[Capability::Console.index()] = None;
        Self { values }
    }
}

impl Profile {
    /// Parses `api_keys=on,auth_tokens=off`.
    ///
    /// Names are case-sensitive (as PRODUCT.md writes them). Values follow [`parse_switch`]. ASCII whitespace around
    /// entries, names and values is ignored, so the prose form `api_keys=on, auth_tokens=on`
    /// works. Names not listed are unmanaged; listing nothing is an error.
    pub fn parse(spec: &str) -> Result<Self, ProfileError> {
        let entries = split_list(spec).map_err(|e| match e {
            ListError::Empty => ProfileError::Empty,
            ListError::EmptyEntry { position } => ProfileError::EmptyEntry { position },
        })?;
        let mut values = [None; 8];
        for entry in entries {
            let Some((name, value)) = entry.split_once('=') else {
                return Err(ProfileError::MissingValue {
                    entry: entry.to_owned(),
                });
            };
            let (name, value) = (name.trim_ascii(), value.trim_ascii());
            let capability =
                Capability::from_name(name).ok_or_else(|| ProfileError::UnknownName {
                    entry: entry.to_owned(),
                    name: name.to_owned(),
                })?;
            let on = parse_switch(value).ok_or_else(|| ProfileError::BadValue {
                entry: entry.to_owned(),
                value: value.to_owned(),
            })?;
            let slot = &mut values[capability.index()];
            if slot.is_some() {
                return Err(ProfileError::Duplicate {
                    entry: entry.to_owned(),
                    name: capability.name(),
                });
            }
            *slot = Some(on);
        }
        Ok(Self { values })
    }

    /// The value `c` is forced to; `None` when the profile leaves it alone.
    pub fn get(&self, c: Capability) -> Option<bool> {
        self.values[c.index()]
    }

    /// A profile that manages nothing: every capability is left as the user has it.
    pub fn unmanaged() -> Self {
        Self { values: [None; 8] }
    }

    /// Forces `c` to `on`.
    pub fn set(&mut self, c: Capability, on: bool) {
        self.values[c.index()] = Some(on);
    }

    /// This profile with every capability that `over` manages taken from `over` (a policy rule laid
    /// over the default).
    pub fn overlaid(mut self, over: &Profile) -> Self {
        for (c, on) in over.managed() {
            self.set(c, on);
        }
        self
    }

    /// The configuration names of the capabilities this profile leaves alone, in
    /// [`Capability::ALL`] order.
    pub fn unmanaged_names(&self) -> Vec<&'static str> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.get(*c).is_none())
            .map(Capability::name)
            .collect()
    }

    /// True when this profile manages no capability.
    pub fn is_unmanaged(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The managed capabilities with their target value, in [`Capability::ALL`] order.
    pub fn managed(&self) -> impl Iterator<Item = (Capability, bool)> + '_ {
        Capability::ALL
            .into_iter()
            .filter_map(|c| self.get(c).map(|v| (c, v)))
    }

    /// Managed capabilities whose current value differs (an unknown current value counts as
    /// differing, so a user we cannot read fully is still brought to the profile).
    pub fn diff(&self, current: &CurrentCapabilities) -> Vec<Change> {
        self.managed()
            .filter(|&(c, to)| current.get(c) != Some(to))
            .map(|(capability, to)| Change {
                capability,
                from: current.get(capability),
                to,
            })
            .collect()
    }

    /// The full `UserCapabilitiesChanger` PUT body as compact JSON with keys in
    /// [`Capability::ALL`] order: managed values from the profile, unmanaged ones copied from
    /// `current`, so the result is right whether the service treats an omitted attribute as "keep"
    /// or "reset". An unmanaged capability whose current value is unknown is never guessed: it is
    /// the `Err`, with one exception ([`Profile::omits_console`]): `canUseConsole` came later than
    /// the other seven, and answers without it (Oracle's own samples) get a body without it.
    pub fn put_body(&self, current: &CurrentCapabilities) -> Result<Vec<u8>, Capability> {
        // Written by hand: every key and the schema URN are constants needing no escaping, and
        // the byte layout is then fixed by this code rather than by a map's ordering.
        let mut body = format!("{{\"schemas\":[\"{CHANGER_SCHEMA}\"]");
        for c in Capability::ALL {
            if c == Capability::Console && self.omits_console(current) {
                continue;
            }
            let v = self.get(c).or_else(|| current.get(c)).ok_or(c)?;
            body.push_str(&format!(",\"{}\":{v}", c.attribute()));
        }
        body.push('}');
        Ok(body.into_bytes())
    }

    /// True when [`Profile::put_body`] leaves `canUseConsole` out: the profile does not manage
    /// `console` and the user's answer has no `canUseConsole` (an identity domain, or a sample,
    /// from before the attribute existed). Leaving it out is what Oracle's own function does.
    pub fn omits_console(&self, current: &CurrentCapabilities) -> bool {
        self.get(Capability::Console).is_none() && current.is_absent(Capability::Console)
    }

    /// For the offline `plan` command: managed values as booleans, unmanaged ones as
    /// [`UNMANAGED_PLACEHOLDER`]. (A `serde_json::Value` map orders keys alphabetically.)
    pub fn plan_body(&self) -> Value {
        let mut body = Map::new();
        body.insert("schemas".to_owned(), Value::from(vec![CHANGER_SCHEMA]));
        for c in Capability::ALL {
            let value = match self.get(c) {
                Some(v) => Value::Bool(v),
                None => Value::from(UNMANAGED_PLACEHOLDER),
            };
            body.insert(c.attribute().to_owned(), value);
        }
        Value::Object(body)
    }

    /// `api_keys=on,auth_tokens=on,console_password=off,…` (managed capabilities only); parses
    /// back to the same profile.
    pub fn describe(&self) -> String {
        self.managed()
            .map(|(c, v)| format!("{}={}", c.name(), if v { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when no managed capability differs from `current`.
    pub fn is_satisfied_by(&self, current: &CurrentCapabilities) -> bool {
        self.diff(current).is_empty()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The one switch syntax of the configuration: `on`/`true`/`yes`/`1` and `off`/`false`/`no`/`0`, in
/// any ASCII case (profile values, `DRY_RUN`, per-user tag values).
pub fn parse_switch(value: &str) -> Option<bool> {
    const ON: [&str; 4] = ["on", "true", "yes", "1"];
    const OFF: [&str; 4] = ["off", "false", "no", "0"];
    if ON.iter().any(|t| value.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if OFF.iter().any(|f| value.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// Why a comma-separated list is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListError {
    /// Nothing but white space.
    Empty,
    /// An entry is empty (a stray comma); `position` is 1-based.
    EmptyEntry {
        /// The entry's 1-based position.
        position: usize,
    },
}

/// The one list syntax of the configuration: comma-separated entries with ASCII white space trimmed;
/// an empty list or entry is an error.
pub fn split_list(s: &str) -> Result<Vec<&str>, ListError> {
    if s.trim_ascii().is_empty() {
        return Err(ListError::Empty);
    }
    s.split(',')
        .enumerate()
        .map(|(i, entry)| match entry.trim_ascii() {
            "" => Err(ListError::EmptyEntry { position: i + 1 }),
            entry => Ok(entry),
        })
        .collect()
}

/// A user's capabilities as read from the identity domain; `None` where the value is unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CurrentCapabilities {
    values: [Option<bool>; 8],
    /// Present in the answer but neither a boolean nor null: not the same as absent, which SCIM
    /// (RFC 7643 §2.5) makes equivalent to null.
    garbled: [bool; 8],
}

impl CurrentCapabilities {
    /// From a SCIM user resource (the whole user JSON): reads the [`CAPABILITIES_URN`] object.
    /// A missing extension, missing attribute or non-boolean value becomes `None`.
    pub fn from_user(user: &Value) -> Self {
        let extension = user.get(CAPABILITIES_URN).and_then(Value::as_object);
        let field = |c: Capability| extension.and_then(|ext| ext.get(c.attribute()));
        Self {
            values: Capability::ALL.map(|c| field(c).and_then(Value::as_bool)),
            garbled: Capability::ALL
                .map(|c| field(c).is_some_and(|v| !v.is_boolean() && !v.is_null())),
        }
    }

    /// The user's value of `c`; `None` when the user resource did not say.
    pub fn get(&self, c: Capability) -> Option<bool> {
        self.values[c.index()]
    }

    /// True when the answer had no value for `c` at all (absent or null), as opposed to one that is
    /// not a boolean.
    pub fn is_absent(&self, c: Capability) -> bool {
        self.values[c.index()].is_none() && !self.garbled[c.index()]
    }

    /// Builder, mainly for tests (`None`: absent).
    pub fn with(mut self, c: Capability, v: Option<bool>) -> Self {
        self.values[c.index()] = v;
        self.garbled[c.index()] = false;
        self
    }
}

/// One managed capability that a PUT would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The capability that changes.
    pub capability: Capability,
    /// The user's current value; `None` when it could not be read.
    pub from: Option<bool>,
    /// The value the profile forces.
    pub to: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USERS_LIST: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/idcs-users-listresponse-doc.json"
    ));
    const PUT_REQUEST: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/idcs-usercapabilitieschanger-put-request.json"
    ));

    fn all(v: Option<bool>) -> CurrentCapabilities {
        Capability::ALL
            .into_iter()
            .fold(CurrentCapabilities::default(), |acc, c| acc.with(c, v))
    }

    #[test]
    fn names_and_attributes_match_the_product_table() {
        let table: Vec<(&str, &str)> = Capability::ALL
            .into_iter()
            .map(|c| (c.name(), c.attribute()))
            .collect();
        assert_eq!(
            table,
            [
                ("api_keys", "canUseApiKeys"),
                ("auth_tokens", "canUseAuthTokens"),
                ("console_password", "canUseConsolePassword"),
                ("customer_secret_keys", "canUseCustomerSecretKeys"),
                ("db_credentials", "canUseDbCredentials"),
                ("oauth2_client_credentials", "canUseOAuth2ClientCredentials"),
                ("smtp_credentials", "canUseSmtpCredentials"),
                ("console", "canUseConsole"),
            ]
        );
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.name()), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Capability::from_name("API_KEYS"), None);
        assert_eq!(Capability::from_name("canUseApiKeys"), None);
    }

    #[test]
    fn attributes_match_the_documented_changer_body() {
        let sample: Value = serde_json::from_str(PUT_REQUEST).unwrap();
        let keys: Vec<&String> = sample.as_object().unwrap().keys().collect();
        for c in Capability::ALL {
            // The doc sample predates canUseConsole.
            if c != Capability::Console {
                assert!(keys.iter().any(|k| *k == c.attribute()), "{c}");
            }
        }
        assert_eq!(sample["schemas"][0], CHANGER_SCHEMA);
    }

    #[test]
    fn default_profile_is_the_baked_in_one() {
        let p = Profile::default();
        assert_eq!(
            p.describe(),
            "api_keys=on,auth_tokens=on,console_password=off,customer_secret_keys=off,\
             db_credentials=off,oauth2_client_credentials=off,smtp_credentials=off"
        );
        assert_eq!(p.get(Capability::Console), None);
        assert_eq!(Profile::parse(&p.describe()).unwrap(), p);
    }

    #[test]
    fn parse_accepts_on_off_true_false_and_spaces() {
        let p =
            Profile::parse(" api_keys = on , auth_tokens=OFF,console=true,smtp_credentials=False")
                .unwrap();
        assert_eq!(p.get(Capability::ApiKeys), Some(true));
        assert_eq!(p.get(Capability::AuthTokens), Some(false));
        assert_eq!(p.get(Capability::Console), Some(true));
        assert_eq!(p.get(Capability::SmtpCredentials), Some(false));
        assert_eq!(p.get(Capability::DbCredentials), None);
        assert_eq!(
            p.describe(),
            "api_keys=on,auth_tokens=off,smtp_credentials=off,console=on"
        );
        // The prose form in PRODUCT.md.
        let prose = "api_keys=on, auth_tokens=on, console_password=off, customer_secret_keys=off, \
                     db_credentials=off, oauth2_client_credentials=off, smtp_credentials=off";
        assert_eq!(Profile::parse(prose).unwrap(), Profile::default());
    }

    #[test]
    fn parse_errors_name_the_entry_and_reason() {
        let err = |s: &str| Profile::parse(s).unwrap_err();
        assert_eq!(err(""), ProfileError::Empty);
        assert_eq!(err("  "), ProfileError::Empty);
        assert_eq!(
            err("api_keys=on,,auth_tokens=on"),
            ProfileError::EmptyEntry { position: 2 }
        );
        assert_eq!(
            err("api_keys=on,"),
            ProfileError::EmptyEntry { position: 2 }
        );
        assert_eq!(
            err("api_keys"),
            ProfileError::MissingValue {
                entry: "api_keys".into()
            }
        );
        assert!(matches!(
            err("API_KEYS=on"),
            ProfileError::UnknownName { .. }
        ));
        assert!(matches!(
            err("api-keys=on"),
            ProfileError::UnknownName { .. }
        ));
        assert!(matches!(
            err("api_keys=maybe"),
            ProfileError::BadValue { .. }
        ));
        assert!(matches!(err("api_keys="), ProfileError::BadValue { .. }));
        assert!(matches!(
            err("api_keys=on,api_keys=off"),
            ProfileError::Duplicate {
                name: "api_keys",
                ..
            }
        ));

        assert_eq!(
            err("api_kyes=on").to_string(),
            "entry \"api_kyes=on\": unknown capability \"api_kyes\" (known: api_keys, auth_tokens, \
             console_password, customer_secret_keys, db_credentials, oauth2_client_credentials, \
             smtp_credentials, console)"
        );
        assert_eq!(
            err("smtp_credentials=maybe").to_string(),
            "entry \"smtp_credentials=maybe\": value \"maybe\" is not on or off (nor true/false, yes/no, 1/0)"
        );
        assert_eq!(
            err("console=on,console=off").to_string(),
            "entry \"console=off\": capability console is listed more than once"
        );
        assert_eq!(
            err("a,b").to_string(),
            "entry \"a\": expected NAME=on or NAME=off"
        );
        // The list's shape is checked before its entries.
        assert_eq!(err("a,,b"), ProfileError::EmptyEntry { position: 2 });
    }

    #[test]
    fn current_capabilities_from_the_documented_user() {
        let list: Value = serde_json::from_str(USERS_LIST).unwrap();
        let current = CurrentCapabilities::from_user(&list["Resources"][0]);
        for c in Capability::ALL {
            let expected = if c == Capability::Console {
                None
            } else {
                Some(true)
            };
            assert_eq!(current.get(c), expected, "{c}");
        }
    }

    #[test]
    fn current_capabilities_are_tolerant() {
        assert_eq!(CurrentCapabilities::from_user(&json!(null)), all(None));
        assert_eq!(CurrentCapabilities::from_user(&json!({})), all(None));
        assert_eq!(
            CurrentCapabilities::from_user(&json!({ CAPABILITIES_URN: "x" })),
            all(None)
        );
        let user = json!({ CAPABILITIES_URN: {
            "canUseApiKeys": "true", "canUseAuthTokens": null, "canUseConsole": false,
            "canUseDbCredentials": 1 } });
        let current = CurrentCapabilities::from_user(&user);
        for c in Capability::ALL
            .into_iter()
            .filter(|c| *c != Capability::Console)
        {
            assert_eq!(current.get(c), None, "{c}");
        }
        assert_eq!(current.get(Capability::Console), Some(false));
        // A string or a number is not absent; null and a missing key are.
        assert!(!current.is_absent(Capability::ApiKeys));
        assert!(!current.is_absent(Capability::DbCredentials));
        assert!(current.is_absent(Capability::AuthTokens));
        assert!(current.is_absent(Capability::SmtpCredentials));
    }

    #[test]
    fn put_body_default_profile_all_true_console_false() {
        let current = all(Some(true)).with(Capability::Console, Some(false));
        let body = Profile::default().put_body(&current).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            concat!(
                r#"{"schemas":["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"],"#,
                r#""canUseApiKeys":true,"canUseAuthTokens":true,"canUseConsolePassword":false,"#,
                r#""canUseCustomerSecretKeys":false,"canUseDbCredentials":false,"#,
                r#""canUseOAuth2ClientCredentials":false,"canUseSmtpCredentials":false,"#,
                r#""canUseConsole":false}"#
            )
        );
    }

    #[test]
    fn put_body_refuses_an_unknown_unmanaged_value_and_never_carries_fewer_than_eight() {
        let current = all(Some(true)).with(Capability::DbCredentials, None);
        let keeps_db = Profile::parse("api_keys=off").unwrap();
        assert_eq!(keeps_db.put_body(&current), Err(Capability::DbCredentials));
        // A managed value that is unknown is not needed: the profile gives it.
        let current = all(Some(true)).with(Capability::SmtpCredentials, None);
        let body: Value =
            serde_json::from_slice(&Profile::default().put_body(&current).unwrap()).unwrap();
        assert_eq!(
            body.as_object().unwrap().len(),
            9,
            "schemas and eight booleans"
        );
    }

    #[test]
    fn an_unmanaged_console_the_user_lacks_is_left_out_and_nothing_else_is() {
        let seven = all(Some(true)).with(Capability::Console, None);
        let profile = Profile::default();
        assert!(profile.omits_console(&seven));
        let body: Value = serde_json::from_slice(&profile.put_body(&seven).unwrap()).unwrap();
        let body = body.as_object().unwrap();
        assert_eq!(body.len(), 8, "schemas and seven booleans: {body:?}");
        assert!(!body.contains_key("canUseConsole"));
        // Managed console: the profile gives the value, nothing is left out.
        let manages = Profile::parse("console=off").unwrap();
        assert!(!manages.omits_console(&seven));
        assert!(String::from_utf8(manages.put_body(&seven).unwrap())
            .unwrap()
            .ends_with(r#""canUseConsole":false}"#));
        // Another missing unmanaged capability still refuses the body.
        let keeps_smtp = Profile::parse("api_keys=off").unwrap();
        assert_eq!(
            keeps_smtp.put_body(&seven.with(Capability::SmtpCredentials, None)),
            Err(Capability::SmtpCredentials)
        );
        // The user has the attribute: it is copied as always.
        assert!(!profile.omits_console(&all(Some(true))));
        // Present but not a boolean is not absent: the body cannot be built.
        let garbled = CurrentCapabilities::from_user(&json!({ CAPABILITIES_URN: {
            "canUseApiKeys": true, "canUseAuthTokens": true, "canUseConsole": "true"
        }}));
        assert!(!profile.omits_console(&garbled));
        assert_eq!(profile.put_body(&garbled), Err(Capability::Console));
        let null = CurrentCapabilities::from_user(&json!({ CAPABILITIES_URN: {
            "canUseApiKeys": true, "canUseAuthTokens": true, "canUseConsole": null
        }}));
        assert!(profile.omits_console(&null));
    }

    #[test]
    fn put_body_is_valid_json_and_managed_values_win() {
        let profile = Profile::parse("console=on,api_keys=off").unwrap();
        let current = all(Some(false)).with(Capability::SmtpCredentials, Some(true));
        let body: Value = serde_json::from_slice(&profile.put_body(&current).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "schemas": [CHANGER_SCHEMA],
                "canUseApiKeys": false, "canUseAuthTokens": false, "canUseConsolePassword": false,
                "canUseCustomerSecretKeys": false, "canUseDbCredentials": false,
                "canUseOAuth2ClientCredentials": false, "canUseSmtpCredentials": true,
                "canUseConsole": true,
            })
        );
        // Nothing known: the first unmanaged capability is what is missing.
        assert_eq!(profile.put_body(&all(None)), Err(Capability::AuthTokens));
    }

    #[test]
    fn diff_lists_managed_differences_including_unknown() {
        let p = Profile::default();
        let current = all(Some(true))
            .with(Capability::DbCredentials, None)
            .with(Capability::AuthTokens, None)
            .with(Capability::Console, Some(true));
        let changes = p.diff(&current);
        let expected = [
            (Capability::AuthTokens, None, true),
            (Capability::ConsolePassword, Some(true), false),
            (Capability::CustomerSecretKeys, Some(true), false),
            (Capability::DbCredentials, None, false),
            (Capability::OAuth2ClientCredentials, Some(true), false),
            (Capability::SmtpCredentials, Some(true), false),
        ]
        .map(|(capability, from, to)| Change {
            capability,
            from,
            to,
        });
        assert_eq!(changes, expected);
        assert!(!p.is_satisfied_by(&current));

        let compliant = all(Some(false))
            .with(Capability::ApiKeys, Some(true))
            .with(Capability::AuthTokens, Some(true))
            .with(Capability::Console, None);
        assert!(p.diff(&compliant).is_empty());
        assert!(p.is_satisfied_by(&compliant));
    }

    #[test]
    fn plan_body_shows_placeholders_for_unmanaged() {
        let body = Profile::default().plan_body();
        assert_eq!(body["schemas"], json!([CHANGER_SCHEMA]));
        assert_eq!(body["canUseApiKeys"], json!(true));
        assert_eq!(body["canUseSmtpCredentials"], json!(false));
        assert_eq!(body["canUseConsole"], json!(UNMANAGED_PLACEHOLDER));
        assert_eq!(body.as_object().unwrap().len(), 9);
    }

    #[test]
    fn managed_iterates_in_table_order() {
        let p = Profile::parse("console=off,api_keys=on").unwrap();
        let managed: Vec<_> = p.managed().collect();
        assert_eq!(
            managed,
            [(Capability::ApiKeys, true), (Capability::Console, false)]
        );
        assert_eq!(p.to_string(), "api_keys=on,console=off");
    }
}
