//! The offline `plan`: what the function would do with a payload, with no network and no credentials.
//!
//! Records are triaged and grouped by user exactly as the function does ([`group_by_user`]); for
//! each acting record the plan shows the policy's outlook (`Policy::outlook`): the rules that
//! could apply, the facts the read would have to bring, and the decision when the record alone
//! settles it.

use serde::Serialize;
use serde_json::Value;

use crate::action::apply::{duplicate_outcome, Outcome};
use crate::action::reconcile::{domain_values, DEFAULT_FILTER};
use crate::clients::identity_domain::{list_attributes, user_attributes};
use crate::clients::scim_bulk::{bulk_body, chunks, search_body, BulkOperation, MAX_SEARCH_USERS};
use crate::config::{Config, DomainRoute};
use crate::decision::credentials::{
    attributes_to_read, types_to_read, CredentialType, CredentialsMode,
};
use crate::decision::policy::{Candidate, Decision, Fact, Policy};
use crate::decision::profile::Profile;
use crate::intake::audit::{parse_invocation, Invocation, Target, Triage};
use crate::intake::batch::{acting_records, group_by_user};
use crate::intake::names::{DomainUrl, UserRef};

/// What `plan` prints: a batch's plan, or a reconcile request's.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Plan {
    /// For a batch of records (or a single record): what each record would lead to.
    Records(RecordsPlan),
    /// For a reconcile request: the listing it would page through.
    Reconcile(ReconcilePlan),
}

/// The policy in force, as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicySummary {
    /// The profile every user starts from.
    default: String,
    /// The capabilities `default` leaves as each user has them.
    unmanaged: Vec<&'static str>,
    /// Rule names in file order.
    rules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag_namespace: Option<String>,
    /// The attributes a user read asks for (`attributes=`).
    read_attributes: String,
}

impl PolicySummary {
    fn of(policy: &Policy, credentials: CredentialsMode) -> Self {
        Self {
            default: policy.default.describe(),
            unmanaged: policy.default.unmanaged_names(),
            rules: policy.rules.iter().map(|r| r.name.clone()).collect(),
            tag_namespace: policy.tag_namespace.as_ref().map(|t| t.to_string()),
            read_attributes: user_attributes(&read_attributes(policy, credentials)),
        }
    }
}

/// What a read or a listing asks for: the policy's facts and, unless `CREDENTIALS=off`, the
/// credentials some profile may leave lingering (as the function's `Engine::read_attributes`).
fn read_attributes(policy: &Policy, credentials: CredentialsMode) -> Vec<&'static str> {
    let mut wanted = policy.needs().attributes();
    wanted.extend(attributes_to_read(policy, credentials));
    wanted
}

/// A batch's plan: the predicted counts and each record's plan, in record order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordsPlan {
    policy: PolicySummary,
    dry_run: bool,
    received: usize,
    /// The records by predicted outcome, each counted once, so the counts add up to `received`: a
    /// user to enforce is `appliedOrUnchanged` (only the read shows whether it already complies).
    /// Any record that reaches the network may also end `failed` (network, 5xx), which no plan
    /// can know.
    predicted: PredictedCounts,
    results: Vec<PlannedRecord>,
    /// With `BULK=auto`: per domain, the searches and the Bulk requests the batch leads to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bulk: Vec<BulkPlan>,
}

/// One domain's share of a batch with `BULK=auto`: the searches that read its users and the Bulk
/// requests that would carry the writes (operations for users the read shows compliant or exempt
/// are left out at run time).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct BulkPlan {
    domain_url: String,
    /// `POST {domain}/admin/v1/Users/.search` bodies, 50 users each.
    searches: Vec<Value>,
    /// `POST {domain}/admin/v1/Bulk` bodies, 50 operations and 1 MB each; none with `DRY_RUN`.
    bulk_requests: Vec<Value>,
    note: &'static str,
}

/// Records by the outcome the function's report would give them; every record counts once.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct PredictedCounts {
    /// Users to enforce: `applied` when a managed capability differs, else `unchanged`.
    applied_or_unchanged: usize,
    unchanged: usize,
    ignored: usize,
    rejected: usize,
}

/// What the function would do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum PlannedAction {
    /// Read the user and write the profile where it differs.
    Enforce,
    /// Nothing more: an earlier record names the same user, who is processed once.
    Duplicate,
    /// Nothing: the record ends `ignored`.
    Ignore,
    /// Nothing: the record ends `rejected`.
    Reject,
}

/// One record's plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PlannedRecord {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    /// What the function would do; shown through `predicted_outcome`.
    #[serde(skip)]
    action: PlannedAction,
    /// The report's outcome words this record could end with, predicted offline: `["applied",
    /// "unchanged"]` for a user to enforce, `["unchanged"]` for an exempt user, `["ignored"]`,
    /// `["rejected"]`; a duplicate's are its first record's as the function maps them (`unchanged`,
    /// or in `DRY_RUN` `["applied", "unchanged"]` for a user to enforce).
    predicted_outcome: Vec<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyOutlook>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    steps: Vec<Step>,
}

/// What the policy can say about one record before the user is read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyOutlook {
    /// Rules that could apply, in file order, each with the facts still needed to know.
    could_apply: Vec<Candidate>,
    /// Facts the read must bring before the policy can decide; empty when the record settles it.
    reads: Vec<Fact>,
    /// The decided profile, when nothing is left to read.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    /// What decided it, when nothing is left to read.
    #[serde(skip_serializing_if = "Option::is_none")]
    decided_by: Option<Vec<String>>,
    /// Set when the record alone exempts the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    exempt: Option<String>,
    /// While facts are pending: `default` with the rules already certain to apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile_so_far: Option<String>,
}

/// One request the record leads to.
#[derive(Debug, Clone, Serialize)]
struct Step {
    method: &'static str,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    then: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
}

/// A reconcile request's plan: which domain and listing, under which policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcilePlan {
    reconcile: ReconcileTarget,
    policy: PolicySummary,
    note: &'static str,
}

/// The domain and the user listing a reconcile request would page through.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReconcileTarget {
    domain: String,
    /// The URL, or `{GetDomain url of <ocid>}` for a domain OCID resolved at run time.
    domain_url: String,
    /// What a rule's `domains` may name to match these users.
    domain_values: Vec<String>,
    filter: String,
    start_index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_users: Option<u64>,
    /// The attributes each listed page asks for.
    list_attributes: String,
}

/// The plan for a payload. The PUT body shows managed capabilities as booleans and unmanaged ones as a
/// placeholder, since their values are copied from the user at run time.
pub fn plan(body: &[u8], config: &Config) -> Result<Plan, String> {
    let policy = &config.policy;
    let records = match parse_invocation(body).map_err(|e| e.to_string())? {
        Invocation::Records(records) => records,
        Invocation::Reconcile(request) => {
            if request.domains.is_some() {
                return Err("a tenancy-wide reconcile (\"domains\": \"all\") finds its domains through \
                            the control plane when it runs; plan one domain's reconcile with \"domain\""
                    .to_owned());
            }
            let route = config.domains.resolve_for_reconcile(&request.domain)?;
            return Ok(Plan::Reconcile(ReconcilePlan {
                reconcile: ReconcileTarget {
                    domain_values: match &route {
                        DomainRoute::Url(url) => domain_values(&request.domain, url),
                        DomainRoute::Ocid(_) => vec![request.domain.clone()],
                    },
                    domain: request.domain,
                    domain_url: route_base(&route),
                    filter: request.filter.unwrap_or_else(|| DEFAULT_FILTER.to_owned()),
                    start_index: request.start_index.unwrap_or(1),
                    max_users: request.max_users,
                    list_attributes: list_attributes(&read_attributes(policy, config.credentials)),
                },
                policy: PolicySummary::of(policy, config.credentials),
                note:
                    "reconcile pages through the domain's users, decides each user's profile with \
                       the policy from the listing, and writes only where a user differs from it",
            }));
        }
    };
    let mut results: Vec<PlannedRecord> = Vec::with_capacity(records.len());
    let to_act = acting_records(
        &records,
        &config.event_types,
        &config.domains,
        |index, triaged| results.push(settled(index, triaged)),
    );
    // Offline nothing is resolved: a user is its domain route and the id or OCID it is named by.
    let users = group_by_user(to_act.into_iter().map(|(index, target)| {
        let user = (
            route_base(&target.route),
            target.user_id.as_str().to_owned(),
        );
        (user, index, target)
    }));
    for user in users {
        let domains = user.domain_values();
        // The first record and what it is predicted to end with.
        let mut first: Option<(usize, Vec<Outcome>)> = None;
        for (index, target) in &user.records {
            let entry = match &first {
                Some((first, outcomes)) => PlannedRecord {
                    action: PlannedAction::Duplicate,
                    predicted_outcome: duplicate_prediction(outcomes, config.dry_run),
                    reason: Some(format!(
                        "duplicate of record {first}: the user is processed once"
                    )),
                    ..acting(*index, target)
                },
                None => {
                    let entry = enforce(*index, target, &domains, config);
                    first = Some((*index, prediction(&entry)));
                    entry
                }
            };
            results.push(entry);
        }
    }
    results.sort_by_key(|r| r.index);
    let mut predicted = PredictedCounts::default();
    for r in &mut results {
        r.predicted_outcome = prediction(r);
        let count = match r.predicted_outcome.as_slice() {
            [Outcome::Unchanged] => &mut predicted.unchanged,
            [Outcome::Ignored] => &mut predicted.ignored,
            [Outcome::Rejected] => &mut predicted.rejected,
            _ => &mut predicted.applied_or_unchanged,
        };
        *count += 1;
    }
    let bulk = if config.bulk.enabled {
        bulk_plan(&results, config)
    } else {
        Vec::new()
    };
    Ok(Plan::Records(RecordsPlan {
        policy: PolicySummary::of(policy, config.credentials),
        dry_run: config.dry_run,
        received: records.len(),
        predicted,
        results,
        bulk,
    }))
}

/// The searches and Bulk requests per domain for the records to enforce (see [`BulkPlan`]).
fn bulk_plan(results: &[PlannedRecord], config: &Config) -> Vec<BulkPlan> {
    let mut domains: Vec<(String, Vec<(UserRef, Value)>)> = Vec::new();
    for r in results
        .iter()
        .filter(|r| r.action == PlannedAction::Enforce)
    {
        let (Some(domain), Some(user)) = (&r.domain_url, &r.user_id) else {
            continue;
        };
        let Ok(user) = UserRef::parse(user) else {
            continue;
        };
        let body = r
            .steps
            .iter()
            .find_map(|s| s.body.clone())
            .unwrap_or_default();
        match domains.iter_mut().find(|(d, _)| d == domain) {
            Some((_, users)) => users.push((user, body)),
            None => domains.push((domain.clone(), vec![(user, body)])),
        }
    }
    let attributes = config.policy.needs().attributes();
    domains
        .into_iter()
        .map(|(domain_url, users)| {
            let refs: Vec<&UserRef> = users.iter().map(|(u, _)| u).collect();
            let searches = refs
                .chunks(MAX_SEARCH_USERS)
                .map(|part| search_body(part, &attributes))
                .collect();
            let operations = users
                .iter()
                .enumerate()
                .map(|(n, (user, body))| {
                    let id = match user {
                        UserRef::Id(id) => id.to_string(),
                        UserRef::Ocid(ocid) => format!("{{id the read of {ocid} gives}}"),
                    };
                    BulkOperation::put(n.to_string(), format!("/UserCapabilitiesChanger/{id}"), body.clone())
                })
                .collect();
            let bulk_requests = if config.dry_run {
                Vec::new()
            } else {
                chunks(operations)
                    .iter()
                    .filter_map(|part| serde_json::from_slice(&bulk_body(part)).ok())
                    .collect()
            };
            BulkPlan {
                domain_url,
                searches,
                bulk_requests,
                note: "BULK=auto: the users are read with these searches (any an answer lacks with a \
                       single GET), and the writes go as these Bulk requests, less the operations of \
                       users the read shows compliant or exempt; a lone write goes as a single PUT, \
                       and DRY_RUN sends no Bulk request",
            }
        })
        .collect()
}

/// The outcomes the function's report could give a record, as far as the record alone tells; a
/// duplicate's come from its first record's ([`duplicate_prediction`]).
fn prediction(r: &PlannedRecord) -> Vec<Outcome> {
    let exempt = r.policy.as_ref().is_some_and(|p| p.exempt.is_some());
    match r.action {
        PlannedAction::Enforce if exempt => vec![Outcome::Unchanged],
        PlannedAction::Enforce => vec![Outcome::Applied, Outcome::Unchanged],
        PlannedAction::Duplicate => r.predicted_outcome.clone(),
        PlannedAction::Ignore => vec![Outcome::Ignored],
        PlannedAction::Reject => vec![Outcome::Rejected],
    }
}

/// What a duplicate may end with: each outcome its first record may end with, mapped as the
/// function maps it ([`duplicate_outcome`]), once each.
fn duplicate_prediction(first: &[Outcome], dry_run: bool) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(first.len());
    for outcome in first.iter().map(|&o| duplicate_outcome(o, dry_run)) {
        if !outcomes.contains(&outcome) {
            outcomes.push(outcome);
        }
    }
    outcomes
}

fn acting(index: usize, target: &Target) -> PlannedRecord {
    PlannedRecord {
        index,
        event_id: target.event_id.clone(),
        domain: Some(target.domain.clone()),
        domain_url: Some(route_base(&target.route)),
        user_id: Some(target.user_id.as_str().to_owned()),
        user_name: target.user_name.clone(),
        action: PlannedAction::Enforce,
        predicted_outcome: Vec::new(),
        reason: None,
        policy: None,
        steps: Vec::new(),
    }
}

/// The first record for a user: the read, the policy's outlook and the write it may lead to.
fn enforce(index: usize, target: &Target, domains: &[String], config: &Config) -> PlannedRecord {
    let policy = &config.policy;
    let outlook = policy.outlook(target.user_name.as_deref(), domains);
    let exempt = policy.certainly_exempt(target.user_name.as_deref(), domains);
    let credentials = if exempt {
        CredentialsMode::Off
    } else {
        config.credentials
    };
    let mut attributes = user_attributes(&read_attributes(policy, credentials));
    if matches!(target.user_id, UserRef::Ocid(_)) {
        attributes.push_str(",ocid");
    }
    let get_url = route_endpoint(
        &target.route,
        &["admin", "v1", "Users", target.user_id.as_str()],
        &[("attributes", &attributes)],
    );
    let put_id = match &target.user_id {
        UserRef::Id(id) => id.as_str(),
        // Known only once the read has answered.
        UserRef::Ocid(_) => "ID_FROM_THE_READ",
    };
    let put_url = route_endpoint(
        &target.route,
        &["admin", "v1", "UserCapabilitiesChanger", put_id],
        &[],
    );
    let check = target.user_name.as_ref().map(|n| {
        format!(
            "the user's userName must equal {n:?} (case-insensitive), else the record is rejected"
        )
    });
    let mut view = PolicyOutlook {
        could_apply: outlook.could_apply,
        reads: outlook.reads,
        profile: None,
        decided_by: None,
        exempt: None,
        profile_so_far: None,
    };
    let (profile, when): (Option<Profile>, String) = match outlook.decided {
        Some(Decision::Exempt { policy, reason }) => {
            view.decided_by = Some(policy);
            let when = format!("never: {reason}");
            view.exempt = Some(reason);
            (None, when)
        }
        Some(Decision::Enforce {
            profile, policy, ..
        }) => {
            view.profile = Some(profile.describe());
            view.decided_by = Some(policy);
            (Some(profile), write_condition(config, "the profile"))
        }
        None => {
            view.profile_so_far = Some(outlook.known_profile.describe());
            (
                Some(outlook.known_profile),
                write_condition(
                    config,
                    "the profile the policy decides after the read (the body shows the rules \
                     already certain to apply)",
                ),
            )
        }
    };
    let revocations = revocation_steps(target, config, profile.as_ref());
    let mut steps = vec![
        Step {
            method: "GET",
            url: get_url,
            then: check,
            when: None,
            body: None,
        },
        Step {
            method: "PUT",
            url: put_url,
            then: None,
            when: Some(when),
            body: profile.map(|p| p.plan_body()),
        },
    ];
    steps.extend(revocations);
    PlannedRecord {
        policy: Some(view),
        steps,
        ..acting(index, target)
    }
}

/// With `CREDENTIALS=revoke`, one `DELETE` per credential type the profile (decided, or so far) may
/// leave lingering; none for an exempt user (`profile` is `None`).
fn revocation_steps(target: &Target, config: &Config, profile: Option<&Profile>) -> Vec<Step> {
    let Some(profile) = profile.filter(|_| config.credentials == CredentialsMode::Revoke) else {
        return Vec::new();
    };
    types_to_read(&config.policy, config.credentials)
        .into_iter()
        .filter(|t: &CredentialType| profile.get(t.capability()) != Some(true))
        .map(|t| Step {
            method: "DELETE",
            url: route_endpoint(
                &target.route,
                &["admin", "v1", t.endpoint(), "CREDENTIAL_ID"],
                &[],
            ),
            then: None,
            when: Some(if config.dry_run {
                "never (DRY_RUN)".to_owned()
            } else {
                format!(
                    "for each of the user's {} the read lists, once the capabilities are right, \
                     if the user's profile turns {} off",
                    t.attribute(),
                    t.capability()
                )
            }),
            body: None,
        })
        .collect()
}

/// Stands in for a URL the control plane gives only at run time.
const PENDING_ORIGIN: &str = "https://pending.invalid";

/// The domain's URL, or for a domain OCID the placeholder `{GetDomain url of <ocid>}`.
fn route_base(route: &DomainRoute) -> String {
    match route {
        DomainRoute::Url(url) => url.as_str().to_owned(),
        DomainRoute::Ocid(ocid) => format!("{{GetDomain url of {ocid}}}"),
    }
}

fn route_endpoint(route: &DomainRoute, segments: &[&str], query: &[(&str, &str)]) -> String {
    match route {
        DomainRoute::Url(url) => url.endpoint(segments, query).to_string(),
        DomainRoute::Ocid(_) => match DomainUrl::parse(PENDING_ORIGIN) {
            Ok(pending) => pending.endpoint(segments, query).as_str().replacen(
                PENDING_ORIGIN,
                &route_base(route),
                1,
            ),
            Err(_) => route_base(route),
        },
    }
}

fn write_condition(config: &Config, profile: &str) -> String {
    if config.dry_run {
        "never (DRY_RUN)".to_owned()
    } else {
        format!("only if a managed capability differs from {profile}")
    }
}

fn settled(index: usize, triaged: Triage) -> PlannedRecord {
    let base = |action| PlannedRecord {
        index,
        event_id: None,
        domain: None,
        domain_url: None,
        user_id: None,
        user_name: None,
        action,
        predicted_outcome: Vec::new(),
        reason: None,
        policy: None,
        steps: Vec::new(),
    };
    match triaged {
        Triage::Ignored {
            event_id,
            domain,
            reason,
        } => PlannedRecord {
            event_id,
            domain,
            reason: Some(reason.as_str().to_owned()),
            ..base(PlannedAction::Ignore)
        },
        Triage::Rejected {
            event_id,
            domain,
            user_id,
            user_name,
            reason,
        } => PlannedRecord {
            event_id,
            domain,
            user_id,
            user_name,
            reason: Some(reason),
            ..base(PlannedAction::Reject)
        },
        Triage::Act(target) => acting(index, &target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::policy::Policy;
    use serde_json::json;

    const SAMPLE: &str = include_str!("../../examples/payloads/sch-batch.json");

    fn config_with(policy: &str) -> Config {
        let mut config = Config::from_lookup(&|_| None).unwrap();
        config.policy = Policy::parse(policy, None, None).unwrap();
        config
    }

    fn records_plan(plan: Plan) -> Value {
        match plan {
            Plan::Records(p) => serde_json::to_value(p).unwrap(),
            Plan::Reconcile(_) => panic!("a batch was planned as a reconcile"),
        }
    }

    #[test]
    fn the_sample_batch_by_domain_display_name_is_decided_offline() {
        // The sample's records give domainDisplayName "Default": a domains rule decides without a read.
        let config = config_with(
            "default = \"api_keys=off\"\n[[rule]]\nname = \"default-domain\"\ndomains = [\"default\"]\ncapabilities = \"smtp_credentials=off\"\n",
        );
        let plan = records_plan(plan(SAMPLE.as_bytes(), &config).unwrap());
        assert_eq!(
            (plan["received"].clone(), plan["predicted"].clone(),),
            (
                json!(6),
                json!({"appliedOrUnchanged": 3, "unchanged": 1, "ignored": 1, "rejected": 1})
            ),
            "{plan}"
        );
        let first = &plan["results"][0];
        assert_eq!(first["predictedOutcome"], json!(["applied", "unchanged"]));
        assert_eq!(
            first["policy"]["decidedBy"],
            json!(["default-domain"]),
            "{plan}"
        );
        assert_eq!(
            first["policy"]["profile"],
            "api_keys=off,smtp_credentials=off"
        );
        assert_eq!(first["policy"]["reads"], json!([]));
        assert_eq!(first["steps"][1]["body"]["canUseSmtpCredentials"], false);
        assert_eq!(
            first["steps"][1]["body"]["canUseAuthTokens"],
            crate::decision::profile::UNMANAGED_PLACEHOLDER
        );
        // Every record has a result, in batch order; only acting records carry a policy outlook.
        let indexes: Vec<u64> = plan["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 1, 2, 3, 4, 5]);
        for r in plan["results"].as_array().unwrap() {
            let enforced = r["predictedOutcome"] == json!(["applied", "unchanged"]);
            assert_eq!(r.get("policy").is_some(), enforced, "{r}");
        }
    }

    #[test]
    fn a_duplicate_is_predicted_as_the_function_maps_its_first_record() {
        // Record 2 of the sample names the same user as record 0.
        let predicted = |policy: &str, dry_run: bool| {
            let mut config = config_with(policy);
            config.dry_run = dry_run;
            let plan = records_plan(plan(SAMPLE.as_bytes(), &config).unwrap());
            let r = |i: usize| plan["results"][i]["predictedOutcome"].clone();
            (r(0), r(2), plan["predicted"].clone())
        };
        let enforce = "default = \"api_keys=off\"\n";
        let (first, duplicate, counts) = predicted(enforce, false);
        assert_eq!(first, json!(["applied", "unchanged"]));
        assert_eq!(duplicate, json!(["unchanged"]), "a write happened once");
        assert_eq!(counts["unchanged"], 1, "{counts}");
        // In DRY_RUN nothing is written, so the duplicate says what its first record says.
        let (first, duplicate, counts) = predicted(enforce, true);
        assert_eq!(duplicate, first);
        assert_eq!(duplicate, json!(["applied", "unchanged"]));
        assert_eq!(
            (&counts["appliedOrUnchanged"], &counts["unchanged"]),
            (&json!(4), &json!(0)),
            "{counts}"
        );
        // A duplicate of an exempt user is unchanged, dry run or not.
        let exempt = "[[rule]]\nname = \"bg\"\nusers = [\"ana.*\"]\nexempt = true\n";
        for dry_run in [false, true] {
            let (first, duplicate, _) = predicted(exempt, dry_run);
            assert_eq!(
                (&first, &duplicate),
                (&json!(["unchanged"]), &json!(["unchanged"]))
            );
        }
        assert_eq!(
            duplicate_prediction(&[Outcome::Rejected, Outcome::Failed], false),
            [Outcome::Rejected, Outcome::Failed]
        );
    }

    #[test]
    fn pending_facts_leave_the_decision_to_the_read() {
        let config = config_with(
            "default = \"api_keys=off\"\n[[rule]]\nname = \"dev\"\ngroups = [\"Developers\"]\ncapabilities = \"api_keys=on\"\n",
        );
        let plan = records_plan(plan(SAMPLE.as_bytes(), &config).unwrap());
        let first = &plan["results"][0]["policy"];
        assert_eq!(first["reads"], json!(["groups"]), "{plan}");
        assert_eq!(first["couldApply"][0]["rule"], "dev");
        assert_eq!(first["couldApply"][0]["needs"], json!(["groups"]));
        assert!(first.get("decidedBy").is_none(), "{plan}");
        assert_eq!(first["profileSoFar"], "api_keys=off");
        assert_eq!(
            plan["policy"]["readAttributes"]
                .as_str()
                .unwrap()
                .matches("groups")
                .count(),
            1
        );
        let get = plan["results"][0]["steps"][0]["url"].as_str().unwrap();
        // The policy's facts, then the credentials a profile may leave lingering (API keys here).
        assert!(
            get.ends_with("%2Cgroups%2Curn%3Aietf%3Aparams%3Ascim%3Aschemas%3Aoracle%3Aidcs%3Aextension%3AuserCredentials%3AUser%3AapiKeys"),
            "{get}"
        );
    }

    #[test]
    fn a_display_name_rule_on_a_record_with_only_the_domain_name_waits_for_the_domain_ocid() {
        // As the function does: the read asks for domainOcid, and the rule depends on it.
        let config = config_with(
            "[[rule]]\nname = \"prod\"\ndomains = [\"Production\"]\ncapabilities = \"auth_tokens=off\"\n",
        );
        let mut record: Value = serde_json::from_str(SAMPLE).unwrap();
        let details = &mut record[0]["data"]["additionalDetails"];
        details.as_object_mut().unwrap().remove("domainDisplayName");
        let body = serde_json::to_vec(&json!([record[0].clone()])).unwrap();
        let plan = records_plan(plan(&body, &config).unwrap());
        let first = &plan["results"][0]["policy"];
        assert_eq!(first["couldApply"][0]["rule"], "prod", "{plan}");
        assert_eq!(first["couldApply"][0]["needs"], json!(["domainOcid"]));
        assert_eq!(first["reads"], json!(["domainOcid"]));
        assert!(first.get("decidedBy").is_none(), "{plan}");
        let attributes = plan["policy"]["readAttributes"].as_str().unwrap();
        assert!(
            attributes.split(',').any(|a| a == "domainOcid"),
            "{attributes}"
        );
    }

    #[test]
    fn revoke_plans_a_delete_per_lingering_type_and_none_for_an_exempt_user() {
        let mut config = config_with(
            "default = \"api_keys=on,smtp_credentials=off\"\n[[rule]]\nname = \"bg\"\nusers = [\"li.*\"]\nexempt = true\n",
        );
        config.credentials = CredentialsMode::Revoke;
        let plan = records_plan(plan(SAMPLE.as_bytes(), &config).unwrap());
        let steps = |i: usize| plan["results"][i]["steps"].as_array().cloned().unwrap();
        let ana = steps(0);
        assert_eq!(ana.len(), 3, "{plan}");
        assert_eq!(ana[2]["method"], "DELETE");
        assert!(ana[2]["url"]
            .as_str()
            .unwrap()
            .ends_with("/admin/v1/SmtpCredentials/CREDENTIAL_ID"));
        assert!(ana[0]["url"].as_str().unwrap().contains("smtpCredentials"));
        // li.wei is exempt by name: the read asks for no credential, and nothing is deleted.
        let li = steps(1);
        assert_eq!(li.len(), 2, "{plan}");
        assert!(!li[0]["url"].as_str().unwrap().contains("userCredentials"));
        config.credentials = CredentialsMode::Off;
        let plan = records_plan(super::plan(SAMPLE.as_bytes(), &config).unwrap());
        assert!(!plan.to_string().contains("userCredentials"), "{plan}");
    }
}
