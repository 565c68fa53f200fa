//! Payload intake: what an invocation body asks for, and which audit records act on whom.
//!
//! ```
//! use oci_user_capabilities::intake::audit::{parse_invocation, triage, Invocation, Triage};
//! use oci_user_capabilities::config::{DomainPolicy, EventTypes};
//!
//! let body = br#"[{"id": "e1", "type": "com.example.UserJit", "data": {"additionalDetails": {
//!     "adminResourceId": "8f2e4c6a1b3d5f7091a2b3c4d5e6f708", "adminResourceType": "User",
//!     "domainName": "idcs-0123456789abcdef0123456789abcdef"}}}]"#;
//! let Invocation::Records(records) = parse_invocation(body).unwrap() else { unreachable!() };
//! let domains = DomainPolicy::new(None, "https://{domain}.identity.oraclecloud.com").unwrap();
//! let first = records.iter().next().unwrap().unwrap();
//! let Triage::Act(target) = triage(&first, &EventTypes::default(), &domains) else {
//!     unreachable!()
//! };
//! assert_eq!(target.user_id.as_str(), "8f2e4c6a1b3d5f7091a2b3c4d5e6f708");
//! ```

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{DomainDecision, DomainFields, DomainPolicy, DomainRoute, EventTypes};
use crate::intake::names::{shown, truncated, CompartmentOcid, UserId, UserOcid, UserRef};

/// The Functions invoke body limit.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// What an invocation body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Audit records (a batch, or a single record/event as a batch of one), not yet triaged.
    Records(Records),
    /// An operator's request to scan a domain's users and apply the profile to each (boxed: it
    /// is much larger than a batch's handle).
    Reconcile(Box<ReconcileRequest>),
}

/// The records of a batch, each kept as its own JSON text and parsed only when it is looked at, so
/// a large batch never exists as one big tree of values (a 6 MB batch of small records would take
/// many times its size that way).
#[derive(Debug, Clone, Default)]
pub struct Records(Vec<Box<RawValue>>);

impl Records {
    /// How many records the batch holds, usable or not.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty batch (`[]`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each record as a value, or why it cannot be one (e.g. nested deeper than the parser allows).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<Value, String>> + '_ {
        self.0.iter().map(|raw| {
            serde_json::from_str(raw.get()).map_err(|e| format!("record is not usable JSON ({e})"))
        })
    }

    /// [`triage`] of each record in order, each record's text freed once it is triaged (a large
    /// batch's texts and its targets are never all held at once); a record that cannot be parsed on
    /// its own is rejected.
    pub fn into_triage<'a>(
        self,
        events: &'a EventTypes,
        domains: &'a DomainPolicy,
    ) -> impl ExactSizeIterator<Item = Triage> + 'a {
        self.0
            .into_iter()
            .map(move |raw| match serde_json::from_str::<Value>(raw.get()) {
                Ok(value) => triage(&value, events, domains),
                Err(e) => rejected(
                    None,
                    None,
                    None,
                    None,
                    format!("record is not usable JSON ({e})"),
                ),
            })
    }

    /// [`triage`] of each record in order; a record that cannot be parsed on its own is rejected.
    pub fn triage<'a>(
        &'a self,
        events: &'a EventTypes,
        domains: &'a DomainPolicy,
    ) -> impl ExactSizeIterator<Item = Triage> + 'a {
        self.iter().map(move |record| match record {
            Ok(value) => triage(&value, events, domains),
            Err(reason) => rejected(None, None, None, None, reason),
        })
    }
}

impl PartialEq for Records {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|(a, b)| a.get() == b.get())
    }
}

/// Declares [`ReconcileRequest`] with the attributes every optional field shares written once: an
/// absent field is `None`, and a `None` is left out when the request is handed on (so a hand-off
/// body holds only what is set).
macro_rules! reconcile_request {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
            optional {
                $($(#[$opt_meta:meta])* pub $opt:ident: Option<$opt_ty:ty>,)*
            }
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
            $(
                $(#[$opt_meta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $opt: Option<$opt_ty>,
            )*
        }
    };
}

reconcile_request! {
    /// `{"reconcile": {...}}`: page over a domain's users and apply the profile, or, with
    /// `"domains": "all"`, start one such reconcile per identity domain of a compartment tree.
    ///
    /// The fields after `maxUsers` are what a reconcile hands on to the next invocation when it
    /// nears its deadline (see `action::tenancy`); an operator may give `after` to resume from a
    /// logged cursor.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ReconcileRequest {
        /// The domain to scan: its name, display name, OCID or URL, checked against `DOMAINS`.
        /// Empty when `domains` is given.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub domain: String,
        optional {
            /// `"all"`: every ACTIVE identity domain of the compartment tree.
            pub domains: Option<AllDomains>,
            /// With `domains`: the root of the compartment tree; `None` means the tenancy.
            pub compartment: Option<String>,
            /// The SCIM filter that selects users; `None` means the default (JIT-created users).
            pub filter: Option<String>,
            /// The 1-based SCIM `startIndex` to resume from (a previous run's `nextStartIndex`);
            /// `None` starts at 1. Ignored when `after` is given.
            pub start_index: Option<u64>,
            /// Stop after this many users have been scanned; `None` scans to the end of the
            /// listing.
            pub max_users: Option<u64>,
            /// Resume after this user, in `meta.created` order.
            pub after: Option<Cursor>,
            /// How many hand-offs led to this invocation (0 or absent: the first).
            pub hop: Option<u32>,
            /// The run's id, the same on every hop of every domain of one tenancy-wide run.
            pub run_id: Option<String>,
            /// When the domain's first hop started (RFC 3339), for the run's duration.
            pub started_at: Option<String>,
            /// The counts of the hops before this one.
            pub totals: Option<Totals>,
        }
    }
}

/// The only value `domains` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllDomains {
    /// Every ACTIVE identity domain of the compartment tree.
    #[serde(rename = "all")]
    All,
}

/// Where a reconcile stands in the domain's `meta.created` order: the last user done and when it
/// was created. Users created at that same instant and already done are listed in `sameInstant`,
/// so none is done twice and none is skipped whatever order the service gives them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cursor {
    /// The `meta.created` of the last user done, exactly as the service gave it.
    pub created: String,
    /// The SCIM id of the last user done.
    pub id: String,
    /// Other users created at the same instant and already done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_instant: Vec<String>,
}

/// A reconcile's counts, summed over its hops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Totals {
    /// Distinct users processed.
    pub scanned: u64,
    /// Users written (or that a dry run would write).
    pub applied: u64,
    /// Users already compliant or exempt.
    pub unchanged: u64,
    /// Users that cannot be fixed by a retry.
    pub rejected: u64,
    /// Users a retry may fix.
    pub failed: u64,
}

/// The most ids a cursor carries in `sameInstant` (a page's worth).
const MAX_SAME_INSTANT: usize = 1000;

impl ReconcileRequest {
    /// The checks serde cannot make: one of `domain` and `domains`, and well-formed hand-off
    /// fields. The error names the field.
    fn validate(&self) -> Result<(), PayloadError> {
        self.validate_scope()?;
        if let Some(after) = &self.after {
            validate_cursor(after)?;
        }
        if let Some(id) = &self.run_id {
            check_field("runId", check_run_id(id))?;
        }
        if let Some(at) = &self.started_at {
            check_field("startedAt", parse_instant(at))?;
        }
        Ok(())
    }

    /// Exactly one of `domain` and `domains`, and `compartment` only with `domains`.
    fn validate_scope(&self) -> Result<(), PayloadError> {
        match (self.domain.is_empty(), self.domains.is_some()) {
            (true, false) => {
                return Err(PayloadError::new(
                    "reconcile: missing field `domain` (or `domains`: \"all\")",
                ))
            }
            (false, true) => {
                return Err(PayloadError::new(
                    "reconcile: give either `domain` or `domains`, not both",
                ))
            }
            _ => {}
        }
        if let Some(c) = &self.compartment {
            if self.domains.is_none() {
                return Err(field_error("compartment", "only with \"domains\": \"all\""));
            }
            check_field("compartment", CompartmentOcid::parse(c))?;
        }
        Ok(())
    }
}

/// `after`: a user id, an RFC 3339 instant, and at most a page of user ids done at that instant.
fn validate_cursor(after: &Cursor) -> Result<(), PayloadError> {
    check_field("after.id", UserId::parse(&after.id))?;
    check_field("after.created", parse_instant(&after.created))?;
    if after.same_instant.len() > MAX_SAME_INSTANT {
        return Err(field_error(
            "after.sameInstant",
            format!("at most {MAX_SAME_INSTANT} ids"),
        ));
    }
    for id in &after.same_instant {
        check_field("after.sameInstant", UserId::parse(id))?;
    }
    Ok(())
}

/// A run id: 1 to 64 letters, digits, '-' or '_' (it names the run in logs and metrics).
fn check_run_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to 64 letters, digits, '-' or '_', got {}",
            shown(id)
        ))
    }
}

/// A refused field of the reconcile request: `reconcile.<field>: <why>`.
fn field_error(field: &str, why: impl fmt::Display) -> PayloadError {
    PayloadError::new(format!("reconcile.{field}: {why}"))
}

/// `checked`, or its error as a refusal of `field`.
fn check_field<T, E: fmt::Display>(field: &str, checked: Result<T, E>) -> Result<T, PayloadError> {
    checked.map_err(|why| field_error(field, why))
}

/// An RFC 3339 instant (`meta.created`, `startedAt`).
pub fn parse_instant(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("expected an RFC 3339 time, got {}", shown(s)))
}

// A misspelt field in an operator's request would otherwise be silently dropped (e.g. a
// `maxuser` that was meant to bound the run), so unknown fields are refused here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileEnvelope {
    reconcile: ReconcileRequest,
}

/// A body that cannot be understood; Display is the human reason (with the JSON path where one
/// applies). Retrying cannot fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(String);

impl PayloadError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

const EXPECTED_SHAPES: &str =
    "a JSON array of audit records, one audit record or event object, or {\"reconcile\": {...}}";

/// Array -> `Records`; object with `reconcile` -> `Reconcile`; any other object -> a batch of one.
/// Everything else is a [`PayloadError`].
pub fn parse_invocation(body: &[u8]) -> Result<Invocation, PayloadError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PayloadError::new(format!(
            "body is {} bytes, over the limit of {MAX_BODY_BYTES} bytes (6 MiB)",
            body.len()
        )));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        PayloadError::new(format!(
            "body is not valid UTF-8 (first bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    // A byte-order mark (Windows editors write one) is not part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(PayloadError::new("empty body"));
    }
    let not_json = |e: serde_json::Error| {
        PayloadError::new(format!(
            "body is not valid JSON ({e}); expected {EXPECTED_SHAPES}"
        ))
    };
    if text.trim_start().starts_with('[') {
        // A batch: split into records without building their values.
        let records: Vec<Box<RawValue>> = serde_json::from_str(text).map_err(not_json)?;
        return Ok(Invocation::Records(Records(records)));
    }
    let value: Value = serde_json::from_str(text).map_err(not_json)?;
    match value {
        Value::Object(ref obj) if obj.contains_key("reconcile") => {
            let envelope: ReconcileEnvelope =
                from_value_with_path(&value, "").map_err(PayloadError::new)?;
            envelope.reconcile.validate()?;
            Ok(Invocation::Reconcile(Box::new(envelope.reconcile)))
        }
        // A single record or event: kept as its own text, like each record of a batch.
        Value::Object(_) => {
            let record = RawValue::from_string(text.trim().to_owned()).map_err(not_json)?;
            Ok(Invocation::Records(Records(vec![record])))
        }
        other => Err(PayloadError::new(format!(
            "expected {EXPECTED_SHAPES}, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserialises `T` from `value`; an error names the JSON path, prefixed by `prefix`.
fn from_value_with_path<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        match (prefix.is_empty(), path.as_str()) {
            (true, ".") => inner,
            (true, _) => format!("{path}: {inner}"),
            (false, ".") => format!("{}: {inner}", prefix.trim_end_matches('.')),
            (false, _) => format!("{prefix}{path}: {inner}"),
        }
    })
}

/// The user a selected record acts on, with the way to the domain's URL already decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The record's event id (`id` or `eventID`), when it has one.
    pub event_id: Option<String>,
    /// The domain value as the record gave it (a domain name, display name or OCID).
    pub domain: String,
    /// Every domain field the record gave (`domainName`, `domainId`, `domainDisplayName`), for the
    /// policy's `domains` matcher.
    pub domain_values: Vec<String>,
    /// The URL, or the domain OCID whose URL the control plane gives.
    pub route: DomainRoute,
    /// The user's SCIM id or OCID.
    pub user_id: UserRef,
    /// The user's name as the record gave it, for the report only; `None` when absent.
    pub user_name: Option<String>,
}

/// What to do with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triage {
    /// Selected and well formed: apply the profile to this user.
    Act(Target),
    /// Not for this function (type not selected, domain outside `DOMAINS`): `ignored`.
    Ignored {
        /// The record's event id, when it has one.
        event_id: Option<String>,
        /// The domain as the record gave it, when it names one.
        domain: Option<String>,
        /// Why the record does not act.
        reason: IgnoreReason,
    },
    /// Cannot be acted on as written (not an object, a field missing or malformed): `rejected`.
    Rejected {
        /// The record's event id, when it could be read.
        event_id: Option<String>,
        /// The domain as the record gave it, when it could be read.
        domain: Option<String>,
        /// The user id or OCID as the record gave it (truncated), when it could be read.
        user_id: Option<String>,
        /// The user's name as the record gave it, when it could be read.
        user_name: Option<String>,
        /// What is wrong with the record, naming the field.
        reason: String,
    },
}

/// Why a record is `ignored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum IgnoreReason {
    /// `EVENT_TYPES` does not select it.
    #[serde(rename = "event type not selected")]
    NotSelected,
    /// Its domain is not in `DOMAINS`.
    #[serde(rename = "domain not in DOMAINS")]
    OutsideDomains,
    /// None of the fields that carry an event type is there (another kind of body, most likely).
    #[serde(rename = "no event type in this record")]
    NoEventType,
}

impl IgnoreReason {
    /// The reason as reports and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::NotSelected => "event type not selected",
            IgnoreReason::OutsideDomains => "domain not in DOMAINS",
            IgnoreReason::NoEventType => {
                "no event type in this record: none of data.eventName, \
                 data.additionalDetails.eventId, type or eventType is there (is it an audit \
                 record or an OCI Events object?)"
            }
        }
    }
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rejection reason for a record that is not a JSON object.
const REASON_NOT_OBJECT: &str = "record is not a JSON object";

// The fields that decide selection, read first and on their own: a record that is not selected
// is ignored even when fields we would only read for a selected record are malformed.
#[derive(Deserialize)]
struct SelectionRecord {
    #[serde(rename = "type")]
    type_: Option<String>,
    id: Option<String>,
    // The OCI Events (CloudEvents 0.1) spelling of type and id.
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    data: Option<SelectionData>,
}

#[derive(Deserialize)]
struct SelectionData {
    #[serde(rename = "eventName")]
    event_name: Option<String>,
    #[serde(rename = "additionalDetails")]
    additional_details: Option<SelectionDetails>,
}

#[derive(Deserialize)]
struct SelectionDetails {
    #[serde(rename = "eventId")]
    event_id: Option<String>,
}

#[derive(Deserialize)]
struct SubjectRecord {
    data: Option<SubjectData>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SubjectData {
    // The OCI Events (and Audit) resource: the created user for `createuser`.
    resource_id: Option<String>,
    resource_name: Option<String>,
    additional_details: Option<SubjectDetails>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SubjectDetails {
    admin_resource_id: Option<String>,
    admin_resource_name: Option<String>,
    admin_resource_type: Option<String>,
    // A membership change names the group as the resource and the user as the referenced one.
    admin_ref_resource_id: Option<String>,
    admin_ref_resource_name: Option<String>,
    actor_id: Option<String>,
    actor_name: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    domain_display_name: Option<String>,
}

/// Audit records often carry "" for an absent value; treat it as absent.
fn present(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Decides whether `record` acts, on which user in which domain, following PRODUCT.md
/// "Which records act, on whom".
///
/// Accepts the Service Connector (CloudEvents 1.0) record, the OCI Events object
/// (`eventType`/`eventID`), and the Console's `{"logContent": {...}}` wrapper. Empty strings
/// count as absent. Never panics, whatever the value.
pub fn triage(record: &Value, events: &EventTypes, domains: &DomainPolicy) -> Triage {
    let Some(outer) = record.as_object() else {
        return rejected(None, None, None, None, REASON_NOT_OBJECT.to_owned());
    };
    // The Console log viewer wraps the record; unwrap it unless the object is itself a record.
    let (record, prefix) = match outer.get("logContent") {
        Some(inner) if !outer.contains_key("data") => {
            if !inner.is_object() {
                return rejected(
                    None,
                    None,
                    None,
                    None,
                    format!("logContent: expected a JSON object, got {}", kind(inner)),
                );
            }
            (inner, "logContent.")
        }
        _ => (record, ""),
    };

    let selection: SelectionRecord = match from_value_with_path(record, prefix) {
        Ok(s) => s,
        Err(reason) => {
            return rejected(raw_event_id(record), None, None, None, reason);
        }
    };
    let event_id = present(selection.id).or(present(selection.event_id));
    let type_ = present(selection.type_).or(present(selection.event_type));
    let (event_name, detail_event_id) = match selection.data {
        Some(d) => (d.event_name, d.additional_details.and_then(|a| a.event_id)),
        None => (None, None),
    };
    if !events.selects(
        event_name.as_deref(),
        detail_event_id.as_deref(),
        type_.as_deref(),
    ) {
        let none = [&event_name, &detail_event_id, &type_]
            .into_iter()
            .all(|t| t.as_deref().is_none_or(str::is_empty));
        return Triage::Ignored {
            event_id,
            domain: None,
            reason: if none {
                IgnoreReason::NoEventType
            } else {
                IgnoreReason::NotSelected
            },
        };
    }

    let createuser = [
        event_name.as_deref(),
        detail_event_id.as_deref(),
        type_tail(&type_),
    ]
    .into_iter()
    .flatten()
    .any(|t| t.eq_ignore_ascii_case(CREATEUSER));
    let subject: SubjectRecord = match from_value_with_path(record, prefix) {
        Ok(s) => s,
        Err(reason) => {
            let domain = raw_domain(record);
            return rejected(event_id, domain, None, None, reason);
        }
    };
    decide(
        event_id,
        subject.data.unwrap_or_default(),
        domains,
        createuser,
    )
}

/// The event type that names a created user; its actor is the administrator who created it.
const CREATEUSER: &str = "createuser";

/// Why a `createuser` record that names no user is rejected rather than acting on its actor.
const CREATEUSER_NAMES_NO_USER: &str = "createuser record names no user: no user OCID in \
     data.resourceId and no adminResourceId of type User (its actor created the user and is \
     never acted on)";

fn type_tail(type_: &Option<String>) -> Option<&str> {
    type_.as_deref().and_then(|t| t.rsplit('.').next())
}

/// The user a selected record names, as PRODUCT.md orders the fields: the referenced resource of a
/// group-membership change, the admin resource of type User, a user OCID in `data.resourceId`,
/// else the actor. Returns the id, the name and the field the id comes from (for "missing …").
fn subject(
    data: &mut SubjectData,
    d: &mut SubjectDetails,
) -> (Option<String>, Option<String>, &'static str) {
    let admin_id = present(d.admin_resource_id.take());
    let admin_type = present(d.admin_resource_type.take());
    // Types are compared case-insensitively so a differently cased type never makes us act on
    // the actor (an administrator, or the sign-on app) instead of the resource.
    let is_type = |t: &str| {
        admin_type
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(t))
    };
    if is_type("Group") {
        return (
            present(d.admin_ref_resource_id.take()),
            present(d.admin_ref_resource_name.take()),
            "data.additionalDetails.adminRefResourceId (adminResourceType is Group)",
        );
    }
    if is_type("User") {
        return (
            admin_id,
            present(d.admin_resource_name.take()),
            "data.additionalDetails.adminResourceId (adminResourceType is User)",
        );
    }
    if admin_type.is_none() && admin_id.is_some() {
        return (
            admin_id,
            present(d.admin_resource_name.take()),
            "data.additionalDetails.adminResourceId",
        );
    }
    if let Some(resource_id) = present(data.resource_id.take()) {
        if UserOcid::is_claimed_by(&resource_id) {
            return (
                Some(resource_id),
                present(data.resource_name.take()),
                "data.resourceId",
            );
        }
    }
    (
        present(d.actor_id.take()),
        present(d.actor_name.take()),
        ACTOR_FIELD,
    )
}

/// Where [`subject`] found the user when nothing else named one.
const ACTOR_FIELD: &str = "data.additionalDetails.actorId (no adminResourceId of type User, no \
     user OCID in data.resourceId)";

fn decide(
    event_id: Option<String>,
    mut data: SubjectData,
    domains: &DomainPolicy,
    createuser: bool,
) -> Triage {
    let mut d = data.additional_details.take().unwrap_or_default();
    let (user_id, user_name, id_field) = subject(&mut data, &mut d);
    // The actor of a `createuser` record is the administrator (or service) that created the user.
    let (user_id, user_name, actor_of_createuser) = if createuser && id_field == ACTOR_FIELD {
        (None, None, true)
    } else {
        (user_id, user_name, false)
    };
    let (domain_name, domain_id, domain_display_name) = (
        present(d.domain_name),
        present(d.domain_id),
        present(d.domain_display_name),
    );
    let fields = DomainFields {
        name: domain_name.as_deref(),
        id: domain_id.as_deref(),
        display_name: domain_display_name.as_deref(),
    };
    let (domain, decision) = match fields.name.or(fields.id).or(fields.display_name) {
        Some(_) => domains.route(fields),
        None => (
            None,
            DomainDecision::Invalid {
                reason: String::new(),
            },
        ),
    };

    let route = match decision {
        DomainDecision::Allowed { url } => Some(DomainRoute::Url(url)),
        DomainDecision::Resolve { ocid } => Some(DomainRoute::Ocid(ocid)),
        DomainDecision::OutsideAllowList => {
            return Triage::Ignored {
                event_id,
                domain,
                reason: IgnoreReason::OutsideDomains,
            }
        }
        DomainDecision::Invalid { reason } if domain.is_some() => {
            let user_id = user_id.as_deref().map(truncated);
            return rejected(event_id, domain, user_id, user_name, reason);
        }
        DomainDecision::Invalid { .. } => None,
    };
    if actor_of_createuser {
        return rejected(
            event_id,
            domain,
            None,
            None,
            CREATEUSER_NAMES_NO_USER.to_owned(),
        );
    }

    let (user_id, route) = match (user_id, route) {
        (Some(u), Some(route)) => (u, route),
        (user_id, route) => {
            let mut missing = Vec::new();
            if user_id.is_none() {
                missing.push(id_field);
            }
            if route.is_none() {
                missing.push("data.additionalDetails.domainName (or domainId, domainDisplayName)");
            }
            let reason = format!("missing {}", missing.join(" and "));
            let user_id = user_id.as_deref().map(truncated);
            return rejected(event_id, domain, user_id, user_name, reason);
        }
    };

    let domain_values = [domain_name, domain_id, domain_display_name]
        .into_iter()
        .flatten()
        .collect();
    match UserRef::parse(&user_id) {
        Ok(parsed) => Triage::Act(Target {
            event_id,
            domain: domain.unwrap_or_default(),
            domain_values,
            route,
            user_id: parsed,
            user_name,
        }),
        Err(e) => rejected(
            event_id,
            domain,
            Some(truncated(&user_id)),
            user_name,
            e.to_string(),
        ),
    }
}

fn rejected(
    event_id: Option<String>,
    domain: Option<String>,
    user_id: Option<String>,
    user_name: Option<String>,
    reason: String,
) -> Triage {
    Triage::Rejected {
        event_id,
        domain,
        user_id,
        user_name,
        reason,
    }
}

// Best-effort context for a record whose typed reading failed, so the report can still say
// which event it was.
fn raw_event_id(record: &Value) -> Option<String> {
    ["id", "eventID"]
        .iter()
        .find_map(|k| record.get(k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(truncated)
}

fn raw_domain(record: &Value) -> Option<String> {
    let details = record.get("data")?.get("additionalDetails")?;
    ["domainName", "domainId", "domainDisplayName"]
        .iter()
        .find_map(|k| details.get(k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SEED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/sch-batch-userjit-seed-style.json"
    ));
    const RECONSTRUCTION: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/idcs-sch-batch-jit-RECONSTRUCTION.json"
    ));
    const REAL_AUDIT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/idcs-sch-batch-audit-real.json"
    ));
    const LEGACY_AUDIT_EVENT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/idcs-auditevent-scim-doc.json"
    ));

    const DOMAIN: &str = "idcs-0123456789abcdef0123456789abcdef";
    const USER: &str = "8f2e4c6a1b3d5f7091a2b3c4d5e6f708";
    const TEMPLATE: &str = "https://{domain}.identity.oraclecloud.com";

    fn any_domain() -> DomainPolicy {
        DomainPolicy::new(None, TEMPLATE).unwrap()
    }

    fn records(body: &str) -> Vec<Value> {
        match parse_invocation(body.as_bytes()).unwrap() {
            Invocation::Records(r) => r.iter().map(Result::unwrap).collect(),
            other => panic!("not records: {other:?}"),
        }
    }

    fn act(t: Triage) -> Target {
        match t {
            Triage::Act(target) => target,
            other => panic!("expected Act, got {other:?}"),
        }
    }

    fn rejection(t: Triage) -> String {
        match t {
            Triage::Rejected { reason, .. } => reason,
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    fn ignored(t: Triage) -> IgnoreReason {
        match t {
            Triage::Ignored { reason, .. } => reason,
            other => panic!("expected Ignored, got {other:?}"),
        }
    }

    /// A minimal selected record with the given additionalDetails.
    fn record(details: Value) -> Value {
        json!({"id": "ev-1", "type": "com.example.UserJit", "data": {"additionalDetails": details}})
    }

    // ---- parse_invocation ----

    #[test]
    fn batch_array_is_records() {
        assert_eq!(records(SEED).len(), 2);
        assert_eq!(records("[]").len(), 0);
        assert_eq!(records("[1, \"x\", null]").len(), 3);
    }

    #[test]
    fn single_object_is_a_batch_of_one() {
        let r = records(r#"{"id": "x", "data": {}}"#);
        assert_eq!(r, vec![json!({"id": "x", "data": {}})]);
    }

    #[test]
    fn reconcile_request() {
        let inv = parse_invocation(
            br#"{"reconcile": {"domain": "Default", "filter": "userName sw \"a\"", "startIndex": 51, "maxUsers": 500}}"#,
        )
        .unwrap();
        assert_eq!(
            inv,
            Invocation::Reconcile(Box::new(ReconcileRequest {
                domain: "Default".into(),
                filter: Some("userName sw \"a\"".into()),
                start_index: Some(51),
                max_users: Some(500),
                ..ReconcileRequest::default()
            }))
        );
        let inv = parse_invocation(br#"{"reconcile": {"domain": "d", "filter": null}}"#).unwrap();
        assert_eq!(
            inv,
            Invocation::Reconcile(Box::new(ReconcileRequest {
                domain: "d".into(),
                ..ReconcileRequest::default()
            }))
        );
    }

    #[test]
    fn tenancy_and_hand_off_requests() {
        let err = |b: &str| parse_invocation(b.as_bytes()).unwrap_err().to_string();
        let Invocation::Reconcile(all) = parse_invocation(
            br#"{"reconcile": {"domains": "all", "compartment": "ocid1.compartment.oc1..aaaa"}}"#,
        )
        .unwrap() else {
            panic!("not a reconcile")
        };
        assert_eq!(all.domains, Some(AllDomains::All));
        let hop = r#"{"reconcile": {"domain": "ocid1.domain.oc1..aaaa", "hop": 3, "runId": "r-1",
            "after": {"created": "2026-11-01T00:00:00.5Z", "id": "0123456789abcdef0123456789abcdef"},
            "startedAt": "2026-11-01T00:00:00Z", "totals": {"scanned": 5, "applied": 1, "unchanged": 4, "rejected": 0, "failed": 0}}}"#;
        let Ok(Invocation::Reconcile(request)) = parse_invocation(hop.as_bytes()) else {
            panic!("not a reconcile")
        };
        // What a hand-off sends is what the next hop reads.
        let again = serde_json::to_string(&serde_json::json!({ "reconcile": request })).unwrap();
        assert_eq!(
            parse_invocation(again.as_bytes()).unwrap(),
            Invocation::Reconcile(request)
        );
        assert!(err(r#"{"reconcile": {"domains": "some"}}"#)
            .contains("reconcile.domains: unknown variant"));
        assert!(err(r#"{"reconcile": {"domains": "all", "domain": "d"}}"#).contains("not both"));
        assert!(err(
            r#"{"reconcile": {"domain": "d", "compartment": "ocid1.compartment.oc1..a"}}"#
        )
        .starts_with("reconcile.compartment: only with"));
        assert!(
            err(r#"{"reconcile": {"domains": "all", "compartment": "../x"}}"#)
                .starts_with("reconcile.compartment: compartment: expected")
        );
        assert!(err(r#"{"reconcile": {"domain": "d", "after": {"created": "yesterday", "id": "0123456789abcdef0123456789abcdef"}}}"#)
            .starts_with("reconcile.after.created: expected an RFC 3339 time"));
        assert!(err(r#"{"reconcile": {"domain": "d", "after": {"created": "2026-11-01T00:00:00Z", "id": "../"}}}"#)
            .starts_with("reconcile.after.id: user id"));
        assert!(
            err(r#"{"reconcile": {"domain": "d", "runId": "a b"}}"#).starts_with("reconcile.runId")
        );
    }

    #[test]
    fn reconcile_errors_name_the_path() {
        let err = |b: &str| parse_invocation(b.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"reconcile": {"domain": "d", "maxUsers": "x"}}"#),
            "reconcile.maxUsers: invalid type: string \"x\", expected u64"
        );
        assert_eq!(
            err(r#"{"reconcile": {"domain": "d", "startIndex": -1}}"#),
            "reconcile.startIndex: invalid value: integer `-1`, expected u64"
        );
        assert!(err(r#"{"reconcile": {}}"#).contains("reconcile: missing field `domain`"));
        assert!(err(r#"{"reconcile": {"domain": 5}}"#).contains("reconcile.domain: invalid type"));
        assert!(err(r#"{"reconcile": {"domain": "d", "maxuser": 1}}"#)
            .contains("reconcile.maxuser: unknown field `maxuser`"));
        assert!(err(r#"{"reconcile": "d"}"#).contains("reconcile: invalid type: string"));
        assert!(
            err(r#"{"reconcile": {"domain": "d"}, "extra": 1}"#).contains("unknown field `extra`")
        );
    }

    #[test]
    fn bad_bodies_say_what_was_expected() {
        let err = |b: &[u8]| parse_invocation(b).unwrap_err().to_string();
        assert_eq!(err(b""), "empty body");
        assert_eq!(err(b"  \n"), "empty body");
        assert!(err(b"{").starts_with("body is not valid JSON"));
        assert!(err(b"{").contains("expected a JSON array of audit records"));
        assert!(err(b"\xff\xfe[]").starts_with("body is not valid UTF-8"));
        assert!(err(b"42").ends_with("got a number"));
        assert!(err(b"\"x\"").ends_with("got a string"));
        assert!(err(b"null").ends_with("got null"));
        assert!(err(b"true").ends_with("got a boolean"));
        assert!(err(b"[] []").starts_with("body is not valid JSON"));

        let mut big = vec![b' '; MAX_BODY_BYTES + 1];
        big[0] = b'[';
        assert!(err(&big).contains("over the limit"));
        // Exactly at the limit is accepted.
        let mut limit = vec![b' '; MAX_BODY_BYTES];
        limit[0] = b'[';
        limit[MAX_BODY_BYTES - 1] = b']';
        assert_eq!(
            parse_invocation(&limit).unwrap(),
            Invocation::Records(Records::default())
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = "[".repeat(100_000);
        assert!(parse_invocation(body.as_bytes()).is_err());
    }

    // ---- triage on the samples ----

    #[test]
    fn seed_style_jit_acts_on_the_actor() {
        let batch = records(SEED);
        let t = act(triage(&batch[0], &EventTypes::default(), &any_domain()));
        assert_eq!(
            t.event_id.as_deref(),
            Some("9a7d3c1e-5b2f-4e8a-9c0d-1e2f3a4b5c6d")
        );
        assert_eq!(t.user_id.as_str(), "7c1e5f0a2b3d4c5e8f9a0b1c2d3e4f50");
        assert_eq!(t.user_name.as_deref(), Some("maria.garcia@example.com"));
        assert_eq!(t.domain, DOMAIN);
        assert_eq!(
            t.route.url().unwrap().as_str(),
            format!("https://{DOMAIN}.identity.oraclecloud.com")
        );
    }

    #[test]
    fn real_list_events_record_is_ignored() {
        for batch in [records(SEED), records(REAL_AUDIT)] {
            let last = batch.last().unwrap();
            let t = triage(last, &EventTypes::default(), &any_domain());
            assert_eq!(
                t,
                Triage::Ignored {
                    event_id: Some("93e7a143-650b-4632-8a53-a464f45ee3c5".into()),
                    domain: None,
                    reason: IgnoreReason::NotSelected,
                }
            );
        }
    }

    #[test]
    fn reconstruction_acts_on_the_admin_resource_not_the_actor() {
        let batch = records(RECONSTRUCTION);
        let t = act(triage(&batch[0], &EventTypes::default(), &any_domain()));
        assert_eq!(t.user_id.as_str(), USER);
        assert_eq!(t.user_name.as_deref(), Some("jane.doe@example.com"));
        assert_eq!(t.domain, DOMAIN);
        assert_eq!(
            t.event_id.as_deref(),
            Some("5b0f2f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
        );
    }

    #[test]
    fn reconstruction_selected_by_event_id() {
        let batch = records(RECONSTRUCTION);
        let events = EventTypes::parse("admin.user.create.success").unwrap();
        let first = batch[0].clone();
        assert!(matches!(
            triage(&first, &events, &any_domain()),
            Triage::Act(_)
        ));
        // And nothing selects it when no name matches.
        let events = EventTypes::parse("sso.session.create.success").unwrap();
        assert_eq!(
            ignored(triage(&batch[0], &events, &any_domain())),
            IgnoreReason::NotSelected
        );
    }

    #[test]
    fn legacy_audit_event_fields_name_the_admin_resource() {
        // The legacy AuditEvent carries the same keys flat; placed under additionalDetails they
        // must pick the created user, not the administrator.
        let list: Value = serde_json::from_str(LEGACY_AUDIT_EVENT).unwrap();
        let mut details = list["Resources"][0].clone();
        details["domainName"] = json!(DOMAIN);
        let events = EventTypes::parse("admin.user.create.success").unwrap();
        let t = act(triage(
            &json!({"id": "legacy", "data": {"additionalDetails": details}}),
            &events,
            &any_domain(),
        ));
        assert_eq!(t.user_id.as_str(), "a06ff8169b3640a29792a15ece75c906");
        assert_eq!(t.user_name.as_deref(), Some("csaladna@example.com"));
    }

    #[test]
    fn oci_events_object() {
        let event = json!({
            "eventType": "com.oraclecloud.identitycontrolplane.createuser",
            "cloudEventsVersion": "0.1",
            "eventTypeVersion": "2.0",
            "eventID": "ev-events-1",
            "source": "IdentityControlPlane",
            "data": {
                "resourceId": "ocid1.user.oc1..aaaaexample",
                "additionalDetails": {"adminResourceId": USER, "domainName": DOMAIN}
            }
        });
        let events = EventTypes::parse("CreateUser").unwrap();
        let t = act(triage(&event, &events, &any_domain()));
        assert_eq!(t.event_id.as_deref(), Some("ev-events-1"));
        assert_eq!(t.user_id.as_str(), USER);
        assert_eq!(t.user_name, None);
        // Through parse_invocation as a single object too.
        let body = serde_json::to_vec(&event).unwrap();
        let Invocation::Records(batch) = parse_invocation(&body).unwrap() else {
            panic!()
        };
        let first = batch.iter().next().unwrap().unwrap();
        assert!(matches!(
            triage(&first, &events, &any_domain()),
            Triage::Act(_)
        ));
    }

    #[test]
    fn log_content_wrapper_is_unwrapped() {
        let inner = records(RECONSTRUCTION).remove(0);
        let wrapped = json!({"datetime": 1, "logContent": inner, "regionId": "eu-frankfurt-1"});
        let t = act(triage(&wrapped, &EventTypes::default(), &any_domain()));
        assert_eq!(t.user_id.as_str(), USER);

        let mut bad = wrapped.clone();
        bad["logContent"]["data"]["additionalDetails"]["adminResourceId"] = json!(7);
        let reason = rejection(triage(&bad, &EventTypes::default(), &any_domain()));
        assert!(
            reason.starts_with(
                "logContent.data.additionalDetails.adminResourceId: invalid type: integer `7`"
            ),
            "{reason}"
        );
        let reason = rejection(triage(
            &json!({"logContent": "x"}),
            &EventTypes::default(),
            &any_domain(),
        ));
        assert_eq!(reason, "logContent: expected a JSON object, got a string");
    }

    // ---- selection and malformed records ----

    #[test]
    fn non_object_record_is_rejected() {
        for v in [json!(1), json!("x"), json!(null), json!([]), json!(true)] {
            assert_eq!(
                rejection(triage(&v, &EventTypes::default(), &any_domain())),
                REASON_NOT_OBJECT
            );
        }
    }

    #[test]
    fn wrong_type_in_a_selected_record_names_the_path() {
        let r = record(json!({"adminResourceId": 12, "domainName": DOMAIN}));
        let t = triage(&r, &EventTypes::default(), &any_domain());
        let Triage::Rejected {
            event_id,
            domain,
            reason,
            ..
        } = t
        else {
            panic!("{t:?}")
        };
        assert_eq!(
            reason,
            "data.additionalDetails.adminResourceId: invalid type: integer `12`, expected a string"
        );
        assert_eq!(event_id.as_deref(), Some("ev-1"));
        assert_eq!(domain.as_deref(), Some(DOMAIN));
    }

    #[test]
    fn a_byte_order_mark_is_read_as_if_absent() {
        let body = "\u{feff}[{\"data\": {\"eventName\": \"UserJit\"}}]";
        let Ok(Invocation::Records(records)) = parse_invocation(body.as_bytes()) else {
            panic!("a batch");
        };
        assert_eq!(records.len(), 1);
        assert!(matches!(
            parse_invocation("\u{feff}{\"reconcile\": {\"domain\": \"d\"}}".as_bytes()),
            Ok(Invocation::Reconcile(_))
        ));
        assert!(parse_invocation("\u{feff}".as_bytes()).is_err());
    }

    #[test]
    fn a_record_without_any_event_type_field_says_so() {
        for r in [
            json!({"userName": "someone", "id": "x"}),
            json!({"data": {"additionalDetails": {"actorId": "a"}}, "type": ""}),
        ] {
            assert_eq!(
                ignored(triage(&r, &EventTypes::default(), &any_domain())),
                IgnoreReason::NoEventType
            );
        }
        assert!(IgnoreReason::NoEventType
            .as_str()
            .starts_with("no event type in this record: "));
    }

    #[test]
    fn malformed_but_unselected_record_is_ignored() {
        let r = json!({"type": "com.example.ListEvents",
                       "data": {"additionalDetails": {"adminResourceId": 12, "domainName": []}}});
        assert_eq!(
            ignored(triage(&r, &EventTypes::default(), &any_domain())),
            IgnoreReason::NotSelected
        );
    }

    #[test]
    fn malformed_selection_fields_are_rejected() {
        let cases = [
            (
                json!({"type": 5}),
                "type: invalid type: integer `5`, expected a string",
            ),
            (
                json!({"id": 5, "type": "x.UserJit"}),
                "id: invalid type: integer `5`",
            ),
            (json!({"data": "x"}), "data: invalid type: string \"x\""),
            (
                json!({"data": {"eventName": false}}),
                "data.eventName: invalid type: boolean",
            ),
            (
                json!({"data": {"additionalDetails": {"eventId": {}}}}),
                "data.additionalDetails.eventId: invalid type: map",
            ),
        ];
        for (r, prefix) in cases {
            let reason = rejection(triage(&r, &EventTypes::default(), &any_domain()));
            assert!(reason.starts_with(prefix), "{reason}");
        }
        // The event id is still reported when it was readable.
        let t = triage(
            &json!({"id": "ev-9", "type": 5}),
            &EventTypes::default(),
            &any_domain(),
        );
        assert!(matches!(t, Triage::Rejected { event_id: Some(ref e), .. } if e == "ev-9"));
    }

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let r = json!({"id": null, "type": null, "extra": {"a": 1},
                       "data": {"eventName": "UserJit", "additionalDetails": {
                           "adminResourceId": USER, "adminResourceType": null,
                           "adminResourceName": null, "domainName": DOMAIN, "other": 1.5}}});
        let t = act(triage(&r, &EventTypes::default(), &any_domain()));
        assert_eq!(t.event_id, None);
        assert_eq!(t.user_name, None);
        // data or additionalDetails null: selected by type, then missing fields.
        let r = json!({"type": "x.UserJit", "data": {"additionalDetails": null}});
        let reason = rejection(triage(&r, &EventTypes::default(), &any_domain()));
        assert!(
            reason.starts_with("missing data.additionalDetails.actorId"),
            "{reason}"
        );
        let r = json!({"type": "x.UserJit", "data": null});
        assert!(rejection(triage(&r, &EventTypes::default(), &any_domain())).contains("domainName"));
    }

    // ---- user choice ----

    #[test]
    fn user_choice_follows_admin_resource_type() {
        let events = EventTypes::default();
        let actor = "11111111111111111111111111111111";
        let base = json!({"adminResourceId": USER, "adminResourceName": "admin-res",
                          "actorId": actor, "actorName": "actor", "domainName": DOMAIN});
        let with_type = |t: Value| {
            let mut d = base.clone();
            d["adminResourceType"] = t;
            act(triage(&record(d), &events, &any_domain()))
        };
        assert_eq!(with_type(json!("User")).user_id.as_str(), USER);
        assert_eq!(with_type(json!("USER")).user_id.as_str(), USER);
        assert_eq!(with_type(json!(null)).user_id.as_str(), USER);
        assert_eq!(with_type(json!("")).user_id.as_str(), USER);
        // Another type: not the admin resource; the actor.
        let g = with_type(json!("App"));
        assert_eq!(
            (g.user_id.as_str(), g.user_name.as_deref()),
            (actor, Some("actor"))
        );
        // A membership change without the referenced user is rejected, never the actor's.
        let d = json!({"adminResourceType": "Group", "adminResourceId": USER, "actorId": actor,
                       "domainName": DOMAIN});
        assert_eq!(
            rejection(triage(&record(d), &events, &any_domain())),
            "missing data.additionalDetails.adminRefResourceId (adminResourceType is Group)"
        );

        // Type User but no id: rejected, never the actor.
        let d = json!({"adminResourceType": "User", "actorId": actor, "domainName": DOMAIN});
        let reason = rejection(triage(&record(d), &events, &any_domain()));
        assert_eq!(
            reason,
            "missing data.additionalDetails.adminResourceId (adminResourceType is User)"
        );
    }

    const USER_OCID: &str = "ocid1.user.oc1..aaaaaaaaexampleuser0000000000000000000000000000000000";
    const DOMAIN_OCID: &str =
        "ocid1.domain.oc1..aaaaaaaaexampledomain00000000000000000000000000000000";
    const EVENTS_CREATEUSER: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/samples/oci-events-createuser-RECONSTRUCTION.json"
    ));

    #[test]
    fn events_createuser_names_the_user_and_domain_by_ocid() {
        // Selected by the default EVENT_TYPES through the last segment of eventType.
        let event: Value = serde_json::from_str(EVENTS_CREATEUSER).unwrap();
        let t = act(triage(&event, &EventTypes::default(), &any_domain()));
        assert_eq!(t.user_id, UserRef::parse(USER_OCID).unwrap());
        assert_eq!(t.user_name.as_deref(), Some("jane.doe@example.com"));
        assert_eq!(t.domain, DOMAIN_OCID);
        assert_eq!(
            t.route,
            DomainRoute::Ocid(crate::intake::names::DomainOcid::parse(DOMAIN_OCID).unwrap())
        );
        assert_eq!(
            t.event_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000001")
        );
        // In a batch too, and as the audit record Service Connector delivers for it.
        let audit = json!({"id": "a1", "type": "com.oraclecloud.identityControlPlane.CreateUser",
                           "specversion": "1.0", "data": event["data"].clone()});
        let body = serde_json::to_string(&json!([event, audit])).unwrap();
        for r in records(&body) {
            let t = act(triage(&r, &EventTypes::default(), &any_domain()));
            assert_eq!(t.user_id.as_str(), USER_OCID);
        }
        // Not selected when EVENT_TYPES leaves createuser out.
        let only_jit = EventTypes::parse("UserJit").unwrap();
        assert_eq!(
            ignored(triage(&event, &only_jit, &any_domain())),
            IgnoreReason::NotSelected
        );
    }

    #[test]
    fn group_membership_acts_on_the_referenced_user() {
        let d = json!({"eventId": "admin.group.add.member.success",
                       "adminResourceType": "Group", "adminResourceId": "22222222222222222222222222222222",
                       "adminResourceName": "OCI Developers", "adminRefResourceId": USER,
                       "adminRefResourceName": "jane.doe@example.com", "adminRefResourceType": "User",
                       "actorId": "11111111111111111111111111111111", "actorName": "admin",
                       "domainName": DOMAIN});
        let events = EventTypes::parse("admin.group.add.member.success").unwrap();
        let t = act(triage(&record(d.clone()), &events, &any_domain()));
        assert_eq!(t.user_id.as_str(), USER);
        assert_eq!(t.user_name.as_deref(), Some("jane.doe@example.com"));
        // "group" in any case; and a user OCID as the referenced resource.
        let mut d = d;
        d["adminResourceType"] = json!("GROUP");
        d["adminRefResourceId"] = json!(USER_OCID);
        let t = act(triage(&record(d), &events, &any_domain()));
        assert_eq!(t.user_id.as_str(), USER_OCID);
    }

    #[test]
    fn user_selection_order() {
        let events = EventTypes::default();
        let actor = "11111111111111111111111111111111";
        let pick = |details: Value, data: Value| {
            let mut data = data;
            data["additionalDetails"] = details;
            act(triage(
                &json!({"type": "x.UserJit", "data": data}),
                &events,
                &any_domain(),
            ))
            .user_id
            .as_str()
            .to_owned()
        };
        let base = json!({"actorId": actor, "domainName": DOMAIN});
        let mut with_admin = base.clone();
        with_admin["adminResourceId"] = json!(USER);
        let resource = json!({"resourceId": USER_OCID, "resourceName": "n"});
        // Admin resource (no type) before data.resourceId, data.resourceId before the actor.
        assert_eq!(pick(with_admin.clone(), resource.clone()), USER);
        assert_eq!(pick(base.clone(), resource.clone()), USER_OCID);
        assert_eq!(pick(base.clone(), json!({})), actor);
        // A resourceId that is not a user's (a group OCID, a hex id) is not the user.
        assert_eq!(
            pick(base.clone(), json!({"resourceId": "ocid1.group.oc1..aaaa"})),
            actor
        );
        assert_eq!(pick(base.clone(), json!({"resourceId": USER})), actor);
        // One that claims to be a user OCID but is malformed is rejected, not skipped.
        let t = triage(
            &json!({"type": "x.UserJit", "data": {"resourceId": "ocid1.user.oc1..BAD/..",
                    "additionalDetails": base}}),
            &events,
            &any_domain(),
        );
        assert!(
            rejection(t).starts_with("user id: expected 32 lower-case hex digits or a user OCID"),
        );
        // A wrongly typed resourceId names its path.
        let t = triage(
            &json!({"type": "x.UserJit", "data": {"resourceId": 5, "additionalDetails": {}}}),
            &events,
            &any_domain(),
        );
        assert!(rejection(t).starts_with("data.resourceId: invalid type"));
    }

    #[test]
    fn domain_ocids_without_and_with_domains() {
        let events = EventTypes::default();
        // Without DOMAINS: an idcs- name wins; else a domain OCID in domainId is resolved.
        let d = json!({"adminResourceId": USER, "domainId": DOMAIN_OCID, "domainDisplayName": "Default"});
        let t = act(triage(&record(d), &events, &any_domain()));
        assert_eq!((t.domain.as_str(), t.route.url()), (DOMAIN_OCID, None));
        let d = json!({"adminResourceId": USER, "domainName": DOMAIN, "domainId": DOMAIN_OCID});
        assert_eq!(
            act(triage(&record(d), &events, &any_domain())).domain,
            DOMAIN
        );
        let d = json!({"adminResourceId": USER, "domainName": "Default", "domainId": DOMAIN_OCID});
        assert_eq!(
            act(triage(&record(d), &events, &any_domain())).domain,
            DOMAIN_OCID
        );
        for bad in [
            "ocid1.domain.oc1..UPPER",
            "ocid1.domain.oc1.x",
            "ocid1.user.oc1..aaaa",
            "x",
        ] {
            let d = json!({"adminResourceId": USER, "domainId": bad});
            let reason = rejection(triage(&record(d), &events, &any_domain()));
            assert!(
                reason.starts_with("domain OCID: expected"),
                "{bad}: {reason}"
            );
        }
        // With DOMAINS: a bare OCID entry is resolved; OCID=URL gives the URL.
        let p = DomainPolicy::new(Some(DOMAIN_OCID), TEMPLATE).unwrap();
        let d = json!({"adminResourceId": USER, "domainName": DOMAIN, "domainId": DOMAIN_OCID});
        let t = act(triage(&record(d.clone()), &events, &p));
        assert_eq!((t.domain.as_str(), t.route.url()), (DOMAIN_OCID, None));
        let p = DomainPolicy::new(Some(&format!("{DOMAIN_OCID}=http://127.0.0.1:9")), TEMPLATE)
            .unwrap();
        let t = act(triage(&record(d), &events, &p));
        assert_eq!(t.route.url().unwrap().as_str(), "http://127.0.0.1:9");
        let other = json!({"adminResourceId": USER, "domainId": "ocid1.domain.oc1..other"});
        assert_eq!(
            ignored(triage(&record(other), &events, &p)),
            IgnoreReason::OutsideDomains
        );
    }

    #[test]
    fn missing_user_and_domain_are_named() {
        let events = EventTypes::default();
        let reason = rejection(triage(&record(json!({})), &events, &any_domain()));
        assert_eq!(
            reason,
            "missing data.additionalDetails.actorId (no adminResourceId of type User, no user OCID \
             in data.resourceId) and data.additionalDetails.domainName (or domainId, \
             domainDisplayName)"
        );
        let t = triage(
            &record(json!({"actorId": USER, "actorName": "n"})),
            &events,
            &any_domain(),
        );
        let Triage::Rejected {
            user_id,
            user_name,
            reason,
            ..
        } = t
        else {
            panic!("{t:?}")
        };
        assert_eq!(
            reason,
            "missing data.additionalDetails.domainName (or domainId, domainDisplayName)"
        );
        assert_eq!(user_id.as_deref(), Some(USER));
        assert_eq!(user_name.as_deref(), Some("n"));
    }

    #[test]
    fn adversarial_user_ids_are_rejected() {
        let events = EventTypes::default();
        for bad in [
            "../x".to_owned(),
            "?filter=".to_owned(),
            "%2e%2e".to_owned(),
            USER[..31].to_owned(),
            format!("{USER}0"),
            USER.to_uppercase(),
            format!("{USER}\n"),
            format!("{}\u{441}", &USER[..31]),
            "x".repeat(1000),
        ] {
            let t = triage(
                &record(json!({"adminResourceId": bad, "domainName": DOMAIN})),
                &events,
                &any_domain(),
            );
            let Triage::Rejected {
                user_id, reason, ..
            } = t
            else {
                panic!("accepted {bad:?}: {t:?}")
            };
            assert!(
                reason.starts_with("user id: expected 32 lower-case hex digits"),
                "{reason}"
            );
            assert!(user_id.unwrap().chars().count() <= 81);
        }
    }

    #[test]
    fn adversarial_domains_are_rejected_without_allow_list() {
        let events = EventTypes::default();
        for bad in [
            "evil.example#".to_owned(),
            format!("{DOMAIN}@evil.example"),
            "../".to_owned(),
            format!("idcs-%30{}", &DOMAIN[6..]),
            format!("idcs-{}", DOMAIN[5..].to_uppercase()),
            format!("{DOMAIN} "),
            format!("{DOMAIN}\n"),
            format!("idcs-\u{ff10}{}", &DOMAIN[6..]),
            "Default".to_owned(),
        ] {
            let t = triage(
                &record(json!({"adminResourceId": USER, "domainName": bad})),
                &events,
                &any_domain(),
            );
            let Triage::Rejected {
                domain,
                reason,
                user_id,
                ..
            } = t
            else {
                panic!("accepted {bad:?}: {t:?}")
            };
            assert!(reason.starts_with("domain name: expected"), "{reason}");
            assert_eq!(domain.as_deref(), Some(bad.as_str()));
            assert_eq!(user_id.as_deref(), Some(USER));
        }
    }

    #[test]
    fn domain_fallback_order() {
        let events = EventTypes::default();
        let p = DomainPolicy::new(
            Some(&format!(
                "Default=https://a.example,ocid1.domain.oc1..x=https://b.example,{DOMAIN}"
            )),
            TEMPLATE,
        )
        .unwrap();
        let host = |d: Value| {
            act(triage(&record(d), &events, &p))
                .route
                .url()
                .unwrap()
                .host()
                .to_owned()
        };
        let mut d = json!({"adminResourceId": USER, "domainDisplayName": "Default"});
        assert_eq!(host(d.clone()), "a.example");
        d["domainId"] = json!("ocid1.domain.oc1..x");
        assert_eq!(host(d.clone()), "b.example");
        d["domainName"] = json!(DOMAIN);
        assert_eq!(
            host(d.clone()),
            format!("{DOMAIN}.identity.oraclecloud.com")
        );
        // An empty domainName falls back like an absent one.
        d["domainName"] = json!("");
        assert_eq!(host(d), "b.example");
    }

    #[test]
    fn allow_list_by_display_name_and_outside() {
        let events = EventTypes::default();
        let p = DomainPolicy::new(Some("Default=http://127.0.0.1:8080"), TEMPLATE).unwrap();
        let d = json!({"adminResourceId": USER, "domainDisplayName": "Default"});
        let t = act(triage(&record(d), &events, &p));
        assert_eq!(t.domain, "Default");
        assert_eq!(t.route.url().unwrap().as_str(), "http://127.0.0.1:8080");

        // The reconstruction names the domain by domainName, which DOMAINS lacks, and by its
        // display name "Default", which it lists: any of the fields picks the entry.
        let batch = records(RECONSTRUCTION);
        let t = act(triage(&batch[0], &events, &p));
        assert_eq!(t.domain, "Default");
        let p = DomainPolicy::new(Some("Other=http://127.0.0.1:8080"), TEMPLATE).unwrap();
        assert_eq!(
            triage(&batch[0], &events, &p),
            Triage::Ignored {
                event_id: Some("5b0f2f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into()),
                domain: Some(DOMAIN.into()),
                reason: IgnoreReason::OutsideDomains,
            }
        );
        // Outside the list wins over a missing user: it is another domain's business.
        let t = triage(&record(json!({"domainName": "Elsewhere"})), &events, &p);
        assert_eq!(ignored(t), IgnoreReason::OutsideDomains);
    }

    // ---- never panics ----

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("id".to_owned()),
            Just("type".to_owned()),
            Just("eventType".to_owned()),
            Just("eventID".to_owned()),
            Just("data".to_owned()),
            Just("eventName".to_owned()),
            Just("additionalDetails".to_owned()),
            Just("eventId".to_owned()),
            Just("adminResourceId".to_owned()),
            Just("adminResourceName".to_owned()),
            Just("adminResourceType".to_owned()),
            Just("actorId".to_owned()),
            Just("actorName".to_owned()),
            Just("domainName".to_owned()),
            Just("domainId".to_owned()),
            Just("domainDisplayName".to_owned()),
            Just("adminRefResourceId".to_owned()),
            Just("adminRefResourceName".to_owned()),
            Just("resourceId".to_owned()),
            Just("resourceName".to_owned()),
            Just("logContent".to_owned()),
            Just("reconcile".to_owned()),
            "\\PC{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            Just(json!("UserJit")),
            Just(json!(USER)),
            Just(json!(DOMAIN)),
            Just(json!("User")),
            Just(json!("Group")),
            Just(json!("ocid1.user.oc1..aaaaexample")),
            Just(json!("ocid1.domain.oc1..aaaaexample")),
            Just(json!("com.oraclecloud.identitycontrolplane.createuser")),
            "\\PC{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parse_invocation_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_invocation(&bytes);
        }

        #[test]
        fn parse_invocation_never_panics_on_json(v in json_value()) {
            let _ = parse_invocation(&serde_json::to_vec(&v).unwrap());
        }

        #[test]
        fn triage_never_panics(v in json_value()) {
            let events = EventTypes::parse("UserJit,admin.user.create.success").unwrap();
            let listed = DomainPolicy::new(
                Some(&format!("Default=https://a.example,{DOMAIN}")), TEMPLATE).unwrap();
            for policy in [any_domain(), listed] {
                // Wrapped in each accepted shape so the deeper readers are reached.
                let shapes = [
                    v.clone(),
                    json!({"type": "x.UserJit", "data": v.clone()}),
                    json!({"type": "x.UserJit", "data": {"additionalDetails": v.clone()}}),
                    json!({"logContent": v.clone()}),
                ];
                for shape in &shapes {
                    if let Triage::Act(t) = triage(shape, &events, &policy) {
                        prop_assert!(UserRef::parse(t.user_id.as_str()).is_ok());
                    }
                }
            }
        }
    }
}
