//! Every record shape a tenancy sends, end to end through the real binary: the OCI Events
//! `createuser` object (user and domain named by OCID), its audit record in a Service Connector
//! batch, group-membership changes, and domain OCIDs resolved through the IAM control plane
//! (`GetDomain` on the signature-verifying test server), once per OCID.

use std::sync::Arc;
use std::time::Duration;

use oci_user_capabilities::clients::control_plane::{ControlPlane, ResolveError};
use oci_user_capabilities::clients::identity_domain::{ClientSettings, IdentityDomainClient};
use oci_user_capabilities::intake::names::{DomainOcid, DomainUrl};
use oci_user_capabilities::signer::ResourcePrincipal;
use serde_json::{json, Value};

use crate::enforcement::{admin_record, invoke, server, ALL_ON, DOMAIN_A, PROFILE_APPLIED};
use crate::platform_harness::{vectors_dir, FnProcess, Launch, FN_BINARY};
use crate::support::fixtures;
use crate::support::identity_domain_server::{hex_id, test_key_pem, Fault, IdentityDomainServer};

const DOMAIN_OCID: &str = "ocid1.domain.oc1..aaaaaaaaexampledomain00000000000000000000000000000000";
const OTHER_DOMAIN_OCID: &str =
    "ocid1.domain.oc1..aaaaaaaaotherdomain0000000000000000000000000000000";
const CREATEUSER: &str = "com.oraclecloud.identitycontrolplane.createuser";

fn user_ocid(n: u64) -> String {
    format!("ocid1.user.oc1..aaaaaaaauser{n:0>40}")
}

/// Adds user `n` with every capability on and an OCID, as a new user arrives.
fn new_user(idd: &IdentityDomainServer, n: u64) -> (String, String) {
    let name = format!("u{n}@example.com");
    idd.add_user(&hex_id(n), &name, ALL_ON, "idcsui", false);
    idd.set_user_ocid(&hex_id(n), &user_ocid(n));
    (user_ocid(n), name)
}

/// The OCI Events object Oracle's own capability function is triggered by.
fn events_object(user: &str, name: &str, domain: &str) -> Value {
    json!({
        "eventType": CREATEUSER,
        "cloudEventsVersion": "0.1",
        "eventTypeVersion": "2.0",
        "source": "IdentityControlPlane",
        "eventTime": "2026-11-21T10:00:00Z",
        "contentType": "application/json",
        "eventID": format!("ev-{user}"),
        "data": {
            "compartmentId": "ocid1.tenancy.oc1..aaaaaaaaexampletenancy",
            "resourceName": name,
            "resourceId": user,
            "additionalDetails": {"domainId": domain}
        }
    })
}

/// The same event as an audit record delivered by Service Connector (CloudEvents 1.0).
fn audit_record(user: &str, name: &str, domain: &str) -> Value {
    json!({
        "data": {
            "eventName": "CreateUser",
            "compartmentId": "ocid1.tenancy.oc1..aaaaaaaaexampletenancy",
            "resourceName": name,
            "resourceId": user,
            "additionalDetails": {"domainId": domain},
            "identity": {"principalName": "admin@example.com"}
        },
        "dataschema": "2.0",
        "id": format!("audit-{user}"),
        "oracle": {"loggroupid": "_Audit"},
        "source": name,
        "specversion": "1.0",
        "time": "2026-11-21T10:00:01.000Z",
        "type": "com.oraclecloud.identityControlPlane.CreateUser"
    })
}

/// The function with default configuration but for where the control plane is (loopback here;
/// the region's endpoint in production) and no client-side rate cap.
fn function(control_plane: &IdentityDomainServer, extra: &[(&str, &str)]) -> FnProcess {
    let mut launch = Launch::function()
        .env("IDENTITY_CONTROL_PLANE_URL", control_plane.base_url())
        .env("MAX_REQUESTS_PER_SECOND", "0");
    for (k, v) in extra {
        launch = launch.env(k, *v);
    }
    let f = FnProcess::start(&launch).unwrap_or_else(|e| panic!("function did not start: {e:?}"));
    f.check_socket_destination();
    f
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().expect("results")
}

fn get_domain_calls(idd: &IdentityDomainServer, ocid: &str) -> usize {
    idd.count("GET", &format!("/20160918/domains/{ocid}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_createuser_object_is_enforced_with_default_configuration() {
    let idd = server().await;
    let (ocid, name) = new_user(&idd, 1);
    // The control plane answers with a trailing '/', which is dropped.
    idd.add_domain(DOMAIN_OCID, &format!("{}/", idd.base_url()));
    let f = function(&idd, &[]);

    let (status, report) = invoke(&f, &events_object(&ocid, &name, DOMAIN_OCID)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["received"].as_u64(), report["applied"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let r = &results(&report)[0];
    assert_eq!(r["userId"], ocid.as_str());
    assert_eq!(r["domain"], DOMAIN_OCID);
    assert_eq!(r["eventId"], format!("ev-{ocid}"));
    assert_eq!(idd.user_caps(&hex_id(1)), Some(PROFILE_APPLIED));

    // GetDomain once, the read by OCID (asking for `ocid` to check it), the write by SCIM id.
    let requests = idd.requests();
    assert!(requests.iter().all(|r| r.auth_ok), "every request signed");
    let targets: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.target.split('?').next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("GET".to_owned(), format!("/20160918/domains/{DOMAIN_OCID}")),
            ("GET".to_owned(), format!("/admin/v1/Users/{ocid}")),
            (
                "PUT".to_owned(),
                format!("/admin/v1/UserCapabilitiesChanger/{}", hex_id(1))
            ),
        ]
    );
    assert!(
        requests[1].target.contains("ocid"),
        "{}",
        requests[1].target
    );

    // A second invocation finds the domain in the process's cache.
    let (ocid2, name2) = new_user(&idd, 2);
    let (status, report) = invoke(&f, &events_object(&ocid2, &name2, DOMAIN_OCID)).await;
    assert_eq!(
        (status, report["applied"].as_u64()),
        (200, Some(1)),
        "{report}"
    );
    assert_eq!(get_domain_calls(&idd, DOMAIN_OCID), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_createuser_records_in_a_batch_are_enforced() {
    let idd = server().await;
    idd.add_domain(DOMAIN_OCID, &idd.base_url());
    let mut batch = Vec::new();
    for n in 10..14 {
        let (ocid, name) = new_user(&idd, n);
        batch.push(audit_record(&ocid, &name, DOMAIN_OCID));
    }
    // The same user's event twice (Events and audit both delivered): processed once.
    let (ocid, name) = (user_ocid(10), "u10@example.com");
    batch.push(events_object(&ocid, name, DOMAIN_OCID));
    // A record naming the user by OCID with a name the domain does not have.
    batch.push(audit_record(
        &user_ocid(11),
        "mallory@example.com",
        DOMAIN_OCID,
    ));
    // Other audit records in the same batch are ignored.
    batch.push(json!({"type": "com.oraclecloud.identityControlPlane.UpdateUser", "id": "x",
                      "data": {"resourceId": user_ocid(12), "additionalDetails": {"domainId": DOMAIN_OCID}}}));
    // User 13 named by SCIM id in a JIT record of the same domain: one user, one write.
    batch.push(admin_record(DOMAIN_A, &hex_id(13), "u13@example.com"));
    let template = idd.base_url();
    let f = function(
        &idd,
        &[
            ("MAX_CONCURRENCY", "4"),
            ("IDENTITY_DOMAIN_URL_TEMPLATE", &template),
        ],
    );

    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["received"].as_u64(),
            report["applied"].as_u64(),
            report["unchanged"].as_u64(),
            report["ignored"].as_u64(),
            report["rejected"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(8), Some(4), Some(2), Some(1), Some(1), Some(0)),
        "{report}"
    );
    let dup = &results(&report)[4];
    assert_eq!(dup["outcome"], "unchanged");
    assert!(
        dup["reason"]
            .as_str()
            .unwrap()
            .starts_with("duplicate of record 0"),
        "{dup}"
    );
    let mismatch = &results(&report)[5];
    assert_eq!(mismatch["outcome"], "rejected");
    assert!(
        mismatch["reason"]
            .as_str()
            .unwrap()
            .starts_with("identity mismatch"),
        "{mismatch}"
    );
    let by_id_and_ocid: Vec<&Value> = [&results(&report)[3], &results(&report)[7]]
        .into_iter()
        .filter(|r| r["outcome"] == "unchanged")
        .collect();
    assert_eq!(by_id_and_ocid.len(), 1, "{report}");
    assert!(by_id_and_ocid[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("duplicate of record "));
    for n in 10..14 {
        assert_eq!(idd.user_caps(&hex_id(n)), Some(PROFILE_APPLIED), "user {n}");
    }
    assert_eq!(idd.count("PUT", ""), 4, "one write per user");
    assert_eq!(
        idd.count("GET", &format!("/admin/v1/Users/{}", user_ocid(10))),
        1
    );
    assert_eq!(get_domain_calls(&idd, DOMAIN_OCID), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_record_enforces_the_referenced_user() {
    let idd = server().await;
    let member = hex_id(20);
    let admin = hex_id(21);
    idd.add_user(&member, "member@example.com", ALL_ON, "samljit", true);
    idd.add_user(&admin, "admin@example.com", ALL_ON, "idcsui", false);
    let record = json!({
        "data": {
            "eventName": "AddMember",
            "additionalDetails": {
                "eventId": "admin.group.add.member.success",
                "actorId": admin, "actorName": "admin@example.com", "actorType": "User",
                "adminResourceId": hex_id(22), "adminResourceName": "OCI Developers",
                "adminResourceType": "Group",
                "adminRefResourceId": member, "adminRefResourceName": "member@example.com",
                "adminRefResourceType": "User",
                "domainName": DOMAIN_A
            }
        },
        "id": "grp-1",
        "type": "com.oraclecloud.identitydomains.AddMember"
    });
    let f = function(
        &idd,
        &[
            (
                "EVENT_TYPES",
                "UserJit,createuser,admin.group.add.member.success",
            ),
            ("IDENTITY_DOMAIN_URL_TEMPLATE", &idd.base_url()),
        ],
    );
    let (status, report) = invoke(&f, &json!([record])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 1, "{report}");
    let r = &results(&report)[0];
    assert_eq!(
        (r["userId"].as_str(), r["userName"].as_str()),
        (Some(member.as_str()), Some("member@example.com"))
    );
    assert_eq!(idd.user_caps(&member), Some(PROFILE_APPLIED));
    assert_eq!(
        idd.user_caps(&admin),
        Some(ALL_ON),
        "the actor is never touched"
    );
    assert_eq!(idd.count("GET", &format!("/admin/v1/Users/{admin}")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_get_domain_per_domain_ocid_across_a_batch() {
    let plane = server().await;
    let a = server().await;
    let b = server().await;
    // Slow answers, so concurrent users would overlap if each asked for itself.
    plane.set_latency(Duration::from_millis(150));
    plane.add_domain(DOMAIN_OCID, &a.base_url());
    plane.add_domain(OTHER_DOMAIN_OCID, &format!("{}/", b.base_url()));
    let mut batch = Vec::new();
    for n in 30..42 {
        let (idd, domain) = if n % 2 == 0 {
            (&a, DOMAIN_OCID)
        } else {
            (&b, OTHER_DOMAIN_OCID)
        };
        let (ocid, name) = new_user(idd, n);
        batch.push(if n % 3 == 0 {
            audit_record(&ocid, &name, domain)
        } else {
            events_object(&ocid, &name, domain)
        });
    }
    let f = function(&plane, &[("MAX_CONCURRENCY", "8")]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 12, "{report}");
    assert_eq!(get_domain_calls(&plane, DOMAIN_OCID), 1);
    assert_eq!(get_domain_calls(&plane, OTHER_DOMAIN_OCID), 1);
    assert_eq!(
        plane.count("GET", "/admin/"),
        0,
        "users are read in their own domains"
    );
    assert_eq!((a.count("PUT", ""), b.count("PUT", "")), (6, 6));
    assert!(plane.requests().iter().all(|r| r.auth_ok));

    // An unknown OCID is rejected (404, final) and named; it is asked again on a later call,
    // since a failure is not remembered.
    let unknown = "ocid1.domain.oc1..aaaaaaaaunknown";
    let (ocid, name) = new_user(&a, 50);
    let (status, report) = invoke(&f, &events_object(&ocid, &name, unknown)).await;
    assert_eq!(status, 200, "{report}");
    let r = &results(&report)[0];
    assert_eq!(r["outcome"], "rejected", "{report}");
    assert!(r["reason"].as_str().unwrap().contains(unknown), "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("read domains"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_answer_that_is_not_an_identity_domain_is_refused() {
    let plane = server().await;
    // A server that must never be asked anything: reachable through 0.0.0.0, which is not a
    // loopback address by name, so the answer is refused before any request is sent there.
    let decoy = server().await;
    let decoy_url = format!("http://0.0.0.0:{}", decoy.addr().port());
    plane.add_domain(DOMAIN_OCID, &decoy_url);
    plane.add_domain(
        OTHER_DOMAIN_OCID,
        "https://idcs-0123456789abcdef0123456789abcdef.evil.example:443/",
    );
    let (ocid, name) = new_user(&decoy, 60);
    let f = function(&plane, &[]);
    let body = json!([
        events_object(&ocid, &name, DOMAIN_OCID),
        events_object(&user_ocid(61), "u61@example.com", OTHER_DOMAIN_OCID),
    ]);
    let (status, report) = invoke(&f, &body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rejected"], 2, "{report}");
    let reasons: Vec<&str> = results(&report)
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains(&decoy_url) && reasons[0].contains("not an identity-domain URL"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("evil.example"), "{}", reasons[1]);
    assert!(
        decoy.requests().is_empty(),
        "nothing was sent to the refused URL"
    );
    assert_eq!(decoy.user_caps(&hex_id(60)), Some(ALL_ON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_by_domain_ocid_resolves_through_the_control_plane() {
    let idd = server().await;
    idd.add_domain(DOMAIN_OCID, &idd.base_url());
    for n in 0..5 {
        idd.add_user(
            &hex_id(n),
            &format!("jit{n}@example.com"),
            ALL_ON,
            "samljit",
            true,
        );
    }
    // Through the function, with DOMAINS listing the bare OCID.
    let f = function(&idd, &[("DOMAINS", DOMAIN_OCID)]);
    let (status, report) = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_OCID}})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["scanned"].as_u64(), report["applied"].as_u64()),
        (Some(5), Some(5)),
        "{report}"
    );
    assert_eq!(report["domain"], idd.base_url());
    assert_eq!(get_domain_calls(&idd, DOMAIN_OCID), 1);
    // An OCID DOMAINS does not list is refused without asking anyone.
    let (status, report) = invoke(&f, &json!({"reconcile": {"domain": OTHER_DOMAIN_OCID}})).await;
    assert_eq!(status, 200);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("not listed in DOMAINS"),
        "{report}"
    );
    assert_eq!(get_domain_calls(&idd, OTHER_DOMAIN_OCID), 0);

    // From the command line, signing with the operator's API key.
    let operator = IdentityDomainServer::start(&test_key_pem(), vec![fixtures::api_key_id()]).await;
    operator.add_domain(DOMAIN_OCID, &operator.base_url());
    for n in 0..3 {
        operator.add_user(
            &hex_id(n),
            &format!("jit{n}@example.com"),
            ALL_ON,
            "samljit",
            true,
        );
    }
    let home = fixtures::operator_home("");
    let out = tokio::process::Command::new(FN_BINARY)
        .args(["reconcile", "--domain", DOMAIN_OCID, "--output", "json"])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .env("IDENTITY_CONTROL_PLANE_URL", operator.base_url())
        .env("BULK", "off")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["applied"], 3, "{report}");
    assert_eq!(get_domain_calls(&operator, DOMAIN_OCID), 1);
    assert!(operator.requests().iter().all(|r| r.auth_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_domain_ocid_in_domains_needs_a_control_plane_to_start() {
    // No IDENTITY_CONTROL_PLANE_URL and no region: the start is refused, naming the keys.
    let launch = Launch::function()
        .env("DOMAINS", DOMAIN_OCID)
        .env("OCI_RESOURCE_PRINCIPAL_REGION", "");
    let Err(failure) = FnProcess::start(&launch) else {
        panic!("started without a control plane");
    };
    let text = format!("{failure:?}");
    assert!(text.contains("IDENTITY_CONTROL_PLANE_URL"), "{text}");
    // A control-plane URL that is not https to a remote host is refused too.
    let launch =
        Launch::function().env("IDENTITY_CONTROL_PLANE_URL", "http://identity.example.com");
    let Err(failure) = FnProcess::start(&launch) else {
        panic!("started with an http control plane");
    };
    assert!(format!("{failure:?}").contains("IDENTITY_CONTROL_PLANE_URL"));
}

/// Single flight in the library: many concurrent askers, one `GetDomain`; the `:443` the real
/// service appends is dropped; nothing is sent to the resolved (public) URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_ocid_share_one_get_domain() {
    let plane = server().await;
    plane.set_latency(Duration::from_millis(200));
    let real = "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com";
    plane.add_domain(DOMAIN_OCID, &format!("{real}:443"));
    let dir = vectors_dir();
    let lookup = |key: &str| match key {
        "OCI_RESOURCE_PRINCIPAL_VERSION" => Some("2.2".to_owned()),
        "OCI_RESOURCE_PRINCIPAL_RPST" => Some(dir.join("rpst.jwt").display().to_string()),
        "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM" => {
            Some(dir.join("rp_session_key_pkcs1.pem").display().to_string())
        }
        _ => None,
    };
    let credentials = ResourcePrincipal::from_env(&lookup, std::time::SystemTime::now()).unwrap();
    let client = IdentityDomainClient::new(
        Arc::new(credentials),
        ClientSettings {
            max_requests_per_second: None,
            ..ClientSettings::default()
        },
    )
    .unwrap();
    let cp = ControlPlane::new(
        Ok(DomainUrl::parse(&plane.base_url()).unwrap()),
        client.transport().clone(),
    );
    let ocid = DomainOcid::parse(DOMAIN_OCID).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lookups = (0..16).map(|_| {
        let cp = cp.clone();
        let ocid = ocid.clone();
        tokio::spawn(async move { cp.domain_url(&ocid, deadline).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert_eq!(lookup.unwrap().unwrap().as_str(), real);
    }
    assert_eq!(get_domain_calls(&plane, DOMAIN_OCID), 1);
    assert!(plane.requests().iter().all(|r| r.auth_ok));

    // Without a control plane, the reason is given and nothing is sent.
    let none = ControlPlane::new(Err("no region".to_owned()), client.transport().clone());
    match none.domain_url(&ocid, deadline).await {
        Err(ResolveError::Rejected(reason)) => assert!(reason.contains("no region"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// `GetDomain` goes through the identity-domain client's classifier: 5xx retried, 429 retried then
/// `failed` (502, so the platform redelivers), other 4xx `rejected` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_domain_failures_are_classified_like_identity_domain_calls() {
    let idd = server().await;
    idd.add_domain(DOMAIN_OCID, &idd.base_url());
    idd.add_domain(OTHER_DOMAIN_OCID, &idd.base_url());
    let path = format!("/20160918/domains/{DOMAIN_OCID}");
    idd.add_fault("GET", &path, Fault::Status(503), Some(2));
    let (ocid, name) = new_user(&idd, 70);
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &events_object(&ocid, &name, DOMAIN_OCID)).await;
    assert_eq!(
        (status, report["applied"].as_u64()),
        (200, Some(1)),
        "{report}"
    );
    assert_eq!(
        get_domain_calls(&idd, DOMAIN_OCID),
        3,
        "two 503s, then the answer"
    );

    let other = format!("/20160918/domains/{OTHER_DOMAIN_OCID}");
    idd.add_fault("GET", &other, Fault::Status(400), Some(1));
    let (ocid, name) = new_user(&idd, 71);
    let (status, report) = invoke(&f, &events_object(&ocid, &name, OTHER_DOMAIN_OCID)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(results(&report)[0]["outcome"], "rejected", "{report}");
    assert_eq!(
        get_domain_calls(&idd, OTHER_DOMAIN_OCID),
        1,
        "a 400 is not retried"
    );

    // Not remembered: the next call asks again, and this time keeps getting 429.
    idd.add_fault(
        "GET",
        &other,
        Fault::TooManyRequests {
            retry_after: Some("0".to_owned()),
        },
        None,
    );
    let (status, log) = invoke(&f, &events_object(&ocid, &name, OTHER_DOMAIN_OCID)).await;
    assert_eq!(status, 502, "a retry can fix a 429: {log}");
    assert!(get_domain_calls(&idd, OTHER_DOMAIN_OCID) > 2);
    assert_eq!(idd.user_caps(&hex_id(71)), Some(ALL_ON), "nothing written");
}
