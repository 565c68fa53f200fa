//! Resource principal credentials, version 2.2: the platform (OCI Functions) hands over a session
//! token (RPST) and its private key, as files or as values.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::error::clipped;
use super::session::{SessionCache, SessionSpec, Source};
use super::{
    CredentialError, CredentialKind, Credentials, CredentialsProvider, Secret, TokenClaims,
};

const VERSION: &str = "OCI_RESOURCE_PRINCIPAL_VERSION";
const RPST: &str = "OCI_RESOURCE_PRINCIPAL_RPST";
const PRIVATE_PEM: &str = "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM";
const PASSPHRASE: &str = "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE";
const REGION: &str = "OCI_RESOURCE_PRINCIPAL_REGION";
const SUPPORTED_VERSION: &str = "2.2";

/// Resource-principal credentials (`ST$<RPST>` signed with the session key).
pub struct ResourcePrincipal {
    cache: SessionCache,
    region: Option<String>,
}

impl ResourcePrincipal {
    /// Reads OCI_RESOURCE_PRINCIPAL_VERSION (must be "2.2"), _RPST, _PRIVATE_PEM, optional
    /// _PRIVATE_PEM_PASSPHRASE, _REGION through `lookup` (never std::env directly, so tests
    /// don't mutate process env). A value starting with '/' is a path, else the content. Token
    /// trimmed of ASCII whitespace.
    pub fn from_env(
        lookup: &dyn Fn(&str) -> Option<String>,
        now: SystemTime,
    ) -> Result<Self, CredentialError> {
        let version = required(lookup, VERSION)?;
        if version.trim() != SUPPORTED_VERSION {
            return Err(CredentialError::UnsupportedVersion {
                found: clipped(&version, 32),
            });
        }
        let (token, token_what) = source(RPST, required(lookup, RPST)?);
        let (key, key_what) = source(PRIVATE_PEM, required(lookup, PRIVATE_PEM)?);
        let (passphrase, passphrase_what) = match optional(lookup, PASSPHRASE) {
            Some(value) => {
                let (src, what) = source(PASSPHRASE, value);
                (Some(src), what)
            }
            None => (None, PASSPHRASE.to_owned()),
        };
        let region = optional(lookup, REGION).map(|r| r.trim().to_owned());
        let cache = SessionCache::load(SessionSpec {
            token,
            token_what,
            key,
            key_what,
            passphrase,
            passphrase_what,
        })?;
        let provider = ResourcePrincipal { cache, region };
        let exp = provider.claims().exp;
        if exp <= super::session::unix_seconds(now) {
            // Files are re-read on use; an inline token will be refused by the service.
            tracing::warn!(exp, "resource principal session token has already expired");
        }
        Ok(provider)
    }

    /// Claims of the current token.
    pub fn claims(&self) -> TokenClaims {
        // The cache only fails after a panic elsewhere; the token is then reported as expired.
        self.cache.claims().unwrap_or(TokenClaims {
            exp: 0,
            res_tenant: None,
            res_compartment: None,
        })
    }

    /// OCI_RESOURCE_PRINCIPAL_REGION as given (e.g. `us-phoenix-1` or a short code like `iad`).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

fn required(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, CredentialError> {
    let value = lookup(name).ok_or(CredentialError::MissingVar { name })?;
    if value.trim().is_empty() {
        return Err(CredentialError::EmptyVar { name });
    }
    Ok(value)
}

fn optional(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.trim().is_empty())
}

/// The path-or-content rule shared by Python and Go: an absolute path is a file.
fn source(name: &str, value: String) -> (Source, String) {
    if value.starts_with('/') {
        let path = PathBuf::from(value.trim_end_matches(['\r', '\n']));
        let what = format!("{name} (file {})", path.display());
        (Source::File(path), what)
    } else {
        (Source::Content(Secret::new(value)), name.to_owned())
    }
}

impl CredentialsProvider for ResourcePrincipal {
    fn credentials(&self, now: SystemTime) -> Result<Arc<Credentials>, CredentialError> {
        self.cache.credentials(now)
    }

    fn refresh(&self, _now: SystemTime) -> Result<Arc<Credentials>, CredentialError> {
        self.cache.refresh()
    }

    fn describe(&self) -> String {
        "resource principal".to_owned()
    }

    fn kind(&self) -> CredentialKind {
        CredentialKind::ResourcePrincipal
    }
}

impl fmt::Debug for ResourcePrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (token, key) = self.cache.describe_sources();
        f.debug_struct("ResourcePrincipal")
            .field("token", &token)
            .field("key", &key)
            .field("region", &self.region)
            .finish()
    }
}
