//! The IAM control plane, asked for the URL of an identity domain named by its OCID
//! (`GET /20160918/domains/{ocid}`, `GetDomain`, field `url`) and, for a tenancy-wide reconcile,
//! for a compartment tree (`ListCompartments`) and the identity domains in each compartment
//! (`ListDomains`), page by page (`opc-next-page` answered, `page` asked).
//!
//! The call is signed with the function's own credentials and goes through the shared transport
//! ([`crate::transport`]), so it is paced, retried and classified like every other call. Each OCID is asked
//! once for the life of the process: concurrent askers wait for the first answer (single flight);
//! a failure is not remembered, so a later record can try again.
//!
//! The answer is checked before anything is sent to it: only an identity domain's URL is accepted
//! (`https://idcs-<32 hex>.identity.oraclecloud.com`, or a realm's
//! `https://idcs-<32 hex>.identity.<region>.oci.<realm domain>`), and a loopback `http` URL only
//! when the control plane itself is a loopback test server.
//!
//! ```
//! use oci_user_capabilities::clients::control_plane::{default_url, identity_domain_url};
//!
//! let plane = default_url("eu-frankfurt-1", None).unwrap();
//! assert_eq!(plane.as_str(), "https://identity.eu-frankfurt-1.oci.oraclecloud.com");
//! let url = identity_domain_url(
//!     "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com:443",
//!     &plane,
//! )
//! .unwrap();
//! assert_eq!(url.as_str(), "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com");
//! assert!(identity_domain_url("https://evil.example", &plane).is_err());
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::clients::identity_domain::unauthorized_hint;
use crate::intake::names::{shown, CompartmentOcid, DomainOcid, DomainUrl};
use crate::transport::{Call, Hints, StatusCode, Transport};

/// Items asked per page of a control-plane listing: a page stays far below the answer limit.
const LIST_PAGE_LIMIT: &str = "100";
/// The most pages one listing follows; a server that keeps answering `opc-next-page` stops here.
const MAX_LIST_PAGES: usize = 1000;
/// The longest `opc-next-page` token passed back.
const MAX_PAGE_TOKEN: usize = 4096;
/// What a refused listing needs.
const LIST_HINT: &str = "the tenancy-wide reconcile needs `inspect compartments` and `read domains` for the function's dynamic group (policies/function-reconciles-tenancy.policy, policies/function-reads-domains.policy)";

/// An identity domain as `ListDomains` gives it, checked.
#[derive(Debug, Clone)]
pub struct ListedDomain {
    /// The domain's OCID.
    pub id: DomainOcid,
    /// Its display name ("Default", say).
    pub display_name: String,
    /// `lifecycleState`: only `ACTIVE` domains are reconciled.
    pub lifecycle_state: String,
    /// The compartment it lives in.
    pub compartment_id: String,
    /// Its `url` as listed (checked only when used, through `GetDomain`).
    pub url: String,
}

/// The IAM API version in the control plane's paths.
const API_VERSION: &str = "20160918";
/// The realm domain of the commercial realm (oc1).
const COMMERCIAL_REALM_DOMAIN: &str = "oraclecloud.com";
const DOMAIN_PREFIX: &str = "idcs-";
/// The policy that lets the function read domains.
const READ_DOMAINS: &str =
    "the function may not read it (policy: allow dynamic-group <group> to read domains in tenancy)";

/// Why a domain OCID has no usable URL.
#[derive(Debug)]
pub enum ResolveError {
    /// Retrying cannot help (unknown domain, an answer that is not an identity domain, no
    /// control plane configured): the record is `rejected`.
    Rejected(String),
    /// A retry may succeed (429, 5xx, timeout, network): the record is `failed`.
    Failed {
        /// What went wrong, for the record's `reason`.
        reason: String,
        /// The `X-ORACLE-DMS-ECID` of each answer, for Oracle support.
        ecids: Vec<String>,
    },
}

/// The control-plane endpoint for a region: `https://identity.{region}.oci.{realm domain}`
/// (`oraclecloud.com` unless the platform names another realm's domain).
pub fn default_url(region: &str, realm_domain: Option<&str>) -> Result<DomainUrl, String> {
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label_ok(region) {
        return Err(format!(
            "region {} is not a region identifier such as us-ashburn-1",
            shown(region)
        ));
    }
    let realm_domain = realm_domain.unwrap_or(COMMERCIAL_REALM_DOMAIN);
    if !realm_domain.split('.').all(label_ok) || !realm_domain.contains('.') {
        return Err(format!(
            "realm domain {} is not a domain name such as oraclecloud.com",
            shown(realm_domain)
        ));
    }
    DomainUrl::parse(&format!("https://identity.{region}.oci.{realm_domain}"))
        .map_err(|e| e.to_string())
}

/// The control plane to use: `explicit` (IDENTITY_CONTROL_PLANE_URL) when set, else the region's
/// default. `region_metadata` is the platform's `OCI_REGION_METADATA` JSON, which names the
/// realm's domain (and the full region identifier when `region` is a short code such as `iad`).
/// `Ok(None)`: nothing to derive it from; `Err`: the region is unusable.
pub fn base_url(
    explicit: Option<&DomainUrl>,
    region: Option<&str>,
    region_metadata: Option<&str>,
) -> Result<Option<DomainUrl>, String> {
    if let Some(url) = explicit {
        return Ok(Some(url.clone()));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Metadata {
        realm_domain_component: Option<String>,
        region_identifier: Option<String>,
    }
    let metadata = region_metadata
        .and_then(|m| serde_json::from_str::<Metadata>(m).ok())
        .unwrap_or(Metadata {
            realm_domain_component: None,
            region_identifier: None,
        });
    let region = match (region, metadata.region_identifier.as_deref()) {
        // A short code ("iad") is not part of any endpoint name: prefer the full identifier.
        (Some(r), Some(full)) if !r.contains('-') => full,
        (Some(r), _) => r,
        (None, Some(full)) => full,
        (None, None) => return Ok(None),
    };
    default_url(region, metadata.realm_domain_component.as_deref()).map(Some)
}

/// The realm domain a control-plane host belongs to (`identity.<region>.oci.<realm domain>`).
fn realm_domain_of(control_plane: &DomainUrl) -> Option<&str> {
    let host = control_plane.host();
    let rest = host.strip_prefix("identity.")?;
    let (_, realm_domain) = rest.split_once(".oci.")?;
    Some(realm_domain)
}

/// The control plane's `url` answer, normalised (a trailing `/` and an explicit `:443` dropped)
/// and accepted only if it is an identity domain's URL (see the module documentation).
pub fn identity_domain_url(answer: &str, control_plane: &DomainUrl) -> Result<DomainUrl, String> {
    let refuse = || {
        format!(
            "the control plane gave {}, which is not an identity-domain URL \
             (https://idcs-<32 hex>.identity.oraclecloud.com or a realm's \
             https://idcs-<32 hex>.identity.<region>.oci.<realm domain>); nothing was sent there",
            shown(answer)
        )
    };
    let trimmed = answer.strip_suffix('/').unwrap_or(answer);
    let trimmed = trimmed.strip_suffix(":443").unwrap_or(trimmed);
    let url = DomainUrl::parse(trimmed).map_err(|_| refuse())?;
    if url.is_loopback() {
        // A local test domain, and only when the control plane is a local test server too.
        return if control_plane.is_loopback() {
            Ok(url)
        } else {
            Err(refuse())
        };
    }
    if !url.as_str().starts_with("https://") || url.port().is_some() {
        return Err(refuse());
    }
    let host = url.host();
    let Some((stripe, rest)) = host.split_once('.') else {
        return Err(refuse());
    };
    let stripe_ok = stripe.len() == DOMAIN_PREFIX.len() + 32
        && stripe
            .strip_prefix(DOMAIN_PREFIX)
            .is_some_and(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let commercial = format!("identity.{COMMERCIAL_REALM_DOMAIN}");
    let regional = rest
        .strip_prefix("identity.")
        .and_then(|r| r.split_once(".oci."))
        .is_some_and(|(region, realm_domain)| {
            !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && (realm_domain == COMMERCIAL_REALM_DOMAIN
                    || Some(realm_domain) == realm_domain_of(control_plane))
        });
    if stripe_ok && (rest == commercial || regional) {
        Ok(url)
    } else {
        Err(refuse())
    }
}

/// Resolves domain OCIDs to identity-domain URLs, once per OCID per process.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `Err`: why there is no control plane (no URL configured and no region to derive it from).
    base: Result<DomainUrl, String>,
    transport: Transport,
    resolved: Mutex<HashMap<DomainOcid, Arc<OnceCell<DomainUrl>>>>,
    /// The `displayName` each `GetDomain` answered, so a policy's `domains` matcher knows the
    /// domain's display name on every path that resolved its OCID (issue 24).
    display_names: Mutex<HashMap<DomainOcid, String>>,
}

impl ControlPlane {
    /// `base` is IDENTITY_CONTROL_PLANE_URL or the region's default; `Err` says why neither is
    /// known, and every OCID is then rejected with that reason.
    pub fn new(base: Result<DomainUrl, String>, transport: Transport) -> Self {
        Self {
            inner: Arc::new(Inner {
                base,
                transport,
                resolved: Mutex::new(HashMap::new()),
                display_names: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The identity-domain URL of `ocid`: from the cache, or from one `GetDomain` shared by every
    /// concurrent caller.
    pub async fn domain_url(
        &self,
        ocid: &DomainOcid,
        deadline: Instant,
    ) -> Result<DomainUrl, ResolveError> {
        let base = self.inner.base.as_ref().map_err(|why| {
            ResolveError::Rejected(format!("cannot resolve domain OCID {ocid}: {why}"))
        })?;
        let cell = {
            let mut resolved = self
                .inner
                .resolved
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            Arc::clone(resolved.entry(ocid.clone()).or_default())
        };
        cell.get_or_try_init(|| self.get_domain(base, ocid, deadline))
            .await
            .cloned()
    }

    async fn get_domain(
        &self,
        base: &DomainUrl,
        ocid: &DomainOcid,
        deadline: Instant,
    ) -> Result<DomainUrl, ResolveError> {
        let url = base.endpoint(&[API_VERSION, "domains", ocid.as_str()], &[]);
        let call = Call::get(url)
            .with_service("the identity control plane")
            .with_hints(Hints {
                forbidden: Some(READ_DOMAINS),
                unauthorized: Some(unauthorized_hint),
            });
        let failed = |failure: crate::transport::Failure| {
            let reason = format!("resolving domain {ocid} (GetDomain): {failure}");
            match failure.error.status() {
                // IAM answers 404 both for an unknown domain and for one the caller may not
                // read: name the policy that makes it readable.
                Some(StatusCode::NOT_FOUND) => ResolveError::Rejected(format!(
                    "{reason}; the domain does not exist or {READ_DOMAINS}"
                )),
                _ if failure.is_rejected() => ResolveError::Rejected(reason),
                _ => ResolveError::Failed {
                    reason,
                    ecids: failure.request_ids,
                },
            }
        };
        let answer = self
            .inner
            .transport
            .send(&call, deadline)
            .await
            .map_err(failed)?;
        let value = answer.json_object().map_err(failed)?;
        let Some(url) = value.get("url").and_then(serde_json::Value::as_str) else {
            // A 200 that is not the answer asked for: most often a proxy or a hiccup.
            return Err(ResolveError::Failed {
                reason: format!("resolving domain {ocid} (GetDomain): the answer has no url"),
                ecids: answer.request_ids,
            });
        };
        let url = identity_domain_url(url, base)
            .map_err(|why| ResolveError::Rejected(format!("domain {ocid}: {why}")))?;
        let display_name = value.get("displayName").and_then(serde_json::Value::as_str);
        if let Some(name) = display_name.filter(|d| !d.is_empty() && d.len() <= 256) {
            self.inner
                .display_names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ocid.clone(), name.to_owned());
        }
        let shown_name = display_name.unwrap_or_default();
        tracing::info!(domain = %ocid, url = %url, display_name = shown_name, "resolved the domain through the control plane");
        Ok(url)
    }

    /// The display name `GetDomain` gave for `ocid`, once it has been resolved.
    pub fn display_name(&self, ocid: &DomainOcid) -> Option<String> {
        self.inner
            .display_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ocid)
            .cloned()
    }
}

impl ControlPlane {
    /// `root` and every ACTIVE compartment under it that the caller may see. From the tenancy, one
    /// `ListCompartments` with `compartmentIdInSubtree=true` returns the whole tree; IAM honours
    /// that flag only on the tenancy, so below it the tree is walked a level at a time.
    pub async fn compartment_tree(
        &self,
        root: &CompartmentOcid,
        deadline: Instant,
    ) -> Result<Vec<CompartmentOcid>, String> {
        let whole_tree = root.as_str().starts_with("ocid1.tenancy.");
        let mut tree = vec![root.clone()];
        let mut parents = vec![root.clone()];
        while let Some(parent) = parents.pop() {
            let subtree = if whole_tree { "true" } else { "false" };
            let items = self
                .list_all(
                    "compartments",
                    &[
                        ("compartmentId", parent.as_str()),
                        ("compartmentIdInSubtree", subtree),
                        ("accessLevel", "ACCESSIBLE"),
                    ],
                    deadline,
                )
                .await?;
            for id in active_ids(&items)? {
                if !tree.contains(&id) {
                    tree.push(id.clone());
                    if !whole_tree {
                        parents.push(id);
                    }
                }
            }
        }
        Ok(tree)
    }

    /// The identity domains of one compartment (`ListDomains`), whatever their state.
    pub async fn domains_in(
        &self,
        compartment: &CompartmentOcid,
        deadline: Instant,
    ) -> Result<Vec<ListedDomain>, String> {
        let items = self
            .list_all(
                "domains",
                &[("compartmentId", compartment.as_str())],
                deadline,
            )
            .await?;
        items
            .iter()
            .map(|item| {
                let text = |key: &str| {
                    item.get(key)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                let id = DomainOcid::parse(&text("id"))
                    .map_err(|e| format!("ListDomains answered an unusable id: {e}"))?;
                Ok(ListedDomain {
                    id,
                    display_name: text("displayName"),
                    lifecycle_state: text("lifecycleState"),
                    compartment_id: compartment.as_str().to_owned(),
                    url: text("url"),
                })
            })
            .collect()
    }

    /// Every item of a control-plane list, following `opc-next-page` until it is absent.
    async fn list_all(
        &self,
        resource: &str,
        query: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Vec<serde_json::Value>, String> {
        let base = self.inner.base.as_ref().map_err(Clone::clone)?;
        let mut items = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut pairs: Vec<(&str, &str)> = query.to_vec();
            pairs.push(("limit", LIST_PAGE_LIMIT));
            if let Some(token) = &page {
                pairs.push(("page", token));
            }
            let call = Call::get(base.endpoint(&[API_VERSION, resource], &pairs))
                .with_service("the identity control plane")
                .with_hints(Hints {
                    forbidden: Some(LIST_HINT),
                    unauthorized: Some(unauthorized_hint),
                });
            let answer = self
                .inner
                .transport
                .send(&call, deadline)
                .await
                .map_err(|f| format!("listing {resource}: {f}"))?;
            match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                Ok(serde_json::Value::Array(list)) => items.extend(list),
                _ => {
                    return Err(format!(
                        "listing {resource}: the answer is not a JSON array"
                    ))
                }
            }
            match answer.header("opc-next-page").map(str::to_owned) {
                Some(next) if next.len() <= MAX_PAGE_TOKEN && Some(&next) != page.as_ref() => {
                    page = Some(next)
                }
                Some(_) => {
                    return Err(format!(
                        "listing {resource}: the server repeated or overlong opc-next-page"
                    ))
                }
                None => return Ok(items),
            }
        }
        Err(format!(
            "listing {resource}: more than {MAX_LIST_PAGES} pages; stopped"
        ))
    }
}

/// The ACTIVE compartments of a `ListCompartments` answer, their ids checked.
fn active_ids(items: &[serde_json::Value]) -> Result<Vec<CompartmentOcid>, String> {
    items
        .iter()
        .filter(|item| item.get("lifecycleState").and_then(|v| v.as_str()) == Some("ACTIVE"))
        .map(|item| {
            let id = item.get("id").and_then(|v| v.as_str()).unwrap_or_default();
            CompartmentOcid::parse(id)
                .map_err(|e| format!("ListCompartments answered an unusable id: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    fn plane(s: &str) -> DomainUrl {
        DomainUrl::parse(s).unwrap()
    }

    #[test]
    fn default_url_from_region_and_realm() {
        assert_eq!(
            default_url("us-ashburn-1", None).unwrap().as_str(),
            "https://identity.us-ashburn-1.oci.oraclecloud.com"
        );
        assert_eq!(
            default_url("us-langley-1", Some("oraclegovcloud.com"))
                .unwrap()
                .as_str(),
            "https://identity.us-langley-1.oci.oraclegovcloud.com"
        );
        for bad in ["", "US-ASHBURN-1", "a/b", "evil.example#", "x y", "a.b"] {
            assert!(default_url(bad, None).is_err(), "{bad:?}");
        }
        assert!(default_url("us-ashburn-1", Some("evil/x")).is_err());
        assert!(default_url("us-ashburn-1", Some("com")).is_err());
    }

    #[test]
    fn base_url_prefers_the_explicit_url_then_the_region() {
        let explicit = plane("http://127.0.0.1:9000");
        assert_eq!(
            base_url(Some(&explicit), Some("us-ashburn-1"), None).unwrap(),
            Some(explicit)
        );
        assert_eq!(
            base_url(None, Some("us-phoenix-1"), None)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://identity.us-phoenix-1.oci.oraclecloud.com"
        );
        let metadata = r#"{"realmKey":"oc1","realmDomainComponent":"oraclecloud.com","regionKey":"PHX","regionIdentifier":"us-phoenix-1"}"#;
        assert_eq!(
            base_url(None, Some("phx"), Some(metadata))
                .unwrap()
                .unwrap()
                .as_str(),
            "https://identity.us-phoenix-1.oci.oraclecloud.com"
        );
        assert_eq!(base_url(None, None, None).unwrap(), None);
        assert!(base_url(None, Some("Not A Region"), None).is_err());
    }

    #[test]
    fn answers_are_normalised_and_checked() {
        let oc1 = plane("https://identity.us-ashburn-1.oci.oraclecloud.com");
        let ok = format!("https://idcs-{HEX}.identity.oraclecloud.com");
        for answer in [
            ok.clone(),
            format!("{ok}:443"),
            format!("{ok}/"),
            format!("{ok}:443/"),
        ] {
            assert_eq!(identity_domain_url(&answer, &oc1).unwrap().as_str(), ok);
        }
        // Host names are case-insensitive; the URL parser lower-cases them.
        let upper = format!(
            "https://IDCS-{}.identity.oraclecloud.com",
            HEX.to_uppercase()
        );
        assert_eq!(identity_domain_url(&upper, &oc1).unwrap().as_str(), ok);
        let regional = format!("https://idcs-{HEX}.identity.us-ashburn-1.oci.oraclecloud.com");
        assert_eq!(
            identity_domain_url(&regional, &oc1).unwrap().as_str(),
            regional
        );
        // Another realm's form only when the control plane is in that realm.
        let gov = format!("https://idcs-{HEX}.identity.us-langley-1.oci.oraclegovcloud.com");
        assert!(identity_domain_url(&gov, &oc1).is_err());
        let gov_plane = plane("https://identity.us-langley-1.oci.oraclegovcloud.com");
        assert!(identity_domain_url(&gov, &gov_plane).is_ok());

        for bad in [
            "https://evil.example".to_owned(),
            format!("http://idcs-{HEX}.identity.oraclecloud.com"),
            format!("https://idcs-{HEX}.identity.oraclecloud.com:8443"),
            format!("https://idcs-{HEX}.identity.oraclecloud.com.evil.example"),
            format!("https://idcs-{HEX}.identity.oraclecloud.com/admin"),
            format!("https://idcs-{HEX}.identity.evil.oci.example.com"),
            format!("https://x.idcs-{HEX}.identity.oraclecloud.com"),
            format!("https://user@idcs-{HEX}.identity.oraclecloud.com"),
            "https://idcs-0123.identity.oraclecloud.com".to_owned(),
            "http://127.0.0.1:8080".to_owned(),
            "http://0.0.0.0:8080".to_owned(),
            "".to_owned(),
            "not a url".to_owned(),
        ] {
            let e = identity_domain_url(&bad, &oc1).unwrap_err();
            assert!(e.contains("not an identity-domain URL"), "{bad}: {e}");
        }
        // Loopback answers only from a loopback control plane (tests).
        let local = plane("http://127.0.0.1:9000");
        assert!(identity_domain_url("http://127.0.0.1:8080/", &local).is_ok());
        assert!(identity_domain_url("http://0.0.0.0:8080", &local).is_err());
        assert!(identity_domain_url(&ok, &local).is_ok());
    }
}
