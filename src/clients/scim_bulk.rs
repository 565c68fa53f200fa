//! SCIM search and Bulk on an identity domain: `POST /admin/v1/Users/.search` reads many users in
//! one request, `POST /admin/v1/Bulk` carries many writes.
//!
//! A Bulk operation is generic ([`BulkOperation`]: method, path, optional data), so any write the
//! product makes can ride in one: `PUT /UserCapabilitiesChanger/{id}` today, `DELETE
//! /ApiKeys/{id}` and the other credential types next. Requests are cut at Oracle's documented
//! limits (50 operations, 1 MB), never ask `failOnErrors` (one bad operation must not stop the
//! others), and each operation's own `status` is judged by the same table as a single request's
//! answer ([`crate::transport::classify`]). An answer that does not say what became of an
//! operation leaves it unsettled: never assumed written.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::clients::identity_domain::{calls, user_attributes};
use crate::intake::names::{truncated_to, DomainUrl, UserRef};
use crate::transport::{
    classify, error_detail, Call, Intent, Method, Observed, RateGroup, StatusCode, Verdict,
};

/// `/Bulk` calls count against their own rate budget per domain (`BULK_REQUESTS_PER_SECOND`), as
/// Oracle counts them (5/s and 200/min on every domain type).
pub const BULK_GROUP: RateGroup = RateGroup::new("bulk");
/// Oracle's limit on operations in one Bulk request.
pub const MAX_OPERATIONS: usize = 50;
/// Oracle's limit on a Bulk request's size (1 MB); a margin is kept for the envelope.
pub const MAX_BULK_BYTES: usize = 1_000_000;

/// The largest search or Bulk answer read: 50 users with their credential lists, or 50 operations'
/// results, take well under 1 MiB. The page limit (32 MiB) would let one hostile answer hold half
/// the function's memory; past this a search's users are read singly (1 MiB each) and a Bulk
/// request's users are `failed` for a retry, never assumed written.
pub const BATCH_ANSWER_LIMIT: usize = 4 * 1024 * 1024;
/// Users asked for in one search (the product's limit, as for Bulk).
pub const MAX_SEARCH_USERS: usize = 50;
const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// One write inside a Bulk request: `method` on `path` (relative to `/admin/v1`), with `data` as
/// the body a single request would carry.
#[derive(Debug, Clone, Serialize)]
pub struct BulkOperation {
    /// `PUT`, `DELETE`, `POST` or `PATCH`.
    pub method: &'static str,
    /// Names the operation in the answer; unique within the request.
    #[serde(rename = "bulkId")]
    pub bulk_id: String,
    /// E.g. `/UserCapabilitiesChanger/{id}`, built from validated ids only.
    pub path: String,
    /// The body of the single request; `None` for a `DELETE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl BulkOperation {
    /// `PUT /UserCapabilitiesChanger/{id}` with the same body a single PUT carries.
    pub fn put(bulk_id: String, path: String, data: Value) -> Self {
        BulkOperation {
            method: "PUT",
            bulk_id,
            path,
            data: Some(data),
        }
    }

    /// `DELETE {path}` (a credential, say).
    pub fn delete(bulk_id: String, path: String) -> Self {
        BulkOperation {
            method: "DELETE",
            bulk_id,
            path,
            data: None,
        }
    }

    /// Its size inside a request body, in bytes.
    fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX / 2, |v| v.len() + 1)
    }
}

/// The body of `POST /admin/v1/Bulk` for `operations`.
pub fn bulk_body(operations: &[BulkOperation]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        schemas: [&'static str; 1],
        #[serde(rename = "Operations")]
        operations: &'a [BulkOperation],
    }
    serde_json::to_vec(&Body {
        schemas: [BULK_REQUEST_SCHEMA],
        operations,
    })
    .unwrap_or_default()
}

/// Cuts `operations` into requests of at most [`MAX_OPERATIONS`] operations and
/// [`MAX_BULK_BYTES`] bytes, in order. An operation too large for any request travels alone (its
/// single request would be as large).
pub fn chunks(operations: Vec<BulkOperation>) -> Vec<Vec<BulkOperation>> {
    const ENVELOPE: usize = 128;
    let mut out: Vec<Vec<BulkOperation>> = Vec::new();
    let mut size = ENVELOPE;
    for op in operations {
        let len = op.encoded_len();
        let full = out
            .last()
            .is_none_or(|c| c.len() >= MAX_OPERATIONS || size + len > MAX_BULK_BYTES);
        if full {
            out.push(Vec::new());
            size = ENVELOPE;
        }
        size += len;
        if let Some(last) = out.last_mut() {
            last.push(op);
        }
    }
    out
}

/// The `/Bulk` call for `body`, in its own rate group; an answer holds one small result per
/// operation (see [`BATCH_ANSWER_LIMIT`]).
pub fn bulk_call(domain: &DomainUrl, body: Vec<u8>) -> Call {
    let url = domain.endpoint(&["admin", "v1", "Bulk"], &[]);
    calls::call(Method::POST, url, Intent::Write)
        .with_body(body)
        .with_group(BULK_GROUP)
        .with_answer_limit(BATCH_ANSWER_LIMIT)
}

/// The `.search` call for `users` (at most [`MAX_SEARCH_USERS`]), asking the attributes a single
/// read asks, and `ocid` when any user is named by OCID. A search is a read, though sent by POST;
/// the ids are validated, so the filter can hold them quoted as they are.
pub fn search_call(domain: &DomainUrl, users: &[&UserRef], policy: &[&str]) -> Call {
    let body = search_body(users, policy);
    let url = domain.endpoint(&["admin", "v1", "Users", ".search"], &[]);
    calls::call(Method::POST, url, Intent::Read)
        .with_body(body.to_string().into_bytes())
        .with_answer_limit(BATCH_ANSWER_LIMIT)
}

/// The SearchRequest for `users` (see [`search_call`]).
pub fn search_body(users: &[&UserRef], policy: &[&str]) -> Value {
    let filter: Vec<String> = users
        .iter()
        .map(|u| match u {
            UserRef::Id(id) => format!("id eq \"{id}\""),
            UserRef::Ocid(ocid) => format!("ocid eq \"{ocid}\""),
        })
        .collect();
    let mut attributes: Vec<String> = user_attributes(policy)
        .split(',')
        .map(str::to_owned)
        .collect();
    if users.iter().any(|u| matches!(u, UserRef::Ocid(_))) {
        attributes.push("ocid".to_owned());
    }
    serde_json::json!({
        "schemas": [SEARCH_REQUEST_SCHEMA],
        "filter": filter.join(" or "),
        "attributes": attributes,
        "startIndex": 1,
        "count": users.len(),
    })
}

/// Whether an answer refuses the endpoint (or the operation) as such: 404, 405, 501, or a 400
/// whose SCIM error says it is not supported. The domain then gets single requests instead.
pub fn refused_as_unsupported(status: StatusCode, detail: Option<&str>) -> bool {
    match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
            true
        }
        StatusCode::BAD_REQUEST => detail.is_some_and(|d| {
            let d = d.to_ascii_lowercase();
            [
                "not supported",
                "unsupported",
                "not implemented",
                "invalid path",
                "invalid endpoint",
            ]
            .iter()
            .any(|w| d.contains(w))
        }),
        _ => false,
    }
}

/// What became of one operation, as its own `status` says.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// Done (2xx).
    Done,
    /// Worth another attempt (429, 5xx, 409 …; a 401, since the request as a whole was accepted).
    Retry(String),
    /// The operation (or its endpoint inside Bulk) was refused as such: send it singly, where the
    /// answer is the service's word on it (a single PUT's 404 means the user is gone).
    Single(String),
    /// Final: retrying cannot help (403 to a write, other 4xx).
    Rejected(String),
    /// Not done and not worth retrying now (3xx, an answer without a usable status).
    Failed(String),
}

/// The operations of a Bulk answer, by `bulkId`, each judged; ids not asked for, repeated or
/// without a usable status are left out (so their operations stay unsettled) and named in the
/// returned notes.
pub fn judge_answer(
    body: &[u8],
    asked: &[BulkOperation],
) -> Result<(HashMap<String, OpResult>, Vec<String>), String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("the Bulk answer is not JSON ({e})"))?;
    let operations = answer
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or("the Bulk answer has no Operations")?;
    let mut judged = HashMap::new();
    let mut notes = Vec::new();
    for op in operations {
        let id = op.get("bulkId").and_then(Value::as_str).unwrap_or_default();
        if !asked.iter().any(|a| a.bulk_id == id) {
            notes.push(format!(
                "the Bulk answer has an operation not asked for (bulkId {})",
                truncated_to(id, 60)
            ));
            continue;
        }
        if judged.contains_key(id) {
            notes.push(format!("the Bulk answer lists bulkId {id} twice"));
            judged.insert(
                id.to_owned(),
                OpResult::Failed(
                    "the Bulk answer lists this operation twice with no single result".into(),
                ),
            );
            continue;
        }
        judged.insert(id.to_owned(), judge_operation(op));
    }
    Ok((judged, notes))
}

/// Each operation's own `status` in a Bulk answer, by `bulkId` (operations without a usable one,
/// or listed twice, left out): for callers to whom a status means more than the write table says
/// (a credential `DELETE` answered 404 is already done).
pub fn operation_statuses(body: &[u8]) -> HashMap<String, StatusCode> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut statuses = HashMap::new();
    let mut twice = Vec::new();
    for op in answer
        .get("Operations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(status)) = (op.get("bulkId").and_then(Value::as_str), op_status(op))
        else {
            continue;
        };
        if statuses.insert(id.to_owned(), status).is_some() {
            twice.push(id.to_owned());
        }
    }
    for id in twice {
        statuses.remove(&id);
    }
    statuses
}

/// An operation's `status`: a number or a string of digits, as RFC 7644 writes it.
fn op_status(op: &Value) -> Option<StatusCode> {
    let status = match op.get("status") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
}

/// One operation's `status` (a number or a string of digits, as RFC 7644 writes it), judged by
/// the same table as a single write.
fn judge_operation(op: &Value) -> OpResult {
    let Some(status) = op_status(op) else {
        return OpResult::Failed(
            "the Bulk answer gives this operation no numeric status; not assumed written".into(),
        );
    };
    let response = op
        .get("response")
        .map(|r| r.to_string())
        .unwrap_or_default();
    let (detail, message_id) = error_detail(response.as_bytes());
    let said = format!(
        "the identity domain answered {status} to this operation inside Bulk{}{}",
        detail
            .as_ref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default(),
        message_id.map(|m| format!(" ({m})")).unwrap_or_default()
    );
    if refused_as_unsupported(status, detail.as_deref()) {
        return OpResult::Single(said);
    }
    let observed = Observed::Status {
        status,
        retry_after: None,
    };
    match classify(Intent::Write, observed) {
        Verdict::Success => OpResult::Done,
        Verdict::RetryAfter(_) | Verdict::RefreshCredentials => OpResult::Retry(said),
        Verdict::Reject if status == StatusCode::FORBIDDEN => OpResult::Rejected(format!(
            "{said}; the function's role may not change this user (an administrator, say); change it by hand or widen the role"
        )),
        Verdict::Reject => OpResult::Rejected(said),
        Verdict::Fail => OpResult::Failed(said),
    }
}

/// A search answer's users matched to the users asked for: `found[i]` is the user asked as
/// `asked[i]`, when the answer holds it. Users not asked for are named in the notes (and ignored);
/// a user listed twice counts once.
pub fn match_search(page: &[Value], asked: &[&UserRef]) -> (Vec<Option<Value>>, Vec<String>) {
    let mut found: Vec<Option<Value>> = vec![None; asked.len()];
    let mut notes = Vec::new();
    for user in page {
        let field = |name: &str| user.get(name).and_then(Value::as_str);
        let slot = asked.iter().position(|a| match a {
            UserRef::Id(id) => field("id") == Some(id.as_str()),
            UserRef::Ocid(ocid) => field("ocid") == Some(ocid.as_str()),
        });
        match slot {
            Some(i) if found[i].is_none() => found[i] = Some(user.clone()),
            Some(_) => {}
            None => notes.push(format!(
                "the search answer lists a user not asked for (id {}); ignored",
                truncated_to(field("id").unwrap_or("<none>"), 60)
            )),
        }
    }
    (found, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(n: usize, size: usize) -> BulkOperation {
        BulkOperation::put(
            format!("b{n}"),
            format!("/UserCapabilitiesChanger/{n:032x}"),
            json!({"pad": "x".repeat(size)}),
        )
    }

    #[test]
    fn requests_hold_at_most_fifty_operations_and_one_megabyte() {
        let cut = chunks((0..120).map(|n| put(n, 10)).collect());
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
        let cut = chunks((0..10).map(|n| put(n, 300_000)).collect());
        assert!(
            cut.iter().all(|c| bulk_body(c).len() <= MAX_BULK_BYTES),
            "{}",
            cut.len()
        );
        assert_eq!(cut.iter().map(Vec::len).sum::<usize>(), 10);
        assert_eq!(cut[0].len(), 3);
        let body: Value = serde_json::from_slice(&bulk_body(&cut[0])).unwrap();
        assert_eq!(body["schemas"][0], BULK_REQUEST_SCHEMA);
        assert!(body.get("failOnErrors").is_none());
        assert_eq!(body["Operations"][0]["method"], "PUT");
        let delete = BulkOperation::delete("d".into(), "/ApiKeys/x".into());
        assert!(serde_json::to_value(&delete).unwrap().get("data").is_none());
    }

    #[test]
    fn each_operation_is_judged_by_the_same_table() {
        let asked: Vec<BulkOperation> = (0..9).map(|n| put(n, 1)).collect();
        let answer = json!({"Operations": [
            {"bulkId": "b0", "status": "200"},
            {"bulkId": "b1", "status": 204},
            {"bulkId": "b2", "status": "429"},
            {"bulkId": "b3", "status": "403"},
            {"bulkId": "b4", "status": "400", "response": {"detail": "Attribute x is invalid"}},
            {"bulkId": "b5", "status": "404"},
            {"bulkId": "b6", "status": "ok"},
            {"bulkId": "b7", "status": "400", "response": {"detail": "The operation is not supported in Bulk"}},
            {"bulkId": "elsewhere", "status": "200"},
        ]});
        let (judged, notes) = judge_answer(answer.to_string().as_bytes(), &asked).unwrap();
        assert_eq!(judged["b0"], OpResult::Done);
        assert_eq!(judged["b1"], OpResult::Done);
        assert!(matches!(judged["b2"], OpResult::Retry(_)));
        assert!(matches!(&judged["b3"], OpResult::Rejected(r) if r.contains("may not change")));
        assert!(matches!(&judged["b4"], OpResult::Rejected(r) if r.contains("is invalid")));
        assert!(matches!(judged["b5"], OpResult::Single(_)));
        assert!(matches!(judged["b6"], OpResult::Failed(_)));
        assert!(matches!(judged["b7"], OpResult::Single(_)));
        assert!(!judged.contains_key("b8") && !judged.contains_key("elsewhere"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(judge_answer(b"<html>", &asked).is_err());
        assert!(judge_answer(b"{}", &asked).is_err());
    }

    #[test]
    fn search_answers_match_users_by_id_or_ocid_once() {
        let id = UserRef::parse(&"a".repeat(32)).unwrap();
        let ocid = UserRef::parse("ocid1.user.oc1..aaaa").unwrap();
        let asked = [&id, &ocid];
        let page = [
            json!({"id": "a".repeat(32), "userName": "first"}),
            json!({"id": "a".repeat(32), "userName": "again"}),
            json!({"id": "b".repeat(32), "ocid": "ocid1.user.oc1..aaaa"}),
            json!({"id": "c".repeat(32)}),
        ];
        let (found, notes) = match_search(&page, &asked);
        assert_eq!(found[0].as_ref().unwrap()["userName"], "first");
        assert_eq!(found[1].as_ref().unwrap()["id"], "b".repeat(32));
        assert_eq!(notes.len(), 1);
        let domain = DomainUrl::parse("http://127.0.0.1:1").unwrap();
        let call = search_call(&domain, &asked, &[]);
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body["filter"],
            format!(
                "id eq \"{}\" or ocid eq \"ocid1.user.oc1..aaaa\"",
                "a".repeat(32)
            )
        );
        assert_eq!(body["count"], 2);
        assert!(body["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!("ocid")));
        assert_eq!(call.intent, Intent::Read);
        assert!(refused_as_unsupported(StatusCode::METHOD_NOT_ALLOWED, None));
        assert!(!refused_as_unsupported(
            StatusCode::BAD_REQUEST,
            Some("bad filter")
        ));
    }
}
