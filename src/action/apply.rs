//! Orchestration: from the records of a batch to one outcome per record.
//!
//! Each distinct user is read once, checked against every record that names it, compared with the profile
//! and written only when something differs. At most `max_concurrency` users are in flight; users not yet
//! started when the deadline is near are reported `failed`, so the platform retries the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::action::bulk::BulkState;
use crate::action::credentials::{conclude, Lingering};
use crate::action::domains::{DomainKnown, LearnedDomains};
use crate::action::ledger::{Ledger, OpenCall, Stage};
pub(crate) use crate::action::settled::SettledResults;
pub use crate::action::settled::{Listing, RecordsByDomain, IGNORED_LISTED_MAX, REPORT_MAX_BYTES};
use crate::clients::control_plane::{ControlPlane, ResolveError};
use crate::clients::identity_domain::{
    answered_user_id, Answer, Failure, IdentityDomainClient, Settled,
};
use crate::config::{
    BulkSettings, Config, DomainPolicy, DomainRoute, EventTypes, KEY_CONTROL_PLANE,
};
use crate::decision::credentials::{attributes_to_read, lingering, Counts, CredentialsMode, Held};
use crate::decision::policy::{Decision, Policy, UserFacts};
use crate::decision::profile::{Change, CurrentCapabilities, Profile};
use crate::intake::audit::{Records, Target, Triage};
use crate::intake::batch::{acting_iter, group_by_user, UserRecords};
use crate::intake::names::{DomainOcid, DomainUrl, UserId, UserRef};
use reqwest::StatusCode;

/// Why a user gets no decision from the policy; nothing is written for it.
#[derive(Debug)]
pub(crate) enum NoDecision {
    /// The answer does not hold the facts the policy needs in a usable form; a retry may fix it.
    Unusable(String),
    /// A rule may apply but cannot be decided from what is known of the user's domain.
    Undecided(String),
}

impl NoDecision {
    /// The user's outcome and reason; `context` says what held the unusable answer (e.g.
    /// "reading the user").
    pub(crate) fn settled(self, context: &str) -> (Outcome, String) {
        match self {
            NoDecision::Unusable(e) => (
                Outcome::Failed,
                format!("{context}: unexpected answer: {e}"),
            ),
            NoDecision::Undecided(reason) => (Outcome::Rejected, reason),
        }
    }
}

/// `policy`'s decision for a user as read or listed, given what is known of its domain: what
/// [`Engine::decide`] gives the function, and the posture report its rows.
pub(crate) fn decide(
    policy: &Policy,
    user: &serde_json::Value,
    known: DomainKnown,
) -> Result<Decision, NoDecision> {
    let facts = UserFacts::from_scim(user, known.values).map_err(NoDecision::Unusable)?;
    let decision = policy.decide(&facts);
    if matches!(decision, Decision::Exempt { .. }) {
        return Ok(decision);
    }
    // A rule that cannot be decided must not act (one decision per user, whichever path brings
    // it): nothing is written, and the reason says what is missing and why it could not be
    // learned.
    match (policy.undecided_domains(&facts), known.why_unknown) {
        (None, _) => Ok(decision),
        (Some(reason), Some(why)) => Err(NoDecision::Undecided(format!("{reason}; {why}"))),
        (Some(reason), None) => Err(NoDecision::Undecided(reason)),
    }
}

/// Work is not started on a user with less than this left before the deadline: one read and one write
/// must fit, with room to answer.
pub const START_MARGIN: Duration = Duration::from_millis(1500);

/// How a record (or a reconciled user) ended; every one ends in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The profile was written (or, in dry run, would have been).
    Applied,
    /// The user already matched the profile, or is exempt; nothing written.
    Unchanged,
    /// Not for this function (event type not selected, domain outside `DOMAINS`).
    Ignored,
    /// Cannot succeed as sent (bad record, unknown user, a refusal a retry cannot fix).
    Rejected,
    /// Could succeed on a retry (429, 5xx, timeout, deadline); the invocation fails.
    Failed,
}

impl Outcome {
    /// The outcome as reports and logs spell it (`applied`, `unchanged`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// One record's result, as the response and the log show it: where the record stands in the
/// batch, and how its user ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    /// The record's 0-based position in the batch.
    pub index: usize,
    /// The record's event id, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The domain as the record named it; `None` when the record did not get that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The user as the record named it (id or OCID, name) and how it ended; `userId` is `None`
    /// when the record did not get that far.
    #[serde(flatten)]
    pub user: UserEntry,
}

/// How one user ended, as a report lists it: under each record of a batch ([`RecordResult`]) and
/// for each user a reconcile lists.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEntry {
    /// The user's id (or, from a record, OCID) as named; `None` when not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's name as the record or the listing gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// How the user ended.
    pub outcome: Outcome,
    /// What decided the user's profile: rule names, `tag:<ns>.<key>`, or `default`; empty when the
    /// user ended before the policy was consulted (ignored, rejected or failed before the read).
    pub policy: Vec<String>,
    /// Attribute → [before, after]; `before` is null when the domain did not report a value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub changed: BTreeMap<&'static str, [Option<bool>; 2]>,
    /// Credentials the user holds for a capability its profile turns off, by type (`apiKeys` …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lingering: Counts,
    /// Of those, the ones deleted (a 404 counts: already revoked), or in a dry run that would be.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked: Counts,
    /// Why it ended so (e.g. "already compliant", the refusal); `None` for a plain write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Identity-domain request ids (`X-ORACLE-DMS-ECID`) of the calls made for this user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
}

impl UserEntry {
    /// A user that ended `outcome` before anything was learned of it.
    pub(crate) fn new(outcome: Outcome) -> Self {
        UserEntry {
            user_id: None,
            user_name: None,
            outcome,
            policy: Vec::new(),
            changed: BTreeMap::new(),
            lingering: Counts::new(),
            revoked: Counts::new(),
            reason: None,
            request_ids: Vec::new(),
        }
    }

    /// This user as `done` left it; `done`'s request ids follow those already here (the read's).
    pub(crate) fn settled(mut self, done: Enforced) -> Self {
        self.request_ids.extend(done.ecids);
        UserEntry {
            outcome: done.outcome,
            reason: done.reason,
            policy: done.policy,
            changed: done.changed,
            lingering: done.lingering,
            revoked: done.revoked,
            ..self
        }
    }
}

impl RecordResult {
    pub(crate) fn new(index: usize, outcome: Outcome) -> Self {
        RecordResult {
            index,
            event_id: None,
            domain: None,
            user: UserEntry::new(outcome),
        }
    }

    fn for_target(index: usize, target: &Target, outcome: Outcome) -> Self {
        RecordResult {
            event_id: target.event_id.clone(),
            domain: Some(target.domain.clone()),
            user: UserEntry {
                user_id: Some(target.user_id.as_str().to_owned()),
                user_name: target.user_name.clone(),
                ..UserEntry::new(outcome)
            },
            ..Self::new(index, outcome)
        }
    }

    fn reason(mut self, reason: impl Into<String>) -> Self {
        self.user.reason = Some(reason.into());
        self
    }

    fn request_ids(mut self, ids: Vec<String>) -> Self {
        self.user.request_ids = ids;
        self
    }
}

/// The invocation's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Records in the batch (0 for an unusable body).
    pub received: usize,
    /// Records that ended `applied`.
    pub applied: usize,
    /// Records that ended `unchanged`.
    pub unchanged: usize,
    /// Records that ended `ignored`.
    pub ignored: usize,
    /// Records that ended `rejected`.
    pub rejected: usize,
    /// Records that ended `failed`; any makes the invocation fail so the platform retries.
    pub failed: usize,
    /// True when `DRY_RUN` is on: nothing was written.
    pub dry_run: bool,
    /// Lingering credentials of every result, by type; absent when none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lingering: Counts,
    /// Revoked credentials of every result (in a dry run, those that would be), by type.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked: Counts,
    /// One entry per record, in record order, less any that are summarised.
    pub results: Listing,
    /// Set when ignored records were summarised rather than listed: reason → count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored_summary: Option<BTreeMap<String, usize>>,
    /// Set when the report would have passed [`REPORT_MAX_BYTES`]: the records not listed in
    /// `results`, counted by outcome and reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_listed: Option<NotListed>,
    /// Set when the body could not be used at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set on the log line of a large report that leaves `results` out: each record's own `record`
    /// line is the result.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub results_logged_per_record: bool,
    /// Every record by outcome and domain, for the metrics (listed or not); not in the answer.
    #[serde(skip)]
    pub records_by_domain: RecordsByDomain,
}

/// The records a report summarises instead of listing.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotListed {
    /// How many records were left out of `results`.
    pub count: usize,
    /// `"<outcome>: <reason>"` → how many records.
    pub by_outcome_and_reason: BTreeMap<String, usize>,
}

impl Report {
    /// A body that cannot be processed: retrying cannot help, so this is a final answer.
    pub fn unusable(error: impl Into<String>, dry_run: bool) -> Self {
        Report {
            received: 0,
            applied: 0,
            unchanged: 0,
            ignored: 0,
            rejected: 0,
            failed: 0,
            dry_run,
            lingering: Counts::new(),
            revoked: Counts::new(),
            results: Listing::default(),
            ignored_summary: None,
            not_listed: None,
            error: Some(error.into()),
            results_logged_per_record: false,
            records_by_domain: RecordsByDomain::new(),
        }
    }

    /// Whether the platform should retry the invocation.
    pub fn needs_retry(&self) -> bool {
        self.failed > 0
    }
}

/// A report as the bytes of its JSON, serialised straight from the structs (no `Value` in between,
/// which for 39,000 records costs several times the text).
pub fn json_bytes(report: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(report).unwrap_or_else(|e| {
        serde_json::json!({ "error": e.to_string() })
            .to_string()
            .into_bytes()
    })
}

/// The largest report logged whole on a 502; a larger one is logged without its `results` (each
/// record has had its own line), so one log line never holds megabytes.
const LOGGED_REPORT_MAX: usize = 256 * 1024;

/// A batch's report for the log line of a 502: whole when small, else its counts and summaries.
pub fn report_for_log(mut report: Report) -> String {
    let whole = json_bytes(&report);
    if whole.len() <= LOGGED_REPORT_MAX {
        return String::from_utf8_lossy(&whole).into_owned();
    }
    drop(whole);
    report.results = Listing::default();
    report.results_logged_per_record = true;
    String::from_utf8_lossy(&json_bytes(&report)).into_owned()
}

/// A report (of a batch, a reconcile run or a plan) as JSON. Serialising these plain structs cannot
/// fail; if it ever did, the answer still says so rather than being empty.
pub fn to_json(report: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// What the engine needs besides the records: the client and the settings that decide and bound the
/// work, taken from a validated [`Config`].
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) client: IdentityDomainClient,
    /// Resolves domain OCIDs (records and DOMAINS entries) to identity-domain URLs.
    pub(crate) control_plane: ControlPlane,
    /// Decides each user's profile; the same policy serves batches and reconcile.
    pub(crate) policy: Arc<Policy>,
    pub(crate) dry_run: bool,
    pub(crate) max_concurrency: usize,
    /// The calls in progress, for a SIGTERM to report on; set, it stops new users and writes.
    pub(crate) ledger: Arc<Ledger>,
    /// `BULK` and its rate.
    pub(crate) bulk: BulkSettings,
    /// Per domain, for the life of the process: the Bulk lock and the endpoints it refused.
    pub(crate) bulk_state: Arc<BulkState>,
    /// `CREDENTIALS`: report, revoke or leave alone the credentials a profile leaves lingering.
    pub(crate) credentials: CredentialsMode,
    /// The `userCredentials` attributes a read asks for (none with `CREDENTIALS=off`).
    pub(crate) credential_attributes: Vec<&'static str>,
    /// What users' `domainOcid`s taught about their domains, for the life of the process.
    pub(crate) learned_domains: Arc<LearnedDomains>,
}

/// All records that name one user: by the way to its domain and as the records name the user (the
/// SCIM id, or the OCID). Two routes to one domain, or an id and an OCID for one user, are separate
/// work until the read: [`Claims`] then lets only the first act.
pub(crate) type RouteWork = UserRecords<(DomainRoute, UserRef)>;

/// The reason of a user not started because the process is stopping.
pub(crate) const STOPPING_BEFORE_START: &str =
    "the function was stopping (SIGTERM) before this user was started; nothing was written";

impl Engine {
    /// An engine that enforces `config`'s policy with `client`.
    /// Domain OCIDs are resolved at `config`'s IDENTITY_CONTROL_PLANE_URL; without one (the default
    /// depends on the region, which the credentials know), see
    /// [`with_control_plane`](Self::with_control_plane).
    pub fn new(client: IdentityDomainClient, config: &Config) -> Self {
        let control_plane = config.control_plane_url.clone().ok_or_else(|| {
            format!("{KEY_CONTROL_PLANE} is unset and no region is known to derive it from")
        });
        Engine {
            control_plane: ControlPlane::new(control_plane, client.transport().clone()),
            client,
            policy: Arc::new(config.policy.clone()),
            dry_run: config.dry_run,
            max_concurrency: config.max_concurrency,
            ledger: Arc::default(),
            bulk: config.bulk,
            bulk_state: Arc::default(),
            credentials: config.credentials,
            credential_attributes: attributes_to_read(&config.policy, config.credentials),
            learned_domains: Arc::default(),
        }
    }

    /// The IAM control plane this engine asks (domain URLs, compartments, domain listings).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The calls in progress: [`Ledger::stop`] on SIGTERM logs what is unsettled and stops new work.
    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// Resolves domain OCIDs at `base` (`Err`: why there is no control plane to ask).
    pub fn with_control_plane(mut self, base: Result<DomainUrl, String>) -> Self {
        self.control_plane = ControlPlane::new(base, self.client.transport().clone());
        self
    }

    /// Processes a batch of raw records and returns one result per record. Each record's log line
    /// is written the moment its outcome is settled, not when the batch ends.
    pub async fn process_records(
        &self,
        records: Records,
        events: &EventTypes,
        domains: &DomainPolicy,
        deadline: Instant,
    ) -> Report {
        let call = self.ledger.open(records.len());
        let results = SettledResults::new(&call);
        let acting = acting_iter(records, events, domains, |index, triaged| {
            results.push(settled_result(index, triaged))
        });
        let work = group_by_user(acting.map(|(index, target)| {
            (
                (target.route.clone(), target.user_id.clone()),
                index,
                target,
            )
        }));
        self.run_users(work, &call, &results, deadline).await;
        results.into_report(self.dry_run)
    }

    /// Works through the users, at most `max_concurrency` at once. A user whose domain must first be
    /// resolved waits for that lookup outside those slots (each domain OCID asked once, at most
    /// `max_concurrency` lookups at once), so a slow control plane never holds up the users of a
    /// domain that needs no lookup.
    async fn run_users(
        &self,
        work: Vec<RouteWork>,
        call: &OpenCall,
        results: &SettledResults<'_>,
        deadline: Instant,
    ) {
        let concurrency = self.max_concurrency.max(1);
        if self.bulk.enabled {
            let mut ready = Vec::new();
            let mut by_ocid: HashMap<DomainOcid, Vec<RouteWork>> = HashMap::new();
            for w in work {
                match &w.user.0 {
                    DomainRoute::Url(url) => ready.push((url.clone(), w)),
                    DomainRoute::Ocid(ocid) => by_ocid.entry(ocid.clone()).or_default().push(w),
                }
            }
            return self
                .run_in_bulk(ready, by_ocid, call, results, deadline)
                .await;
        }
        let mut ocids: Vec<DomainOcid> = work
            .iter()
            .filter_map(|w| match &w.user.0 {
                DomainRoute::Ocid(ocid) => Some(ocid.clone()),
                DomainRoute::Url(_) => None,
            })
            .collect();
        ocids.sort();
        ocids.dedup();
        let lookups: Vec<_> = ocids
            .into_iter()
            .map(|ocid| async move {
                let url = self.control_plane.domain_url(&ocid, deadline).await;
                (ocid, url)
            })
            .collect();
        let mut lookups = futures_util::stream::iter(lookups).buffer_unordered(concurrency);
        let mut lookups_done = false;
        // Users are taken from `work` in order as slots free (nothing is copied up front); a user
        // whose domain is still being resolved is parked until the lookup answers.
        let mut pending = work.into_iter();
        let mut resolved: HashMap<DomainOcid, DomainUrl> = HashMap::new();
        let mut parked: HashMap<DomainOcid, Vec<RouteWork>> = HashMap::new();
        let mut failed: HashMap<DomainOcid, ResolveError> = HashMap::new();
        let mut ready: std::collections::VecDeque<(DomainUrl, RouteWork)> = Default::default();
        let claims = Claims::default();
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            while running.len() < concurrency {
                let next = match ready.pop_front() {
                    Some(next) => Some(next),
                    None => next_runnable(&mut pending, &resolved, &failed, &mut parked, results),
                };
                let Some((url, w)) = next else {
                    break;
                };
                running.push(self.process_user(url, w, &claims, call, deadline));
            }
            if running.is_empty() && lookups_done {
                return;
            }
            tokio::select! {
                Some(user_results) = running.next(), if !running.is_empty() => {
                    user_results.into_iter().for_each(|r| results.push(r));
                }
                answer = lookups.next(), if !lookups_done => match answer {
                    None => lookups_done = true,
                    Some((ocid, Ok(url))) => {
                        let users = parked.remove(&ocid).unwrap_or_default();
                        ready.extend(users.into_iter().map(|w| (url.clone(), w)));
                        resolved.insert(ocid, url);
                    }
                    Some((ocid, Err(error))) => {
                        for w in parked.remove(&ocid).unwrap_or_default() {
                            settle_unresolved(&w, &error, results);
                        }
                        // Later users of this domain are settled the same way as they come.
                        failed.insert(ocid, error);
                    }
                },
            }
        }
    }

    /// The identity-domain URL a route leads to (asking the control plane for an OCID).
    pub async fn domain_url(
        &self,
        route: &DomainRoute,
        deadline: Instant,
    ) -> Result<DomainUrl, ResolveError> {
        match route {
            DomainRoute::Url(url) => Ok(url.clone()),
            DomainRoute::Ocid(ocid) => self.control_plane.domain_url(ocid, deadline).await,
        }
    }

    async fn process_user(
        &self,
        domain_url: DomainUrl,
        work: RouteWork,
        claims: &Claims,
        call: &OpenCall,
        deadline: Instant,
    ) -> Vec<RecordResult> {
        if Instant::now() + START_MARGIN >= deadline {
            let reason = DEADLINE_BEFORE_START.into();
            return fail_all(&work, reason, Vec::new(), Outcome::Failed);
        }
        if call.stopping() {
            let reason = STOPPING_BEFORE_START.into();
            return fail_all(&work, reason, Vec::new(), Outcome::Failed);
        }
        let (_, user_ref) = &work.user;
        let domain_url = &domain_url;
        let in_flight = call.start(
            user_ref.as_str(),
            work.records.iter().map(|(index, _)| *index).collect(),
        );
        let ask_credentials = self.asks_credentials(&work);
        let wanted = self.read_attributes(ask_credentials);
        let read = self
            .client
            .get_user(domain_url, user_ref, &wanted, deadline)
            .await;
        let known = match self.learn_for(domain_url, &work, &read, deadline).await {
            Ok(known) => known,
            Err(results) => return results,
        };
        let checked = match self.check_read(&work, read, ask_credentials, known) {
            Ok(checked) => checked,
            Err(results) => return results,
        };
        // One user may be named by id in one record and by OCID in another: they are separate
        // work until the read gives the id, so the first to get here acts and every other waits
        // for its outcome.
        let claim = claims.claim(domain_url, &checked.user_id);
        in_flight.stage(Stage::Writing);
        let mut mine = None;
        let first = {
            let (mine, work, checked) = (&mut mine, &work, &checked);
            claim
                .get_or_init(|| async move {
                    let done = self
                        .apply_decision(
                            domain_url,
                            &checked.user_id,
                            &checked.decision,
                            &checked.current,
                            checked.held.as_ref(),
                            deadline,
                        )
                        .await;
                    let (result, first) = acted_result(work, checked, done);
                    *mine = Some(result);
                    first
                })
                .await
                .clone()
        };
        record_results(&work, &checked, mine, &first, self.dry_run)
    }

    /// The answer to a user's read, checked as PRODUCT.md has it (the user asked for, a record
    /// whose name matches) and decided by the policy; `Err` holds every record's result when
    /// nothing may be written.
    /// `keep` keeps the read (for the credentials it holds); `known` is what the decision knows of
    /// the user's domain ([`learn_for`](Self::learn_for)).
    pub(crate) fn check_read(
        &self,
        work: &RouteWork,
        read: Result<Answer<serde_json::Value>, Failure>,
        keep: bool,
        known: DomainKnown,
    ) -> Result<Checked, Vec<RecordResult>> {
        let user = read.map_err(|failure| {
            let reason = match failure.error.status() {
                Some(StatusCode::NOT_FOUND) => "user not found in the identity domain".to_string(),
                _ => format!("reading the user: {failure}"),
            };
            fail_all(
                work,
                reason,
                failure.request_ids.clone(),
                settled_outcome(&failure),
            )
        })?;
        let ecids = user.ecids;
        let fail = |reason: String| fail_all(work, reason, ecids.clone(), Outcome::Failed);
        let user_id = answered_user_id(&work.user.1, &user.value).map_err(fail)?;
        let actual_name = user
            .value
            .get("userName")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let current = CurrentCapabilities::from_user(&user.value);
        let decision = self.decide(&user.value, known).map_err(|no| {
            let (outcome, reason) = no.settled("reading the user");
            fail_all(work, reason, ecids.clone(), outcome)
        })?;
        let Some(actor) = work
            .records
            .iter()
            .position(|(_, target)| mismatch(target, actual_name.as_deref()).is_none())
        else {
            // Every record names someone else: nothing is written.
            return Err(work
                .records
                .iter()
                .filter_map(|(index, target)| {
                    mismatch(target, actual_name.as_deref()).map(|reason| {
                        RecordResult::for_target(*index, target, Outcome::Rejected).reason(reason)
                    })
                })
                .collect());
        };
        Ok(Checked {
            user_id,
            actual_name,
            current,
            decision,
            ecids,
            actor,
            held: keep.then_some(user.value),
        })
    }

    /// What the decision knows of the user's domain once read: the path's values, and the
    /// domain's OCID and display name learned from the read when the policy needs them. `Err`
    /// holds every record's result when a retryable lookup failed.
    pub(crate) async fn learn_for(
        &self,
        domain: &DomainUrl,
        work: &RouteWork,
        read: &Result<Answer<serde_json::Value>, Failure>,
        deadline: Instant,
    ) -> Result<DomainKnown, Vec<RecordResult>> {
        let user = read.as_ref().ok().map(|a| &a.value);
        let mut values = self.domain_facts(work);
        // The URL is known on every path (a reconcile by URL gives it too), so a rule decides
        // alike whichever path brings the user.
        if !values.iter().any(|v| v == domain.as_str()) {
            values.push(domain.as_str().to_owned());
        }
        self.domain_known(domain, values, user, deadline)
            .await
            .map_err(|f| fail_all(work, f.reason, f.ecids, Outcome::Failed))
    }

    /// The policy's decision for a user as read or listed, given what is known of its domain
    /// ([`learn_for`](Self::learn_for)). The same on every path that brings a user (a record, a
    /// listing, a search).
    pub(crate) fn decide(
        &self,
        user: &serde_json::Value,
        known: DomainKnown,
    ) -> Result<Decision, NoDecision> {
        decide(&self.policy, user, known)
    }

    /// The attributes a read (or a listing) asks for: the policy's facts, and the credentials the
    /// profile may leave lingering when `with_credentials`.
    pub(crate) fn read_attributes(&self, with_credentials: bool) -> Vec<&'static str> {
        let mut wanted = self.policy.needs().attributes();
        if with_credentials {
            wanted.extend(&self.credential_attributes);
        }
        wanted
    }

    /// Whether the read of this user asks for its credentials: not with `CREDENTIALS=off`, and not
    /// when every record names a user the policy exempts whatever the read says.
    fn asks_credentials(&self, work: &RouteWork) -> bool {
        if self.credential_attributes.is_empty() {
            return false;
        }
        let domains = work.domain_values();
        !work.records.iter().all(|(_, t)| {
            self.policy
                .certainly_exempt(t.user_name.as_deref(), &domains)
        })
    }

    /// What a reconcile request's `domains` matcher may compare: the domain as requested, the
    /// `idcs-` name in its URL and, for a domain resolved by OCID, the display name `GetDomain` gave.
    pub fn route_values(
        &self,
        route: &DomainRoute,
        requested: &str,
        url: &DomainUrl,
    ) -> Vec<String> {
        let mut values = crate::action::reconcile::domain_values(requested, url);
        if let DomainRoute::Ocid(ocid) = route {
            for v in [
                Some(ocid.as_str().to_owned()),
                self.control_plane.display_name(ocid),
            ]
            .into_iter()
            .flatten()
            {
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
        values
    }

    /// Every value the policy's `domains` matcher may compare for this user's domain: what the
    /// records gave, the `idcs-` name in the URL, and the display name the control plane gave when
    /// the domain was resolved by OCID.
    fn domain_facts(&self, work: &RouteWork) -> Vec<String> {
        let mut values = work.domain_values();
        let mut add = |v: String| {
            if !values.contains(&v) {
                values.push(v);
            }
        };
        if let DomainRoute::Url(url) = &work.user.0 {
            let label = url.host().split('.').next().unwrap_or_default();
            if let Ok(name) = crate::intake::names::DomainName::parse(label) {
                add(name.as_str().to_owned());
            }
        }
        if let DomainRoute::Ocid(ocid) = &work.user.0 {
            add(ocid.as_str().to_owned());
            if let Some(display) = self.control_plane.display_name(ocid) {
                add(display);
            }
        }
        values
    }

    /// Carries out the policy's decision for one user whose current capabilities are known: an
    /// exempt user is left alone, any other is brought to its profile with a single PUT, and then
    /// the credentials its profile leaves lingering are reported or revoked (`credentials` is the
    /// user's read when it asked for them; `None` looks at no credential).
    pub(crate) async fn apply_decision(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        decision: &Decision,
        current: &CurrentCapabilities,
        credentials: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Enforced {
        let planned = self.plan(decision, current, credentials);
        let written = match &planned.plan {
            Plan::Write { body, .. } => {
                Some(self.put_single(domain, user, body.clone(), deadline).await)
            }
            Plan::Done(_) => None,
        };
        planned.settle(self, domain, user, written, deadline).await
    }

    /// One `PUT /admin/v1/UserCapabilitiesChanger/{id}`.
    pub(crate) async fn put_single(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Written {
        match self
            .client
            .put_capabilities(domain, user, body, deadline)
            .await
        {
            Ok(answer) => Written::Done {
                ecids: answer.ecids,
            },
            Err(failure) => Written::NotDone {
                outcome: settled_outcome(&failure),
                reason: format!("writing capabilities: {failure}"),
                ecids: failure.request_ids,
            },
        }
    }

    /// What the decision asks for one user whose current capabilities are known: nothing (exempt,
    /// already compliant, a dry run, a body that cannot be built), or a write.
    /// `credentials` is the user's read when it asked for the credentials, so the plan knows which
    /// linger (an exempt user's are never looked at).
    pub(crate) fn plan(
        &self,
        decision: &Decision,
        current: &CurrentCapabilities,
        credentials: Option<&serde_json::Value>,
    ) -> Planned {
        match decision {
            Decision::Exempt { policy, reason } => Planned {
                plan: Plan::Done(Enforced::new(Outcome::Unchanged, Some(reason.clone()))),
                policy: policy.clone(),
                notes: Vec::new(),
                lingering: None,
            },
            Decision::Enforce {
                profile,
                policy,
                notes,
            } => Planned {
                plan: self.plan_profile(profile, current),
                policy: policy.clone(),
                notes: notes.clone(),
                lingering: credentials.map(|read| lingering(read, profile)),
            },
        }
    }

    /// Brings one user whose current capabilities are known to the profile: no write when it already
    /// matches, none in dry-run.
    fn plan_profile(&self, profile: &Profile, current: &CurrentCapabilities) -> Plan {
        let changes = profile.diff(current);
        if changes.is_empty() {
            return Plan::Done(Enforced::new(
                Outcome::Unchanged,
                Some("already compliant".into()),
            ));
        }
        let changed = changed_map(&changes);
        // Checked before a dry run too: a dry run reports what the real run would do.
        let body = match profile.put_body(current) {
            Ok(body) => body,
            Err(missing) => {
                return Plan::Done(Enforced::new(
                    Outcome::Failed,
                    Some(format!(
                        "the identity domain's answer has no boolean {}, which the write must copy \
                         (a write carries every capability the user has); nothing was written",
                        missing.attribute()
                    )),
                ))
            }
        };
        let note = profile.omits_console(current).then_some(CONSOLE_LEFT_OUT);
        if !self.dry_run && self.ledger.stopping() {
            return Plan::Done(Enforced::new(
                Outcome::Failed,
                Some(STOPPING_BEFORE_WRITE.into()),
            ));
        }
        if self.dry_run {
            let reason = ["dry run: would be written"]
                .into_iter()
                .chain(note)
                .collect::<Vec<_>>();
            return Plan::Done(Enforced {
                changed,
                ..Enforced::new(Outcome::Applied, Some(reason.join("; ")))
            });
        }
        Plan::Write {
            body,
            changed,
            note,
        }
    }
}

/// What the read of a user established, when a record may act on it.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The SCIM id to write with.
    pub(crate) user_id: UserId,
    actual_name: Option<String>,
    pub(crate) current: CurrentCapabilities,
    pub(crate) decision: Decision,
    /// The read's request ids.
    ecids: Vec<String>,
    /// The position (in the work's records) of the record that acts.
    actor: usize,
    /// The read itself, when it asked for the user's credentials.
    pub(crate) held: Option<serde_json::Value>,
}

/// A decision turned into what must happen, with what decided it.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) plan: Plan,
    policy: Vec<String>,
    notes: Vec<String>,
    /// The credentials the profile leaves lingering, when the read asked for them.
    lingering: Option<Result<Vec<Held>, String>>,
}

/// Nothing to send (the outcome is known), or one write.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Settled without a write.
    Done(Enforced),
    /// The PUT body to send, and what to report once it is written.
    Write {
        /// The `UserCapabilitiesChanger` body.
        body: Vec<u8>,
        changed: BTreeMap<&'static str, [Option<bool>; 2]>,
        note: Option<&'static str>,
    },
}

/// What became of a write, by a single PUT or inside a Bulk request.
#[derive(Debug)]
pub(crate) enum Written {
    /// Written.
    Done {
        /// The request ids of the calls that carried it.
        ecids: Vec<String>,
    },
    /// Not written (or not known to be).
    NotDone {
        outcome: Outcome,
        reason: String,
        ecids: Vec<String>,
    },
}

impl Planned {
    /// The user's result once the write (if any) is done (`written` is `None` when nothing was
    /// sent), and the lingering credentials reported or revoked.
    pub(crate) async fn settle(
        self,
        engine: &Engine,
        domain: &DomainUrl,
        user: &UserId,
        written: Option<Written>,
        deadline: Instant,
    ) -> Enforced {
        let (lingering, decided) = self.noted(engine, domain, user, written);
        let done = match lingering {
            Lingering::Settled(done) => done,
            Lingering::Revoke(done, held) => {
                let revocation = engine.revoke(domain, user, &held, deadline).await;
                conclude(done, revocation)
            }
        };
        decided.finish(done)
    }

    /// [`settle`](Self::settle) up to the credential deletes, for users whose deletes go
    /// together: the outcome of the write with the lingering credentials noted (and those still
    /// to delete), and what decided it, to [`Decided::finish`] once they are deleted.
    pub(crate) fn noted(
        self,
        engine: &Engine,
        domain: &DomainUrl,
        user: &UserId,
        written: Option<Written>,
    ) -> (Lingering, Decided) {
        let Planned {
            plan,
            policy,
            notes,
            lingering,
        } = self;
        let done = finish_write(plan, written);
        let noted = match lingering {
            Some(held) => engine.note_lingering(domain, user, held, done),
            None => Lingering::Settled(done),
        };
        (noted, Decided { policy, notes })
    }
}

/// What decided a user's profile, for its result: the policy's names and its notes.
#[derive(Debug)]
pub(crate) struct Decided {
    policy: Vec<String>,
    notes: Vec<String>,
}

impl Decided {
    /// `done` with what decided it, the notes added to its reason.
    pub(crate) fn finish(self, mut done: Enforced) -> Enforced {
        done.policy = self.policy;
        if !self.notes.is_empty() {
            let mut reason = done.reason.take().map(|r| vec![r]).unwrap_or_default();
            reason.extend(self.notes);
            done.reason = Some(reason.join("; "));
        }
        done
    }
}

/// The user's result from the plan and what became of its write.
fn finish_write(plan: Plan, written: Option<Written>) -> Enforced {
    {
        match (plan, written) {
            (Plan::Done(enforced), _) => enforced,
            (Plan::Write { changed, note, .. }, Some(Written::Done { ecids })) => Enforced {
                changed,
                ecids,
                ..Enforced::new(Outcome::Applied, note.map(str::to_owned))
            },
            (
                Plan::Write { .. },
                Some(Written::NotDone {
                    outcome,
                    reason,
                    ecids,
                }),
            ) => Enforced::new(outcome, Some(reason)).with_ecids(ecids),
            (Plan::Write { .. }, None) => Enforced::new(
                Outcome::Failed,
                Some("internal: a planned write was not sent".into()),
            ),
        }
    }
}

/// The reason given to a user the deadline left no time for.
pub(crate) const DEADLINE_BEFORE_START: &str = "deadline reached before this user was processed";

/// Every record of `work` ends alike: the first carries the reason, each later one is a duplicate
/// of it.
pub(crate) fn fail_all(
    work: &RouteWork,
    reason: String,
    ecids: Vec<String>,
    outcome: Outcome,
) -> Vec<RecordResult> {
    let first = work.records.first().map_or(0, |(index, _)| *index);
    work.records
        .iter()
        .map(|(index, target)| {
            let reason = if *index == first {
                reason.clone()
            } else {
                duplicate_reason(first, &reason)
            };
            RecordResult::for_target(*index, target, outcome)
                .reason(reason)
                .request_ids(ecids.clone())
        })
        .collect()
}

/// Why a record may not act on the user read: it names another user.
fn mismatch(target: &Target, actual_name: Option<&str>) -> Option<String> {
    let differs = match (&target.user_name, actual_name) {
        (Some(named), Some(actual)) => !named.eq_ignore_ascii_case(actual),
        (Some(_), None) => true,
        (None, _) => false,
    };
    differs.then(|| {
        format!(
            "identity mismatch: the record names {:?}, the identity domain has {:?} for this id",
            target.user_name.as_deref().unwrap_or_default(),
            actual_name.unwrap_or("<no userName>")
        )
    })
}

/// The acting record's result, and what later records of the same user repeat of it.
pub(crate) fn acted_result(
    work: &RouteWork,
    checked: &Checked,
    done: Enforced,
) -> (RecordResult, FirstOutcome) {
    let (index, target) = &work.records[checked.actor];
    let base =
        RecordResult::for_target(*index, target, done.outcome).request_ids(checked.ecids.clone());
    let result = RecordResult {
        user: base.user.settled(done),
        ..base
    };
    let reason = result
        .user
        .reason
        .clone()
        .unwrap_or_else(|| result.user.outcome.as_str().to_string());
    let first = (*index, result.user.outcome, reason);
    (result, first)
}

/// Every record's result once the user is settled: a record naming someone else is rejected,
/// the actor gets `mine` (when it acted), every other is a duplicate of `first`.
pub(crate) fn record_results(
    work: &RouteWork,
    checked: &Checked,
    mut mine: Option<RecordResult>,
    first: &FirstOutcome,
    dry_run: bool,
) -> Vec<RecordResult> {
    let mut results = Vec::with_capacity(work.records.len());
    for (pos, (index, target)) in work.records.iter().enumerate() {
        if let Some(reason) = mismatch(target, checked.actual_name.as_deref()) {
            results
                .push(RecordResult::for_target(*index, target, Outcome::Rejected).reason(reason));
            continue;
        }
        if pos == checked.actor {
            if let Some(result) = mine.take() {
                results.push(result);
                continue;
            }
        }
        let mut duplicate = duplicate_of(*index, target, first.0, first.1, &first.2, dry_run);
        duplicate.user.policy = checked.decision.policy().to_vec();
        results.push(duplicate);
    }
    results
}

/// The record that acted on a user, its outcome and its reason.
pub(crate) type FirstOutcome = (usize, Outcome, String);

/// The reason of a write not sent because the process is stopping.
const STOPPING_BEFORE_WRITE: &str =
    "the function was stopping (SIGTERM) before this user's write was sent; nothing was written";

/// The reason of a write that left `canUseConsole` out ([`Profile::omits_console`]).
const CONSOLE_LEFT_OUT: &str = "the user's answer has no canUseConsole (an identity domain from \
     before the attribute) and console is unmanaged, so the write left it out";

/// A later record for a user already acted on: its first record's outcome, mapped by
/// [`duplicate_outcome`].
fn duplicate_of(
    index: usize,
    target: &Target,
    first: usize,
    first_outcome: Outcome,
    first_reason: &str,
    dry_run: bool,
) -> RecordResult {
    let outcome = duplicate_outcome(first_outcome, dry_run);
    RecordResult::for_target(index, target, outcome).reason(duplicate_reason(first, first_reason))
}

/// The outcome of a duplicate whose first record ended `first`: that outcome's class, never
/// `unchanged` for a user that was not made compliant. In a dry run nothing was written, so a
/// duplicate of a would-be write says what its first record says (`applied`, would be written),
/// not `unchanged`. `plan` predicts duplicates with it too.
pub(crate) fn duplicate_outcome(first: Outcome, dry_run: bool) -> Outcome {
    match first {
        Outcome::Applied if dry_run => Outcome::Applied,
        Outcome::Applied | Outcome::Unchanged | Outcome::Ignored => Outcome::Unchanged,
        Outcome::Rejected => Outcome::Rejected,
        Outcome::Failed => Outcome::Failed,
    }
}

fn duplicate_reason(first: usize, first_reason: &str) -> String {
    format!("duplicate of record {first}: {first_reason}")
}

/// A request that did not succeed ends the record as the classifier settled it.
fn settled_outcome(failure: &Failure) -> Outcome {
    match failure.settled {
        Settled::Rejected => Outcome::Rejected,
        Settled::Failed => Outcome::Failed,
    }
}

/// The result of enforcing the profile on one user.
#[derive(Debug, Clone)]
pub(crate) struct Enforced {
    pub(crate) outcome: Outcome,
    /// What decided the profile (see [`RecordResult::policy`]).
    pub(crate) policy: Vec<String>,
    pub(crate) changed: BTreeMap<&'static str, [Option<bool>; 2]>,
    /// Lingering credentials by type (see [`RecordResult::lingering`]).
    pub(crate) lingering: Counts,
    /// Revoked credentials by type (see [`RecordResult::revoked`]).
    pub(crate) revoked: Counts,
    pub(crate) reason: Option<String>,
    pub(crate) ecids: Vec<String>,
}

impl Enforced {
    pub(crate) fn new(outcome: Outcome, reason: Option<String>) -> Self {
        Enforced {
            outcome,
            policy: Vec::new(),
            changed: BTreeMap::new(),
            lingering: Counts::new(),
            revoked: Counts::new(),
            reason,
            ecids: Vec::new(),
        }
    }

    fn with_ecids(mut self, ecids: Vec<String>) -> Self {
        self.ecids = ecids;
        self
    }
}

/// Which record of a batch acts on each user (by domain and SCIM id), and its outcome once known.
#[derive(Default)]
struct Claims(std::sync::Mutex<HashMap<(DomainUrl, UserId), Arc<Claim>>>);

/// The first record that acted on a user, and its outcome.
type Claim = OnceCell<(usize, Outcome, String)>;

impl Claims {
    fn claim(&self, domain: &DomainUrl, user: &UserId) -> Arc<Claim> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry((domain.clone(), user.clone())).or_default())
    }
}

/// The result of a record that never reached a user: ignored, or rejected on its own values.
fn settled_result(index: usize, triaged: Triage) -> RecordResult {
    match triaged {
        Triage::Ignored {
            event_id,
            domain,
            reason,
        } => RecordResult {
            event_id,
            domain,
            ..RecordResult::new(index, Outcome::Ignored)
        }
        .reason(reason.as_str()),
        Triage::Rejected {
            event_id,
            domain,
            user_id,
            user_name,
            reason,
        } => RecordResult {
            event_id,
            domain,
            user: UserEntry {
                user_id,
                user_name,
                ..UserEntry::new(Outcome::Rejected)
            },
            ..RecordResult::new(index, Outcome::Rejected)
        }
        .reason(reason),
        // Acting records are grouped by user, never settled; answer rather than panic.
        Triage::Act(target) => RecordResult::for_target(index, &target, Outcome::Failed)
            .reason("internal: an acting record was not processed"),
    }
}

/// The next user that can start: taken from `pending` in order; a user whose domain OCID is not
/// resolved yet is parked (its lookup is under way), one whose lookup failed is settled, and the next
/// one is tried.
fn next_runnable(
    pending: &mut std::vec::IntoIter<RouteWork>,
    resolved: &HashMap<DomainOcid, DomainUrl>,
    failed: &HashMap<DomainOcid, ResolveError>,
    parked: &mut HashMap<DomainOcid, Vec<RouteWork>>,
    results: &SettledResults<'_>,
) -> Option<(DomainUrl, RouteWork)> {
    for w in pending.by_ref() {
        let ocid = match &w.user.0 {
            DomainRoute::Url(url) => return Some((url.clone(), w)),
            DomainRoute::Ocid(ocid) => ocid,
        };
        if let Some(url) = resolved.get(ocid) {
            return Some((url.clone(), w));
        }
        match failed.get(ocid) {
            Some(error) => settle_unresolved(&w, error, results),
            None => parked.entry(ocid.clone()).or_default().push(w),
        }
    }
    None
}

/// Every record of a user whose domain OCID has no usable URL.
fn settle_unresolved(w: &RouteWork, error: &ResolveError, results: &SettledResults<'_>) {
    for (index, target) in &w.records {
        results.push(unresolved(*index, target, error));
    }
}

/// The result of a record whose domain OCID has no usable URL.
pub(crate) fn unresolved(index: usize, target: &Target, error: &ResolveError) -> RecordResult {
    match error {
        ResolveError::Rejected(reason) => {
            RecordResult::for_target(index, target, Outcome::Rejected).reason(reason.clone())
        }
        ResolveError::Failed { reason, ecids } => {
            RecordResult::for_target(index, target, Outcome::Failed)
                .reason(reason.clone())
                .request_ids(ecids.clone())
        }
    }
}

fn changed_map(changes: &[Change]) -> BTreeMap<&'static str, [Option<bool>; 2]> {
    changes
        .iter()
        .map(|c| (c.capability.attribute(), [c.from, Some(c.to)]))
        .collect()
}

/// Logs one record's outcome: called the moment the outcome is settled, so a record's line never
/// waits for the batch (or the report, which may leave the record out) and survives a kill.
pub fn log_record(r: &RecordResult) {
    let u = &r.user;
    let changed = if u.changed.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&u.changed).unwrap_or_default()
    };
    let ids = u.request_ids.join(",");
    let counts = |c: &Counts| {
        if c.is_empty() {
            String::new()
        } else {
            serde_json::to_string(c).unwrap_or_default()
        }
    };
    let (lingering, revoked) = (counts(&u.lingering), counts(&u.revoked));
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                index = r.index,
                event_id = r.event_id.as_deref().unwrap_or(""),
                domain = r.domain.as_deref().unwrap_or(""),
                user_id = u.user_id.as_deref().unwrap_or(""),
                user_name = u.user_name.as_deref().unwrap_or(""),
                outcome = u.outcome.as_str(),
                policy = %u.policy.join(","),
                changed = %changed,
                lingering = %lingering,
                revoked = %revoked,
                reason = u.reason.as_deref().unwrap_or(""),
                request_ids = %ids,
                "record"
            )
        };
    }
    match u.outcome {
        Outcome::Failed => line!(error),
        Outcome::Rejected => line!(warn),
        _ => line!(info),
    }
}

/// Logs the summary line (each record's line was logged as it settled).
pub fn log_report(report: &Report) {
    tracing::info!(
        received = report.received,
        applied = report.applied,
        unchanged = report.unchanged,
        ignored = report.ignored,
        rejected = report.rejected,
        failed = report.failed,
        dry_run = report.dry_run,
        lingering = %serde_json::to_string(&report.lingering).unwrap_or_default(),
        revoked = %serde_json::to_string(&report.revoked).unwrap_or_default(),
        "summary"
    );
}
