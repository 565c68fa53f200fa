//! The unverified JWT claim decoder used for resource-principal session tokens (exp,
//! res_tenant, res_compartment), reached through `signer::fuzzing::decode_claims`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_user_capabilities::signer::fuzzing::decode_claims;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    match decode_claims(token) {
        Ok(claims) => {
            let _ = format!("{claims:?}");
        }
        Err(e) => {
            // Errors must never repeat the token (it is a credential).
            let msg = e.to_string();
            if token.len() >= 16 {
                assert!(!msg.contains(token), "error echoes the token: {msg}");
            }
        }
    }
});
