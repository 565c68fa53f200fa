//! Signs a `PUT` with the throwaway key of the test vectors and prints the headers to send.
//!
//! `cargo run -p oci-signer --example sign`

use std::time::SystemTime;

use oci_signer::{sign_request, KeyId, PrivateKey, SignableRequest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/rp_session_key_pkcs1.pem"
    ))?;
    let key = PrivateKey::from_pem(&pem, None)?;
    let key_id = KeyId::new("ocid1.tenancy.oc1..example/ocid1.user.oc1..example/aa:bb:cc".into());
    let body = br#"{"canUseApiKeys":false}"#;
    let signed = sign_request(
        &SignableRequest {
            method: "PUT",
            url: "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com/admin/v1/UserCapabilitiesChanger/4b2f0c1d9e8a47b6a1c3d5e7f9081a2b",
            headers: &[("content-type", "application/json")],
            body,
        },
        &key_id,
        &key,
        SystemTime::now(),
    )?;
    println!("signing string:\n{}\n", signed.signing_string());
    for (name, value) in signed.headers().iter() {
        println!("{name}: {value}");
    }
    Ok(())
}
