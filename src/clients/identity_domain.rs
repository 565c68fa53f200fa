//! The identity-domain REST client: read a user, change its capabilities, list users, delete a
//! credential.
//!
//! A thin client on the shared transport ([`crate::transport`]): it knows the identity domain's
//! paths, attributes and answers, and builds each request as a [`Call`] (method, URL, body, what a
//! refusal means, how much of the answer to read). Pacing, signing at send, bounded reads, retries
//! and the meaning of each answer are the transport's.

use std::sync::Arc;

use serde::Deserialize;
use tokio::time::Instant;

use crate::decision::credentials::CredentialType;
use crate::decision::profile::{Capability, CAPABILITIES_URN, USER_EXTENSION_URN};
use crate::intake::names::{CredentialId, DomainUrl, UserId, UserRef};
use crate::signer::{CredentialKind, CredentialsProvider};
use crate::transport::{Call, Error, Hints, Intent, Method, Transport, PAGE_ANSWER_LIMIT};

pub use crate::transport::{BuildError, Failure, Settings as ClientSettings, Settled};

/// The service, as messages name it.
const SERVICE: &str = "the identity domain";
/// What identity domains answer with; both forms are JSON.
const ACCEPT: &str = "application/scim+json, application/json";

/// A read refused with 403: the role is missing or not yet propagated.
const READ_HINTS: Hints = Hints {
    forbidden: Some(
        "grant the function's dynamic group the User Administrator role in this domain (a new grant can take minutes to apply)",
    ),
    unauthorized: Some(unauthorized_hint),
};
/// A write refused with 403 after a successful read: this user is beyond the role.
const WRITE_HINTS: Hints = Hints {
    forbidden: Some(
        "the function's role may not change this user (an administrator, say); change it by hand or widen the role",
    ),
    unauthorized: Some(unauthorized_hint),
};

/// What a 403 to a credential delete means: the role may not delete other users' credentials.
pub(crate) const REVOKE_FORBIDDEN: &str = "deleting another user's credentials needs the Identity Domain Administrator or Security Administrator role in this domain (User Administrator may not be enough); grant one to the function's dynamic group, or set CREDENTIALS=report";
/// A credential delete refused with 403.
const REVOKE_HINTS: Hints = Hints {
    forbidden: Some(REVOKE_FORBIDDEN),
    unauthorized: Some(unauthorized_hint),
};

/// What most likely makes a domain refuse a credential that signs correctly, by kind of credential.
pub(crate) fn unauthorized_hint(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::ResourcePrincipal => "check that the function's dynamic group matches this function and holds the User Administrator role in this domain",
        CredentialKind::SessionToken => "the session may have expired (run `oci session refresh` or `oci session authenticate`), or its user lacks the User Administrator role in this domain",
        _ => "check that the key's fingerprint and user match an API key uploaded for that user, and that the user holds the User Administrator role in this domain",
    }
}

/// Attributes read for one user: enough to cross-check the name and compare capabilities, plus
/// `policy` (the policy's facts: groups, tags, user-extension flags). `attributes` replaces the
/// service's default set, so everything used is named, each capability by its full path
/// (`…:capabilities:User:canUseApiKeys`), the form Oracle's docs show: the bare extension URN
/// appears in none of them, and a service that ignored it would leave every read without its
/// capabilities.
pub fn user_attributes(policy: &[&str]) -> String {
    join_attributes(&base_attributes(&[]), policy)
}

/// `userName`, every capability attribute's full path, then `more`.
fn base_attributes(more: &[&str]) -> Vec<String> {
    let mut base = vec!["userName".to_owned()];
    base.extend(
        Capability::ALL
            .into_iter()
            .map(|c| format!("{CAPABILITIES_URN}:{}", c.attribute())),
    );
    base.extend(more.iter().map(|m| (*m).to_owned()));
    base
}

/// The JIT marker is `returned: request`, so listing names it explicitly; `meta.created` is the
/// reconcile's cursor, named so no service leaves it out; `policy` as for [`user_attributes`].
pub fn list_attributes(policy: &[&str]) -> String {
    let federated = format!("{USER_EXTENSION_URN}:isFederatedUser");
    let creation = format!("{USER_EXTENSION_URN}:creationMechanism");
    join_attributes(
        &base_attributes(&[&federated, &creation, "meta.created"]),
        policy,
    )
}

fn join_attributes(base: &[String], extra: &[&str]) -> String {
    let mut all: Vec<&str> = base.iter().map(String::as_str).collect();
    for a in extra {
        if !all.contains(a) {
            all.push(a);
        }
    }
    all.join(",")
}

/// One page of `GET /admin/v1/Users`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserPage {
    /// Absent on a page from a misbehaving server: the scan cannot know where the end is.
    #[serde(rename = "totalResults", default)]
    pub total_results: Option<u64>,
    /// `startIndex`: the 1-based index of the page's first user, as the server reports it.
    #[serde(rename = "startIndex", default)]
    pub start_index: Option<u64>,
    /// `itemsPerPage`: how many users the server says the page holds.
    #[serde(rename = "itemsPerPage", default)]
    pub items_per_page: Option<u64>,
    /// `Resources`: the users, as SCIM JSON objects (absent on an empty page).
    #[serde(rename = "Resources", default)]
    pub resources: Vec<serde_json::Value>,
}

/// A successful answer, parsed for the call, with the request ids the service gave for it (one per
/// attempt).
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// The answer, parsed for the call.
    pub value: T,
    /// The `X-ORACLE-DMS-ECID` of each attempt that carried one, in order.
    pub ecids: Vec<String>,
}

/// The identity domain's calls, as data.
pub mod calls {
    use super::*;

    /// A call to an identity domain: its service name, accept header and hints.
    pub fn call(method: Method, url: url::Url, intent: Intent) -> Call {
        let hints = match intent {
            Intent::Read => READ_HINTS,
            Intent::Write => WRITE_HINTS,
        };
        Call::new(method, url, intent)
            .with_service(SERVICE)
            .with_header("accept", ACCEPT)
            .with_hints(hints)
    }

    /// `GET /admin/v1/Users/{id or OCID}` with the attributes the comparison needs, and `ocid`
    /// when asked by OCID.
    pub fn read_user(domain: &DomainUrl, user: &UserRef, policy: &[&str]) -> Call {
        let mut attributes = user_attributes(policy);
        if matches!(user, UserRef::Ocid(_)) {
            attributes.push_str(",ocid");
        }
        let url = domain.endpoint(
            &["admin", "v1", "Users", user.as_str()],
            &[("attributes", &attributes)],
        );
        call(Method::GET, url, Intent::Read)
    }

    /// `PUT /admin/v1/UserCapabilitiesChanger/{id}` with a complete capability body.
    pub fn write_capabilities(domain: &DomainUrl, user: &UserId, body: Vec<u8>) -> Call {
        let url = domain.endpoint(
            &["admin", "v1", "UserCapabilitiesChanger", user.as_str()],
            &[],
        );
        call(Method::PUT, url, Intent::Write).with_body(body)
    }

    /// `DELETE /admin/v1/<type>/{id}`: revokes one of a user's credentials, after the user was read
    /// and its capabilities written (a 403 is final, naming the role). The id was validated as
    /// [`CredentialId`] and the type's path segment is a constant.
    pub fn delete_credential(domain: &DomainUrl, kind: CredentialType, id: &CredentialId) -> Call {
        let url = domain.endpoint(&["admin", "v1", kind.endpoint(), id.as_str()], &[]);
        call(Method::DELETE, url, Intent::Write).with_hints(REVOKE_HINTS)
    }

    /// One page of `GET /admin/v1/Users`, sorted by creation time so pages stay stable while users
    /// are added during the scan. An empty `filter` lists every user (no `filter` is sent).
    pub fn list_page(
        domain: &DomainUrl,
        filter: &str,
        start_index: u64,
        count: u64,
        policy: &[&str],
    ) -> Call {
        let attributes = list_attributes(policy);
        let start = start_index.to_string();
        let count = count.to_string();
        let mut query = vec![
            ("filter", filter),
            ("attributes", &attributes),
            ("sortBy", "meta.created"),
            // The SDK's enum spelling; it accepts nothing else.
            ("sortOrder", "ASCENDING"),
            ("startIndex", &start),
            ("count", &count),
        ];
        if filter.trim().is_empty() {
            query.remove(0);
        }
        let url = domain.endpoint(&["admin", "v1", "Users"], &query);
        call(Method::GET, url, Intent::Read).with_answer_limit(PAGE_ANSWER_LIMIT)
    }
}

/// The identity-domain client; cheap to clone, and one is shared by all work so connections,
/// credentials and rate limits are shared too.
#[derive(Debug, Clone)]
pub struct IdentityDomainClient {
    transport: Transport,
}

impl IdentityDomainClient {
    /// A client on a transport of its own.
    pub fn new(
        credentials: Arc<dyn CredentialsProvider>,
        settings: ClientSettings,
    ) -> Result<Self, BuildError> {
        Ok(Self::on(Transport::new(credentials, settings)?))
    }

    /// A client on a shared transport.
    pub fn on(transport: Transport) -> Self {
        IdentityDomainClient { transport }
    }

    /// The transport it sends through (for the other OCI clients to share).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The credential in use, described for logs, e.g. "api key (profile DEFAULT)".
    pub fn credentials_label(&self) -> String {
        self.transport.credentials_label()
    }

    /// Sends any identity-domain call (see [`calls`]) through the transport.
    pub async fn send(
        &self,
        call: &Call,
        deadline: Instant,
    ) -> Result<crate::transport::Answer, Failure> {
        self.transport.send(call, deadline).await
    }

    /// `GET /admin/v1/Users/{id or OCID}` with the capability and user extensions (and `ocid`
    /// when asked by OCID, so [`answered_user_id`] can check the answer is the user asked for).
    pub async fn get_user(
        &self,
        domain: &DomainUrl,
        user: &UserRef,
        policy: &[&str],
        deadline: Instant,
    ) -> Result<Answer<serde_json::Value>, Failure> {
        let answer = self
            .transport
            .send(&calls::read_user(domain, user, policy), deadline)
            .await
            .map_err(final_if_too_large)?;
        Ok(Answer {
            value: answer.json_object()?,
            ecids: answer.request_ids,
        })
    }

    /// `PUT /admin/v1/UserCapabilitiesChanger/{id}` with a complete capability body.
    pub async fn put_capabilities(
        &self,
        domain: &DomainUrl,
        user: &UserId,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<Answer<()>, Failure> {
        let call = calls::write_capabilities(domain, user, body);
        let answer = self.transport.send(&call, deadline).await?;
        Ok(Answer {
            value: (),
            ecids: answer.request_ids,
        })
    }

    /// `DELETE /admin/v1/<type>/{id}` (see [`calls::delete_credential`]).
    pub async fn delete_credential(
        &self,
        domain: &DomainUrl,
        kind: CredentialType,
        id: &CredentialId,
        deadline: Instant,
    ) -> Result<Answer<()>, Failure> {
        let call = calls::delete_credential(domain, kind, id);
        let answer = self.transport.send(&call, deadline).await?;
        Ok(Answer {
            value: (),
            ecids: answer.request_ids,
        })
    }

    /// One page of `GET /admin/v1/Users` (see [`calls::list_page`]).
    pub async fn list_users(
        &self,
        domain: &DomainUrl,
        filter: &str,
        start_index: u64,
        count: u64,
        policy: &[&str],
        deadline: Instant,
    ) -> Result<Answer<UserPage>, Failure> {
        let call = calls::list_page(domain, filter, start_index, count, policy);
        let answer = self.transport.send(&call, deadline).await?;
        let page = serde_json::from_slice::<UserPage>(&answer.body).map_err(|e| {
            Failure::failed(
                Error::InvalidResponse(format!("user list: {e}")),
                answer.request_ids.clone(),
            )
        })?;
        Ok(Answer {
            value: page,
            ecids: answer.request_ids,
        })
    }
}

/// One user's answer past its limit (a user in thousands of groups) will not shrink on a retry:
/// the record is final (`rejected`, the reason naming the limit), not retried forever.
fn final_if_too_large(mut failure: Failure) -> Failure {
    if matches!(failure.error, Error::TooLarge { .. }) {
        failure.settled = Settled::Rejected;
    }
    failure
}

/// The SCIM id to write with, once the answer to [`IdentityDomainClient::get_user`] is known to
/// be the user asked for: asked by id, the answer's `id` must equal it; asked by OCID, the
/// answer's `ocid` must equal it and its `id` must be 32 lower-case hex. Anything else means the
/// answer is not trustworthy, and nothing may be written.
pub fn answered_user_id(requested: &UserRef, user: &serde_json::Value) -> Result<UserId, String> {
    let field = |name: &str| user.get(name).and_then(serde_json::Value::as_str);
    let id = field("id");
    match requested {
        UserRef::Id(wanted) => match id {
            Some(id) if id == wanted.as_str() => Ok(wanted.clone()),
            other => Err(format!(
                "the identity domain answered for id {} when asked for {wanted}",
                crate::intake::names::shown(other.unwrap_or("<none>"))
            )),
        },
        UserRef::Ocid(wanted) => match field("ocid") {
            Some(ocid) if ocid == wanted.as_str() => UserId::parse(id.unwrap_or_default())
                .map_err(|e| format!("the user asked for by OCID has an unusable {e}")),
            other => Err(format!(
                "the identity domain answered for OCID {} when asked for {wanted}",
                crate::intake::names::shown(other.unwrap_or("<none>"))
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_exactly_the_attributes_used() {
        let caps = format!(
            "{CAPABILITIES_URN}:canUseApiKeys,{CAPABILITIES_URN}:canUseAuthTokens,\
             {CAPABILITIES_URN}:canUseConsolePassword,{CAPABILITIES_URN}:canUseCustomerSecretKeys,\
             {CAPABILITIES_URN}:canUseDbCredentials,{CAPABILITIES_URN}:canUseOAuth2ClientCredentials,\
             {CAPABILITIES_URN}:canUseSmtpCredentials,{CAPABILITIES_URN}:canUseConsole"
        );
        assert_eq!(user_attributes(&[]), format!("userName,{caps}"));
        assert_eq!(
            user_attributes(&["groups", "urn:x:OCITags:definedTags"]),
            format!("userName,{caps},groups,urn:x:OCITags:definedTags")
        );
        let federated = format!("{USER_EXTENSION_URN}:isFederatedUser");
        let listed = list_attributes(&[&federated, "groups"]);
        assert_eq!(listed.matches("isFederatedUser").count(), 1, "{listed}");
        assert!(listed.ends_with(",groups"), "{listed}");
    }

    #[test]
    fn the_answer_must_be_the_user_asked_for() {
        let id = "8f2e4c6a1b3d5f7091a2b3c4d5e6f708";
        let ocid = "ocid1.user.oc1..aaaaexample";
        let by_id = UserRef::parse(id).unwrap();
        let by_ocid = UserRef::parse(ocid).unwrap();
        let user = serde_json::json!({"id": id, "ocid": ocid, "userName": "x"});
        assert_eq!(answered_user_id(&by_id, &user).unwrap().as_str(), id);
        assert_eq!(answered_user_id(&by_ocid, &user).unwrap().as_str(), id);
        for (asked, answer) in [
            (&by_id, serde_json::json!({"id": "0".repeat(32)})),
            (&by_id, serde_json::json!({"ocid": ocid})),
            (&by_ocid, serde_json::json!({"id": id})),
            (
                &by_ocid,
                serde_json::json!({"id": id, "ocid": "ocid1.user.oc1..other"}),
            ),
            (&by_ocid, serde_json::json!({"id": "../x", "ocid": ocid})),
            (
                &by_ocid,
                serde_json::json!({"id": id.to_uppercase(), "ocid": ocid}),
            ),
            (&by_ocid, serde_json::json!({"ocid": ocid})),
        ] {
            assert!(answered_user_id(asked, &answer).is_err(), "{answer}");
        }
    }

    #[test]
    fn calls_are_data() {
        let domain = DomainUrl::parse(
            "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com",
        )
        .unwrap();
        let user = UserId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let read = calls::read_user(&domain, &UserRef::Id(user.clone()), &[]);
        assert_eq!(
            (read.method.clone(), read.intent),
            (Method::GET, Intent::Read)
        );
        assert!(read
            .url
            .path()
            .ends_with("/admin/v1/Users/0123456789abcdef0123456789abcdef"));
        let write = calls::write_capabilities(&domain, &user, b"{}".to_vec());
        assert_eq!(write.method, Method::PUT);
        assert_eq!(write.body.as_deref(), Some(&b"{}"[..]));
        let key = CredentialId::parse("fedcba9876543210fedcba9876543210").unwrap();
        let delete = calls::delete_credential(&domain, CredentialType::DbCredentials, &key);
        assert_eq!(
            (delete.method.clone(), delete.intent, delete.body.is_none()),
            (Method::DELETE, Intent::Write, true)
        );
        assert_eq!(
            delete.url.path(),
            "/admin/v1/UserDbCredentials/fedcba9876543210fedcba9876543210"
        );
        let page = calls::list_page(&domain, "userName pr", 51, 100, &[]);
        assert_eq!(page.answer_limit, PAGE_ANSWER_LIMIT);
        let query = page.url.query().unwrap();
        assert!(
            query.contains("startIndex=51") && query.contains("count=100"),
            "{query}"
        );
    }
}
