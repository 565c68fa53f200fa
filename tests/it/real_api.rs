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
