//! End to end: the real binary under the platform harness, against the signature-verifying local
//! identity-domain server.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::platform_harness::{deadline_in, Call, FnProcess, Launch};
use crate::support::identity_domain_server::{
    hex_id, test_key_pem, test_rpst, Fault, IdentityDomainServer,
};

pub use crate::support::fixtures::{actor_record, ALL_ON, DOMAIN_A, DOMAIN_B, PROFILE_APPLIED};

pub async fn server() -> IdentityDomainServer {
    IdentityDomainServer::start(&test_key_pem(), vec![format!("ST${}", test_rpst())]).await
}

/// The reconstructed admin-resource shape (adminResourceId/adminResourceName, actor is the SSO app).
pub fn admin_record(domain: &str, user_id: &str, user_name: &str) -> Value {
    json!({
        "data": {
            "additionalDetails": {
                "eventId": "admin.user.create.success", "actorId": hex_id(999_999), "actorName": "idcssso",
                "actorType": "App", "adminResourceId": user_id, "adminResourceName": user_name,
                "adminResourceType": "User", "domainName": domain
            },
            "eventName": "UserJit"
        },
        "id": format!("adm-{user_id}"),
        "type": "com.oraclecloud.EXAMPLE.UserJit"
    })
}

/// Adds user `n` of DOMAIN_A with every capability on (as JIT users arrive) and returns an actor
/// record for it.
pub fn jit_user(idd: &IdentityDomainServer, n: u64) -> Value {
    let name = format!("u{n}@example.com");
    idd.add_user(&hex_id(n), &name, ALL_ON, "samljit", true);
    actor_record(DOMAIN_A, &hex_id(n), &name)
}

/// [`jit_user`] for each id.
pub fn jit_users(idd: &IdentityDomainServer, ids: std::ops::Range<u64>) -> Vec<Value> {
    ids.map(|n| jit_user(idd, n)).collect()
}

pub fn ignored_record(n: u64) -> Value {
    json!({"data": {"eventName": "ListEvents", "additionalDetails": {}}, "id": format!("other-{n}"), "type": "com.oraclecloud.Audit.ListEvents"})
}

/// The function started like the platform would, with DOMAINS pointing the given names at local servers.
pub fn function_for(
    domains: &[(&str, &IdentityDomainServer)],
    extra: &[(&str, &str)],
) -> FnProcess {
    let list: Vec<String> = domains
        .iter()
        .map(|(name, s)| format!("{name}={}", s.base_url()))
        .collect();
    let mut launch = Launch::function()
        .env("DOMAINS", list.join(","))
        .env("MAX_REQUESTS_PER_SECOND", "0");
    for (k, v) in extra {
        launch = launch.env(k, *v);
    }
    let f = FnProcess::start(&launch).unwrap_or_else(|e| panic!("function did not start: {e:?}"));
    f.check_socket_destination();
    f
}

pub async fn invoke(f: &FnProcess, body: &Value) -> (u16, Value) {
    let reply = f.call(Call::new(body.to_string())).await;
    reply.assert_platform_valid();
    // A 502 carries no report (Fn discards its body): show the function's log instead.
    let json = if reply.status == 200 {
        reply.json()
    } else {
        Value::String(tail(&f.stderr.text(), 8000))
    };
    (reply.status, json)
}

fn tail(text: &str, max: usize) -> String {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

fn outcomes(report: &Value) -> Vec<(u64, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sample_shapes_are_enforced_and_console_is_preserved() {
    let idd = server().await;
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/samples/");
    let seed: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{samples}sch-batch-userjit-seed-style.json")).unwrap(),
    )
    .unwrap();
    let recon: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{samples}idcs-sch-batch-jit-RECONSTRUCTION.json"))
            .unwrap(),
    )
    .unwrap();
    idd.add_user(
        "7c1e5f0a2b3d4c5e8f9a0b1c2d3e4f50",
        "maria.garcia@example.com",
        ALL_ON,
        "samljit",
        true,
    );
    idd.add_user(
        "8f2e4c6a1b3d5f7091a2b3c4d5e6f708",
        "jane.doe@example.com",
        ALL_ON,
        "samljit",
        true,
    );
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);

    let (status, report) = invoke(&f, &seed).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["received"].as_u64(),
            report["applied"].as_u64(),
            report["ignored"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(
        report["results"][0]["changed"]["canUseSmtpCredentials"],
        json!([true, false])
    );
    assert!(report["results"][0]["changed"]
        .get("canUseConsole")
        .is_none());
    assert_eq!(
        idd.user_caps("7c1e5f0a2b3d4c5e8f9a0b1c2d3e4f50"),
        Some(PROFILE_APPLIED)
    );

    let (status, report) = invoke(&f, &recon).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 1, "{report}");
    assert_eq!(
        report["results"][0]["userId"],
        "8f2e4c6a1b3d5f7091a2b3c4d5e6f708"
    );
    assert_eq!(
        idd.user_caps("8f2e4c6a1b3d5f7091a2b3c4d5e6f708"),
        Some(PROFILE_APPLIED)
    );

    // The same batch again: everyone compliant, no write.
    let puts = idd.count("PUT", "/UserCapabilitiesChanger/");
    let (status, report) = invoke(&f, &seed).await;
    assert_eq!(status, 200);
    assert_eq!(report["unchanged"], 1);
    assert_eq!(idd.count("PUT", "/UserCapabilitiesChanger/"), puts);
    assert!(
        idd.requests().iter().all(|r| r.auth_ok),
        "every request carried a valid signature"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_records_across_two_domains_with_duplicates() {
    let (a, b) = (server().await, server().await);
    let mut batch = Vec::new();
    let mut expected_puts = 0;
    for n in 0..450u64 {
        let (domain, idd) = if n % 2 == 0 {
            (DOMAIN_A, &a)
        } else {
            (DOMAIN_B, &b)
        };
        let id = hex_id(n);
        let name = format!("user{n}@example.com");
        // Every fifth user is compliant already; console varies and must be kept as it is.
        let mut caps = if n % 5 == 0 { PROFILE_APPLIED } else { ALL_ON };
        caps[7] = Some(n % 3 == 0);
        if n % 5 != 0 {
            expected_puts += 1;
        }
        idd.add_user(&id, &name, caps, "samljit", true);
        batch.push(if n % 4 == 0 {
            admin_record(domain, &id, &name)
        } else {
            actor_record(domain, &id, &name)
        });
    }
    for n in 0..50u64 {
        // Duplicates of earlier users, in the other record shape.
        let domain = if n % 2 == 0 { DOMAIN_A } else { DOMAIN_B };
        batch.push(actor_record(
            domain,
            &hex_id(n),
            &format!("USER{n}@example.com"),
        ));
    }
    let f = function_for(
        &[(DOMAIN_A, &a), (DOMAIN_B, &b)],
        &[("MAX_CONCURRENCY", "8")],
    );
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["received"], 500);
    assert_eq!(report["applied"], expected_puts);
    assert_eq!(report["unchanged"], 500 - expected_puts);
    assert_eq!(report["failed"], 0);
    let puts =
        a.count("PUT", "/UserCapabilitiesChanger/") + b.count("PUT", "/UserCapabilitiesChanger/");
    assert_eq!(
        puts, expected_puts as usize,
        "compliant users and duplicates get no PUT"
    );
    let gets = a.count("GET", "/admin/v1/Users/") + b.count("GET", "/admin/v1/Users/");
    assert_eq!(gets, 450, "each user is read once");
    for n in 0..450u64 {
        let idd = if n % 2 == 0 { &a } else { &b };
        let caps = idd.user_caps(&hex_id(n)).unwrap();
        assert_eq!(&caps[..7], &PROFILE_APPLIED[..7], "user {n}");
        assert_eq!(
            caps[7],
            Some(n % 3 == 0),
            "console of user {n} is unmanaged and kept"
        );
    }
    // After a busy batch the process still has main + 2 workers + at most 2 blocking threads (DNS).
    let threads = f.thread_count();
    assert!(threads <= 5, "threads after a batch: {threads}");
    let dup = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["index"] == 450)
        .unwrap();
    assert_eq!(dup["outcome"], "unchanged");
    assert!(
        dup["reason"]
            .as_str()
            .unwrap()
            .starts_with("duplicate of record 0: "),
        "{dup}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatch_unknown_user_and_crafted_values_are_rejected_without_writes() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "real.name@example.com", ALL_ON, "samljit", true);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let batch = json!([
        actor_record(DOMAIN_A, &hex_id(1), "someone.else@example.com"),
        actor_record(DOMAIN_A, &hex_id(2), "ghost@example.com"),
        actor_record("evil.example#", &hex_id(3), "x@example.com"),
        actor_record(DOMAIN_A, "../x", "x@example.com"),
        actor_record(DOMAIN_A, "?filter=", "x@example.com"),
        actor_record(DOMAIN_A, "%2e%2e", "x@example.com"),
        actor_record(DOMAIN_B, &hex_id(4), "outside@example.com"),
    ]);
    let (status, report) = invoke(&f, &batch).await;
    assert_eq!(status, 200, "final outcomes only: {report}");
    assert_eq!(
        outcomes(&report),
        vec![
            (0, "rejected".into()),
            (1, "rejected".into()),
            (2, "ignored".into()),
            (3, "rejected".into()),
            (4, "rejected".into()),
            (5, "rejected".into()),
            (6, "ignored".into())
        ],
        "{report}"
    );
    assert!(report["results"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("identity mismatch"));
    assert!(report["results"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("not found"));
    assert_eq!(idd.count("PUT", ""), 0);
    assert_eq!(
        idd.count("GET", ""),
        2,
        "only the two well-formed users were read"
    );
    assert_eq!(idd.user_caps(&hex_id(1)), Some(ALL_ON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_domain_names_never_produce_a_request_without_an_allow_list() {
    let idd = server().await;
    // DOMAINS unset: the template builds the URL, so the domain name itself must be safe.
    let launch = Launch::function()
        .env(
            "IDENTITY_DOMAIN_URL_TEMPLATE",
            "https://{domain}.identity.oraclecloud.com",
        )
        .env("MAX_REQUESTS_PER_SECOND", "0");
    let f = FnProcess::start(&launch).unwrap();
    let tricks = [
        "evil.example#",
        "idcs-0123456789abcdef0123456789abcdef@evil.example",
        "../",
        "idcs-%30123456789abcdef0123456789abcdef",
        "idcs-0123456789abcdef0123456789abcdeF",
        "idcs-0123456789abcdef0123456789abcde\u{0441}",
        "idcs-0123456789abcdef0123456789abcdef\n",
        " idcs-0123456789abcdef0123456789abcdef",
        &format!("idcs-{}", "a".repeat(5000)),
        "idcs-0123456789abcdef0123456789abcdef.evil.example",
    ];
    let batch: Vec<Value> = tricks
        .iter()
        .map(|d| actor_record(d, &hex_id(1), "x@example.com"))
        .collect();
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200);
    assert_eq!(report["rejected"], tricks.len(), "{report}");
    assert_eq!(idd.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_ends_with_everything_applied() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..20);
    idd.add_fault(
        "GET",
        "/admin/v1/Users/",
        Fault::TooManyRequests {
            retry_after: Some("0".into()),
        },
        Some(15),
    );
    idd.add_fault(
        "PUT",
        "/UserCapabilitiesChanger/",
        Fault::TooManyRequests { retry_after: None },
        Some(15),
    );
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 20);
    assert!(
        idd.requests()
            .iter()
            .filter(|r| r.status == Some(429))
            .count()
            >= 30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_writes_always_fail_fails_the_invocation_and_the_rest_are_applied() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..6);
    idd.add_fault("PUT", &hex_id(3), Fault::Status(503), None);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, _) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 502, "a retryable failure fails the invocation");
    for n in [0u64, 1, 2, 4, 5] {
        assert_eq!(idd.user_caps(&hex_id(n)), Some(PROFILE_APPLIED), "user {n}");
    }
    assert_eq!(idd.user_caps(&hex_id(3)), Some(ALL_ON));
    let log = f.stderr.wait_for("records failed");
    assert!(
        log.contains("records failed"),
        "the report is logged for a 502"
    );
    assert!(log.contains(&hex_id(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_no_write() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..5);
    let f = function_for(&[(DOMAIN_A, &idd)], &[("DRY_RUN", "true")]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200);
    assert_eq!(report["dryRun"], true);
    assert_eq!(report["applied"], 5, "would be written");
    assert_eq!(idd.count("PUT", ""), 0);
    assert_eq!(idd.user_caps(&hex_id(0)), Some(ALL_ON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_mid_batch_answers_502_before_the_deadline() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..60);
    idd.set_latency(Duration::from_millis(150));
    let f = function_for(&[(DOMAIN_A, &idd)], &[("MAX_CONCURRENCY", "2")]);
    let deadline = deadline_in(Duration::from_secs(5));
    let started = Instant::now();
    let reply = f
        .call(Call::new(Value::Array(batch).to_string()).deadline(Some(deadline)))
        .await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered before the deadline: {:?}",
        started.elapsed()
    );
    let log = f.stderr.wait_for("deadline reached");
    assert!(log.contains("deadline reached before this user was processed"));
    let applied = (0..60u64)
        .filter(|n| idd.user_caps(&hex_id(*n)) == Some(PROFILE_APPLIED))
        .count();
    assert!(
        applied > 0 && applied < 60,
        "some users done, the rest reported: {applied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_request_rate_stay_within_their_caps() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..40);
    idd.set_latency(Duration::from_millis(20));
    let f = function_for(&[(DOMAIN_A, &idd)], &[("MAX_CONCURRENCY", "3")]);
    let (status, _) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200);
    assert!(
        idd.max_in_flight() <= 3,
        "in flight: {}",
        idd.max_in_flight()
    );
    assert!(
        idd.max_in_flight() >= 2,
        "the cap is used: {}",
        idd.max_in_flight()
    );

    let idd = server().await;
    let batch = jit_users(&idd, 0..20);
    let launch = Launch::function()
        .env("DOMAINS", format!("{DOMAIN_A}={}", idd.base_url()))
        .env("MAX_REQUESTS_PER_SECOND", "10")
        .env("MAX_CONCURRENCY", "8");
    let f = FnProcess::start(&launch).unwrap();
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(idd.requests().len(), 40);
    // A limiter at r per second admits at most r·T + 1 requests in any window of length T: the
    // request on the window's leading edge may arrive a little late (a loaded machine delays it)
    // while the next ones keep their slots. Over the whole run the average must hold exactly.
    let peak = idd.max_requests_in_window(Duration::from_secs(1));
    assert!(
        peak <= 11,
        "at most 10 (+1 at the edge) requests in any second, saw {peak}"
    );
    let peak = idd.max_requests_in_window(Duration::from_secs(3));
    assert!(
        peak <= 31,
        "at most 30 (+1) requests in any 3 s, saw {peak}"
    );
    let span = idd.max_requests_in_window(Duration::from_millis(3_800));
    assert!(
        span < 40,
        "40 requests at 10/s cannot fit in 3.8 s, saw {span}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_bodies_get_200_with_an_error_and_are_not_retried() {
    let idd = server().await;
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    for body in [&b"not json"[..], b"", b"\"a string\"", b"42", b"\xff\xfe[]"] {
        let reply = f.call(Call::new(body.to_vec())).await;
        reply.assert_platform_valid();
        assert_eq!(reply.status, 200);
        let report = reply.json();
        assert_eq!(report["received"], 0);
        assert!(report["error"].is_string(), "{report}");
    }
    let reply = f.call(Call::new(vec![b' '; 7 * 1024 * 1024])).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["error"].as_str().unwrap().contains("6 MiB"));
    assert_eq!(idd.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_refreshed_once_then_reported() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    idd.set_accepted_key_ids(vec!["ST$some-other-token".into()]);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, _) = invoke(
        &f,
        &json!([actor_record(DOMAIN_A, &hex_id(1), "u1@example.com")]),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(
        idd.count("GET", &hex_id(1)),
        2,
        "one retry after re-reading the credentials"
    );
    let log = f.stderr.wait_for("User Administrator");
    assert!(
        log.contains("signing as resource principal") && log.contains("dynamic group"),
        "the error names the credential and the likely cause: {log}"
    );
}
