//! A local identity domain for tests and benchmarks: axum on 127.0.0.1:0, in memory.
//!
//! Every request must carry a valid OCI HTTP signature (rsa-sha256) made with the test key and one
//! of the accepted key ids; the server rebuilds the signing string from what actually arrived on the
//! wire (method, raw path and query, `host`, `date`, and for writes `content-length`,
//! `content-type`, `x-content-sha256` checked against the body), so a client that signs one thing
//! and sends another is caught. A bad signature answers 401 like the real service.
//!
//! It serves the calls the product makes: `GET /admin/v1/Users/{id or OCID}`, `GET /admin/v1/Users`
//! (filter, sort by creation, `startIndex`/`count` paging),
//! `PUT /admin/v1/UserCapabilitiesChanger/{id}` (by SCIM id only), `DELETE` of a user's credentials
//! (`/admin/v1/ApiKeys/{id}` and the five other types; the users' credentials are listed in the
//! `userCredentials` extension only when a read names it), and `POST /admin/v1/Users/.search` and
//! `POST /admin/v1/Bulk` with Oracle's limits (see the end of the file), with injectable latency and
//! faults, and records every request so tests can count calls, check concurrency and measure
//! request rates. It can also play the IAM control plane: `GET /20160918/domains/{ocid}`
//! (`GetDomain`) answers the `url` registered with [`IdentityDomainServer::add_domain`], signed
//! and checked like every other call.
//!
//! Self-contained on purpose (only crates the product already depends on), so the benchmark can
//! include the same file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::loopback::LoopbackServer;

pub const CAPABILITIES_URN: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:capabilities:User";
pub const USER_EXTENSION_URN: &str = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User";
pub const CHANGER_SCHEMA: &str = "urn:ietf:params:scim:schemas:oracle:idcs:UserCapabilitiesChanger";
pub const TAGS_URN: &str = "urn:ietf:params:scim:schemas:oracle:idcs:extension:OCITags";
pub const CREDENTIALS_URN: &str =
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:userCredentials:User";

/// The `userCredentials` attributes and the `/admin/v1/` resource each one's credentials live under.
pub const CREDENTIAL_TYPES: [(&str, &str); 6] = [
    ("apiKeys", "ApiKeys"),
    ("authTokens", "AuthTokens"),
    ("customerSecretKeys", "CustomerSecretKeys"),
    ("smtpCredentials", "SmtpCredentials"),
    ("oAuth2ClientCredentials", "OAuth2ClientCredentials"),
    ("dbCredentials", "UserDbCredentials"),
];

/// What every API key the server lists carries as its (public) key: tests check it never reaches
/// the function's answer or log.
pub const API_KEY_MATERIAL: &str = "-----BEGIN PUBLIC KEY-----MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtestkeymaterial-----END PUBLIC KEY-----";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The eight capability attributes, in the order tests index `[Option<bool>; 8]` arrays.
pub const ATTRIBUTES: [&str; 8] = [
    "canUseApiKeys",
    "canUseAuthTokens",
    "canUseConsolePassword",
    "canUseCustomerSecretKeys",
    "canUseDbCredentials",
    "canUseOAuth2ClientCredentials",
    "canUseSmtpCredentials",
    "canUseConsole",
];

/// How far a signed `date` may be from the server's clock (the service allows 5 minutes).
const CLOCK_SKEW: Duration = Duration::from_secs(300);
const GET_HEADERS: &str = "date (request-target) host";
const WRITE_HEADERS: &str =
    "date (request-target) host content-length content-type x-content-sha256";

/// The signing vectors and their throwaway key, kept in the signer crate's tests.
pub fn vectors_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/oci-signer/tests/vectors"
    ))
}

/// The throwaway test key's public half (PEM, SubjectPublicKeyInfo).
pub fn test_key_pem() -> String {
    std::fs::read_to_string(vectors_dir().join("rp_session_key_public.pem"))
        .expect("test public key")
}

/// The throwaway resource-principal session token the function is started with.
pub fn test_rpst() -> String {
    std::fs::read_to_string(vectors_dir().join("rpst.jwt"))
        .expect("test token")
        .trim()
        .to_string()
}

/// The throwaway private key (PKCS#1 PEM) the test token is bound to: what the function signs with.
pub fn test_private_key_pem() -> String {
    std::fs::read_to_string(vectors_dir().join("rp_session_key_pkcs1.pem"))
        .expect("test private key")
}

/// A 32-hex-digit user id, distinct for every `n`.
pub fn hex_id(n: u64) -> String {
    format!(
        "{:016x}{:016x}",
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995,
        n
    )
}

/// What a matching request gets instead of its normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with a SCIM error body.
    Status(u16),
    /// 429, with `Retry-After` when given.
    TooManyRequests { retry_after: Option<String> },
    /// 401 with a SCIM error body, as for a principal without the needed role.
    Unauthorized,
    /// 200 with an HTML body.
    NonJson,
    /// The connection is dropped after the status line: the client sees a transport error.
    Reset,
    /// Wait this long, then answer normally.
    Stall(Duration),
    /// This 3xx status with a `Location` header.
    Redirect { status: u16, location: String },
    /// This status with a body of `bytes` bytes of JSON-looking filler, sent in 64 KiB chunks;
    /// `declared` sends a `Content-Length`, otherwise the body is chunked.
    Huge {
        status: u16,
        bytes: u64,
        declared: bool,
    },
    /// 200 with a chunked body that never ends (64 KiB chunks as fast as the client reads).
    Endless,
    /// 200 with exactly this JSON (a wrong user, a partial user, an odd list page).
    Answer(Value),
    /// This status with a SCIM error whose `detail` is this text.
    Error { status: u16, detail: String },
}

struct FaultRule {
    method: String,
    path_contains: String,
    fault: Fault,
    remaining: Option<usize>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as they arrived.
    pub target: String,
    pub key_id: Option<String>,
    /// The `authorization` header as sent (tests check it never shows up in a log).
    pub authorization: Option<String>,
    pub auth_ok: bool,
    /// Why the signature was refused, when it was.
    pub auth_error: Option<String>,
    /// The status answered; `None` when the connection was reset instead.
    pub status: Option<u16>,
    pub arrived: Instant,
    /// The wall-clock time it arrived, to compare with its signed `date`.
    pub arrived_at: SystemTime,
    /// The `date` header as sent (signed).
    pub date: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct User {
    id: String,
    /// The user's OCID: `GET /admin/v1/Users/{ocid}` finds the user by it.
    ocid: Option<String>,
    user_name: String,
    caps: [Option<bool>; 8],
    creation_mechanism: String,
    federated: bool,
    service_user: bool,
    /// `groups` entries as the service gives them (returned only when asked for).
    groups: Vec<Value>,
    /// OCITags `definedTags` entries (returned only when asked for).
    defined_tags: Vec<Value>,
    /// `(userCredentials attribute, credential id)`, in the order added (returned only when asked for).
    credentials: Vec<(String, String)>,
    created: u64,
    /// `domainOcid` as answered when asked for (see "Users' domainOcid"); `None` leaves it out.
    domain_ocid: Option<Value>,
    /// `meta.created` in milliseconds after 2026-11-01T00:00:00Z: `created / tick`, so with a
    /// tick above 1 several users share an instant (as a bulk import makes them).
    instant: u64,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, User>,
    /// Domain OCID → the `url` GetDomain answers.
    domains: HashMap<String, String>,
    next_created: u64,
    accepted_key_ids: Vec<String>,
    faults: Vec<FaultRule>,
    latency: Duration,
    requests: Vec<RecordedRequest>,
    list_pages_served: usize,
    /// The most users a list page holds, whatever `count` asks (a server's own page limit).
    max_page: Option<usize>,
    /// Users that appear once this many list pages have been served.
    pending: Vec<(usize, User)>,
    rate_limit: Option<TokenBucket>,
    /// `.search` and `/Bulk` (see the section at the end of this file).
    scim: ScimState,
    /// Users created per `meta.created` millisecond (see [`IdentityDomainServer::set_created_tick`]).
    created_tick: u64,
    /// The IAM control plane's compartments and listed domains (see "Control plane listings").
    plane: ControlPlaneListings,
    /// Users removed once this many list pages have been served (deleted "during" a scan).
    removals: Vec<(usize, String)>,
    /// List pages answer from the first user whatever `startIndex` asks (a broken server).
    ignore_start_index: bool,
    /// A user whose listing with `groups` is always over the page limit.
    oversized_user: Option<String>,
    /// The domain's own OCID, answered as every new user's `domainOcid`.
    domain_ocid: Option<String>,
}

/// The service's request-rate limit, scaled down: `per_second` tokens a second, at most `burst` saved
/// up; a request that finds no token is answered 429 (without `Retry-After`, as the client must cope
/// without one).
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct State {
    key: PublicKey,
    inner: Mutex<Inner>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running server; it stops when dropped.
pub struct IdentityDomainServer {
    state: Arc<State>,
    server: LoopbackServer,
}

impl IdentityDomainServer {
    /// Starts on an ephemeral loopback port, verifying signatures against `public_key_pem` and
    /// accepting only the given key ids.
    pub async fn start(public_key_pem: &str, accepted_key_ids: Vec<String>) -> Self {
        let public = public_key_from_pem(public_key_pem);
        let state = Arc::new(State {
            key: public,
            inner: Mutex::new(Inner {
                accepted_key_ids,
                ..Inner::default()
            }),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let server = LoopbackServer::start({
            let state = state.clone();
            move |_| move |request: Request<Body>| handle(state.clone(), request)
        })
        .await;
        IdentityDomainServer { state, server }
    }

    /// `http://127.0.0.1:port`, the identity-domain URL to configure.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn add_user(
        &self,
        id: &str,
        user_name: &str,
        caps: [Option<bool>; 8],
        creation_mechanism: &str,
        federated: bool,
    ) {
        let mut inner = self.state.lock();
        let user = new_user(
            &mut inner,
            id,
            user_name,
            caps,
            creation_mechanism,
            federated,
        );
        inner.users.insert(id.to_string(), user);
    }

    /// A user that appears only after `pages` list pages have been served (created "during" a scan).
    pub fn add_user_after_list_pages(
        &self,
        pages: usize,
        id: &str,
        user_name: &str,
        caps: [Option<bool>; 8],
        creation_mechanism: &str,
    ) {
        let mut inner = self.state.lock();
        let user = new_user(&mut inner, id, user_name, caps, creation_mechanism, true);
        inner.pending.push((pages, user));
    }

    /// Adds a group membership to the user: `(display name, group id, direct or indirect)`; the
    /// group's OCID is `ocid1.group.oc1..<id>`.
    pub fn add_group(&self, user_id: &str, display: &str, group_id: &str, indirect: bool) {
        if let Some(user) = self.state.lock().users.get_mut(user_id) {
            user.groups.push(json!({
                "value": group_id,
                "display": display,
                "ocid": format!("ocid1.group.oc1..{group_id}"),
                "type": if indirect { "indirect" } else { "direct" },
                "$ref": format!("/admin/v1/Groups/{group_id}"),
            }));
        }
    }

    /// Adds a defined tag `namespace.key = value` to the user.
    pub fn add_defined_tag(&self, user_id: &str, namespace: &str, key: &str, value: &str) {
        if let Some(user) = self.state.lock().users.get_mut(user_id) {
            user.defined_tags
                .push(json!({"namespace": namespace, "key": key, "value": value}));
        }
    }

    /// Gives the user a credential: `kind` is a `userCredentials` attribute (`apiKeys`, …), `id` the
    /// credential's id (any text, so tests can list ids the function must refuse).
    pub fn add_credential(&self, user_id: &str, kind: &str, id: &str) {
        assert!(
            CREDENTIAL_TYPES.iter().any(|(k, _)| *k == kind),
            "unknown credential type {kind}"
        );
        if let Some(user) = self.state.lock().users.get_mut(user_id) {
            user.credentials.push((kind.to_string(), id.to_string()));
        }
    }

    /// The user's credentials as `(attribute, id)`, in the order added.
    pub fn credentials(&self, user_id: &str) -> Vec<(String, String)> {
        self.state
            .lock()
            .users
            .get(user_id)
            .map(|u| u.credentials.clone())
            .unwrap_or_default()
    }

    /// Marks the user as a service user (the user extension's `serviceUser`).
    pub fn set_service_user(&self, user_id: &str, service_user: bool) {
        if let Some(user) = self.state.lock().users.get_mut(user_id) {
            user.service_user = service_user;
        }
    }

    /// Gives an existing user an OCID, so it can be read as `/admin/v1/Users/{ocid}`.
    pub fn set_user_ocid(&self, id: &str, ocid: &str) {
        if let Some(user) = self.state.lock().users.get_mut(id) {
            user.ocid = Some(ocid.to_string());
        }
    }

    /// Makes `GET /20160918/domains/{ocid}` answer with this `url` (verbatim, so tests choose the
    /// form: with `:443`, a trailing `/`, or something that is not an identity domain at all).
    pub fn add_domain(&self, ocid: &str, url: &str) {
        self.state
            .lock()
            .domains
            .insert(ocid.to_string(), url.to_string());
    }

    pub fn remove_user(&self, id: &str) {
        self.state.lock().users.remove(id);
    }

    pub fn user_caps(&self, id: &str) -> Option<[Option<bool>; 8]> {
        self.state.lock().users.get(id).map(|u| u.caps)
    }

    pub fn user_count(&self) -> usize {
        self.state.lock().users.len()
    }

    /// Applies `fault` to requests with this method whose path and query contain `path_contains`,
    /// `times` times (forever when `None`). Rules are tried in the order they were added.
    pub fn add_fault(&self, method: &str, path_contains: &str, fault: Fault, times: Option<usize>) {
        self.state.lock().faults.push(FaultRule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            fault,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Limits signed requests to `per_second` on average with bursts of up to `burst` (a full bucket
    /// to start); the rest get 429. `None` lifts the limit.
    pub fn set_rate_limit(&self, limit: Option<(f64, u32)>) {
        self.state.lock().rate_limit = limit.map(|(per_second, burst)| TokenBucket {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: Instant::now(),
        });
    }

    /// Lists at most `n` users per page, like a server whose page limit is below what is asked.
    pub fn set_max_page(&self, n: usize) {
        self.state.lock().max_page = Some(n);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    pub fn set_accepted_key_ids(&self, ids: Vec<String>) {
        self.state.lock().accepted_key_ids = ids;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().requests.clear();
        self.state.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// Requests with this method whose path and query contain `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.state
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.target.contains(path_contains))
            .count()
    }

    /// The most requests that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// The most request arrivals seen in any window of this length.
    pub fn max_requests_in_window(&self, window: Duration) -> usize {
        let mut times: Vec<Instant> = self
            .state
            .lock()
            .requests
            .iter()
            .map(|r| r.arrived)
            .collect();
        times.sort();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

// ---- Control plane listings (tenancy-wide reconcile, issue 21) ----------------------------------

/// The compartment tree and the identity domains `ListCompartments` and `ListDomains` answer with,
/// a few items a page (`opc-next-page`) so every caller must follow the pages.
#[derive(Default)]
struct ControlPlaneListings {
    /// (parent, id, lifecycleState)
    compartments: Vec<(String, String, String)>,
    /// (compartment, domain summary)
    domains: Vec<(String, Value)>,
    /// Items per page; 2 unless set.
    page_size: Option<usize>,
}

impl IdentityDomainServer {
    /// A compartment under `parent` (the tenancy or another compartment).
    pub fn add_compartment(&self, parent: &str, id: &str, lifecycle_state: &str) {
        self.state.lock().plane.compartments.push((
            parent.to_string(),
            id.to_string(),
            lifecycle_state.to_string(),
        ));
    }

    /// An identity domain `ListDomains` lists in `compartment`; `GetDomain` answers its `url` too.
    pub fn add_listed_domain(
        &self,
        compartment: &str,
        ocid: &str,
        display_name: &str,
        url: &str,
        lifecycle_state: &str,
    ) {
        let mut inner = self.state.lock();
        inner.domains.insert(ocid.to_string(), url.to_string());
        inner.plane.domains.push((
            compartment.to_string(),
            json!({
                "id": ocid, "compartmentId": compartment, "displayName": display_name,
                "url": url, "homeRegionUrl": url, "lifecycleState": lifecycle_state,
                "type": "DEFAULT", "licenseType": "free",
            }),
        ));
    }

    /// Items per page of the control-plane listings.
    pub fn set_listing_page_size(&self, n: usize) {
        self.state.lock().plane.page_size = Some(n.max(1));
    }
}

/// One page of `items` as OCI lists answer: a JSON array, `opc-next-page` while more remain.
fn listing_page(items: Vec<Value>, query: &HashMap<String, String>, size: usize) -> Response<Body> {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(size)
        .min(size);
    let start = match query.get("page") {
        None => 0,
        Some(p) => match p
            .strip_prefix("after-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"code": "InvalidParameter", "message": "bad page"}),
                )
            }
        },
    };
    let end = (start + limit).min(items.len());
    let page: Vec<Value> = items
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut response = json_response(StatusCode::OK, &Value::Array(page));
    if end < items.len() {
        response.headers_mut().insert(
            "opc-next-page",
            format!("after-{end}").parse().expect("header"),
        );
    }
    response
}

fn list_compartments(state: &State, query: &HashMap<String, String>) -> Response<Body> {
    let inner = state.lock();
    let Some(root) = query.get("compartmentId") else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": "MissingParameter"}),
        );
    };
    let subtree = query
        .get("compartmentIdInSubtree")
        .is_some_and(|v| v == "true");
    // Descendants of `root`, breadth first.
    let mut parents = vec![root.clone()];
    let mut found = Vec::new();
    while let Some(parent) = parents.pop() {
        for (p, id, lifecycle) in &inner.plane.compartments {
            if *p == parent {
                found.push(
                    json!({"id": id, "compartmentId": p, "lifecycleState": lifecycle, "name": id}),
                );
                if subtree {
                    parents.push(id.clone());
                }
            }
        }
    }
    listing_page(found, query, inner.plane.page_size.unwrap_or(2))
}

fn list_domains(state: &State, query: &HashMap<String, String>) -> Response<Body> {
    let inner = state.lock();
    let Some(compartment) = query.get("compartmentId") else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": "MissingParameter"}),
        );
    };
    let found = inner
        .plane
        .domains
        .iter()
        .filter(|(c, _)| c == compartment)
        .map(|(_, d)| d.clone())
        .collect();
    listing_page(found, query, inner.plane.page_size.unwrap_or(2))
}

/// True when a page asked with `groups` holds the oversized user.
fn oversized_on_page<'a>(
    inner: &Inner,
    mut ids: impl Iterator<Item = &'a str>,
    attributes: &str,
) -> bool {
    let with_groups = attributes.split(',').any(|a| a.trim() == "groups");
    with_groups
        && inner
            .oversized_user
            .as_deref()
            .is_some_and(|big| ids.any(|id| id == big))
}

/// A 200 declaring 40 MB: past any page limit, refused before a byte is read.
fn oversized_answer() -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "40000000")
        .body(filler_body(Some(40_000_000)))
        .expect("response")
}

impl IdentityDomainServer {
    /// The user's listing with `groups` is always over 32 MiB (a user in a great many groups),
    /// alone or with others.
    pub fn set_oversized_user(&self, id: &str) {
        self.state.lock().oversized_user = Some(id.to_string());
    }

    /// Removes the user once `pages` list pages have been served (deleted during a scan).
    pub fn remove_user_after_list_pages(&self, pages: usize, id: &str) {
        self.state.lock().removals.push((pages, id.to_string()));
    }

    /// List pages start at the first user whatever `startIndex` asks, and say so.
    pub fn set_ignore_start_index(&self, ignore: bool) {
        self.state.lock().ignore_start_index = ignore;
    }

    /// Users created from now on share `meta.created` instants, `tick` users to a millisecond (as a
    /// bulk import makes them); 1 (the default) gives each its own.
    pub fn set_created_tick(&self, tick: u64) {
        self.state.lock().created_tick = tick.max(1);
    }
}

fn new_user(
    inner: &mut Inner,
    id: &str,
    user_name: &str,
    caps: [Option<bool>; 8],
    creation_mechanism: &str,
    federated: bool,
) -> User {
    inner.next_created += 1;
    let tick = inner.created_tick.max(1);
    User {
        instant: inner.next_created / tick,
        id: id.to_string(),
        ocid: None,
        user_name: user_name.to_string(),
        caps,
        creation_mechanism: creation_mechanism.to_string(),
        federated,
        service_user: false,
        groups: Vec::new(),
        defined_tags: Vec::new(),
        credentials: Vec::new(),
        created: inner.next_created,
        domain_ocid: inner.domain_ocid.clone().map(Value::from),
    }
}

struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(state: Arc<State>, request: Request<Body>) -> Response<Body> {
    let arrived = Instant::now();
    let bulk_job = BulkJob::enter(&state, request.method(), request.uri().path());
    let arrived_at = SystemTime::now();
    let _in_flight = InFlight::enter(&state);
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = axum::body::to_bytes(body, 8 * 1024 * 1024)
        .await
        .unwrap_or_default();

    let (verdict, latency, fault) = {
        let mut inner = state.lock();
        let verdict = verify(
            &parts.method,
            &target,
            &parts.headers,
            &body,
            &state.key,
            &inner.accepted_key_ids,
            SystemTime::now(),
        );
        let bucket = if is_bulk(&parts.method, &target) {
            inner.scim.bulk_rate_limit.as_mut()
        } else {
            inner.rate_limit.as_mut()
        };
        let throttled = verdict.is_ok() && bucket.is_some_and(|bucket| !bucket.take(arrived));
        let fault = if throttled {
            Some(Fault::TooManyRequests { retry_after: None })
        } else if verdict.is_ok() && bulk_job.as_ref().is_some_and(|j| j.busy) {
            // One Bulk job per domain at a time.
            Some(Fault::TooManyRequests { retry_after: None })
        } else if verdict.is_ok() {
            take_fault(&mut inner, parts.method.as_str(), &target)
        } else {
            None
        };
        (verdict, inner.latency, fault)
    };
    let key_id = verdict
        .as_ref()
        .ok()
        .cloned()
        .or_else(|| authorization_param(&parts.headers, "keyId"));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(Fault::Stall(d)) = &fault {
        tokio::time::sleep(*d).await;
    }

    let reset = matches!(fault, Some(Fault::Reset));
    let response = match (&verdict, fault) {
        (Err(reason), _) => scim_error(
            StatusCode::UNAUTHORIZED,
            &format!("Authorization failed: {reason}"),
        ),
        (Ok(_), Some(Fault::Status(code))) => scim_error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected failure",
        ),
        (Ok(_), Some(Fault::TooManyRequests { retry_after })) => {
            let mut r = scim_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            if let Some(v) = retry_after {
                r.headers_mut()
                    .insert("retry-after", v.parse().expect("retry-after value"));
            }
            r
        }
        (Ok(_), Some(Fault::Unauthorized)) => {
            scim_error(StatusCode::UNAUTHORIZED, "Not authorized")
        }
        (Ok(_), Some(Fault::NonJson)) => Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .body(Body::from("<html><body>Service Unavailable</body></html>"))
            .expect("response"),
        (Ok(_), Some(Fault::Reset)) => {
            // Promise a body, then fail the stream: hyper drops the connection mid-response.
            let stream = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                ))
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("content-length", "100")
                .body(Body::from_stream(stream))
                .expect("response")
        }
        (Ok(_), Some(Fault::Redirect { status, location })) => Response::builder()
            .status(status)
            .header("location", location)
            .body(Body::empty())
            .expect("response"),
        (
            Ok(_),
            Some(Fault::Huge {
                status,
                bytes,
                declared,
            }),
        ) => {
            let mut builder = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if declared {
                builder = builder.header("content-length", bytes.to_string());
            }
            builder.body(filler_body(Some(bytes))).expect("response")
        }
        (Ok(_), Some(Fault::Endless)) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(filler_body(None))
            .expect("response"),
        (Ok(_), Some(Fault::Answer(value))) => json_response(StatusCode::OK, &value),
        (Ok(_), Some(Fault::Error { status, detail })) => scim_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &detail,
        ),
        (Ok(_), None | Some(Fault::Stall(_))) => {
            route(&state, &parts.method, &target, &parts.headers, &body)
        }
    };
    let status = (!reset).then(|| response.status().as_u16());
    let mut response = response;
    let ecid = format!("ecid-{}", arrived.elapsed().as_nanos());
    response
        .headers_mut()
        .insert("x-oracle-dms-ecid", ecid.parse().expect("ecid"));
    state.lock().requests.push(RecordedRequest {
        method: parts.method.to_string(),
        target,
        key_id,
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        auth_ok: verdict.is_ok(),
        auth_error: verdict.err(),
        status,
        arrived,
        arrived_at,
        date: parts
            .headers
            .get("date")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.to_vec(),
    });
    response
}

/// `{"filler":"xxxx…` in 64 KiB chunks, `total` bytes in all or without end.
fn filler_body(total: Option<u64>) -> Body {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from_static(b"{\"filler\":\"");
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let head = head.clone();
        let chunk = chunk.clone();
        async move {
            let next = if sent == 0 {
                head
            } else {
                match total {
                    Some(total) if sent >= total => return None,
                    Some(total) => chunk.slice(..(total - sent).min(CHUNK as u64) as usize),
                    None => chunk,
                }
            };
            let sent = sent + next.len() as u64;
            Some((Ok::<Bytes, std::io::Error>(next), sent))
        }
    });
    Body::from_stream(stream)
}

fn take_fault(inner: &mut Inner, method: &str, target: &str) -> Option<Fault> {
    let rule = inner.faults.iter_mut().find(|r| {
        r.method == method && target.contains(&r.path_contains) && r.remaining.is_none_or(|n| n > 0)
    })?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| format!("missing header {name}"))?;
    if values.next().is_some() {
        return Err(format!("header {name} sent twice"));
    }
    value
        .to_str()
        .map_err(|_| format!("header {name} is not visible ASCII"))
}

fn authorization_params(headers: &HeaderMap) -> Result<HashMap<String, String>, String> {
    let value = header(headers, "authorization")?;
    let rest = value
        .strip_prefix("Signature ")
        .ok_or("authorization is not a Signature")?;
    let mut params = HashMap::new();
    // keyId may hold commas (it never holds `",`), so split on the quote-comma boundary.
    for part in rest.split("\",") {
        let (name, quoted) = part
            .split_once('=')
            .ok_or("malformed authorization parameter")?;
        let v = quoted.trim_start_matches('"').trim_end_matches('"');
        params.insert(name.trim().to_string(), v.to_string());
    }
    Ok(params)
}

fn authorization_param(headers: &HeaderMap, name: &str) -> Option<String> {
    authorization_params(headers).ok()?.remove(name)
}

/// An RSA public key (2048 to 8192 bits) that checks PKCS#1 v1.5 SHA-256 signatures.
pub type PublicKey = UnparsedPublicKey<Vec<u8>>;

/// A `PUBLIC KEY` PEM (SubjectPublicKeyInfo) as a verifying key.
pub fn public_key_from_pem(pem: &str) -> PublicKey {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let der = B64.decode(body).expect("public key PEM");
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
}

/// Checks the request's signature; `Ok(keyId)` when it is valid and the key id is accepted.
pub fn verify(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
    key: &PublicKey,
    accepted_key_ids: &[String],
    now: SystemTime,
) -> Result<String, String> {
    let params = authorization_params(headers)?;
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("authorization lacks {name}"))
    };
    if get("version")? != "1" {
        return Err("version must be 1".into());
    }
    if get("algorithm")? != "rsa-sha256" {
        return Err("algorithm must be rsa-sha256".into());
    }
    let key_id = get("keyId")?;
    let expected = match *method {
        Method::GET | Method::HEAD | Method::DELETE => GET_HEADERS,
        _ => WRITE_HEADERS,
    };
    let signed = get("headers")?;
    if signed != expected {
        return Err(format!("signed headers {signed:?}, expected {expected:?}"));
    }
    let date = httpdate::parse_http_date(header(headers, "date")?)
        .map_err(|_| "date is not an HTTP date")?;
    let skew = now.duration_since(date).unwrap_or_else(|e| e.duration());
    if skew > CLOCK_SKEW {
        return Err(format!(
            "date is {}s away from the server clock",
            skew.as_secs()
        ));
    }
    if expected == WRITE_HEADERS {
        let length: usize = header(headers, "content-length")?
            .parse()
            .map_err(|_| "bad content-length")?;
        if length != body.len() {
            return Err("content-length does not match the body".into());
        }
        if header(headers, "x-content-sha256")? != B64.encode(Sha256::digest(body)) {
            return Err("x-content-sha256 does not match the body".into());
        }
    }
    let mut lines = Vec::new();
    for name in signed.split(' ') {
        let line = match name {
            "(request-target)" => format!(
                "(request-target): {} {target}",
                method.as_str().to_ascii_lowercase()
            ),
            other => format!("{other}: {}", header(headers, other)?),
        };
        lines.push(line);
    }
    let signature = B64
        .decode(get("signature")?)
        .map_err(|_| "signature is not base64")?;
    key.verify(lines.join("\n").as_bytes(), &signature)
        .map_err(|_| "signature does not verify")?;
    if !accepted_key_ids.iter().any(|k| k == key_id) {
        return Err("key id not accepted (token unknown or expired)".into());
    }
    Ok(key_id.to_string())
}

fn scim_error(status: StatusCode, detail: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"schemas": [ERROR_SCHEMA], "detail": detail, "status": status.as_u16().to_string()}),
    )
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/scim+json;charset=UTF-8")
        .body(Body::from(value.to_string()))
        .expect("response")
}

fn query_pairs(target: &str) -> HashMap<String, String> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn route(
    state: &State,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["admin", "v1", "Users"]) => list_users(state, &query_pairs(target)),
        (&Method::GET, ["admin", "v1", "Users", id]) => get_user(state, id, &query_pairs(target)),
        (&Method::GET, ["20160918", "domains", ocid]) => get_domain(state, ocid),
        (&Method::POST, ["admin", "v1", "Users", ".search"]) => search_users(state, body),
        (&Method::POST, ["admin", "v1", "Bulk"]) => bulk(state, body),
        (&Method::GET, ["20160918", "compartments"]) => {
            list_compartments(state, &query_pairs(target))
        }
        (&Method::GET, ["20160918", "domains"]) => list_domains(state, &query_pairs(target)),
        (&Method::PUT, ["admin", "v1", "UserCapabilitiesChanger", id]) => {
            put_capabilities(state, id, headers, body)
        }
        (&Method::DELETE, ["admin", "v1", resource, id]) => delete_credential(state, resource, id),
        _ => scim_error(
            StatusCode::NOT_FOUND,
            &format!("The URI {path} does not exist"),
        ),
    }
}

/// The user resource, with the extensions the `attributes` parameter asks for (the service returns
/// extension attributes only when requested; `attributes` replaces the default set, and `groups`
/// is `returned: request`, so it too appears only when named).
fn user_json(user: &User, attributes: &str) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(user.id));
    out.insert("userName".into(), json!(user.user_name));
    let wanted: Vec<&str> = attributes.split(',').map(str::trim).collect();
    // Like the service, `ocid` only when asked for.
    if let (Some(ocid), true) = (&user.ocid, wanted.contains(&"ocid")) {
        out.insert("ocid".into(), json!(ocid));
    }
    if let (Some(domain), true) = (&user.domain_ocid, wanted.contains(&"domainOcid")) {
        out.insert("domainOcid".into(), domain.clone());
    }
    out.insert(
        "schemas".into(),
        json!(["urn:ietf:params:scim:schemas:core:2.0:User"]),
    );
    out.insert(
        "meta".into(),
        json!({"resourceType": "User", "created": created_text(user.instant)}),
    );
    let caps = capability_attributes(user, &wanted);
    if !caps.is_empty() {
        out.insert(CAPABILITIES_URN.into(), Value::Object(caps));
    }
    let mut ext = Map::new();
    let whole = wanted.contains(&USER_EXTENSION_URN);
    if whole || wanted.contains(&format!("{USER_EXTENSION_URN}:isFederatedUser").as_str()) {
        ext.insert("isFederatedUser".into(), json!(user.federated));
    }
    if whole || wanted.contains(&format!("{USER_EXTENSION_URN}:creationMechanism").as_str()) {
        ext.insert("creationMechanism".into(), json!(user.creation_mechanism));
    }
    if whole || wanted.contains(&format!("{USER_EXTENSION_URN}:serviceUser").as_str()) {
        ext.insert("serviceUser".into(), json!(user.service_user));
    }
    if !ext.is_empty() {
        out.insert(USER_EXTENSION_URN.into(), Value::Object(ext));
    }
    // SCIM leaves out an empty multi-valued attribute.
    if wanted.contains(&"groups") && !user.groups.is_empty() {
        out.insert("groups".into(), Value::Array(user.groups.clone()));
    }
    if let Some(credentials) = credentials_json(user, &wanted) {
        out.insert(CREDENTIALS_URN.into(), credentials);
    }
    let tags_asked =
        wanted.contains(&TAGS_URN) || wanted.contains(&format!("{TAGS_URN}:definedTags").as_str());
    if tags_asked && !user.defined_tags.is_empty() {
        out.insert(
            TAGS_URN.into(),
            json!({"definedTags": user.defined_tags.clone()}),
        );
    }
    Value::Object(out)
}

/// The capability attributes `wanted` names: each by its full path (`…:capabilities:User:canUseApiKeys`,
/// the form the function sends), or all of them by the bare extension URN (which Oracle's query
/// parameter page also accepts).
fn capability_attributes(user: &User, wanted: &[&str]) -> Map<String, Value> {
    let whole = wanted.contains(&CAPABILITIES_URN);
    ATTRIBUTES
        .iter()
        .zip(user.caps)
        .filter(|(name, _)| {
            whole || wanted.contains(&format!("{CAPABILITIES_URN}:{name}").as_str())
        })
        .filter_map(|(name, v)| v.map(|b| (name.to_string(), json!(b))))
        .collect()
}

fn get_user(state: &State, id: &str, query: &HashMap<String, String>) -> Response<Body> {
    let inner = state.lock();
    let found = inner
        .users
        .get(id)
        .or_else(|| inner.users.values().find(|u| u.ocid.as_deref() == Some(id)));
    match found {
        Some(user) => json_response(
            StatusCode::OK,
            &user_json(user, query.get("attributes").map_or("", String::as_str)),
        ),
        None => scim_error(StatusCode::NOT_FOUND, &format!("Resource {id} not found.")),
    }
}

/// The IAM control plane's `GetDomain`: the registered `url`, or 404 in OCI's error shape.
fn get_domain(state: &State, ocid: &str) -> Response<Body> {
    let inner = state.lock();
    // A domain added with a display name (`add_listed_domain`) answers with it.
    let display_name = inner
        .plane
        .domains
        .iter()
        .find(|(_, d)| d["id"] == ocid)
        .and_then(|(_, d)| d["displayName"].as_str())
        .unwrap_or("Default")
        .to_owned();
    match inner.domains.get(ocid) {
        Some(url) => json_response(
            StatusCode::OK,
            &json!({
                "id": ocid,
                "displayName": display_name,
                "url": url,
                "homeRegionUrl": url,
                "lifecycleState": "ACTIVE",
                "type": "DEFAULT",
            }),
        ),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({
                "code": "NotAuthorizedOrNotFound",
                "message": "Authorization failed or requested resource not found.",
            }),
        ),
    }
}

fn matches_filter(user: &User, filter: Option<&str>) -> Result<bool, String> {
    let Some(filter) = filter else {
        return Ok(true);
    };
    // The reconcile's keyset: `(<filter>) and meta.created ge "<time>"`, or the keyset alone.
    if let Some((rest, at)) = split_keyset(filter)? {
        return Ok(user.instant >= at && matches_filter(user, rest)?);
    }
    let creation = format!("{USER_EXTENSION_URN}:creationMechanism eq ");
    let federated = format!("{USER_EXTENSION_URN}:isFederatedUser eq ");
    if let Some(v) = filter.strip_prefix(&creation) {
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or("string value must be quoted")?;
        Ok(user.creation_mechanism == v)
    } else if let Some(v) = filter.strip_prefix(&federated) {
        Ok(user.federated == v.parse::<bool>().map_err(|_| "boolean expected")?)
    } else {
        Err(format!("unsupported filter {filter:?}"))
    }
}

/// 2026-11-01T00:00:00Z, where `meta.created` instants count from.
fn created_base() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_793_491_200).expect("a valid time")
}

/// `meta.created` for an instant (milliseconds after 2026-11-01T00:00:00Z).
fn created_text(instant: u64) -> String {
    let base = created_base();
    let t = base + time::Duration::milliseconds(instant as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Splits off a trailing `meta.created ge "<time>"` clause: the rest of the filter (if any) and
/// the instant.
fn split_keyset(filter: &str) -> Result<Option<(Option<&str>, u64)>, String> {
    const KEYSET: &str = "meta.created ge ";
    let Some(pos) = filter.rfind(KEYSET) else {
        return Ok(None);
    };
    let value = filter[pos + KEYSET.len()..]
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or("meta.created value must be quoted")?;
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("bad meta.created value {value:?}"))?;
    let base = created_base();
    let at = (t - base).whole_milliseconds().max(0) as u64;
    let head = filter[..pos].trim_end();
    let rest = match head.strip_suffix("and") {
        None if head.is_empty() => None,
        None => return Err(format!("unsupported filter {filter:?}")),
        Some(h) => Some(
            h.trim_end()
                .strip_prefix('(')
                .and_then(|h| h.strip_suffix(')'))
                .ok_or("the filter before the keyset must be in parentheses")?,
        ),
    };
    Ok(Some((rest, at)))
}

fn list_users(state: &State, query: &HashMap<String, String>) -> Response<Body> {
    let mut inner = state.lock();
    inner.list_pages_served += 1;
    let served = inner.list_pages_served;
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.pending)
        .into_iter()
        .partition(|(p, _)| *p < served);
    inner.pending = later;
    for (_, user) in due {
        inner.users.insert(user.id.clone(), user);
    }
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.removals)
        .into_iter()
        .partition(|(p, _)| *p < served);
    inner.removals = kept;
    for (_, id) in gone {
        inner.users.remove(&id);
    }
    // Oracle's SDK spells the sort order `ASCENDING` / `DESCENDING` and sends nothing else.
    if query
        .get("sortOrder")
        .is_some_and(|s| s != "ASCENDING" && s != "DESCENDING")
    {
        return scim_error(
            StatusCode::BAD_REQUEST,
            "sortOrder must be ASCENDING or DESCENDING",
        );
    }
    if query.get("sortBy").is_some_and(|s| s != "meta.created") {
        return scim_error(
            StatusCode::BAD_REQUEST,
            "only sortBy=meta.created is supported here",
        );
    }
    let start: usize = query
        .get("startIndex")
        .and_then(|s| s.parse().ok())
        .filter(|_| !inner.ignore_start_index)
        .unwrap_or(1)
        .max(1);
    let count: usize = match query.get("count").and_then(|s| s.parse::<i64>().ok()) {
        Some(n) if n >= 0 => (n as usize).min(1000),
        _ => 50,
    };
    let count = inner.max_page.map_or(count, |max| count.min(max));
    let mut matching = Vec::new();
    for user in inner.users.values() {
        match matches_filter(user, query.get("filter").map(String::as_str)) {
            Ok(true) => matching.push(user),
            Ok(false) => {}
            Err(e) => return scim_error(StatusCode::BAD_REQUEST, &format!("Invalid filter: {e}")),
        }
    }
    matching.sort_by_key(|u| (u.instant, u.created));
    let attributes = query.get("attributes").map_or("", String::as_str);
    let on_page = || matching.iter().skip(start - 1).take(count);
    if oversized_on_page(&inner, on_page().map(|u| u.id.as_str()), attributes) {
        return oversized_answer();
    }
    let page: Vec<Value> = on_page().map(|u| user_json(u, attributes)).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": matching.len(),
            "Resources": page,
            "startIndex": start,
            "itemsPerPage": page.len(),
        }),
    )
}

fn put_capabilities(state: &State, id: &str, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json")
        && !content_type.starts_with("application/scim+json")
    {
        return scim_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be JSON",
        );
    }
    let Ok(fields) = serde_json::from_slice::<Value>(body) else {
        return scim_error(StatusCode::BAD_REQUEST, "body is not a JSON object");
    };
    match change_capabilities(state, id, &fields) {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err((status, detail)) => scim_error(status, &detail),
    }
}

/// The Changer's work, shared by a single PUT and a Bulk operation: the echo, or the error.
fn change_capabilities(
    state: &State,
    id: &str,
    fields: &Value,
) -> Result<Value, (StatusCode, String)> {
    let Value::Object(fields) = fields else {
        return Err((StatusCode::BAD_REQUEST, "body is not a JSON object".into()));
    };
    let schema_ok = fields
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v == CHANGER_SCHEMA));
    if !schema_ok {
        return Err((
            StatusCode::BAD_REQUEST,
            "Missing required attribute(s): schemas".into(),
        ));
    }
    let mut updates = Vec::new();
    for (name, value) in fields {
        if name == "schemas" {
            continue;
        }
        let Some(index) = ATTRIBUTES.iter().position(|a| a == name) else {
            return Err((StatusCode::BAD_REQUEST, format!("Unknown attribute {name}")));
        };
        let Some(b) = value.as_bool() else {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Attribute {name} must be a boolean"),
            ));
        };
        updates.push((index, b));
    }
    let mut inner = state.lock();
    let Some(user) = inner.users.get_mut(id) else {
        return Err((StatusCode::NOT_FOUND, format!("Resource {id} not found.")));
    };
    for (index, b) in updates {
        user.caps[index] = Some(b);
    }
    let mut out = Map::new();
    out.insert("schemas".into(), json!([CHANGER_SCHEMA]));
    out.insert("id".into(), json!(user.id));
    for (name, v) in ATTRIBUTES.iter().zip(user.caps) {
        if let Some(b) = v {
            out.insert(name.to_string(), json!(b));
        }
    }
    Ok(Value::Object(out))
}

// ---- SCIM search and Bulk (issue 19) -------------------------------------------------------------
//
// `POST /admin/v1/Users/.search` (a SearchRequest whose filter is `id eq "…"`/`ocid eq "…"` terms
// joined by `or`) and `POST /admin/v1/Bulk` with Oracle's limits: at most 50 operations and 1 MB a
// request (413 otherwise), one Bulk job at a time (a second one meanwhile gets 429), its own rate
// bucket, and per-operation faults. Operations run in order and each answers its own `status`.

const BULK_MAX_OPERATIONS: usize = 50;
const BULK_MAX_BYTES: usize = 1_048_576;

#[derive(Default)]
struct ScimState {
    /// Users `.search` does not find yet (created seconds ago, not indexed).
    unsearchable: std::collections::HashSet<String>,
    /// Bulk operations whose path contains the key get this status (with a SCIM error whose
    /// `detail` is the text), `times` times (forever when `None`).
    op_faults: Vec<(String, u16, String, Option<usize>)>,
    bulk_rate_limit: Option<TokenBucket>,
    bulk_running: usize,
    most_bulk_running: usize,
}

fn is_bulk(method: &Method, target: &str) -> bool {
    method == Method::POST && target.split('?').next() == Some("/admin/v1/Bulk")
}

/// A Bulk request in the server; `busy` when another one was already running.
struct BulkJob<'a> {
    state: &'a State,
    busy: bool,
}

impl<'a> BulkJob<'a> {
    fn enter(state: &'a State, method: &Method, path: &str) -> Option<Self> {
        if !is_bulk(method, path) {
            return None;
        }
        let mut inner = state.lock();
        let busy = inner.scim.bulk_running > 0;
        inner.scim.bulk_running += 1;
        inner.scim.most_bulk_running = inner.scim.most_bulk_running.max(inner.scim.bulk_running);
        Some(BulkJob { state, busy })
    }
}

impl Drop for BulkJob<'_> {
    fn drop(&mut self) {
        self.state.lock().scim.bulk_running -= 1;
    }
}

impl IdentityDomainServer {
    /// `.search` does not find this user (yet); a single GET still does.
    pub fn hide_from_search(&self, id: &str) {
        self.state.lock().scim.unsearchable.insert(id.to_string());
    }

    /// Bulk operations whose path contains `path_contains` answer `status` with `detail`.
    pub fn add_bulk_op_fault(
        &self,
        path_contains: &str,
        status: u16,
        detail: &str,
        times: Option<usize>,
    ) {
        self.state.lock().scim.op_faults.push((
            path_contains.to_string(),
            status,
            detail.to_string(),
            times,
        ));
    }

    /// Limits `/Bulk` calls apart from the other APIs (Oracle: 5/s and 200/min).
    pub fn set_bulk_rate_limit(&self, limit: Option<(f64, u32)>) {
        self.state.lock().scim.bulk_rate_limit = limit.map(|(per_second, burst)| TokenBucket {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: Instant::now(),
        });
    }

    /// The most Bulk requests that were running at once.
    pub fn most_bulk_running(&self) -> usize {
        self.state.lock().scim.most_bulk_running
    }

    /// The bodies of the Bulk requests received, parsed.
    pub fn bulk_bodies(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| is_bulk(&Method::POST, &r.target) && r.method == "POST")
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }
}

/// `id eq "…" or ocid eq "…"`: the values asked for, or why the filter is not understood.
fn search_terms(filter: &str) -> Result<Vec<(&str, &str)>, String> {
    filter
        .split(" or ")
        .map(|term| {
            let (attribute, value) = term
                .trim()
                .split_once(" eq ")
                .ok_or_else(|| format!("unsupported filter term {term:?}"))?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or("string value must be quoted")?;
            match attribute {
                "id" | "ocid" => Ok((attribute, value)),
                other => Err(format!("unsupported filter attribute {other:?}")),
            }
        })
        .collect()
}

fn search_users(state: &State, body: &[u8]) -> Response<Body> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return scim_error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let schema_ok = request["schemas"].as_array().is_some_and(|s| {
        s.iter()
            .any(|v| v == "urn:ietf:params:scim:api:messages:2.0:SearchRequest")
    });
    if !schema_ok {
        return scim_error(
            StatusCode::BAD_REQUEST,
            "Missing required attribute(s): schemas",
        );
    }
    let terms = match search_terms(request["filter"].as_str().unwrap_or_default()) {
        Ok(terms) => terms,
        Err(e) => return scim_error(StatusCode::BAD_REQUEST, &format!("Invalid filter: {e}")),
    };
    let attributes: Vec<&str> = request["attributes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let attributes = attributes.join(",");
    let inner = state.lock();
    let mut found: Vec<&User> = inner
        .users
        .values()
        .filter(|u| !inner.scim.unsearchable.contains(&u.id))
        .filter(|u| {
            terms.iter().any(|(a, v)| match *a {
                "id" => u.id == *v,
                _ => u.ocid.as_deref() == Some(*v),
            })
        })
        .collect();
    found.sort_by_key(|u| u.created);
    let page: Vec<Value> = found.iter().map(|u| user_json(u, &attributes)).collect();
    json_response(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": page.len(),
            "Resources": page,
            "startIndex": 1,
            "itemsPerPage": page.len(),
        }),
    )
}

fn bulk(state: &State, body: &[u8]) -> Response<Body> {
    if body.len() > BULK_MAX_BYTES {
        return scim_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The size of the Bulk request exceeds the maxPayloadSize (1048576)",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return scim_error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let schema_ok = request["schemas"].as_array().is_some_and(|s| {
        s.iter()
            .any(|v| v == "urn:ietf:params:scim:api:messages:2.0:BulkRequest")
    });
    let Some(operations) = request["Operations"].as_array().filter(|_| schema_ok) else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            "Missing required attribute(s): Operations",
        );
    };
    if operations.len() > BULK_MAX_OPERATIONS {
        return scim_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The number of operations exceeds the maxOperations (50)",
        );
    }
    let answers: Vec<Value> = operations
        .iter()
        .map(|op| bulk_operation(state, op))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
            "Operations": answers,
        }),
    )
}

fn bulk_operation(state: &State, op: &Value) -> Value {
    let method = op["method"].as_str().unwrap_or_default();
    let path = op["path"].as_str().unwrap_or_default();
    let answer = |status: StatusCode, response: Option<Value>| {
        let mut out = json!({
            "method": method,
            "bulkId": op["bulkId"],
            "status": status.as_u16().to_string(),
            "location": format!("/admin/v1{path}"),
        });
        if let Some(r) = response {
            out["response"] = r;
        }
        out
    };
    let error = |status: StatusCode, detail: &str| {
        answer(
            status,
            Some(
                json!({"schemas": [ERROR_SCHEMA], "detail": detail, "status": status.as_u16().to_string()}),
            ),
        )
    };
    if let Some((status, detail)) = take_op_fault(state, path) {
        return error(status, &detail);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("PUT", ["UserCapabilitiesChanger", id]) => {
            match change_capabilities(state, id, &op["data"]) {
                Ok(echo) => answer(StatusCode::OK, Some(echo)),
                Err((status, detail)) => error(status, &detail),
            }
        }
        ("DELETE", [resource, id]) => match remove_credential(state, resource, id) {
            Ok(()) => answer(StatusCode::NO_CONTENT, None),
            Err((status, detail)) => error(status, &detail),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("The URI {path} does not exist"),
        ),
    }
}

fn take_op_fault(state: &State, path: &str) -> Option<(StatusCode, String)> {
    let mut inner = state.lock();
    let rule = inner
        .scim
        .op_faults
        .iter_mut()
        .find(|(key, _, _, left)| path.contains(key.as_str()) && left.is_none_or(|n| n > 0))?;
    if let Some(n) = rule.3.as_mut() {
        *n -= 1;
    }
    Some((
        StatusCode::from_u16(rule.1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        rule.2.clone(),
    ))
}

/// The `userCredentials` extension with the types `wanted` names (the whole extension, or
/// `<urn>:<attribute>`), as the service gives it: only when asked, empty lists left out, each entry
/// `{value, ocid, $ref}` (API keys also `fingerprint` and their public `key`). `None` when nothing
/// asked for is held.
fn credentials_json(user: &User, wanted: &[&str]) -> Option<Value> {
    let whole = wanted.contains(&CREDENTIALS_URN);
    let mut ext = Map::new();
    for (kind, resource) in CREDENTIAL_TYPES {
        if !whole && !wanted.contains(&format!("{CREDENTIALS_URN}:{kind}").as_str()) {
            continue;
        }
        let entries: Vec<Value> = user
            .credentials
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, id)| {
                let mut entry = json!({
                    "value": id,
                    "ocid": format!("ocid1.credential.oc1..{}", id.len()),
                    "$ref": format!("/admin/v1/{resource}/{id}"),
                });
                if kind == "apiKeys" {
                    entry["fingerprint"] = json!("12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0");
                    entry["key"] = json!(API_KEY_MATERIAL);
                }
                entry
            })
            .collect();
        if !entries.is_empty() {
            ext.insert(kind.into(), Value::Array(entries));
        }
    }
    (!ext.is_empty()).then_some(Value::Object(ext))
}

/// `DELETE /admin/v1/<resource>/{id}`: removes the credential of that resource type with that id
/// from whichever user holds it; 204, or 404 when there is none.
fn delete_credential(state: &State, resource: &str, id: &str) -> Response<Body> {
    match remove_credential(state, resource, id) {
        Ok(()) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .expect("response"),
        Err((status, detail)) => scim_error(status, &detail),
    }
}

/// The work of a credential `DELETE`, single or inside Bulk: the error status and detail when
/// there is no such resource type or credential.
fn remove_credential(state: &State, resource: &str, id: &str) -> Result<(), (StatusCode, String)> {
    let Some((kind, _)) = CREDENTIAL_TYPES.iter().find(|(_, r)| *r == resource) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("The URI /admin/v1/{resource}/{id} does not exist"),
        ));
    };
    let mut inner = state.lock();
    for user in inner.users.values_mut() {
        if let Some(at) = user
            .credentials
            .iter()
            .position(|(k, i)| k == kind && i == id)
        {
            user.credentials.remove(at);
            return Ok(());
        }
    }
    Err((StatusCode::NOT_FOUND, format!("Resource {id} not found.")))
}

// Issue 24 (hostile answers): raw values a test places in a user's answer verbatim.
impl IdentityDomainServer {
    /// Adds a `definedTags` entry exactly as given (a null, numeric or missing `value` included).
    pub fn add_defined_tag_raw(&self, user_id: &str, entry: Value) {
        if let Some(user) = self.state.lock().users.get_mut(user_id) {
            user.defined_tags.push(entry);
        }
    }
}

// ---- Users' domainOcid (issue 24 item 1) --------------------------------------------------------

impl IdentityDomainServer {
    /// Gives this domain an OCID: every user, existing and new, answers it as `domainOcid` when the
    /// read asks for that attribute (as the service returns readOnly core attributes it is asked for).
    pub fn set_domain_ocid(&self, ocid: &str) {
        let mut inner = self.state.lock();
        inner.domain_ocid = Some(ocid.to_string());
        for user in inner.users.values_mut() {
            user.domain_ocid = Some(json!(ocid));
        }
    }

    /// One user's `domainOcid` as answered, verbatim (another domain's OCID, a malformed value, a
    /// number); `None` leaves it out of the answer.
    pub fn set_user_domain_ocid(&self, id: &str, value: Option<Value>) {
        if let Some(user) = self.state.lock().users.get_mut(id) {
            user.domain_ocid = value;
        }
    }
}
