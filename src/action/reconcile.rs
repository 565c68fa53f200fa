//! Reconcile: bring users that already exist to the profile, page by page.
//!
//! Users are taken in `meta.created` order with a keyset cursor: after the first page, each page is
//! the filter `and meta.created ge "<the last user's meta.created>"`, skipping the users already done
//! at that instant. A user created during the run lands after the cursor and is reached; a user
//! deleted during the run shifts nothing (a `startIndex` would, and hide the next user). A run
//! stops at `maxUsers` or before the deadline and returns the cursor (`nextAfter`, and the older
//! `nextStartIndex`); running again from there continues the scan, and users seen twice cost nothing
//! (the listing carries their capabilities, and compliant users get no write).
//!
//! A scan is reported complete only when the last page reached the end of what the domain reported:
//! a page without `totalResults`, shorter than promised, out of `meta.created` order, repeating a
//! user or starting elsewhere than asked ends the run as incomplete, to be continued from the cursor.

use std::collections::HashSet;

use futures_util::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;

pub use crate::action::apply::UserEntry;
use crate::action::apply::{Engine, Outcome, Plan, Planned, START_MARGIN};
use crate::action::credentials::{conclude, Lingering};
use crate::action::domains::DomainKnown;
use crate::clients::identity_domain::UserPage;
use crate::decision::credentials::{add_counts, Counts};
use crate::decision::profile::CurrentCapabilities;
use crate::intake::audit::{parse_instant, Cursor, Totals};
use crate::intake::names::{DomainName, DomainUrl, UserId};
use crate::transport::Error as TransportError;

/// Users created by SAML JIT. `creationMechanism` is `returned: request`, so listing asks for it.
pub const DEFAULT_FILTER: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User:creationMechanism eq \"samljit\"";
/// The service's largest page.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// How many per-user entries a report lists (failures always, changes up to this many).
pub const LISTED_MAX: usize = 200;
/// The most ids a cursor carries for users created at its instant.
const MAX_SAME_INSTANT: usize = 1000;

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
    /// The 1-based SCIM `startIndex` of the first page (0 is read as 1); ignored with `after`.
    pub start_index: u64,
    /// Resume after this user in `meta.created` order.
    pub after: Option<Cursor>,
    /// Stop after scanning this many users; `None` scans to the end.
    pub max_users: Option<u64>,
    /// Users asked for per page, clamped to 1..=[`MAX_PAGE_SIZE`].
    pub page_size: u64,
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
    /// Users from where the run started to the end of the listing, as the last page read says
    /// (for a run by `startIndex`, the listing's `totalResults`); `None` when no page was read.
    pub total_results: Option<u64>,
    /// Where to continue by index (the older form; a deletion during the run shifts it); absent
    /// when the domain was scanned to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_start_index: Option<u64>,
    /// Where to continue in `meta.created` order: pass it as `after`. Absent when the domain was
    /// scanned to the end (or no user was done yet and the run starts from the top).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Cursor>,
    /// Why the run stopped early; `None` when it reached the end or ended on an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_because: Option<StopReason>,
    /// A page that could not be read (after retries) or trusted: the run ended there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed and rejected users always; applied users up to `LISTED_MAX`.
    pub users: Vec<UserEntry>,
}

/// Why a reconcile run stopped before the end of the listing (it then reports where to continue).
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
    /// A run of `job` that has done nothing yet.
    fn new(job: &ReconcileJob, dry_run: bool) -> Self {
        ReconcileReport {
            domain: job.domain.as_str().to_string(),
            filter: job.filter.clone(),
            start_index: job.start_index.max(1),
            scanned: 0,
            applied: 0,
            unchanged: 0,
            rejected: 0,
            failed: 0,
            dry_run,
            lingering: Counts::new(),
            revoked: Counts::new(),
            total_results: None,
            next_start_index: None,
            next_after: None,
            stopped_because: None,
            error: None,
            users: Vec::new(),
        }
    }

    /// Whether the invocation should fail so the caller retries (a page or a write failed).
    pub fn needs_retry(&self) -> bool {
        self.failed > 0 || self.error.is_some()
    }

    /// The run's counts.
    pub fn totals(&self) -> Totals {
        Totals {
            scanned: self.scanned,
            applied: self.applied,
            unchanged: self.unchanged,
            rejected: self.rejected,
            failed: self.failed,
        }
    }
}

/// The values a reconcile request's domain is known by: as written, the `idcs-…` name its URL
/// carries (so a rule's `domains` may name either), and the URL itself (known on every path, so a
/// request by URL never passes for a display name).
pub fn domain_values(requested: &str, url: &DomainUrl) -> Vec<String> {
    let mut values = vec![requested.to_owned()];
    let label = url.host().split('.').next().unwrap_or_default();
    if let Ok(name) = DomainName::parse(label) {
        if name.as_str() != requested {
            values.push(name.as_str().to_owned());
        }
    }
    if url.as_str() != requested {
        values.push(url.as_str().to_owned());
    }
    values
}

/// The filter of a keyset page: the job's filter, and users created at or after the cursor.
pub fn keyset_filter(filter: &str, created: &str) -> String {
    // `created` came from the service and was parsed as an RFC 3339 time, so it holds no quote.
    let keyset = format!("meta.created ge \"{created}\"");
    if filter.trim().is_empty() {
        keyset
    } else {
        format!("({filter}) and {keyset}")
    }
}

/// Where a scan in `meta.created` order stands: the cursor, the users done at its instant, and
/// (for the older form) the index of the next user. The reconcile and the posture report page
/// with it alike.
#[derive(Debug)]
pub(crate) struct Position {
    /// The last user done: `meta.created` as given, parsed, and the user's id.
    last: Option<(String, OffsetDateTime, String)>,
    /// Ids done whose `meta.created` is the cursor's instant.
    same_instant: HashSet<String>,
    /// `startIndex` within a keyset page: 1, unless more users share one instant than a page holds.
    offset: u64,
    /// The run's `startIndex`: where the first page starts when there is no cursor.
    index: u64,
}

impl Position {
    /// A scan from `start_index` (1-based; 0 is read as 1), or after the cursor `after`.
    pub(crate) fn new(start_index: u64, after: Option<&Cursor>) -> Self {
        let mut position = Position {
            last: None,
            same_instant: HashSet::new(),
            offset: 1,
            index: start_index.max(1),
        };
        if let Some(after) = after {
            // Checked when the request was read; a cursor that does not parse starts from the top.
            if let Ok(at) = parse_instant(&after.created) {
                position.last = Some((after.created.clone(), at, after.id.clone()));
                position.same_instant = after.same_instant.iter().cloned().collect();
                position.same_instant.insert(after.id.clone());
            }
        }
        position
    }

    /// The filter and `startIndex` of the next page.
    fn query(&self, filter: &str) -> (String, u64) {
        match &self.last {
            None => (filter.to_owned(), self.index),
            Some((created, _, _)) => (keyset_filter(filter, created), self.offset),
        }
    }

    /// The filter, `startIndex` and `count` of the next page: `page_size` users, at most
    /// `budget_left`, plus the users done at the cursor's instant (they come again at the top of a
    /// keyset page, so they do not eat the budget).
    fn next_page(
        &self,
        filter: &str,
        page_size: u64,
        budget_left: Option<u64>,
    ) -> (String, u64, u64) {
        let overlap = match (&self.last, self.offset) {
            (Some(_), 1) => self.same_instant.len() as u64,
            _ => 0,
        };
        let count = budget_left
            .map_or(page_size, |left| left.min(page_size))
            .saturating_add(overlap)
            .min(MAX_PAGE_SIZE);
        let (filter, start) = self.query(filter);
        (filter, start, count)
    }

    /// Moves past a whole page read from `start` (every user done) and says whether it held the
    /// end of what the domain reported (`totalResults`) for the page's query.
    pub(crate) fn past_page(&mut self, listed: &[Listed<'_>], start: u64, total: u64) -> bool {
        let before = self.instant();
        self.past(listed);
        if (start - 1) + listed.len() as u64 >= total {
            return true;
        }
        // A page of users all created at the cursor's instant moves on within that instant.
        self.offset = if self.instant() == before && before.is_some() {
            self.offset + listed.len() as u64
        } else {
            1
        };
        false
    }

    /// Moves the cursor past these users, done.
    fn past(&mut self, users: &[Listed<'_>]) {
        for user in users {
            self.advance(user.created, user.at, user.id);
        }
    }

    /// Steps over the user one page of which is too large by itself: `named` is that user, or
    /// `None` when it was done before (the scan then moves on within the cursor's instant).
    fn step_over(&mut self, named: Option<&Oversized>) {
        match named {
            Some(user) => {
                let id = user.id.as_deref().unwrap_or_default();
                self.advance(&user.created, user.at, Some(id));
                self.offset = 1;
            }
            None => self.offset += 1,
        }
    }

    /// Where the scan stands, as an error message says it.
    fn where_from(&self) -> String {
        match &self.last {
            Some((created, _, id)) => format!("after user {id} (created {created})"),
            None => format!("index {}", self.index),
        }
    }

    fn instant(&self) -> Option<OffsetDateTime> {
        self.last.as_ref().map(|(_, at, _)| *at)
    }

    /// True when the user at `at` with `id` was done before (at the cursor's instant).
    pub(crate) fn done(&self, at: OffsetDateTime, id: Option<&str>) -> bool {
        self.instant() == Some(at) && id.is_some_and(|id| self.same_instant.contains(id))
    }

    /// Moves the cursor past a user done.
    fn advance(&mut self, created: &str, at: OffsetDateTime, id: Option<&str>) {
        if self.instant() != Some(at) {
            self.same_instant.clear();
        }
        if let Some(id) = id {
            self.same_instant.insert(id.to_owned());
        }
        let id = id
            .map(str::to_owned)
            .or_else(|| self.last.as_ref().map(|(_, _, id)| id.clone()))
            .unwrap_or_default();
        self.last = Some((created.to_owned(), at, id));
    }

    /// The cursor to hand on, when a user was done.
    fn cursor(&self) -> Option<Cursor> {
        let (created, _, id) = self.last.as_ref()?;
        if UserId::parse(id).is_err() {
            return None;
        }
        let mut same: Vec<String> = self
            .same_instant
            .iter()
            .filter(|other| *other != id)
            .cloned()
            .collect();
        same.sort();
        same.truncate(MAX_SAME_INSTANT);
        Some(Cursor {
            created: created.clone(),
            id: id.clone(),
            same_instant: same,
        })
    }
}

/// One user of a page: its JSON, id and `meta.created`.
pub(crate) struct Listed<'a> {
    pub(crate) user: &'a serde_json::Value,
    pub(crate) id: Option<&'a str>,
    pub(crate) created: &'a str,
    pub(crate) at: OffsetDateTime,
}

/// Pages through `job`'s listing and brings each user to the profile the policy decides, until the
/// end, `max_users`, the deadline or a page that cannot be trusted.
pub async fn reconcile(engine: &Engine, job: &ReconcileJob, deadline: Instant) -> ReconcileReport {
    let mut report = ReconcileReport::new(job, engine.dry_run);
    let mut pager = Pager::new(
        Position::new(job.start_index, job.after.as_ref()),
        job.page_size,
    );
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let budget_left = job.max_users.map(|m| m.saturating_sub(report.scanned));
        if let Some(reason) = stop_before_page(budget_left, deadline) {
            report.stopped_because = Some(reason);
            stopped_here(&mut report, &pager.position);
            break;
        }
        let next = pager
            .next(engine, &job.domain, &job.filter, budget_left, deadline)
            .await;
        // Nothing after the cursor was looked at or trusted: the caller continues from there.
        let (page, start, count) = match next {
            Ok(Next::Page { page, start, count }) => (page, start, count),
            Ok(Next::Oversized(named)) => {
                if let Some(user) = &named {
                    seen.insert(user.id.clone().unwrap_or_default());
                    tally(&mut report, oversized_entry(user));
                }
                continue;
            }
            Err(reason) => {
                report.error = Some(reason);
                stopped_here(&mut report, &pager.position);
                break;
            }
        };
        let listed = match pager.check(&page, start, count) {
            Ok(listed) => listed,
            Err(reason) => {
                report.error = Some(reason);
                stopped_here(&mut report, &pager.position);
                break;
            }
        };
        let position = &mut pager.position;
        let total = page.total_results.unwrap_or_default();
        report.total_results = Some(run_total(&report, job, position, &listed, start, total));
        let left = budget_left.unwrap_or(u64::MAX);
        let stopped = run_page(
            engine,
            job,
            &listed,
            position,
            &mut seen,
            &mut report,
            left,
            deadline,
        )
        .await;
        if let Some((done, reason)) = stopped {
            position.past(&listed[..done]);
            report.stopped_because = Some(reason);
            stopped_here(&mut report, position);
            break;
        }
        if position.past_page(&listed, start, total) {
            break;
        }
    }
    report
}

/// Why a run stops before its next page, if it does: no budget left, or too little time.
fn stop_before_page(budget_left: Option<u64>, deadline: Instant) -> Option<StopReason> {
    if budget_left == Some(0) {
        Some(StopReason::MaxUsers)
    } else if Instant::now() + START_MARGIN >= deadline {
        Some(StopReason::Deadline)
    } else {
        None
    }
}

/// Users from where the run started to the end of the listing, as far as this page says: the
/// listing's `totalResults` for a run by `startIndex`; for keyset pages, the users done so far
/// plus those from the cursor on that are not done yet.
fn run_total(
    report: &ReconcileReport,
    job: &ReconcileJob,
    position: &Position,
    listed: &[Listed<'_>],
    start: u64,
    total: u64,
) -> u64 {
    if position.last.is_none() {
        return total;
    }
    let done_here = listed.iter().filter(|l| position.done(l.at, l.id)).count() as u64;
    let before_run = if job.after.is_none() {
        job.start_index.max(1) - 1
    } else {
        0
    };
    before_run + report.scanned + total.saturating_sub(start - 1).saturating_sub(done_here)
}

/// Sets where a run that stops here continues.
fn stopped_here(report: &mut ReconcileReport, position: &Position) {
    report.next_start_index = Some(position.index + report.scanned);
    report.next_after = position.cursor();
}

/// A scan of a domain's users in `meta.created` order, page by page: the reconcile's and the
/// posture report's. Its errors say where the scan stopped.
#[derive(Debug)]
pub(crate) struct Pager {
    /// Where the scan stands.
    pub(crate) position: Position,
    /// Users asked per page: smaller after an answer too large, back to `page_size` past it.
    asked: u64,
    page_size: u64,
}

/// What [`Pager::next`] read.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A page, asked from `start` for `count` users: check it with [`Pager::check`].
    Page {
        page: UserPage,
        start: u64,
        count: u64,
    },
    /// One user's listing passes the page limit by itself: final for that user (`None`: done
    /// before), and the cursor has moved past it.
    Oversized(Option<Oversized>),
}

impl Pager {
    /// A scan from `position`, `page_size` users a page (clamped to 1..=[`MAX_PAGE_SIZE`]).
    pub(crate) fn new(position: Position, page_size: u64) -> Self {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        Pager {
            position,
            asked: page_size,
            page_size,
        }
    }

    /// Reads the next page of the users `filter` selects, at most `budget_left` new ones.
    pub(crate) async fn next(
        &mut self,
        engine: &Engine,
        domain: &DomainUrl,
        filter: &str,
        budget_left: Option<u64>,
        deadline: Instant,
    ) -> Result<Next, String> {
        let (filter, start, count) = self.position.next_page(filter, self.asked, budget_left);
        let why = match read_page(engine, domain, &filter, start, count, deadline).await {
            PageRead::Page(page, fit) => {
                self.asked = self.asked.min(fit.max(1));
                return Ok(Next::Page { page, start, count });
            }
            PageRead::Alone(why) => why,
            PageRead::Failed(reason) => return Err(self.stopped("listing users", &reason)),
        };
        let named = name_oversized(
            engine,
            domain,
            &filter,
            start,
            &self.position,
            why,
            deadline,
        )
        .await
        .map_err(|reason| self.stopped("listing users", &reason))?;
        self.position.step_over(named.as_ref());
        self.asked = self.page_size;
        Ok(Next::Oversized(named))
    }

    /// The page's users, when it can be trusted to say where the scan stands (see [`check_page`]).
    pub(crate) fn check<'p>(
        &self,
        page: &'p UserPage,
        start: u64,
        count: u64,
    ) -> Result<Vec<Listed<'p>>, String> {
        check_page(page, start, count, self.position.instant())
            .map_err(|reason| self.stopped("incomplete listing", &reason))
    }

    /// `what from <where the scan stands>: reason`.
    fn stopped(&self, what: &str, reason: &str) -> String {
        format!("{what} from {}: {reason}", self.position.where_from())
    }
}

/// What reading one page came to.
enum PageRead {
    /// The page, and the count that fit.
    Page(UserPage, u64),
    /// Even one user's listing is over the page limit (the reason says so).
    Alone(String),
    /// The page could not be read.
    Failed(String),
}

/// Reads one page, asking for fewer users while the answer is too large (down to one): a page of
/// users with many groups can pass the page limit, and one that always does would stop every run
/// at the same place.
async fn read_page(
    engine: &Engine,
    domain: &DomainUrl,
    filter: &str,
    start: u64,
    mut count: u64,
    deadline: Instant,
) -> PageRead {
    loop {
        let attributes = engine.read_attributes(true);
        match engine
            .client
            .list_users(domain, filter, start, count, &attributes, deadline)
            .await
        {
            Ok(answer) => return PageRead::Page(answer.value, count),
            Err(failure) if matches!(failure.error, TransportError::TooLarge { .. }) => {
                if count == 1 {
                    return PageRead::Alone(failure.to_string());
                }
                let smaller = (count / 2).max(1);
                tracing::warn!(%domain, count, smaller, "a page of users is too large; asking for fewer");
                count = smaller;
            }
            Err(failure) => return PageRead::Failed(failure.to_string()),
        }
    }
}

/// A user whose listing alone is too large, named by a read without the policy's attributes.
#[derive(Debug)]
pub(crate) struct Oversized {
    /// `meta.created` as listed, and parsed.
    pub(crate) created: String,
    pub(crate) at: OffsetDateTime,
    /// The SCIM id as listed.
    pub(crate) id: Option<String>,
    /// `userName`, when listed.
    pub(crate) user_name: Option<String>,
    /// Why the user cannot be judged: final, a retry would not shrink it.
    pub(crate) reason: String,
    /// Request ids of the read that named it.
    pub(crate) ecids: Vec<String>,
}

/// The user whose listing alone is too large, read again without the policy's attributes (groups,
/// tags) so it can be named. `Ok(None)` when that user was done already (it shares the cursor's
/// instant): the scan steps over it.
async fn name_oversized(
    engine: &Engine,
    domain: &DomainUrl,
    filter: &str,
    start: u64,
    position: &Position,
    why: String,
    deadline: Instant,
) -> Result<Option<Oversized>, String> {
    let answer = engine
        .client
        .list_users(domain, filter, start, 1, &[], deadline)
        .await
        .map_err(|f| format!("naming a user whose listing is too large: {f}"))?;
    let listed = check_page(&answer.value, start, 1, position.instant())?;
    let Some(user) = listed.first() else {
        return Err(format!(
            "a page of one user is too large ({why}), and without its groups the user is gone"
        ));
    };
    if position.done(user.at, user.id) {
        return Ok(None);
    }
    let id = user.id.map(str::to_owned);
    let reason = format!(
        "the user's listing alone is too large ({why}); it will not shrink on a retry (a user in thousands of groups?)"
    );
    tracing::warn!(%domain, user_id = %id.as_deref().unwrap_or_default(), reason = %reason, "user skipped");
    Ok(Some(Oversized {
        created: user.created.to_owned(),
        at: user.at,
        id,
        user_name: user
            .user
            .get("userName")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        reason,
        ecids: answer.ecids,
    }))
}

/// The `rejected` entry of a user whose listing alone is too large.
fn oversized_entry(user: &Oversized) -> UserEntry {
    UserEntry {
        user_id: user.id.clone(),
        user_name: user.user_name.clone(),
        reason: Some(user.reason.clone()),
        request_ids: user.ecids.clone(),
        ..UserEntry::new(Outcome::Rejected)
    }
}

/// Processes a page's users not done before, at most `budget` of them; returns the page position
/// of the first user left (for lack of time, or past the budget), if any: every user after it is
/// left too.
#[allow(clippy::too_many_arguments)]
async fn run_page(
    engine: &Engine,
    job: &ReconcileJob,
    listed: &[Listed<'_>],
    position: &Position,
    seen: &mut HashSet<String>,
    report: &mut ReconcileReport,
    budget: u64,
    deadline: Instant,
) -> Option<(usize, StopReason)> {
    // A user listed twice (at the cursor's instant, or again after a shift) is processed and
    // counted once.
    let mut fresh: Vec<usize> = listed
        .iter()
        .enumerate()
        .filter(|(_, l)| !position.done(l.at, l.id))
        .filter(|(_, l)| l.id.is_none_or(|id| !seen.contains(id)))
        .map(|(pos, _)| pos)
        .collect();
    let over_budget = (fresh.len() as u64 > budget).then(|| fresh[budget as usize]);
    fresh.truncate(usize::try_from(budget).unwrap_or(usize::MAX));
    for pos in &fresh {
        if let Some(id) = listed[*pos].id {
            seen.insert(id.to_owned());
        }
    }
    let outcomes = if engine.bulk.enabled {
        let users = fresh.iter().map(|pos| (*pos, listed[*pos].user)).collect();
        settle_in_bulk(engine, job, users, deadline).await
    } else {
        // Futures are made up front (they start only when polled) so none borrows from a closure.
        let pending: Vec<_> = fresh
            .iter()
            .map(|pos| reconcile_user(engine, job, *pos, listed[*pos].user, deadline))
            .collect();
        let mut outcomes: Vec<(usize, Option<UserEntry>)> = futures_util::stream::iter(pending)
            .buffer_unordered(engine.max_concurrency.max(1))
            .collect()
            .await;
        outcomes.sort_by_key(|(pos, _)| *pos);
        outcomes
    };
    let out_of_time = outcomes
        .iter()
        .find(|(_, e)| e.is_none())
        .map(|(pos, _)| (*pos, StopReason::Deadline));
    for entry in outcomes.into_iter().filter_map(|(_, e)| e) {
        tally(report, entry);
    }
    out_of_time.or(over_budget.map(|pos| (pos, StopReason::MaxUsers)))
}

fn tally(report: &mut ReconcileReport, entry: UserEntry) {
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

/// The page's users, when the page can be trusted to say where the scan stands. A page may hold
/// fewer users than asked when the server says so (`itemsPerPage`, a server whose pages are
/// smaller) or at the end of the listing; fewer than that before the end means users the scan
/// cannot account for. Every user must carry `meta.created`, in ascending order and not before
/// the cursor, and none may appear twice.
fn check_page(
    page: &UserPage,
    index: u64,
    asked: u64,
    after: Option<OffsetDateTime>,
) -> Result<Vec<Listed<'_>>, String> {
    let total = page
        .total_results
        .ok_or("the page has no totalResults, so the end of the listing is unknown")?;
    if let Some(answered) = page.start_index.filter(|s| *s != index) {
        return Err(format!(
            "asked for startIndex {index}, the server answered startIndex {answered}"
        ));
    }
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
    let mut listed = Vec::with_capacity(page.resources.len());
    let mut ids = HashSet::new();
    let mut previous = after;
    for user in &page.resources {
        let id = user.get("id").and_then(|v| v.as_str());
        if let Some(id) = id {
            if !ids.insert(id) {
                return Err(format!(
                    "the page lists user {id} twice, so it may hide another"
                ));
            }
        }
        let created = user
            .pointer("/meta/created")
            .and_then(|v| v.as_str())
            .ok_or("a listed user has no meta.created, so the scan cannot keep its place")?;
        let at =
            parse_instant(created).map_err(|e| format!("a listed user's meta.created: {e}"))?;
        if previous.is_some_and(|p| at < p) {
            return Err(format!(
                "the page is not in meta.created order ({created} comes after a later user)"
            ));
        }
        previous = Some(at);
        listed.push(Listed {
            user,
            id,
            created,
            at,
        });
    }
    Ok(listed)
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
    // Users one after another: a domain lookup (when the policy needs one) is shared, so only
    // the first user of the page may wait for it.
    let mut prepared: Vec<(usize, Prepared)> = Vec::with_capacity(users.len());
    for (pos, user) in users {
        prepared.push((pos, learn_and_prepare(engine, job, user, deadline).await));
    }
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
                    base.settled(decided.finish(done))
                }
            };
            (pos, Some(entry))
        })
        .collect()
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
    let entry = match learn_and_prepare(engine, job, user, deadline).await {
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
            base.settled(done)
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

/// [`prepare`] with what the decision knows of the domain: the job's values, and the domain's OCID
/// and display name learned from the user's `domainOcid` when the policy needs them.
async fn learn_and_prepare(
    engine: &Engine,
    job: &ReconcileJob,
    user: &serde_json::Value,
    deadline: Instant,
) -> Prepared {
    let values = job.domain_values.clone();
    match engine
        .domain_known(&job.domain, values, Some(user), deadline)
        .await
    {
        Ok(known) => prepare(engine, user, known),
        Err(failed) => Prepared::Settled(UserEntry {
            request_ids: failed.ecids,
            ..listed_entry(user, Outcome::Failed, Some(failed.reason))
        }),
    }
}

/// A listed user's entry with this outcome and reason, and nothing else yet.
fn listed_entry(user: &serde_json::Value, outcome: Outcome, reason: Option<String>) -> UserEntry {
    let text = |key: &str| user.get(key).and_then(|v| v.as_str()).map(str::to_string);
    UserEntry {
        user_id: text("id"),
        user_name: text("userName"),
        reason,
        ..UserEntry::new(outcome)
    }
}

/// The listing asked for the policy's attributes, so the page holds every fact the decision needs.
fn prepare(engine: &Engine, user: &serde_json::Value, known: DomainKnown) -> Prepared {
    let entry = |outcome, reason: Option<String>| listed_entry(user, outcome, reason);
    let id = match user.get("id").and_then(|v| v.as_str()).map(UserId::parse) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return Prepared::Settled(entry(Outcome::Rejected, Some(e.to_string()))),
        None => {
            let reason = Some("listed user has no id".into());
            return Prepared::Settled(entry(Outcome::Rejected, reason));
        }
    };
    let current = CurrentCapabilities::from_user(user);
    let decision = match engine.decide(user, known) {
        Ok(decision) => decision,
        Err(no) => {
            let (outcome, reason) = no.settled("listed user");
            return Prepared::Settled(entry(outcome, Some(reason)));
        }
    };
    Prepared::Planned {
        id,
        // The listing asked every user's credentials (one attribute list serves the page); an
        // exempt user's are dropped unexamined.
        planned: engine.plan(
            &decision,
            &current,
            (!engine.credential_attributes.is_empty()).then_some(user),
        ),
        base: entry(Outcome::Failed, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(n: usize) -> serde_json::Value {
        json!({"id": format!("{n:032x}"), "meta": {"created": format!("2026-11-01T00:{:02}:{:02}Z", n / 60, n % 60)}})
    }

    fn page(total: Option<u64>, per_page: Option<u64>, held: usize) -> UserPage {
        UserPage {
            total_results: total,
            start_index: None,
            items_per_page: per_page,
            resources: (0..held).map(user).collect(),
        }
    }

    fn held(page: &UserPage, index: u64, asked: u64) -> Result<usize, String> {
        check_page(page, index, asked, None).map(|l| l.len())
    }

    #[test]
    fn pages_that_cannot_say_where_the_scan_stands_are_refused() {
        // Whole pages, a server's smaller pages, and the short last page are fine.
        assert_eq!(held(&page(Some(2500), Some(1000), 1000), 1, 1000), Ok(1000));
        assert_eq!(held(&page(Some(2500), Some(7), 7), 8, 1000), Ok(7));
        assert_eq!(
            held(&page(Some(2500), Some(1000), 500), 2001, 1000),
            Ok(500)
        );
        assert_eq!(held(&page(Some(2500), Some(500), 500), 2001, 1000), Ok(500));
        assert_eq!(held(&page(Some(2500), None, 500), 2001, 1000), Ok(500));
        assert_eq!(held(&page(Some(0), None, 0), 1, 1000), Ok(0));
        assert_eq!(held(&page(Some(10), None, 0), 11, 1000), Ok(0));
        // No total, an empty or short page before the end.
        assert!(held(&page(None, Some(1), 1), 1, 1000).is_err());
        assert!(held(&page(Some(10), None, 0), 1, 1000).is_err());
        assert!(held(&page(Some(10), Some(5), 2), 1, 5).is_err());
        assert!(held(&page(Some(2500), None, 999), 1, 1000).is_err());
        assert!(held(&page(Some(2500), Some(1000), 999), 1, 1000).is_err());
    }

    #[test]
    fn pages_that_repeat_reorder_or_start_elsewhere_are_refused() {
        let mut repeat = page(Some(3), None, 3);
        repeat.resources[2] = user(1);
        assert!(held(&repeat, 1, 3).unwrap_err().contains("twice"));
        let mut unordered = page(Some(3), None, 3);
        unordered.resources.swap(0, 2);
        assert!(held(&unordered, 1, 3).unwrap_err().contains("order"));
        let mut elsewhere = page(Some(30), None, 10);
        elsewhere.start_index = Some(1);
        assert!(held(&elsewhere, 11, 10)
            .unwrap_err()
            .contains("startIndex 1"));
        let mut no_created = page(Some(1), None, 1);
        no_created.resources[0] = json!({"id": "0".repeat(32)});
        assert!(held(&no_created, 1, 1)
            .unwrap_err()
            .contains("meta.created"));
        // Nothing before the cursor.
        let cursor = parse_instant("2026-11-01T00:00:02Z").ok();
        assert!(check_page(&page(Some(3), None, 3), 1, 3, cursor).is_err());
    }

    #[test]
    fn the_cursor_skips_users_done_at_its_instant_and_keeps_them_across_hops() {
        let job = ReconcileJob {
            domain: DomainUrl::parse("http://127.0.0.1:1").unwrap(),
            domain_values: Vec::new(),
            filter: "userName pr".into(),
            start_index: 1,
            after: None,
            max_users: None,
            page_size: 10,
        };
        let mut position = Position::new(job.start_index, job.after.as_ref());
        assert_eq!(position.query(&job.filter), ("userName pr".to_owned(), 1));
        assert_eq!(position.cursor(), None);
        let t = "2026-11-01T00:00:01.5Z";
        let at = parse_instant(t).unwrap();
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        position.advance(t, at, Some(&a));
        position.advance(t, at, Some(&b));
        assert!(position.done(at, Some(&a)) && position.done(at, Some(&b)));
        assert_eq!(
            position.query(&job.filter).0,
            format!("(userName pr) and meta.created ge \"{t}\"")
        );
        let cursor = position.cursor().unwrap();
        assert_eq!(
            (cursor.id.as_str(), cursor.same_instant.clone()),
            (b.as_str(), vec![a.clone()])
        );
        // The next hop starts where this one stopped.
        let resumed = Position::new(1, Some(&cursor));
        assert!(resumed.done(at, Some(&a)) && resumed.done(at, Some(&b)));
        assert!(!resumed.done(at, Some(&"c".repeat(32))));
        // A later instant forgets the earlier one's ids.
        let later = parse_instant("2026-11-01T00:00:02Z").unwrap();
        position.advance("2026-11-01T00:00:02Z", later, Some(&a));
        assert!(position.cursor().unwrap().same_instant.is_empty());
        assert_eq!(keyset_filter("", t), format!("meta.created ge \"{t}\""));
    }
}
