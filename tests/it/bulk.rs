//! `BULK=auto` (issue 19): reads with SCIM search, writes with SCIM Bulk, per domain, with Oracle's
//! limits, per-operation outcomes, every kind of bad answer, and the fallback to single requests,
//! through the real binary against the test domain (which implements `.search` and `/Bulk`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::enforcement::{invoke, jit_users, server, ALL_ON, DOMAIN_A, PROFILE_APPLIED};
use crate::platform_harness::{FnProcess, Launch};
use crate::reliability::logged_records;
use crate::support::identity_domain_server::{hex_id, Fault, IdentityDomainServer};

const BULK: &str = "/admin/v1/Bulk";
const SEARCH: &str = "/admin/v1/Users/.search";

/// The function with the default `BULK` (unset, so `auto`), limiter off unless `extra` says.
fn function(idd: &IdentityDomainServer, extra: &[(&str, &str)]) -> FnProcess {
    let mut launch = Launch::function()
        .env("DOMAINS", format!("{DOMAIN_A}={}", idd.base_url()))
        .env("MAX_REQUESTS_PER_SECOND", "0")
        .env("BULK_REQUESTS_PER_SECOND", "0");
    launch.env.retain(|(k, _)| k != "BULK");
    for (k, v) in extra {
        launch = launch.env(k, *v);
    }
    FnProcess::start(&launch).unwrap_or_else(|e| panic!("function did not start: {e:?}"))
}

/// `(search requests, Bulk requests, other requests)`.
fn counts(idd: &IdentityDomainServer) -> (usize, usize, usize) {
    let requests = idd.requests();
    let search = requests.iter().filter(|r| r.target == SEARCH).count();
    let bulk = requests.iter().filter(|r| r.target == BULK).count();
    (search, bulk, requests.len() - search - bulk)
}

/// Every Bulk operation's path, over all Bulk requests the domain carried out (answered 200).
fn bulk_paths(idd: &IdentityDomainServer) -> Vec<String> {
    idd.requests()
        .iter()
        .filter(|r| r.target == BULK && r.status == Some(200))
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .flat_map(|b| b["Operations"].as_array().cloned().unwrap_or_default())
        .map(|op| op["path"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_read_with_searches_and_written_with_bulk_within_oracles_limits() {
    let idd = server().await;
    let mut batch = jit_users(&idd, 0..120);
    // Already compliant: read, never written.
    idd.add_user(
        &hex_id(500),
        "ok@example.com",
        PROFILE_APPLIED,
        "samljit",
        true,
    );
    batch.push(crate::enforcement::actor_record(
        DOMAIN_A,
        &hex_id(500),
        "ok@example.com",
    ));
    let f = function(&idd, &[("MAX_CONCURRENCY", "16")]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 120, "{report}");
    assert_eq!(report["unchanged"], 1, "{report}");
    for n in 0..120 {
        assert_eq!(idd.user_caps(&hex_id(n)), Some(PROFILE_APPLIED), "user {n}");
    }
    // 121 users: 3 searches (50, 50, 21); 120 writes: 3 Bulk requests (50, 50, 20); nothing else.
    assert_eq!(counts(&idd), (3, 3, 0));
    let sizes: Vec<usize> = idd
        .bulk_bodies()
        .iter()
        .map(|b| b["Operations"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 120);
    assert!(sizes.iter().all(|n| *n <= 50), "{sizes:?}");
    for body in idd.bulk_bodies() {
        assert!(
            body.get("failOnErrors").is_none(),
            "one bad operation must not stop the others"
        );
        assert_eq!(
            body["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
        );
    }
    assert_eq!(
        idd.most_bulk_running(),
        1,
        "one Bulk request in flight per domain"
    );
    let searched: Vec<Value> = idd
        .requests()
        .iter()
        .filter(|r| r.target == SEARCH)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(searched.iter().all(|s| s["count"].as_u64().unwrap() <= 50));
    assert!(idd.requests().iter().all(|r| r.auth_ok));
    // Every user is written exactly once.
    let mut paths = bulk_paths(&idd);
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_a_search_misses_are_read_singly_before_they_are_not_found() {
    let idd = server().await;
    let mut batch = jit_users(&idd, 0..3);
    // Created seconds ago: not in the search index yet.
    idd.hide_from_search(&hex_id(1));
    // Not in the domain at all.
    batch.push(crate::enforcement::actor_record(
        DOMAIN_A,
        &hex_id(9),
        "gone@example.com",
    ));
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 3, "{report}");
    assert_eq!(report["rejected"], 1, "{report}");
    assert_eq!(
        idd.count("GET", &hex_id(1)),
        1,
        "the missing user is read singly"
    );
    assert_eq!(
        idd.count("GET", &hex_id(9)),
        1,
        "and so is the unknown one, before not found"
    );
    assert_eq!(
        idd.count("GET", &hex_id(0)),
        0,
        "found users are not read again"
    );
    let records = logged_records(&f);
    assert_eq!(records[&hex_id(9)].0, "rejected");
    assert!(
        records[&hex_id(9)].1.contains("not found"),
        "{:?}",
        records[&hex_id(9)]
    );
    assert_eq!(idd.user_caps(&hex_id(1)), Some(PROFILE_APPLIED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_answer_with_users_not_asked_for_or_listed_twice_is_read_with_care() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..2);
    let user = |n: u64, name: &str| {
        json!({"id": hex_id(n), "userName": name, "urn:ietf:params:scim:schemas:oracle:idcs:extension:capabilities:User": {
            "canUseApiKeys": true, "canUseAuthTokens": true, "canUseConsolePassword": true,
            "canUseCustomerSecretKeys": true, "canUseDbCredentials": true,
            "canUseOAuth2ClientCredentials": true, "canUseSmtpCredentials": true, "canUseConsole": true}})
    };
    idd.add_user(&hex_id(7), "stranger@example.com", ALL_ON, "samljit", true);
    idd.add_fault(
        "POST",
        SEARCH,
        Fault::Answer(json!({"totalResults": 4, "Resources": [
            user(0, "u0@example.com"), user(0, "u0@example.com"),
            user(7, "stranger@example.com"), user(1, "u1@example.com")]})),
        Some(1),
    );
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 2, "{report}");
    assert_eq!(
        idd.user_caps(&hex_id(7)),
        Some(ALL_ON),
        "a user not asked for is never written"
    );
    assert!(!bulk_paths(&idd).iter().any(|p| p.contains(&hex_id(7))));
    assert_eq!(
        bulk_paths(&idd).len(),
        2,
        "a user listed twice is written once"
    );
    let log = f.stderr.wait_for("\"summary\"");
    assert!(log.contains("not asked for"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_judged_alone_and_retryable_ones_are_retried() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..6);
    idd.add_bulk_op_fault(&hex_id(0), 429, "Too many requests", Some(1));
    idd.add_bulk_op_fault(&hex_id(1), 503, "busy", Some(2));
    idd.add_bulk_op_fault(
        &hex_id(2),
        403,
        "Not authorized to change an administrator",
        None,
    );
    idd.add_bulk_op_fault(
        &hex_id(3),
        400,
        "Attribute canUseApiKeys is immutable",
        None,
    );
    // Inside Bulk a 404 may mean the endpoint, not the user: the single PUT settles it.
    idd.add_bulk_op_fault(&hex_id(4), 404, "The URI does not exist", Some(1));
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    let records = logged_records(&f);
    for n in [0, 1, 4, 5] {
        assert_eq!(
            records[&hex_id(n)].0,
            "applied",
            "{n}: {:?}",
            records[&hex_id(n)]
        );
        assert_eq!(idd.user_caps(&hex_id(n)), Some(PROFILE_APPLIED), "{n}");
    }
    let (outcome, reason) = &records[&hex_id(2)];
    assert_eq!(outcome, "rejected", "{reason}");
    assert!(
        reason.contains("403") && reason.contains("may not change this user"),
        "{reason}"
    );
    let (outcome, reason) = &records[&hex_id(3)];
    assert_eq!(outcome, "rejected", "{reason}");
    assert!(reason.contains("immutable"), "{reason}");
    assert_eq!(
        idd.count("PUT", &hex_id(4)),
        1,
        "the 404 operation went singly"
    );
    assert_eq!(
        idd.count("PUT", &hex_id(0)),
        0,
        "retried inside a later Bulk request"
    );
    let (_, bulks, _) = counts(&idd);
    assert!(bulks >= 3, "three rounds for the 503 twice: {bulks}");
}

/// A Bulk answer that does not say what became of an operation leaves it `failed`: never assumed
/// written, never reported applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_answers_that_do_not_settle_an_operation_leave_it_failed() {
    let cases: Vec<(&str, Fault)> = vec![
        ("not JSON", Fault::NonJson),
        (
            "no Operations",
            Fault::Answer(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"]}),
            ),
        ),
        (
            "statuses that are not numbers",
            Fault::Answer(json!({"Operations": [
            {"bulkId": "0", "status": "fine"}, {"bulkId": "1", "status": null}]})),
        ),
        (
            "operations not asked for",
            Fault::Answer(json!({"Operations": [
            {"bulkId": "x0", "status": "200"}, {"bulkId": "x1", "status": "200"}]})),
        ),
        (
            "fewer operations than sent",
            Fault::Answer(json!({"Operations": [
            {"bulkId": "0", "status": "200"}]})),
        ),
    ];
    for (case, fault) in cases {
        let idd = server().await;
        let batch = jit_users(&idd, 0..2);
        idd.add_fault("POST", BULK, fault, None);
        let f = function(&idd, &[]);
        let (status, _) = invoke(&f, &Value::Array(batch)).await;
        let records = logged_records(&f);
        let applied = records.values().filter(|(o, _)| o == "applied").count();
        let failed = records.values().filter(|(o, _)| o == "failed").count();
        if case == "fewer operations than sent" {
            // The one operation it did answer is settled; the other is not.
            assert_eq!((applied, failed), (1, 1), "{case}: {records:?}");
        } else {
            assert_eq!((applied, failed), (0, 2), "{case}: {records:?}");
        }
        assert_eq!(status, 502, "{case}: a retry can fix it");
        let reasons: Vec<&String> = records
            .values()
            .filter(|(o, _)| o == "failed")
            .map(|(_, r)| r)
            .collect();
        assert!(
            reasons.iter().all(|r| r.contains("not assumed written")),
            "{case}: {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_requests_own_answer_is_classified_first() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..4);
    // 429 then 500 to the request as a whole: retried, then every operation applied.
    idd.add_fault(
        "POST",
        BULK,
        Fault::TooManyRequests {
            retry_after: Some("0".into()),
        },
        Some(1),
    );
    idd.add_fault("POST", BULK, Fault::Status(500), Some(1));
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 4, "{report}");
    assert_eq!(counts(&idd).1, 3);

    // 403 to the whole request: every write is rejected, nothing retried singly.
    let idd = server().await;
    let batch = jit_users(&idd, 0..3);
    idd.add_fault("POST", BULK, Fault::Status(403), None);
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rejected"], 3, "{report}");
    assert_eq!(idd.count("PUT", "/UserCapabilitiesChanger/"), 0);
}

/// A domain that refuses `/Bulk` or `.search` as such gets single requests from then on, for the
/// life of the process, logged once; nothing is lost and nobody is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_refuses_bulk_or_search_falls_back_for_the_life_of_the_process() {
    let refusals: Vec<(&str, Fault)> = vec![
        (BULK, Fault::Status(404)),
        (BULK, Fault::Status(405)),
        (BULK, Fault::Status(501)),
        (
            BULK,
            Fault::Error {
                status: 400,
                detail: "Operation is not supported".into(),
            },
        ),
        (SEARCH, Fault::Status(405)),
        (
            SEARCH,
            Fault::Error {
                status: 400,
                detail: "The endpoint .search is unsupported".into(),
            },
        ),
    ];
    for (endpoint, fault) in refusals {
        let idd = server().await;
        idd.add_fault("POST", endpoint, fault.clone(), None);
        let f = function(&idd, &[]);
        for round in 0..2u64 {
            let batch = jit_users(&idd, round * 10..round * 10 + 3);
            let (status, report) = invoke(&f, &Value::Array(batch)).await;
            assert_eq!(status, 200, "{endpoint} {fault:?}: {report}");
            assert_eq!(report["applied"], 3, "{endpoint} {fault:?}: {report}");
        }
        let refused = idd
            .requests()
            .iter()
            .filter(|r| r.target == endpoint)
            .count();
        assert_eq!(
            refused, 1,
            "{endpoint} {fault:?}: asked once, then remembered"
        );
        for n in (0..3).chain(10..13) {
            assert_eq!(idd.user_caps(&hex_id(n)), Some(PROFILE_APPLIED), "{n}");
            let writes = idd.count("PUT", &hex_id(n))
                + bulk_paths(&idd)
                    .iter()
                    .filter(|p| p.contains(&hex_id(n)))
                    .count();
            assert_eq!(writes, 1, "{endpoint} {fault:?}: user {n} written once");
        }
        let log = f.stderr.wait_for("\"summary\"");
        assert_eq!(
            log.matches("refuses this endpoint").count(),
            1,
            "{endpoint} {fault:?}: logged once\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_are_paced_by_their_own_rate_group() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..150);
    let f = function(
        &idd,
        &[
            ("BULK_REQUESTS_PER_SECOND", "2"),
            ("MAX_REQUESTS_PER_SECOND", "1000"),
        ],
    );
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 150, "{report}");
    let mut bulks: Vec<_> = idd
        .requests()
        .into_iter()
        .filter(|r| r.target == BULK)
        .collect();
    bulks.sort_by_key(|r| r.arrived);
    assert_eq!(bulks.len(), 3);
    for pair in bulks.windows(2) {
        let gap = pair[1].arrived - pair[0].arrived;
        assert!(
            gap >= Duration::from_millis(500),
            "Bulk calls 1.1/2 s apart: {gap:?}"
        );
    }
    // The searches were not held to the Bulk group's pace.
    let mut searches: Vec<_> = idd
        .requests()
        .into_iter()
        .filter(|r| r.target == SEARCH)
        .collect();
    searches.sort_by_key(|r| r.arrived);
    assert_eq!(searches.len(), 3);
    assert!(searches[2].arrived - searches[0].arrived < Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_writes_with_bulk_and_dry_run_sends_none() {
    let idd = server().await;
    jit_users(&idd, 0..70);
    let f = function(&idd, &[]);
    let (status, report) = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_A}})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 70, "{report}");
    let (_, bulks, others) = counts(&idd);
    assert_eq!(
        (bulks, others),
        (2, 1),
        "one list page, two Bulk requests (50 + 20)"
    );
    assert_eq!(idd.count("PUT", "/UserCapabilitiesChanger/"), 0);

    let idd = server().await;
    let batch = jit_users(&idd, 0..5);
    let f = function(&idd, &[("DRY_RUN", "true")]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 5, "{report}");
    assert_eq!(
        counts(&idd),
        (1, 0, 0),
        "DRY_RUN reads and sends no Bulk request"
    );
    let (status, _) = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_A}})).await;
    assert_eq!(status, 200);
    assert_eq!(counts(&idd).1, 0);
}

/// Issue 24 item 3 with `BULK=auto`: a user's records are logged the moment the Bulk request that
/// carries its write settles, not when the batch (or the window of users read together) ends, so a
/// kill mid-batch leaves every accepted write with its line. 150 users, three Bulk requests of 50;
/// each takes 2 s to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bulk_requests_records_are_logged_as_soon_as_it_settles() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..150);
    idd.add_fault("POST", BULK, Fault::Stall(Duration::from_secs(2)), None);
    let f = std::sync::Arc::new(function(&idd, &[]));
    let call = {
        let f = std::sync::Arc::clone(&f);
        tokio::spawn(async move { invoke(&f, &Value::Array(batch)).await })
    };
    // The first Bulk request has been answered (the server records a request as it answers); the
    // second is waiting its 2 s.
    let start = std::time::Instant::now();
    while counts(&idd).1 < 1 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied_so_far = f
        .stderr
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "record" && v["outcome"] == "applied")
        .count();
    assert!(!call.is_finished(), "the batch is still running");
    assert_eq!(
        applied_so_far, 50,
        "the first request's users, logged already"
    );
    let (status, report) = call.await.unwrap();
    assert_eq!((status, &report["applied"]), (200, &json!(150)), "{report}");
}
