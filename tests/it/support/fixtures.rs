//! Data shared by the integration tests and the hand-run examples (included by path there): the test
//! domains, capability arrays, audit records and an operator's `~/.oci/config`.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::identity_domain_server::{hex_id, vectors_dir, IdentityDomainServer};

pub const DOMAIN_A: &str = "idcs-0123456789abcdef0123456789abcdef";
pub const DOMAIN_B: &str = "idcs-fedcba9876543210fedcba9876543210";

/// Every capability on: how JIT users arrive. `console` is on too, and must stay so (unmanaged).
pub const ALL_ON: [Option<bool>; 8] = [Some(true); 8];
/// The built-in profile applied to ALL_ON (API keys and auth tokens stay, console is unmanaged).
pub const PROFILE_APPLIED: [Option<bool>; 8] = [
    Some(true),
    Some(true),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(true),
];

/// The API key of the signing vectors (`api_key_id` in `crates/oci-signer/tests/vectors/manifest.json`).
pub const TENANCY: &str =
    "ocid1.tenancy.oc1..aaaaaaaafaketenancy0000000000000000000000000000000000";
pub const USER: &str = "ocid1.user.oc1..aaaaaaaafakeuser000000000000000000000000000000000000000";
pub const FINGERPRINT: &str = "56:cb:42:a3:41:91:3f:ca:e7:78:43:4d:89:be:08:d8";

pub fn api_key_id() -> String {
    format!("{TENANCY}/{USER}/{FINGERPRINT}")
}

/// A Service Connector record in the shape the brief's function reads (actorId/actorName).
pub fn actor_record(domain: &str, user_id: &str, user_name: &str) -> Value {
    json!({
        "data": {
            "additionalDetails": {
                "actorId": user_id, "actorName": user_name, "actorType": "User",
                "domainName": domain, "eventId": "sso.user.jit.success"
            },
            "eventName": "UserJit", "compartmentId": "ocid1.tenancy.oc1..test", "resourceId": null,
            "identity": {"principalName": user_name}, "message": "UserJit succeeded",
        },
        "dataschema": "2.0",
        "id": format!("evt-{user_id}"),
        "oracle": {"loggroupid": "_Audit"},
        "source": user_name,
        "specversion": "1.0",
        "time": "2026-11-20T09:15:02.118Z",
        "type": "com.oraclecloud.identitysignon.userjit"
    })
}

/// A home directory whose `~/.oci/config` has a DEFAULT API-key profile (key file named with `~`),
/// followed by `more` (further profiles).
pub fn operator_home(more: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("temp dir");
    let oci = home.path().join(".oci");
    std::fs::create_dir(&oci).expect("mkdir .oci");
    let vectors = vectors_dir();
    std::fs::copy(
        vectors.join("rp_session_key_pkcs1.pem"),
        oci.join("api_key.pem"),
    )
    .expect("key");
    std::fs::write(
        oci.join("config"),
        format!(
            "[DEFAULT]\nuser={USER}\nfingerprint={FINGERPRINT}\ntenancy={TENANCY}\nregion=us-ashburn-1\n\
             key_file=~/.oci/api_key.pem\n\n{more}"
        ),
    )
    .expect("config");
    home
}

/// Users in the reconcile domain.
pub const USERS: u64 = 2345;

/// 2,345 JIT users, every third already compliant, plus about 100 users created in the console that
/// the default filter must not touch. Returns how many JIT users need a write.
pub fn populate_domain(idd: &IdentityDomainServer) -> u64 {
    let mut needs_write = 0;
    for n in 0..USERS {
        let caps = if n % 3 == 0 { PROFILE_APPLIED } else { ALL_ON };
        needs_write += u64::from(n % 3 != 0);
        idd.add_user(
            &hex_id(n),
            &format!("jit{n}@example.com"),
            caps,
            "samljit",
            true,
        );
        if n % 23 == 0 {
            let local = 1_000_000 + n;
            idd.add_user(
                &hex_id(local),
                &format!("local{n}@example.com"),
                ALL_ON,
                "idcsui",
                false,
            );
        }
    }
    needs_write
}

/// `Fn-Deadline` in the agent's form: UTC, whole seconds, `Z`.
pub fn deadline_in(d: Duration) -> String {
    let secs = (SystemTime::now() + d)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("time in range");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The throwaway test key as the signer loads it, parsed once.
pub fn vector_key() -> &'static oci_user_capabilities::signer::PrivateKey {
    static KEY: std::sync::OnceLock<oci_user_capabilities::signer::PrivateKey> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let pem = std::fs::read_to_string(vectors_dir().join("rp_session_key_pkcs1.pem"))
            .expect("test key");
        oci_user_capabilities::signer::PrivateKey::from_pem(&pem, None).expect("test key parses")
    })
}
