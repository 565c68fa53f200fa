//! Orchestration: from the records of a batch to one outcome per record.
//!
//! Each distinct user is read once, checked against every record that names it, compared with the profile
//! and written only when something differs. At most `max_concurrency` users are in flight; users not yet
//! started when the deadline is near are reported `failed`, so the platform retries the batch.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::audit::{Records, Target, Triage};
use crate::config::{Config, DomainPolicy, EventTypes};
use crate::identity_domain::{Failure, IdentityDomainClient};
use crate::names::{DomainUrl, UserId};
use crate::profile::{Change, CurrentCapabilities, Profile};

/// Work is not started on a user with less than this left before the deadline: one read and one write
/// must fit, with room to answer.
pub const START_MARGIN: Duration = Duration::from_millis(1500);

/// Above this many ignored records the report summarises them instead of listing each.
pub const IGNORED_LISTED_MAX: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    Unchanged,
    Ignored,
    Rejected,
    Failed,
}

impl Outcome {
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

/// One record's result, as the response and the log show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub outcome: Outcome,
    /// Attribute → [before, after]; `before` is null when the domain did not report a value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub changed: BTreeMap<&'static str, [Option<bool>; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Identity-domain request ids (`X-ORACLE-DMS-ECID`) for the calls made for this record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
}

impl RecordResult {
    fn new(index: usize, outcome: Outcome) -> Self {
        RecordResult {
            index,
            event_id: None,
            domain: None,
            user_id: None,
            user_name: None,
            outcome,
            changed: BTreeMap::new(),
            reason: None,
            request_ids: Vec::new(),
        }
    }

    fn for_target(index: usize, target: &Target, outcome: Outcome) -> Self {
        RecordResult {
            event_id: target.event_id.clone(),
            domain: Some(target.domain.clone()),
            user_id: Some(target.user_id.as_str().to_string()),
            user_name: target.user_name.clone(),
            ..Self::new(index, outcome)
        }
    }

    fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// The invocation's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub received: usize,
    pub applied: usize,
    pub unchanged: usize,
    pub ignored: usize,
    pub rejected: usize,
    pub failed: usize,
    pub dry_run: bool,
    pub results: Vec<RecordResult>,
    /// Set when ignored records were summarised rather than listed: reason → count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored_summary: Option<BTreeMap<String, usize>>,
    /// Set when the body could not be used at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
            results: Vec::new(),
            ignored_summary: None,
            error: Some(error.into()),
        }
    }

    pub fn from_results(mut results: Vec<RecordResult>, dry_run: bool) -> Self {
        results.sort_by_key(|r| r.index);
        let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
        let mut report = Report {
            received: results.len(),
            applied: count(Outcome::Applied),
            unchanged: count(Outcome::Unchanged),
            ignored: count(Outcome::Ignored),
            rejected: count(Outcome::Rejected),
            failed: count(Outcome::Failed),
            dry_run,
            results,
            ignored_summary: None,
            error: None,
        };
        if report.ignored > IGNORED_LISTED_MAX {
            let mut summary = BTreeMap::new();
            for r in report
                .results
                .iter()
                .filter(|r| r.outcome == Outcome::Ignored)
            {
                *summary
                    .entry(r.reason.clone().unwrap_or_default())
                    .or_insert(0) += 1;
            }
            report.results.retain(|r| r.outcome != Outcome::Ignored);
            report.ignored_summary = Some(summary);
        }
        report
    }

    /// Whether the platform should retry the invocation.
    pub fn needs_retry(&self) -> bool {
        self.failed > 0
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }
}

/// What the engine needs besides the records: the client and the settings that decide and bound the
/// work, taken from a validated [`Config`].
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) client: IdentityDomainClient,
    pub(crate) profile: Profile,
    pub(crate) dry_run: bool,
    pub(crate) max_concurrency: usize,
}

/// All records that name one user, in batch order.
struct UserWork {
    domain_url: DomainUrl,
    user_id: UserId,
    records: Vec<(usize, Target)>,
}

impl Engine {
    /// An engine that enforces `config`'s profile with `client`.
    pub fn new(client: IdentityDomainClient, config: &Config) -> Self {
        Engine {
            client,
            profile: config.profile,
            dry_run: config.dry_run,
            max_concurrency: config.max_concurrency,
        }
    }

    /// Processes a batch of raw records and returns one result per record.
    pub async fn process_records(
        &self,
        records: &Records,
        events: &EventTypes,
        domains: &DomainPolicy,
        deadline: Instant,
    ) -> Report {
        let mut results = Vec::with_capacity(records.len());
        let mut work: Vec<UserWork> = Vec::new();
        let mut by_user: HashMap<(String, String), usize> = HashMap::new();
        for (index, triaged) in records.triage(events, domains).enumerate() {
            match triaged {
                Triage::Act(target) => {
                    let key = (
                        target.domain_url.as_str().to_string(),
                        target.user_id.as_str().to_string(),
                    );
                    let slot = *by_user.entry(key).or_insert_with(|| {
                        work.push(UserWork {
                            domain_url: target.domain_url.clone(),
                            user_id: target.user_id.clone(),
                            records: Vec::new(),
                        });
                        work.len() - 1
                    });
                    work[slot].records.push((index, target));
                }
                Triage::Ignored {
                    event_id,
                    domain,
                    reason,
                } => {
                    results.push(
                        RecordResult {
                            event_id,
                            domain,
                            ..RecordResult::new(index, Outcome::Ignored)
                        }
                        .reason(reason.as_str()),
                    );
                }
                Triage::Rejected {
                    event_id,
                    domain,
                    user_id,
                    user_name,
                    reason,
                } => {
                    results.push(
                        RecordResult {
                            event_id,
                            domain,
                            user_id,
                            user_name,
                            ..RecordResult::new(index, Outcome::Rejected)
                        }
                        .reason(reason),
                    );
                }
            }
        }
        let concurrency = self.max_concurrency.max(1);
        let mut done =
            futures_util::stream::iter(work.into_iter().map(|w| self.process_user(w, deadline)))
                .buffer_unordered(concurrency);
        while let Some(user_results) = done.next().await {
            results.extend(user_results);
        }
        Report::from_results(results, self.dry_run)
    }

    async fn process_user(&self, work: UserWork, deadline: Instant) -> Vec<RecordResult> {
        let fail_all = |reason: String, ecids: Vec<String>, outcome: Outcome| {
            work.records
                .iter()
                .map(|(index, target)| RecordResult {
                    request_ids: ecids.clone(),
                    ..RecordResult::for_target(*index, target, outcome).reason(reason.clone())
                })
                .collect::<Vec<_>>()
        };
        if Instant::now() + START_MARGIN >= deadline {
            return fail_all(
                "deadline reached before this user was processed".into(),
                Vec::new(),
                Outcome::Failed,
            );
        }
        let user = match self
            .client
            .get_user(&work.domain_url, &work.user_id, deadline)
            .await
        {
            Ok(answer) => answer,
            Err(Failure { error, ecids }) => {
                let (outcome, reason) = match error.status() {
                    Some(404) => (
                        Outcome::Rejected,
                        "user not found in the identity domain".to_string(),
                    ),
                    _ if error.retryable() => {
                        (Outcome::Failed, format!("reading the user: {error}"))
                    }
                    _ => (Outcome::Rejected, format!("reading the user: {error}")),
                };
                return fail_all(reason, ecids, outcome);
            }
        };
        let mut ecids = user.ecids;
        let actual_name = user
            .value
            .get("userName")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let current = CurrentCapabilities::from_user(&user.value);

        let mut results = Vec::with_capacity(work.records.len());
        let mut acted: Option<(usize, Outcome)> = None;
        for (index, target) in &work.records {
            let mismatch = match (&target.user_name, &actual_name) {
                (Some(named), Some(actual)) => !named.eq_ignore_ascii_case(actual),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if mismatch {
                let reason = format!(
                    "identity mismatch: the record names {:?}, the identity domain has {:?} for this id",
                    target.user_name.as_deref().unwrap_or_default(),
                    actual_name.as_deref().unwrap_or("<no userName>")
                );
                results.push(
                    RecordResult::for_target(*index, target, Outcome::Rejected).reason(reason),
                );
                continue;
            }
            if let Some((first, outcome)) = acted {
                let result = RecordResult::for_target(*index, target, Outcome::Unchanged)
                    .reason(format!("duplicate of record {first}"));
                // A failed first attempt leaves the user unfinished: its duplicates must be retried too.
                let result = if outcome == Outcome::Failed {
                    RecordResult {
                        outcome: Outcome::Failed,
                        ..result
                    }
                } else {
                    result
                };
                results.push(result);
                continue;
            }
            let mut result = self
                .enforce(&work, target, *index, &current, &mut ecids, deadline)
                .await;
            result.request_ids = ecids.clone();
            acted = Some((*index, result.outcome));
            results.push(result);
        }
        results
    }

    /// Compares and writes for the record that acts on the user.
    async fn enforce(
        &self,
        work: &UserWork,
        target: &Target,
        index: usize,
        current: &CurrentCapabilities,
        ecids: &mut Vec<String>,
        deadline: Instant,
    ) -> RecordResult {
        let done = self
            .enforce_user(&work.domain_url, &work.user_id, current, deadline)
            .await;
        ecids.extend(done.ecids);
        RecordResult {
            changed: done.changed,
            reason: done.reason,
            ..RecordResult::for_target(index, target, done.outcome)
        }
    }

    /// Brings one user whose current capabilities are known to the profile: no write when it already
    /// matches, none in dry-run.
    pub async fn enforce_user(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        current: &CurrentCapabilities,
        deadline: Instant,
    ) -> Enforced {
        let changes = self.profile.diff(current);
        if changes.is_empty() {
            return Enforced::new(Outcome::Unchanged, Some("already compliant".into()));
        }
        let changed = changed_map(&changes);
        if self.dry_run {
            return Enforced {
                changed,
                ..Enforced::new(Outcome::Applied, Some("dry run: not written".into()))
            };
        }
        let body = self.profile.put_body(current);
        match self
            .client
            .put_capabilities(domain, user, body, deadline)
            .await
        {
            Ok(answer) => Enforced {
                changed,
                ecids: answer.ecids,
                ..Enforced::new(Outcome::Applied, None)
            },
            Err(Failure { error, ecids }) => {
                let outcome = match error.status() {
                    Some(404) => Outcome::Rejected,
                    _ if error.retryable() => Outcome::Failed,
                    _ => Outcome::Rejected,
                };
                Enforced {
                    ecids,
                    ..Enforced::new(outcome, Some(format!("writing capabilities: {error}")))
                }
            }
        }
    }
}

/// The result of enforcing the profile on one user.
#[derive(Debug, Clone)]
pub struct Enforced {
    pub outcome: Outcome,
    pub changed: BTreeMap<&'static str, [Option<bool>; 2]>,
    pub reason: Option<String>,
    pub ecids: Vec<String>,
}

impl Enforced {
    pub fn new(outcome: Outcome, reason: Option<String>) -> Self {
        Enforced {
            outcome,
            changed: BTreeMap::new(),
            reason,
            ecids: Vec::new(),
        }
    }
}

fn changed_map(changes: &[Change]) -> BTreeMap<&'static str, [Option<bool>; 2]> {
    changes
        .iter()
        .map(|c| (c.capability.attribute(), [c.from, Some(c.to)]))
        .collect()
}

/// Logs one line per record and one summary line.
pub fn log_report(report: &Report) {
    let quiet_ignored = report.received > 1000;
    for r in &report.results {
        let changed = if r.changed.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&r.changed).unwrap_or_default()
        };
        let ids = r.request_ids.join(",");
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    index = r.index,
                    event_id = r.event_id.as_deref().unwrap_or(""),
                    domain = r.domain.as_deref().unwrap_or(""),
                    user_id = r.user_id.as_deref().unwrap_or(""),
                    user_name = r.user_name.as_deref().unwrap_or(""),
                    outcome = r.outcome.as_str(),
                    changed = %changed,
                    reason = r.reason.as_deref().unwrap_or(""),
                    request_ids = %ids,
                    "record"
                )
            };
        }
        match r.outcome {
            Outcome::Failed => line!(error),
            Outcome::Rejected => line!(warn),
            Outcome::Ignored if quiet_ignored => line!(debug),
            _ => line!(info),
        }
    }
    tracing::info!(
        received = report.received,
        applied = report.applied,
        unchanged = report.unchanged,
        ignored = report.ignored,
        rejected = report.rejected,
        failed = report.failed,
        dry_run = report.dry_run,
        "summary"
    );
}
