//! Reconcile: bring users that already exist to the profile, page by page.
//!
//! Pages are read sorted by creation time, so users created during a run land on later pages. A run stops
//! at `maxUsers` or before the deadline and returns `nextStartIndex`; running again from there continues
//! the scan, and users seen twice cost a read but never a second write (they are already compliant).

use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::apply::{Engine, Outcome, START_MARGIN};
use crate::identity_domain::Failure;
use crate::names::{DomainUrl, UserId};
use crate::profile::CurrentCapabilities;

/// Users created by SAML JIT. `creationMechanism` is `returned: request`, so listing asks for it.
pub const DEFAULT_FILTER: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User:creationMechanism eq \"samljit\"";
/// If a domain's JIT users do not carry `samljit`, federated users are the next best selection.
pub const FEDERATED_FILTER: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User:isFederatedUser eq true";
/// The service's largest page.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// How many per-user entries a report lists (failures always, changes up to this many).
pub const LISTED_MAX: usize = 200;

#[derive(Debug, Clone)]
pub struct ReconcileJob {
    pub domain: DomainUrl,
    pub filter: String,
    pub start_index: u64,
    pub max_users: Option<u64>,
    pub page_size: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub changed: std::collections::BTreeMap<&'static str, [Option<bool>; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    pub domain: String,
    pub filter: String,
    pub start_index: u64,
    pub scanned: u64,
    pub applied: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub failed: u64,
    pub dry_run: bool,
    pub total_results: Option<u64>,
    /// Where to continue; absent when the domain was scanned to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_start_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_because: Option<StopReason>,
    /// A page that could not be read (after retries): the run ended there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed and rejected users always; applied users up to `LISTED_MAX`.
    pub users: Vec<UserEntry>,
}

/// Why a reconcile run stopped before the end of the listing (it then reports `nextStartIndex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// The request's `maxUsers` were processed.
    #[serde(rename = "maxUsers reached")]
    MaxUsers,
    /// Too little time was left before the deadline for another page.
    #[serde(rename = "deadline near")]
    Deadline,
}

impl ReconcileReport {
    /// Whether the invocation should fail so the caller retries (a page or a write failed).
    pub fn needs_retry(&self) -> bool {
        self.failed > 0 || self.error.is_some()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }
}

pub async fn reconcile(engine: &Engine, job: &ReconcileJob, deadline: Instant) -> ReconcileReport {
    let mut report = ReconcileReport {
        domain: job.domain.as_str().to_string(),
        filter: job.filter.clone(),
        start_index: job.start_index.max(1),
        scanned: 0,
        applied: 0,
        unchanged: 0,
        rejected: 0,
        failed: 0,
        dry_run: engine.dry_run,
        total_results: None,
        next_start_index: None,
        stopped_because: None,
        error: None,
        users: Vec::new(),
    };
    let page_size = job.page_size.clamp(1, MAX_PAGE_SIZE);
    let mut index = job.start_index.max(1);
    loop {
        let budget_left = job.max_users.map(|m| m.saturating_sub(report.scanned));
        if budget_left == Some(0) {
            report.next_start_index = Some(index);
            report.stopped_because = Some(StopReason::MaxUsers);
            break;
        }
        if Instant::now() + START_MARGIN >= deadline {
            report.next_start_index = Some(index);
            report.stopped_because = Some(StopReason::Deadline);
            break;
        }
        let count = budget_left.map_or(page_size, |left| left.min(page_size));
        let page = match engine
            .client
            .list_users(&job.domain, &job.filter, index, count, deadline)
            .await
        {
            Ok(answer) => answer.value,
            Err(Failure { error, .. }) => {
                // Nothing after this page was looked at: the caller continues from here.
                report.next_start_index = Some(index);
                report.error = Some(format!("listing users from index {index}: {error}"));
                break;
            }
        };
        report.total_results = Some(page.total_results);
        if page.resources.is_empty() {
            break;
        }
        let fetched = page.resources.len() as u64;
        // Futures are made up front (they start only when polled) so none borrows from a closure.
        let pending: Vec<_> = page
            .resources
            .iter()
            .enumerate()
            .map(|(pos, user)| reconcile_user(engine, &job.domain, pos, user, deadline))
            .collect();
        let mut outcomes: Vec<(usize, Option<UserEntry>)> = futures_util::stream::iter(pending)
            .buffer_unordered(engine.max_concurrency.max(1))
            .collect()
            .await;
        outcomes.sort_by_key(|(pos, _)| *pos);
        // Users not started for lack of time: continue from the first of them next time.
        let first_skipped = outcomes
            .iter()
            .find(|(_, e)| e.is_none())
            .map(|(pos, _)| *pos as u64);
        for entry in outcomes.into_iter().filter_map(|(_, e)| e) {
            report.scanned += 1;
            match entry.outcome {
                Outcome::Applied => report.applied += 1,
                Outcome::Unchanged | Outcome::Ignored => report.unchanged += 1,
                Outcome::Rejected => report.rejected += 1,
                Outcome::Failed => report.failed += 1,
            }
            let listed = match entry.outcome {
                Outcome::Failed | Outcome::Rejected => true,
                Outcome::Applied => report.users.len() < LISTED_MAX,
                _ => false,
            };
            if listed {
                report.users.push(entry);
            }
        }
        if let Some(pos) = first_skipped {
            report.next_start_index = Some(index + pos);
            report.stopped_because = Some(StopReason::Deadline);
            break;
        }
        index += fetched;
        if index > page.total_results {
            break;
        }
    }
    report
}

/// The user's position in its page, with `None` when the deadline left no time to start it.
async fn reconcile_user(
    engine: &Engine,
    domain: &DomainUrl,
    pos: usize,
    user: &serde_json::Value,
    deadline: Instant,
) -> (usize, Option<UserEntry>) {
    (pos, reconcile_one(engine, domain, user, deadline).await)
}

async fn reconcile_one(
    engine: &Engine,
    domain: &DomainUrl,
    user: &serde_json::Value,
    deadline: Instant,
) -> Option<UserEntry> {
    if Instant::now() + START_MARGIN >= deadline {
        return None;
    }
    let user_name = user
        .get("userName")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let raw_id = user.get("id").and_then(|v| v.as_str());
    let entry = |outcome, reason: Option<String>| UserEntry {
        user_id: raw_id.map(str::to_string),
        user_name: user_name.clone(),
        outcome,
        changed: Default::default(),
        reason,
        request_ids: Vec::new(),
    };
    let id = match raw_id.map(UserId::parse) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return Some(entry(Outcome::Rejected, Some(e.to_string()))),
        None => {
            return Some(entry(
                Outcome::Rejected,
                Some("listed user has no id".into()),
            ))
        }
    };
    let current = CurrentCapabilities::from_user(user);
    let done = engine.enforce_user(domain, &id, &current, deadline).await;
    Some(UserEntry {
        changed: done.changed,
        request_ids: done.ecids,
        ..entry(done.outcome, done.reason)
    })
}
