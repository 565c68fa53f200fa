//! Lingering credentials, after the capabilities: counted and logged by id (`CREDENTIALS=report`), or
//! deleted once the capability is off (`CREDENTIALS=revoke`): one `DELETE` each, or as Bulk `DELETE`
//! operations when `BULK=auto` and several users' are deleted together.
//!
//! A delete answered 404 counts as already revoked; a 403 is `rejected` naming the role the function
//! needs; any other refusal is classified like every other call. Ids are validated before a path is
//! built, and only ids ever reach the log, never key material.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::action::apply::{Enforced, Engine, Outcome};
use crate::clients::identity_domain::{Settled, REVOKE_FORBIDDEN};
use crate::clients::scim_bulk::{
    judge_answer, operation_statuses, BulkOperation, OpResult, MAX_OPERATIONS,
};
use crate::decision::credentials::{counts, Counts, CredentialType, CredentialsMode, Held};
use crate::intake::names::{CredentialId, DomainUrl, UserId};
use crate::transport::StatusCode;

/// What deleting a user's lingering credentials came to.
#[derive(Debug, Default)]
pub(crate) struct Revocation {
    /// Deleted (or already gone), by type; in a dry run, what would be.
    revoked: Counts,
    /// The worst end of a credential that was not revoked, and why, one reason per credential.
    problem: Option<Outcome>,
    reasons: Vec<String>,
    ecids: Vec<String>,
}

impl Revocation {
    fn revoked(&mut self, held: &Held) {
        *self.revoked.entry(held.kind.attribute()).or_insert(0) += 1;
    }

    /// Adds one credential's end, and logs it (by id: never key material).
    fn record(
        &mut self,
        domain: &DomainUrl,
        user: &UserId,
        kind: CredentialType,
        id: &CredentialId,
        end: Deleted,
    ) {
        let (user_id, credential_type) = (user.as_str(), kind.attribute());
        match end {
            Deleted::Done(message) => {
                *self.revoked.entry(credential_type).or_insert(0) += 1;
                tracing::info!(
                    domain = domain.as_str(),
                    user_id,
                    credential_type,
                    credential_id = id.as_str(),
                    "{message}"
                );
            }
            Deleted::Not(outcome, reason) => {
                tracing::warn!(domain = domain.as_str(), user_id, credential_type, credential_id = id.as_str(), reason = %reason, "credential not revoked");
                self.not_revoked(outcome, reason);
            }
        }
    }

    fn not_revoked(&mut self, outcome: Outcome, reason: String) {
        self.problem = Some(match (self.problem, outcome) {
            (Some(Outcome::Failed), _) | (_, Outcome::Failed) => Outcome::Failed,
            _ => outcome,
        });
        self.reasons.push(reason);
    }
}

/// A user's lingering credentials, noted, and what is left to do about them.
#[derive(Debug)]
pub(crate) enum Lingering {
    /// Nothing more: none held, `report` mode, a dry run, or capabilities not written.
    Settled(Enforced),
    /// Delete these (ids checked or not), then [`conclude`] with what became of them.
    Revoke(Enforced, Vec<Held>),
}

impl Engine {
    /// Counts and logs the user's lingering credentials into `done`, and says whether any must
    /// still be deleted (only under `CREDENTIALS=revoke`, outside a dry run, and once the
    /// capabilities are right: applied or already compliant).
    pub(crate) fn note_lingering(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        held: Result<Vec<Held>, String>,
        mut done: Enforced,
    ) -> Lingering {
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                // A retry would read the same shape: final, and the capabilities stand as written.
                let reason = format!(
                    "the identity domain's userCredentials answer is not the shape expected ({e}); \
                     credentials were not examined"
                );
                return Lingering::Settled(worse(done, Outcome::Rejected, reason));
            }
        };
        if held.is_empty() {
            return Lingering::Settled(done);
        }
        done.lingering = counts(&held);
        for h in &held {
            tracing::info!(domain = domain.as_str(), user_id = user.as_str(), credential_type = h.kind.attribute(), credential_id = %h.shown_id(), mode = self.credentials.as_str(), "lingering credential");
        }
        if self.credentials != CredentialsMode::Revoke {
            return Lingering::Settled(done);
        }
        if !matches!(done.outcome, Outcome::Applied | Outcome::Unchanged) {
            // Revoked only once the capability is off, so a user cannot make a new one meanwhile.
            let reason = "lingering credentials not revoked: the capabilities were not written";
            done.reason = Some(joined(done.reason.take(), reason));
            return Lingering::Settled(done);
        }
        if self.dry_run {
            return Lingering::Settled(merge(done, would_revoke(&held), true));
        }
        Lingering::Revoke(done, held)
    }

    /// Deletes each credential in turn; every one is tried whatever became of the others.
    pub(crate) async fn revoke(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        held: &[Held],
        deadline: Instant,
    ) -> Revocation {
        let mut revocation = Revocation::default();
        for h in held {
            match &h.id {
                Ok(id) => {
                    self.delete_one(domain, user, h.kind, id, &mut revocation, deadline)
                        .await
                }
                Err(e) => revocation
                    .not_revoked(Outcome::Rejected, format!("{} not revoked: {e}", h.kind)),
            }
        }
        revocation
    }

    /// One `DELETE /admin/v1/<type>/{id}`, its end added to `revocation`.
    async fn delete_one(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        kind: CredentialType,
        id: &CredentialId,
        revocation: &mut Revocation,
        deadline: Instant,
    ) {
        let answer = self
            .client
            .delete_credential(domain, kind, id, deadline)
            .await;
        let end = match answer {
            Ok(answer) => {
                revocation.ecids.extend(answer.ecids);
                Deleted::Done("credential revoked")
            }
            Err(failure) if failure.error.status() == Some(StatusCode::NOT_FOUND) => {
                revocation.ecids.extend(failure.request_ids);
                Deleted::Done("credential already revoked (404)")
            }
            Err(failure) => {
                let outcome = match failure.settled {
                    Settled::Rejected => Outcome::Rejected,
                    Settled::Failed => Outcome::Failed,
                };
                revocation.ecids.extend(failure.request_ids.iter().cloned());
                Deleted::Not(outcome, format!("revoking {kind} {id}: {failure}"))
            }
        };
        revocation.record(domain, user, kind, id, end);
    }

    /// Deletes the credentials of several users of one domain (`users`: slot, user, credentials):
    /// as Bulk `DELETE` operations when `BULK=auto`, the domain takes them and more than one is
    /// due; otherwise, and for any operation an answer leaves unsettled, one `DELETE` each. A delete
    /// is idempotent (a second one answers 404, which counts as revoked), so an unsettled operation
    /// is simply sent again singly. What became of each user's credentials, by slot.
    pub(crate) async fn revoke_in_domain(
        &self,
        domain: &DomainUrl,
        users: Vec<(usize, UserId, Vec<Held>)>,
        deadline: Instant,
    ) -> HashMap<usize, Revocation> {
        let mut out: HashMap<usize, Revocation> = HashMap::new();
        let mut pending: Vec<PendingDelete> = Vec::new();
        for (slot, user, held) in users {
            let revocation = out.entry(slot).or_default();
            for h in held {
                match h.id {
                    Ok(id) => pending.push((slot, user.clone(), h.kind, id)),
                    Err(e) => revocation
                        .not_revoked(Outcome::Rejected, format!("{} not revoked: {e}", h.kind)),
                }
            }
        }
        let singly = if pending.len() > 1 && self.deletes_in_bulk(domain) {
            self.delete_in_bulk(domain, pending, &mut out, deadline)
                .await
        } else {
            pending
        };
        for (slot, user, kind, id) in singly {
            let revocation = out.entry(slot).or_default();
            self.delete_one(domain, &user, kind, &id, revocation, deadline)
                .await;
        }
        out
    }

    /// Sends `pending` as Bulk requests of at most 50 `DELETE` operations (one in flight per
    /// domain), settles what the answers settle (done, 404, 403, another final refusal) and
    /// returns the rest, to be deleted singly.
    async fn delete_in_bulk(
        &self,
        domain: &DomainUrl,
        pending: Vec<PendingDelete>,
        out: &mut HashMap<usize, Revocation>,
        deadline: Instant,
    ) -> Vec<PendingDelete> {
        let mut singly = Vec::new();
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<PendingDelete> = rest.by_ref().take(MAX_OPERATIONS).collect();
            let operations: Vec<BulkOperation> = part
                .iter()
                .enumerate()
                .map(|(n, (_, _, kind, id))| {
                    BulkOperation::delete(n.to_string(), format!("/{}/{id}", kind.endpoint()))
                })
                .collect();
            let Some(answer) = self.send_bulk(domain, &operations, deadline).await else {
                singly.extend(part);
                continue;
            };
            let ends = bulk_ends(&answer.body, &operations);
            // Every operation refused (or not found) inside Bulk: the domain does not take
            // credential deletes there.
            if ends
                .iter()
                .all(|e| matches!(e, BulkEnd::Unsupported | BulkEnd::NotFound))
            {
                self.refuses_deletes_in_bulk(domain);
            }
            for (p, end) in part.into_iter().zip(ends) {
                let (slot, user, kind, id) = &p;
                let revocation = out.entry(*slot).or_default();
                let end = match end {
                    BulkEnd::Settled(end) => end,
                    BulkEnd::Unsupported | BulkEnd::NotFound | BulkEnd::Unsettled => {
                        singly.push(p);
                        continue;
                    }
                };
                for request_id in &answer.request_ids {
                    if !revocation.ecids.contains(request_id) {
                        revocation.ecids.push(request_id.clone());
                    }
                }
                revocation.record(domain, user, *kind, id, end);
            }
        }
        singly
    }
}

/// One `DELETE` waiting to go in Bulk: the user's slot, the user, the type and the checked id.
type PendingDelete = (usize, UserId, CredentialType, CredentialId);

/// What became of one credential's delete.
#[derive(Debug)]
enum Deleted {
    /// Gone (deleted now, or already): the log line's message.
    Done(&'static str),
    /// Still there: how the record ends, and why.
    Not(Outcome, String),
}

/// What a Bulk answer says of one `DELETE` operation.
#[derive(Debug)]
enum BulkEnd {
    Settled(Deleted),
    /// Refused as unsupported inside Bulk: a single `DELETE` is the service's word on it.
    Unsupported,
    /// 404 inside Bulk: the credential may be gone, or the path unknown to Bulk; a single `DELETE`
    /// of the documented endpoint says which.
    NotFound,
    /// Retryable, or the answer does not say: a single `DELETE` settles it.
    Unsettled,
}

/// Each operation's end, in the order asked: 2xx is done; a 403 is the role (final); any other final
/// refusal but 404 is rejected as the write table says; the rest is left to a single delete. A 404
/// inside Bulk may mean the path is unknown there rather than the credential gone, so it is not
/// counted as revoked until a single `DELETE` of the documented endpoint says so.
fn bulk_ends(body: &[u8], asked: &[BulkOperation]) -> Vec<BulkEnd> {
    let statuses = operation_statuses(body);
    let judged = judge_answer(body, asked)
        .map(|(judged, _)| judged)
        .unwrap_or_default();
    asked
        .iter()
        .map(|op| {
            let id = &op.bulk_id;
            match (statuses.get(id), judged.get(id)) {
                (Some(s), _) if s.is_success() => {
                    BulkEnd::Settled(Deleted::Done("credential revoked (Bulk)"))
                }
                (Some(&StatusCode::FORBIDDEN), _) => BulkEnd::Settled(Deleted::Not(
                    Outcome::Rejected,
                    format!(
                        "revoking {}: the identity domain answered 403 to this operation inside \
                         Bulk; {REVOKE_FORBIDDEN}",
                        op.path.trim_start_matches('/')
                    ),
                )),
                (Some(&StatusCode::NOT_FOUND), _) => BulkEnd::NotFound,
                (_, Some(OpResult::Rejected(reason))) => BulkEnd::Settled(Deleted::Not(
                    Outcome::Rejected,
                    format!("revoking {}: {reason}", op.path.trim_start_matches('/')),
                )),
                (_, Some(OpResult::Single(_))) => BulkEnd::Unsupported,
                _ => BulkEnd::Unsettled,
            }
        })
        .collect()
}

/// A dry run's answer: every credential a real run could delete would be; one whose id cannot be
/// put in a path would not.
fn would_revoke(held: &[Held]) -> Revocation {
    let mut revocation = Revocation::default();
    for h in held {
        match &h.id {
            Ok(_) => revocation.revoked(h),
            Err(e) => {
                revocation.not_revoked(Outcome::Rejected, format!("{} not revoked: {e}", h.kind))
            }
        }
    }
    revocation
}

/// The user's outcome once its lingering credentials were deleted (or not): see [`merge`].
pub(crate) fn conclude(done: Enforced, revocation: Revocation) -> Enforced {
    merge(done, revocation, false)
}

/// The user's outcome once its credentials are settled: a compliant user whose credentials were
/// revoked is `applied`; any credential left is `rejected` or `failed`, as its delete ended.
fn merge(mut done: Enforced, revocation: Revocation, dry_run: bool) -> Enforced {
    done.ecids.extend(revocation.ecids);
    if !revocation.revoked.is_empty() && done.outcome == Outcome::Unchanged {
        done.outcome = Outcome::Applied;
        let note = if dry_run {
            "dry run: lingering credentials would be revoked"
        } else {
            "lingering credentials revoked"
        };
        done.reason = Some(joined(done.reason.take(), note));
    }
    done.revoked = revocation.revoked;
    match revocation.problem {
        Some(outcome) => worse(done, outcome, revocation.reasons.join("; ")),
        None => done,
    }
}

/// `done` with `outcome` when that is worse (failed over rejected over the rest), and `reason` added.
fn worse(mut done: Enforced, outcome: Outcome, reason: String) -> Enforced {
    let rank = |o: Outcome| match o {
        Outcome::Failed => 2,
        Outcome::Rejected => 1,
        _ => 0,
    };
    if rank(outcome) > rank(done.outcome) {
        done.outcome = outcome;
    }
    done.reason = Some(joined(done.reason.take(), &reason));
    done
}

fn joined(first: Option<String>, then: &str) -> String {
    match first {
        Some(first) if !first.is_empty() => format!("{first}; {then}"),
        _ => then.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::credentials::CredentialType;
    use crate::intake::names::CredentialId;

    fn held(kind: CredentialType, id: &str) -> Held {
        Held {
            kind,
            id: CredentialId::parse(id),
        }
    }

    #[test]
    fn each_bulk_delete_is_judged_by_its_own_status() {
        let asked: Vec<BulkOperation> = (0..7)
            .map(|n| BulkOperation::delete(n.to_string(), format!("/ApiKeys/{}", "a".repeat(32))))
            .collect();
        let op = |id: &str, status: &str, detail: &str| {
            serde_json::json!({"bulkId": id, "method": "DELETE", "status": status,
                "response": {"detail": detail}})
        };
        let body = serde_json::json!({"Operations": [
            op("0", "204", ""),
            op("1", "404", "Resource not found."),
            op("2", "403", "Forbidden"),
            op("3", "503", "busy"),
            op("4", "400", "The operation DELETE is not supported."),
            op("5", "400", "Invalid value"),
        ]})
        .to_string();
        let ends = bulk_ends(body.as_bytes(), &asked);
        let kinds: Vec<&str> = ends
            .iter()
            .map(|e| match e {
                BulkEnd::Settled(Deleted::Done(_)) => "done",
                BulkEnd::Settled(Deleted::Not(Outcome::Rejected, _)) => "rejected",
                BulkEnd::Settled(Deleted::Not(..)) => "other",
                BulkEnd::Unsupported => "unsupported",
                BulkEnd::NotFound => "not found",
                BulkEnd::Unsettled => "single",
            })
            .collect();
        // 404, 503 and operation 6, which the answer does not mention, go singly.
        assert_eq!(
            kinds,
            [
                "done",
                "not found",
                "rejected",
                "single",
                "unsupported",
                "rejected",
                "single"
            ]
        );
        let BulkEnd::Settled(Deleted::Not(_, reason)) = &ends[2] else {
            panic!("403 settles")
        };
        assert!(reason.contains("Security Administrator"), "{reason}");
        // An answer that is not JSON settles nothing.
        assert!(bulk_ends(b"<html>", &asked)
            .iter()
            .all(|e| matches!(e, BulkEnd::Unsettled)));
    }

    #[test]
    fn a_compliant_user_whose_credentials_were_revoked_is_applied() {
        let done = Enforced::new(Outcome::Unchanged, Some("already compliant".into()));
        let revocation = would_revoke(&[held(CredentialType::AuthTokens, &"a".repeat(32))]);
        let merged = merge(done.clone(), revocation, false);
        assert_eq!(merged.outcome, Outcome::Applied);
        assert_eq!(merged.revoked, Counts::from([("authTokens", 1)]));
        assert_eq!(
            merged.reason.as_deref(),
            Some("already compliant; lingering credentials revoked")
        );
        let dry = merge(
            done,
            would_revoke(&[held(CredentialType::AuthTokens, &"a".repeat(32))]),
            true,
        );
        assert_eq!(
            dry.reason.as_deref(),
            Some("already compliant; dry run: lingering credentials would be revoked")
        );
    }

    #[test]
    fn an_unusable_id_is_rejected_and_a_failure_outranks_it() {
        let bad = held(CredentialType::ApiKeys, "../x");
        let good = held(CredentialType::ApiKeys, &"b".repeat(32));
        let revocation = would_revoke(&[bad, good]);
        assert_eq!(revocation.revoked, Counts::from([("apiKeys", 1)]));
        let merged = merge(Enforced::new(Outcome::Applied, None), revocation, false);
        assert_eq!(merged.outcome, Outcome::Rejected);
        let reason = merged.reason.unwrap();
        assert!(
            reason.starts_with("apiKeys not revoked: credential id: expected 32"),
            "{reason}"
        );

        let mut mixed = Revocation::default();
        mixed.not_revoked(Outcome::Failed, "503".into());
        mixed.not_revoked(Outcome::Rejected, "403".into());
        assert_eq!(mixed.problem, Some(Outcome::Failed));
        let merged = merge(Enforced::new(Outcome::Unchanged, None), mixed, false);
        assert_eq!(merged.outcome, Outcome::Failed);
        assert_eq!(merged.reason.as_deref(), Some("503; 403"));
    }
}
