//! The operator command line: API-key auth from an OCI config file, against the verifying server.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::enforcement::{actor_record, jit_users, ALL_ON, DOMAIN_A, PROFILE_APPLIED};
use crate::platform_harness::FN_BINARY;
use crate::reconcile::{populate, puts_per_user, USERS};
use crate::support::fixtures::{self, api_key_id};
use crate::support::identity_domain_server::{hex_id, test_key_pem, Fault, IdentityDomainServer};

async fn server() -> IdentityDomainServer {
    IdentityDomainServer::start(&test_key_pem(), vec![api_key_id()]).await
}

/// `~/.oci/config` with the DEFAULT API-key profile and another profile whose key id the server refuses.
pub fn operator_home() -> tempfile::TempDir {
    fixtures::operator_home("[OTHER]\nuser=ocid1.user.oc1..someoneelse\nfingerprint=00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff\nkey_file=~/.oci/api_key.pem\n")
}

/// Runs the binary as an operator would: a clean environment with only HOME, PATH and `env`.
pub async fn run(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = tokio::process::Command::new(FN_BINARY);
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        // The single-request path (see `Launch::function`).
        .env("BULK", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().unwrap();
        // The process may exit (bad usage) before reading its input.
        let _ = pipe.write_all(input).await;
        drop(pipe);
    }
    child.wait_with_output().await.unwrap()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write_batch(dir: &Path, records: Vec<Value>) -> PathBuf {
    let path = dir.join("batch.json");
    std::fs::write(&path, Value::Array(records).to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_follows_every_page_with_an_api_key_from_the_default_config() {
    let idd = server().await;
    let needs_write = populate(&idd);
    let home = operator_home();
    let out = run(
        home.path(),
        &[
            "reconcile",
            "--domain",
            &idd.base_url(),
            "--page-size",
            "400",
            "--output",
            "json",
        ],
        &[("MAX_REQUESTS_PER_SECOND", "0"), ("MAX_CONCURRENCY", "16")],
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = stdout_json(&out);
    assert_eq!(report["scanned"], USERS);
    assert_eq!(report["applied"], needs_write);
    assert!(report.get("nextStartIndex").is_none());
    assert_eq!(
        idd.count("GET", "/admin/v1/Users?"),
        6,
        "2,345 users in pages of 400"
    );
    assert!(
        stderr.contains(&format!("reconcile: scanned {USERS} of {USERS}")),
        "progress lines: {stderr}"
    );
    assert!(idd
        .requests()
        .iter()
        .all(|r| r.auth_ok && r.key_id.as_deref() == Some(api_key_id().as_str())));
    assert!(puts_per_user(&idd).values().all(|n| *n == 1));
    for n in 0..USERS {
        assert_eq!(idd.user_caps(&hex_id(n)), Some(PROFILE_APPLIED), "user {n}");
    }

    // Again, with max-users and a start index: nothing left to write.
    let out = run(
        home.path(),
        &[
            "reconcile",
            "--domain",
            &idd.base_url(),
            "--start-index",
            "2001",
            "--max-users",
            "100",
            "--output",
            "json",
        ],
        &[("MAX_REQUESTS_PER_SECOND", "0")],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let report = stdout_json(&out);
    assert_eq!(
        (report["scanned"].as_u64(), report["applied"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(report["nextStartIndex"], 2101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reads_but_never_writes() {
    let idd = server().await;
    populate(&idd);
    let home = operator_home();
    let config = home.path().join(".oci/config");
    let out = run(
        home.path(),
        &[
            "reconcile",
            "--domain",
            &idd.base_url(),
            "--dry-run",
            "--output",
            "json",
            "--config-file",
            config.to_str().unwrap(),
        ],
        &[("MAX_REQUESTS_PER_SECOND", "0")],
        None,
    )
    .await;
    assert_exit(&out, 0);
    let report = stdout_json(&out);
    assert_eq!(report["dryRun"], true);
    assert!(
        report["applied"].as_u64().unwrap() > 0,
        "what would be written is reported"
    );
    assert_eq!(idd.count("PUT", ""), 0);

    let batch = write_batch(
        home.path(),
        vec![actor_record(DOMAIN_A, &hex_id(1), "jit1@example.com")],
    );
    let domains = format!("{DOMAIN_A}={}", idd.base_url());
    let out = run(
        home.path(),
        &[
            "apply",
            batch.to_str().unwrap(),
            "--dry-run",
            "--output",
            "json",
        ],
        &[("DOMAINS", &domains)],
        None,
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(stdout_json(&out)["applied"], 1);
    assert_eq!(idd.count("PUT", ""), 0);
    assert_eq!(idd.user_caps(&hex_id(1)), Some(ALL_ON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reads_a_file_or_stdin_and_exits_1_when_a_record_failed() {
    let idd = server().await;
    let all = jit_users(&idd, 0..4);
    idd.add_fault("PUT", &hex_id(3), Fault::Status(503), None);
    let home = operator_home();
    let domains = format!("{DOMAIN_A}={}", idd.base_url());
    let env = [
        ("DOMAINS", domains.as_str()),
        ("MAX_REQUESTS_PER_SECOND", "0"),
    ];
    let records = |ids: &[usize]| ids.iter().map(|n| all[*n].clone()).collect::<Vec<_>>();

    let batch = write_batch(home.path(), records(&[0, 1]));
    let out = run(
        home.path(),
        &["apply", batch.to_str().unwrap(), "--output", "json"],
        &env,
        None,
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(stdout_json(&out)["applied"], 2);

    let body = Value::Array(records(&[2, 3])).to_string();
    let out = run(
        home.path(),
        &["apply", "-", "--output", "table"],
        &env,
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("OUTCOME") && table.contains("applied") && table.contains("failed"),
        "{table}"
    );
    assert_eq!(idd.user_caps(&hex_id(2)), Some(PROFILE_APPLIED));
    assert_eq!(idd.user_caps(&hex_id(3)), Some(ALL_ON));

    // Another profile of the same file signs with another key id, which the server refuses.
    let batch = write_batch(home.path(), records(&[0]));
    let out = run(
        home.path(),
        &[
            "apply",
            batch.to_str().unwrap(),
            "--profile",
            "OTHER",
            "--output",
            "json",
        ],
        &env,
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The 401 hint names the credential in use and what to check for that kind of credential.
    let report = stdout_json(&out);
    let reason = report["results"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("signing as api key (profile OTHER)") && reason.contains("fingerprint"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2_with_a_clear_message() {
    let home = operator_home();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["reconcile"], "--domain"),
        (
            vec![
                "reconcile",
                "--domain",
                "https://x.example",
                "--page-size",
                "0",
            ],
            "page-size",
        ),
        (
            vec![
                "reconcile",
                "--domain",
                "https://x.example",
                "--page-size",
                "1001",
            ],
            "page-size",
        ),
        (
            vec!["reconcile", "--domain", "ftp://127.0.0.1/"],
            "--domain",
        ),
        (
            vec!["reconcile", "--domain", "http://example.com"],
            "--domain",
        ),
        (vec!["apply", "--auth", "password"], "--auth"),
        (vec!["apply", "--output", "xml"], "--output"),
        (vec!["apply", "--bogus"], "--bogus"),
        (vec!["frobnicate"], "frobnicate"),
        (
            vec!["apply", "/nonexistent/batch.json"],
            "/nonexistent/batch.json",
        ),
        (vec!["apply", "--profile", "MISSING", "-"], "MISSING"),
        (
            vec!["apply", "--config-file", "/nonexistent/config", "-"],
            "/nonexistent/config",
        ),
    ];
    for (args, needle) in cases {
        let out = run(home.path(), &args, &[], Some(b"[]")).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?} should mention {needle}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(home.path(), &["reconcile", "--help"], &[], None).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-users"));
}

/// Mistakes in `~/.oci/config` and the configuration that used to pass silently are usage errors that
/// name what is wrong, before any request is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_are_usage_errors_naming_the_setting() {
    let home = fixtures::operator_home(
        "[BADFP]\nuser=ocid1.user.oc1..x\nfingerprint=20:3b:97\nkey_file=~/.oci/api_key.pem\n",
    );
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["apply", "--profile", "BADFP", "-"],
            vec![],
            vec!["fingerprint", "[BADFP]", "malformed"],
        ),
        (
            vec!["apply", "--auth", "security-token", "-"],
            vec![],
            vec!["--auth security-token", "security_token_file", "[DEFAULT]"],
        ),
        (
            vec!["apply", "-"],
            vec![("CAPABILITIES", "")],
            vec!["CAPABILITIES", "empty"],
        ),
        (
            vec!["plan", "-"],
            vec![("EVENT_TYPES", " ")],
            vec!["EVENT_TYPES", "empty"],
        ),
    ];
    for (args, env, needles) in cases {
        let out = run(home.path(), &args, &env, Some(b"[]")).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?} should mention {needle}: {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_help_lists_every_key_it_reads() {
    let home = operator_home();
    let out = run(home.path(), &["serve", "--help"], &[], None).await;
    assert_exit(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "CAPABILITIES",
        "EVENT_TYPES",
        "DOMAINS",
        "IDENTITY_DOMAIN_URL_TEMPLATE",
        "IDENTITY_CONTROL_PLANE_URL",
        "POLICY",
        "TAG_NAMESPACE",
        "CREDENTIALS",
        "DRY_RUN",
        "MAX_CONCURRENCY",
        "MAX_REQUESTS_PER_SECOND",
        "LOG_FORMAT",
        "FUNCTION_INVOKE_ENDPOINT",
        "FUNCTIONS_URL",
        "RECONCILE_MAX_HOPS",
        "FN_LISTENER",
        "OCI_RESOURCE_PRINCIPAL_VERSION",
        "OCI_RESOURCE_PRINCIPAL_RPST",
        "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM",
        "OCI_RESOURCE_PRINCIPAL_REGION",
    ] {
        assert!(help.contains(key), "serve --help should list {key}");
    }
    assert!(help.contains("[default: 4]") && help.contains("[default: json]"));
}

/// `reconcile --domain` takes a bare domain name (through the URL template) as the function does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_domain_may_be_a_bare_domain_name() {
    let idd = server().await;
    let needs_write = populate(&idd);
    let home = operator_home();
    let template = idd.base_url();
    let out = run(
        home.path(),
        &[
            "reconcile",
            "--domain",
            DOMAIN_A,
            "--dry-run",
            "--output",
            "json",
        ],
        &[
            ("IDENTITY_DOMAIN_URL_TEMPLATE", template.as_str()),
            ("MAX_REQUESTS_PER_SECOND", "0"),
        ],
        None,
    )
    .await;
    assert_exit(&out, 0);
    let report = stdout_json(&out);
    assert_eq!(report["applied"], needs_write, "{report}");
    assert!(idd.requests().iter().all(|r| r.method != "PUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_report_counts_match_json_shape() {
    // The CLI's JSON report is the function's report shape.
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    let home = operator_home();
    let out = run(
        home.path(),
        &["reconcile", "--domain", &idd.base_url(), "--output", "json"],
        &[],
        None,
    )
    .await;
    assert_exit(&out, 0);
    let report = stdout_json(&out);
    for key in [
        "domain",
        "filter",
        "startIndex",
        "scanned",
        "applied",
        "unchanged",
        "failed",
        "dryRun",
        "users",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert_eq!(
        report["users"][0]["changed"]["canUseSmtpCredentials"],
        json!([true, false]),
        "{report}"
    );
}
