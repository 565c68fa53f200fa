//! RSA private keys from PEM, kept ready to sign.

use std::fmt;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use super::{KeyError, Secret, SignError};

/// Something that signs with RSASSA-PKCS1-v1_5 / SHA-256 (a key in memory, or an HSM later).
pub trait RsaSha256Signer: Send + Sync {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message`.
    fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// An RSA private key with its signing state prepared once (CRT values, digest prefix).
pub struct PrivateKey {
    signing_key: SigningKey<Sha256>,
    public: RsaPublicKey,
}

const LEGACY_ENCRYPTION_MARKERS: [&str; 2] = ["Proc-Type:", "DEK-Info:"];

impl PrivateKey {
    /// Loads PKCS#1 (`RSA PRIVATE KEY`), PKCS#8 (`PRIVATE KEY`) or encrypted PKCS#8
    /// (`ENCRYPTED PRIVATE KEY`, needs `passphrase`). A passphrase given for an unencrypted key
    /// is ignored, as Go's SDK does. OpenSSL's legacy `Proc-Type`/`DEK-Info` encryption is
    /// refused with the command that converts it.
    pub fn from_pem(pem: &str, passphrase: Option<&Secret>) -> Result<Self, KeyError> {
        let text = pem.trim();
        let key = match pem_label(text)? {
            "RSA PRIVATE KEY" => {
                if LEGACY_ENCRYPTION_MARKERS.iter().any(|m| text.contains(m)) {
                    return Err(KeyError::LegacyEncrypted);
                }
                RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| KeyError::Parse {
                    format: "PKCS#1",
                    reason: e.to_string(),
                })?
            }
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_pem(text).map_err(|e| KeyError::Parse {
                format: "PKCS#8",
                reason: e.to_string(),
            })?,
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.ok_or(KeyError::PassphraseRequired)?;
                RsaPrivateKey::from_pkcs8_encrypted_pem(text, passphrase.expose().as_bytes())
                    .map_err(|e| KeyError::Decrypt {
                        reason: e.to_string(),
                    })?
            }
            other => {
                return Err(KeyError::UnsupportedLabel {
                    label: other.to_owned(),
                })
            }
        };
        let public = key.to_public_key();
        Ok(PrivateKey {
            signing_key: SigningKey::<Sha256>::new(key),
            public,
        })
    }

    /// The public half, for verifying signatures in tests.
    pub fn public_key(&self) -> RsaPublicKey {
        self.public.clone()
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.public.n().bits()
    }
}

/// The type word of the first `-----BEGIN <label>-----` line.
fn pem_label(text: &str) -> Result<&str, KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    let first_line = text.lines().next().unwrap_or("").trim_end();
    let rest = first_line.strip_prefix(BEGIN).ok_or(KeyError::NotPem)?;
    let label = rest.strip_suffix("-----").ok_or(KeyError::NotPem)?;
    // Labels are short upper-case words; anything else is not something we should echo.
    if label.len() > 40 || !label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
        return Err(KeyError::NotPem);
    }
    Ok(label)
}

impl RsaSha256Signer for PrivateKey {
    fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // The randomised form blinds the private-key operation against timing attacks; the
        // signature itself is deterministic either way.
        let signature = self
            .signing_key
            .try_sign_with_rng(&mut rsa::rand_core::OsRng, message)
            .map_err(|e| SignError::Rsa {
                reason: e.to_string(),
            })?;
        Ok(signature.to_vec())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<redacted>, {} bits)", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_of_common_pem_types() {
        assert_eq!(
            pem_label("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").unwrap(),
            "PRIVATE KEY"
        );
        assert!(matches!(pem_label("not a key"), Err(KeyError::NotPem)));
        assert!(matches!(pem_label(""), Err(KeyError::NotPem)));
        assert!(matches!(
            pem_label("-----BEGIN secret stuff-----"),
            Err(KeyError::NotPem)
        ));
    }

    #[test]
    fn other_pem_types_are_named() {
        let err = PrivateKey::from_pem(
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("EC PRIVATE KEY"), "{err}");
    }

    #[test]
    fn encrypted_key_without_passphrase_is_refused() {
        let err = PrivateKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
            None,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::PassphraseRequired));
    }

    #[test]
    fn legacy_encryption_gets_the_conversion_hint() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----";
        let err = PrivateKey::from_pem(pem, None).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    }
}
