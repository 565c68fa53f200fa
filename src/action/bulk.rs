//! `BULK=auto`: a batch's users are read with SCIM search and written with SCIM Bulk, per domain,
//! instead of one GET and one PUT each (PRODUCT.md, "Fewer requests: search and Bulk").
//!
//! The work goes in steps over windows of users (so memory stays bounded whatever the batch):
//! read every user (searches of at most 50 per domain, single GETs for users an answer lacks),
//! check and decide each exactly as the single path does, then write what must be written (Bulk
//! requests of at most 50 operations and 1 MB, one in flight per domain; single PUTs for a lone
//! write, for operations Bulk refuses, and where the domain refuses Bulk), one Bulk request's worth
//! of users at a time, each user's records logged as soon as that request (and any revocation after
//! it) settles. A domain that refuses
//! `.search` or `/Bulk` as such is remembered for the life of the process and logged once; since
//! a refused request wrote nothing, its users then go singly, none lost and none written twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::action::apply::{
    acted_result, fail_all, record_results, unresolved, Checked, Engine, FirstOutcome, Outcome,
    Plan, Planned, RecordResult, RouteWork, SettledResults, Written, DEADLINE_BEFORE_START,
    START_MARGIN, STOPPING_BEFORE_START,
};
use crate::action::credentials::{conclude, Lingering, Revocation};
use crate::action::ledger::OpenCall;
use crate::clients::identity_domain::{Answer, Failure, Settled, UserPage};
use crate::clients::scim_bulk::{
    bulk_call, chunks, judge_answer, match_search, refused_as_unsupported, search_call,
    BulkOperation, OpResult, MAX_OPERATIONS, MAX_SEARCH_USERS,
};
use crate::decision::credentials::Held;
use crate::intake::names::{DomainOcid, DomainUrl, UserId, UserRef};
use crate::transport::backoff;

/// Users taken through the steps at once: their reads are held until their writes are done.
const WINDOW: usize = 1000;
/// Bulk rounds for operations answered with a retryable status (the first included).
const BULK_ROUNDS: u32 = 4;

/// The endpoints a domain may refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Endpoint {
    Search,
    Bulk,
    /// Credential `DELETE` operations inside Bulk (the capability writes may still go in Bulk).
    BulkDelete,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Search => "/admin/v1/Users/.search",
            Endpoint::Bulk => "/admin/v1/Bulk",
            Endpoint::BulkDelete => "/admin/v1/Bulk (credential DELETE operations)",
        }
    }
}

/// Per domain, for the life of the process: the endpoints it refused, and the lock that keeps one
/// Bulk request in flight (a domain runs one Bulk job at a time).
#[derive(Debug, Default)]
pub(crate) struct BulkState {
    refused: Mutex<HashSet<(DomainUrl, Endpoint)>>,
    bulk_locks: Mutex<HashMap<DomainUrl, Arc<tokio::sync::Mutex<()>>>>,
}

impl BulkState {
    fn refuses(&self, domain: &DomainUrl, endpoint: Endpoint) -> bool {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.contains(&(domain.clone(), endpoint))
    }

    /// Remembers the refusal; logs it the first time only.
    fn refused(&self, domain: &DomainUrl, endpoint: Endpoint, why: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.insert((domain.clone(), endpoint)) {
            tracing::warn!(
                domain = %domain,
                endpoint = endpoint.path(),
                reason = why,
                "the identity domain refuses this endpoint: single requests for this domain from now on"
            );
        }
    }

    fn bulk_lock(&self, domain: &DomainUrl) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.bulk_locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(domain.clone()).or_default())
    }
}

/// One write waiting to be sent: its slot in the caller's list, the user, the PUT body.
type Pending = (usize, UserId, Vec<u8>);

impl Engine {
    /// Whether credential deletes for `domain` go in Bulk: `BULK=auto`, and the domain has not
    /// refused Bulk or credential deletes inside it.
    pub(crate) fn deletes_in_bulk(&self, domain: &DomainUrl) -> bool {
        self.bulk.enabled
            && !self.bulk_state.refuses(domain, Endpoint::Bulk)
            && !self.bulk_state.refuses(domain, Endpoint::BulkDelete)
    }

    /// Remembers that `domain` refuses credential deletes inside Bulk (each one answered as
    /// unsupported): single `DELETE`s from now on, logged once.
    pub(crate) fn refuses_deletes_in_bulk(&self, domain: &DomainUrl) {
        self.bulk_state.refused(
            domain,
            Endpoint::BulkDelete,
            "every credential DELETE of a Bulk request was refused as unsupported (or not found)",
        );
    }

    /// One Bulk request carrying `operations`, one in flight per domain. `None` when it did not
    /// succeed as a whole (then nothing in it is assumed done; a refusal of `/Bulk` as such is
    /// remembered for the domain).
    pub(crate) async fn send_bulk(
        &self,
        domain: &DomainUrl,
        operations: &[BulkOperation],
        deadline: Instant,
    ) -> Option<crate::transport::Answer> {
        let call = bulk_call(domain, crate::clients::scim_bulk::bulk_body(operations));
        let sent = {
            let lock = self.bulk_state.bulk_lock(domain);
            let _one_at_a_time = lock.lock().await;
            self.client.send(&call, deadline).await
        };
        match sent {
            Ok(answer) => Some(answer),
            Err(failure) => {
                let refused = failure
                    .error
                    .status()
                    .is_some_and(|s| refused_as_unsupported(s, failure.error.detail()));
                if refused {
                    self.bulk_state
                        .refused(domain, Endpoint::Bulk, &failure.to_string());
                }
                tracing::warn!(domain = %domain, error = %failure, operations = operations.len(), "Bulk request failed; its operations go singly");
                None
            }
        }
    }

    /// A batch's users with `BULK=auto`: those whose domain URL is known at once, and each domain
    /// OCID's users as soon as its lookup answers (a slow lookup holds up no other domain). Each
    /// window's records are logged as they settle.
    pub(crate) async fn run_in_bulk(
        &self,
        ready: Vec<(DomainUrl, RouteWork)>,
        by_ocid: HashMap<DomainOcid, Vec<RouteWork>>,
        call: &OpenCall,
        results: &SettledResults<'_>,
        deadline: Instant,
    ) {
        type Job<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
        let mut jobs: Vec<Job<'_>> = vec![Box::pin(
            self.process_in_bulk(ready, call, results, deadline),
        )];
        for (ocid, users) in by_ocid {
            jobs.push(Box::pin(async move {
                match self.control_plane.domain_url(&ocid, deadline).await {
                    Ok(url) => {
                        let work = users.into_iter().map(|w| (url.clone(), w)).collect();
                        self.process_in_bulk(work, call, results, deadline).await
                    }
                    Err(error) => {
                        users
                            .iter()
                            .flat_map(|w| &w.records)
                            .for_each(|(index, target)| {
                                results.push(unresolved(*index, target, &error))
                            })
                    }
                }
            }));
        }
        let mut done =
            futures_util::stream::iter(jobs).buffer_unordered(self.max_concurrency.max(1));
        while done.next().await.is_some() {}
    }

    /// Users whose domain URL is known, read, decided and written in windows (see the module
    /// documentation); each record is logged as soon as it settles: at the read for a user that goes
    /// no further, else with the Bulk request that carries its write.
    async fn process_in_bulk(
        &self,
        work: Vec<(DomainUrl, RouteWork)>,
        call: &OpenCall,
        results: &SettledResults<'_>,
        deadline: Instant,
    ) {
        for window in work.chunks(WINDOW) {
            self.bulk_window(window, call, results, deadline).await;
        }
    }

    async fn bulk_window(
        &self,
        work: &[(DomainUrl, RouteWork)],
        call: &OpenCall,
        results: &SettledResults<'_>,
        deadline: Instant,
    ) {
        let not_started = if Instant::now() + START_MARGIN >= deadline {
            Some(DEADLINE_BEFORE_START)
        } else {
            call.stopping().then_some(STOPPING_BEFORE_START)
        };
        if let Some(reason) = not_started {
            let late = |(_, w): &(DomainUrl, RouteWork)| {
                fail_all(w, reason.into(), Vec::new(), Outcome::Failed)
            };
            work.iter().flat_map(late).for_each(|r| results.push(r));
            return;
        }
        let keys: Vec<(DomainUrl, UserRef)> = work
            .iter()
            .map(|(url, w)| (url.clone(), w.user.1.clone()))
            .collect();
        let users: Vec<&(DomainUrl, UserRef)> = keys.iter().collect();
        let reads = self.read_users(&users, deadline).await;
        // One attribute list serves a whole search, so every read asks for the credentials (an
        // exempt user's are dropped unexamined).
        let keep = !self.credential_attributes.is_empty();
        // Users to act on (work index, what the read established, the plan), and later work for
        // a user already among them (named once by id, once by OCID).
        let mut acting: Vec<(usize, Checked, Planned)> = Vec::new();
        let mut repeats: Vec<(usize, Checked, usize)> = Vec::new();
        let mut first_of: HashMap<(DomainUrl, UserId), usize> = HashMap::new();
        for (i, read) in reads.into_iter().enumerate() {
            // Shared per domain: after the first user of a domain this waits for nothing.
            let known = match self
                .learn_for(&work[i].0, &work[i].1, &read, deadline)
                .await
            {
                Ok(known) => known,
                Err(settled) => {
                    settled.into_iter().for_each(|r| results.push(r));
                    continue;
                }
            };
            let checked = match self.check_read(&work[i].1, read, keep, known) {
                Ok(checked) => checked,
                Err(settled) => {
                    settled.into_iter().for_each(|r| results.push(r));
                    continue;
                }
            };
            let key = (work[i].0.clone(), checked.user_id.clone());
            if let Some(&first) = first_of.get(&key) {
                repeats.push((i, checked, first));
                continue;
            }
            first_of.insert(key, acting.len());
            let planned = self.plan(&checked.decision, &checked.current, checked.held.as_ref());
            acting.push((i, checked, planned));
        }
        // One Bulk request's worth of writes at a time, each user's records logged as its request
        // settles (a kill mid-window leaves no accepted write without its line).
        let mut firsts: Vec<FirstOutcome> = Vec::with_capacity(acting.len());
        while !acting.is_empty() {
            let cut = holding_writes(&acting, MAX_OPERATIONS).max(1);
            let chunk: Vec<_> = acting.drain(..cut).collect();
            for (records, first) in self.write_chunk(work, chunk, deadline).await {
                records.into_iter().for_each(|r| results.push(r));
                firsts.push(first);
            }
        }
        for (i, checked, first) in repeats {
            record_results(&work[i].1, &checked, None, &firsts[first], self.dry_run)
                .into_iter()
                .for_each(|r| results.push(r));
        }
    }

    /// Writes `chunk`'s users (at most one Bulk request's worth), then revokes what lingers; each
    /// user's records and its outcome, in `chunk`'s order.
    async fn write_chunk(
        &self,
        work: &[(DomainUrl, RouteWork)],
        chunk: Vec<(usize, Checked, Planned)>,
        deadline: Instant,
    ) -> Vec<(Vec<RecordResult>, FirstOutcome)> {
        let writes = chunk
            .iter()
            .enumerate()
            .filter_map(|(k, (i, checked, planned))| match &planned.plan {
                Plan::Write { body, .. } => {
                    Some((k, work[*i].0.clone(), checked.user_id.clone(), body.clone()))
                }
                Plan::Done(_) => None,
            })
            .collect();
        let mut written = self.write_all(writes, deadline).await;
        // The writes are settled: the lingering credentials are noted, and those to revoke are
        // deleted together, per domain.
        let mut noted = Vec::with_capacity(chunk.len());
        let mut to_revoke: HashMap<DomainUrl, Vec<(usize, UserId, Vec<Held>)>> = HashMap::new();
        for (k, (i, checked, planned)) in chunk.into_iter().enumerate() {
            let domain = &work[i].0;
            let (lingering, decided) =
                planned.noted(self, domain, &checked.user_id, written.remove(&k));
            let done = match lingering {
                Lingering::Settled(done) => done,
                Lingering::Revoke(done, held) => {
                    let user = checked.user_id.clone();
                    to_revoke
                        .entry(domain.clone())
                        .or_default()
                        .push((k, user, held));
                    done
                }
            };
            noted.push((i, checked, done, decided));
        }
        let mut revocations = self.revoke_all(to_revoke, deadline).await;
        let mut settled = Vec::with_capacity(noted.len());
        for (k, (i, checked, done, decided)) in noted.into_iter().enumerate() {
            let done = match revocations.remove(&k) {
                Some(revocation) => conclude(done, revocation),
                None => done,
            };
            let (result, first) = acted_result(&work[i].1, &checked, decided.finish(done));
            let records = record_results(&work[i].1, &checked, Some(result), &first, self.dry_run);
            settled.push((records, first));
        }
        settled
    }

    /// Every domain's credential deletes (`slot, user, credentials` per domain), domains side by
    /// side; what became of each user's, by slot.
    async fn revoke_all(
        &self,
        by_domain: HashMap<DomainUrl, Vec<(usize, UserId, Vec<Held>)>>,
        deadline: Instant,
    ) -> HashMap<usize, Revocation> {
        self.per_domain(by_domain, |domain, users| async move {
            self.revoke_in_domain(&domain, users, deadline).await
        })
        .await
    }

    /// `work` for each domain's share, domains side by side (at most `max_concurrency`); every
    /// slot's outcome.
    async fn per_domain<T, R, Fut, Out>(
        &self,
        by_domain: HashMap<DomainUrl, T>,
        work: impl Fn(DomainUrl, T) -> Fut,
    ) -> HashMap<usize, R>
    where
        Fut: std::future::Future<Output = Out>,
        Out: IntoIterator<Item = (usize, R)>,
    {
        let domains = by_domain
            .into_iter()
            .map(|(domain, share)| work(domain, share));
        futures_util::stream::iter(domains)
            .buffer_unordered(self.max_concurrency.max(1))
            .flat_map(futures_util::stream::iter)
            .collect()
            .await
    }

    /// Each user's read, in order: from searches of at most 50 users per domain where the domain
    /// takes them, else (and for users an answer lacks) from a single GET.
    pub(crate) async fn read_users(
        &self,
        users: &[&(DomainUrl, UserRef)],
        deadline: Instant,
    ) -> Vec<Result<Answer<Value>, Failure>> {
        let mut found: Vec<Option<Answer<Value>>> = (0..users.len()).map(|_| None).collect();
        let mut by_domain: HashMap<&DomainUrl, Vec<usize>> = HashMap::new();
        for (i, (domain, _)) in users.iter().enumerate() {
            by_domain.entry(domain).or_default().push(i);
        }
        let mut searches = Vec::new();
        for (domain, slots) in by_domain {
            if self.bulk.enabled && !self.bulk_state.refuses(domain, Endpoint::Search) {
                for part in slots.chunks(MAX_SEARCH_USERS) {
                    let refs: Vec<&UserRef> = part.iter().map(|&i| &users[i].1).collect();
                    searches.push(self.search(domain, part.to_vec(), refs, deadline));
                }
            }
        }
        let mut answers =
            futures_util::stream::iter(searches).buffer_unordered(self.max_concurrency.max(1));
        while let Some(answered) = answers.next().await {
            for (slot, answer) in answered {
                found[slot] = Some(answer);
            }
        }
        drop(answers);
        // Users no answer held (or whose domain takes no search): one GET each.
        let wanted = self.read_attributes(true);
        let reads = found.into_iter().enumerate().map(|(i, found)| {
            let wanted = &wanted;
            async move {
                match found {
                    Some(answer) => Ok(answer),
                    None => {
                        let (domain, user) = users[i];
                        self.client.get_user(domain, user, wanted, deadline).await
                    }
                }
            }
        });
        futures_util::stream::iter(reads)
            .buffered(self.max_concurrency.max(1))
            .collect()
            .await
    }

    /// One search for `refs` (the users in `slots`): the users the answer holds, by slot. A failed
    /// search holds none, so its users are read singly; a refusal of `.search` as such is
    /// remembered for the domain.
    async fn search(
        &self,
        domain: &DomainUrl,
        slots: Vec<usize>,
        refs: Vec<&UserRef>,
        deadline: Instant,
    ) -> Vec<(usize, Answer<Value>)> {
        let call = search_call(domain, &refs, &self.read_attributes(true));
        let answer = match self.client.send(&call, deadline).await {
            Ok(answer) => answer,
            Err(failure) => {
                let detail = failure.error.detail();
                if let Some(status) = failure.error.status() {
                    if refused_as_unsupported(status, detail) {
                        self.bulk_state
                            .refused(domain, Endpoint::Search, &failure.to_string());
                    }
                }
                tracing::warn!(domain = %domain, error = %failure, users = refs.len(), "search failed; reading these users singly");
                return Vec::new();
            }
        };
        let page = match serde_json::from_slice::<UserPage>(&answer.body) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(domain = %domain, error = %e, "the search answer is not a list of users; reading these users singly");
                return Vec::new();
            }
        };
        let (matched, notes) = match_search(&page.resources, &refs);
        for note in notes {
            tracing::warn!(domain = %domain, request_ids = %answer.request_ids.join(","), "{note}");
        }
        slots
            .into_iter()
            .zip(matched)
            .filter_map(|(slot, user)| {
                let ecids = answer.request_ids.clone();
                user.map(|value| (slot, Answer { value, ecids }))
            })
            .collect()
    }

    /// Sends every planned write, `(slot, domain, user, PUT body)`: per domain as Bulk requests
    /// when it takes them and more than one write is due, else singly. What became of each, by
    /// slot.
    pub(crate) async fn write_all(
        &self,
        writes: Vec<(usize, DomainUrl, UserId, Vec<u8>)>,
        deadline: Instant,
    ) -> HashMap<usize, Written> {
        let mut by_domain: HashMap<DomainUrl, Vec<Pending>> = HashMap::new();
        for (slot, domain, user, body) in writes {
            by_domain
                .entry(domain)
                .or_default()
                .push((slot, user, body));
        }
        self.per_domain(by_domain, |domain, pending| async move {
            self.write_domain(&domain, pending, deadline).await
        })
        .await
    }

    /// One domain's writes: Bulk rounds while retryable operations remain, then single PUTs for
    /// what Bulk did not take.
    async fn write_domain(
        &self,
        domain: &DomainUrl,
        mut pending: Vec<Pending>,
        deadline: Instant,
    ) -> Vec<(usize, Written)> {
        let mut done = Vec::new();
        let mut singly = Vec::new();
        let mut last_reason: HashMap<usize, String> = HashMap::new();
        for round in 1..=BULK_ROUNDS {
            let bulk_ok = self.bulk.enabled && !self.bulk_state.refuses(domain, Endpoint::Bulk);
            if pending.is_empty() || !bulk_ok || (round == 1 && pending.len() < 2) {
                break;
            }
            if round > 1 && !self.wait_for_round(round, deadline).await {
                break;
            }
            let mut retry = Vec::new();
            for part in chunk_pending(std::mem::take(&mut pending)) {
                let outcome = self.bulk_request(domain, part, deadline).await;
                done.extend(outcome.done);
                singly.extend(outcome.singly);
                for (p, reason) in outcome.retry {
                    last_reason.insert(p.0, reason);
                    retry.push(p);
                }
            }
            pending = retry;
        }
        // Retryable operations left after the rounds (or whose domain stopped taking Bulk) go
        // singly while there is time, else end `failed` with their last reason.
        let time_left = Instant::now() + START_MARGIN < deadline;
        for (slot, user, body) in pending {
            match last_reason.remove(&slot) {
                Some(reason) if !time_left => {
                    done.push((slot, not_done(Outcome::Failed, reason, Vec::new())))
                }
                _ => singly.push((slot, user, body)),
            }
        }
        let singles = singly.into_iter().map(|(slot, user, body)| async move {
            (slot, self.put_single(domain, &user, body, deadline).await)
        });
        let singles: Vec<(usize, Written)> = futures_util::stream::iter(singles)
            .buffer_unordered(self.max_concurrency.max(1))
            .collect()
            .await;
        done.extend(singles);
        done
    }

    /// Waits before another Bulk round; `false` when the deadline leaves no time for it.
    async fn wait_for_round(&self, round: u32, deadline: Instant) -> bool {
        let delay = backoff(
            round - 1,
            Duration::from_millis(200),
            Duration::from_secs(5),
            fastrand::f64(),
        );
        if Instant::now() + delay + START_MARGIN >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        true
    }

    /// One Bulk request for `part`, one in flight per domain; its own answer is judged first,
    /// then each operation's.
    async fn bulk_request(
        &self,
        domain: &DomainUrl,
        part: Vec<Pending>,
        deadline: Instant,
    ) -> RoundOutcome {
        let operations: Vec<BulkOperation> = part.iter().map(operation).collect();
        let call = bulk_call(domain, crate::clients::scim_bulk::bulk_body(&operations));
        let sent = {
            let lock = self.bulk_state.bulk_lock(domain);
            let _one_at_a_time = lock.lock().await;
            self.client.send(&call, deadline).await
        };
        let answer = match sent {
            Ok(answer) => answer,
            Err(failure) => return self.bulk_refused(domain, part, failure),
        };
        let ecids = answer.request_ids.clone();
        let (judged, notes) = match judge_answer(&answer.body, &operations) {
            Ok(judged) => judged,
            Err(why) => return RoundOutcome::all_failed(part, &why, &ecids),
        };
        for note in &notes {
            tracing::warn!(domain = %domain, request_ids = %ecids.join(","), "{note}");
        }
        let mut outcome = RoundOutcome::default();
        let every_op_refused = part
            .iter()
            .all(|p| matches!(judged.get(&p.0.to_string()), Some(OpResult::Single(_))));
        if every_op_refused {
            self.bulk_state.refused(
                domain,
                Endpoint::Bulk,
                "every operation of a Bulk request was refused as unsupported",
            );
        }
        for p in part {
            match judged.get(&p.0.to_string()) {
                Some(OpResult::Done) => outcome.done.push((
                    p.0,
                    Written::Done {
                        ecids: ecids.clone(),
                    },
                )),
                Some(OpResult::Retry(reason)) => outcome.retry.push((p, reason.clone())),
                Some(OpResult::Single(_)) => outcome.singly.push(p),
                Some(OpResult::Rejected(reason)) => outcome.done.push((
                    p.0,
                    not_done(
                        Outcome::Rejected,
                        format!("writing capabilities: {reason}"),
                        ecids.clone(),
                    ),
                )),
                Some(OpResult::Failed(reason)) => outcome.done.push((
                    p.0,
                    not_done(
                        Outcome::Failed,
                        format!("writing capabilities: {reason}"),
                        ecids.clone(),
                    ),
                )),
                None => outcome.done.push((
                    p.0,
                    not_done(
                        Outcome::Failed,
                        "writing capabilities: the Bulk answer has no result for this operation; \
                         not assumed written"
                            .into(),
                        ecids.clone(),
                    ),
                )),
            }
        }
        outcome
    }

    /// A Bulk request that did not succeed as a whole: refused as such, its writes go singly (it
    /// wrote nothing); otherwise every write of it ends as the request did.
    fn bulk_refused(
        &self,
        domain: &DomainUrl,
        part: Vec<Pending>,
        failure: Failure,
    ) -> RoundOutcome {
        let refused = failure
            .error
            .status()
            .is_some_and(|s| refused_as_unsupported(s, failure.error.detail()));
        if refused {
            self.bulk_state
                .refused(domain, Endpoint::Bulk, &failure.to_string());
            return RoundOutcome {
                singly: part,
                ..RoundOutcome::default()
            };
        }
        let outcome = match failure.settled {
            Settled::Rejected => Outcome::Rejected,
            Settled::Failed => Outcome::Failed,
        };
        let reason = format!("writing capabilities in Bulk: {failure}");
        RoundOutcome {
            done: part
                .into_iter()
                .map(|p| {
                    (
                        p.0,
                        not_done(outcome, reason.clone(), failure.request_ids.clone()),
                    )
                })
                .collect(),
            ..RoundOutcome::default()
        }
    }
}

/// What one Bulk request came to, per write.
#[derive(Debug, Default)]
struct RoundOutcome {
    /// Settled: written, rejected or failed.
    done: Vec<(usize, Written)>,
    /// For a later round, with the reason of this one.
    retry: Vec<(Pending, String)>,
    /// To send as single PUTs.
    singly: Vec<Pending>,
}

impl RoundOutcome {
    /// An answer that does not say what became of the operations: none is assumed written.
    fn all_failed(part: Vec<Pending>, why: &str, ecids: &[String]) -> Self {
        let reason = format!("writing capabilities: {why}; not assumed written");
        RoundOutcome {
            done: part
                .into_iter()
                .map(|p| {
                    (
                        p.0,
                        not_done(Outcome::Failed, reason.clone(), ecids.to_vec()),
                    )
                })
                .collect(),
            ..RoundOutcome::default()
        }
    }
}

fn not_done(outcome: Outcome, reason: String, ecids: Vec<String>) -> Written {
    Written::NotDone {
        outcome,
        reason,
        ecids,
    }
}

/// The Bulk operation for a pending write: its slot is its `bulkId`.
fn operation(pending: &Pending) -> BulkOperation {
    let (slot, user, body) = pending;
    let data = serde_json::from_slice(body).unwrap_or(Value::Null);
    BulkOperation::put(
        slot.to_string(),
        format!("/UserCapabilitiesChanger/{user}"),
        data,
    )
}

/// Pending writes cut at the Bulk limits (the same cut as [`chunks`], kept with their slots).
fn chunk_pending(pending: Vec<Pending>) -> Vec<Vec<Pending>> {
    let sizes: Vec<usize> = chunks(pending.iter().map(operation).collect())
        .iter()
        .map(Vec::len)
        .collect();
    let mut rest = pending.into_iter();
    sizes
        .into_iter()
        .map(|n| rest.by_ref().take(n).collect())
        .collect()
}

/// How many of `acting`'s first users hold at most `max` writes (at least one user).
fn holding_writes(acting: &[(usize, Checked, Planned)], max: usize) -> usize {
    let mut writes = 0;
    for (n, (_, _, planned)) in acting.iter().enumerate() {
        if matches!(planned.plan, Plan::Write { .. }) {
            if writes == max {
                return n;
            }
            writes += 1;
        }
    }
    acting.len()
}
