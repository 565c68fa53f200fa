//! OCI HTTP request signing (draft-cavage "Signature" scheme, rsa-sha256) and the credential
//! providers that feed it: resource principals (OCI Functions, version 2.2) and profiles of an
//! OCI config file (API key or session token).
//!
//! The signer is a pure function of the request, the key id, the key and the time, so every
//! output can be checked against the vectors produced with Oracle's Python SDK. This module knows
//! nothing about Fn or identity domains.
//!
//! RSA signing runs in AWS-LC (`aws-lc-rs`), constant-time; keys are decoded from PEM with the
//! `pkcs1`/`pkcs8` crates. The `fips` feature switches to AWS-LC's FIPS 140-3 module (its build needs
//! CMake and Go; see the README).
//!
//! ```no_run
//! use std::time::SystemTime;
//! use oci_signer::{sign_request, CredentialsProvider, ResourcePrincipal, SignableRequest};
//!
//! let lookup = |name: &str| std::env::var(name).ok();
//! let provider = ResourcePrincipal::from_env(&lookup, SystemTime::now())?;
//! let creds = provider.credentials(SystemTime::now())?;
//! let body = br#"{"canUseApiKeys":false}"#;
//! let signed = sign_request(
//!     &SignableRequest {
//!         method: "PUT",
//!         url: "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com/admin/v1/UserCapabilitiesChanger/4b2f0c1d9e8a47b6a1c3d5e7f9081a2b",
//!         headers: &[],
//!         body,
//!     },
//!     &creds.key_id,
//!     creds.key.as_ref(),
//!     SystemTime::now(),
//! )?;
//! for (name, value) in signed.headers() {
//!     // hand each header to the HTTP client, together with exactly `body`
//!     let _ = (name, value);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod key;
mod oci_config;
mod resource_principal;
mod session;
mod sign;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

pub use error::{CredentialError, ErrorChain, KeyError, SignError};
pub use key::{PrivateKey, RsaSha256Signer, MAX_KEY_BITS, MIN_KEY_BITS};
pub use oci_config::{default_oci_config_path, ApiKeyProvider};
pub use resource_principal::ResourcePrincipal;
pub use session::TokenClaims;
pub use sign::{sign_request, SignableRequest, SignedRequest};

/// Entry points for the fuzz targets in `fuzz/`; not part of the crate's API.
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::HashMap;
    use std::path::Path;

    use super::{CredentialError, TokenClaims};

    /// The unverified JWT claim decoder used for resource-principal and session tokens.
    pub fn decode_claims(token: &str) -> Result<TokenClaims, CredentialError> {
        super::session::decode_claims(token, "fuzz token")
    }

    /// The OCI config file parser: section name to (lower-cased key to value).
    pub fn parse_oci_config(
        text: &str,
    ) -> Result<HashMap<String, HashMap<String, String>>, CredentialError> {
        super::oci_config::parse_ini(text, Path::new("fuzz-config"))
    }
}

/// A secret string (passphrase, token text, PEM text). Never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `keyId` of the Authorization header: `ST$<session token>` for resource principals and
/// session-token profiles, `<tenancy>/<user>/<fingerprint>` for API keys.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyId(String);

/// Prefix of keyIds that carry a bearer-like session token.
const SESSION_TOKEN_PREFIX: &str = "ST$";

impl KeyId {
    /// Wraps a key id (`<tenancy>/<user>/<fingerprint>` for an API key, `ST$<token>` for a session).
    pub fn new(value: String) -> Self {
        KeyId(value)
    }

    /// The keyId as it goes into the Authorization header; it may hold a session token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A session token is a credential in its own right; an API keyId is public data.
        if self.0.starts_with(SESSION_TOKEN_PREFIX) {
            write!(f, "KeyId(\"ST$<redacted, {} chars>\")", self.0.len())
        } else {
            write!(f, "KeyId({:?})", self.0)
        }
    }
}

/// A key id and the key that signs for it, always handed out together so a rotated pair stays
/// matched.
#[derive(Clone)]
pub struct Credentials {
    /// The `keyId` the signature names.
    pub key_id: KeyId,
    /// The key that signs for `key_id`.
    pub key: Arc<dyn RsaSha256Signer>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

/// What kind of principal a [`CredentialsProvider`] signs as; callers use it to say what to check
/// when a service refuses the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialKind {
    /// The function's resource principal (a dynamic group's member).
    ResourcePrincipal,
    /// A user's API key from an OCI config profile.
    ApiKey,
    /// A session token from an OCI config profile (`oci session authenticate`).
    SessionToken,
}

/// Where signing credentials come from.
pub trait CredentialsProvider: Send + Sync + fmt::Debug {
    /// Current credentials; re-reads token+key together (files mode) when the token is within
    /// 5 min of exp.
    fn credentials(&self, now: SystemTime) -> Result<Arc<Credentials>, CredentialError>;
    /// Forced re-read (after an HTTP 401), then the caller retries once.
    fn refresh(&self, now: SystemTime) -> Result<Arc<Credentials>, CredentialError>;
    /// Short label for logs, e.g. "resource principal", "api key (profile DEFAULT)".
    fn describe(&self) -> String;
    /// The kind of principal these credentials sign as.
    fn kind(&self) -> CredentialKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn session_key_id_is_redacted_but_api_key_id_is_not() {
        let st = KeyId::new("ST$eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln".to_owned());
        let shown = format!("{st:?}");
        assert_eq!(shown, "KeyId(\"ST$<redacted, 41 chars>\")");
        let api = KeyId::new("ocid1.tenancy.oc1..t/ocid1.user.oc1..u/aa:bb".to_owned());
        assert!(format!("{api:?}").contains("ocid1.user.oc1..u"));
    }
}
