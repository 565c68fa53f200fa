//! The posture report (`report --domain …`): every user of a domain against the profile the policy
//! decides for it, read only.
//!
//! [`scan`] pages through the domain's users (the same listing and keyset cursor as reconcile, with
//! the attributes the policy needs) and [`row`] judges each one with the function's own decision
//! ([`decide`]: the policy, and the refusal of a rule that cannot be decided), so the report says
//! what the function would do. Nothing is written. [`PostureReport`] is the data;
//! [`to_csv`] and the JSON (`serde`) carry the same rows, and [`crate::report::html`] draws it.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::action::apply::{decide, Engine, NoDecision};
use crate::action::domains::DomainKnown;
use crate::action::reconcile::{Next, Oversized, Pager, Position};
use crate::decision::credentials::{counts, lingering};
use crate::decision::policy::{Decision, Policy};
use crate::decision::profile::{Capability, CurrentCapabilities, Profile};
use crate::intake::names::DomainUrl;

/// The service's largest page.
pub const PAGE_SIZE: u64 = 1000;

/// Credential types as the user's credentials extension names them, in report column order.
pub const CREDENTIAL_TYPES: [&str; 6] = [
    "apiKeys",
    "authTokens",
    "customerSecretKeys",
    "smtpCredentials",
    "oAuth2ClientCredentials",
    "dbCredentials",
];

/// Where a user stands against the profile decided for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// A managed capability differs (or its value is unknown): the function would write.
    ToChange,
    /// A rule may apply but cannot be decided from what is known of the user's domain: the
    /// function would reject the user and write nothing (see the row's `reason`).
    Undecided,
    /// The listing's answer for the user could not be judged (see the row's `reason`).
    Unreadable,
    /// A rule or tag exempts the user: never touched.
    Exempt,
    /// Every managed capability already matches.
    Compliant,
}

impl UserStatus {
    /// As the CSV and the HTML spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::ToChange => "to_change",
            UserStatus::Undecided => "undecided",
            UserStatus::Unreadable => "unreadable",
            UserStatus::Exempt => "exempt",
            UserStatus::Compliant => "compliant",
        }
    }
}

/// Where one capability of one user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// Managed, and the user's value matches.
    Compliant,
    /// Managed, and the user's value differs or is unknown.
    ToChange,
    /// The user is exempt.
    Exempt,
    /// The profile leaves this capability as the user has it.
    Unmanaged,
    /// The user could not be judged.
    Unknown,
}

impl CellState {
    /// As the CSV and the HTML spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Compliant => "compliant",
            CellState::ToChange => "to_change",
            CellState::Exempt => "exempt",
            CellState::Unmanaged => "unmanaged",
            CellState::Unknown => "unknown",
        }
    }
}

/// One capability of one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// The user's value; `None` when the domain did not report one.
    pub current: Option<bool>,
    /// The profile's value; `None` when unmanaged, exempt or unknown.
    pub wanted: Option<bool>,
    /// The verdict.
    pub state: CellState,
}

impl Cell {
    /// A capability of a user that could not be judged.
    const UNKNOWN: Cell = Cell {
        current: None,
        wanted: None,
        state: CellState::Unknown,
    };
}

/// One user's row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The SCIM id, when listed.
    pub user_id: Option<String>,
    /// `userName`, when listed.
    pub user_name: Option<String>,
    /// The verdict for the user as a whole.
    pub status: UserStatus,
    /// The rules and tags that decided (`default` when none matched).
    pub decided_by: Vec<String>,
    /// Why, when there is more to say (the exempting rule, a tag not used, an unreadable answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Per capability name, in [`Capability::ALL`] order.
    pub capabilities: BTreeMap<&'static str, Cell>,
    /// Credentials the user holds for capabilities its profile turns off, by type; empty when none
    /// or when credentials were not read.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lingering: BTreeMap<String, u64>,
}

/// Per capability, how many users stand where: the chart's bars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityCounts {
    /// Managed and matching.
    pub compliant: u64,
    /// Managed and differing.
    pub to_change: u64,
    /// Exempt users.
    pub exempt: u64,
    /// Left alone by the profile.
    pub unmanaged: u64,
}

/// The report's totals.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Users in the report.
    pub users: u64,
    /// Users whose managed capabilities all match.
    pub compliant: u64,
    /// Users the function would write.
    pub to_change: u64,
    /// Users a rule or tag exempts.
    pub exempt: u64,
    /// Users the function would reject because a rule cannot be decided.
    pub undecided: u64,
    /// Users whose listing could not be judged.
    pub unreadable: u64,
    /// Per capability name.
    pub capabilities: BTreeMap<&'static str, CapabilityCounts>,
    /// Lingering credentials by type, over every user.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lingering: BTreeMap<String, u64>,
}

/// The policy as the report shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyShown {
    /// Where it came from: `built-in policies/capabilities.toml`, `POLICY`, or the file.
    pub source: String,
    /// The default profile (`api_keys=on,…`; unmanaged capabilities not listed).
    pub default: String,
    /// Each rule in file order, described in one line.
    pub rules: Vec<String>,
    /// `TAG_NAMESPACE`, when per-user tags are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_namespace: Option<String>,
}

impl PolicyShown {
    /// `policy` described, with where it came from.
    pub fn new(policy: &Policy, source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            default: policy.default.describe(),
            rules: policy.rules.iter().map(|r| r.describe()).collect(),
            tag_namespace: policy.tag_namespace.as_ref().map(|t| t.as_str().to_owned()),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostureReport {
    /// The domain's base URL.
    pub domain: String,
    /// When the listing was read (RFC 3339, UTC).
    pub generated_at: String,
    /// The SCIM filter, when the listing was narrowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The policy applied.
    pub policy: PolicyShown,
    /// Whether credentials were read (lingering counts mean something only then).
    pub credentials_read: bool,
    /// False when the listing could not be read to its end (then `error` says why).
    pub complete: bool,
    /// Why the listing stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The totals.
    pub summary: Summary,
    /// One row per user, to change first, then by user name.
    pub users: Vec<Row>,
}

impl PostureReport {
    /// An empty report for `domain`, to fill with [`PostureReport::push`].
    pub fn new(domain: &DomainUrl, filter: Option<String>, policy: PolicyShown) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let generated_at = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        Self {
            domain: domain.as_str().to_owned(),
            generated_at,
            filter,
            policy,
            credentials_read: false,
            complete: true,
            error: None,
            summary: Summary {
                capabilities: Capability::ALL
                    .iter()
                    .map(|c| (c.name(), CapabilityCounts::default()))
                    .collect(),
                ..Summary::default()
            },
            users: Vec::new(),
        }
    }

    /// Adds one row and counts it.
    pub fn push(&mut self, row: Row) {
        let s = &mut self.summary;
        s.users += 1;
        match row.status {
            UserStatus::Compliant => s.compliant += 1,
            UserStatus::ToChange => s.to_change += 1,
            UserStatus::Exempt => s.exempt += 1,
            UserStatus::Undecided => s.undecided += 1,
            UserStatus::Unreadable => s.unreadable += 1,
        }
        for (name, cell) in &row.capabilities {
            let counts = s.capabilities.entry(name).or_default();
            match cell.state {
                CellState::Compliant => counts.compliant += 1,
                CellState::ToChange => counts.to_change += 1,
                CellState::Exempt => counts.exempt += 1,
                CellState::Unmanaged => counts.unmanaged += 1,
                CellState::Unknown => {}
            }
        }
        for (kind, n) in &row.lingering {
            *s.lingering.entry(kind.clone()).or_default() += n;
        }
        self.users.push(row);
    }

    /// Rows to change first (what needs attention), then undecided, unreadable, exempt and
    /// compliant; by user name within each.
    pub fn sort(&mut self) {
        self.users.sort_by(|a, b| {
            (a.status, &a.user_name, &a.user_id).cmp(&(b.status, &b.user_name, &b.user_id))
        });
    }
}

/// Judges one listed user as the function decides it ([`decide`]), given what is known of its
/// domain. `lingering` counts what the credentials extension holds for capabilities turned off.
pub(crate) fn row(user: &Value, policy: &Policy, known: DomainKnown) -> Row {
    let text = |k: &str| user.get(k).and_then(Value::as_str).map(str::to_owned);
    let current = CurrentCapabilities::from_user(user);
    let mut row = Row {
        user_id: text("id"),
        user_name: text("userName"),
        status: UserStatus::Unreadable,
        decided_by: Vec::new(),
        reason: None,
        capabilities: cells(&current, |_| (None, CellState::Unknown)),
        lingering: BTreeMap::new(),
    };
    match decide(policy, user, known) {
        Err(no) => {
            if matches!(no, NoDecision::Undecided(_)) {
                row.status = UserStatus::Undecided;
            }
            row.reason = Some(no.settled("listed user").1);
        }
        Ok(Decision::Exempt { policy, reason }) => {
            row.status = UserStatus::Exempt;
            row.decided_by = policy;
            row.reason = Some(reason);
            row.capabilities = cells(&current, |_| (None, CellState::Exempt));
        }
        Ok(Decision::Enforce {
            profile,
            policy,
            notes,
        }) => {
            row.decided_by = policy;
            enforced(&mut row, user, &current, &profile, notes);
        }
    }
    row
}

/// One cell per capability, in [`Capability::ALL`] order: the user's value, and what `state` says.
fn cells(
    current: &CurrentCapabilities,
    state: impl Fn(Capability) -> (Option<bool>, CellState),
) -> BTreeMap<&'static str, Cell> {
    Capability::ALL
        .iter()
        .map(|&c| {
            let (wanted, state) = state(c);
            let current = current.get(c);
            (
                c.name(),
                Cell {
                    current,
                    wanted,
                    state,
                },
            )
        })
        .collect()
}

/// Fills the row of a user the function enforces `profile` on: each capability's verdict, the
/// lingering credentials, and to change or compliant.
fn enforced(
    row: &mut Row,
    user: &Value,
    current: &CurrentCapabilities,
    profile: &Profile,
    mut notes: Vec<String>,
) {
    // The extension is absent when the listing did not ask for it: nothing is counted then.
    match lingering(user, profile) {
        Ok(held) => {
            row.lingering = counts(&held)
                .into_iter()
                .map(|(kind, n)| (kind.to_owned(), n as u64))
                .collect();
        }
        Err(e) => notes.push(format!("credentials not counted: {e}")),
    }
    row.reason = (!notes.is_empty()).then(|| notes.join("; "));
    row.capabilities = cells(current, |c| match profile.get(c) {
        None => (None, CellState::Unmanaged),
        Some(want) if current.get(c) == Some(want) => (Some(want), CellState::Compliant),
        Some(want) => (Some(want), CellState::ToChange),
    });
    let differs = row
        .capabilities
        .values()
        .any(|cell| cell.state == CellState::ToChange);
    row.status = if differs {
        UserStatus::ToChange
    } else {
        UserStatus::Compliant
    };
}

/// What a scan reads and how it reports its way through the listing.
#[derive(Debug, Clone)]
pub struct ScanJob {
    /// The domain's base URL.
    pub domain: DomainUrl,
    /// The domain as the operator named it, and its `idcs-` name, for the policy's `domains` rules.
    pub domain_values: Vec<String>,
    /// A SCIM filter narrowing the listing; `None` reports every user.
    pub filter: Option<String>,
    /// Users per page (1..=[`PAGE_SIZE`]).
    pub page_size: u64,
}

/// What a user is judged with: the job's domain values, and the domain's OCID and display name
/// learned from the user's `domainOcid` when the policy needs them (as reconcile does). A lookup
/// that may succeed on a retry leaves the rule undecided here, saying so: the function would fail
/// the user and retry, writing nothing.
async fn domain_known_for(
    engine: &Engine,
    job: &ScanJob,
    user: &Value,
    deadline: Instant,
) -> DomainKnown {
    let values = job.domain_values.clone();
    match engine
        .domain_known(&job.domain, values.clone(), Some(user), deadline)
        .await
    {
        Ok(known) => known,
        Err(failed) => DomainKnown {
            values,
            why_unknown: Some(format!(
                "looking the domain up failed (the function would fail the user for a retry): {}",
                failed.reason
            )),
        },
    }
}

/// Pages through the listing and judges every user; `on_page(scanned, total)` after each page.
///
/// The pages are the reconcile's: `meta.created` order with a keyset cursor
/// ([`crate::action::reconcile`]), so a user deleted or created during the scan shifts nothing, and
/// a page that cannot be trusted to say where the scan stands (no `totalResults`, fewer users than
/// due, out of order, a repeat, another `startIndex` than asked) or cannot be read ends the scan
/// with the report marked incomplete, saying where and why.
pub async fn scan(
    engine: &Engine,
    job: &ScanJob,
    policy: PolicyShown,
    deadline: Instant,
    on_page: &mut dyn FnMut(u64, Option<u64>),
) -> PostureReport {
    let mut report = PostureReport::new(&job.domain, job.filter.clone(), policy);
    // Credentials as the function reads them (none with CREDENTIALS=off); exempt users' are dropped
    // unexamined by `row`.
    report.credentials_read = !engine.credential_attributes.is_empty();
    let mut scan = Scan {
        pager: Pager::new(Position::new(1, None), job.page_size.min(PAGE_SIZE)),
        seen: HashSet::new(),
        total: None,
    };
    loop {
        match scan.next_page(engine, job, &mut report, deadline).await {
            Ok(more) => {
                on_page(report.summary.users, scan.total);
                if !more {
                    break;
                }
            }
            Err(reason) => {
                report.complete = false;
                report.error = Some(reason);
                break;
            }
        }
    }
    report.sort();
    report
}

/// Where a report's scan stands.
struct Scan {
    pager: Pager,
    /// Users reported, so one listed twice (the listing shifted under the scan) counts once.
    seen: HashSet<String>,
    /// The users reported plus those still ahead, as far as the last page said.
    total: Option<u64>,
}

impl Scan {
    /// Reads and judges the next page: `Ok(true)` while there is more, `Ok(false)` at the end of
    /// the listing, `Err` when the scan cannot go on and be sure it missed nobody.
    async fn next_page(
        &mut self,
        engine: &Engine,
        job: &ScanJob,
        report: &mut PostureReport,
        deadline: Instant,
    ) -> Result<bool, String> {
        let filter = job.filter.as_deref().unwrap_or_default();
        let next = self
            .pager
            .next(engine, &job.domain, filter, None, deadline)
            .await?;
        let (page, start, count) = match next {
            Next::Page { page, start, count } => (page, start, count),
            Next::Oversized(named) => {
                if let Some(user) = &named {
                    self.report_oversized(report, user);
                }
                return Ok(true);
            }
        };
        let listed = self.pager.check(&page, start, count)?;
        let position = &mut self.pager.position;
        for user in listed.iter().filter(|l| !position.done(l.at, l.id)) {
            if user.id.is_none_or(|id| self.seen.insert(id.to_owned())) {
                let known = domain_known_for(engine, job, user.user, deadline).await;
                report.push(row(user.user, &engine.policy, known));
            }
        }
        let total = page.total_results.unwrap_or_default();
        let ahead = total.saturating_sub(start - 1 + listed.len() as u64);
        self.total = Some(report.summary.users + ahead);
        Ok(!position.past_page(&listed, start, total))
    }
    /// A user whose listing alone is too large: reported unreadable, with why.
    fn report_oversized(&mut self, report: &mut PostureReport, user: &Oversized) {
        if let Some(id) = &user.id {
            if !self.seen.insert(id.clone()) {
                return;
            }
        }
        report.push(Row {
            user_id: user.id.clone(),
            user_name: user.user_name.clone(),
            status: UserStatus::Unreadable,
            decided_by: Vec::new(),
            reason: Some(user.reason.clone()),
            capabilities: Capability::ALL
                .iter()
                .map(|c| (c.name(), Cell::UNKNOWN))
                .collect(),
            lingering: BTreeMap::new(),
        });
    }
}

/// The report as CSV (RFC 4180, CRLF line ends), one row per user, the same rows as the JSON.
/// A value a spreadsheet would run as a formula (starting `=`, `+`, `-`, `@`, tab or CR) is
/// prefixed with `'`: user names come from the domain, and a CSV is opened by people.
pub fn to_csv(report: &PostureReport) -> String {
    let mut header: Vec<String> = ["user_id", "user_name", "status", "decided_by", "reason"]
        .map(str::to_owned)
        .to_vec();
    for c in Capability::ALL {
        header.push(c.name().to_owned());
        header.push(format!("{}_profile", c.name()));
        header.push(format!("{}_state", c.name()));
    }
    if report.credentials_read {
        header.extend(CREDENTIAL_TYPES.iter().map(|t| format!("lingering_{t}")));
    }
    let mut out = csv_line(&header);
    for r in &report.users {
        let mut fields = vec![
            r.user_id.clone().unwrap_or_default(),
            r.user_name.clone().unwrap_or_default(),
            r.status.as_str().to_owned(),
            r.decided_by.join(" "),
            r.reason.clone().unwrap_or_default(),
        ];
        for c in Capability::ALL {
            let cell = r.capabilities.get(c.name());
            fields.push(switch(cell.and_then(|c| c.current)).to_owned());
            fields.push(switch(cell.and_then(|c| c.wanted)).to_owned());
            fields.push(cell.map_or("unknown", |c| c.state.as_str()).to_owned());
        }
        if report.credentials_read {
            for t in CREDENTIAL_TYPES {
                fields.push(r.lingering.get(t).copied().unwrap_or(0).to_string());
            }
        }
        out.push_str(&csv_line(&fields));
    }
    out
}

/// `on`, `off`, or empty for unknown / unmanaged.
pub fn switch(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "",
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::profile::CAPABILITIES_URN;
    use serde_json::json;

    const POLICY: &str = r#"
default = "api_keys=off,auth_tokens=off,console_password=off,customer_secret_keys=off,db_credentials=off,oauth2_client_credentials=off,smtp_credentials=off"
[[rule]]
name = "break-glass"
users = ["breakglass-*"]
exempt = true
[[rule]]
name = "developers"
users = ["dev*"]
capabilities = "api_keys=on"
"#;

    fn policy() -> Policy {
        Policy::parse(POLICY, None, None).unwrap()
    }

    /// `user` judged knowing nothing of its domain.
    fn judge(user: &Value, p: &Policy) -> Row {
        row(user, p, DomainKnown::of(Vec::new()))
    }

    fn user(name: &str, on: bool) -> Value {
        let caps: serde_json::Map<String, Value> = Capability::ALL
            .iter()
            .map(|c| (c.attribute().to_owned(), json!(on)))
            .collect();
        json!({"id": "0123456789abcdef0123456789abcdef", "userName": name, CAPABILITIES_URN: caps})
    }

    #[test]
    fn lingering_credentials_are_counted_for_capabilities_turned_off_only() {
        let p = policy();
        let with_credentials = |name: &str| {
            let mut u = user(name, true);
            u[crate::decision::credentials::USER_CREDENTIALS_URN] = json!({
                "apiKeys": [{"value": "0123456789abcdef0123456789abcdef"}],
                "smtpCredentials": [{"value": "fedcba9876543210fedcba9876543210"}]
            });
            u
        };
        // Developers keep API keys: only the SMTP credential lingers.
        let dev = judge(&with_credentials("dev1"), &p);
        assert_eq!(
            dev.lingering,
            BTreeMap::from([("smtpCredentials".to_owned(), 1)])
        );
        let other = judge(&with_credentials("ana"), &p);
        assert_eq!(other.lingering.values().sum::<u64>(), 2);
        // An exempt user's credentials are never counted.
        assert!(judge(&with_credentials("breakglass-1"), &p)
            .lingering
            .is_empty());
        let mut report = PostureReport::new(
            &DomainUrl::parse(
                "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com",
            )
            .unwrap(),
            None,
            PolicyShown::new(&p, "test"),
        );
        report.push(dev);
        report.push(other);
        assert_eq!(report.summary.lingering["smtpCredentials"], 2);
        assert_eq!(report.summary.lingering["apiKeys"], 1);
    }

    #[test]
    fn each_user_is_judged_by_the_rule_that_decides_it() {
        let p = policy();
        let dev = judge(&user("dev1", false), &p);
        assert_eq!(dev.status, UserStatus::ToChange);
        assert_eq!(dev.decided_by, ["developers"]);
        assert_eq!(dev.capabilities["api_keys"].state, CellState::ToChange);
        assert_eq!(dev.capabilities["api_keys"].wanted, Some(true));
        assert_eq!(
            dev.capabilities["smtp_credentials"].state,
            CellState::Compliant
        );
        assert_eq!(dev.capabilities["console"].state, CellState::Unmanaged);

        let glass = judge(&user("breakglass-1", true), &p);
        assert_eq!(glass.status, UserStatus::Exempt);
        assert_eq!(glass.reason.as_deref(), Some("exempt by rule break-glass"));
        assert!(glass
            .capabilities
            .values()
            .all(|c| c.state == CellState::Exempt));

        let other = judge(&user("ana", false), &p);
        assert_eq!(other.status, UserStatus::Compliant);
        assert_eq!(other.decided_by, ["default"]);

        let odd = judge(&json!({"id": "x", "groups": "not a list"}), &p);
        assert_eq!(odd.status, UserStatus::Unreadable);
    }

    #[test]
    fn a_rule_the_function_cannot_decide_leaves_the_user_undecided() {
        let p = Policy::parse(
            "[[rule]]\nname = \"prod\"\ndomains = [\"Production\"]\ncapabilities = \"auth_tokens=off\"\n",
            None,
            None,
        )
        .unwrap();
        let by_name = || vec![format!("idcs-{}", "0".repeat(32))];
        let u = user("ana", true);
        let undecided = row(
            &u,
            &p,
            DomainKnown {
                values: by_name(),
                why_unknown: Some("the user's answer carries no domainOcid".into()),
            },
        );
        assert_eq!(undecided.status, UserStatus::Undecided);
        let reason = undecided.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("rule prod") && reason.contains("carries no domainOcid"),
            "{reason}"
        );
        assert!(undecided.decided_by.is_empty());
        assert_eq!(
            undecided.capabilities["auth_tokens"].state,
            CellState::Unknown
        );
        // Known by its display name, the same user is decided.
        let mut values = by_name();
        values.push("Production".into());
        let decided = row(&u, &p, DomainKnown::of(values));
        assert_eq!(
            (decided.status, decided.decided_by.clone()),
            (UserStatus::ToChange, vec!["prod".to_owned()])
        );
        let domain = DomainUrl::parse("http://127.0.0.1:9").unwrap();
        let mut r = PostureReport::new(&domain, None, PolicyShown::new(&p, "test"));
        r.push(decided);
        r.push(undecided);
        r.sort();
        assert_eq!((r.summary.undecided, r.summary.to_change), (1, 1));
        assert_eq!(r.summary.capabilities["auth_tokens"].to_change, 1);
        let csv = to_csv(&r);
        assert!(csv.contains(",ana,undecided,,\"rule prod"), "{csv}");
    }

    #[test]
    fn the_summary_counts_users_and_capabilities() {
        let p = policy();
        let domain = DomainUrl::parse("http://127.0.0.1:9").unwrap();
        let mut r = PostureReport::new(&domain, None, PolicyShown::new(&p, "test"));
        for u in [
            user("dev1", false),
            user("breakglass-1", true),
            user("ana", false),
        ] {
            r.push(judge(&u, &p));
        }
        r.sort();
        assert_eq!(
            (
                r.summary.users,
                r.summary.to_change,
                r.summary.exempt,
                r.summary.compliant
            ),
            (3, 1, 1, 1)
        );
        let api = r.summary.capabilities["api_keys"];
        assert_eq!(
            (api.compliant, api.to_change, api.exempt, api.unmanaged),
            (1, 1, 1, 0)
        );
        assert_eq!(r.summary.capabilities["console"].unmanaged, 2);
        assert_eq!(
            r.users[0].user_name.as_deref(),
            Some("dev1"),
            "to change comes first"
        );
        assert_eq!(r.policy.rules.len(), 2);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1"), "'-1");
        let p = policy();
        let domain = DomainUrl::parse("http://127.0.0.1:9").unwrap();
        let mut r = PostureReport::new(&domain, None, PolicyShown::new(&p, "test"));
        r.push(judge(&user("dev1", false), &p));
        let csv = to_csv(&r);
        let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), 5 + 3 * 8);
        assert!(lines[1].starts_with(
            "0123456789abcdef0123456789abcdef,dev1,to_change,developers,,off,on,to_change,"
        ));
    }
}
