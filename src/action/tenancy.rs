//! Reconcile at tenancy scale, with the platform as the engine: a tenancy-wide request lists the
//! compartment tree's ACTIVE identity domains and starts one detached invocation of this function
//! per domain; a domain's reconcile that nears its deadline hands the rest (its cursor, `hop + 1`
//! and the counts so far) to another detached invocation, up to `RECONCILE_MAX_HOPS`.
//!
//! Nothing here loops beside the platform: each invocation does what fits in its own deadline and
//! asks Functions for the next one.

use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::action::reconcile::ReconcileReport;
use crate::clients::control_plane::{ControlPlane, ListedDomain};
use crate::clients::functions::Functions;
use crate::config::{DomainDecision, DomainPolicy};
use crate::intake::audit::{parse_instant, ReconcileRequest, Totals};
use crate::intake::names::{CompartmentOcid, DomainName};

/// Where one hop stands in its domain's run: the run id, the hop number, when the domain's first
/// hop started, and the counts of the hops before.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The same on every hop of every domain of one run.
    pub run_id: String,
    /// 0 for the first invocation of a domain.
    pub hop: u32,
    /// When the domain's first hop started.
    pub started_at: OffsetDateTime,
    /// The counts of the hops before this one.
    pub before: Totals,
}

impl Hop {
    /// The hop a request describes; a request without hand-off fields is a new run's first hop.
    pub fn of(request: &ReconcileRequest) -> Self {
        let now = OffsetDateTime::now_utc();
        Hop {
            run_id: request.run_id.clone().unwrap_or_else(new_run_id),
            hop: request.hop.unwrap_or(0),
            started_at: request
                .started_at
                .as_deref()
                .and_then(|s| parse_instant(s).ok())
                .unwrap_or(now),
            before: request.totals.unwrap_or_default(),
        }
    }

    /// The counts of every hop so far, this one's `report` included.
    pub fn totals(&self, report: &ReconcileReport) -> Totals {
        let this = report.totals();
        Totals {
            scanned: self.before.scanned + this.scanned,
            applied: self.before.applied + this.applied,
            unchanged: self.before.unchanged + this.unchanged,
            rejected: self.before.rejected + this.rejected,
            failed: self.before.failed + this.failed,
        }
    }

    /// Seconds since the domain's first hop started.
    pub fn elapsed_secs(&self) -> f64 {
        (OffsetDateTime::now_utc() - self.started_at).as_seconds_f64()
    }

    /// The request the next hop gets: the same domain and filter, the cursor, `hop + 1`, and the
    /// counts so far. `maxUsers` is not carried: a bounded run does not hand off.
    pub fn next_request(
        &self,
        request: &ReconcileRequest,
        report: &ReconcileReport,
    ) -> ReconcileRequest {
        ReconcileRequest {
            domain: request.domain.clone(),
            filter: request.filter.clone(),
            after: report.next_after.clone(),
            // Without a cursor (no user done yet), the index is where to go on.
            start_index: report
                .next_after
                .is_none()
                .then_some(report.next_start_index)
                .flatten(),
            hop: Some(self.hop + 1),
            run_id: Some(self.run_id.clone()),
            started_at: self
                .started_at
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
            totals: Some(self.totals(report)),
            ..ReconcileRequest::default()
        }
    }
}

/// A run id: the start time in milliseconds and a random part, in hex.
pub fn new_run_id() -> String {
    let millis = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    format!("{millis:x}-{:04x}", fastrand::u16(..))
}

/// One domain of a tenancy-wide run, and what became of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainStart {
    /// The domain's OCID.
    pub id: String,
    /// Its display name.
    pub display_name: String,
    /// Its `lifecycleState`.
    pub lifecycle_state: String,
    /// `started`, `skipped` (not ACTIVE, or outside `DOMAINS`) or `failed` (the invocation was
    /// not accepted).
    pub outcome: &'static str,
    /// Why, when not started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The value the domain's reconcile was started with (its OCID, or the `DOMAINS` name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_as: Option<String>,
}

/// A tenancy-wide run's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanOutReport {
    /// The run's id, on every hop's log line.
    pub run_id: String,
    /// The root of the compartment tree.
    pub compartment: String,
    /// Compartments looked in.
    pub compartments: usize,
    /// Domains whose reconcile was started.
    pub started: usize,
    /// Domains left alone.
    pub skipped: usize,
    /// Domains whose invocation was not accepted.
    pub failed: usize,
    /// True when `DRY_RUN` is on.
    pub dry_run: bool,
    /// Every domain found.
    pub domains: Vec<DomainStart>,
}

/// The identity domains of `root`'s compartment tree, each with the value its reconcile is to be
/// started with, or why it is left alone (not ACTIVE; outside `DOMAINS`).
pub async fn plan_domains(
    control_plane: &ControlPlane,
    root: &CompartmentOcid,
    allowed: &DomainPolicy,
    deadline: Instant,
) -> Result<(usize, Vec<(ListedDomain, Result<String, String>)>), String> {
    let tree = control_plane.compartment_tree(root, deadline).await?;
    let mut planned = Vec::new();
    for compartment in &tree {
        for domain in control_plane.domains_in(compartment, deadline).await? {
            let start = start_value(&domain, allowed);
            planned.push((domain, start));
        }
    }
    Ok((tree.len(), planned))
}

/// The value a domain's reconcile is started with, or why it is not started.
fn start_value(domain: &ListedDomain, allowed: &DomainPolicy) -> Result<String, String> {
    if domain.lifecycle_state != "ACTIVE" {
        return Err(format!(
            "lifecycleState {} (only ACTIVE domains are reconciled)",
            domain.lifecycle_state
        ));
    }
    if !allowed.has_allow_list() {
        return Ok(domain.id.as_str().to_owned());
    }
    // A DOMAINS entry may name the domain by OCID, display name or `idcs-` name.
    let name = url_domain_name(&domain.url);
    let found = [
        Some(domain.id.as_str()),
        Some(domain.display_name.as_str()),
        name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|value| !matches!(allowed.resolve(value), DomainDecision::OutsideAllowList))
    .map(str::to_owned);
    found.ok_or_else(|| "not listed in DOMAINS".to_owned())
}

/// The `idcs-…` name in a domain URL's first host label, when there is one.
fn url_domain_name(url: &str) -> Option<String> {
    let host = url.split_once("://")?.1;
    let label = host.split(['.', ':', '/']).next()?;
    DomainName::parse(label).ok().map(|n| n.as_str().to_owned())
}

/// Starts one detached reconcile per planned domain; a domain whose invocation is not accepted
/// after retries is `failed` (the whole run then answers 502 so it is retried).
pub async fn fan_out(
    functions: &Functions,
    template: &ReconcileRequest,
    run_id: &str,
    planned: Vec<(ListedDomain, Result<String, String>)>,
    deadline: Instant,
) -> Vec<DomainStart> {
    let mut starts = Vec::with_capacity(planned.len());
    for (domain, start) in planned {
        let mut entry = DomainStart {
            id: domain.id.as_str().to_owned(),
            display_name: domain.display_name.clone(),
            lifecycle_state: domain.lifecycle_state.clone(),
            outcome: "skipped",
            reason: None,
            started_as: None,
        };
        match start {
            Err(reason) => entry.reason = Some(reason),
            Ok(value) => {
                let request = ReconcileRequest {
                    domain: value.clone(),
                    filter: template.filter.clone(),
                    max_users: template.max_users,
                    run_id: Some(run_id.to_owned()),
                    hop: Some(0),
                    ..ReconcileRequest::default()
                };
                let body = serde_json::json!({ "reconcile": request }).to_string();
                match functions.invoke_detached(body.into_bytes(), deadline).await {
                    Ok(_) => {
                        entry.outcome = "started";
                        entry.started_as = Some(value);
                    }
                    Err(reason) => {
                        entry.outcome = "failed";
                        entry.reason = Some(reason);
                    }
                }
            }
        }
        tracing::info!(
            run_id,
            domain = %entry.id,
            display_name = %entry.display_name,
            state = %entry.lifecycle_state,
            outcome = entry.outcome,
            reason = entry.reason.as_deref().unwrap_or(""),
            "tenancy reconcile: domain"
        );
        starts.push(entry);
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TEMPLATE;
    use crate::intake::names::DomainOcid;

    fn domain(state: &str) -> ListedDomain {
        ListedDomain {
            id: DomainOcid::parse("ocid1.domain.oc1..aaaa").unwrap(),
            display_name: "Default".into(),
            lifecycle_state: state.into(),
            compartment_id: "ocid1.tenancy.oc1..t".into(),
            url: "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com:443"
                .into(),
        }
    }

    #[test]
    fn only_active_domains_in_domains_are_started() {
        let any = DomainPolicy::new(None, DEFAULT_TEMPLATE).unwrap();
        assert_eq!(
            start_value(&domain("ACTIVE"), &any).unwrap(),
            "ocid1.domain.oc1..aaaa"
        );
        for state in ["INACTIVE", "CREATING", "DELETING", ""] {
            assert!(start_value(&domain(state), &any)
                .unwrap_err()
                .contains("only ACTIVE"));
        }
        let by_name = DomainPolicy::new(
            Some("idcs-0123456789abcdef0123456789abcdef"),
            DEFAULT_TEMPLATE,
        )
        .unwrap();
        assert_eq!(
            start_value(&domain("ACTIVE"), &by_name).unwrap(),
            "idcs-0123456789abcdef0123456789abcdef"
        );
        let other = DomainPolicy::new(
            Some("idcs-fedcba9876543210fedcba9876543210"),
            DEFAULT_TEMPLATE,
        )
        .unwrap();
        assert_eq!(
            start_value(&domain("ACTIVE"), &other).unwrap_err(),
            "not listed in DOMAINS"
        );
    }

    #[test]
    fn the_next_hop_carries_the_cursor_and_the_counts() {
        let request = ReconcileRequest {
            domain: "ocid1.domain.oc1..aaaa".into(),
            filter: Some("userName pr".into()),
            max_users: None,
            ..ReconcileRequest::default()
        };
        let hop = Hop::of(&request);
        assert_eq!(hop.hop, 0);
        let report = report_of_seven();
        let next = hop.next_request(&request, &report);
        assert_eq!(next.hop, Some(1));
        assert_eq!(next.run_id.as_deref(), Some(hop.run_id.as_str()));
        assert_eq!(next.filter, request.filter);
        assert_eq!(next.totals.unwrap().scanned, 7);
        assert_eq!(next.start_index, Some(8));
        // What is handed on is read back as the same request.
        let Hop { run_id, .. } = Hop::of(&next);
        assert_eq!(run_id, hop.run_id);
    }

    fn report_of_seven() -> ReconcileReport {
        ReconcileReport {
            domain: "https://x".into(),
            filter: String::new(),
            start_index: 1,
            scanned: 7,
            applied: 2,
            unchanged: 5,
            rejected: 0,
            failed: 0,
            dry_run: false,
            lingering: Default::default(),
            revoked: Default::default(),
            total_results: Some(10),
            next_start_index: Some(8),
            next_after: None,
            stopped_because: None,
            error: None,
            users: Vec::new(),
        }
    }

    #[test]
    fn domain_names_come_from_listed_urls() {
        assert_eq!(
            url_domain_name(
                "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com:443"
            )
            .as_deref(),
            Some("idcs-0123456789abcdef0123456789abcdef")
        );
        assert_eq!(url_domain_name("http://127.0.0.1:9"), None);
    }
}
