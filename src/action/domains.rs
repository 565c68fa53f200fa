//! What a user's read teaches about the domain being worked on, so a policy's `domains` matcher
//! decides alike on every path (issue 24): a path that knows the domain only by its `idcs-` name
//! (a reconcile by name or URL, an audit record with only `domainName`) learns its OCID from the
//! user's `domainOcid` and its display name from `GetDomain`.
//!
//! The lookup happens only for a user whose decision depends on it (a rule that would otherwise
//! be undecided), once per domain for the life of the process: concurrent users of one domain
//! share one lookup. The `domainOcid` is checked against the strict OCID pattern, and `GetDomain`'s
//! answer must be the domain being worked on (its URL, or its `idcs-` stripe), so a hostile user
//! record cannot borrow another domain's name. A refusal leaves the rule undecided (the user is
//! `rejected`, the reason says why); a retryable failure makes the user `failed`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::action::apply::Engine;
use crate::clients::control_plane::ResolveError;
use crate::decision::policy::{Decision, UserFacts, DOMAIN_OCID_ATTRIBUTE};
use crate::intake::names::{shown, DomainName, DomainOcid, DomainUrl};

/// How long a lookup that did not teach anything is remembered: long enough that a page of
/// users does not repeat it, short enough that a fixed IAM policy is soon seen.
const REMEMBER_REFUSAL: Duration = Duration::from_secs(300);
/// How long a retryable failure is remembered: the users of one run share it rather than each
/// asking a failing control plane again, and a retry of the invocation soon asks afresh.
const REMEMBER_FAILURE: Duration = Duration::from_secs(5);
/// Lookups remembered at most; past it, those that taught nothing are forgotten first.
const MAX_REMEMBERED: usize = 10_000;

/// The domain values a decision sees for one user, and why any the policy needs are missing.
#[derive(Debug, Clone)]
pub(crate) struct DomainKnown {
    /// The domain's name, display name and OCID, as far as known.
    pub(crate) values: Vec<String>,
    /// Why the domain's OCID and display name could not be learned, for the reason of a rule
    /// that stays undecided.
    pub(crate) why_unknown: Option<String>,
}

impl DomainKnown {
    /// `values`, with nothing left to say about what is missing.
    pub(crate) fn of(values: Vec<String>) -> Self {
        Self {
            values,
            why_unknown: None,
        }
    }
}

/// A lookup that may succeed on a retry: the user is `failed`.
#[derive(Debug, Clone)]
pub(crate) struct LookupFailed {
    pub(crate) reason: String,
    pub(crate) ecids: Vec<String>,
}

/// What one `domainOcid` taught about one domain.
#[derive(Debug, Clone)]
enum Learned {
    /// The OCID and, when `GetDomain` gave one, the display name.
    Known(Vec<String>),
    /// Not usable (refused, another domain): why, and when it was found.
    NotUsed(String, Instant),
    /// Retryable, and when it was found.
    Failed(LookupFailed, Instant),
}

impl Learned {
    fn expired(&self, now: Instant) -> bool {
        match self {
            Learned::Known(_) => false,
            Learned::NotUsed(_, at) => now.duration_since(*at) > REMEMBER_REFUSAL,
            Learned::Failed(_, at) => now.duration_since(*at) > REMEMBER_FAILURE,
        }
    }
}

type Cell = Arc<OnceCell<Learned>>;

/// Lookups by (the domain worked on, the OCID a user claimed), for the life of the process.
#[derive(Debug, Default)]
pub(crate) struct LearnedDomains(Mutex<HashMap<(DomainUrl, DomainOcid), Cell>>);

impl LearnedDomains {
    /// The cell for this pair: the one in use, or a fresh one when its answer has expired.
    fn cell(&self, domain: &DomainUrl, ocid: &DomainOcid) -> Cell {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, c| matches!(c.get(), Some(Learned::Known(_))));
        }
        let key = (domain.clone(), ocid.clone());
        let cell = map.entry(key).or_default();
        if cell.get().is_some_and(|l| l.expired(now)) {
            *cell = Cell::default();
        }
        Arc::clone(cell)
    }
}

impl Engine {
    /// The domain values the decision sees for a user read from `domain`: `values` (what the path
    /// knows), and the domain's OCID and display name when the policy needs them to decide.
    pub(crate) async fn domain_known(
        &self,
        domain: &DomainUrl,
        values: Vec<String>,
        user: Option<&Value>,
        deadline: Instant,
    ) -> Result<DomainKnown, LookupFailed> {
        let mut known = DomainKnown::of(values);
        let Some(user) = user.filter(|u| self.needs_domain_lookup(u, &known.values)) else {
            return Ok(known);
        };
        match self.learn(domain, user, deadline).await {
            Learned::Known(more) => {
                for v in more {
                    if !known.values.contains(&v) {
                        known.values.push(v);
                    }
                }
            }
            Learned::NotUsed(why, _) => known.why_unknown = Some(why),
            Learned::Failed(failed, _) => return Err(failed),
        }
        Ok(known)
    }

    /// Whether the decision for `user` waits on a domain value the path does not know: a rule
    /// would otherwise be undecided (an exempting rule that already matches needs nothing).
    fn needs_domain_lookup(&self, user: &Value, values: &[String]) -> bool {
        if !self.policy.needs().domain_ocid() {
            return false;
        }
        // An answer that is not a user is reported by the caller's own check.
        let Ok(facts) = UserFacts::from_scim(user, values.to_vec()) else {
            return false;
        };
        !matches!(self.policy.decide(&facts), Decision::Exempt { .. })
            && self.policy.undecided_domains(&facts).is_some()
    }

    /// The user's `domainOcid`, checked, then what `GetDomain` says of it (shared and remembered).
    async fn learn(&self, domain: &DomainUrl, user: &Value, deadline: Instant) -> Learned {
        let ocid = match user_domain_ocid(user) {
            Ok(ocid) => ocid,
            Err(why) => return Learned::NotUsed(why, Instant::now()),
        };
        let cell = self.learned_domains.cell(domain, &ocid);
        cell.get_or_init(|| self.look_up(domain, &ocid, deadline))
            .await
            .clone()
    }

    /// One `GetDomain` (through the control plane's own cache) and the check that its answer is
    /// the domain being worked on.
    async fn look_up(&self, domain: &DomainUrl, ocid: &DomainOcid, deadline: Instant) -> Learned {
        let now = Instant::now;
        match self.control_plane.domain_url(ocid, deadline).await {
            Ok(url) if same_domain(&url, domain) => {
                let mut values = vec![ocid.as_str().to_owned()];
                values.extend(self.control_plane.display_name(ocid));
                tracing::info!(domain = %domain, domain_ocid = %ocid, values = ?values, "learned the domain's OCID and display name from a user's domainOcid");
                Learned::Known(values)
            }
            Ok(url) => {
                let why = format!(
                    "the user's domainOcid {ocid} is the domain at {url} (GetDomain), not {domain}, \
                     so it was not used"
                );
                tracing::warn!(domain = %domain, domain_ocid = %ocid, other = %url, "a user's domainOcid names another domain; not used");
                Learned::NotUsed(why, now())
            }
            Err(ResolveError::Rejected(reason)) => Learned::NotUsed(reason, now()),
            Err(ResolveError::Failed { reason, ecids }) => {
                Learned::Failed(LookupFailed { reason, ecids }, now())
            }
        }
    }
}

/// The user's `domainOcid`, when it is a domain OCID.
fn user_domain_ocid(user: &Value) -> Result<DomainOcid, String> {
    match user.get(DOMAIN_OCID_ATTRIBUTE) {
        None | Some(Value::Null) => Err("the user's answer carries no domainOcid".to_owned()),
        Some(Value::String(s)) => DomainOcid::parse(s).map_err(|_| {
            format!(
                "the user's domainOcid {} is not a domain OCID, so it was not used",
                shown(s)
            )
        }),
        Some(_) => Err("the user's domainOcid is not text, so it was not used".to_owned()),
    }
}

/// Whether `answered` (GetDomain's `url`, checked) is the domain at `worked`: the same URL, or the
/// same `idcs-` stripe (a domain answers at its global and its regional host alike).
fn same_domain(answered: &DomainUrl, worked: &DomainUrl) -> bool {
    let stripe = |u: &DomainUrl| {
        let label = u.host().split('.').next().unwrap_or_default();
        DomainName::parse(label).ok()
    };
    answered == worked || stripe(answered).is_some_and(|s| Some(s) == stripe(worked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    fn url(s: &str) -> DomainUrl {
        DomainUrl::parse(s).unwrap()
    }

    #[test]
    fn the_same_domain_by_url_or_by_its_idcs_stripe() {
        let global = url(&format!("https://idcs-{HEX}.identity.oraclecloud.com"));
        let regional = url(&format!(
            "https://idcs-{HEX}.identity.us-ashburn-1.oci.oraclecloud.com"
        ));
        let other = url(&format!(
            "https://idcs-{}.identity.oraclecloud.com",
            "f".repeat(32)
        ));
        assert!(same_domain(&global, &global));
        assert!(same_domain(&regional, &global));
        assert!(!same_domain(&other, &global));
        let local = url("http://127.0.0.1:8080");
        assert!(same_domain(&local, &url("http://127.0.0.1:8080")));
        assert!(!same_domain(&local, &url("http://127.0.0.1:8081")));
    }

    #[test]
    fn a_domain_ocid_is_used_only_when_it_is_one() {
        let ocid = "ocid1.domain.oc1..aaaaaaaaexample";
        assert_eq!(
            user_domain_ocid(&json!({"domainOcid": ocid}))
                .unwrap()
                .as_str(),
            ocid
        );
        for (user, says) in [
            (json!({}), "carries no domainOcid"),
            (json!({"domainOcid": null}), "carries no domainOcid"),
            (json!({"domainOcid": 7}), "not text"),
            (json!({"domainOcid": "../evil"}), "not a domain OCID"),
            (
                json!({"domainOcid": "ocid1.user.oc1..aaaaaaaaexample"}),
                "not a domain OCID",
            ),
        ] {
            let why = user_domain_ocid(&user).unwrap_err();
            assert!(why.contains(says), "{user}: {why}");
        }
    }

    #[tokio::test]
    async fn an_expired_refusal_gets_a_fresh_cell_and_a_known_domain_never_expires() {
        let cache = LearnedDomains::default();
        let (d, o) = (
            url("http://127.0.0.1:1"),
            DomainOcid::parse("ocid1.domain.oc1..aaaaaaaaexample").unwrap(),
        );
        let Some(old) = Instant::now().checked_sub(REMEMBER_REFUSAL + Duration::from_secs(1))
        else {
            return;
        };
        let first = cache.cell(&d, &o);
        first
            .get_or_init(|| async { Learned::NotUsed("no".into(), old) })
            .await;
        let second = cache.cell(&d, &o);
        assert!(second.get().is_none(), "an expired refusal is asked again");
        second
            .get_or_init(|| async { Learned::Known(vec!["x".into()]) })
            .await;
        assert!(matches!(cache.cell(&d, &o).get(), Some(Learned::Known(_))));
    }
}
