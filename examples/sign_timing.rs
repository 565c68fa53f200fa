//! Measures request signing with the test keys: the whole job for one PUT (signing string, body hash,
//! RSA-2048 PKCS#1 v1.5 / SHA-256 in AWS-LC, headers), then the bare RSA operation for 2048- and
//! 4096-bit keys: `cargo run --release --example sign_timing`.

use std::time::{Duration, Instant, SystemTime};

use oci_user_capabilities::signer::{
    sign_request, KeyId, PrivateKey, RsaSha256Signer, SignableRequest,
};

const KEY_2048: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/oci-signer/tests/vectors/rp_session_key_pkcs1.pem"
);
const KEY_4096: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/oci-signer/tests/keys/rsa4096_pkcs1.pem"
);
const ROUNDS: usize = 2000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = PrivateKey::from_pem(&std::fs::read_to_string(KEY_2048)?, None)?;
    // AWS-LC seeds a random generator for each thread on its first use (RSA blinding needs it): the
    // first signature of a thread costs more than the rest.
    let first = |key: &PrivateKey| -> Result<(f64, f64), String> {
        let t = Instant::now();
        key.sign_pkcs1v15_sha256(b"first")
            .map_err(|e| e.to_string())?;
        let first = t.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        key.sign_pkcs1v15_sha256(b"second")
            .map_err(|e| e.to_string())?;
        Ok((first, t.elapsed().as_secs_f64() * 1e6))
    };
    let (a, b) = first(&key)?;
    println!("main thread: first signature {a:.0} us, second {b:.0} us");
    let (a, b) =
        std::thread::scope(|s| s.spawn(|| first(&key)).join()).map_err(|_| "thread panicked")??;
    println!("new thread: first signature {a:.0} us, second {b:.0} us");
    let key_id = KeyId::new(format!("ST${}", "x".repeat(1600)));
    let body = br#"{"schemas":["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"],"canUseApiKeys":false,"canUseAuthTokens":false,"canUseConsolePassword":true,"canUseCustomerSecretKeys":false,"canUseDbCredentials":false,"canUseOAuth2ClientCredentials":false,"canUseSmtpCredentials":false}"#;
    let request = SignableRequest {
        method: "PUT",
        url: "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com/admin/v1/UserCapabilitiesChanger/4b2f0c1d9e8a47b6a1c3d5e7f9081a2b",
        headers: &[("content-type", "application/json")],
        body,
    };
    let (median, p95) = time(|| {
        let signed = sign_request(&request, &key_id, &key, SystemTime::now())?;
        std::hint::black_box(signed);
        Ok(())
    })?;
    println!(
        "{ROUNDS} PUT requests signed ({} bits, AWS-LC): median {median:.0} us, p95 {p95:.0} us",
        key.bits()
    );

    let message = vec![b'x'; 400];
    let big = PrivateKey::from_pem(&std::fs::read_to_string(KEY_4096)?, None)?;
    for key in [&key, &big] {
        let (median, p95) = time(|| {
            std::hint::black_box(key.sign_pkcs1v15_sha256(&message)?);
            Ok(())
        })?;
        println!(
            "{ROUNDS} bare RSA-{} signatures: median {median:.0} us, p95 {p95:.0} us",
            key.bits()
        );
    }
    Ok(())
}

/// Median and 95th percentile of `ROUNDS` runs of `f`, in microseconds.
fn time(
    mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut samples: Vec<Duration> = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    Ok((
        micros(samples[samples.len() / 2]),
        micros(samples[samples.len() * 95 / 100]),
    ))
}
