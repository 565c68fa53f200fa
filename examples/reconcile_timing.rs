//! How long the operator's `reconcile` takes on a 2,345-user domain behind 20 ms of latency, with the
//! default limits and with the request-rate limiter off. Run by hand:
//!
//! ```text
//! cargo build --release --locked --bin oci-user-capabilities --example reconcile_timing
//! target/release/examples/reconcile_timing
//! ```
//!
//! The identity domain is the tests' signature-verifying server; the CLI signs with an API key from a
//! throwaway `~/.oci/config`, exactly as an operator's run would.
// `pub` here marks what the test modules share with each other, not an API.
#![allow(unreachable_pub)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::fixtures::{api_key_id, operator_home, populate_domain, USERS};
use support::identity_domain_server::{test_key_pem, IdentityDomainServer};

const LATENCY: Duration = Duration::from_millis(20);
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("oci-user-capabilities");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release --locked --bin oci-user-capabilities",
        bin.display()
    );
    bin
}

async fn run(label: &str, env: &[(&str, &str)]) {
    let idd = IdentityDomainServer::start(&test_key_pem(), vec![api_key_id()]).await;
    let needs_write = populate_domain(&idd);
    idd.set_latency(LATENCY);
    let home = operator_home("");
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(["reconcile", "--domain", &idd.base_url(), "--output", "json"])
        .env_clear()
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().await.expect("run the CLI");
    let took = started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let requests = idd.requests();
    assert!(requests.iter().all(|r| r.auth_ok), "every request verified");
    assert_eq!(report["scanned"], USERS, "{report}");
    assert_eq!(report["applied"], needs_write);
    let rate = requests.len() as f64 / took.as_secs_f64();
    println!(
        "{label:<34} {:>7.2} s  {:>5} requests ({:>5.1}/s, peak {:>3} in any second, max {} in flight)  exit {}",
        took.as_secs_f64(),
        requests.len(),
        rate,
        idd.max_requests_in_window(Duration::from_secs(1)),
        idd.max_in_flight(),
        out.status.code().unwrap_or(-1)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("reconcile: {USERS} JIT users (two thirds need a write), {} ms server latency, pages of 1000", LATENCY.as_millis());
    run("default limits (4 at once, 20/s)", &[]).await;
    run(
        "limiter off (4 at once)",
        &[("MAX_REQUESTS_PER_SECOND", "0")],
    )
    .await;
    run(
        "limiter off, 16 at once",
        &[("MAX_REQUESTS_PER_SECOND", "0"), ("MAX_CONCURRENCY", "16")],
    )
    .await;
}
