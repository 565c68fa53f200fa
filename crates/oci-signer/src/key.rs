//! RSA private keys from PEM, kept ready to sign.
//!
//! Decoding (PEM, PKCS#1, PKCS#8, encrypted PKCS#8) is done by the RustCrypto `pkcs1`/`pkcs8`
//! crates, which only parse and decrypt containers; the key itself goes to AWS-LC (`aws-lc-rs`) as
//! PKCS#1 DER, and every private-key operation happens there: constant-time modular exponentiation
//! with blinding, and about 7 times faster than the pure-Rust `rsa` crate.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use pkcs8::der::{Decode, SecretDocument};
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};

use super::{KeyError, Secret, SignError};

/// Something that signs with RSASSA-PKCS1-v1_5 / SHA-256 (a key in memory, or an HSM later).
pub trait RsaSha256Signer: Send + Sync {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message`.
    fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Smallest modulus accepted, in bits: OCI's own minimum for API signing keys, and what current
/// guidance (NIST SP 800-131A) still allows.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest modulus accepted, in bits: the largest OCI accepts for API signing keys. Larger keys would
/// cost several times the CPU per request for nothing.
pub const MAX_KEY_BITS: usize = 4096;

/// An RSA private key, parsed once and ready to sign.
pub struct PrivateKey {
    key_pair: RsaKeyPair,
    bits: usize,
}

/// `rsaEncryption` (RFC 8017, appendix A.1), the algorithm of an RSA key in PKCS#8.
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

const LEGACY_ENCRYPTION_MARKERS: [&str; 2] = ["Proc-Type:", "DEK-Info:"];

impl PrivateKey {
    /// Loads PKCS#1 (`RSA PRIVATE KEY`), PKCS#8 (`PRIVATE KEY`) or encrypted PKCS#8
    /// (`ENCRYPTED PRIVATE KEY`, needs `passphrase`) holding an RSA key of 2048 to 4096 bits. A
    /// passphrase given for an unencrypted key is ignored, as Go's SDK does. OpenSSL's legacy
    /// `Proc-Type`/`DEK-Info` encryption is refused with the command that converts it.
    pub fn from_pem(pem: &str, passphrase: Option<&Secret>) -> Result<Self, KeyError> {
        let text = pem.trim();
        match pem_label(text)? {
            "RSA PRIVATE KEY" => {
                if LEGACY_ENCRYPTION_MARKERS.iter().any(|m| text.contains(m)) {
                    return Err(KeyError::LegacyEncrypted);
                }
                let der = pem_body(text, "PKCS#1")?;
                Self::from_pkcs1_der(der.as_bytes(), "PKCS#1")
            }
            "PRIVATE KEY" => {
                let der = pem_body(text, "PKCS#8")?;
                Self::from_pkcs8_der(der.as_bytes(), "PKCS#8")
            }
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.ok_or(KeyError::PassphraseRequired)?;
                let der = pem_body(text, "encrypted PKCS#8")?;
                let encrypted = EncryptedPrivateKeyInfo::from_der(der.as_bytes()).map_err(|e| {
                    KeyError::Parse {
                        format: "encrypted PKCS#8",
                        reason: e.to_string(),
                    }
                })?;
                let plain = encrypted
                    .decrypt(passphrase.expose().as_bytes())
                    .map_err(|e| KeyError::Decrypt {
                        reason: e.to_string(),
                    })?;
                Self::from_pkcs8_der(plain.as_bytes(), "encrypted PKCS#8")
            }
            other => Err(KeyError::UnsupportedLabel {
                label: other.to_owned(),
            }),
        }
    }

    /// A PKCS#8 `PrivateKeyInfo`: must say rsaEncryption; its payload is the PKCS#1 key.
    fn from_pkcs8_der(der: &[u8], format: &'static str) -> Result<Self, KeyError> {
        let info = PrivateKeyInfo::from_der(der).map_err(|e| KeyError::Parse {
            format,
            reason: e.to_string(),
        })?;
        if info.algorithm.oid != RSA_ENCRYPTION {
            return Err(KeyError::NotRsa {
                algorithm: info.algorithm.oid.to_string(),
            });
        }
        Self::from_pkcs1_der(info.private_key, format)
    }

    /// A PKCS#1 `RSAPrivateKey`. Its structure and size are checked here, so a refusal can say what
    /// is wrong; AWS-LC then parses it again and checks the key's consistency.
    fn from_pkcs1_der(der: &[u8], format: &'static str) -> Result<Self, KeyError> {
        let parsed = pkcs1::RsaPrivateKey::from_der(der).map_err(|e| KeyError::Parse {
            format,
            reason: e.to_string(),
        })?;
        let bits = bit_length(parsed.modulus.as_bytes());
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(KeyError::UnsupportedSize { bits });
        }
        let key_pair = RsaKeyPair::from_der(der).map_err(|e| KeyError::Parse {
            format,
            reason: format!("refused by AWS-LC: {e}"),
        })?;
        Ok(PrivateKey { key_pair, bits })
    }

    /// The public key as DER `SubjectPublicKeyInfo` (what a `PUBLIC KEY` PEM holds).
    pub fn public_key_der(&self) -> Result<Vec<u8>, SignError> {
        let der = self
            .key_pair
            .public_key()
            .as_der()
            .map_err(|_| SignError::Rsa {
                reason: "cannot encode the public key".to_owned(),
            })?;
        Ok(der.as_ref().to_vec())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }
}

/// Bits of a big-endian unsigned integer, leading zero bytes and bits not counted.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.iter().position(|b| *b != 0) {
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
        None => 0,
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

/// The DER inside the PEM armour (RFC 7468, strict), wiped from memory when dropped.
fn pem_body(text: &str, format: &'static str) -> Result<SecretDocument, KeyError> {
    let (_, der) = SecretDocument::from_pem(text).map_err(|e| KeyError::Parse {
        format,
        reason: e.to_string(),
    })?;
    Ok(der)
}

impl RsaSha256Signer for PrivateKey {
    fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // PKCS#1 v1.5 is deterministic; AWS-LC blinds the private-key operation itself and does not
        // use the random source passed here.
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| SignError::Rsa {
                reason: "AWS-LC refused to sign".to_owned(),
            })?;
        Ok(signature)
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

    #[test]
    fn an_ec_key_in_pkcs8_is_named_not_rsa() {
        // A P-256 key in PKCS#8 (throwaway, made for this test with `openssl genpkey`).
        let pem = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2cTuRMfIdf6bhmt4
rX10i8nyrx/3s5uXO7apZR/svTGhRANCAATWlxbiDYY0TXEThVP9KfFt5rtEpdbb
+GC64asuY9Tw6r4prx8FH1DmGYrSQ35Fxkh62IRqPsEx3DxmD+eX+bTH
-----END PRIVATE KEY-----";
        let err = PrivateKey::from_pem(pem, None).unwrap_err();
        assert!(matches!(err, KeyError::NotRsa { .. }), "{err:?}");
        assert!(err.to_string().contains("1.2.840.10045.2.1"), "{err}");
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f; 256]), 2047);
        assert_eq!(bit_length(&[0xff; 256]), 2048);
    }
}
