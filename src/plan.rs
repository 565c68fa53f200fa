//! The offline `plan`: what the function would do with a payload, with no network and no credentials.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::audit::{parse_invocation, Invocation, Triage};
use crate::config::{Config, DomainRoute};
use crate::identity_domain::user_attributes;
use crate::names::{DomainUrl, UserRef};

/// The plan as JSON: one entry per record, with the exact requests a selected record leads to. The PUT
/// body shows managed capabilities as booleans and unmanaged ones as a placeholder, since their values are
/// copied from the user at run time.
pub fn plan(body: &[u8], config: &Config) -> Result<Value, String> {
    let records = match parse_invocation(body).map_err(|e| e.to_string())? {
        Invocation::Records(records) => records,
        Invocation::Reconcile(request) => {
            let route = config.domains.resolve_for_reconcile(&request.domain)?;
            return Ok(json!({
                "reconcile": {
                    "domain": request.domain,
                    "domainUrl": route_base(&route),
                    "filter": request.filter.unwrap_or_else(|| crate::reconcile::DEFAULT_FILTER.to_string()),
                    "startIndex": request.start_index.unwrap_or(1),
                    "maxUsers": request.max_users,
                },
                "profile": config.profile.describe(),
                "note": "reconcile pages through the domain's users and writes only where a user differs from the profile",
            }));
        }
    };
    let put_body = config.profile.plan_body();
    let mut first_for_user: HashMap<(String, String), usize> = HashMap::new();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let mut results = Vec::with_capacity(records.len());
    for (index, triaged) in records
        .triage(&config.event_types, &config.domains)
        .enumerate()
    {
        let entry = match triaged {
            Triage::Act(target) => {
                let key = (
                    route_base(&target.route),
                    target.user_id.as_str().to_string(),
                );
                let base = json!({
                    "index": index,
                    "eventId": target.event_id,
                    "domain": target.domain,
                    "domainUrl": route_base(&target.route),
                    "userId": target.user_id.as_str(),
                    "userName": target.user_name,
                });
                match first_for_user.get(&key) {
                    Some(first) => with(
                        base,
                        json!({ "action": "duplicate", "reason": format!("duplicate of record {first}: the user is processed once") }),
                    ),
                    None => {
                        first_for_user.insert(key, index);
                        let mut attributes = user_attributes();
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
                        let check = target.user_name.as_ref().map(|n| format!("the user's userName must equal {n:?} (case-insensitive), else the record is rejected"));
                        with(
                            base,
                            json!({
                                "action": "enforce",
                                "steps": [
                                    { "method": "GET", "url": get_url, "then": check },
                                    {
                                        "method": "PUT",
                                        "url": put_url,
                                        "when": if config.dry_run { "never (DRY_RUN)" } else { "only if a managed capability differs from the profile" },
                                        "body": put_body,
                                    }
                                ],
                            }),
                        )
                    }
                }
            }
            Triage::Ignored {
                event_id,
                domain,
                reason,
            } => {
                json!({ "index": index, "eventId": event_id, "domain": domain, "action": "ignore", "reason": reason })
            }
            Triage::Rejected {
                event_id,
                domain,
                user_id,
                user_name,
                reason,
            } => json!({
                "index": index, "eventId": event_id, "domain": domain, "userId": user_id, "userName": user_name,
                "action": "reject", "reason": reason,
            }),
        };
        let action = match entry["action"].as_str() {
            Some("enforce") => "enforce",
            Some("duplicate") => "duplicate",
            Some("ignore") => "ignore",
            _ => "reject",
        };
        *counts.entry(action).or_insert(0) += 1;
        results.push(strip_nulls(entry));
    }
    let count = |k: &str| counts.get(k).copied().unwrap_or(0);
    Ok(json!({
        "profile": config.profile.describe(),
        "dryRun": config.dry_run,
        "received": records.len(),
        "enforce": count("enforce"),
        "duplicate": count("duplicate"),
        "ignore": count("ignore"),
        "reject": count("reject"),
        "results": results,
    }))
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

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn strip_nulls(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.retain(|_, value| !value.is_null());
    }
    v
}
