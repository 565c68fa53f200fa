//! Reconcile: bring users that already exist to the profile, page by page.
//!
//! Pages are read sorted by creation time, so users created during a run land on later pages. A run stops
//! at `maxUsers` or before the deadline and returns `nextStartIndex`; running again from there continues
//! the scan, and users seen twice cost a read but never a second write (they are already compliant).

use std::collections::HashSet;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::action::apply::{Enforced, Engine, Outcome, Plan, Planned, START_MARGIN};
use crate::action::credentials::{conclude, Lingering};
use crate::clients::identity_domain::UserPage;
use crate::decision::credentials::{add_counts, Counts};
use crate::decision::policy::UserFacts;
use crate::decision::profile::CurrentCapabilities;
use crate::intake::names::{DomainName, DomainUrl, UserId};

/// Users created by SAML JIT. `creationMechanism` is `returned: request`, so listing asks for it.
pub const DEFAULT_FILTER: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User:creationMechanism eq \"samljit\"";
/// The service's largest page.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// How many per-user entries a report lists (failures always, changes up to this many).
pub const LISTED_MAX: usize = 200;

/// One reconcile run: which domain's users to page through, and how far.
#[derive(Debug, Clone)]
pub struct ReconcileJob {
    /// The identity domain's base URL (already resolved from a name or OCID).
    pub domain: DomainUrl,
    /// The domain as the request named it (name, display name, OCID or URL), for the policy's
    /// `domains` matcher; see [`domain_values`].
    pub domain_values: Vec<String>,
    /// The SCIM filter that selects users ([`DEFAULT_FILTER`] unless the request gave one).
    pub filter: String,
    /// The 1-based SCIM `startIndex` of the first page (0 is read as 1).
    pub start_index: u64,
    /// Stop after scanning this many users; `None` scans to the end.
    pub max_users: Option<u64>,
    /// Users asked for per page, clamped to 1..=[`MAX_PAGE_SIZE`].
    pub page_size: u64,
}

/// One listed user's result, as the reconcile report shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEntry {
    /// The user's SCIM id; `None` when the listing gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's `userName`, when listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// How the user ended.
    pub outcome: Outcome,
    /// What decided the user's profile (see `RecordResult::policy`).
    pub policy: Vec<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    /// Attribute → [before, after] for each capability written (or that a dry run would write).
    pub changed: std::collections::BTreeMap<&'static str, [Option<bool>; 2]>,
    /// Credentials the user holds for a capability its profile turns off, by type.
    #[serde(skip_serializing_if = "Counts::is_empty")]
    pub lingering: Counts,
    /// Of those, the ones revoked (in a dry run, that would be), by type.
    #[serde(skip_serializing_if = "Counts::is_empty")]
    pub revoked: Counts,
    /// Why it ended so, when there is more to say than the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Identity-domain request ids (`X-ORACLE-DMS-ECID`) of the calls made for this user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
}

/// A reconcile run's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// The domain's base URL.
    pub domain: String,
    /// The SCIM filter the listing used.
    pub filter: String,
    /// The 1-based index the run started from.
    pub start_index: u64,
    /// Distinct users processed (a user listed twice counts once).
    pub scanned: u64,
    /// Users written (or that a dry run would write).
    pub applied: u64,
    /// Users already compliant or exempt.
    pub unchanged: u64,
    /// Users that cannot be fixed by a retry (no id, a refused write).
    pub rejected: u64,
    /// Users a retry may fix; any makes the invocation fail.
    pub failed: u64,
    /// True when `DRY_RUN` is on: nothing was written.
    pub dry_run: bool,
    /// The scanned users' lingering credentials, by type: how many credentials exist that the
    /// policy says should not.
    #[serde(skip_serializing_if = "Counts::is_empty")]
    pub lingering: Counts,
    /// Of those, the ones revoked (in a dry run, that would be), by type.
    #[serde(skip_serializing_if = "Counts::is_empty")]
    pub revoked: Counts,
    /// `totalResults` of the last page read; `None` when no page was read.
    pub total_results: Option<u64>,
    /// Where to continue; absent when the domain was scanned to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_start_index: Option<u64>,
    /// Why the run stopped early; `None` when it reached the end or ended on an error.
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
}

/// The values a reconcile request's domain is known by: as written, and the `idcs-…` name its URL
/// carries (so a rule's `domains` may name either).
pub fn domain_values(requested: &str, url: &DomainUrl) -> Vec<String> {
    let mut values = vec![requested.to_owned()];
    let label = url.host().split('.').next().unwrap_or_default();
    if let Ok(name) = DomainName::parse(label) {
        if name.as_str() != requested {
            values.push(name.as_str().to_owned());
        }
    }
    values
}

/// Pages through `job`'s listing and brings each user to the profile the policy decides, until the
/// end, `max_users`, the deadline or a page that cannot be trusted.
pub async fn reconcile(engine: &Engine, job: &ReconcileJob, deadline: Instant) -> ReconcileReport {
    let mut report = ReconcileReport::start(engine, job);
    let page_size = job.page_size.clamp(1, MAX_PAGE_SIZE);
    let mut index = job.start_index.max(1);
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let budget_left = job.max_users.map(|m| m.saturating_sub(report.scanned));
        let stop = if budget_left == Some(0) {
            Some(StopReason::MaxUsers)
        } else {
            (Instant::now() + START_MARGIN >= deadline).then_some(StopReason::Deadline)
        };
        if let Some(stop) = stop {
            report.next_start_index = Some(index);
            report.stopped_because = Some(stop);
            break;
        }
        let count = budget_left.map_or(page_size, |left| left.min(page_size));
        let (page, total) = match read_page(engine, job, index, count, deadline).await {
            Ok(read) => read,
            Err(error) => {
                // Nothing after this page was looked at: the caller continues from here.
                report.next_start_index = Some(index);
                report.error = Some(error);
                break;
            }
        };
        report.total_results = Some(total);
        if page.resources.is_empty() {
            break;
        }
        let fetched = page.resources.len() as u64;
        let outcomes = settle_page(engine, job, &page.resources, &mut seen, deadline).await;
        if let Some(pos) = tally(&mut report, outcomes) {
            report.next_start_index = Some(index + pos);
            report.stopped_because = Some(StopReason::Deadline);
            break;
        }
        // A server may return fewer users per page than asked: the next page starts after
        // what this one held.
        index += fetched;
        if index > total {
            break;
        }
    }
    report
}

impl ReconcileReport {
    fn start(engine: &Engine, job: &ReconcileJob) -> Self {
        ReconcileReport {
            domain: job.domain.as_str().to_string(),
            filter: job.filter.clone(),
            start_index: job.start_index.max(1),
            scanned: 0,
            applied: 0,
            unchanged: 0,
            rejected: 0,
            failed: 0,
            dry_run: engine.dry_run,
            lingering: Counts::new(),
            revoked: Counts::new(),
            total_results: None,
            next_start_index: None,
            stopped_because: None,
            error: None,
            users: Vec::new(),
        }
    }
}

/// One page from `index`, with its `totalResults`, or why the scan must end there (a page that
/// could not be read, or one that cannot say where the scan stands).
async fn read_page(
    engine: &Engine,
    job: &ReconcileJob,
    index: u64,
    count: u64,
    deadline: Instant,
) -> Result<(UserPage, u64), String> {
    let attributes = engine.read_attributes(true);
    let page = engine
        .client
        .list_users(
            &job.domain,
            &job.filter,
            index,
            count,
            &attributes,
            deadline,
        )
        .await
        .map_err(|failure| format!("listing users from index {index}: {failure}"))?
        .value;
    // The scan cannot tell what it missed: it ends as incomplete, to continue from here.
    let total = check_page(&page, index, count)
        .map_err(|reason| format!("incomplete listing from index {index}: {reason}"))?;
    Ok((page, total))
}

/// The page's `totalResults` when the page can be trusted to say where the scan stands. A page may
/// hold fewer users than asked when the server says so (`itemsPerPage`, a server whose pages are
/// smaller) or at the end of the listing; fewer than that before the end means users the scan
/// cannot account for.
fn check_page(page: &UserPage, index: u64, asked: u64) -> Result<u64, String> {
    let total = page
        .total_results
        .ok_or("the page has no totalResults, so the end of the listing is unknown")?;
    let held = page.resources.len() as u64;
    let promised = page.items_per_page.unwrap_or(asked).min(asked);
    // Users from `index` to the end of the listing.
    let remaining = total.saturating_sub(index.saturating_sub(1));
    let expected = promised.min(remaining);
    if held < expected {
        return Err(format!(
            "the page holds {held} users where {expected} were due (totalResults {total}, \
             itemsPerPage {}, {asked} asked)",
            page.items_per_page
                .map_or_else(|| "absent".to_string(), |n| n.to_string())
        ));
    }
    Ok(total)
}

/// Every user of a page (but those already seen in this run) brought to its profile: with
/// `BULK=auto` all of the page's writes go out together as Bulk requests, else each user is written
/// on its own, `max_concurrency` at once. By position in the page; `None` for a user the deadline
/// left no time to start.
async fn settle_page(
    engine: &Engine,
    job: &ReconcileJob,
    users: &[serde_json::Value],
    seen: &mut HashSet<String>,
    deadline: Instant,
) -> Vec<(usize, Option<UserEntry>)> {
    // A user listed twice (the listing shifted under the scan) is processed and counted once.
    let fresh: Vec<(usize, &serde_json::Value)> = users
        .iter()
        .enumerate()
        .filter(|(_, user)| match user.get("id").and_then(|v| v.as_str()) {
            Some(id) => seen.insert(id.to_string()),
            None => true,
        })
        .collect();
    if engine.bulk.enabled {
        return settle_in_bulk(engine, job, fresh, deadline).await;
    }
    // Futures are made up front (they start only when polled) so none borrows from a closure.
    let pending: Vec<_> = fresh
        .into_iter()
        .map(|(pos, user)| reconcile_user(engine, job, pos, user, deadline))
        .collect();
    let mut outcomes: Vec<(usize, Option<UserEntry>)> = futures_util::stream::iter(pending)
        .buffer_unordered(engine.max_concurrency.max(1))
        .collect()
        .await;
    outcomes.sort_by_key(|(pos, _)| *pos);
    outcomes
}

/// The page's users planned first, then every write sent together (Bulk per domain).
async fn settle_in_bulk(
    engine: &Engine,
    job: &ReconcileJob,
    users: Vec<(usize, &serde_json::Value)>,
    deadline: Instant,
) -> Vec<(usize, Option<UserEntry>)> {
    if Instant::now() + START_MARGIN >= deadline {
        return users.into_iter().map(|(pos, _)| (pos, None)).collect();
    }
    let prepared: Vec<(usize, Prepared)> = users
        .into_iter()
        .map(|(pos, user)| (pos, prepare(engine, job, user)))
        .collect();
    let writes = prepared
        .iter()
        .filter_map(|(pos, p)| match p {
            Prepared::Planned { id, planned, .. } => match &planned.plan {
                Plan::Write { body, .. } => {
                    Some((*pos, job.domain.clone(), id.clone(), body.clone()))
                }
                Plan::Done(_) => None,
            },
            Prepared::Settled(_) => None,
        })
        .collect();
    let mut written = engine.write_all(writes, deadline).await;
    // Then the page's lingering credentials to revoke, deleted together (Bulk).
    let mut noted = Vec::with_capacity(prepared.len());
    let mut to_revoke = Vec::new();
    for (pos, p) in prepared {
        match p {
            Prepared::Settled(entry) => noted.push((pos, Err(entry))),
            Prepared::Planned { id, planned, base } => {
                let (lingering, decided) =
                    planned.noted(engine, &job.domain, &id, written.remove(&pos));
                let done = match lingering {
                    Lingering::Settled(done) => done,
                    Lingering::Revoke(done, held) => {
                        to_revoke.push((pos, id, held));
                        done
                    }
                };
                noted.push((pos, Ok((base, done, decided))));
            }
        }
    }
    let mut revocations = engine
        .revoke_in_domain(&job.domain, to_revoke, deadline)
        .await;
    noted
        .into_iter()
        .map(|(pos, noted)| {
            let entry = match noted {
                Err(entry) => entry,
                Ok((base, done, decided)) => {
                    let done = match revocations.remove(&pos) {
                        Some(revocation) => conclude(done, revocation),
                        None => done,
                    };
                    entry_from(base, decided.finish(done))
                }
            };
            (pos, Some(entry))
        })
        .collect()
}

/// Counts a page's outcomes into the report; the position of the first user not started, if any.
fn tally(report: &mut ReconcileReport, outcomes: Vec<(usize, Option<UserEntry>)>) -> Option<u64> {
    // Users not started for lack of time: continue from the first of them next time.
    let first_skipped = outcomes
        .iter()
        .find(|(_, e)| e.is_none())
        .map(|(pos, _)| *pos as u64);
    for entry in outcomes.into_iter().filter_map(|(_, e)| e) {
        report.scanned += 1;
        add_counts(&mut report.lingering, &entry.lingering);
        add_counts(&mut report.revoked, &entry.revoked);
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
    first_skipped
}

/// The user's position in its page, with `None` when the deadline left no time to start it.
async fn reconcile_user(
    engine: &Engine,
    job: &ReconcileJob,
    pos: usize,
    user: &serde_json::Value,
    deadline: Instant,
) -> (usize, Option<UserEntry>) {
    if Instant::now() + START_MARGIN >= deadline {
        return (pos, None);
    }
    let entry = match prepare(engine, job, user) {
        Prepared::Settled(entry) => entry,
        Prepared::Planned { id, planned, base } => {
            let written = match &planned.plan {
                Plan::Write { body, .. } => Some(
                    engine
                        .put_single(&job.domain, &id, body.clone(), deadline)
                        .await,
                ),
                Plan::Done(_) => None,
            };
            let done = planned
                .settle(engine, &job.domain, &id, written, deadline)
                .await;
            entry_from(base, done)
        }
    };
    (pos, Some(entry))
}

/// A listed user, settled already (no usable id, an unexpected answer), or planned.
// One per user of the page in hand, never many pages: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Settled(UserEntry),
    Planned {
        id: UserId,
        planned: Planned,
        /// The entry, to complete with the outcome.
        base: UserEntry,
    },
}

/// The listing asked for the policy's attributes, so the page holds every fact the decision needs.
fn prepare(engine: &Engine, job: &ReconcileJob, user: &serde_json::Value) -> Prepared {
    let user_name = user
        .get("userName")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let raw_id = user.get("id").and_then(|v| v.as_str());
    let entry = |outcome, reason: Option<String>| UserEntry {
        user_id: raw_id.map(str::to_string),
        user_name: user_name.clone(),
        outcome,
        policy: Vec::new(),
        changed: Default::default(),
        lingering: Counts::new(),
        revoked: Counts::new(),
        reason,
        request_ids: Vec::new(),
    };
    let id = match raw_id.map(UserId::parse) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return Prepared::Settled(entry(Outcome::Rejected, Some(e.to_string()))),
        None => {
            let reason = Some("listed user has no id".into());
            return Prepared::Settled(entry(Outcome::Rejected, reason));
        }
    };
    let current = CurrentCapabilities::from_user(user);
    match UserFacts::from_scim(user, job.domain_values.clone()) {
        Ok(facts) => Prepared::Planned {
            id,
            // The listing asked every user's credentials (one attribute list serves the page); an
            // exempt user's are dropped unexamined.
            planned: engine.plan(
                &engine.policy.decide(&facts),
                &current,
                (!engine.credential_attributes.is_empty()).then_some(user),
            ),
            base: entry(Outcome::Failed, None),
        },
        Err(e) => Prepared::Settled(entry(
            Outcome::Failed,
            Some(format!("listed user: unexpected answer: {e}")),
        )),
    }
}

fn entry_from(base: UserEntry, done: Enforced) -> UserEntry {
    UserEntry {
        outcome: done.outcome,
        reason: done.reason,
        policy: done.policy,
        changed: done.changed,
        lingering: done.lingering,
        revoked: done.revoked,
        request_ids: done.ecids,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(total: Option<u64>, per_page: Option<u64>, held: usize) -> UserPage {
        UserPage {
            total_results: total,
            start_index: None,
            items_per_page: per_page,
            resources: vec![serde_json::json!({}); held],
        }
    }

    #[test]
    fn pages_that_cannot_say_where_the_scan_stands_are_refused() {
        // Whole pages, a server's smaller pages, and the short last page are fine.
        assert_eq!(
            check_page(&page(Some(2500), Some(1000), 1000), 1, 1000),
            Ok(2500)
        );
        assert_eq!(check_page(&page(Some(2500), Some(7), 7), 8, 1000), Ok(2500));
        assert_eq!(
            check_page(&page(Some(2500), Some(1000), 500), 2001, 1000),
            Ok(2500)
        );
        assert_eq!(
            check_page(&page(Some(2500), Some(500), 500), 2001, 1000),
            Ok(2500)
        );
        assert_eq!(
            check_page(&page(Some(2500), None, 500), 2001, 1000),
            Ok(2500)
        );
        assert_eq!(check_page(&page(Some(0), None, 0), 1, 1000), Ok(0));
        assert_eq!(check_page(&page(Some(10), None, 0), 11, 1000), Ok(10));
        // No total, an empty or short page before the end.
        assert!(check_page(&page(None, Some(1), 1), 1, 1000).is_err());
        assert!(check_page(&page(Some(10), None, 0), 1, 1000).is_err());
        assert!(check_page(&page(Some(10), Some(5), 2), 1, 5).is_err());
        assert!(check_page(&page(Some(2500), None, 999), 1, 1000).is_err());
        assert!(check_page(&page(Some(2500), Some(1000), 999), 1, 1000).is_err());
    }
}
