//! Measures one request signature (signing string + RSA-2048 PKCS#1 v1.5 + headers) with the
//! test-vector key: `cargo run --release --example sign_timing`.

use std::time::{Duration, Instant, SystemTime};

use oci_user_capabilities::signer::{sign_request, KeyId, PrivateKey, SignableRequest};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::Signer;
use rsa::RsaPrivateKey;
use sha2::Sha256;

const KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/oci-signer/tests/vectors/rp_session_key_pkcs1.pem"
);
const ROUNDS: usize = 2000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pem = std::fs::read_to_string(KEY_FILE)?;
    let key = PrivateKey::from_pem(&pem, None)?;
    let key_id = KeyId::new(format!("ST${}", "x".repeat(1600)));
    let body = br#"{"schemas":["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"],"canUseApiKeys":false,"canUseAuthTokens":false,"canUseConsolePassword":true,"canUseCustomerSecretKeys":false,"canUseDbCredentials":false,"canUseOAuth2ClientCredentials":false,"canUseSmtpCredentials":false}"#;
    let request = SignableRequest {
        method: "PUT",
        url: "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com/admin/v1/UserCapabilitiesChanger/4b2f0c1d9e8a47b6a1c3d5e7f9081a2b",
        headers: &[("content-type", "application/json")],
        body,
    };

    let mut samples: Vec<Duration> = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let signed = sign_request(&request, &key_id, &key, SystemTime::now())?;
        samples.push(start.elapsed());
        std::hint::black_box(signed);
    }
    let (median, p95) = median_p95(&mut samples);
    println!(
        "{ROUNDS} PUT signatures ({} bits, blinded): median {median:.0} us, p95 {p95:.0} us",
        key.bits()
    );

    // For comparison only: the same RSA operation without blinding, which the signer does not use.
    let unblinded = SigningKey::<Sha256>::new(RsaPrivateKey::from_pkcs1_pem(&pem)?);
    let message = vec![b'x'; 400];
    samples.clear();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let signature = unblinded.sign(&message);
        samples.push(start.elapsed());
        std::hint::black_box(signature);
    }
    let (median, p95) = median_p95(&mut samples);
    println!(
        "{ROUNDS} bare RSA signatures without blinding: median {median:.0} us, p95 {p95:.0} us"
    );
    Ok(())
}

fn median_p95(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    (
        micros(samples[samples.len() / 2]),
        micros(samples[samples.len() * 95 / 100]),
    )
}
