//! Issue 24: one decision per user and a record of every write, under faults, kills and hostile
//! answers, through the real binary.

use serde_json::{json, Value};

use crate::enforcement::{actor_record, function_for, invoke, server, ALL_ON, DOMAIN_A};
use crate::platform_harness::Call;
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

/// The FDK's answer to a header block it will not read (more than 100 headers, or more than about
/// 400 KiB of them): hyper answers 431 before the function sees the call. The README documents why
/// it is left so; this pins the limits and that the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_gets_431_and_the_next_call_is_served() {
    let f = crate::platform_harness::FnProcess::start(&crate::platform_harness::Launch::function())
        .unwrap();
    let many = (0..120).fold(Call::new("[]"), |c, n| {
        c.header(&format!("Fn-Http-H-X-{n}"), "v")
    });
    assert_eq!(f.call(many).await.status, 431);
    let big = Call::new("[]").header("Fn-Http-H-X-Big", "x".repeat(500 * 1024));
    assert_eq!(f.call(big).await.status, 431);
    let fits = (0..80).fold(Call::new("[]"), |c, n| {
        c.header(&format!("Fn-Http-H-X-{n}"), "x".repeat(4000))
    });
    assert_eq!(f.call(fits).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_past_fn_deadline_is_treated_alike() {
    let idd = server().await;
    let record = crate::enforcement::jit_user(&idd, 3);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    for past in [
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2000-01-01T00:00:00.5+01:00",
    ] {
        let call = Call::new(record.to_string()).deadline(Some(past.to_string()));
        let reply = f.call(call).await;
        reply.assert_platform_valid();
        assert_eq!(reply.status, 504, "{past}");
    }
    assert!(idd.requests().is_empty(), "nothing is sent past a deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_dry_run_a_duplicate_of_a_would_be_write_says_applied() {
    let idd = server().await;
    let mut batch = crate::enforcement::jit_users(&idd, 0..2);
    batch.extend(batch.clone());
    let f = function_for(&[(DOMAIN_A, &idd)], &[("DRY_RUN", "true")]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    for (index, reason) in [
        (0, "dry run: would be written"),
        (2, "duplicate of record 0: dry run: would be written"),
        (3, "duplicate of record 1: dry run: would be written"),
    ] {
        let r = &report["results"][index];
        assert_eq!(r["outcome"], "applied", "{report}");
        assert_eq!(r["reason"], reason, "{report}");
    }
    assert_eq!(report["applied"], 4, "{report}");
    assert_eq!(idd.count("PUT", "/"), 0, "a dry run writes nothing");
}

/// A failure reason says each part once: an error's `Display` is its own part, the log site prints
/// the chain. A key file that stops being PEM (rotated badly) used to read `…: private key: not PEM
/// text (…): private key: not PEM text (…)`, at start and when a 401 makes the function re-read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reason_never_repeats_its_source() {
    use crate::platform_harness::{FnProcess, InitFailure, Launch};
    use crate::support::identity_domain_server::{vectors_dir, Fault};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "this is not a key").unwrap();
    let launch = Launch::function().env(
        "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
        key.display().to_string(),
    );
    match FnProcess::start(&launch) {
        Err(InitFailure::Exited { stderr, .. }) => {
            assert_eq!(stderr.matches("not PEM text").count(), 1, "{stderr}")
        }
        _ => panic!("started with a key file that cannot be used"),
    }
    // A key that goes bad after start, found when a 401 makes the function re-read it.
    std::fs::copy(vectors_dir().join("rp_session_key_pkcs1.pem"), &key).unwrap();
    let idd = server().await;
    let record = crate::enforcement::jit_user(&idd, 4);
    idd.add_fault("GET", "/admin/v1/Users/", Fault::Unauthorized, None);
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[(
            "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
            &key.display().to_string(),
        )],
    );
    std::fs::write(&key, "this is not a key").unwrap();
    let (status, _) = invoke(&f, &record).await;
    assert_eq!(status, 502);
    let log = f.stderr.wait_for("\"summary\"");
    let line = log
        .lines()
        .find(|l| l.contains("\"message\":\"record\""))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("not PEM text"), "{line}");
    assert_eq!(line.matches("not PEM text").count(), 1, "{line}");
}
