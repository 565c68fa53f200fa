//! The shared transport (`crates/oci-transport`) seen from outside: requests are signed when they
//! are sent, after the rate limiter's wait (issue 24, item 9).

use std::time::Duration;

use serde_json::Value;

use crate::enforcement::{function_for, invoke, jit_users, server, DOMAIN_A};

/// At one request a second, six requests take five seconds to go out. Each must carry a `date`
/// taken when it left, not when it was queued: the service refuses a `date` more than five
/// minutes old, and a long wait (the operator CLI's budget allows one) would otherwise get there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_low_rate_every_request_is_signed_when_it_is_sent() {
    let idd = server().await;
    let batch = jit_users(&idd, 0..3);
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[("MAX_REQUESTS_PER_SECOND", "1"), ("BULK", "off")],
    );
    let (status, report) = invoke(&f, &Value::Array(batch)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 3, "{report}");
    let requests = idd.requests();
    assert_eq!(requests.len(), 6, "a read and a write per user");
    let first = requests.iter().map(|r| r.arrived).min().unwrap();
    let last = requests.iter().map(|r| r.arrived).max().unwrap();
    assert!(
        last - first >= Duration::from_secs(4),
        "the limiter spaced them: {:?}",
        last - first
    );
    for r in &requests {
        let date = httpdate::parse_http_date(r.date.as_deref().expect("a signed date")).unwrap();
        // `date` has whole seconds: up to one second behind, plus the time on the wire.
        let age = r.arrived_at.duration_since(date).unwrap_or_default();
        assert!(
            age < Duration::from_millis(1500),
            "{} {} arrived {age:?} after its signed date",
            r.method,
            r.target
        );
    }
}
