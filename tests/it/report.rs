//! `report`: a read-only posture report of a 1,000-user test domain in HTML, CSV and JSON, and the
//! HTML as a person sees it, rendered by headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs when it is missing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::enforcement::jit_users;
use crate::platform_harness::FN_BINARY;
use crate::support::fixtures::{self, api_key_id, ALL_ON};
use crate::support::identity_domain_server::{hex_id, test_key_pem, Fault, IdentityDomainServer};
use crate::support::png;

/// Users in the report's test domain.
pub const REPORT_USERS: u64 = 1000;

const POLICY: &str = r#"
default = "api_keys=off,auth_tokens=off,console_password=off,customer_secret_keys=off,db_credentials=off,oauth2_client_credentials=off,smtp_credentials=off"

[[rule]]
name = "break-glass"
users = ["breakglass-*"]
exempt = true

[[rule]]
name = "developers"
groups = ["OCI Developers"]
capabilities = "api_keys=on,auth_tokens=on"
"#;

/// Every credential off, console on.
const ALL_OFF: [Option<bool>; 8] = [
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(true),
];
/// API keys and auth tokens on, the rest off, console on: a developer's profile.
const DEVELOPER: [Option<bool>; 8] = [
    Some(true),
    Some(true),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(false),
    Some(true),
];

/// The test domain: every 50th user a break-glass account, every 5th a developer (by group),
/// capabilities in three patterns. Returns each user id's expected status, worked out here from
/// the policy's words, independently of the code under test.
pub fn populate_report_domain(idd: &IdentityDomainServer) -> BTreeMap<String, &'static str> {
    let mut expected = BTreeMap::new();
    for n in 0..REPORT_USERS {
        let id = hex_id(n);
        let breakglass = n % 50 == 0;
        let developer = n % 5 == 0;
        let name = if breakglass {
            format!("breakglass-{n}")
        } else {
            format!("user{n}@example.com")
        };
        let caps = match n % 3 {
            0 => ALL_OFF,
            1 => ALL_ON,
            _ => DEVELOPER,
        };
        idd.add_user(&id, &name, caps, "samljit", true);
        if developer {
            idd.add_group(
                &id,
                "OCI Developers",
                "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0",
                n % 2 == 0,
            );
        }
        let wanted = if developer { DEVELOPER } else { ALL_OFF };
        // Console is unmanaged: only the first seven count.
        let status = if breakglass {
            "exempt"
        } else if caps[..7] == wanted[..7] {
            "compliant"
        } else {
            "to_change"
        };
        expected.insert(id, status);
    }
    expected
}

fn count(expected: &BTreeMap<String, &'static str>, status: &str) -> u64 {
    expected.values().filter(|s| **s == status).count() as u64
}

async fn run_report(home: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(FN_BINARY);
    cmd.arg("report")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("MAX_REQUESTS_PER_SECOND", "0")
        .stdin(std::process::Stdio::null());
    cmd.output().await.expect("run the report")
}

/// A report of the 1,000-user domain written as `name` in `dir`, with its expected statuses.
async fn report_file(
    idd: &IdentityDomainServer,
    home: &Path,
    dir: &Path,
    name: &str,
) -> (PathBuf, Output) {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let out_path = dir.join(name);
    let out = run_report(
        home,
        &[
            "--domain",
            &idd.base_url(),
            "--policy",
            policy.to_str().unwrap(),
            "--output",
            out_path.to_str().unwrap(),
            "--page-size",
            "400",
        ],
    )
    .await;
    (out_path, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_user_domain_is_reported_in_html_csv_and_json_reading_only() {
    let idd = IdentityDomainServer::start(&test_key_pem(), vec![api_key_id()]).await;
    let expected = populate_report_domain(&idd);
    let home = fixtures::operator_home("");
    let dir = tempfile::tempdir().unwrap();

    let (json_path, out) = report_file(&idd, home.path(), dir.path(), "posture.json").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "the report goes to the file, progress to stderr"
    );
    assert!(
        stderr.contains("report: scanned 1000 of 1000 (100%)"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let summary = &report["summary"];
    assert_eq!(summary["users"], REPORT_USERS);
    for (field, status) in [
        ("compliant", "compliant"),
        ("toChange", "to_change"),
        ("exempt", "exempt"),
    ] {
        assert_eq!(summary[field], count(&expected, status), "{field}");
    }
    assert!(count(&expected, "exempt") > 0 && count(&expected, "compliant") > 0);
    let rows = report["users"].as_array().unwrap();
    let json_rows: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r["userId"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(json_rows.len(), 1000);
    for (id, status) in &expected {
        assert_eq!(json_rows[id], *status, "user {id}");
    }
    let glass = rows
        .iter()
        .find(|r| r["userName"] == "breakglass-50")
        .unwrap();
    assert_eq!(glass["decidedBy"][0], "break-glass");
    let dev = rows
        .iter()
        .find(|r| r["userName"] == "user5@example.com")
        .unwrap();
    assert_eq!(dev["decidedBy"][0], "developers");
    assert_eq!(dev["capabilities"]["api_keys"]["wanted"], true);
    assert_eq!(report["policy"]["rules"].as_array().unwrap().len(), 2);
    // api_keys: exempt users, then every other user is compliant or to change.
    let api = &summary["capabilities"]["api_keys"];
    assert_eq!(api["exempt"], count(&expected, "exempt"));
    assert_eq!(
        api["compliant"].as_u64().unwrap() + api["toChange"].as_u64().unwrap(),
        REPORT_USERS - count(&expected, "exempt")
    );

    let (csv_path, out) = report_file(&idd, home.path(), dir.path(), "posture.csv").await;
    assert_eq!(out.status.code(), Some(0));
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1001, "a header and the same 1,000 rows");
    assert!(lines[0].starts_with("user_id,user_name,status,decided_by,reason,api_keys,"));
    let csv_rows: BTreeMap<String, String> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[2].to_owned())
        })
        .collect();
    assert_eq!(csv_rows, json_rows, "CSV and JSON carry the same rows");

    let (html_path, out) = report_file(&idd, home.path(), dir.path(), "posture.html").await;
    assert_eq!(out.status.code(), Some(0));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains(&format!(
        "id=\"summary-to-change\"><span class=\"n\">{}</span>",
        count(&expected, "to_change")
    )));
    assert_eq!(html.matches("<tr>").count(), 1001);

    // Read only: three reports, each three pages of GET, and nothing else.
    let requests = idd.requests();
    assert_eq!(requests.len(), 9);
    assert!(requests.iter().all(|r| r.method == "GET" && r.auth_ok));
    assert!(requests
        .iter()
        .all(|r| r.target.contains("sortOrder=ASCENDING")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_usage_mistakes_exit_2_naming_the_flag() {
    let home = fixtures::operator_home("");
    let out = run_report(
        home.path(),
        &["--domain", "http://127.0.0.1:9", "--output", "x.pdf"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));
    let out = run_report(home.path(), &["--domain", "http://example.com"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--domain"));
}

/// Debian's Chromium, when installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Runs headless Chromium on `page` with `mode` (`--dump-dom` or `--screenshot=…`), in a fresh
/// profile, with everything that could reach the network switched off.
async fn chromium_run(browser: &Path, page: &Path, mode: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(mode)
    .arg(format!("file://{}", page.display()))
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finishes within 2 minutes")
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_in_headless_chromium_with_its_numbers_and_chart() {
    let Some(browser) = chromium() else {
        assert!(
            !under_ci(),
            "CI=true but chromium is not installed: .ci/run installs it with apt-get"
        );
        eprintln!(
            "SKIPPED: chromium is not installed (apt-get install -y chromium); CI runs this test"
        );
        return;
    };
    let idd = IdentityDomainServer::start(&test_key_pem(), vec![api_key_id()]).await;
    let expected = populate_report_domain(&idd);
    let home = fixtures::operator_home("");
    let dir = tempfile::tempdir().unwrap();
    let (html_path, out) = report_file(&idd, home.path(), dir.path(), "posture.html").await;
    assert_eq!(out.status.code(), Some(0));

    let dom = chromium_run(&browser, &html_path, "--dump-dom").await;
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("<svg"),
        "no rendered DOM: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    for (id, status) in [
        ("to-change", "to_change"),
        ("compliant", "compliant"),
        ("exempt", "exempt"),
    ] {
        let n = count(&expected, status);
        assert!(
            dom_text.contains(&format!("id=\"summary-{id}\"><span class=\"n\">{n}</span>")),
            "summary {id} = {n} not in the rendered DOM"
        );
    }
    assert!(dom_text.contains(&format!("<span class=\"n\">{REPORT_USERS}</span>users")));
    assert!(dom_text.contains("id=\"chart-api_keys\""));

    let shot = dir.path().join("report.png");
    let out = chromium_run(
        &browser,
        &html_path,
        &format!("--screenshot={}", shot.display()),
    )
    .await;
    let bytes = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let image = png::decode(&bytes).expect("the screenshot is a PNG we can read");
    assert_eq!((image.width, image.height), (1200, 900));
    let variety = image.variety();
    assert!(variety.colours >= 16, "{variety:?}: the page looks blank");
    assert!(
        variety.non_background > 0.03 && variety.non_background < 0.9,
        "{variety:?}: the page looks blank or flooded"
    );
    // The chart's colours are on screen: compliant green and to-change orange.
    assert!(image.has_colour([0x2e, 0x7d, 0x32]), "no compliant bar");
    assert!(image.has_colour([0xe6, 0x51, 0x00]), "no to-change bar");
    if let Ok(keep) = std::env::var("OUC_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// A domain of `users` JIT users (`hex_id(0..users)`) whose pages hold at most 10.
async fn paged_domain(users: u64, created_tick: u64) -> IdentityDomainServer {
    let idd = IdentityDomainServer::start(&test_key_pem(), vec![api_key_id()]).await;
    idd.set_created_tick(created_tick);
    jit_users(&idd, 0..users);
    idd.set_max_page(10);
    idd
}

/// `report --output <json>` of `idd`, pages of 10: the exit code, stderr and the report.
async fn paged_report(idd: &IdentityDomainServer) -> (Option<i32>, String, Value) {
    let home = fixtures::operator_home("");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("posture.json");
    let args = ["--domain", &idd.base_url(), "--page-size", "10", "--output"];
    let out = run_report(
        home.path(),
        &[&args[..], &[path.to_str().unwrap()]].concat(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("report JSON");
    (out.status.code(), stderr, report)
}

/// The ids a report lists, sorted.
fn reported_ids(report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Issue 24, item 5, for `report`: it pages like the reconcile (`meta.created` order, keyset
/// cursor), so a user deleted between pages, a server that ignores `startIndex`, users created
/// during the report or sharing one instant hide nobody; a listing it cannot trust or read ends
/// the report marked incomplete, saying where, and the command exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_pages_by_cursor_and_never_claims_users_it_did_not_see() {
    let all = |n: u64| -> Vec<String> {
        let mut ids: Vec<String> = (0..n).map(hex_id).collect();
        ids.sort();
        ids
    };
    // User 3 is deleted after the first page (which reported it): a startIndex of 11 would then
    // skip user 10.
    let idd = paged_domain(30, 1).await;
    idd.remove_user_after_list_pages(1, &hex_id(3));
    let (code, stderr, report) = paged_report(&idd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["complete"], true);
    assert_eq!(reported_ids(&report), all(30), "{stderr}");

    // Every page from the first user: the cursor needs no startIndex.
    let idd = paged_domain(30, 1).await;
    idd.set_ignore_start_index(true);
    let (code, stderr, report) = paged_report(&idd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(reported_ids(&report), all(30));

    // 25 users to a millisecond (a bulk import), and one created during the report.
    let idd = paged_domain(30, 25).await;
    idd.add_user_after_list_pages(2, &hex_id(30), "late@example.com", ALL_ON, "samljit");
    let (code, stderr, report) = paged_report(&idd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(reported_ids(&report), all(31));
    assert_eq!(report["summary"]["users"], 31);

    // A later page that holds fewer users than it promises: incomplete, never "complete".
    let short = serde_json::json!({"totalResults": 21, "itemsPerPage": 10, "startIndex": 1,
        "Resources": []});
    let (error, stderr) = incomplete_after_first_page(Fault::Answer(short)).await;
    assert!(
        error.starts_with(&format!("incomplete listing from after user {}", hex_id(9)))
            && error.contains("the page holds 0 users where 10 were due"),
        "{error}"
    );
    assert!(
        stderr.contains("INCOMPLETE: incomplete listing from after user"),
        "{stderr}"
    );

    // A later page refused: incomplete, with the refusal.
    let (error, _) = incomplete_after_first_page(Fault::Status(403)).await;
    assert!(
        error.starts_with(&format!("listing users from after user {}", hex_id(9)))
            && error.contains("403"),
        "{error}"
    );
}

/// A report of 30 users whose pages after the first get `fault`: it must exit 1, marked
/// incomplete with the first page's 10 users. The report's `error`, and stderr.
async fn incomplete_after_first_page(fault: Fault) -> (String, String) {
    let idd = paged_domain(30, 1).await;
    idd.add_fault("GET", "meta.created%20ge", fault, None);
    let (code, stderr, report) = paged_report(&idd).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["complete"], false);
    assert_eq!(report["summary"]["users"], 10);
    (report["error"].as_str().unwrap().to_owned(), stderr)
}
