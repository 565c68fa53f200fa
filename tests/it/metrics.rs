//! Custom metrics in OCI Monitoring: the real function, behind its Fn socket, posts each call's
//! counts to a local ingestion endpoint that verifies the signature and the documented body shape;
//! Monitoring answering 500 or never answering changes neither the answer nor its timing beyond
//! the bound.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::enforcement::{function_for, ignored_record, invoke, jit_users, server, DOMAIN_A};
use crate::platform_harness::{FnProcess, InitFailure, Launch};
use crate::support::fixtures::actor_record;
use crate::support::identity_domain_server::{hex_id, test_key_pem, test_rpst, Fault};
use crate::support::monitoring_server::{Mode, MonitoringServer};

const COMPARTMENT: &str = "ocid1.compartment.oc1..aaaaaaaametricstest";
const NAMESPACE: &str = "user_capabilities_test";
/// The product's bound on the wait for metrics (`report::metrics::POST_WAIT`).
const POST_WAIT: Duration = Duration::from_millis(1500);

async fn monitoring(mode: Mode) -> MonitoringServer {
    MonitoringServer::start(&test_key_pem(), vec![format!("ST${}", test_rpst())], mode).await
}

/// Three JIT users to write, one record of another event type, one record whose domain name is
/// hostile (outside `DOMAINS`, so ignored too).
fn batch(idd: &crate::support::identity_domain_server::IdentityDomainServer) -> Value {
    let mut records = jit_users(idd, 0..3);
    records.push(ignored_record(1));
    records.push(actor_record(
        "evil\"},{\"x",
        &hex_id(9),
        "mallory@example.com",
    ));
    Value::Array(records)
}

/// The stream named `name` whose dimensions are exactly `dimensions`.
fn stream<'a>(streams: &'a [Value], name: &str, dimensions: Value) -> Option<&'a Value> {
    streams
        .iter()
        .find(|s| s["name"] == name && s["dimensions"] == dimensions)
}

fn value(stream: Option<&Value>) -> f64 {
    stream
        .and_then(|s| s["datapoints"][0]["value"].as_f64())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_posts_signed_metrics_of_the_documented_shape() {
    let idd = server().await;
    let mon = monitoring(Mode::Accept).await;
    // One 429 from the domain: the call counts it as throttled and still succeeds.
    idd.add_fault(
        "GET",
        "/admin/v1/Users/",
        Fault::TooManyRequests { retry_after: None },
        Some(1),
    );
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[
            ("METRICS_COMPARTMENT_ID", COMPARTMENT),
            ("METRICS_NAMESPACE", NAMESPACE),
            ("MONITORING_INGESTION_URL", &mon.base_url()),
        ],
    );
    let body = batch(&idd);
    // User 0 holds an SMTP credential and two customer secret keys, which the profile turns off.
    idd.add_credential(&hex_id(0), "smtpCredentials", &hex_id(500));
    idd.add_credential(&hex_id(0), "customerSecretKeys", &hex_id(501));
    idd.add_credential(&hex_id(0), "customerSecretKeys", &hex_id(502));
    let (status, report) = invoke(&f, &body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["applied"], &report["ignored"], &report["rejected"]),
        (&json!(3), &json!(2), &json!(0))
    );

    let posted = mon.posted();
    assert_eq!(posted.len(), 1, "one call holds this invocation's streams");
    for p in &posted {
        assert_eq!(p.path, "/20180401/metrics");
        assert_eq!(p.signature, Ok(()), "the post is signed as the function");
        assert_eq!(p.shape, Ok(()), "{}", p.body);
    }
    let streams = mon.streams();
    for s in &streams {
        assert_eq!(s["namespace"], NAMESPACE);
        assert_eq!(s["compartmentId"], COMPARTMENT);
    }
    let records = |outcome: &str, domain: &str| {
        value(stream(
            &streams,
            "records",
            json!({"outcome": outcome, "domain": domain}),
        ))
    };
    assert_eq!(records("applied", DOMAIN_A), 3.0);
    assert_eq!(records("ignored", "none"), 1.0);
    // The hostile domain name is never echoed into a dimension.
    assert_eq!(records("ignored", "invalid"), 1.0);
    assert!(!serde_json::to_string(&streams).unwrap().contains("evil"));
    let lingering = |kind: &str| {
        value(stream(
            &streams,
            "lingering_credentials",
            json!({"credential_type": kind}),
        ))
    };
    assert_eq!(
        (
            lingering("smtpCredentials"),
            lingering("customerSecretKeys")
        ),
        (1.0, 2.0)
    );
    // CREDENTIALS=report (the default) revokes nothing, so no stream says it did.
    assert!(!streams.iter().any(|s| s["name"] == "revoked_credentials"));
    let batch = json!({"kind": "batch"});
    assert_eq!(
        value(stream(&streams, "throttled_requests", batch.clone())),
        1.0
    );
    let ms = value(stream(&streams, "invocation_ms", batch));
    assert!(ms > 0.0 && ms < 30_000.0, "invocation_ms {ms}");
    assert!(!f.stderr.text().contains("metrics not posted"));

    // A reconcile posts its users by outcome under the domain's name, as kind "reconcile".
    let (status, report) = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_A}})).await;
    assert_eq!(status, 200, "{report}");
    let posted = mon.posted();
    assert_eq!(posted.len(), 2);
    assert!(posted
        .iter()
        .all(|p| p.signature.is_ok() && p.shape.is_ok()));
    let streams: Vec<Value> = posted[1].body["metricData"].as_array().unwrap().clone();
    let unchanged = json!({"outcome": "unchanged", "domain": DOMAIN_A});
    assert_eq!(
        value(stream(&streams, "records", unchanged)),
        3.0,
        "{streams:?}"
    );
    let reconcile = json!({"kind": "reconcile"});
    assert_eq!(
        value(stream(&streams, "throttled_requests", reconcile.clone())),
        0.0
    );
    assert!(value(stream(&streams, "invocation_ms", reconcile)) >= 0.0);
}

/// Calls the function with the same batch (users reset to every capability on) and returns the
/// answer, its time, and the log lines saying metrics were not posted.
async fn timed_call(
    f: &FnProcess,
    idd: &crate::support::identity_domain_server::IdentityDomainServer,
) -> (u16, Value, Duration) {
    let body = batch(idd);
    let started = Instant::now();
    let (status, mut report) = invoke(f, &body).await;
    let took = started.elapsed();
    // Request ids differ from call to call; the rest of the answer must not.
    for r in report["results"].as_array_mut().into_iter().flatten() {
        r.as_object_mut().map(|o| o.remove("requestIds"));
    }
    (status, report, took)
}

/// Lines saying metrics were not posted since `before` of them: the log is read from the process's
/// stderr by another thread, so give it a moment to catch up (and to show a second line, were there
/// one).
async fn logged_after(f: &FnProcess, before: usize) -> usize {
    let count = || f.stderr.text().matches("metrics not posted").count() - before;
    for _ in 0..40 {
        if count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_failing_or_hanging_changes_neither_the_answer_nor_its_timing_beyond_the_bound()
{
    let idd = server().await;
    let mon = monitoring(Mode::Accept).await;
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[
            ("METRICS_COMPARTMENT_ID", COMPARTMENT),
            ("MONITORING_INGESTION_URL", &mon.base_url()),
        ],
    );
    let (status, expected, baseline) = timed_call(&f, &idd).await;
    assert_eq!(status, 200, "{expected}");
    assert_eq!(mon.posted().len(), 1);

    for mode in [Mode::Fail, Mode::Hang] {
        mon.set_mode(mode);
        let before = mon.posted().len();
        let logged_before = f.stderr.text().matches("metrics not posted").count();
        let (status, report, took) = timed_call(&f, &idd).await;
        assert_eq!(status, 200, "{mode:?}: {report}");
        assert_eq!(report, expected, "{mode:?}: the answer is the same");
        assert!(
            took < baseline + POST_WAIT + Duration::from_millis(1500),
            "{mode:?}: took {took:?}, baseline {baseline:?}, bound {POST_WAIT:?}"
        );
        let tries = mon.posted().len() - before;
        assert!(tries >= 1, "{mode:?}: the post was attempted");
        if mode == Mode::Hang {
            assert_eq!(tries, 1, "a hanging post is never retried past the bound");
        }
        let logged = logged_after(&f, logged_before).await;
        assert_eq!(logged, 1, "{mode:?}: logged once for the call");
    }
    // Nothing the failed posts did lingers: the next call posts and answers as before.
    mon.set_mode(Mode::Accept);
    let before = mon.posted().len();
    let (status, report, _) = timed_call(&f, &idd).await;
    assert_eq!((status, &report), (200, &expected));
    assert!(mon.posted()[before..]
        .iter()
        .any(|p| p.shape.is_ok() && p.signature.is_ok()));
}

#[test]
fn metrics_keys_are_checked_at_start_naming_the_key() {
    for (key, value, words) in [
        ("METRICS_NAMESPACE", "oci_capabilities", "reserves"),
        (
            "METRICS_NAMESPACE",
            "user-capabilities",
            "letters, digits and _",
        ),
        (
            "METRICS_COMPARTMENT_ID",
            "ocid1.user.oc1..aaaa",
            "compartment",
        ),
        (
            "MONITORING_INGESTION_URL",
            "https://example.com",
            "not a Monitoring ingestion endpoint",
        ),
    ] {
        let launch = Launch::function()
            .env("METRICS_COMPARTMENT_ID", COMPARTMENT)
            .env(key, value);
        match FnProcess::start(&launch) {
            Err(InitFailure::Exited { status, stderr }) => {
                assert_eq!(status.code(), Some(2), "{stderr}");
                assert!(stderr.contains(key) && stderr.contains(words), "{stderr}");
            }
            Err(other) => panic!("{key}={value}: {other:?}"),
            Ok(_) => panic!("{key}={value}: the function started"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_are_posted_by_type() {
    let idd = server().await;
    let mon = monitoring(Mode::Accept).await;
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[
            ("METRICS_COMPARTMENT_ID", COMPARTMENT),
            ("MONITORING_INGESTION_URL", &mon.base_url()),
            ("CREDENTIALS", "revoke"),
        ],
    );
    let records = jit_users(&idd, 0..1);
    idd.add_credential(&hex_id(0), "smtpCredentials", &hex_id(600));
    let (status, report) = invoke(&f, &Value::Array(records)).await;
    assert_eq!(status, 200, "{report}");
    assert!(idd.credentials(&hex_id(0)).is_empty(), "{report}");
    let streams = mon.streams();
    let revoked = json!({"credential_type": "smtpCredentials"});
    assert_eq!(
        value(stream(&streams, "revoked_credentials", revoked.clone())),
        1.0
    );
    assert_eq!(
        value(stream(&streams, "lingering_credentials", revoked)),
        1.0
    );
    assert!(mon
        .posted()
        .iter()
        .all(|p| p.signature.is_ok() && p.shape.is_ok()));
}
