//! Hostile input, failing counterparts and secret hygiene, through the real binary.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::enforcement::{
    actor_record, function_for, ignored_record, invoke, jit_user, jit_users, server, ALL_ON,
    DOMAIN_A, PROFILE_APPLIED,
};
use crate::platform_harness::{deadline_in, vectors_dir, Call, FnProcess, Launch};
use crate::support::identity_domain_server::{hex_id, test_rpst, Fault, IdentityDomainServer};

/// The process answers a normal call after whatever came before.
async fn still_serving(f: &FnProcess, idd: &IdentityDomainServer) {
    idd.add_user(
        &hex_id(424_242),
        "alive@example.com",
        ALL_ON,
        "samljit",
        true,
    );
    let (status, report) = invoke(
        f,
        &json!([actor_record(
            DOMAIN_A,
            &hex_id(424_242),
            "alive@example.com"
        )]),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["applied"].as_u64().unwrap() + report["unchanged"].as_u64().unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_their_specified_outcome_and_the_process_stays_up() {
    let idd = server().await;
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    // A batch whose one record nests deeper than the parser allows: that record is rejected.
    let reply = f.call(Call::new(deep)).await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 200);
    let report = reply.json();
    assert_eq!(
        (report["received"].as_u64(), report["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert!(
        report["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{report}"
    );
    for (name, body) in [
        ("deeply nested object", deep_object.into_bytes()),
        (
            "invalid UTF-8 inside a string",
            b"[{\"data\": \"\xc3\x28\"}]".to_vec(),
        ),
        ("truncated JSON", b"[{\"data\": {".to_vec()),
        ("a JSON string", b"\"[]\"".to_vec()),
        ("null", b"null".to_vec()),
        ("empty", Vec::new()),
        ("whitespace", b"  \n ".to_vec()),
    ] {
        let reply = f.call(Call::new(body)).await;
        reply.assert_platform_valid();
        assert_eq!(reply.status, 200, "{name}: not retried");
        let report = reply.json();
        assert_eq!(report["received"], 0, "{name}: {report}");
        assert!(
            report["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {report}"
        );
    }
    still_serving(&f, &idd).await;
    assert_eq!(
        idd.count("PUT", ""),
        1,
        "only the liveness user was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_duplicate_keys_are_judged_per_record() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let mut number_id = actor_record(DOMAIN_A, &hex_id(1), "u1@example.com");
    number_id["data"]["additionalDetails"]["actorId"] = json!(12345);
    let mut array_domain = actor_record(DOMAIN_A, &hex_id(1), "u1@example.com");
    array_domain["data"]["additionalDetails"]["domainName"] = json!([DOMAIN_A]);
    let mut object_details = actor_record(DOMAIN_A, &hex_id(1), "u1@example.com");
    object_details["data"]["additionalDetails"] = json!("not an object");
    let records = [
        number_id,
        array_domain,
        object_details,
        json!(42),
        json!(null),
        json!("record"),
    ];
    // A record whose domainName appears twice: like every mainstream JSON reader (and the Python
    // function), the last one wins; here the last is a crafted value, so the record is not acted on.
    let duplicate = format!(
        r#"{{"type":"com.oraclecloud.identitysignon.userjit","id":"dup","data":{{"eventName":"UserJit","additionalDetails":{{"eventId":"sso.user.jit.success","actorId":"{}","actorName":"u1@example.com","domainName":"{DOMAIN_A}","domainName":"evil.example#"}}}}}}"#,
        hex_id(1)
    );
    let body = format!(
        "[{},{duplicate}]",
        records
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let reply = f.call(Call::new(body)).await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 200);
    let report = reply.json();
    assert_eq!(report["received"], 7, "{report}");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["applied"], 0, "{report}");
    let results = report["results"].as_array().unwrap();
    for r in results.iter().filter(|r| r["outcome"] == "rejected") {
        assert!(
            r["reason"].as_str().is_some_and(|s| !s.is_empty()),
            "a reason for every rejection: {r}"
        );
    }
    let first = &results[0];
    assert_eq!(first["outcome"], "rejected", "{first}");
    assert!(
        first["reason"].as_str().unwrap().contains("actorId"),
        "the reason names the field: {first}"
    );
    assert_eq!(
        results[6]["outcome"], "ignored",
        "the crafted (last) domainName is outside DOMAINS: {}",
        results[6]
    );
    assert_eq!(idd.requests().len(), 0);
    still_serving(&f, &idd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_megabyte_batch_and_100k_tiny_records_stay_bounded() {
    let idd = server().await;
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);

    // 100,000 tiny records of other event types.
    let tiny: Vec<Value> = (0..100_000)
        .map(|n| json!({"type": "com.oraclecloud.x", "id": n.to_string()}))
        .collect();
    let started = Instant::now();
    let (status, report) = invoke(&f, &Value::Array(tiny)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["received"].as_u64(), report["ignored"].as_u64()),
        (Some(100_000), Some(100_000))
    );
    let listed = report["results"].as_array().map_or(0, Vec::len);
    assert!(
        listed < 1000,
        "ignored records are summarised, not listed one by one: {listed}"
    );
    let tiny_time = started.elapsed();

    // Just under the platform's 6 MB: full-size audit records of another type, and some JIT users.
    let mut batch = Vec::new();
    let mut size = 2;
    let mut n = 0u64;
    while size < 5_900_000 {
        let record = if n.is_multiple_of(100) {
            jit_user(&idd, n)
        } else {
            let mut r = ignored_record(n);
            r["data"]["message"] = json!("x".repeat(200));
            r
        };
        size += record.to_string().len() + 1;
        batch.push(record);
        n += 1;
    }
    let body = Value::Array(batch).to_string();
    assert!(body.len() < 6_000_000);
    let (status, report) = invoke(&f, &serde_json::from_str(&body).unwrap()).await;
    assert_eq!(status, 200, "{report}");
    let users = n.div_ceil(100);
    assert_eq!(report["received"], n);
    assert_eq!(report["applied"], users, "{}", report["applied"]);
    let peak_mib = f.peak_rss_kib() as f64 / 1024.0;
    println!("6 MB batch: {n} records, {users} users; 100k tiny records in {tiny_time:?}; peak RSS {peak_mib:.1} MiB");
    assert!(peak_mib < 64.0, "memory stays bounded: {peak_mib:.1} MiB");
    still_serving(&f, &idd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_non_json_answers_are_retried_then_reported() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..4);
    // Transient: two resets and one HTML page, then normal answers.
    idd.add_fault("GET", &hex_id(0), Fault::Reset, Some(2));
    idd.add_fault("PUT", &hex_id(1), Fault::NonJson, Some(1));
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 4);
    assert!(
        idd.requests().iter().any(|r| r.status.is_none()),
        "the resets happened"
    );

    // Persistent: every read of user 2 is reset, every read of user 3 answers HTML.
    let idd = server().await;
    let batch = jit_users(&idd, 0..4);
    idd.add_fault("GET", &hex_id(2), Fault::Reset, None);
    idd.add_fault("GET", &hex_id(3), Fault::NonJson, None);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let started = Instant::now();
    let reply = f
        .call(
            Call::new(Value::Array(batch).to_string())
                .deadline(Some(deadline_in(Duration::from_secs(20)))),
        )
        .await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 502, "retryable failures fail the invocation");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(idd.user_caps(&hex_id(0)), Some(PROFILE_APPLIED));
    assert_eq!(idd.user_caps(&hex_id(1)), Some(PROFILE_APPLIED));
    let log = f.stderr.wait_for("records failed");
    assert!(
        log.contains(&hex_id(2)) && log.contains(&hex_id(3)),
        "both failures are in the logged report"
    );
}

/// One record for user 1 with a 6 s deadline: the answer is 502 (retryable), and it comes in time.
async fn one_user_fails_before_a_six_second_deadline(f: &FnProcess) {
    let started = Instant::now();
    let reply = f
        .call(
            Call::new(json!([actor_record(DOMAIN_A, &hex_id(1), "u1@example.com")]).to_string())
                .deadline(Some(deadline_in(Duration::from_secs(6)))),
        )
        .await;
    reply.assert_platform_valid();
    assert_eq!(reply.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_unreachable_domain_is_answered_before_the_deadline() {
    // Stalls far past the deadline.
    let idd = server().await;
    idd.add_user(&hex_id(1), "u1@example.com", ALL_ON, "samljit", true);
    idd.add_fault("GET", "", Fault::Stall(Duration::from_secs(120)), None);
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    one_user_fails_before_a_six_second_deadline(&f).await;

    // Nothing listens on the configured port: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let launch = Launch::function()
        .env("DOMAINS", format!("{DOMAIN_A}=http://127.0.0.1:{port}"))
        .env("MAX_REQUESTS_PER_SECOND", "0");
    let f = FnProcess::start(&launch).unwrap();
    one_user_fails_before_a_six_second_deadline(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_stdout_or_stderr_even_at_trace_level() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..10);
    // One 401 on the way, so the refresh path logs too.
    idd.add_fault("GET", &hex_id(0), Fault::Unauthorized, Some(1));
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[("RUST_LOG", "trace"), ("LOG_FORMAT", "text")],
    );
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    let _ = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_A}})).await;
    let output = format!("{}\n{}", f.stdout.text(), f.stderr.text());
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "trace logging was on"
    );

    let token = test_rpst();
    assert!(!output.contains(&token), "the session token leaked");
    for part in token.split('.') {
        assert!(!output.contains(part), "a part of the session token leaked");
    }
    let pem = std::fs::read_to_string(vectors_dir().join("rp_session_key_pkcs1.pem")).unwrap();
    let key_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for start in 0..key_b64.len().saturating_sub(40) {
        let run = &key_b64[start..start + 40];
        assert!(
            !output.contains(run),
            "40 characters of the private key leaked at offset {start}"
        );
    }
    let requests = idd.requests();
    assert!(!requests.is_empty());
    for r in requests {
        let auth = r.authorization.expect("signed");
        assert!(!output.contains(&auth), "an Authorization value leaked");
        let signature = auth
            .rsplit("signature=\"")
            .next()
            .unwrap()
            .trim_end_matches('"');
        assert!(!output.contains(signature), "a signature leaked");
    }
}
