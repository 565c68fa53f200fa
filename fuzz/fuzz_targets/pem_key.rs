//! PEM key loading: `signer::PrivateKey::from_pem`. The first input byte picks the passphrase
//! (none, the test vectors' passphrase, or a wrong one); the rest is the PEM text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::signer::{PrivateKey, RsaSha256Signer, Secret};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(pem) = std::str::from_utf8(rest) else {
        return;
    };
    let right = Secret::from("correct horse battery staple");
    let wrong = Secret::from("wrong");
    let passphrase = match selector % 3 {
        0 => None,
        1 => Some(&right),
        _ => Some(&wrong),
    };
    match PrivateKey::from_pem(pem, passphrase) {
        Ok(key) => {
            // A key that loads must sign, and never show itself in Debug.
            let sig = key
                .sign_pkcs1v15_sha256(b"fuzz")
                .expect("a loaded key signs");
            assert_eq!(sig.len(), key.bits().div_ceil(8));
            assert!(format!("{key:?}").contains("redacted"));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
