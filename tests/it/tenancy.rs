//! Reconcile at tenancy scale, through the binary: a stand-in for OCI Functions delivers each
//! detached invocation to a function container with a short deadline, the control plane lists a
//! compartment tree with ACTIVE and INACTIVE identity domains, and every domain's reconcile hands
//! itself on from hop to hop until it is done.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::enforcement::{ALL_ON, PROFILE_APPLIED};
use crate::functions_platform::FunctionsPlatform;
use crate::platform_harness::{Captured, FnProcess, Launch};
use crate::reconcile::puts_per_user;
use crate::support::fixtures::TENANCY;
use crate::support::identity_domain_server::{
    hex_id, test_key_pem, test_rpst, IdentityDomainServer,
};

/// `FN_FN_ID` as the harness sets it.
const FN_ID: &str = "ocid1.fnfunc.oc1..test";
const PROD: &str = "ocid1.compartment.oc1..aaaaprod";
const TEAM: &str = "ocid1.compartment.oc1..aaaateam";
const GONE: &str = "ocid1.compartment.oc1..aaaagone";

fn domain_ocid(i: usize) -> String {
    format!("ocid1.domain.oc1..aaaadomain{i}")
}

/// A control plane, and identity domains: `active` of them ACTIVE (in the tenancy, PROD, TEAM,
/// then PROD again), then one INACTIVE in PROD with a few users of its own.
struct Tenancy {
    plane: IdentityDomainServer,
    domains: Vec<IdentityDomainServer>,
    inactive: IdentityDomainServer,
    /// JIT users needing a write, per active domain.
    needs_write: Vec<u64>,
}

async fn tenancy(active: usize, users: u64, key_id: String) -> Tenancy {
    let plane = IdentityDomainServer::start(&test_key_pem(), vec![key_id.clone()]).await;
    plane.add_compartment(TENANCY, PROD, "ACTIVE");
    plane.add_compartment(PROD, TEAM, "ACTIVE");
    plane.add_compartment(TENANCY, GONE, "DELETED");
    let homes = [TENANCY, PROD, TEAM, PROD];
    let mut domains = Vec::new();
    let mut needs_write = Vec::new();
    for i in 0..active {
        let idd = IdentityDomainServer::start(&test_key_pem(), vec![key_id.clone()]).await;
        needs_write.push(populate(&idd, users));
        plane.add_listed_domain(
            homes[i % homes.len()],
            &domain_ocid(i),
            &format!("Domain {i}"),
            &idd.base_url(),
            "ACTIVE",
        );
        domains.push(idd);
    }
    let inactive = IdentityDomainServer::start(&test_key_pem(), vec![key_id]).await;
    populate(&inactive, 50);
    plane.add_listed_domain(
        PROD,
        &domain_ocid(99),
        "Retired",
        &inactive.base_url(),
        "INACTIVE",
    );
    Tenancy {
        plane,
        domains,
        inactive,
        needs_write,
    }
}

/// `users` JIT users, every fifth with every capability on (the others already compliant), and a
/// console user every 50th that the default filter leaves alone. Returns how many need a write.
fn populate(idd: &IdentityDomainServer, users: u64) -> u64 {
    let mut needs_write = 0;
    for n in 0..users {
        let caps = if n % 5 == 0 { ALL_ON } else { PROFILE_APPLIED };
        needs_write += u64::from(n % 5 == 0);
        idd.add_user(
            &hex_id(n),
            &format!("jit{n}@example.com"),
            caps,
            "samljit",
            true,
        );
        if n % 50 == 0 {
            idd.add_user(
                &hex_id(1_000_000 + n),
                &format!("local{n}@example.com"),
                ALL_ON,
                "idcsui",
                false,
            );
        }
    }
    needs_write
}

/// A function container as the platform starts it, pointed at the stand-ins.
fn container(
    plane: &IdentityDomainServer,
    platform: &FunctionsPlatform,
    extra: &[(&str, &str)],
) -> FnProcess {
    let mut launch = Launch::function()
        .env("IDENTITY_CONTROL_PLANE_URL", plane.base_url())
        .env("FUNCTIONS_URL", platform.base_url());
    for (k, v) in extra {
        launch = launch.env(k, *v);
    }
    FnProcess::start(&launch).unwrap_or_else(|e| panic!("function did not start: {e:?}"))
}

async fn platform() -> FunctionsPlatform {
    FunctionsPlatform::start(&test_key_pem(), vec![format!("ST${}", test_rpst())], FN_ID).await
}

/// The JSON log lines of every container with this message (waiting briefly for the first: the
/// log is read from a pipe, a little behind the answer).
fn log_lines(logs: &[Captured], message: &str) -> Vec<Value> {
    let needle = format!("\"message\":\"{message}\"");
    let start = Instant::now();
    while !logs.iter().any(|l| l.text().contains(&needle))
        && start.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    logs.iter()
        .flat_map(|l| {
            l.text()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .collect::<Vec<_>>()
        })
        .filter(|v| v["message"] == message)
        .collect()
}

/// 3 domains of 5,000 users (1,000 of them to write) and an inactive one; 7-second invocations and
/// a 100 requests/s cap, so each domain needs several hops; users are added and removed while it
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_active_domain_of_the_tenancy_is_reconciled_hop_by_hop() {
    const USERS: u64 = 5_000;
    const MAX_HOPS: u32 = 60;
    let t = tenancy(3, USERS, format!("ST${}", test_rpst())).await;
    let platform = platform().await;
    let settings = [
        ("MAX_REQUESTS_PER_SECOND", "100"),
        ("MAX_CONCURRENCY", "8"),
        ("RECONCILE_MAX_HOPS", "60"),
    ];
    let containers: Vec<FnProcess> = (0..3)
        .map(|_| container(&t.plane, &platform, &settings))
        .collect();
    let logs: Vec<Captured> = containers.iter().map(|c| c.stderr.clone()).collect();
    let pids: Vec<i32> = containers.iter().map(FnProcess::pid).collect();
    platform.serve_with(containers, Duration::from_secs(7));

    let started = Instant::now();
    platform.invoke(&json!({"reconcile": {"domains": "all"}}));
    // Churn in domain 0 once its run is under way: users created after the run started, users
    // deleted before the run reaches them, and users deleted after it passed them.
    let mut churned = false;
    let added: Vec<String> = (0..60).map(|k| hex_id(9_000_000 + k)).collect();
    let removed_ahead: Vec<String> = (4_900..4_960).map(hex_id).collect();
    let removed_behind: Vec<String> = (0..20).map(|k| hex_id(k * 5 + 1)).collect();
    loop {
        if !churned && t.domains[0].count("PUT", "") >= 150 {
            for (k, id) in added.iter().enumerate() {
                t.domains[0].add_user(id, &format!("late{k}@example.com"), ALL_ON, "samljit", true);
            }
            for id in removed_ahead.iter().chain(&removed_behind) {
                t.domains[0].remove_user(id);
            }
            churned = true;
        }
        if platform
            .wait_idle(Duration::from_millis(300), Duration::ZERO)
            .await
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the run did not finish: {:?}",
            platform.invocations().len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let wall = started.elapsed();
    // Peak RSS and CPU time of each container, from /proc, while they still run.
    let proc_stats: Vec<(u64, f64)> = pids.iter().map(|pid| proc_peak_and_cpu(*pid)).collect();
    assert!(
        churned,
        "the churn happened during the run: {:?}\n{}",
        platform
            .invocations()
            .iter()
            .map(|i| i.answered)
            .collect::<Vec<_>>(),
        logs.iter().map(Captured::text).collect::<String>()
    );

    // Every invocation was accepted signed and ended 200: hand-offs were accepted, nothing failed.
    assert!(platform.refusals().is_empty(), "{:?}", platform.refusals());
    let invocations = platform.invocations();
    for i in &invocations {
        assert_eq!(
            i.answered,
            Some(200),
            "{}\n{}",
            i.body,
            logs.iter().map(Captured::text).collect::<String>()
        );
    }
    assert!(
        platform.get_function_calls() <= 3,
        "the invoke endpoint is asked once per container"
    );

    // One chain per active domain, hops 0, 1, 2, … with no repeat, bounded by the limit.
    let mut hops: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in invocations.iter().skip(1) {
        let r = &i.body["reconcile"];
        hops.entry(r["domain"].as_str().unwrap().to_owned())
            .or_default()
            .push(r["hop"].as_u64().unwrap());
    }
    assert_eq!(
        hops.keys().cloned().collect::<Vec<_>>(),
        (0..3).map(domain_ocid).collect::<Vec<_>>()
    );
    for (domain, list) in &hops {
        let mut sorted = list.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..list.len() as u64).collect::<Vec<_>>(),
            "{domain}"
        );
        assert!(
            list.len() >= 3,
            "{domain}: the deadline and the rate cap force hand-offs"
        );
        assert!(list.len() as u32 <= MAX_HOPS + 1);
    }

    // Every JIT user still there is compliant, each written once; console users and the inactive
    // domain untouched.
    for (i, idd) in t.domains.iter().enumerate() {
        let puts = puts_per_user(idd);
        assert!(
            puts.values().all(|n| *n == 1),
            "domain {i}: a user written twice"
        );
        for n in 0..USERS {
            let caps = idd.user_caps(&hex_id(n));
            assert!(
                caps.is_none() || caps == Some(PROFILE_APPLIED),
                "domain {i} user {n}: {caps:?}"
            );
            if n % 50 == 0 {
                assert_eq!(idd.user_caps(&hex_id(1_000_000 + n)), Some(ALL_ON));
            }
        }
        assert!(idd.requests().iter().all(|r| r.auth_ok));
    }
    for id in &added {
        assert_eq!(
            t.domains[0].user_caps(id),
            Some(PROFILE_APPLIED),
            "added user {id}"
        );
    }
    let writes_0 = puts_per_user(&t.domains[0]).len() as u64;
    let ahead_needing_write = (4_900..4_960u64).filter(|n| n % 5 == 0).count() as u64;
    assert_eq!(
        writes_0,
        t.needs_write[0] - ahead_needing_write + added.len() as u64
    );
    for i in 1..3 {
        assert_eq!(
            puts_per_user(&t.domains[i]).len() as u64,
            t.needs_write[i],
            "domain {i}"
        );
    }
    assert_eq!(
        t.inactive.requests().len(),
        0,
        "the inactive domain is never touched"
    );

    // The fan-out's answer, and one `reconcile complete` line per domain with its totals.
    let fan_out = log_lines(&logs, "tenancy reconcile started");
    assert_eq!(fan_out.len(), 1);
    assert_eq!(
        (
            fan_out[0]["started"].as_u64(),
            fan_out[0]["skipped"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_eq!(
        fan_out[0]["compartments"], 3,
        "the tenancy and its two ACTIVE compartments"
    );
    let complete = log_lines(&logs, "reconcile complete");
    assert_eq!(complete.len(), 3, "{complete:?}");
    let run_ids: Vec<&str> = complete
        .iter()
        .map(|c| c["run_id"].as_str().unwrap())
        .collect();
    assert!(
        run_ids.iter().all(|r| *r == run_ids[0]),
        "one run id for the whole run"
    );
    for c in &complete {
        assert_eq!(c["failed"], 0, "{c}");
        assert_eq!(c["rejected"], 0, "{c}");
        let scanned = c["scanned"].as_u64().unwrap();
        assert!((USERS - 80..=USERS + 60).contains(&scanned), "{c}");
    }
    let summaries = log_lines(&logs, "reconcile summary");
    assert_eq!(summaries.len(), invocations.len() - 1, "one line per hop");

    // Measurements for the README and the closing note.
    let requests: HashMap<usize, (usize, usize)> = t
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| (i, (d.count("GET", "/admin/v1/Users?"), d.count("PUT", ""))))
        .collect();
    let throttled: usize = t
        .domains
        .iter()
        .map(|d| {
            d.requests()
                .iter()
                .filter(|r| r.status == Some(429))
                .count()
        })
        .sum();
    eprintln!(
        "tenancy reconcile: {} invocations ({} hand-offs), hops per domain {:?}, requests (list pages, PUTs) per domain {:?}, control plane {}, 429s {}, wall {:.1} s, containers (peak RSS KiB, CPU s) {:?}",
        invocations.len(),
        invocations.len() - 4,
        hops.values().map(Vec::len).collect::<Vec<_>>(),
        requests,
        t.plane.requests().len(),
        throttled,
        wall.as_secs_f64(),
        proc_stats
    );
}

/// Peak resident set (KiB) and CPU seconds (user + system) of a running process, from /proc.
fn proc_peak_and_cpu(pid: i32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th and
    // 13th of them, in clock ticks (100 a second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    (peak, ticks as f64 / 100.0)
}

/// Runs one domain's reconcile (`body`) on a fresh platform whose containers get `extra`, and
/// returns the platform, the containers' logs and every invocation once all are answered.
async fn run_one_domain(
    t: &Tenancy,
    extra: &[(&str, &str)],
    prepare: impl FnOnce(&FunctionsPlatform),
) -> (FunctionsPlatform, Vec<Captured>) {
    let platform = platform().await;
    prepare(&platform);
    let mut settings = vec![("MAX_REQUESTS_PER_SECOND", "100"), ("MAX_CONCURRENCY", "8")];
    settings.extend_from_slice(extra);
    let containers: Vec<FnProcess> = (0..1)
        .map(|_| container(&t.plane, &platform, &settings))
        .collect();
    let logs: Vec<Captured> = containers.iter().map(|c| c.stderr.clone()).collect();
    platform.serve_with(containers, Duration::from_secs(8));
    platform.invoke(&json!({"reconcile": {"domain": domain_ocid(0)}}));
    assert!(
        platform
            .wait_idle(Duration::from_millis(300), Duration::from_secs(60))
            .await,
        "the run did not end"
    );
    (platform, logs)
}

/// A hand-off the platform does not accept, the hop limit, and an invoke endpoint that is not
/// OCI's each end the hop with 502 and the cursor to resume from in the log; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_that_cannot_be_made_answers_502_with_the_cursor() {
    let t = tenancy(1, 3_000, format!("ST${}", test_rpst())).await;

    // The invoke endpoint answers 503 every time: retried, then 502.
    let (platform, logs) = run_one_domain(&t, &[], |p| p.fail_invokes(Some(503))).await;
    let invocations = platform.invocations();
    assert_eq!(invocations.len(), 1, "no hand-off was accepted");
    assert_eq!(invocations[0].answered, Some(502));
    let failed = log_lines(&logs, "reconcile hand-off failed");
    assert_eq!(failed.len(), 1, "{}", logs[0].text());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("503") && reason.contains("resume with"),
        "{reason}"
    );
    assert!(
        failed[0]["cursor"].as_str().unwrap().contains("created"),
        "{}",
        failed[0]
    );
    // Resuming from the logged request finishes the domain, nobody written twice.
    let resume: Value = serde_json::from_str(reason.split("resume with ").nth(1).unwrap()).unwrap();
    assert_eq!(resume["reconcile"]["hop"], 1, "{resume}");
    let (platform, _) = {
        let platform = self::platform().await;
        let settings = [("MAX_REQUESTS_PER_SECOND", "0"), ("MAX_CONCURRENCY", "8")];
        let c = container(&t.plane, &platform, &settings);
        platform.serve_with(vec![c], Duration::from_secs(30));
        platform.invoke(&resume);
        assert!(
            platform
                .wait_idle(Duration::from_millis(300), Duration::from_secs(60))
                .await
        );
        (platform, ())
    };
    assert_eq!(platform.invocations()[0].answered, Some(200));
    assert!(puts_per_user(&t.domains[0]).values().all(|n| *n == 1));
    assert_eq!(puts_per_user(&t.domains[0]).len() as u64, t.needs_write[0]);

    // RECONCILE_MAX_HOPS=1: the first hand-off is made, the second is refused.
    let t = tenancy(1, 3_000, format!("ST${}", test_rpst())).await;
    // At 20 requests a second the domain's writes take about 30 s: more than two hops of 8 s on any
    // machine (at 100/s a quiet machine finished in two and the limit was never reached).
    let (platform, logs) = run_one_domain(
        &t,
        &[
            ("RECONCILE_MAX_HOPS", "1"),
            ("MAX_REQUESTS_PER_SECOND", "20"),
        ],
        |_| {},
    )
    .await;
    let answers: Vec<_> = platform.invocations().iter().map(|i| i.answered).collect();
    assert_eq!(answers, [Some(200), Some(502)]);
    let limit = log_lines(&logs, "reconcile hop limit reached");
    assert_eq!(limit.len(), 1);
    assert!(limit[0]["reason"]
        .as_str()
        .unwrap()
        .contains("RECONCILE_MAX_HOPS (1)"));

    // GetFunction names an invoke endpoint that is not OCI's: nothing is sent there.
    let t = tenancy(1, 3_000, format!("ST${}", test_rpst())).await;
    let (platform, logs) = run_one_domain(&t, &[], |p| {
        p.set_invoke_endpoint("https://functions.evil.example")
    })
    .await;
    assert_eq!(platform.invocations()[0].answered, Some(502));
    let failed = log_lines(&logs, "reconcile hand-off failed");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not an OCI Functions invoke endpoint"),
        "{}",
        failed[0]
    );

    // A deadline too short for any work after the margins: refused before anything is read.
    let t = tenancy(1, 100, format!("ST${}", test_rpst())).await;
    let platform = self::platform().await;
    let c = container(&t.plane, &platform, &[]);
    let logs = vec![c.stderr.clone()];
    platform.serve_with(vec![c], Duration::from_secs(3));
    platform.invoke(&json!({"reconcile": {"domain": domain_ocid(0)}}));
    assert!(
        platform
            .wait_idle(Duration::from_millis(300), Duration::from_secs(30))
            .await
    );
    assert_eq!(platform.invocations()[0].answered, Some(502));
    assert_eq!(log_lines(&logs, "reconcile deadline too short").len(), 1);
    assert_eq!(t.domains[0].requests().len(), 0);
}

/// The operator's `reconcile --all-domains`: every ACTIVE domain, one after another, no hand-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reconciles_every_active_domain_one_after_another() {
    let t = tenancy(2, 700, crate::support::fixtures::api_key_id()).await;
    let home = crate::cli::operator_home();
    let out = crate::cli::run(
        home.path(),
        &["reconcile", "--all-domains", "--output", "json"],
        &[
            ("IDENTITY_CONTROL_PLANE_URL", &t.plane.base_url()),
            ("MAX_REQUESTS_PER_SECOND", "0"),
        ],
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("2 identity domains") || stderr.contains("3 identity domains"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("Retired (ocid1.domain.oc1..aaaadomain99): skipped: lifecycleState INACTIVE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Domain 1 (ocid1.domain.oc1..aaaadomain1): reconcile: scanned 700 of 700"),
        "{stderr}"
    );
    for (i, idd) in t.domains.iter().enumerate() {
        assert_eq!(
            puts_per_user(idd).len() as u64,
            t.needs_write[i],
            "domain {i}"
        );
    }
    assert_eq!(t.inactive.requests().len(), 0);
    // Below the tenancy the tree is walked a level at a time: PROD holds domain 1 and the
    // inactive one, TEAM none.
    let out = crate::cli::run(
        home.path(),
        &[
            "reconcile",
            "--all-domains",
            "--compartment",
            PROD,
            "--dry-run",
        ],
        &[("IDENTITY_CONTROL_PLANE_URL", &t.plane.base_url())],
        None,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("2 identity domains in 2 compartments"),
        "{stderr}"
    );
    // A compartment that is not an OCID is a usage error.
    let out = crate::cli::run(
        home.path(),
        &["reconcile", "--all-domains", "--compartment", "../x"],
        &[("IDENTITY_CONTROL_PLANE_URL", &t.plane.base_url())],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--compartment: compartment: expected"));
}

/// `DOMAINS`, when set, still limits which domains act: the fan-out starts only those it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_limits_which_domains_the_tenancy_run_starts() {
    let t = tenancy(2, 300, format!("ST${}", test_rpst())).await;
    let platform = platform().await;
    let only = domain_ocid(1);
    let c = container(
        &t.plane,
        &platform,
        &[("DOMAINS", only.as_str()), ("MAX_REQUESTS_PER_SECOND", "0")],
    );
    let logs = vec![c.stderr.clone()];
    platform.serve_with(vec![c], Duration::from_secs(20));
    platform.invoke(&json!({"reconcile": {"domains": "all"}}));
    assert!(
        platform
            .wait_idle(Duration::from_millis(300), Duration::from_secs(60))
            .await
    );
    let answers: Vec<_> = platform.invocations().iter().map(|i| i.answered).collect();
    assert_eq!(answers, [Some(200), Some(200)], "the fan-out and domain 1");
    let lines = log_lines(&logs, "tenancy reconcile: domain");
    let skipped: Vec<&str> = lines
        .iter()
        .filter(|l| l["outcome"] == "skipped")
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(skipped.contains(&"not listed in DOMAINS"), "{lines:?}");
    assert_eq!(
        t.domains[0].requests().len(),
        0,
        "domain 0 is outside DOMAINS"
    );
    assert_eq!(puts_per_user(&t.domains[1]).len() as u64, t.needs_write[1]);
    assert_eq!(t.inactive.requests().len(), 0);
}
