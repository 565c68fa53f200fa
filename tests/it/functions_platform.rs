//! Plays OCI Functions for the tenancy-wide reconcile: `GetFunction` (answers the function's
//! `invokeEndpoint`, this server) and the invoke endpoint (`POST
//! /20181201/functions/{id}/actions/invoke`). Every request must carry a valid OCI signature (the
//! same check as the identity-domain server, body hash included); an invocation must say
//! `fn-invoke-type: detached`, is answered 202 at once, and its body is then delivered as a new call
//! on a function container's socket with a short `Fn-Deadline`, the way the Fn agent does. Each
//! container takes one call at a time, like Fn's; calls wait for a free one.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::platform_harness::{deadline_in, Call, FnProcess};
use crate::support::identity_domain_server::{public_key_from_pem, verify, PublicKey};
use crate::support::loopback::LoopbackServer;

/// One invocation the platform accepted, and how its call ended.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The body as sent (and delivered).
    pub body: Value,
    pub accepted_at: Instant,
    /// The status the function answered; `None` while it runs (or waits for a container).
    pub answered: Option<u16>,
    pub answered_at: Option<Instant>,
}

/// A request the platform refused, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub target: String,
    pub reason: String,
}

#[derive(Default)]
struct Inner {
    invocations: Vec<Invocation>,
    refusals: Vec<Refusal>,
    get_function_calls: usize,
    /// Answer invocations with this status instead of 202.
    fail_invokes: Option<u16>,
    /// What `GetFunction` answers as `invokeEndpoint` (this server unless set).
    invoke_endpoint: Option<String>,
    /// Bodies accepted but not yet delivered, by index into `invocations`.
    queue: VecDeque<usize>,
}

struct State {
    key: PublicKey,
    accepted_key_ids: Vec<String>,
    function_id: String,
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stand-in; it stops when dropped.
pub struct FunctionsPlatform {
    state: Arc<State>,
    server: LoopbackServer,
}

impl FunctionsPlatform {
    /// Starts on an ephemeral loopback port for the function `function_id`.
    pub async fn start(
        public_key_pem: &str,
        accepted_key_ids: Vec<String>,
        function_id: &str,
    ) -> Self {
        let state = Arc::new(State {
            key: public_key_from_pem(public_key_pem),
            accepted_key_ids,
            function_id: function_id.to_string(),
            inner: Mutex::new(Inner::default()),
            wake: tokio::sync::Notify::new(),
        });
        let server = LoopbackServer::start({
            let state = state.clone();
            move |addr| move |request: Request<Body>| handle(state.clone(), addr, request)
        })
        .await;
        FunctionsPlatform { state, server }
    }

    /// `http://127.0.0.1:port`: FUNCTIONS_URL, and the invoke endpoint it answers.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Delivers accepted invocations to `containers`, one call per container at a time, each with a
    /// deadline `timeout` away. Runs until the platform is dropped.
    pub fn serve_with(&self, containers: Vec<FnProcess>, timeout: Duration) {
        let (idle_tx, idle_rx) = tokio::sync::mpsc::unbounded_channel::<Arc<FnProcess>>();
        for c in containers {
            let _ = idle_tx.send(Arc::new(c));
        }
        let state = Arc::clone(&self.state);
        tokio::spawn(dispatch(state, idle_tx, idle_rx, timeout));
    }

    /// Accepts `body` as if a signed client had invoked the function detached (the schedule).
    pub fn invoke(&self, body: &Value) {
        enqueue(&self.state, body.clone());
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        self.state.lock().invocations.clone()
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.state.lock().refusals.clone()
    }

    pub fn get_function_calls(&self) -> usize {
        self.state.lock().get_function_calls
    }

    /// Answers every invocation with `status` (e.g. 503) instead of accepting it.
    pub fn fail_invokes(&self, status: Option<u16>) {
        self.state.lock().fail_invokes = status;
    }

    /// Makes `GetFunction` answer this `invokeEndpoint`.
    pub fn set_invoke_endpoint(&self, url: &str) {
        self.state.lock().invoke_endpoint = Some(url.to_string());
    }

    /// Waits until every accepted invocation has been answered and none came for `quiet`, or
    /// `limit` passes; true when everything was answered.
    pub async fn wait_idle(&self, quiet: Duration, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let (all_answered, last) = {
                let inner = self.state.lock();
                let all = inner.invocations.iter().all(|i| i.answered.is_some());
                let last = inner.invocations.iter().filter_map(|i| i.answered_at).max();
                (all && !inner.invocations.is_empty(), last)
            };
            if all_answered && last.is_some_and(|t| t.elapsed() >= quiet) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn enqueue(state: &State, body: Value) {
    let mut inner = state.lock();
    let index = inner.invocations.len();
    inner.invocations.push(Invocation {
        body,
        accepted_at: Instant::now(),
        answered: None,
        answered_at: None,
    });
    inner.queue.push_back(index);
    drop(inner);
    state.wake.notify_one();
}

/// Takes each accepted invocation to the next idle container.
async fn dispatch(
    state: Arc<State>,
    idle_tx: tokio::sync::mpsc::UnboundedSender<Arc<FnProcess>>,
    mut idle_rx: tokio::sync::mpsc::UnboundedReceiver<Arc<FnProcess>>,
    timeout: Duration,
) {
    loop {
        let next = state.lock().queue.pop_front();
        let Some(index) = next else {
            state.wake.notified().await;
            continue;
        };
        let Some(container) = idle_rx.recv().await else {
            return;
        };
        let body = state.lock().invocations[index].body.to_string();
        let state = Arc::clone(&state);
        let idle_tx = idle_tx.clone();
        tokio::spawn(async move {
            let call = Call::new(body)
                .header("Fn-Invoke-Type", "detached")
                .deadline(Some(deadline_in(timeout)));
            let reply = container.call(call).await;
            {
                let mut inner = state.lock();
                inner.invocations[index].answered = Some(reply.status);
                inner.invocations[index].answered_at = Some(Instant::now());
            }
            let _ = idle_tx.send(container);
        });
    }
}

async fn handle(state: Arc<State>, addr: SocketAddr, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = axum::body::to_bytes(body, 8 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let refuse = |status: StatusCode, reason: String| {
        state.lock().refusals.push(Refusal {
            target: target.clone(),
            reason: reason.clone(),
        });
        json_response(status, &json!({"code": "Refused", "message": reason}))
    };
    if let Err(reason) = verify(
        &parts.method,
        &target,
        &parts.headers,
        &body,
        &state.key,
        &state.accepted_key_ids,
        SystemTime::now(),
    ) {
        return refuse(StatusCode::UNAUTHORIZED, reason);
    }
    let function = format!("/20181201/functions/{}", state.function_id);
    let invoke = format!("{function}/actions/invoke");
    match (&parts.method, target.as_str()) {
        (&Method::GET, t) if t == function => {
            let mut inner = state.lock();
            inner.get_function_calls += 1;
            let endpoint = inner
                .invoke_endpoint
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            json_response(
                StatusCode::OK,
                &json!({"id": state.function_id, "displayName": "user-capabilities",
                        "invokeEndpoint": endpoint, "lifecycleState": "ACTIVE"}),
            )
        }
        (&Method::POST, t) if t == invoke => {
            let detached = parts
                .headers
                .get("fn-invoke-type")
                .and_then(|v| v.to_str().ok())
                == Some("detached");
            if !detached {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "fn-invoke-type is not detached".into(),
                );
            }
            if body.len() > 6 * 1024 * 1024 {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body over 6 MB".into());
            }
            if let Some(status) = state.lock().fail_invokes {
                return json_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &json!({"code": "InternalServerError", "message": "injected"}),
                );
            }
            let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                return refuse(StatusCode::BAD_REQUEST, "body is not JSON".into());
            };
            enqueue(&state, value);
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("opc-request-id", "fn-invoke")
                .body(Body::empty())
                .expect("response")
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            format!("no route {} {target}", parts.method),
        ),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .expect("response")
}
