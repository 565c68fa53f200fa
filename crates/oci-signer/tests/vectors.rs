//! The signer against the vectors in `tests/vectors` (made with Oracle's Python SDK, see its
//! README), Oracle's two published examples, property tests, credential errors and refresh.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
    RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use oci_signer::{
    sign_request, ApiKeyProvider, CredentialError, Credentials, CredentialsProvider, ErrorChain,
    KeyError, KeyId, PrivateKey, ResourcePrincipal, RsaSha256Signer, Secret, SignError,
    SignableRequest,
};
use pkcs8::der::{Decode, Document};
use proptest::prelude::*;
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn vector_path(name: &str) -> PathBuf {
    Path::new(VECTORS).join(name)
}

fn vector_file(name: &str) -> String {
    std::fs::read_to_string(vector_path(name)).unwrap()
}

fn manifest() -> Value {
    serde_json::from_str(&vector_file("manifest.json")).unwrap()
}

fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing"))
}

/// Vectors are pinned at the fixed date, well before the token's exp (year 2100).
fn vector_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_772_703_000)
}

fn env_lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

fn rp_files_env(key_file: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
        (
            "OCI_RESOURCE_PRINCIPAL_RPST",
            vector_path("rpst.jwt").display().to_string(),
        ),
        (
            "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
            vector_path(key_file).display().to_string(),
        ),
        ("OCI_RESOURCE_PRINCIPAL_REGION", "us-ashburn-1".to_owned()),
    ]
}

fn rp_from(vars: Vec<(&'static str, String)>) -> Result<ResourcePrincipal, CredentialError> {
    let lookup = env_lookup(vars);
    ResourcePrincipal::from_env(&lookup, vector_now())
}

/// Credentials the way the vector's `signer` section says they were made.
fn provider_for(vector: &Value, tmp: &Path) -> Box<dyn CredentialsProvider> {
    let name = str_field(vector, "name");
    let key_file = str_field(&vector["key"], "private_key_pem_file");
    match &name[..2] {
        "13" => {
            let rp = rp_from(vec![
                ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
                ("OCI_RESOURCE_PRINCIPAL_RPST", vector_file("rpst.jwt")),
                ("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", vector_file(key_file)),
                ("OCI_RESOURCE_PRINCIPAL_REGION", "iad".to_owned()),
            ])
            .unwrap();
            assert_eq!(rp.region(), Some("iad"));
            Box::new(rp)
        }
        "14" => Box::new(
            rp_from(vec![
                ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
                ("OCI_RESOURCE_PRINCIPAL_RPST", vector_file("rpst.jwt")),
                ("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", vector_file(key_file)),
                (
                    "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE",
                    str_field(&vector["key"], "passphrase").to_owned(),
                ),
            ])
            .unwrap(),
        ),
        "15" | "16" => Box::new(api_key_provider(vector, tmp)),
        _ => Box::new(rp_from(rp_files_env(key_file)).unwrap()),
    }
}

/// An OCI config in `tmp` with the key under `~/.oci` and tenancy inherited from [DEFAULT].
fn api_key_provider(vector: &Value, tmp: &Path) -> ApiKeyProvider {
    let signer = &vector["signer"];
    let oci_dir = tmp.join(".oci");
    std::fs::create_dir_all(&oci_dir).unwrap();
    std::fs::write(
        oci_dir.join("key.pem"),
        vector_file(str_field(&vector["key"], "private_key_pem_file")),
    )
    .unwrap();
    let config = format!(
        "# written by the test\n[DEFAULT]\ntenancy = {}\nregion = us-ashburn-1\n\n[ADMIN]\nuser={}\nfingerprint={}\nkey_file=~/.oci/key.pem\n",
        str_field(signer, "tenancy"),
        str_field(signer, "user"),
        str_field(signer, "fingerprint"),
    );
    let config_path = oci_dir.join("config");
    std::fs::write(&config_path, config).unwrap();
    let provider = ApiKeyProvider::from_oci_config(&config_path, "ADMIN", Some(tmp)).unwrap();
    assert_eq!(provider.describe(), "api key (profile ADMIN)");
    provider
}

fn signature_of(authorization: &str) -> &str {
    let start = authorization.find("signature=\"").unwrap() + "signature=\"".len();
    let len = authorization[start..].find('"').unwrap();
    &authorization[start..start + len]
}

fn run_vector(name: &str) {
    let vector: Value = serde_json::from_str(&vector_file(&format!("{name}.json"))).unwrap();
    assert!(
        manifest()["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == name),
        "{name} not in manifest"
    );
    let tmp = tempfile::tempdir().unwrap();
    let provider = provider_for(&vector, tmp.path());
    let creds = provider.credentials(vector_now()).unwrap();
    assert_eq!(creds.key_id.as_str(), str_field(&vector, "key_id"));

    // 17-19 were captured from the SDK client: replay every header it sent.
    let headers_in: Vec<(String, String)> = match &vector["request_headers_in"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
        _ => vector["expected_headers_out"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "authorization")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
    };
    let headers: Vec<(&str, &str)> = headers_in
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = STANDARD.decode(str_field(&vector, "body_base64")).unwrap();

    let signed = sign_request(
        &SignableRequest {
            method: str_field(&vector, "method"),
            url: str_field(&vector, "url_sent"),
            headers: &headers,
            body: &body,
        },
        &creds.key_id,
        creds.key.as_ref(),
        // A different clock proves the caller's date wins.
        SystemTime::now(),
    )
    .unwrap();

    assert_eq!(
        signed.signing_string(),
        str_field(&vector, "expected_signing_string")
    );
    let expected_signed: Vec<&str> = vector["signed_headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(signed.signed_headers(), expected_signed.as_slice());
    assert_eq!(
        signature_of(signed.authorization()),
        str_field(&vector, "expected_signature")
    );
    assert_eq!(
        signed.authorization(),
        str_field(&vector, "expected_authorization")
    );
    assert_eq!(signed.header("authorization"), Some(signed.authorization()));
    let out = &vector["expected_headers_out"];
    for name in ["x-content-sha256", "content-length", "date", "host"] {
        if expected_signed.contains(&name) || name == "date" || name == "host" {
            assert_eq!(signed.header(name), out[name].as_str(), "{name}");
        }
    }
    if expected_signed.contains(&"content-type") {
        assert_eq!(signed.header("content-type"), out["content-type"].as_str());
    }
}

macro_rules! vector_tests {
    ($($test:ident => $name:literal,)*) => {
        $(#[test] fn $test() { run_vector($name); })*
        const ALL_VECTORS: &[&str] = &[$($name),*];
    };
}

vector_tests! {
    vector_01_rp_get_user_attributes_literal_url => "01_rp_get_user_attributes_literal_url",
    vector_02_rp_get_user_attributes_params => "02_rp_get_user_attributes_params",
    vector_03_rp_put_user_capabilities_changer => "03_rp_put_user_capabilities_changer",
    vector_04_rp_put_empty_body => "04_rp_put_empty_body",
    vector_05_rp_post_users_search => "05_rp_post_users_search",
    vector_06_rp_get_filter_params_plus_encoding => "06_rp_get_filter_params_plus_encoding",
    vector_07_rp_get_filter_preencoded_pct20 => "07_rp_get_filter_preencoded_pct20",
    vector_08_rp_get_custom_port_8443 => "08_rp_get_custom_port_8443",
    vector_09_rp_get_http_loopback => "09_rp_get_http_loopback",
    vector_10_rp_get_explicit_default_port_443 => "10_rp_get_explicit_default_port_443",
    vector_11_rp_delete_no_body => "11_rp_delete_no_body",
    vector_12_rp_patch_user => "12_rp_patch_user",
    vector_13_rp_put_env_content_mode => "13_rp_put_env_content_mode",
    vector_14_rp_put_encrypted_pkcs8_passphrase => "14_rp_put_encrypted_pkcs8_passphrase",
    vector_15_apikey_get_user_attributes => "15_apikey_get_user_attributes",
    vector_16_apikey_put_user_capabilities_changer => "16_apikey_put_user_capabilities_changer",
    vector_17_sdkclient_get_user_attributes => "17_sdkclient_get_user_attributes",
    vector_18_sdkclient_put_user_capabilities_changer => "18_sdkclient_put_user_capabilities_changer",
    vector_19_sdkclient_search_users => "19_sdkclient_search_users",
    vector_20_rp_put_scim_json_content_type => "20_rp_put_scim_json_content_type",
}

#[test]
fn every_manifest_vector_has_a_test() {
    let listed: Vec<String> = manifest()["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ALL_VECTORS);
}

#[test]
fn all_pem_encodings_load_the_same_key() {
    let (_, public) = Document::from_pem(&vector_file("rp_session_key_public.pem")).unwrap();
    let passphrase = Secret::from(vector_file("rp_session_key_passphrase.txt"));
    for (file, pass) in [
        ("rp_session_key_pkcs1.pem", None),
        ("rp_session_key_pkcs8.pem", None),
        ("rp_session_key_pkcs8_encrypted.pem", Some(&passphrase)),
    ] {
        let key = PrivateKey::from_pem(&vector_file(file), pass).unwrap();
        assert_eq!(key.public_key_der().unwrap(), public.as_bytes(), "{file}");
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>, 2048 bits)");
    }
}

fn test_key_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(name),
    )
    .unwrap()
}

#[test]
fn keys_of_2048_to_4096_bits_load_and_others_are_refused_by_size() {
    for (pem, bits) in [
        (vector_file("rp_session_key_pkcs8.pem"), 2048),
        (test_key_file("rsa3072_pkcs8.pem"), 3072),
        (test_key_file("rsa4096_pkcs1.pem"), 4096),
    ] {
        let key = PrivateKey::from_pem(&pem, None).unwrap();
        assert_eq!(key.bits(), bits);
        let signature = key.sign_pkcs1v15_sha256(b"m").unwrap();
        assert_eq!(signature.len(), bits / 8);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der().unwrap())
            .verify(b"m", &signature)
            .unwrap();
    }
    for (pem, bits) in [
        (ORACLE_DOC_KEY.to_owned(), 1024),
        (test_key_file("rsa8192_pkcs8.pem"), 8192),
    ] {
        let err = PrivateKey::from_pem(&pem, None).unwrap_err();
        assert!(
            matches!(err, KeyError::UnsupportedSize { bits: b } if b == bits),
            "{err:?}"
        );
        let shown = ErrorChain(&err).to_string();
        assert!(
            shown.contains(&format!("{bits}-bit"))
                && shown.contains("2048")
                && shown.contains("4096"),
            "{shown}"
        );
    }
}

// Oracle's published "Request Signatures" examples (1024-bit test key, fixed date), as embedded
// in oracle/oci-go-sdk common/http_signer_test.go. Throwaway test material.
const ORACLE_DOC_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIICXgIBAAKBgQDCFENGw33yGihy92pDjZQhl0C36rPJj+CvfSC8+q28hxA161QF
NUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6Z4UMR7EOcpfdUE9Hf3m/hs+F
UR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJwoYi+1hqp1fIekaxsyQIDAQAB
AoGBAJR8ZkCUvx5kzv+utdl7T5MnordT1TvoXXJGXK7ZZ+UuvMNUCdN2QPc4sBiA
QWvLw1cSKt5DsKZ8UETpYPy8pPYnnDEz2dDYiaew9+xEpubyeW2oH4Zx71wqBtOK
kqwrXa/pzdpiucRRjk6vE6YY7EBBs/g7uanVpGibOVAEsqH1AkEA7DkjVH28WDUg
f1nqvfn2Kj6CT7nIcE3jGJsZZ7zlZmBmHFDONMLUrXR/Zm3pR5m0tCmBqa5RK95u
412jt1dPIwJBANJT3v8pnkth48bQo/fKel6uEYyboRtA5/uHuHkZ6FQF7OUkGogc
mSJluOdc5t6hI1VsLn0QZEjQZMEOWr+wKSMCQQCC4kXJEsHAve77oP6HtG/IiEn7
kpyUXRNvFsDE0czpJJBvL/aRFUJxuRK91jhjC68sA7NsKMGg5OXb5I5Jj36xAkEA
gIT7aFOYBFwGgQAQkWNKLvySgKbAZRTeLBacpHMuQdl1DfdntvAyqpAZ0lY0RKmW
G6aFKaqQfOXKCyWoUiVknQJAXrlgySFci/2ueKlIE1QqIiLSZ8V8OlpFLRnb1pzI
7U1yQXnTAEFYM560yJlzUpOb1V4cScGd365tiSMvxLOvTA==
-----END RSA PRIVATE KEY-----";
const ORACLE_DOC_KEY_ID: &str = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
const ORACLE_DOC_DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";

/// Oracle's doc key is 1024 bits, which the signer refuses to load (and AWS-LC to sign with). These
/// two vectors therefore test everything but the RSA operation: the signer is handed the published
/// signature, and only after checking, with the doc key's public half, that it is a valid
/// signature of exactly the bytes the builder produced. So the signing string matches Oracle's byte
/// for byte, and the Authorization header is assembled around it as Oracle's is.
struct PublishedSignature {
    signature: &'static str,
}

impl RsaSha256Signer for PublishedSignature {
    fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let (label, der) = pkcs8::der::SecretDocument::from_pem(ORACLE_DOC_KEY).unwrap();
        assert_eq!(label, "RSA PRIVATE KEY");
        let key = pkcs1::RsaPrivateKey::from_der(der.as_bytes()).unwrap();
        let public = RsaPublicKeyComponents {
            n: key.modulus.as_bytes(),
            e: key.public_exponent.as_bytes(),
        };
        let signature = STANDARD.decode(self.signature).unwrap();
        public
            .verify(
                &RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                message,
                &signature,
            )
            .expect("the published signature signs exactly the bytes the builder produced");
        Ok(signature)
    }
}

#[test]
fn oracle_doc_vector_get() {
    let signature = "GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=";
    let key = PublishedSignature { signature };
    let url = "https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
    let signed = sign_request(
        &SignableRequest {
            method: "GET",
            url,
            headers: &[("Date", ORACLE_DOC_DATE)],
            body: b"",
        },
        &KeyId::new(ORACLE_DOC_KEY_ID.to_owned()),
        &key,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        signed.signing_string(),
        "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\nhost: iaas.us-phoenix-1.oraclecloud.com"
    );
    assert_eq!(signature_of(signed.authorization()), signature);
    assert_eq!(
        signed.authorization(),
        format!("Signature algorithm=\"rsa-sha256\",headers=\"date (request-target) host\",keyId=\"{ORACLE_DOC_KEY_ID}\",signature=\"{signature}\",version=\"1\"")
    );
}

#[test]
fn oracle_doc_vector_post() {
    let key = PublishedSignature {
        signature: "Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=",
    };
    let body = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
    assert_eq!(body.len(), 316);
    let signed = sign_request(
        &SignableRequest {
            method: "POST",
            url: "https://iaas.us-phoenix-1.oraclecloud.com/20160918/volumeAttachments",
            headers: &[
                ("Date", ORACLE_DOC_DATE),
                ("Content-Type", "application/json"),
            ],
            body: body.as_bytes(),
        },
        &KeyId::new(ORACLE_DOC_KEY_ID.to_owned()),
        &key,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        signed.signing_string(),
        "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): post /20160918/volumeAttachments\nhost: iaas.us-phoenix-1.oraclecloud.com\ncontent-length: 316\ncontent-type: application/json\nx-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="
    );
    assert_eq!(
        signature_of(signed.authorization()),
        "Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso="
    );
}

// ---------------------------------------------------------------- property tests

pub(crate) fn vector_key() -> &'static PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        PrivateKey::from_pem(&vector_file("rp_session_key_pkcs1.pem"), None).unwrap()
    })
}

fn verifies(key: &PrivateKey, message: &str, authorization: &str) -> bool {
    let signature = STANDARD.decode(signature_of(authorization)).unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der().unwrap())
        .verify(message.as_bytes(), &signature)
        .is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_requests_never_panic_and_signatures_verify(
        method in prop::sample::select(vec!["GET", "put", "Post", "PATCH", "delete", "HEAD", "OPTIONS", ""]),
        path in ".{0,40}",
        query in prop::option::of("[ -~]{0,40}"),
        header_name in "[a-zA-Z0-9-]{0,12}|.{0,6}",
        header_value in ".{0,40}|[ -~]{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut url = format!("https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com/{path}");
        if let Some(q) = &query {
            url.push('?');
            url.push_str(q);
        }
        let headers = [(header_name.as_str(), header_value.as_str()), ("date", "Thu, 05 Mar 2026 09:30:00 GMT")];
        let key = vector_key();
        let result = sign_request(
            &SignableRequest { method, url: &url, headers: &headers, body: &body },
            &KeyId::new("ST$a.b.c".to_owned()),
            key,
            vector_now(),
        );
        if let Ok(signed) = result {
            prop_assert!(signed.signing_string().is_ascii());
            prop_assert!(!signed.signing_string().contains('\r'));
            prop_assert_eq!(signed.signing_string().lines().count(), signed.signed_headers().len());
            prop_assert!(verifies(key, signed.signing_string(), signed.authorization()));
            for (name, value) in signed.headers() {
                prop_assert!(!name.is_empty() && name.bytes().all(|b| !b.is_ascii_uppercase()));
                prop_assert!(!value.contains(['\r', '\n']));
            }
        }
    }

    #[test]
    fn arbitrary_token_text_never_panics(token in ".{0,80}|[A-Za-z0-9_.=-]{0,80}") {
        let result = rp_from(vec![
            ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
            ("OCI_RESOURCE_PRINCIPAL_RPST", token.clone()),
            ("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", vector_file("rp_session_key_pkcs8.pem")),
        ]);
        if let Err(err) = result {
            let shown = format!("{err} {err:?}");
            // A value starting with '/' is a path, which errors rightly name.
            if !token.starts_with('/') && token.trim().len() >= 12 {
                prop_assert!(!shown.contains(token.trim()), "{}", shown);
            }
        }
    }
}

// ---------------------------------------------------------------- credential errors

fn fake_jwt(claims: &str) -> String {
    format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn err_text(err: &CredentialError) -> String {
    format!("{} | {err:?}", ErrorChain(err))
}

#[test]
fn rp_missing_variables_are_named() {
    for missing in [
        "OCI_RESOURCE_PRINCIPAL_VERSION",
        "OCI_RESOURCE_PRINCIPAL_RPST",
        "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
    ] {
        let vars: Vec<_> = rp_files_env("rp_session_key_pkcs1.pem")
            .into_iter()
            .filter(|(n, _)| *n != missing)
            .collect();
        let err = rp_from(vars).unwrap_err();
        assert!(matches!(err, CredentialError::MissingVar { .. }), "{err:?}");
        assert!(ErrorChain(&err).to_string().contains(missing), "{err}");
    }
    // Region is optional.
    let vars: Vec<_> = rp_files_env("rp_session_key_pkcs1.pem")
        .into_iter()
        .filter(|(n, _)| *n != "OCI_RESOURCE_PRINCIPAL_REGION")
        .collect();
    assert_eq!(rp_from(vars).unwrap().region(), None);
    // Empty counts as unset, with its own message.
    let mut vars = rp_files_env("rp_session_key_pkcs1.pem");
    vars[1].1 = "  ".to_owned();
    let err = rp_from(vars).unwrap_err();
    assert!(ErrorChain(&err)
        .to_string()
        .contains("OCI_RESOURCE_PRINCIPAL_RPST"));
}

#[test]
fn rp_version_other_than_2_2_is_refused() {
    for version in ["2.1", "1.1", "3.0", "2.2.1"] {
        let mut vars = rp_files_env("rp_session_key_pkcs1.pem");
        vars[0].1 = version.to_owned();
        let err = rp_from(vars).unwrap_err();
        assert!(matches!(err, CredentialError::UnsupportedVersion { .. }));
        let msg = ErrorChain(&err).to_string();
        assert!(
            msg.contains("OCI_RESOURCE_PRINCIPAL_VERSION")
                && msg.contains(version)
                && msg.contains("2.2"),
            "{msg}"
        );
    }
}

#[test]
fn rp_unreadable_file_names_variable_and_path() {
    let mut vars = rp_files_env("rp_session_key_pkcs1.pem");
    vars[1].1 = "/nonexistent/dir/rpst".to_owned();
    let msg = rp_from(vars).unwrap_err().to_string();
    assert!(
        msg.contains("OCI_RESOURCE_PRINCIPAL_RPST") && msg.contains("/nonexistent/dir/rpst"),
        "{msg}"
    );
    let mut vars = rp_files_env("rp_session_key_pkcs1.pem");
    vars[2].1 = "/nonexistent/private.pem".to_owned();
    let msg = rp_from(vars).unwrap_err().to_string();
    assert!(msg.contains("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM"), "{msg}");
}

#[test]
fn rp_token_with_trailing_newline_is_trimmed() {
    let tmp = tempfile::tempdir().unwrap();
    let token_path = tmp.path().join("rpst");
    std::fs::write(&token_path, format!("{}\n", vector_file("rpst.jwt"))).unwrap();
    let mut vars = rp_files_env("rp_session_key_pkcs1.pem");
    vars[1].1 = token_path.display().to_string();
    let rp = rp_from(vars).unwrap();
    let creds = rp.credentials(vector_now()).unwrap();
    assert_eq!(creds.key_id.as_str(), str_field(&manifest(), "rp_key_id"));
    let claims = rp.claims();
    assert_eq!(claims.exp, 4_102_444_800);
    assert_eq!(
        claims.res_tenant.as_deref(),
        Some("ocid1.tenancy.oc1..aaaaaaaafaketenancy0000000000000000000000000000000000")
    );
    assert!(claims
        .res_compartment
        .as_deref()
        .unwrap()
        .starts_with("ocid1.compartment."));
}

/// Every error and Debug string the credential code can produce for the vector material.
fn collect_error_and_debug_strings() -> Vec<String> {
    let token = vector_file("rpst.jwt");
    let mut shown = Vec::new();
    let content = |token: String, pem: String, pass: Option<&str>| {
        let mut vars = vec![
            ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
            ("OCI_RESOURCE_PRINCIPAL_RPST", token),
            ("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", pem),
        ];
        if let Some(p) = pass {
            vars.push((
                "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE",
                p.to_owned(),
            ));
        }
        rp_from(vars)
    };
    let passphrase = vector_file("rp_session_key_passphrase.txt");

    // Malformed tokens: the real one with a broken payload, with a space, cut short.
    let parts: Vec<&str> = token.split('.').collect();
    let broken_payload = format!(
        "{}.{}x.{}",
        parts[0],
        &parts[1][..parts[1].len() - 3],
        parts[2]
    );
    let not_json = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(&token),
        parts[2]
    );
    for bad in [
        broken_payload,
        not_json,
        format!("{token} extra"),
        parts[..2].join("."),
    ] {
        let err = content(bad, vector_file("rp_session_key_pkcs8.pem"), None).unwrap_err();
        assert!(
            matches!(err, CredentialError::MalformedToken { .. }),
            "{err:?}"
        );
        assert!(ErrorChain(&err)
            .to_string()
            .contains("OCI_RESOURCE_PRINCIPAL_RPST"));
        shown.push(err_text(&err));
    }

    // Legacy encrypted key, with and without passphrase.
    for pass in [None, Some(passphrase.as_str())] {
        let err = content(
            token.clone(),
            vector_file("rp_session_key_pkcs1_encrypted_legacy.pem"),
            pass,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                CredentialError::Key {
                    source: KeyError::LegacyEncrypted,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = ErrorChain(&err).to_string();
        assert!(
            msg.contains("openssl pkcs8 -topk8")
                && msg.contains("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM"),
            "{msg}"
        );
        shown.push(err_text(&err));
    }

    // Wrong, missing and truncated passphrases.
    let encrypted = vector_file("rp_session_key_pkcs8_encrypted.pem");
    for pass in [
        Some("wrong horse battery staple"),
        None,
        Some("correct horse battery stapl"),
    ] {
        let err = content(token.clone(), encrypted.clone(), pass).unwrap_err();
        assert!(matches!(err, CredentialError::Key { .. }), "{err:?}");
        shown.push(err_text(&err));
    }
    let err = content(token.clone(), encrypted.clone(), Some("wrong")).unwrap_err();
    assert!(
        ErrorChain(&err).to_string().contains("wrong passphrase"),
        "{err}"
    );

    // A damaged key body.
    let pkcs1 = vector_file("rp_session_key_pkcs1.pem");
    let damaged = pkcs1.replacen("MII", "MIJ", 1);
    shown.push(err_text(
        &content(token.clone(), damaged, None).unwrap_err(),
    ));
    // A token passed where the key goes.
    shown.push(err_text(
        &content(token.clone(), token.clone(), None).unwrap_err(),
    ));

    // Debug of everything that holds secrets.
    let rp = content(token.clone(), encrypted.clone(), Some(&passphrase)).unwrap();
    let creds: Arc<Credentials> = rp.credentials(vector_now()).unwrap();
    shown.push(format!("{rp:?}"));
    shown.push(format!("{creds:?}"));
    shown.push(format!("{:?}", creds.key_id));
    shown.push(format!("{:?}", Secret::from(passphrase.clone())));
    shown.push(format!("{}", Secret::from(passphrase.clone())));
    shown.push(format!("{:?}", PrivateKey::from_pem(&pkcs1, None).unwrap()));
    let files = rp_from(rp_files_env("rp_session_key_pkcs1.pem")).unwrap();
    shown.push(format!("{files:?}"));
    let signed = sign_request(
        &SignableRequest {
            method: "GET",
            url: "https://h/",
            headers: &[],
            body: b"",
        },
        &creds.key_id,
        creds.key.as_ref(),
        vector_now(),
    )
    .unwrap();
    shown.push(format!("{signed:?}"));
    shown
}

fn pem_base64(file: &str) -> String {
    vector_file(file)
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.contains(':') && !l.trim().is_empty())
        .collect()
}

#[test]
fn no_error_or_debug_string_leaks_token_passphrase_or_key() {
    let shown = collect_error_and_debug_strings();
    let token = vector_file("rpst.jwt");
    let token_parts: Vec<&str> = token.split('.').collect();
    let passphrase = vector_file("rp_session_key_passphrase.txt");
    let mut key_runs = Vec::new();
    for file in [
        "rp_session_key_pkcs1.pem",
        "rp_session_key_pkcs8.pem",
        "rp_session_key_pkcs8_encrypted.pem",
        "rp_session_key_pkcs1_encrypted_legacy.pem",
    ] {
        let b64 = pem_base64(file);
        assert!(b64.len() > 1000);
        for start in 0..=b64.len() - 40 {
            key_runs.push(b64[start..start + 40].to_owned());
        }
    }
    for text in &shown {
        assert!(!text.contains(&token), "token in: {text}");
        // The token's payload and signature parts, too.
        assert!(!text.contains(token_parts[1]), "token payload in: {text}");
        assert!(!text.contains(&passphrase), "passphrase in: {text}");
        assert!(!text.contains("correct horse"), "passphrase in: {text}");
        for run in &key_runs {
            assert!(!text.contains(run.as_str()), "key material in: {text}");
        }
    }
}

// ---------------------------------------------------------------- refresh

fn token_with_exp(exp: u64, marker: &str) -> String {
    fake_jwt(&format!(
        r#"{{"exp":{exp},"res_tenant":"ocid1.tenancy.oc1..{marker}","res_compartment":"c"}}"#
    ))
}

struct RefreshFixture {
    _dir: tempfile::TempDir,
    token_path: PathBuf,
    key_path: PathBuf,
    provider: ResourcePrincipal,
}

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn refresh_fixture(first_exp: u64) -> RefreshFixture {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("rpst");
    let key_path = dir.path().join("private.pem");
    std::fs::write(&token_path, token_with_exp(first_exp, "first")).unwrap();
    std::fs::write(&key_path, vector_file("rp_session_key_pkcs1.pem")).unwrap();
    let lookup = env_lookup(vec![
        ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
        (
            "OCI_RESOURCE_PRINCIPAL_RPST",
            token_path.display().to_string(),
        ),
        (
            "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
            key_path.display().to_string(),
        ),
    ]);
    let provider = ResourcePrincipal::from_env(&lookup, at(T0)).unwrap();
    RefreshFixture {
        _dir: dir,
        token_path,
        key_path,
        provider,
    }
}

fn tenant(creds: &Credentials) -> String {
    let token = creds.key_id.as_str().strip_prefix("ST$").unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["res_tenant"]
        .as_str()
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn token_near_expiry_is_reread_with_its_key() {
    let fx = refresh_fixture(T0 + 3600);
    assert_eq!(tenant(&fx.provider.credentials(at(T0)).unwrap()), "first");

    // The platform rotates token and key; far from exp the cache is used.
    std::fs::write(&fx.token_path, token_with_exp(T0 + 7200, "second")).unwrap();
    std::fs::write(&fx.key_path, test_key_file("rsa4096_pkcs1.pem")).unwrap();
    assert_eq!(
        tenant(&fx.provider.credentials(at(T0 + 3000)).unwrap()),
        "first"
    );

    // Within 5 minutes of exp: both files are re-read together.
    let creds = fx.provider.credentials(at(T0 + 3600 - 299)).unwrap();
    assert_eq!(tenant(&creds), "second");
    assert_eq!(fx.provider.claims().exp, T0 + 7200);
    let sig = creds.key.sign_pkcs1v15_sha256(b"m").unwrap();
    assert_eq!(sig.len(), 512, "the rotated 4096-bit key signs");

    // A new token whose exp is itself within 5 minutes is still picked up on the next call.
    std::fs::write(&fx.token_path, token_with_exp(T0 + 7300, "third")).unwrap();
    assert_eq!(
        tenant(&fx.provider.credentials(at(T0 + 7100)).unwrap()),
        "third"
    );
    std::fs::write(&fx.token_path, token_with_exp(T0 + 7400, "fourth")).unwrap();
    assert_eq!(
        tenant(&fx.provider.credentials(at(T0 + 7100)).unwrap()),
        "fourth"
    );
}

#[test]
fn refresh_rereads_unconditionally() {
    let fx = refresh_fixture(T0 + 3600);
    std::fs::write(&fx.token_path, token_with_exp(T0 + 3600, "after401")).unwrap();
    assert_eq!(tenant(&fx.provider.credentials(at(T0)).unwrap()), "first");
    let creds = fx.provider.refresh(at(T0)).unwrap();
    assert_eq!(tenant(&creds), "after401");
    assert_eq!(
        tenant(&fx.provider.credentials(at(T0)).unwrap()),
        "after401"
    );
}

#[test]
fn failed_reread_keeps_the_previous_credentials() {
    let fx = refresh_fixture(T0 + 3600);
    std::fs::write(&fx.token_path, token_with_exp(T0 + 9000, "new")).unwrap();
    std::fs::write(
        &fx.key_path,
        "-----BEGIN RSA PRIVATE KEY-----\ngarbage\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = fx.provider.refresh(at(T0)).unwrap_err();
    assert!(
        ErrorChain(&err)
            .to_string()
            .contains("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM"),
        "{err}"
    );
    // Not half-updated: the new token was not taken without its key.
    assert_eq!(fx.provider.claims().exp, T0 + 3600);
    assert_eq!(tenant(&fx.provider.credentials(at(T0)).unwrap()), "first");
    // Near expiry a failing re-read keeps the session while it is still valid (issue 11), and is
    // reported once the session has expired.
    assert_eq!(
        tenant(&fx.provider.credentials(at(T0 + 3500)).unwrap()),
        "first"
    );
    assert!(fx.provider.credentials(at(T0 + 3600)).is_err());

    std::fs::remove_file(&fx.token_path).unwrap();
    let err = fx.provider.refresh(at(T0)).unwrap_err();
    assert!(matches!(err, CredentialError::ReadFile { .. }), "{err:?}");
}

#[test]
fn content_mode_refresh_returns_the_same() {
    let rp = rp_from(vec![
        ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_owned()),
        (
            "OCI_RESOURCE_PRINCIPAL_RPST",
            token_with_exp(T0 + 10, "inline"),
        ),
        (
            "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
            vector_file("rp_session_key_pkcs8.pem"),
        ),
    ])
    .unwrap();
    let first = rp.credentials(at(T0)).unwrap();
    let again = rp.refresh(at(T0)).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert!(Arc::ptr_eq(&first, &rp.credentials(at(T0 + 100)).unwrap()));
    assert_eq!(rp.describe(), "resource principal");
}

// ---------------------------------------------------------------- OCI config profiles

#[test]
fn config_profile_with_security_token_file() {
    let tmp = tempfile::tempdir().unwrap();
    let token_path = tmp.path().join("token");
    std::fs::write(&token_path, token_with_exp(T0 + 3600, "session")).unwrap();
    std::fs::write(
        tmp.path().join("key.pem"),
        vector_file("rp_session_key_pkcs8_encrypted.pem"),
    )
    .unwrap();
    let config = tmp.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nregion=us-ashburn-1\n[SESSION]\nfingerprint=aa:bb\ntenancy=t\nkey_file={}\npass_phrase={}\nsecurity_token_file={}\n",
            tmp.path().join("key.pem").display(),
            vector_file("rp_session_key_passphrase.txt"),
            token_path.display()
        ),
    )
    .unwrap();
    let provider = ApiKeyProvider::from_oci_config(&config, "SESSION", None).unwrap();
    assert_eq!(provider.describe(), "session token (profile SESSION)");
    assert_eq!(tenant(&provider.credentials(at(T0)).unwrap()), "session");
    std::fs::write(&token_path, token_with_exp(T0 + 7200, "renewed")).unwrap();
    assert_eq!(tenant(&provider.credentials(at(T0)).unwrap()), "session");
    assert_eq!(
        tenant(&provider.credentials(at(T0 + 3400)).unwrap()),
        "renewed"
    );
    std::fs::write(&token_path, token_with_exp(T0 + 7200, "forced")).unwrap();
    assert_eq!(tenant(&provider.refresh(at(T0)).unwrap()), "forced");
    let shown = format!("{provider:?}");
    assert!(
        !shown.contains("correct horse") && !shown.contains("eyJ"),
        "{shown}"
    );
}

#[test]
fn config_errors_name_file_profile_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\ntenancy=t\n[NOFP]\nuser=u\nkey_file={}\n",
            vector_path("rp_session_key_pkcs1.pem").display()
        ),
    )
    .unwrap();
    let msg = ApiKeyProvider::from_oci_config(&config, "NOFP", None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&config.display().to_string())
            && msg.contains("[NOFP]")
            && msg.contains("fingerprint"),
        "{msg}"
    );
    let msg = ApiKeyProvider::from_oci_config(&config, "MISSING", None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("[MISSING]") && msg.contains(&config.display().to_string()),
        "{msg}"
    );
    let msg = ApiKeyProvider::from_oci_config(&config, "DEFAULT", None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("key_file"), "{msg}");
    let err =
        ApiKeyProvider::from_oci_config(&tmp.path().join("absent"), "DEFAULT", None).unwrap_err();
    assert!(matches!(err, CredentialError::ReadFile { .. }));
}

#[test]
fn api_key_refresh_rereads_the_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("key.pem");
    std::fs::write(&key_path, vector_file("rp_session_key_pkcs1.pem")).unwrap();
    let config = tmp.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nuser=u\nfingerprint=56:cb:42:a3:41:91:3f:ca:e7:78:43:4d:89:be:08:d8\ntenancy=t\nkey_file={}\n",
            key_path.display()
        ),
    )
    .unwrap();
    let provider = ApiKeyProvider::from_oci_config(&config, "DEFAULT", None).unwrap();
    let creds = provider.credentials(at(T0)).unwrap();
    assert_eq!(
        creds.key_id.as_str(),
        "t/u/56:cb:42:a3:41:91:3f:ca:e7:78:43:4d:89:be:08:d8"
    );
    assert_eq!(creds.key.sign_pkcs1v15_sha256(b"m").unwrap().len(), 256);
    std::fs::write(&key_path, test_key_file("rsa4096_pkcs1.pem")).unwrap();
    let creds = provider.refresh(at(T0)).unwrap();
    assert_eq!(creds.key.sign_pkcs1v15_sha256(b"m").unwrap().len(), 512);
    assert_eq!(
        provider
            .credentials(at(T0))
            .unwrap()
            .key
            .sign_pkcs1v15_sha256(b"m")
            .unwrap()
            .len(),
        512
    );
}
