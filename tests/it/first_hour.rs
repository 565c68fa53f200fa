//! A newcomer's first hour (issue 23): configuration near-misses warned about at start, the start
//! line stating the profile, payloads with a byte-order mark, errors that say the fix, and `plan`'s
//! counts.

use serde_json::{json, Value};

use crate::enforcement::{function_for, invoke, jit_user, server, DOMAIN_A};
use crate::platform_harness::{FnProcess, Launch, FN_BINARY};

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

/// Keeps the imports honest while later items add their tests.
#[allow(dead_code)]
async fn one_user_applied(extra: &[(&str, &str)]) -> Value {
    let idd = server().await;
    let record = jit_user(&idd, 1);
    let f = function_for(&[(DOMAIN_A, &idd)], extra);
    let (status, report) = invoke(&f, &json!([record])).await;
    assert_eq!(status, 200, "{report}");
    report
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
