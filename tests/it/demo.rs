//! The README's first command, `cargo run --example demo`, runs `support::demo`: these tests run the
//! same code against the real binary so the demo (and the output the README shows) cannot rot.

use crate::platform_harness::FN_BINARY;
use crate::support::demo::{self, DemoRun, Options, SEED, SEED_CREDENTIALS};
use crate::support::fixtures::PROFILE_APPLIED;

async fn run(dry_run: bool) -> DemoRun {
    run_with(dry_run, &[]).await
}

async fn run_with(dry_run: bool, config: &[(&str, &str)]) -> DemoRun {
    demo::run(&Options {
        binary: FN_BINARY.into(),
        dry_run,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .await
    .unwrap_or_else(|e| panic!("demo failed: {e}"))
}

fn outcomes(run: &DemoRun) -> Vec<&str> {
    run.results()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or("?"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_enforces_the_profile_on_the_sample_batch() {
    let run = run(false).await;
    assert_eq!(run.status, 200, "{}", run.log);
    assert_eq!(
        outcomes(&run),
        [
            "applied",
            "applied",
            "unchanged",
            "rejected",
            "ignored",
            "unchanged"
        ],
        "one record per outcome class the batch can reach without a fault"
    );
    // The two JIT users now match the profile; the compliant one was read and left alone.
    for user in &run.users {
        assert_eq!(user.after, PROFILE_APPLIED, "{}", user.user_name);
    }
    assert_ne!(run.users[0].before, run.users[0].after);
    assert_eq!(run.users[2].before, run.users[2].after);
    // BULK=auto (the default): one search reads the three users, one Bulk request writes both.
    let paths: Vec<&str> = run.requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        paths,
        ["/admin/v1/Users/.search", "/admin/v1/Bulk"],
        "nothing for the rejected record"
    );
    let text = demo::render(&run);
    assert!(text.contains("(one search for 3 users)"), "{text}");
    assert!(text.contains("(2 operations)"), "{text}");
    assert_eq!(
        text.matches("PUT /UserCapabilitiesChanger/").count(),
        2,
        "{text}"
    );
    assert!(run
        .requests
        .iter()
        .all(|r| r.auth_ok && r.status == Some(200)));

    assert!(
        text.contains("console_password           on → off              on → off            off"),
        "{text}"
    );
    assert!(
        text.contains(
            "outcome                    applied               applied             unchanged"
        ),
        "{text}"
    );
    assert!(text.contains("signature valid") && !text.contains("REFUSED"));
    // The answer is printed as sent, one result per line, and still parses.
    let answer = text
        .split("The function's answer:\n")
        .nth(1)
        .expect("answer section");
    let parsed: serde_json::Value =
        serde_json::from_str(answer).expect("the printed answer is JSON");
    assert_eq!(Some(&parsed), run.report.as_ref());
    assert_eq!(answer.lines().filter(|l| l.starts_with("  {\"")).count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_dry_run_reports_without_writing() {
    let run = run(true).await;
    assert_eq!(run.status, 200, "{}", run.log);
    assert_eq!(
        run.report.as_ref().map(|r| r["dryRun"].clone()),
        Some(true.into())
    );
    assert_eq!(
        outcomes(&run),
        [
            "applied",
            "applied",
            // a duplicate of record 0, which would be written: nothing was, so not `unchanged`
            "applied",
            "rejected",
            "ignored",
            "unchanged"
        ]
    );
    // DRY_RUN reads (one search) and sends no Bulk request.
    assert!(run.requests.iter().all(|r| r.target.ends_with("/.search")));
    assert_eq!(run.requests.len(), 1);
    for (user, (_, _, seeded)) in run.users.iter().zip(SEED) {
        assert_eq!(
            user.after, seeded,
            "{} must not change in a dry run",
            user.user_name
        );
    }
    let text = demo::render(&run);
    assert!(text.contains("DRY_RUN=true"), "{text}");
    assert!(
        text.contains("console_password           on (→ off)            on (→ off)          off"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_a_lingering_credential_counted_then_revoked() {
    let [(ana, _, api_key), (li, _, secret_key)] = SEED_CREDENTIALS;
    let report = run(false).await;
    assert_eq!(
        report.acting(li).map(|r| r["lingering"].clone()),
        Some(serde_json::json!({"customerSecretKeys": 1}))
    );
    assert!(report
        .users
        .iter()
        .all(|u| u.credentials_before == u.credentials_after));
    let text = demo::render(&report);
    assert!(
        text.contains(&format!(
            "{secret_key}  lingering, kept (CREDENTIALS=report)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{api_key}  kept (its capability stays on)")),
        "{text}"
    );

    let revoke = run_with(false, &[("CREDENTIALS", "revoke")]).await;
    assert_eq!(revoke.status, 200, "{}", revoke.log);
    let li_row = revoke.users.iter().find(|u| u.id == li).expect("li");
    assert!(
        li_row.credentials_after.is_empty(),
        "the lingering key is deleted"
    );
    let ana_row = revoke.users.iter().find(|u| u.id == ana).expect("ana");
    assert_eq!(
        ana_row.credentials_after, ana_row.credentials_before,
        "the API key stays"
    );
    let deletes: Vec<_> = revoke
        .requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0]
        .target
        .ends_with(&format!("/admin/v1/CustomerSecretKeys/{secret_key}")));
    let text = demo::render(&revoke);
    assert!(
        text.contains(&format!("{secret_key}  lingering → revoked (deleted)")),
        "{text}"
    );
}

/// The README pastes the demo's output: every line of it (but the per-run request ids) must be
/// what the demo prints today.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_shows_the_demo_output() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let run = run(false).await;
    let mask = |s: &str| {
        s.lines()
            .map(|l| {
                // request ids differ on every run
                let mut out = String::new();
                let mut rest = l;
                while let Some(at) = rest.find("\"ecid-") {
                    out.push_str(&rest[..at]);
                    let tail = &rest[at + 1..];
                    let end = tail.find('"').map_or(tail.len(), |e| e + 1);
                    out.push_str("\"ecid\"");
                    rest = &tail[end..];
                }
                out.push_str(rest);
                out
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let printed = mask(&demo::render(&run));
    let shown = mask(&readme);
    assert!(
        shown.contains(printed.trim_end()),
        "README.md must show the demo's output as printed now (paste the output of \
         `cargo run -q --example demo 2>/dev/null` into its first code block):\n{printed}"
    );
}
