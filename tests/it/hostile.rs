//! Issue 24: one decision per user and a record of every write, under faults, kills and hostile
//! answers, through the real binary.

use serde_json::{json, Value};

use crate::enforcement::{actor_record, function_for, invoke, server, ALL_ON, DOMAIN_A};
use crate::support::fixtures::PROFILE_APPLIED;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kelvin_sign_look_alike_is_not_exempted_by_an_ascii_pattern() {
    let idd = server().await;
    let id = crate::support::identity_domain_server::hex_id(1);
    let name = "brea\u{212A}glass-x@example.com";
    idd.add_user(&id, name, ALL_ON, "samljit", true);
    let policy = "[[rule]]\nname = \"break-glass\"\nusers = [\"breakglass-*\"]\nexempt = true\n";
    let f = function_for(&[(DOMAIN_A, &idd)], &[("POLICY", policy)]);
    let (status, report) = invoke(&f, &actor_record(DOMAIN_A, &id, name)).await;
    assert_eq!(status, 200, "{report}");
    let result = &report["results"][0];
    assert_eq!(result["outcome"], "applied", "{report}");
    assert_eq!(result["policy"], json!(["default"]), "{report}");
    assert_eq!(idd.user_caps(&id), Some(PROFILE_APPLIED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_of_other_namespaces_never_fail_a_user_whatever_their_values() {
    let idd = server().await;
    let id = crate::support::identity_domain_server::hex_id(2);
    idd.add_user(&id, "ana@example.com", ALL_ON, "samljit", true);
    for entry in [
        json!({"namespace": "Finance", "key": "CostCenter", "value": null}),
        json!({"namespace": "Finance", "key": "Budget", "value": 42}),
        json!({"namespace": "Finance", "key": "Owner"}),
        json!({"namespace": "Security", "key": "smtp_credentials", "value": "on"}),
    ] {
        idd.add_defined_tag_raw(&id, entry);
    }
    let f = function_for(&[(DOMAIN_A, &idd)], &[("TAG_NAMESPACE", "Security")]);
    let (status, report) = invoke(&f, &actor_record(DOMAIN_A, &id, "ana@example.com")).await;
    assert_eq!(status, 200, "{report}");
    let result: &Value = &report["results"][0];
    assert_eq!(result["outcome"], "applied", "{report}");
    assert_eq!(
        result["policy"],
        json!(["tag:Security.smtp_credentials"]),
        "{report}"
    );
    let mut expected = PROFILE_APPLIED;
    expected[6] = Some(true); // smtp_credentials, turned on by our namespace's tag
    assert_eq!(idd.user_caps(&id), Some(expected));
}
