//! Credentials that outlive a capability (`CREDENTIALS`), through the real binary against the
//! signature-verifying local identity domain: what is counted, what is deleted, and what never is.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::enforcement::{function_for, invoke, server, ALL_ON, DOMAIN_A, PROFILE_APPLIED};
use crate::platform_harness::{FnProcess, Launch};
use crate::support::fixtures::actor_record;
use crate::support::identity_domain_server::{
    hex_id, Fault, IdentityDomainServer, API_KEY_MATERIAL, CREDENTIALS_URN,
};

/// `db_credentials` is left unmanaged; `breakglass-*` users are exempt.
const POLICY: &str = r#"
default = "api_keys=on,auth_tokens=on,console_password=off,customer_secret_keys=off,oauth2_client_credentials=off,smtp_credentials=off"
[[rule]]
name = "break-glass"
users = ["breakglass-*"]
exempt = true
"#;

/// A credential id distinct for every `n` (as ids are 32 lower-case hex digits).
fn cred(n: u64) -> String {
    hex_id(9_000_000 + n)
}

/// The three users every test starts from, and the batch that names them.
struct Domain {
    idd: IdentityDomainServer,
    batch: Value,
}

const JIT: u64 = 1;
const COMPLIANT: u64 = 2;
const EXEMPT: u64 = 3;

/// A JIT user (every capability on) holding a credential of every type, the ones of capabilities
/// left on (API keys, auth tokens) or unmanaged (DB credentials) included; an already compliant user
/// holding an SMTP credential made before its capability went off; an exempt user holding the same
/// kinds of credential as the JIT user.
async fn domain() -> Domain {
    let idd = server().await;
    idd.add_user(&hex_id(JIT), "jit@example.com", ALL_ON, "samljit", true);
    for (n, kind) in [
        (1, "apiKeys"),
        (2, "authTokens"),
        (3, "customerSecretKeys"),
        (4, "customerSecretKeys"),
        (5, "smtpCredentials"),
        (6, "oAuth2ClientCredentials"),
        (7, "dbCredentials"),
    ] {
        idd.add_credential(&hex_id(JIT), kind, &cred(n));
    }
    idd.add_user(
        &hex_id(COMPLIANT),
        "noor@example.com",
        PROFILE_APPLIED,
        "samljit",
        true,
    );
    idd.add_credential(&hex_id(COMPLIANT), "smtpCredentials", &cred(20));
    idd.add_user(
        &hex_id(EXEMPT),
        "breakglass-1@example.com",
        ALL_ON,
        "samljit",
        true,
    );
    for (n, kind) in [
        (30, "apiKeys"),
        (31, "smtpCredentials"),
        (32, "customerSecretKeys"),
    ] {
        idd.add_credential(&hex_id(EXEMPT), kind, &cred(n));
    }
    let batch = json!([
        actor_record(DOMAIN_A, &hex_id(JIT), "jit@example.com"),
        actor_record(DOMAIN_A, &hex_id(COMPLIANT), "noor@example.com"),
        actor_record(DOMAIN_A, &hex_id(EXEMPT), "breakglass-1@example.com"),
    ]);
    Domain { idd, batch }
}

fn start(domain: &Domain, extra: &[(&str, &str)]) -> FnProcess {
    let mut env = vec![("POLICY", POLICY)];
    env.extend_from_slice(extra);
    function_for(&[(DOMAIN_A, &domain.idd)], &env)
}

fn result_for(report: &Value, user: u64) -> &Value {
    report["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["userId"] == hex_id(user)))
        .unwrap_or_else(|| panic!("no result for user {user}: {report}"))
}

fn ids(idd: &IdentityDomainServer, user: u64) -> BTreeSet<String> {
    idd.credentials(&hex_id(user))
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

fn set(ns: &[u64]) -> BTreeSet<String> {
    ns.iter().map(|n| cred(*n)).collect()
}

/// Every credential delete the domain received, single or inside Bulk, as `Resource/id`.
fn deletes(idd: &IdentityDomainServer) -> BTreeSet<String> {
    let mut all = single_deletes(idd);
    all.extend(bulk_deletes(idd).into_iter().flatten());
    all
}

/// The single `DELETE` requests, as `Resource/id`.
fn single_deletes(idd: &IdentityDomainServer) -> BTreeSet<String> {
    idd.requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.target.trim_start_matches("/admin/v1/").to_string())
        .collect()
}

/// The `DELETE` operations of each Bulk request, as `Resource/id`.
fn bulk_deletes(idd: &IdentityDomainServer) -> Vec<Vec<String>> {
    idd.bulk_bodies()
        .iter()
        .map(|body| {
            body["Operations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|op| op["method"] == "DELETE")
                .filter_map(|op| op["path"].as_str())
                .map(|p| p.trim_start_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .filter(|ops| !ops.is_empty())
        .collect()
}

/// The position of the first request that carried `needle` (in its path, or in a Bulk body).
fn first_carrying(idd: &IdentityDomainServer, needle: &str) -> Option<usize> {
    idd.requests().iter().position(|r| {
        r.target.contains(needle) || String::from_utf8_lossy(&r.body).contains(needle)
    })
}

/// The `attributes` of the GET that read `user`.
fn read_attributes(idd: &IdentityDomainServer, user: u64) -> String {
    let target = idd
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.target.contains(&hex_id(user)))
        .map(|r| r.target)
        .unwrap_or_else(|| panic!("user {user} was not read"));
    let query = target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "attributes")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

const JIT_LINGERING: [u64; 4] = [3, 4, 5, 6];
const JIT_KEPT: [u64; 3] = [1, 2, 7];

fn jit_lingering_counts() -> Value {
    json!({"customerSecretKeys": 2, "oAuth2ClientCredentials": 1, "smtpCredentials": 1})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_counts_exactly_the_credentials_of_disabled_capabilities_and_deletes_nothing() {
    let d = domain().await;
    let f = start(&d, &[]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");

    let jit = result_for(&report, JIT);
    assert_eq!(jit["outcome"], "applied", "{jit}");
    assert_eq!(jit["lingering"], jit_lingering_counts(), "{jit}");
    assert!(jit.get("revoked").is_none(), "{jit}");
    let compliant = result_for(&report, COMPLIANT);
    assert_eq!(
        (&compliant["outcome"], &compliant["lingering"]),
        (&json!("unchanged"), &json!({"smtpCredentials": 1})),
        "{compliant}"
    );
    let exempt = result_for(&report, EXEMPT);
    assert_eq!(exempt["outcome"], "unchanged", "{exempt}");
    assert!(exempt.get("lingering").is_none(), "{exempt}");
    assert_eq!(
        report["lingering"],
        json!({"customerSecretKeys": 2, "oAuth2ClientCredentials": 1, "smtpCredentials": 2}),
        "{report}"
    );
    assert!(report.get("revoked").is_none(), "{report}");

    // Nothing deleted, every credential still there.
    assert!(deletes(&d.idd).is_empty());
    assert_eq!(ids(&d.idd, JIT), set(&[1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(ids(&d.idd, COMPLIANT), set(&[20]));
    assert_eq!(ids(&d.idd, EXEMPT), set(&[30, 31, 32]));

    // The read names the credential attributes a profile may turn off, with the others; the exempt
    // user's read asks for none.
    let asked = read_attributes(&d.idd, JIT);
    for kind in [
        "customerSecretKeys",
        "smtpCredentials",
        "oAuth2ClientCredentials",
    ] {
        assert!(
            asked.contains(&format!("{CREDENTIALS_URN}:{kind}")),
            "{asked}"
        );
    }
    for kept in ["apiKeys", "authTokens", "dbCredentials"] {
        assert!(!asked.contains(&format!(":{kept}")), "{asked}");
    }
    assert!(asked.contains("userName"), "{asked}");
    assert!(!read_attributes(&d.idd, EXEMPT).contains("userCredentials"));

    // The log names each lingering credential's id; key material reaches neither log nor answer.
    let log = f.stderr.wait_for(&cred(20));
    for n in JIT_LINGERING.iter().chain(&[20]) {
        assert!(log.contains(&cred(*n)), "credential {n} not logged:\n{log}");
    }
    for n in JIT_KEPT.iter().chain(&[30, 31, 32]) {
        assert!(!log.contains(&cred(*n)), "credential {n} logged:\n{log}");
    }
    assert!(!log.contains(API_KEY_MATERIAL) && !report.to_string().contains(API_KEY_MATERIAL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_exactly_the_lingering_credentials_after_the_capability_write() {
    for bulk in ["off", "auto"] {
        revoke_deletes_exactly_those(bulk).await;
    }
}

async fn revoke_deletes_exactly_those(bulk: &str) {
    let d = domain().await;
    let f = start(&d, &[("CREDENTIALS", "revoke"), ("BULK", bulk)]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");

    let jit = result_for(&report, JIT);
    assert_eq!(jit["outcome"], "applied", "{jit}");
    assert_eq!(jit["lingering"], jit_lingering_counts(), "{jit}");
    assert_eq!(jit["revoked"], jit_lingering_counts(), "{jit}");
    // Already compliant, but it held a lingering credential: applied.
    let compliant = result_for(&report, COMPLIANT);
    assert_eq!(compliant["outcome"], "applied", "{compliant}");
    assert_eq!(compliant["revoked"], json!({"smtpCredentials": 1}));
    assert_eq!(
        compliant["reason"],
        "already compliant; lingering credentials revoked"
    );
    assert_eq!(result_for(&report, EXEMPT)["outcome"], "unchanged");
    assert_eq!(report["revoked"], report["lingering"], "{report}");

    // Exactly those: none of a capability left on or unmanaged, none of the exempt user.
    assert_eq!(ids(&d.idd, JIT), set(&JIT_KEPT));
    assert!(ids(&d.idd, COMPLIANT).is_empty());
    assert_eq!(ids(&d.idd, EXEMPT), set(&[30, 31, 32]));
    let expected: BTreeSet<String> = [
        format!("CustomerSecretKeys/{}", cred(3)),
        format!("CustomerSecretKeys/{}", cred(4)),
        format!("SmtpCredentials/{}", cred(5)),
        format!("OAuth2ClientCredentials/{}", cred(6)),
        format!("SmtpCredentials/{}", cred(20)),
    ]
    .into();
    assert_eq!(deletes(&d.idd), expected, "BULK={bulk}");
    if bulk == "auto" {
        // Five deletes of one domain: one Bulk request, no single DELETE.
        assert!(single_deletes(&d.idd).is_empty(), "BULK={bulk}");
        assert_eq!(bulk_deletes(&d.idd).len(), 1);
    } else {
        assert!(d.idd.bulk_bodies().is_empty(), "BULK={bulk}");
    }
    // The capability is off before any of its user's credentials is deleted.
    let put = first_carrying(&d.idd, &format!("UserCapabilitiesChanger/{}", hex_id(JIT)));
    let first_delete = first_carrying(&d.idd, &format!("CustomerSecretKeys/{}", cred(3)));
    assert!(put.expect("written") < first_delete.expect("deleted"));
    assert!(d.idd.requests().iter().all(|r| r.auth_ok));
    let log = f.stderr.wait_for(&cred(6));
    assert!(
        log.contains("credential revoked") && log.contains(&cred(6)),
        "{log}"
    );

    // Run again: nothing left to revoke, nothing written.
    d.idd.clear_requests();
    let (status, again) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["unchanged"], 3, "{again}");
    assert!(again.get("lingering").is_none() && deletes(&d.idd).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_what_would_be_revoked_and_deletes_nothing() {
    let d = domain().await;
    let f = start(&d, &[("CREDENTIALS", "revoke"), ("DRY_RUN", "true")]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dryRun"], true);
    assert_eq!(result_for(&report, JIT)["revoked"], jit_lingering_counts());
    let compliant = result_for(&report, COMPLIANT);
    assert_eq!(compliant["outcome"], "applied", "{compliant}");
    assert_eq!(
        compliant["reason"],
        "already compliant; dry run: lingering credentials would be revoked"
    );
    assert!(
        d.idd.requests().iter().all(|r| r.method == "GET"),
        "a dry run sends reads only"
    );
    assert_eq!(ids(&d.idd, JIT), set(&[1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(ids(&d.idd, COMPLIANT), set(&[20]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_delete_counts_as_revoked_and_a_403_is_rejected_naming_the_role() {
    let d = domain().await;
    // Someone deleted credential 5 meanwhile; the role may not delete the compliant user's.
    d.idd
        .add_fault("DELETE", &cred(5), Fault::Status(404), None);
    d.idd
        .add_fault("DELETE", &cred(20), Fault::Status(403), None);
    let f = start(&d, &[("CREDENTIALS", "revoke"), ("BULK", "off")]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "a 403 is final, not retried: {report}");
    let jit = result_for(&report, JIT);
    assert_eq!(jit["outcome"], "applied", "{jit}");
    assert_eq!(jit["revoked"], jit_lingering_counts(), "{jit}");
    let compliant = result_for(&report, COMPLIANT);
    assert_eq!(compliant["outcome"], "rejected", "{compliant}");
    assert!(compliant.get("revoked").is_none(), "{compliant}");
    let reason = compliant["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Identity Domain Administrator or Security Administrator")
            && reason.contains(&cred(20)),
        "{reason}"
    );
    assert_eq!(ids(&d.idd, COMPLIANT), set(&[20]));
    assert_eq!(d.idd.count("DELETE", &cred(20)), 1, "a 403 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_keeps_failing_fails_the_record_so_the_platform_retries() {
    let d = domain().await;
    d.idd
        .add_fault("DELETE", &cred(20), Fault::Status(503), None);
    let f = start(
        &d,
        &[
            ("CREDENTIALS", "revoke"),
            ("MAX_CONCURRENCY", "1"),
            ("BULK", "off"),
        ],
    );
    let (status, log) = invoke(&f, &d.batch).await;
    assert_eq!(status, 502, "{log}");
    let log = f.stderr.wait_for("credential not revoked");
    assert!(log.contains("credential not revoked"), "{log}");
    assert_eq!(ids(&d.idd, COMPLIANT), set(&[20]));
    // The redelivery finishes the job once the domain recovers.
    d.idd.clear_faults();
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(result_for(&report, COMPLIANT)["outcome"], "applied");
    assert!(ids(&d.idd, COMPLIANT).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_id_that_is_not_32_hex_digits_never_reaches_a_path() {
    let d = domain().await;
    d.idd
        .add_credential(&hex_id(COMPLIANT), "smtpCredentials", "../../Users/x");
    let f = start(&d, &[("CREDENTIALS", "revoke")]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    let compliant = result_for(&report, COMPLIANT);
    assert_eq!(compliant["outcome"], "rejected", "{compliant}");
    assert_eq!(compliant["lingering"], json!({"smtpCredentials": 2}));
    assert_eq!(compliant["revoked"], json!({"smtpCredentials": 1}));
    assert!(compliant["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("credential id: expected 32 lower-case hex digits"));
    assert!(d
        .idd
        .requests()
        .iter()
        .all(|r| !r.target.contains("Users/x")
            && !r.target.contains("..")
            && !String::from_utf8_lossy(&r.body).contains("Users/x")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_off_asks_for_no_credential_attribute() {
    let d = domain().await;
    let f = start(&d, &[("CREDENTIALS", "off")]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    assert!(!report.to_string().contains("lingering"), "{report}");
    let requests = d.idd.requests();
    assert!(requests
        .iter()
        .all(|r| !r.target.contains("userCredentials")));
    assert!(requests.iter().all(|r| r.method != "DELETE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_the_domains_totals() {
    let d = domain().await;
    let body = json!({"reconcile": {"domain": DOMAIN_A}});
    let f = start(&d, &[("DRY_RUN", "true"), ("CREDENTIALS", "revoke")]);
    let (status, report) = invoke(&f, &body).await;
    assert_eq!(status, 200, "{report}");
    let totals =
        json!({"customerSecretKeys": 2, "oAuth2ClientCredentials": 1, "smtpCredentials": 2});
    assert_eq!(report["lingering"], totals, "{report}");
    assert_eq!(report["revoked"], totals, "{report}");
    assert!(deletes(&d.idd).is_empty());
    drop(f);

    let f = start(&d, &[("CREDENTIALS", "revoke")]);
    let (status, report) = invoke(&f, &body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["revoked"], totals, "{report}");
    assert_eq!(ids(&d.idd, JIT), set(&JIT_KEPT));
    assert_eq!(ids(&d.idd, EXEMPT), set(&[30, 31, 32]));
    assert!(ids(&d.idd, COMPLIANT).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_credentials_mode_stops_the_start() {
    let launch = Launch::function().env("CREDENTIALS", "delete");
    let Err(failure) = FnProcess::start(&launch) else {
        panic!("started with CREDENTIALS=delete");
    };
    let text = format!("{failure:?}");
    assert!(
        text.contains("CREDENTIALS: expected report, revoke or off"),
        "{text}"
    );
}

/// With `BULK=auto`, the deletes of one domain go as Bulk `DELETE` operations, and each operation's
/// own status is judged: 403 is `rejected` naming the role; a 404 (which inside Bulk may mean an
/// unknown path), a retryable one and one refused as unsupported are sent again singly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_deletes_are_judged_operation_by_operation() {
    let d = domain().await;
    d.idd
        .add_bulk_op_fault(&cred(3), 404, "Resource not found.", None);
    d.idd
        .add_bulk_op_fault(&cred(20), 403, "Not authorized to delete.", None);
    d.idd
        .add_bulk_op_fault(&cred(5), 503, "Service unavailable.", Some(1));
    d.idd.add_bulk_op_fault(
        &cred(6),
        400,
        "The operation DELETE on the path /OAuth2ClientCredentials is not supported.",
        Some(1),
    );
    let f = start(&d, &[("CREDENTIALS", "revoke"), ("BULK", "auto")]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    let jit = result_for(&report, JIT);
    assert_eq!(jit["outcome"], "applied", "{jit}");
    assert_eq!(jit["revoked"], jit_lingering_counts(), "{jit}");
    let compliant = result_for(&report, COMPLIANT);
    assert_eq!(compliant["outcome"], "rejected", "{compliant}");
    let reason = compliant["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("403")
            && reason.contains("Identity Domain Administrator or Security Administrator"),
        "{reason}"
    );
    // One Bulk request carried the five; the 404, the retryable and the unsupported one went
    // again singly, the 403 did not.
    assert_eq!(
        bulk_deletes(&d.idd)
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        [5]
    );
    let expected: BTreeSet<String> = [
        format!("CustomerSecretKeys/{}", cred(3)),
        format!("SmtpCredentials/{}", cred(5)),
        format!("OAuth2ClientCredentials/{}", cred(6)),
    ]
    .into();
    assert_eq!(single_deletes(&d.idd), expected);
    // The single DELETE of credential 3 found it there (the 404 inside Bulk was not the last
    // word): deleted, not assumed gone. 20 stays, refused.
    assert_eq!(ids(&d.idd, JIT), set(&JIT_KEPT));
    assert_eq!(ids(&d.idd, COMPLIANT), set(&[20]));
    assert_eq!(ids(&d.idd, EXEMPT), set(&[30, 31, 32]));
}

/// A domain that refuses every credential DELETE inside Bulk as unsupported gets them singly, and
/// from then on singly only (the refusal is remembered); a domain that refuses Bulk as such too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_refusing_deletes_in_bulk_gets_them_singly_for_the_life_of_the_process() {
    let d = domain().await;
    d.idd.add_bulk_op_fault(
        "/",
        400,
        "The operation DELETE is not supported in a bulk request.",
        None,
    );
    let f = start(&d, &[("CREDENTIALS", "revoke"), ("BULK", "auto")]);
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["revoked"], report["lingering"], "{report}");
    assert_eq!(bulk_deletes(&d.idd).len(), 1);
    assert_eq!(single_deletes(&d.idd).len(), 5);
    assert_eq!(ids(&d.idd, JIT), set(&JIT_KEPT));

    // More lingering credentials later: no Bulk request for them any more.
    for n in [40, 41] {
        d.idd
            .add_credential(&hex_id(COMPLIANT), "smtpCredentials", &cred(n));
    }
    d.idd.clear_requests();
    let (status, report) = invoke(&f, &d.batch).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        result_for(&report, COMPLIANT)["revoked"],
        json!({"smtpCredentials": 2})
    );
    assert!(bulk_deletes(&d.idd).is_empty());
    assert_eq!(single_deletes(&d.idd).len(), 2);
    let log = f.stderr.text();
    assert_eq!(
        log.matches("every credential DELETE of a Bulk request was refused")
            .count(),
        1,
        "logged once"
    );
}

/// Many users' deletes: 120 lingering credentials of 60 users cost three Bulk requests (50, 50, 20
/// operations) instead of 120 DELETEs, and every one is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_credentials_go_fifty_to_a_bulk_request() {
    let idd = server().await;
    let mut batch = Vec::new();
    for n in 0..60u64 {
        let id = hex_id(100 + n);
        let name = format!("u{n}@example.com");
        idd.add_user(&id, &name, PROFILE_APPLIED, "samljit", true);
        idd.add_credential(&id, "smtpCredentials", &cred(1000 + 2 * n));
        idd.add_credential(&id, "dbCredentials", &cred(1001 + 2 * n));
        batch.push(actor_record(DOMAIN_A, &id, &name));
    }
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[("CREDENTIALS", "revoke"), ("BULK", "auto")],
    );
    let started = std::time::Instant::now();
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 60, "{report}");
    assert_eq!(
        report["revoked"],
        json!({"dbCredentials": 60, "smtpCredentials": 60})
    );
    let sizes: Vec<usize> = bulk_deletes(&idd).iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 50, 20]);
    assert!(single_deletes(&idd).is_empty());
    assert!((0..60).all(|n| idd.credentials(&hex_id(100 + n)).is_empty()));
    assert!(
        idd.most_bulk_running() <= 1,
        "one Bulk request in flight per domain"
    );
    eprintln!(
        "60 users, 120 lingering credentials: {} requests ({} Bulk) in {took:?}",
        idd.requests().len(),
        idd.bulk_bodies().len()
    );
}
