//! Session-token credentials (resource principal, or a `security_token_file` profile): a JWT
//! used as `ST$<token>` plus the key it is bound to, cached and re-read together.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{CredentialError, Credentials, KeyId, PrivateKey, Secret, SESSION_TOKEN_PREFIX};

/// Re-read this long before `exp` (Go SDK's buffer), so a request never goes out with a token
/// that expires in flight.
const REFRESH_BEFORE_EXP_SECS: u64 = 300;

/// The token claims the function cares about (read without verifying the token's signature;
/// the service does that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The tenancy OCID of the resource the token stands for.
    pub res_tenant: Option<String>,
    /// The compartment OCID of the resource the token stands for.
    pub res_compartment: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawClaims {
    exp: Option<serde_json::Number>,
    res_tenant: Option<String>,
    res_compartment: Option<String>,
}

/// Decodes the payload of a compact JWS. `what` names the source for errors; the token itself
/// never appears in them.
pub(crate) fn decode_claims(token: &str, what: &str) -> Result<TokenClaims, CredentialError> {
    let malformed = |reason: String| CredentialError::MalformedToken {
        what: what.to_owned(),
        reason,
    };
    if token.is_empty() {
        return Err(malformed("is empty".to_owned()));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    {
        return Err(malformed(
            "contains characters outside base64url and `.`".to_owned(),
        ));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed(format!(
            "expected 3 dot-separated parts, found {}",
            parts.len()
        )));
    }
    // Tolerate padding even though JWTs omit it.
    let payload = parts[1].trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed("payload is not base64url".to_owned()))?;
    // serde_json's messages can quote claim values; report only the position.
    let raw: RawClaims = serde_json::from_slice(&bytes).map_err(|e| {
        malformed(format!(
            "payload is not a JSON object with the expected claims (column {})",
            e.column()
        ))
    })?;
    let exp = raw
        .exp
        .ok_or_else(|| malformed("payload has no `exp` claim".to_owned()))?;
    let exp = exp
        .as_u64()
        .or_else(|| {
            exp.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        })
        .ok_or_else(|| malformed("`exp` is not a non-negative number".to_owned()))?;
    Ok(TokenClaims {
        exp,
        res_tenant: raw.res_tenant,
        res_compartment: raw.res_compartment,
    })
}

/// A value that is either read from a file (and can be re-read) or was given inline.
#[derive(Clone)]
pub(crate) enum Source {
    File(PathBuf),
    Content(Secret),
}

impl Source {
    fn is_file(&self) -> bool {
        matches!(self, Source::File(_))
    }

    fn read(&self, what: &str) -> Result<Secret, CredentialError> {
        match self {
            Source::Content(secret) => Ok(secret.clone()),
            Source::File(path) => {
                std::fs::read_to_string(path)
                    .map(Secret::new)
                    .map_err(|source| CredentialError::ReadFile {
                        what: what.to_owned(),
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// "file /path" or "inline value", for Debug output.
    fn describe(&self) -> String {
        match self {
            Source::File(path) => format!("file {}", path.display()),
            Source::Content(_) => "inline value".to_owned(),
        }
    }
}

/// Where a token, its key and the key's passphrase come from; `*_what` name them in errors.
#[derive(Clone)]
pub(crate) struct SessionSpec {
    pub token: Source,
    pub token_what: String,
    pub key: Source,
    pub key_what: String,
    pub passphrase: Option<Source>,
    pub passphrase_what: String,
}

struct Session {
    credentials: Arc<Credentials>,
    claims: TokenClaims,
    /// The PEM text the key came from, to skip re-parsing an unchanged key file.
    key_pem: Secret,
    key: Arc<PrivateKey>,
}

pub(crate) struct SessionCache {
    spec: SessionSpec,
    state: RwLock<Arc<Session>>,
}

impl SessionCache {
    pub(crate) fn load(spec: SessionSpec) -> Result<Self, CredentialError> {
        let session = read_session(&spec, None)?;
        Ok(SessionCache {
            spec,
            state: RwLock::new(Arc::new(session)),
        })
    }

    /// Files can be re-read; inline values cannot change.
    fn rereadable(&self) -> bool {
        self.spec.token.is_file() || self.spec.key.is_file()
    }

    fn current(&self) -> Result<Arc<Session>, CredentialError> {
        self.state
            .read()
            .map(|s| Arc::clone(&s))
            .map_err(|_| CredentialError::Poisoned)
    }

    pub(crate) fn claims(&self) -> Result<TokenClaims, CredentialError> {
        Ok(self.current()?.claims.clone())
    }

    pub(crate) fn credentials(&self, now: SystemTime) -> Result<Arc<Credentials>, CredentialError> {
        let session = self.current()?;
        if !self.rereadable() || !expires_soon(session.claims.exp, now) {
            return Ok(Arc::clone(&session.credentials));
        }
        match self.reload(Some(now)) {
            Ok(credentials) => Ok(credentials),
            // A re-read that fails (a file mid-rotation, say) while the cached session is still
            // valid keeps that session: failing every request for minutes would help no one.
            Err(error) if session.claims.exp > unix_seconds(now) => {
                tracing::warn!(
                    error = %crate::ErrorChain(&error),
                    exp = session.claims.exp,
                    "re-reading the session token failed; the cached session is used until it expires"
                );
                Ok(Arc::clone(&session.credentials))
            }
            Err(error) => Err(error),
        }
    }

    pub(crate) fn refresh(&self) -> Result<Arc<Credentials>, CredentialError> {
        if !self.rereadable() {
            return Ok(Arc::clone(&self.current()?.credentials));
        }
        self.reload(None)
    }

    /// Re-reads token and key under the write lock; on error the cache is left as it was.
    /// With `only_if_stale_at`, a reload that another thread finished meanwhile is reused.
    fn reload(
        &self,
        only_if_stale_at: Option<SystemTime>,
    ) -> Result<Arc<Credentials>, CredentialError> {
        let mut guard = self.state.write().map_err(|_| CredentialError::Poisoned)?;
        if let Some(now) = only_if_stale_at {
            if !expires_soon(guard.claims.exp, now) {
                return Ok(Arc::clone(&guard.credentials));
            }
        }
        let fresh = read_session(&self.spec, Some(&guard))?;
        if fresh.claims.exp != guard.claims.exp {
            tracing::debug!(
                token = %self.spec.token_what,
                exp = fresh.claims.exp,
                "re-read session token and key"
            );
        }
        *guard = Arc::new(fresh);
        Ok(Arc::clone(&guard.credentials))
    }

    /// For Debug output: where each part comes from, never the values.
    pub(crate) fn describe_sources(&self) -> (String, String) {
        (self.spec.token.describe(), self.spec.key.describe())
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub(crate) fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn expires_soon(exp: u64, now: SystemTime) -> bool {
    exp.saturating_sub(unix_seconds(now)) < REFRESH_BEFORE_EXP_SECS
}

fn read_session(
    spec: &SessionSpec,
    previous: Option<&Session>,
) -> Result<Session, CredentialError> {
    let token_text = spec.token.read(&spec.token_what)?;
    // A JWT never holds whitespace; a trailing newline in the file would break the header.
    let token = token_text.expose().trim_ascii();
    let claims = decode_claims(token, &spec.token_what)?;
    let key_pem = spec.key.read(&spec.key_what)?;
    let key = match previous {
        Some(prev) if prev.key_pem == key_pem => Arc::clone(&prev.key),
        _ => {
            let passphrase = match &spec.passphrase {
                Some(source) => Some(read_passphrase(source, &spec.passphrase_what)?),
                None => None,
            };
            let key =
                PrivateKey::from_pem(key_pem.expose(), passphrase.as_ref()).map_err(|source| {
                    CredentialError::Key {
                        what: spec.key_what.clone(),
                        source,
                    }
                })?;
            Arc::new(key)
        }
    };
    let credentials = Credentials {
        key_id: KeyId::new(format!("{SESSION_TOKEN_PREFIX}{token}")),
        key: Arc::clone(&key) as Arc<dyn super::RsaSha256Signer>,
    };
    Ok(Session {
        credentials: Arc::new(credentials),
        claims,
        key_pem,
        key,
    })
}

/// A passphrase file usually ends with the newline `echo` wrote; that is not part of it.
fn read_passphrase(source: &Source, what: &str) -> Result<Secret, CredentialError> {
    let secret = source.read(what)?;
    match source {
        Source::File(_) => Ok(Secret::new(
            secret.expose().trim_end_matches(['\r', '\n']).to_owned(),
        )),
        Source::Content(_) => Ok(secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload_json: &str) -> String {
        format!(
            "eyJhbGciOiJub25lIn0.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload_json)
        )
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let claims = decode_claims(
            &jwt(r#"{"exp":1700000000,"res_tenant":"t","res_compartment":"c","x":[1]}"#),
            "T",
        )
        .unwrap();
        assert_eq!(
            claims,
            TokenClaims {
                exp: 1_700_000_000,
                res_tenant: Some("t".into()),
                res_compartment: Some("c".into())
            }
        );
    }

    #[test]
    fn padded_payload_and_float_exp_are_tolerated() {
        let token = format!(
            "h.{}==.s",
            URL_SAFE_NO_PAD.encode(r#"{"exp":1700000000.5}"#)
        );
        assert_eq!(decode_claims(&token, "T").unwrap().exp, 1_700_000_000);
    }

    #[test]
    fn malformed_tokens_name_the_source_but_not_the_token() {
        let long_value = "A".repeat(60);
        let cases = [
            String::new(),
            "onlyonepart".to_owned(),
            "a.b.c.d".to_owned(),
            "a.!!!.c".to_owned(),
            "a.b c.d".to_owned(),
            jwt(&format!(r#"{{"exp":"{long_value}"}}"#)),
            jwt(&format!(r#"{{"res_tenant":"{long_value}"}}"#)),
            jwt(r#"{"exp":-5}"#),
            jwt("[1,2]"),
        ];
        for token in cases {
            let err = decode_claims(&token, "OCI_RESOURCE_PRINCIPAL_RPST").unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("OCI_RESOURCE_PRINCIPAL_RPST"), "{shown}");
            assert!(!shown.contains(&long_value), "{shown}");
            if token.len() > 8 {
                assert!(!shown.contains(&token), "{shown}");
            }
        }
    }

    #[test]
    fn a_failed_re_read_keeps_a_cached_session_that_is_still_valid() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("rpst");
        let exp = unix_seconds(SystemTime::now()) + 120;
        std::fs::write(&token, jwt(&format!(r#"{{"exp":{exp}}}"#))).unwrap();
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/rp_session_key_pkcs1.pem"
        ))
        .unwrap();
        let cache = SessionCache::load(SessionSpec {
            token: Source::File(token.clone()),
            token_what: "OCI_RESOURCE_PRINCIPAL_RPST".into(),
            key: Source::Content(Secret::new(pem)),
            key_what: "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM".into(),
            passphrase: None,
            passphrase_what: "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE".into(),
        })
        .unwrap();
        // Within the refresh window the token file is re-read; it is gone.
        std::fs::remove_file(&token).unwrap();
        let now = SystemTime::now();
        assert!(
            cache.credentials(now).is_ok(),
            "still valid for two minutes"
        );
        let after = UNIX_EPOCH + std::time::Duration::from_secs(exp + 1);
        assert!(
            cache.credentials(after).is_err(),
            "expired: the failure shows"
        );
    }

    #[test]
    fn refresh_window_is_five_minutes() {
        let at = |s| UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert!(!expires_soon(1000, at(700)));
        assert!(expires_soon(1000, at(701)));
        assert!(expires_soon(1000, at(5000)));
    }
}
