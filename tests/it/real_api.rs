//! What Oracle's own SDK and sample answers showed about the real API (issue 23): the read names each
//! capability attribute, the listing sorts `ASCENDING`, users without `canUseConsole`, and
//! `createuser` records that never act on their actor.

use serde_json::{json, Value};

use crate::enforcement::{function_for, invoke, jit_user, server, DOMAIN_A};
use crate::support::identity_domain_server::{
    hex_id, IdentityDomainServer, ATTRIBUTES, CAPABILITIES_URN,
};

/// The decoded `attributes` of a recorded request's target, one entry per attribute.
fn attributes_of(target: &str) -> Vec<String> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "attributes")
        .map(|(_, v)| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

fn query_value(target: &str, key: &str) -> Option<String> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn assert_names_each_capability(target: &str) {
    let attributes = attributes_of(target);
    for name in ATTRIBUTES {
        let full = format!("{CAPABILITIES_URN}:{name}");
        assert!(attributes.contains(&full), "{full} missing from {target}");
    }
    assert!(
        !attributes.iter().any(|a| a == CAPABILITIES_URN),
        "the bare extension URN was asked for: {target}"
    );
}

fn only_request(idd: &IdentityDomainServer, method: &str, path: &str) -> String {
    let matching: Vec<_> = idd
        .requests()
        .into_iter()
        .filter(|r| r.method == method && r.target.starts_with(path))
        .collect();
    assert_eq!(matching.len(), 1, "{method} {path}: {matching:?}");
    matching[0].target.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_names_each_capability_attribute_never_the_bare_urn() {
    let idd = server().await;
    let record = jit_user(&idd, 1);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &json!([record])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 1, "{report}");
    let read = only_request(&idd, "GET", &format!("/admin/v1/Users/{}", hex_id(1)));
    assert_names_each_capability(&read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_names_each_capability_and_sorts_ascending() {
    let idd = server().await;
    jit_user(&idd, 1);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_A}})).await;
    // The test domain answers 400 to any other sortOrder, as Oracle's SDK sends nothing else.
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 1, "{report}");
    let page = only_request(&idd, "GET", "/admin/v1/Users?");
    assert_names_each_capability(&page);
    assert_eq!(
        query_value(&page, "sortOrder").as_deref(),
        Some("ASCENDING")
    );
    assert_eq!(
        query_value(&page, "sortBy").as_deref(),
        Some("meta.created")
    );
}

/// The plan shows the same read the function sends.
#[test]
fn plan_shows_the_read_with_each_capability_attribute() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/payloads/sch-batch.json"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oci-user-capabilities"))
        .args(["plan", sample])
        .output()
        .expect("plan runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let plan: Value = serde_json::from_str(&text).expect("plan JSON");
    let read = plan["policy"]["readAttributes"]
        .as_str()
        .expect("readAttributes");
    assert_names_each_capability(&format!(
        "?attributes={}",
        url::form_urlencoded::byte_serialize(read.as_bytes()).collect::<String>()
    ));
}

/// Every capability on, as JIT users arrive, but in the shape of Oracle's own sample answers: seven
/// flags, no `canUseConsole`.
const SEVEN_ON: [Option<bool>; 8] = [
    Some(true),
    Some(true),
    Some(true),
    Some(true),
    Some(true),
    Some(true),
    Some(true),
    None,
];

fn seven_flag_user(idd: &IdentityDomainServer, n: u64, caps: [Option<bool>; 8]) -> Value {
    let name = format!("u{n}@example.com");
    idd.add_user(&hex_id(n), &name, caps, "samljit", true);
    crate::support::fixtures::actor_record(DOMAIN_A, &hex_id(n), &name)
}

fn put_bodies(idd: &IdentityDomainServer, n: u64) -> Vec<Value> {
    idd.requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.target.ends_with(&hex_id(n)))
        .map(|r| serde_json::from_slice(&r.body).expect("PUT body is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_can_use_console_is_written_without_it_when_console_is_unmanaged() {
    let idd = server().await;
    let records = [
        seven_flag_user(&idd, 1, SEVEN_ON),
        // The same shape under a profile that manages console: the profile gives the value.
        seven_flag_user(&idd, 2, SEVEN_ON),
    ];
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &json!([records[0]])).await;
    assert_eq!(status, 200, "{report}");
    let result = &report["results"][0];
    assert_eq!(result["outcome"], "applied", "{report}");
    let reason = result["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no canUseConsole") && reason.contains("left it out"),
        "{reason}"
    );
    let bodies = put_bodies(&idd, 1);
    assert_eq!(bodies.len(), 1);
    let body = bodies[0].as_object().expect("object");
    assert_eq!(body.len(), 8, "schemas and seven booleans: {body:?}");
    assert!(!body.contains_key("canUseConsole"));
    assert_eq!(body["canUseSmtpCredentials"], false);
    let mut expected = crate::support::fixtures::PROFILE_APPLIED;
    expected[7] = None;
    assert_eq!(idd.user_caps(&hex_id(1)), Some(expected));

    let managed = function_for(
        &[(DOMAIN_A, &idd)],
        &[("CAPABILITIES", "smtp_credentials=off,console=on")],
    );
    let (status, report) = invoke(&managed, &json!([records[1]])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["results"][0]["outcome"], "applied", "{report}");
    assert!(report["results"][0].get("reason").is_none(), "{report}");
    let bodies = put_bodies(&idd, 2);
    assert_eq!(bodies[0]["canUseConsole"], true, "{:?}", bodies[0]);
    assert_eq!(bodies[0].as_object().map(|b| b.len()), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_missing_flag_still_fails_the_record_and_writes_nothing() {
    let idd = server().await;
    // No canUseConsole and no canUseDbCredentials; the profile leaves db_credentials to the user.
    let mut caps = SEVEN_ON;
    caps[4] = None;
    let record = seven_flag_user(&idd, 3, caps);
    let f = function_for(&[(DOMAIN_A, &idd)], &[("CAPABILITIES", "api_keys=off")]);
    let (status, _) = invoke(&f, &json!([record])).await;
    assert_eq!(status, 502, "a retry may find the value");
    let logged = crate::reliability::logged_records(&f);
    let (outcome, reason) = &logged[&hex_id(3)];
    assert_eq!(outcome, "failed", "{reason}");
    assert!(
        reason.contains("no boolean canUseDbCredentials"),
        "{reason}"
    );
    assert_eq!(idd.count("PUT", &hex_id(3)), 0, "nothing written");
    assert_eq!(idd.user_caps(&hex_id(3)), Some(caps));
}

/// A record selected as `createuser` with an actor (an administrator who exists in the domain) and
/// no user OCID: `type_` is its CloudEvents type, `resource_id` its `data.resourceId`.
fn createuser_by_admin(type_: &str, resource_id: Value, admin: &str) -> Value {
    json!({
        "id": format!("cu-{type_}"),
        "type": type_,
        "data": {
            "resourceId": resource_id,
            "resourceName": "new.user@example.com",
            "additionalDetails": {
                "actorId": admin, "actorName": "admin@example.com", "actorType": "User",
                "domainName": DOMAIN_A
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_createuser_record_never_acts_on_its_actor() {
    let idd = server().await;
    let admin = hex_id(900);
    idd.add_user(
        &admin,
        "admin@example.com",
        crate::support::fixtures::ALL_ON,
        "idcsui",
        false,
    );
    let batch = json!([
        // Identity's own event with the user OCID missing.
        createuser_by_admin(
            "com.oraclecloud.identitycontrolplane.createuser",
            Value::Null,
            &admin
        ),
        // Another service's event type that merely ends in `.createuser`, its resource not a user.
        createuser_by_admin(
            "com.oraclecloud.databaseservice.autonomousdatabase.createuser",
            json!("ocid1.autonomousdatabase.oc1..aaaaexample"),
            &admin
        ),
        // Selected by eventName alone.
        {
            "id": "cu-name",
            "data": {"eventName": "CreateUser", "additionalDetails": {
                "actorId": admin, "actorName": "admin@example.com", "domainName": DOMAIN_A}}
        },
    ]);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rejected"], 3, "{report}");
    for result in report["results"].as_array().expect("results") {
        let reason = result["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("createuser record names no user"),
            "{result}"
        );
        assert!(
            result.get("userId").is_none(),
            "the actor is not the user: {result}"
        );
    }
    assert!(idd.requests().is_empty(), "nothing was sent");
    assert_eq!(
        idd.user_caps(&admin),
        Some(crate::support::fixtures::ALL_ON)
    );
}

#[test]
fn plan_rejects_a_createuser_record_without_a_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("createuser.json");
    let record = createuser_by_admin(
        "com.oraclecloud.identitycontrolplane.createuser",
        Value::Null,
        &hex_id(900),
    );
    std::fs::write(&path, record.to_string()).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oci-user-capabilities"))
        .arg("plan")
        .arg(&path)
        .output()
        .expect("plan runs");
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let result = &plan["results"][0];
    assert_eq!(result["predictedOutcome"], json!(["rejected"]), "{plan}");
    assert!(
        result["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("createuser record names no user")),
        "{plan}"
    );
}
