//! The README's first command (`cargo run --example demo`), kept here so a test runs the same code.
//!
//! It starts the local identity domain (every request's OCI signature checked) seeded with the users
//! the sample batch names, starts the real function binary the way the Fn platform does (a fresh
//! socket directory, an environment built from scratch, readiness = `lsnr.sock` appearing), posts
//! `examples/payloads/sch-batch.json` over the Unix socket with the platform's headers, and collects
//! each user's capabilities before and after, the function's answer and its log.
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::fixtures::{deadline_in, ALL_ON, DOMAIN_A, PROFILE_APPLIED};
use super::identity_domain_server::{
    test_key_pem, test_private_key_pem, test_rpst, IdentityDomainServer, RecordedRequest,
    ATTRIBUTES,
};

/// The batch the demo posts: the README's sample Service Connector batch.
pub const SAMPLE_BATCH: &str = include_str!("../../../examples/payloads/sch-batch.json");

/// Capability names in the order of the test server's attribute arrays.
pub const CAPABILITY_NAMES: [&str; 8] = [
    "api_keys",
    "auth_tokens",
    "console_password",
    "customer_secret_keys",
    "db_credentials",
    "oauth2_client_credentials",
    "smtp_credentials",
    "console",
];

/// The users the sample batch names, as the local domain holds them before the call: two arrived
/// through JIT with every capability on, one already matches the built-in profile.
pub const SEED: [(&str, &str, [Option<bool>; 8]); 3] = [
    (
        "5e0a1c2b3d4e4f60718293a4b5c6d7e8",
        "ana.lima@example.com",
        ALL_ON,
    ),
    (
        "9b8a7c6d5e4f40312a1b2c3d4e5f6071",
        "li.wei@example.com",
        ALL_ON,
    ),
    (
        "c4d5e6f708192a3b4c5d6e7f80910a1b",
        "noor.haddad@example.com",
        PROFILE_APPLIED,
    ),
];

/// Credentials the sample users hold before the call, `(user id, userCredentials attribute, id)`:
/// Ana's API key (API keys stay on in the built-in profile, so it is kept whatever `CREDENTIALS`
/// says) and a customer secret key Li made in the seconds between the JIT login and the function's
/// write (customer secret keys go off, so it lingers: counted under `report`, deleted under
/// `revoke`).
pub const SEED_CREDENTIALS: [(&str, &str, &str); 2] = [
    (
        "5e0a1c2b3d4e4f60718293a4b5c6d7e8",
        "apiKeys",
        "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
    ),
    (
        "9b8a7c6d5e4f40312a1b2c3d4e5f6071",
        "customerSecretKeys",
        "7f6e5d4c3b2a41908f7e6d5c4b3a2918",
    ),
];

/// How long the function may take to create its socket (Fn allows 5 s).
const READY_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Options {
    /// The function binary (`oci-user-capabilities`), started as `serve`.
    pub binary: PathBuf,
    /// Starts the function with `DRY_RUN=true`.
    pub dry_run: bool,
    /// More function configuration (`KEY`, `VALUE`), set after the demo's own.
    pub config: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub user_name: String,
    pub before: [Option<bool>; 8],
    pub after: [Option<bool>; 8],
    /// `(userCredentials attribute, id)` before and after the call.
    pub credentials_before: Vec<(String, String)>,
    pub credentials_after: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct DemoRun {
    pub dry_run: bool,
    /// The `CREDENTIALS` the function ran with (`report` unless the options set it).
    pub credentials_mode: String,
    pub users: Vec<UserRow>,
    /// The status the function answered (200 or 502).
    pub status: u16,
    /// The function's answer (its report) when the status is 200.
    pub report: Option<Value>,
    /// The answer's raw body.
    pub body: String,
    /// What the identity domain received, in arrival order.
    pub requests: Vec<RecordedRequest>,
    /// The function's stdout and stderr, interleaved.
    pub log: String,
    /// Socket ready after the spawn.
    pub ready_after: Duration,
    /// The call, from sending the request to the end of the answer.
    pub call: Duration,
}

impl DemoRun {
    /// The result of the record that acted on this user (not a duplicate's).
    pub fn acting(&self, user_id: &str) -> Option<&Value> {
        self.results().iter().find(|r| {
            r["userId"] == user_id
                && !r["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("duplicate of record"))
        })
    }

    pub fn outcome_of(&self, user_id: &str) -> Option<&str> {
        self.acting(user_id).and_then(|r| r["outcome"].as_str())
    }

    /// Per capability, the value the acting record's `changed` gives this user (written, or in a
    /// dry run what would have been).
    pub fn planned_change(&self, user_id: &str) -> [Option<bool>; 8] {
        let changed = self.acting(user_id).map(|r| &r["changed"]);
        ATTRIBUTES.map(|a| changed.and_then(|c| c[a][1].as_bool()))
    }

    pub fn results(&self) -> &[Value] {
        self.report
            .as_ref()
            .and_then(|r| r["results"].as_array())
            .map_or(&[], Vec::as_slice)
    }
}

/// Runs the demo once: starts the domain and the function, posts the batch, stops both.
pub async fn run(options: &Options) -> Result<DemoRun, String> {
    let idd =
        IdentityDomainServer::start(&test_key_pem(), vec![format!("ST${}", test_rpst())]).await;
    for (id, name, caps) in SEED {
        idd.add_user(id, name, caps, "samljit", true);
    }
    for (user, kind, id) in SEED_CREDENTIALS {
        idd.add_credential(user, kind, id);
    }
    let before: Vec<_> = SEED.iter().map(|(id, ..)| idd.user_caps(id)).collect();
    let credentials_before: Vec<_> = SEED.iter().map(|(id, ..)| idd.credentials(id)).collect();

    let dir = tempfile::Builder::new()
        .prefix("fn-demo")
        .tempdir_in("/tmp")
        .map_err(|e| format!("cannot create the socket directory: {e}"))?;
    let socket = dir.path().join("lsnr.sock");
    let log_path = dir.path().join("function.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
    let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;

    let spawned = Instant::now();
    let mut child = Command::new(&options.binary)
        .arg("serve")
        .env_clear()
        .envs(function_environment(&socket, &idd, options.dry_run))
        .envs(options.config.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", options.binary.display()))?;
    let outcome = async {
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the function exited before listening ({status})"));
            }
            if spawned.elapsed() > READY_LIMIT {
                return Err("the function did not listen within 5 s".to_string());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let ready_after = spawned.elapsed();
        let started = Instant::now();
        let (status, body) = post_batch(&socket).await?;
        Ok((ready_after, started.elapsed(), status, body))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (ready_after, call, status, body) = outcome.map_err(|e| format!("{e}\n{log}"))?;

    let users = SEED
        .iter()
        .zip(before)
        .zip(credentials_before)
        .map(|(((id, name, _), before), credentials_before)| UserRow {
            id: id.to_string(),
            user_name: name.to_string(),
            before: before.unwrap_or_default(),
            after: idd.user_caps(id).unwrap_or_default(),
            credentials_before,
            credentials_after: idd.credentials(id),
        })
        .collect();
    let credentials_mode = options
        .config
        .iter()
        .rev()
        .find(|(k, _)| k == "CREDENTIALS")
        .map_or("report".to_string(), |(_, v)| v.trim().to_ascii_lowercase());
    let report = (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten();
    Ok(DemoRun {
        dry_run: options.dry_run,
        credentials_mode,
        users,
        status,
        report,
        body,
        requests: idd.requests(),
        log,
        ready_after,
        call,
    })
}

/// What the Fn agent gives the container: platform variables, the resource-principal variables
/// (the throwaway test key and token, passed as content), and the function's configuration.
fn function_environment(
    socket: &Path,
    idd: &IdentityDomainServer,
    dry_run: bool,
) -> Vec<(String, String)> {
    [
        ("FN_FORMAT", "http-stream".to_string()),
        ("FN_LISTENER", format!("unix:{}", socket.display())),
        ("FN_APP_ID", "ocid1.fnapp.oc1..demo".to_string()),
        ("FN_FN_ID", "ocid1.fnfunc.oc1..demo".to_string()),
        ("FN_APP_NAME", "demo".to_string()),
        ("FN_FN_NAME", "user-capabilities".to_string()),
        ("FN_MEMORY", "256".to_string()),
        ("FN_TYPE", "sync".to_string()),
        ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2".to_string()),
        ("OCI_RESOURCE_PRINCIPAL_REGION", "us-ashburn-1".to_string()),
        ("OCI_RESOURCE_PRINCIPAL_RPST", test_rpst()),
        ("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", test_private_key_pem()),
        // One local server plays every domain: a loopback URL without `{domain}`.
        ("IDENTITY_DOMAIN_URL_TEMPLATE", idd.base_url()),
        ("DRY_RUN", dry_run.to_string()),
        ("LOG_FORMAT", "text".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `POST /call` over the socket as the agent sends it: HTTP/1.1, chunked body, Fn headers.
async fn post_batch(socket: &Path) -> Result<(u16, String), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(connection);
    let chunks = [Ok::<_, Infallible>(Frame::data(Bytes::from_static(
        SAMPLE_BATCH.as_bytes(),
    )))];
    let request = hyper::Request::post("http://localhost/call")
        .header("Host", "localhost")
        .header("User-Agent", "Go-http-client/1.1")
        .header("Content-Type", "application/json")
        .header("Fn-Call-Id", "01JDEMO0000000000000000001")
        .header("Fn-Deadline", deadline_in(Duration::from_secs(30)))
        .header("Fn-Invoke-Type", "sync")
        .header("Opc-Request-Id", "/DEMO/0001")
        .header("Oci-Subject-Type", "serviceconnector")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the function did not answer: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn on_off(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

/// The table: one row per capability, one column per user, `before → after` where it changed.
pub fn capability_table(run: &DemoRun) -> String {
    let cells: Vec<Vec<String>> = run
        .users
        .iter()
        .map(|u| {
            let planned = run.planned_change(&u.id);
            let mut column: Vec<String> = (0..8)
                .map(|i| {
                    if u.before[i] != u.after[i] {
                        format!("{} → {}", on_off(u.before[i]), on_off(u.after[i]))
                    } else if let Some(to) = planned[i].filter(|_| run.dry_run) {
                        format!("{} (→ {})", on_off(u.before[i]), on_off(Some(to)))
                    } else {
                        on_off(u.before[i]).to_string()
                    }
                })
                .collect();
            column.push(run.outcome_of(&u.id).unwrap_or("-").to_string());
            column
        })
        .collect();
    let first = CAPABILITY_NAMES.iter().map(|n| n.len()).max().unwrap_or(0);
    let widths: Vec<usize> = run
        .users
        .iter()
        .zip(&cells)
        .map(|(u, c)| {
            c.iter()
                .map(|s| s.chars().count())
                .chain([u.user_name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |label: &str, values: Vec<&str>| {
        let mut row = format!("{label:<first$}");
        for (v, w) in values.iter().zip(&widths) {
            let pad = w.saturating_sub(v.chars().count());
            let _ = write!(row, "  {v}{}", " ".repeat(pad));
        }
        out.push_str(row.trim_end());
        out.push('\n');
    };
    line(
        "capability",
        run.users.iter().map(|u| u.user_name.as_str()).collect(),
    );
    for (i, name) in CAPABILITY_NAMES.iter().enumerate() {
        line(name, cells.iter().map(|c| c[i].as_str()).collect());
    }
    line("outcome", cells.iter().map(|c| c[8].as_str()).collect());
    out
}

/// Each credential a sample user held, and what became of it: kept (its capability stays on),
/// lingering (its capability went off) and still there, revoked, or in a dry run what would be.
pub fn credential_lines(run: &DemoRun) -> String {
    let name_width = run
        .users
        .iter()
        .map(|u| u.user_name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for u in &run.users {
        let lingering = run.acting(&u.id).map(|r| &r["lingering"]);
        let would_revoke = run.acting(&u.id).map(|r| &r["revoked"]);
        for (kind, id) in &u.credentials_before {
            let is_lingering = lingering.is_some_and(|l| l.get(kind).is_some());
            let gone = !u.credentials_after.contains(&(kind.clone(), id.clone()));
            let fate = match (is_lingering, gone) {
                (_, true) => "lingering → revoked (deleted)".to_string(),
                (true, false)
                    if run.dry_run && would_revoke.is_some_and(|r| r.get(kind).is_some()) =>
                {
                    "lingering (→ revoked: a real run deletes it)".to_string()
                }
                (true, false) => format!("lingering, kept (CREDENTIALS={})", run.credentials_mode),
                (false, false) => "kept (its capability stays on)".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<name_width$}  {kind:<18}  {id}  {fate}",
                u.user_name
            );
        }
    }
    out
}

/// One line per record of the report.
pub fn record_lines(run: &DemoRun) -> String {
    let mut out = String::new();
    for r in run.results() {
        let who = r["userName"]
            .as_str()
            .or(r["userId"].as_str())
            .unwrap_or("-");
        let _ = write!(
            out,
            "  record {}  {:<9}  {}",
            r["index"],
            r["outcome"].as_str().unwrap_or("?"),
            who
        );
        if let Some(reason) = r["reason"].as_str() {
            let _ = write!(out, "  ({reason})");
        }
        out.push('\n');
    }
    out
}

/// What the identity domain saw: method and path of every request, with the signature verdict,
/// grouped by user (users are processed concurrently, so arrival order varies between runs).
pub fn request_lines(run: &DemoRun) -> String {
    let position = |r: &RecordedRequest| {
        run.users
            .iter()
            .position(|u| r.target.contains(&u.id))
            .unwrap_or(run.users.len())
    };
    let mut requests: Vec<&RecordedRequest> = run.requests.iter().collect();
    requests.sort_by_key(|r| position(r));
    let mut out = String::new();
    for r in requests {
        let path = r.target.split('?').next().unwrap_or(&r.target);
        let _ = writeln!(
            out,
            "  {:<4} {path}  → {}  signature {}{}",
            r.method,
            r.status.map_or("reset".to_string(), |s| s.to_string()),
            if r.auth_ok { "valid" } else { "REFUSED" },
            body_summary(r)
        );
    }
    out
}

/// What a search or a Bulk request carried: the users asked for, or one line per operation.
fn body_summary(r: &RecordedRequest) -> String {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if r.target.ends_with("/.search") {
        let asked = body["filter"]
            .as_str()
            .map_or(0, |f| f.split(" or ").count());
        return format!("  (one search for {asked} users)");
    }
    let Some(operations) = body["Operations"].as_array() else {
        return String::new();
    };
    let mut out = format!("  ({} operations)", operations.len());
    for op in operations {
        let _ = write!(
            out,
            "\n         {} {}",
            op["method"].as_str().unwrap_or("?"),
            op["path"].as_str().unwrap_or("?")
        );
    }
    out
}

/// The profile as the function's start line states it, what it leaves alone, and any warning it
/// gave at start (a configuration key misspelt, say).
pub fn profile_lines(run: &DemoRun) -> String {
    let mut out = String::new();
    for line in run
        .log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("meant="))
    {
        let message = line.split_once(" WARN ").map_or(line, |(_, m)| m);
        let message = message.split(" variable=").next().unwrap_or(message);
        let _ = writeln!(out, "Warning at start: {message}");
    }
    let Some(ready) = run.log.lines().find(|l| l.contains(" INFO ready ")) else {
        return out;
    };
    let field = |name: &str, end: &str| {
        ready
            .split_once(&format!(" {name}="))
            .map(|(_, rest)| rest.split(end).next().unwrap_or(rest).to_string())
    };
    let profile = field("profile", " unmanaged=").unwrap_or_default();
    let unmanaged = field("unmanaged", " rules=").unwrap_or_default();
    let _ = writeln!(out, "Profile (the function's start line): {profile}");
    let _ = writeln!(out, "Unmanaged: {unmanaged}");
    // Console is unmanaged by design in the default; anything more was probably not meant.
    let left: Vec<&str> = unmanaged
        .split(' ')
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty() && *c != "none" && *c != "console")
        .collect();
    if !left.is_empty() {
        let stricter: Vec<String> = left.iter().map(|c| format!(",{c}=off")).collect();
        let _ = writeln!(
            out,
            "CAPABILITIES manages only the names it lists; the others stay as each user has them. \
             To switch them off too, list them:\n  CAPABILITIES={profile}{}",
            stricter.concat()
        );
    }
    out
}

/// Everything the example prints, except timings.
pub fn render(run: &DemoRun) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Local identity domain {DOMAIN_A} (checks every request's OCI signature), {} users.",
        run.users.len()
    );
    let _ = writeln!(
        out,
        "The function (`serve`{}) got examples/payloads/sch-batch.json over its Fn socket and answered {}.",
        if run.dry_run { ", DRY_RUN=true" } else { "" },
        run.status
    );
    out.push_str(&profile_lines(run));
    out.push('\n');
    if run.dry_run {
        let _ = writeln!(
            out,
            "Capabilities (dry run: \"(→ off)\" is what a real run would write; nothing was written):"
        );
    } else {
        let _ = writeln!(out, "Capabilities before → after:");
    }
    out.push_str(&capability_table(run));
    out.push('\n');
    let _ = writeln!(
        out,
        "Credentials the users held (CREDENTIALS={}{}):",
        run.credentials_mode,
        match run.credentials_mode.as_str() {
            "revoke" => ": lingering ones are deleted once the capability is off",
            "off" => ": not even read",
            _ => ": lingering ones are counted and logged, none is deleted",
        }
    );
    out.push_str(&credential_lines(run));
    out.push('\n');
    let _ = writeln!(out, "Records:");
    out.push_str(&record_lines(run));
    out.push('\n');
    let _ = writeln!(out, "Requests the identity domain received:");
    out.push_str(&request_lines(run));
    out.push('\n');
    let _ = writeln!(out, "The function's answer:");
    if run.report.is_some() {
        let _ = writeln!(out, "{}", one_result_per_line(&run.body));
    } else {
        let _ = writeln!(
            out,
            "{}\n(status {}; the function's log:)\n{}",
            run.body, run.status, run.log
        );
    }
    out
}

/// The answer exactly as sent (same fields, same order), with a line break before each result.
pub fn one_result_per_line(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Results<'a> {
        #[serde(borrow)]
        results: Vec<&'a serde_json::value::RawValue>,
    }
    let Ok(Results { results }) = serde_json::from_str::<Results>(body) else {
        return body.to_string();
    };
    // Each raw value borrows from `body`: its offset there is where the line break goes.
    let mut out = String::new();
    let mut from = 0;
    for raw in &results {
        let at = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        out.push_str(&body[from..at]);
        out.push_str("\n  ");
        from = at;
    }
    if let Some(last) = results.last() {
        let end = last.get().as_ptr() as usize - body.as_ptr() as usize + last.get().len();
        out.push_str(&body[from..end]);
        out.push('\n');
        from = end;
    }
    out.push_str(&body[from..]);
    out
}
