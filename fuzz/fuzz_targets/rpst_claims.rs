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
            // Errors must never repeat the token (it is a credential). Only checked for
            // token-shaped input (base64url and `.`, no spaces): any other text of 16 or more
            // characters can be a piece of the fixed message itself, which the fuzzer does find
            // by comparing against it.
            let msg = e.to_string();
            let token_shaped = token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='));
            if token_shaped && token.len() >= 16 {
                assert!(!msg.contains(token), "error echoes the token: {msg}");
            }
        }
    }
});
