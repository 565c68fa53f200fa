//! A newcomer's first hour (issue 23): configuration near-misses warned about at start, the start
//! line stating the profile, payloads with a byte-order mark, errors that say the fix, and `plan`'s
//! counts.

use serde_json::{json, Value};

use crate::enforcement::{function_for, invoke, jit_user, server, DOMAIN_A};
use crate::platform_harness::{Call, FnProcess, Launch, FN_BINARY};

/// The log lines (JSON) of a started function, once its `ready` line is out.
fn start_log(f: &FnProcess) -> Vec<Value> {
    f.stderr
        .wait_for("\"ready\"")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_keys_are_warned_about_naming_the_key_meant() {
    let launch = Launch::function()
        .env("CAPABILITIES", "api_keys=off")
        .env("CAPABILITY", "smtp_credentials=off")
        .env("event_types", "UserJit")
        .env("MAX_CONCURENCY", "8")
        .env("BUILD", "1");
    let f = FnProcess::start(&launch).unwrap_or_else(|e| panic!("did not start: {e:?}"));
    let log = start_log(&f);
    let warnings: Vec<(&str, &str)> = log
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| Some((l["variable"].as_str()?, l["meant"].as_str()?)))
        .collect();
    assert_eq!(
        warnings,
        [
            ("CAPABILITY", "CAPABILITIES"),
            ("MAX_CONCURENCY", "MAX_CONCURRENCY"),
            ("event_types", "EVENT_TYPES"),
        ],
        "{log:?}"
    );
    let text = f.stderr.text();
    assert!(
        text.contains("did you mean CAPABILITIES?"),
        "the message itself names the key: {text}"
    );
    // The start line states the effective profile and what it leaves alone.
    let ready = log
        .iter()
        .find(|l| l["message"] == "ready")
        .expect("ready line");
    assert_eq!(ready["profile"], "api_keys=off", "{ready}");
    let unmanaged = ready["unmanaged"].as_str().unwrap_or_default();
    assert!(
        unmanaged.starts_with(
            "auth_tokens,console_password,customer_secret_keys,db_credentials,\
             oauth2_client_credentials,smtp_credentials,console"
        ),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_start_line_names_console_as_unmanaged_and_warns_of_nothing() {
    let f = FnProcess::start(&Launch::function()).unwrap_or_else(|e| panic!("{e:?}"));
    let log = start_log(&f);
    assert!(!log.iter().any(|l| l["level"] == "WARN"), "{log:?}");
    let ready = log
        .iter()
        .find(|l| l["message"] == "ready")
        .expect("ready line");
    assert!(
        ready["unmanaged"]
            .as_str()
            .is_some_and(|u| u.starts_with("console ")),
        "{ready}"
    );
}

#[test]
fn plan_warns_of_near_misses_on_stderr_and_lists_unmanaged_capabilities() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/payloads/sch-batch.json"
    );
    let out = std::process::Command::new(FN_BINARY)
        .args(["plan", sample])
        .env("CAPABILITIES", "api_keys=off")
        .env("Capabilities", "api_keys=off,auth_tokens=off")
        .env("EVENT_TYPE", "UserJit")
        .output()
        .expect("plan runs");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"Capabilities\" is not a configuration key and is ignored; did you mean CAPABILITIES?")
            && stderr.contains("\"EVENT_TYPE\" is not a configuration key and is ignored; did you mean EVENT_TYPES?"),
        "{stderr}"
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(
        plan["policy"]["unmanaged"].as_array().map(Vec::len),
        Some(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_with_a_byte_order_mark_is_read_as_if_it_had_none() {
    let idd = server().await;
    let record = jit_user(&idd, 1);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend(json!([record]).to_string().into_bytes());
    let reply = f.call(Call::new(body)).await;
    assert_eq!(reply.status, 200);
    let report = reply.json();
    assert_eq!(
        (report["received"].as_u64(), report["applied"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
}

#[test]
fn plan_reads_a_file_with_a_byte_order_mark() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("batch.json");
    let sample = include_str!("../../examples/payloads/sch-batch.json");
    std::fs::write(&path, format!("\u{feff}{sample}")).expect("write");
    let out = std::process::Command::new(FN_BINARY)
        .arg("plan")
        .arg(&path)
        .output()
        .expect("plan runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(plan["received"], 6, "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_an_event_type_says_so() {
    let idd = server().await;
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    // A SCIM user posted instead of an audit record; and a record whose type is empty.
    let batch = json!([
        {"id": "0123456789abcdef0123456789abcdef", "userName": "u@example.com"},
        {"type": "", "data": {"additionalDetails": {"actorId": "0123456789abcdef0123456789abcdef"}}},
        {"type": "com.oraclecloud.Audit.ListEvents", "data": {}},
    ]);
    let (status, report) = invoke(&f, &batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ignored"], 3, "{report}");
    let reasons: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(
        reasons[0].starts_with("no event type in this record: "),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("no event type in this record: "),
        "{reasons:?}"
    );
    assert_eq!(reasons[2], "event type not selected");
    assert!(idd.requests().is_empty());
}

/// `cargo run --example demo -- CAPABILITIES=api_keys=off` says plainly what stays unmanaged and
/// shows the stricter form; a misspelt key is shown as the function warned of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_says_what_a_partial_profile_leaves_alone() {
    use crate::support::demo;
    let run = demo::run(&demo::Options {
        binary: FN_BINARY.into(),
        dry_run: true,
        config: vec![
            ("CAPABILITIES".into(), "api_keys=off".into()),
            ("DRYRUN".into(), "false".into()),
        ],
    })
    .await
    .unwrap_or_else(|e| panic!("demo failed: {e}"));
    let text = demo::render(&run);
    assert!(
        text.contains(
            "Warning at start: \"DRYRUN\" is not a configuration key and is ignored; did you mean DRY_RUN?"
        ),
        "{text}"
    );
    assert!(
        text.contains("Profile (the function's start line): api_keys=off\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  CAPABILITIES=api_keys=off,auth_tokens=off,console_password=off,customer_secret_keys=off,\
             db_credentials=off,oauth2_client_credentials=off,smtp_credentials=off\n"
        ),
        "{text}"
    );
}

/// The operator binary with a clean environment: only HOME, PATH and `env`.
fn operator(home: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(FN_BINARY)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary runs")
}

#[test]
fn a_single_rule_table_names_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "default = \"api_keys=off\"\n[rule]\nname = \"break-glass\"\nusers = [\"bg-*\"]\nexempt = true\n",
    )
    .expect("write");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/payloads/sch-batch.json"
    );
    let out = operator(
        dir.path(),
        &["plan", "--policy", path.to_str().expect("utf-8"), sample],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rule: written as [rule] (one table)") && stderr.contains("write [[rule]]"),
        "{stderr}"
    );
    // The same slip in the POLICY key, written inline.
    let out = operator(
        dir.path(),
        &["plan", sample],
        &[(
            "POLICY",
            "rule = {name = \"x\", users = [\"a\"], exempt = true}",
        )],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("oci-user-capabilities: POLICY: rule: written as [rule]"),
        "{stderr}"
    );
}

#[test]
fn a_missing_oci_config_points_to_oci_setup_config_and_auth() {
    let empty_home = tempfile::tempdir().expect("temp dir");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/payloads/sch-batch.json"
    );
    let out = operator(empty_home.path(), &["apply", sample, "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        ".oci/config does not exist",
        "oci setup config",
        "--auth resource-principal",
        "--config-file",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    let out = operator(
        empty_home.path(),
        &["apply", sample, "--config-file", "/nonexistent/oci.conf"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--config-file /nonexistent/oci.conf does not exist: create it with `oci setup config`"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_that_stops_on_an_error_says_it_on_stderr() {
    use crate::support::identity_domain_server::{
        hex_id, test_key_pem, Fault, IdentityDomainServer,
    };
    let idd = IdentityDomainServer::start(
        &test_key_pem(),
        vec![crate::support::fixtures::api_key_id()],
    )
    .await;
    for n in 0..3 {
        jit_user(&idd, n);
    }
    // The second page (the first one asked after the keyset cursor) is refused for good.
    idd.add_fault("GET", "meta.created%20ge", Fault::Status(400), None);
    let home = crate::support::fixtures::operator_home("");
    let base = idd.base_url();
    let out = tokio::task::spawn_blocking(move || {
        operator(
            home.path(),
            &[
                "reconcile",
                "--domain",
                &base,
                "--page-size",
                "2",
                "--output",
                "json",
            ],
            &[("MAX_REQUESTS_PER_SECOND", "0")],
        )
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("reconcile of")
            && last.contains("stopped after 2 users: ")
            && last.contains("400")
            && last.ends_with("; continue with --start-index 3"),
        "{stderr}"
    );
    assert_eq!(
        idd.user_caps(&hex_id(0)),
        Some(crate::support::fixtures::PROFILE_APPLIED)
    );
}

#[test]
fn plan_predicted_counts_add_up_to_the_records() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/payloads/sch-batch.json"
    );
    let out = std::process::Command::new(FN_BINARY)
        .args(["plan", sample])
        .output()
        .expect("plan runs");
    assert!(out.status.success());
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let predicted = plan["predicted"].as_object().expect("predicted");
    let sum: u64 = predicted.values().filter_map(Value::as_u64).sum();
    assert_eq!(Some(sum), plan["received"].as_u64(), "{predicted:?}");
    assert_eq!(
        plan["predicted"],
        json!({"appliedOrUnchanged": 3, "unchanged": 1, "ignored": 1, "rejected": 1})
    );
    // Each record's own prediction still lists what it could end with.
    assert_eq!(
        plan["results"][0]["predictedOutcome"],
        json!(["applied", "unchanged"])
    );
}
