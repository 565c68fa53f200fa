//! Errors of the signer. None of them carries a key, token, passphrase or header value: only
//! names, paths and reasons.

use std::path::PathBuf;

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error(
        "method {method:?}: cannot be signed; only GET, HEAD, DELETE, PUT, POST and PATCH can"
    )]
    UnsupportedMethod { method: String },
    #[error("url: {reason}")]
    InvalidUrl { reason: String },
    #[error("url: carries user information (`user@` before the host); it is not sent, so it cannot be signed")]
    UrlUserInfo,
    #[error("header name {name:?}: {reason}")]
    InvalidHeaderName { name: String, reason: &'static str },
    #[error("header {name}: value {reason}")]
    InvalidHeaderValue { name: String, reason: &'static str },
    #[error("header {name}: given more than once, so the signed value would be ambiguous")]
    DuplicateHeader { name: String },
    #[error("key_id: {reason}")]
    InvalidKeyId { reason: &'static str },
    #[error("now: outside the range an HTTP date can express (1970 to 9999)")]
    ClockOutOfRange,
    #[error("RSA signing failed: {reason}")]
    Rsa { reason: String },
}

/// Why a PEM private key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("private key: not PEM text (no `-----BEGIN ...-----` line)")]
    NotPem,
    #[error("private key: PEM type {label:?} is not supported; expected RSA PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY")]
    UnsupportedLabel { label: String },
    #[error("private key: OpenSSL's legacy encrypted PEM (Proc-Type/DEK-Info headers) is not supported; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD.pem -out NEW.pem`")]
    LegacyEncrypted,
    #[error("private key: encrypted PKCS#8 needs a passphrase and none was given")]
    PassphraseRequired,
    #[error("private key: cannot decrypt the encrypted PKCS#8 key (wrong passphrase or damaged key): {reason}")]
    Decrypt { reason: String },
    #[error("private key: not a valid {format} RSA key: {reason}")]
    Parse {
        format: &'static str,
        reason: String,
    },
}

/// Why credentials could not be loaded or refreshed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("{name}: not set")]
    MissingVar { name: &'static str },
    #[error("{name}: set but empty")]
    EmptyVar { name: &'static str },
    #[error("OCI_RESOURCE_PRINCIPAL_VERSION: {found:?} is not supported; only \"2.2\" (token and key handed over ready-made, as OCI Functions does) is")]
    UnsupportedVersion { found: String },
    #[error("{what}: cannot read {path}: {source}")]
    ReadFile {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not a valid session token (JWT): {reason}")]
    MalformedToken { what: String, reason: String },
    #[error("{what}: {source}")]
    Key {
        what: String,
        #[source]
        source: KeyError,
    },
    #[error("{path} line {line}: {reason}")]
    ConfigSyntax {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("{path}: profile [{profile}] not found")]
    MissingProfile { path: PathBuf, profile: String },
    #[error("{path}: profile [{profile}] has no {key} (missing or empty, also in [DEFAULT])")]
    MissingConfigKey {
        path: PathBuf,
        profile: String,
        key: &'static str,
    },
    #[error(
        "{path}: {key} of profile [{profile}] starts with `~` but the home directory is unknown"
    )]
    NoHomeDirectory {
        path: PathBuf,
        profile: String,
        key: &'static str,
    },
    #[error("credential cache: lock poisoned by a panic in another thread")]
    Poisoned,
}
