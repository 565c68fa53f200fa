//! The policy end to end: the real binary (function and CLI) deciding each user's profile from
//! rules, group memberships, user-extension flags, domains and defined tags served by the
//! verifying test domain.

use std::collections::HashMap;
use std::process::Output;

use serde_json::{json, Value};

use crate::enforcement::{actor_record, function_for, invoke, server, ALL_ON, DOMAIN_A, DOMAIN_B};
use crate::platform_harness::{FnProcess, InitFailure, Launch, FN_BINARY};
use crate::support::fixtures::{self, api_key_id};
use crate::support::identity_domain_server::{
    hex_id, test_key_pem, IdentityDomainServer, TAGS_URN,
};

const ALL_OFF: &str = "api_keys=off,auth_tokens=off,console_password=off,customer_secret_keys=off,\
                       db_credentials=off,oauth2_client_credentials=off,smtp_credentials=off";

/// Every matcher, two overlapping group rules and an exempt rule; tags under `Security`.
fn policy() -> String {
    format!(
        r#"
default = "{ALL_OFF}"

[[rule]]
name = "developers"
groups = ["OCI Developers"]
capabilities = "api_keys=on,auth_tokens=on"

[[rule]]
name = "mailers"
groups = ["ocid1.group.oc1..g-mail"]
capabilities = "smtp_credentials=on,auth_tokens=off"

[[rule]]
name = "db-by-id"
groups = ["g-db"]
capabilities = "db_credentials=on"

[[rule]]
name = "break-glass"
users = ["BreakGlass-*"]
exempt = true

[[rule]]
name = "service"
service_user = true
capabilities = "oauth2_client_credentials=on"

[[rule]]
name = "local"
federated = false
capabilities = "console_password=on"

[[rule]]
name = "domain-b"
domains = ["{DOMAIN_B}"]
capabilities = "customer_secret_keys=on"
"#
    )
}

/// Capabilities in the server's order: api_keys, auth_tokens, console_password,
/// customer_secret_keys, db_credentials, oauth2, smtp, console.
fn caps(on: &[usize]) -> [Option<bool>; 8] {
    let mut c = [Some(false); 8];
    for i in on {
        c[*i] = Some(true);
    }
    c[7] = Some(true); // console is not managed: JIT users keep it on
    c
}

struct Case {
    n: u64,
    name: &'static str,
    domain: &'static str,
    policy: &'static [&'static str],
    outcome: &'static str,
    after: [Option<bool>; 8],
}

/// Seeds the users of [`cases`] and returns one record per user.
fn seed(idd: &IdentityDomainServer) -> (Vec<Case>, Vec<Value>) {
    let cases = vec![
        Case {
            n: 1,
            name: "dev@example.com",
            domain: DOMAIN_A,
            policy: &["developers"],
            outcome: "applied",
            after: caps(&[0, 1]),
        },
        Case {
            n: 2,
            name: "dev-mail@example.com",
            domain: DOMAIN_A,
            policy: &["developers", "mailers"],
            outcome: "applied",
            after: caps(&[0, 6]),
        },
        Case {
            n: 3,
            name: "breakglass-ops@example.com",
            domain: DOMAIN_A,
            policy: &["break-glass"],
            outcome: "unchanged",
            after: ALL_ON,
        },
        Case {
            n: 4,
            name: "svc@example.com",
            domain: DOMAIN_A,
            policy: &["service"],
            outcome: "applied",
            after: caps(&[5]),
        },
        Case {
            n: 5,
            name: "local@example.com",
            domain: DOMAIN_A,
            policy: &["local"],
            outcome: "applied",
            after: caps(&[2]),
        },
        Case {
            n: 6,
            name: "b@example.com",
            domain: DOMAIN_B,
            policy: &["domain-b"],
            outcome: "applied",
            after: caps(&[3]),
        },
        Case {
            n: 7,
            name: "tagged@example.com",
            domain: DOMAIN_A,
            policy: &[
                "developers",
                "tag:Security.api_keys",
                "tag:Security.smtp_credentials",
            ],
            outcome: "applied",
            after: caps(&[1, 6]),
        },
        Case {
            n: 8,
            name: "tag-exempt@example.com",
            domain: DOMAIN_A,
            policy: &["tag:Security.exempt"],
            outcome: "unchanged",
            after: ALL_ON,
        },
        Case {
            n: 9,
            name: "nobody@example.com",
            domain: DOMAIN_A,
            policy: &["default"],
            outcome: "applied",
            after: caps(&[]),
        },
        Case {
            n: 10,
            name: "db@example.com",
            domain: DOMAIN_A,
            policy: &["db-by-id"],
            outcome: "applied",
            after: caps(&[4]),
        },
    ];
    for c in &cases {
        // Federated unless the case is about local accounts.
        idd.add_user(&hex_id(c.n), c.name, ALL_ON, "samljit", c.n != 5);
    }
    let id = |n| hex_id(n);
    idd.add_group(&id(1), "oci developers", "g-dev", false);
    idd.add_group(&id(2), "OCI Developers", "g-dev", true); // through a nested group
    idd.add_group(&id(2), "Mail Senders", "g-mail", false);
    idd.add_group(&id(3), "OCI Developers", "g-dev", false);
    idd.set_service_user(&id(4), true);
    idd.add_group(&id(7), "OCI Developers", "g-dev", false);
    idd.add_defined_tag(&id(7), "Security", "api_keys", "No");
    idd.add_defined_tag(&id(7), "security", "smtp_credentials", "yes");
    idd.add_defined_tag(&id(7), "Finance", "auth_tokens", "no"); // another namespace: not ours
    idd.add_group(&id(8), "OCI Developers", "g-dev", false);
    idd.add_defined_tag(&id(8), "Security", "exempt", "Yes");
    idd.add_group(&id(10), "Databases", "g-db", true);
    let records = seed_records(&cases);
    (cases, records)
}

fn check(idd: &IdentityDomainServer, cases: &[Case], results: &HashMap<String, Value>) {
    for c in cases {
        let r = &results[&hex_id(c.n)];
        assert_eq!(r["outcome"], c.outcome, "{}: {r}", c.name);
        assert_eq!(r["policy"], json!(c.policy), "{}: {r}", c.name);
        assert_eq!(
            idd.user_caps(&hex_id(c.n)),
            Some(c.after),
            "{}: {r}",
            c.name
        );
    }
}

fn by_user(results: &Value) -> HashMap<String, Value> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["userId"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

/// The `attributes` each request asked for.
fn attributes_asked(idd: &IdentityDomainServer) -> Vec<String> {
    idd.requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| {
            let query = r.target.split_once('?').map_or("", |(_, q)| q);
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "attributes")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matcher_overlay_exempt_and_tags_through_the_function() {
    let idd = server().await;
    let (cases, records) = seed(&idd);
    let policy = policy();
    let f = function_for(
        &[(DOMAIN_A, &idd), (DOMAIN_B, &idd)],
        &[("POLICY", policy.as_str()), ("TAG_NAMESPACE", "Security")],
    );
    let (status, report) = invoke(&f, &Value::Array(records)).await;
    assert_eq!(status, 200, "{report}");
    let results = by_user(&report["results"]);
    check(&idd, &cases, &results);
    assert_eq!(
        results[&hex_id(3)]["reason"],
        "exempt by rule break-glass",
        "{report}"
    );
    assert_eq!(
        results[&hex_id(8)]["reason"],
        "exempt by tag Security.exempt"
    );
    // Exempt users are never written.
    for n in [3, 8] {
        assert_eq!(idd.count("PUT", &hex_id(n)), 0, "user {n}");
    }
    // Every read named the policy's facts.
    for asked in attributes_asked(&idd) {
        for needed in [
            "groups",
            "isFederatedUser",
            "serviceUser",
            &format!("{TAGS_URN}:definedTags"),
        ] {
            assert!(
                asked.split(',').any(|a| a.ends_with(needed)),
                "{needed} in {asked}"
            );
        }
    }
    // The same batch again: every user now matches its decided profile, nothing is written.
    idd.clear_requests();
    let records = seed_records(&cases);
    let (status, report) = invoke(&f, &Value::Array(records)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unchanged"], cases.len(), "{report}");
    assert_eq!(idd.count("PUT", "/"), 0);
}

fn seed_records(cases: &[Case]) -> Vec<Value> {
    cases
        .iter()
        .map(|c| actor_record(c.domain, &hex_id(c.n), c.name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ask_for_groups_and_tags_only_when_the_policy_uses_them() {
    let idd = server().await;
    idd.add_user(&hex_id(1), "dev@example.com", ALL_ON, "samljit", true);
    idd.add_group(&hex_id(1), "OCI Developers", "g-dev", false);
    idd.add_defined_tag(&hex_id(1), "Security", "api_keys", "no");
    let record = actor_record(DOMAIN_A, &hex_id(1), "dev@example.com");

    // The baked-in policy: no rule, no tag namespace, so neither is asked for (and the server,
    // like the service, returns neither).
    let f = function_for(&[(DOMAIN_A, &idd)], &[]);
    let (status, report) = invoke(&f, &record).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["results"][0]["policy"],
        json!(["default"]),
        "{report}"
    );
    let asked = attributes_asked(&idd);
    assert_eq!(asked.len(), 1);
    assert!(
        !asked[0].contains("groups") && !asked[0].contains("OCITags"),
        "{}",
        asked[0]
    );
    drop(f);

    // Groups only, as a one-line POLICY with the default from CAPABILITIES.
    idd.clear_requests();
    let groups_only = r#"rule = [{name = "developers", groups = ["oci developers"], capabilities = "api_keys=on"}]"#;
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[("POLICY", groups_only), ("CAPABILITIES", ALL_OFF)],
    );
    let (status, report) = invoke(&f, &record).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["results"][0]["policy"],
        json!(["developers"]),
        "{report}"
    );
    let asked = attributes_asked(&idd);
    assert!(asked[0].split(',').any(|a| a == "groups"), "{}", asked[0]);
    assert!(!asked[0].contains("OCITags"), "{}", asked[0]);
    let mut expected = [Some(false); 8];
    expected[0] = Some(true);
    expected[7] = Some(true);
    assert_eq!(idd.user_caps(&hex_id(1)), Some(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_applies_the_same_policy_from_the_listing() {
    let idd = server().await;
    let (cases, _) = seed(&idd);
    let policy = policy();
    // Both domain names reach the one server; the reconcile request names DOMAIN_A, so the
    // domain-b rule cannot match there: that user gets the default instead.
    let f = function_for(
        &[(DOMAIN_A, &idd)],
        &[("POLICY", policy.as_str()), ("TAG_NAMESPACE", "Security")],
    );
    let (status, report) = invoke(&f, &json!({"reconcile": {"domain": DOMAIN_A}})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["scanned"], cases.len(), "{report}");
    assert_eq!(report["unchanged"], 2, "the two exempt users: {report}");
    // Only the list was read: no per-user GET, and the list asked for the policy's facts.
    assert_eq!(idd.count("GET", "/admin/v1/Users/"), 0);
    let asked = attributes_asked(&idd);
    assert!(asked
        .iter()
        .all(|a| a.contains("groups") && a.contains("OCITags:definedTags")));
    let listed = by_user(&report["users"]);
    for c in &cases {
        if c.n == 6 {
            assert_eq!(listed[&hex_id(6)]["policy"], json!(["default"]), "{report}");
            assert_eq!(idd.user_caps(&hex_id(6)), Some(caps(&[])));
            continue;
        }
        assert_eq!(
            idd.user_caps(&hex_id(c.n)),
            Some(c.after),
            "{}: {report}",
            c.name
        );
        if c.outcome == "applied" {
            assert_eq!(
                listed[&hex_id(c.n)]["policy"],
                json!(c.policy),
                "{}: {report}",
                c.name
            );
        }
    }

    // Through the function and through a batch, the decisions agree: a batch now finds everyone
    // compliant (the DOMAIN_A user of case 6 included, as the default).
    idd.clear_requests();
    let records: Vec<Value> = cases
        .iter()
        .map(|c| actor_record(DOMAIN_A, &hex_id(c.n), c.name))
        .collect();
    let (status, report) = invoke(&f, &Value::Array(records)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unchanged"], cases.len(), "{report}");
}

fn refused(launch: Launch) -> String {
    match FnProcess::start(&launch) {
        Ok(_) => panic!("the function started with a bad policy"),
        Err(InitFailure::Exited { status, stderr }) => {
            assert_eq!(status.code(), Some(2), "{stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "one clear line, got: {stderr}");
            lines[0].to_owned()
        }
        Err(InitFailure::Timeout) => panic!("neither ready nor exited"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_stops_the_function_at_start_naming_rule_and_field() {
    let bad = format!(
        "default = \"{ALL_OFF}\"\n[[rule]]\nname = \"developers\"\ngroups = [\"OCI Developers\"]\ncapabilities = \"api_keys=on,smtp=on\"\n"
    );
    let line = refused(Launch::function().env("POLICY", bad));
    assert!(
        line.contains(
            "POLICY: rule \"developers\": capabilities: entry \"smtp=on\": unknown capability"
        ),
        "{line}"
    );
    let line = refused(Launch::function().env(
        "POLICY",
        "default = \"api_keys=on\"\n[[rule]]\nname = \"x\"\ngrups = [\"a\"]\nexempt = true\n",
    ));
    assert!(
        line.contains("POLICY: rule \"x\": grups: unknown field `grups`"),
        "{line}"
    );
    let line = refused(Launch::function().env(
        "POLICY",
        "default = \"api_keys=on\"\n[[rule]]\nname = \"x\"\nusers = [\"a\"]\nexempt = true\n[[rule]]\nname = \"x\"\nusers = [\"b\"]\nexempt = true\n",
    ));
    assert!(
        line.contains("rule \"x\": name: rule 1 already uses this name"),
        "{line}"
    );
    let line = refused(Launch::function().env("TAG_NAMESPACE", "Sec urity"));
    assert!(line.contains("TAG_NAMESPACE: "), "{line}");
}

async fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(FN_BINARY);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BULK", "off")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

/// Runs the binary and returns what it printed as JSON; the test fails unless it exited 0.
async fn cli_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = cli(args, env).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}"))
}

#[tokio::test]
async fn plan_with_a_policy_file_shows_the_rules_that_could_apply_and_the_facts_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy()).unwrap();
    let batch = dir.path().join("batch.json");
    let records = json!([
        actor_record(DOMAIN_A, &hex_id(1), "dev@example.com"),
        actor_record(DOMAIN_B, &hex_id(2), "breakglass-1@example.com"),
        actor_record(DOMAIN_A, &hex_id(1), "dev@example.com"),
    ]);
    std::fs::write(&batch, records.to_string()).unwrap();
    let plan = cli_json(
        &[
            "plan",
            batch.to_str().unwrap(),
            "--policy",
            policy_path.to_str().unwrap(),
        ],
        &[("TAG_NAMESPACE", "Security")],
    )
    .await;
    assert_eq!(
        plan["policy"]["rules"].as_array().unwrap().len(),
        7,
        "{plan}"
    );
    assert_eq!(plan["policy"]["tagNamespace"], "Security");
    assert_eq!(
        (
            plan["predicted"]["appliedOrUnchanged"].as_u64(),
            plan["predicted"]["unchanged"].as_u64()
        ),
        (Some(2), Some(1)),
        "two users to enforce (applied or unchanged) and one duplicate (unchanged): {plan}"
    );
    let first = &plan["results"][0]["policy"];
    let rules: Vec<&str> = first["couldApply"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rule"].as_str().unwrap())
        .collect();
    // break-glass cannot apply to dev@ and domain-b not to a DOMAIN_A record.
    assert_eq!(
        rules,
        ["developers", "mailers", "db-by-id", "service", "local"],
        "{plan}"
    );
    assert_eq!(
        first["reads"],
        json!(["groups", "isFederatedUser", "serviceUser", "definedTags"]),
        "{plan}"
    );
    assert!(
        first.get("profile").is_none() && first["profileSoFar"] == ALL_OFF,
        "{plan}"
    );
    let second = &plan["results"][1]["policy"];
    let rules: Vec<&str> = second["couldApply"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"break-glass") && rules.contains(&"domain-b"),
        "{plan}"
    );
    assert_eq!(second["couldApply"][3]["exempt"], true, "{plan}");
    let get = plan["results"][0]["steps"][0]["url"].as_str().unwrap();
    assert!(
        get.contains("groups") && get.contains("OCITags%3AdefinedTags"),
        "{get}"
    );

    // Without tags or fact-reading rules, plan decides offline.
    let simple = dir.path().join("simple.toml");
    std::fs::write(
        &simple,
        format!("default = \"{ALL_OFF}\"\n[[rule]]\nname = \"break-glass\"\nusers = [\"breakglass-*\"]\nexempt = true\n"),
    )
    .unwrap();
    let plan = cli_json(
        &[
            "plan",
            batch.to_str().unwrap(),
            "--policy",
            simple.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(
        plan["results"][0]["policy"]["decidedBy"],
        json!(["default"]),
        "{plan}"
    );
    assert_eq!(plan["results"][0]["policy"]["profile"], ALL_OFF);
    assert_eq!(
        plan["results"][1]["policy"]["exempt"], "exempt by rule break-glass",
        "{plan}"
    );
    assert_eq!(
        plan["results"][1]["steps"][1]["when"],
        "never: exempt by rule break-glass"
    );

    // A bad policy file: exit 2, one line naming the file, rule and field.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "default = \"api_keys=on\"\n[[rule]]\nname = \"dev\"\ngroups = []\ncapabilities = \"api_keys=on\"\n").unwrap();
    let out = cli(
        &[
            "plan",
            batch.to_str().unwrap(),
            "--policy",
            bad.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--policy: ")
            && stderr.contains("bad.toml: rule \"dev\": groups: lists nothing"),
        "{stderr}"
    );
    // The shipped examples all plan cleanly.
    for example in [
        "least-privilege",
        "by-group",
        "break-glass-and-service-users",
    ] {
        let path = format!(
            "{}/examples/policies/{example}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = cli(&["plan", batch.to_str().unwrap(), "--policy", &path], &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_reconcile_take_a_policy_file() {
    let idd = IdentityDomainServer::start(&test_key_pem(), vec![api_key_id()]).await;
    let (cases, records) = seed(&idd);
    let home = fixtures::operator_home("");
    let policy_path = home.path().join("policy.toml");
    std::fs::write(&policy_path, policy()).unwrap();
    let batch = home.path().join("batch.json");
    std::fs::write(&batch, Value::Array(records).to_string()).unwrap();
    let domains = format!("{DOMAIN_A}={url},{DOMAIN_B}={url}", url = idd.base_url());
    let env = [
        ("HOME", home.path().to_str().unwrap()),
        ("DOMAINS", domains.as_str()),
        ("TAG_NAMESPACE", "Security"),
        ("MAX_REQUESTS_PER_SECOND", "0"),
    ];
    let policy_arg = policy_path.to_str().unwrap();
    let report = cli_json(
        &[
            "apply",
            batch.to_str().unwrap(),
            "--policy",
            policy_arg,
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    check(&idd, &cases, &by_user(&report["results"]));

    // Reconciling DOMAIN_A with the same file: every decision agrees with the batch's except the
    // user whose record came from DOMAIN_B (the domain-b rule does not hold here).
    let report = cli_json(
        &[
            "reconcile",
            "--domain",
            DOMAIN_A,
            "--policy",
            policy_arg,
            "--output",
            "json",
        ],
        &env,
    )
    .await;
    assert_eq!(report["scanned"], cases.len(), "{report}");
    assert_eq!(report["applied"], 1, "{report}");
    assert_eq!(report["users"][0]["userId"], hex_id(6), "{report}");
    assert_eq!(report["users"][0]["policy"], json!(["default"]), "{report}");
}
