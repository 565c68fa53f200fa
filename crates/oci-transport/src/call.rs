//! A call as data: what to send, how its answers are judged, which rate it counts against and how
//! much of its answer is read.

use oci_signer::CredentialKind;
use reqwest::Method;
use url::Url;

use crate::classify::{Intent, SMALL_ANSWER_LIMIT};

/// Which request-rate budget a call counts against. Limits are kept per host and group, as OCI
/// counts them (an identity domain counts `/Bulk` apart from its other APIs, for instance); each
/// group's ceiling comes from [`Settings`](crate::Settings), and [`RateGroup::DEFAULT`]'s is
/// [`Settings::max_requests_per_second`](crate::Settings::max_requests_per_second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateGroup(&'static str);

impl RateGroup {
    /// Every call not given another group.
    pub const DEFAULT: RateGroup = RateGroup("default");

    /// A named group, e.g. `RateGroup::new("bulk")`.
    pub const fn new(name: &'static str) -> Self {
        RateGroup(name)
    }

    /// The group's name, for logs.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// What most likely makes a service refuse a credential that signs correctly, by kind of
/// credential (a client names the role or policy its service needs).
pub type UnauthorizedHint = fn(CredentialKind) -> &'static str;

/// Sentences a client adds to a refusal, so the report says what to fix.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints {
    /// Added to a 403.
    pub forbidden: Option<&'static str>,
    /// Added to a second 401 (after the credentials were re-read).
    pub unauthorized: Option<UnauthorizedHint>,
}

/// One request, as data. Build it with [`Call::get`], [`Call::post_json`], [`Call::put_json`] or
/// [`Call::delete`] and the `with_*` methods; [`Transport::send`](crate::Transport::send) paces,
/// signs, sends, reads and classifies it.
///
/// The URL must be built from validated values only: the transport signs whatever it is given
/// (it refuses only what is neither `https` nor a loopback `http` address).
#[derive(Debug, Clone)]
pub struct Call {
    /// The HTTP method.
    pub method: Method,
    /// The full URL.
    pub url: Url,
    /// The body (JSON for every OCI API); `None` sends none.
    pub body: Option<Vec<u8>>,
    /// Extra headers, sent and signed as given (e.g. `fn-invoke-type: detached`); names lower-case.
    pub headers: Vec<(&'static str, String)>,
    /// What the call does, which decides what a 403 means.
    pub intent: Intent,
    /// The rate budget it counts against.
    pub group: RateGroup,
    /// The most of a successful answer read; a larger one ends the call `failed` unread.
    pub answer_limit: usize,
    /// The service, as messages name it ("the identity domain").
    pub service: &'static str,
    /// What to add to a refusal.
    pub hints: Hints,
}

impl Call {
    /// A call with the defaults: no body, [`RateGroup::DEFAULT`], a 1 MiB answer limit.
    pub fn new(method: Method, url: Url, intent: Intent) -> Self {
        Call {
            method,
            url,
            body: None,
            headers: Vec::new(),
            intent,
            group: RateGroup::DEFAULT,
            answer_limit: SMALL_ANSWER_LIMIT,
            service: "the OCI service",
            hints: Hints::default(),
        }
    }

    /// A signed `GET` (a read).
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url, Intent::Read)
    }

    /// A signed `POST` of a JSON body (a write; see [`with_intent`](Self::with_intent) for a
    /// search sent by `POST`).
    pub fn post_json(url: Url, body: Vec<u8>) -> Self {
        Self::new(Method::POST, url, Intent::Write).with_body(body)
    }

    /// A signed `PUT` of a JSON body (a write).
    pub fn put_json(url: Url, body: Vec<u8>) -> Self {
        Self::new(Method::PUT, url, Intent::Write).with_body(body)
    }

    /// A signed `DELETE` (a write).
    pub fn delete(url: Url) -> Self {
        Self::new(Method::DELETE, url, Intent::Write)
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets what the call does (what a 403 means).
    pub fn with_intent(mut self, intent: Intent) -> Self {
        self.intent = intent;
        self
    }

    /// Counts the call against `group`.
    pub fn with_group(mut self, group: RateGroup) -> Self {
        self.group = group;
        self
    }

    /// Reads at most `limit` bytes of a successful answer.
    pub fn with_answer_limit(mut self, limit: usize) -> Self {
        self.answer_limit = limit;
        self
    }

    /// Names the service in messages.
    pub fn with_service(mut self, service: &'static str) -> Self {
        self.service = service;
        self
    }

    /// Adds an extra header (sent and signed).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the hints added to refusals.
    pub fn with_hints(mut self, hints: Hints) -> Self {
        self.hints = hints;
        self
    }
}
