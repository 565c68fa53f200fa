//! Errors of the signer. None of them carries a key, token, passphrase or header value: only
//! names, paths and reasons.

use std::path::PathBuf;

/// A value from outside cut to `max` characters, so an error that echoes it stays short.
pub(crate) fn clipped(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The HTTP method is not one OCI signs.
    #[error(
        "method {method:?}: cannot be signed; only GET, HEAD, DELETE, PUT, POST and PATCH can"
    )]
    UnsupportedMethod {
        /// The method as given.
        method: String,
    },
    /// The URL could not be parsed or has no host.
    #[error("url: {reason}")]
    InvalidUrl {
        /// Why, in words.
        reason: String,
    },
    /// The URL carries `user@` information, which is never sent and so cannot be signed.
    #[error("url: carries user information (`user@` before the host); it is not sent, so it cannot be signed")]
    UrlUserInfo,
    /// A header name is not a valid HTTP token.
    #[error("header name {name:?}: {reason}")]
    InvalidHeaderName {
        /// The header's name.
        name: String,
        /// Why, in words.
        reason: &'static str,
    },
    /// A header value cannot be sent as is.
    #[error("header {name}: value {reason}")]
    InvalidHeaderValue {
        /// The header's name.
        name: String,
        /// Why, in words.
        reason: &'static str,
    },
    /// A header was given twice.
    #[error("header {name}: given more than once, so the signed value would be ambiguous")]
    DuplicateHeader {
        /// The header's name.
        name: String,
    },
    /// The key id is empty or holds characters that would break the `Authorization` header.
    #[error("key_id: {reason}")]
    InvalidKeyId {
        /// Why, in words.
        reason: &'static str,
    },
    /// The signing time cannot be written as an HTTP date.
    #[error("now: outside the range an HTTP date can express (1970 to 9999)")]
    ClockOutOfRange,
    /// The RSA operation itself failed.
    #[error("RSA signing failed: {reason}")]
    Rsa {
        /// Why, in words.
        reason: String,
    },
}

/// Why a PEM private key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not PEM.
    #[error("private key: not PEM text (no `-----BEGIN ...-----` line)")]
    NotPem,
    /// The PEM block is of a kind that holds no RSA private key.
    #[error("private key: PEM type {label:?} is not supported; expected RSA PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY")]
    UnsupportedLabel {
        /// The PEM label found.
        label: String,
    },
    /// OpenSSL's legacy encrypted PEM, which is not supported.
    #[error("private key: OpenSSL's legacy encrypted PEM (Proc-Type/DEK-Info headers) is not supported; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD.pem -out NEW.pem`")]
    LegacyEncrypted,
    /// The key is encrypted and no passphrase was given.
    #[error("private key: encrypted PKCS#8 needs a passphrase and none was given")]
    PassphraseRequired,
    /// The encrypted key could not be decrypted.
    #[error("private key: cannot decrypt the encrypted PKCS#8 key (wrong passphrase or damaged key): {reason}")]
    Decrypt {
        /// Why, in words.
        reason: String,
    },
    /// The PEM block does not hold a valid RSA key.
    #[error("private key: not a valid {format} RSA key: {reason}")]
    Parse {
        /// The key format tried (PKCS#1 or PKCS#8).
        format: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// A PKCS#8 key of another algorithm (EC, Ed25519, ...): OCI request signing needs RSA.
    #[error(
        "private key: not an RSA key (PKCS#8 algorithm {algorithm}); OCI request signing needs RSA"
    )]
    NotRsa {
        /// The algorithm's object identifier, dotted.
        algorithm: String,
    },
    /// An RSA key outside the sizes accepted (2048 to 4096 bits).
    #[error("private key: a {bits}-bit RSA key is not supported; use a key of 2048 to 4096 bits")]
    UnsupportedSize {
        /// The modulus size of the key that was given.
        bits: usize,
    },
}

/// Why credentials could not be loaded or refreshed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A required environment variable is not set.
    #[error("{name}: not set")]
    MissingVar {
        /// The header's name.
        name: &'static str,
    },
    /// A required environment variable is empty.
    #[error("{name}: set but empty")]
    EmptyVar {
        /// The header's name.
        name: &'static str,
    },
    /// The resource-principal version is not 2.2.
    #[error("OCI_RESOURCE_PRINCIPAL_VERSION: {found:?} is not supported; only \"2.2\" (token and key handed over ready-made, as OCI Functions does) is")]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// A file could not be read.
    #[error("{what}: cannot read {path}")]
    ReadFile {
        /// What was being loaded (a variable or setting name).
        what: String,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The session token is not a usable JWT.
    #[error("{what}: not a valid session token (JWT): {reason}")]
    MalformedToken {
        /// What was being loaded (a variable or setting name).
        what: String,
        /// Why, in words.
        reason: String,
    },
    /// The private key could not be loaded.
    #[error("{what}")]
    Key {
        /// What was being loaded (a variable or setting name).
        what: String,
        /// The underlying error.
        #[source]
        source: KeyError,
    },
    /// A line of the OCI config file is malformed.
    #[error("{path} line {line}: {reason}")]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// Why, in words.
        reason: &'static str,
    },
    /// The profile is not in the OCI config file.
    #[error("{path}: profile [{profile}] not found")]
    MissingProfile {
        /// The file.
        path: PathBuf,
        /// The profile's name.
        profile: String,
    },
    /// The profile lacks a key it needs.
    #[error("{path}: profile [{profile}] has no {key} (missing or empty, also in [DEFAULT])")]
    MissingConfigKey {
        /// The file.
        path: PathBuf,
        /// The profile's name.
        profile: String,
        /// The config key.
        key: &'static str,
    },
    /// A profile's value has the wrong form.
    #[error("{path}: {key} of profile [{profile}] is malformed: {reason}")]
    InvalidConfigValue {
        /// The file.
        path: PathBuf,
        /// The profile's name.
        profile: String,
        /// The config key.
        key: &'static str,
        /// Why, in words (never the value: it may be mistyped secret material).
        reason: &'static str,
    },
    /// A `~` path cannot be expanded.
    #[error(
        "{path}: {key} of profile [{profile}] starts with `~` but the home directory is unknown"
    )]
    NoHomeDirectory {
        /// The file.
        path: PathBuf,
        /// The profile's name.
        profile: String,
        /// The config key.
        key: &'static str,
    },
    /// A panic elsewhere poisoned the credential cache.
    #[error("credential cache: lock poisoned by a panic in another thread")]
    Poisoned,
}

/// An error and each of its causes, `: `-separated: what a log line or a command line prints. Every
/// error here says only its own part in `Display` and gives its cause as `source()`, so the chain is
/// printed once, at the edge, and never repeats itself.
///
/// ```
/// use oci_signer::ErrorChain;
///
/// #[derive(Debug)]
/// struct Load(std::io::Error);
/// impl std::fmt::Display for Load {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot read key.pem")
///     }
/// }
/// impl std::error::Error for Load {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
/// let error = Load(std::io::Error::other("permission denied"));
/// assert_eq!(ErrorChain(&error).to_string(), "cannot read key.pem: permission denied");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
