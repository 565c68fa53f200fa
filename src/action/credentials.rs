//! Lingering credentials, after the capabilities: counted and logged by id (`CREDENTIALS=report`), or
//! deleted one by one once the capability is off (`CREDENTIALS=revoke`).
//!
//! A delete answered 404 counts as already revoked; a 403 is `rejected` naming the role the function
//! needs; any other refusal is classified like every other call. Ids are validated before a path is
//! built, and only ids ever reach the log, never key material.

use tokio::time::Instant;

use crate::action::apply::{Enforced, Engine, Outcome};
use crate::clients::identity_domain::Settled;
use crate::decision::credentials::{counts, Counts, CredentialsMode, Held};
use crate::intake::names::{DomainUrl, UserId};
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
    /// Adds the user's lingering credentials (`held`, from the read) to `done`, the outcome of its
    /// capabilities, and under `CREDENTIALS=revoke` deletes them once the capabilities are right.
    pub(crate) async fn settle_lingering(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        held: Result<Vec<Held>, String>,
        done: Enforced,
        deadline: Instant,
    ) -> Enforced {
        match self.note_lingering(domain, user, held, done) {
            Lingering::Settled(done) => done,
            Lingering::Revoke(done, held) => {
                let revocation = self.revoke(domain, user, &held, deadline).await;
                conclude(done, revocation)
            }
        }
    }

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
    async fn revoke(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        held: &[Held],
        deadline: Instant,
    ) -> Revocation {
        let mut revocation = Revocation::default();
        for h in held {
            let id = match &h.id {
                Ok(id) => id,
                Err(e) => {
                    revocation
                        .not_revoked(Outcome::Rejected, format!("{} not revoked: {e}", h.kind));
                    continue;
                }
            };
            let answer = self
                .client
                .delete_credential(domain, h.kind, id, deadline)
                .await;
            let (user_id, kind) = (user.as_str(), h.kind.attribute());
            match answer {
                Ok(answer) => {
                    revocation.ecids.extend(answer.ecids);
                    revocation.revoked(h);
                    tracing::info!(
                        domain = domain.as_str(),
                        user_id,
                        credential_type = kind,
                        credential_id = id.as_str(),
                        "credential revoked"
                    );
                }
                Err(failure) if failure.error.status() == Some(StatusCode::NOT_FOUND) => {
                    revocation.ecids.extend(failure.request_ids);
                    revocation.revoked(h);
                    tracing::info!(
                        domain = domain.as_str(),
                        user_id,
                        credential_type = kind,
                        credential_id = id.as_str(),
                        "credential already revoked (404)"
                    );
                }
                Err(failure) => {
                    let outcome = match failure.settled {
                        Settled::Rejected => Outcome::Rejected,
                        Settled::Failed => Outcome::Failed,
                    };
                    let reason = format!("revoking {kind} {id}: {failure}");
                    tracing::warn!(domain = domain.as_str(), user_id, credential_type = kind, credential_id = id.as_str(), reason = %reason, "credential not revoked");
                    revocation.ecids.extend(failure.request_ids);
                    revocation.not_revoked(outcome, reason);
                }
            }
        }
        revocation
    }
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
