//! The test identity domain itself: it must refuse anything not signed exactly as sent, or every
//! end-to-end test built on it would prove nothing.

use std::time::{Duration, SystemTime};

use oci_user_capabilities::signer::{sign_request, KeyId, SignableRequest};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fixtures::ALL_ON;
use crate::support::identity_domain_server::{
    hex_id, test_key_pem, test_rpst, Fault, IdentityDomainServer, CAPABILITIES_URN,
};

fn key_id() -> KeyId {
    KeyId::new(format!("ST${}", test_rpst()))
}

async fn server() -> IdentityDomainServer {
    IdentityDomainServer::start(&test_key_pem(), vec![key_id().as_str().to_string()]).await
}

/// How to spoil a correctly signed request between signing and sending.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    None,
    Path,
    Body,
    Host,
    DropHeader(&'static str),
}

struct Sent {
    status: u16,
    body: Value,
}

/// Signs with the product's signer, then writes the request by hand on a fresh connection, so the
/// bytes on the wire are exactly the ones chosen here.
async fn send(
    idd: &IdentityDomainServer,
    method: &str,
    target: &str,
    body: &[u8],
    when: SystemTime,
    tamper: Tamper,
) -> Sent {
    let url = format!("{}{target}", idd.base_url());
    let signed = sign_request(
        &SignableRequest {
            method,
            url: &url,
            headers: &[],
            body,
        },
        &key_id(),
        crate::support::fixtures::vector_key(),
        when,
    )
    .unwrap();
    let mut target = target.to_string();
    let mut body = body.to_vec();
    match tamper {
        Tamper::Path => target = target.replacen("/Users/", "/Users/x", 1),
        Tamper::Body => {
            body = body
                .iter()
                .map(|b| if *b == b'f' { b't' } else { *b })
                .collect()
        }
        _ => {}
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\nconnection: close\r\n");
    for (name, value) in signed.headers() {
        if tamper == Tamper::DropHeader(name_static(name)) {
            continue;
        }
        let value = if name == "host" && tamper == Tamper::Host {
            "localhost".to_string()
        } else {
            value.clone()
        };
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(idd.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Sent { status, body }
}

/// A request signed now and sent as signed.
async fn send_valid(idd: &IdentityDomainServer, method: &str, target: &str, body: &[u8]) -> Sent {
    send(idd, method, target, body, SystemTime::now(), Tamper::None).await
}

fn name_static(name: &str) -> &'static str {
    [
        "date",
        "host",
        "content-length",
        "content-type",
        "x-content-sha256",
    ]
    .into_iter()
    .find(|n| *n == name)
    .unwrap_or("")
}

fn user_target(id: &str) -> String {
    format!(
        "/admin/v1/Users/{id}?attributes=userName%2C{}",
        CAPABILITIES_URN.replace(':', "%3A")
    )
}

#[tokio::test]
async fn a_correctly_signed_read_is_answered() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    let r = send_valid(&idd, "GET", &user_target(&hex_id(1)), b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["userName"], "u1@example.com");
    assert_eq!(r.body[CAPABILITIES_URN]["canUseApiKeys"], true);
    let recorded = idd.requests();
    assert!(recorded[0].auth_ok);
    assert_eq!(recorded[0].key_id.as_deref(), Some(key_id().as_str()));
}

#[tokio::test]
async fn anything_changed_after_signing_is_refused() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    let put = format!("/admin/v1/UserCapabilitiesChanger/{}", hex_id(1));
    let body = br#"{"schemas":["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"],"canUseApiKeys":false}"#;
    let now = SystemTime::now();
    for (method, target, body, tamper) in [
        ("GET", user_target(&hex_id(1)), &b""[..], Tamper::Path),
        ("GET", user_target(&hex_id(1)), b"", Tamper::Host),
        (
            "GET",
            user_target(&hex_id(1)),
            b"",
            Tamper::DropHeader("date"),
        ),
        ("PUT", put.clone(), &body[..], Tamper::Body),
        (
            "PUT",
            put.clone(),
            body,
            Tamper::DropHeader("x-content-sha256"),
        ),
        ("PUT", put.clone(), body, Tamper::DropHeader("content-type")),
    ] {
        let r = send(&idd, method, &target, body, now, tamper).await;
        assert_eq!(r.status, 401, "{method} {target} must be refused");
    }
    // Too old a date, even though correctly signed.
    let r = send(
        &idd,
        "GET",
        &user_target(&hex_id(1)),
        b"",
        now - Duration::from_secs(600),
        Tamper::None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(idd
        .requests()
        .iter()
        .all(|r| !r.auth_ok && r.auth_error.is_some()));
    assert_eq!(
        idd.user_caps(&hex_id(1)),
        Some(ALL_ON),
        "no refused write took effect"
    );

    // A valid signature for a key id the server does not accept.
    idd.set_accepted_key_ids(vec!["ST$another".into()]);
    let r = send(
        &idd,
        "GET",
        &user_target(&hex_id(1)),
        b"",
        now,
        Tamper::None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn writes_change_only_the_given_capabilities() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    let put = format!("/admin/v1/UserCapabilitiesChanger/{}", hex_id(1));
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"], "canUseApiKeys": false, "canUseSmtpCredentials": false}).to_string();
    let r = send_valid(&idd, "PUT", &put, body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut expected = ALL_ON;
    expected[0] = Some(false);
    expected[6] = Some(false);
    assert_eq!(idd.user_caps(&hex_id(1)), Some(expected));
    let bad = json!({"schemas": ["urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger"], "canUseEverything": false}).to_string();
    let r = send_valid(&idd, "PUT", &put, bad.as_bytes()).await;
    assert_eq!(r.status, 400);
    let r = send_valid(&idd, "GET", &user_target(&hex_id(2)), b"").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn lists_page_by_creation_and_filter() {
    let idd = server().await;
    for n in 0..25u64 {
        idd.add_user(
            &hex_id(n),
            &format!("u{n}@example.com"),
            ALL_ON,
            if n % 5 == 0 { "idcsui" } else { "samljit" },
            n % 5 != 0,
        );
    }
    idd.add_user_after_list_pages(1, &hex_id(100), "late@example.com", ALL_ON, "samljit");
    let filter = "urn%3Aietf%3Aparams%3Ascim%3Aschemas%3Aoracle%3Aidcs%3Aextension%3Auser%3AUser%3AcreationMechanism%20eq%20%22samljit%22";
    let target = |start: u64| {
        format!("/admin/v1/Users?filter={filter}&sortBy=meta.created&startIndex={start}&count=8")
    };
    let r = send_valid(&idd, "GET", &target(1), b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 20);
    assert_eq!(r.body["itemsPerPage"], 8);
    assert_eq!(r.body["Resources"][0]["id"], hex_id(1));
    let r = send_valid(&idd, "GET", &target(17), b"").await;
    assert_eq!(
        r.body["totalResults"], 21,
        "the late user appeared after the first page"
    );
    assert_eq!(r.body["Resources"].as_array().unwrap().len(), 5);
    assert_eq!(r.body["Resources"][4]["id"], hex_id(100), "newest last");
}

#[tokio::test]
async fn faults_fire_the_given_number_of_times() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    idd.add_fault(
        "GET",
        &hex_id(1),
        Fault::TooManyRequests {
            retry_after: Some("1".into()),
        },
        Some(2),
    );
    for expected in [429, 429, 200] {
        let r = send_valid(&idd, "GET", &user_target(&hex_id(1)), b"").await;
        assert_eq!(r.status, expected);
    }
    assert_eq!(
        idd.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![Some(429), Some(429), Some(200)]
    );
}
