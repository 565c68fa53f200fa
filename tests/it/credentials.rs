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

/// The credential DELETEs the domain received, as `resource/id`.
fn deletes(idd: &IdentityDomainServer) -> BTreeSet<String> {
    idd.requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.target.trim_start_matches("/admin/v1/").to_string())
        .collect()
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
    let d = domain().await;
    let f = start(&d, &[("CREDENTIALS", "revoke")]);
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
    assert_eq!(deletes(&d.idd), expected);
    // The capability is off before any of its user's credentials is deleted.
    let requests = d.idd.requests();
    let put = requests
        .iter()
        .position(|r| r.method == "PUT" && r.target.contains(&hex_id(JIT)))
        .expect("the JIT user was written");
    let first_delete = requests
        .iter()
        .position(|r| r.method == "DELETE" && r.target.contains(&cred(3)))
        .expect("deleted");
    assert!(put < first_delete);
    assert!(requests.iter().all(|r| r.auth_ok));
    let log = f.stderr.wait_for("credential revoked");
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
    let f = start(&d, &[("CREDENTIALS", "revoke")]);
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
    let f = start(&d, &[("CREDENTIALS", "revoke"), ("MAX_CONCURRENCY", "1")]);
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
        .all(|r| !r.target.contains("Users/x") && !r.target.contains("..")));
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
