//! A local OCI Monitoring ingestion endpoint for the metrics tests: `POST /20180401/metrics`
//! (`PostMetricData`) on 127.0.0.1:0. It checks every request's OCI signature the way the identity
//! domain double does (same verifier), checks the body against the API's documented shape
//! (`PostMetricDataDetails`: `metricData` of 1 to 50 `MetricDataDetails`, each with `namespace`,
//! `compartmentId`, `name`, 1 to 20 `dimensions`, `datapoints` of `{timestamp, value}` within 2 h
//! past and 10 min ahead), records what it got, and can answer 500 or never answer.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::identity_domain_server::{public_key_from_pem, verify, PublicKey};
use super::loopback::LoopbackServer;

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with `{"failedMetricsCount": 0, "failedMetrics": []}` for a valid call, 400 otherwise.
    Accept,
    /// 500 to everything.
    Fail,
    /// Reads the request, then never answers.
    Hang,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Posted {
    pub path: String,
    pub key_id: Option<String>,
    /// `Err` with the reason when the signature did not verify.
    pub signature: Result<(), String>,
    /// `Err` with every violation of the documented shape.
    pub shape: Result<(), Vec<String>>,
    pub body: Value,
}

struct State {
    key: PublicKey,
    accepted: Vec<String>,
    mode: Mutex<Mode>,
    posted: Mutex<Vec<Posted>>,
}

/// The running endpoint; it stops when dropped.
pub struct MonitoringServer {
    state: Arc<State>,
    server: LoopbackServer,
}

impl MonitoringServer {
    pub async fn start(public_key_pem: &str, accepted_key_ids: Vec<String>, mode: Mode) -> Self {
        let state = Arc::new(State {
            key: public_key_from_pem(public_key_pem),
            accepted: accepted_key_ids,
            mode: Mutex::new(mode),
            posted: Mutex::new(Vec::new()),
        });
        let server = LoopbackServer::start({
            let state = state.clone();
            move |_| move |request: Request<Body>| handle(state.clone(), request)
        })
        .await;
        MonitoringServer { state, server }
    }

    /// `http://127.0.0.1:port`, the `MONITORING_INGESTION_URL` to configure.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn posted(&self) -> Vec<Posted> {
        self.state.posted.lock().unwrap().clone()
    }

    /// Every stream of every request, flattened.
    pub fn streams(&self) -> Vec<Value> {
        self.posted()
            .iter()
            .flat_map(|p| p.body["metricData"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

async fn handle(state: Arc<State>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(body, 2 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let signature = verify(
        &parts.method,
        &target,
        &parts.headers,
        &bytes,
        &state.key,
        &state.accepted,
        SystemTime::now(),
    );
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let shape = if parts.method == "POST" && target == "/20180401/metrics" {
        check_shape(&body, SystemTime::now())
    } else {
        Err(vec![format!(
            "{} {target} is not PostMetricData",
            parts.method
        )])
    };
    let ok = signature.is_ok() && shape.is_ok();
    state.posted.lock().unwrap().push(Posted {
        path: target,
        key_id: signature.as_ref().ok().cloned(),
        signature: signature.map(|_| ()),
        shape,
        body,
    });
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            answer(StatusCode::OK, json!({}))
        }
        Mode::Fail => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"code": "InternalServerError", "message": "injected"}),
        ),
        Mode::Accept if ok => answer(
            StatusCode::OK,
            json!({"failedMetricsCount": 0, "failedMetrics": []}),
        ),
        Mode::Accept => answer(
            StatusCode::BAD_REQUEST,
            json!({"code": "InvalidParameter", "message": "signature or shape refused"}),
        ),
    }
}

fn answer(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("opc-request-id", "monitoring-test")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `PostMetricDataDetails` as Oracle documents it; every violation is listed.
pub fn check_shape(body: &Value, now: SystemTime) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let Some(data) = body.get("metricData").and_then(Value::as_array) else {
        return Err(vec!["metricData is not a list".into()]);
    };
    if data.is_empty() || data.len() > 50 {
        errors.push(format!("{} streams; 1 to 50 allowed", data.len()));
    }
    if let Some(a) = body.get("batchAtomicity") {
        if !matches!(a.as_str(), Some("ATOMIC" | "NON_ATOMIC")) {
            errors.push(format!("batchAtomicity {a}"));
        }
    }
    for (i, m) in data.iter().enumerate() {
        check_stream(i, m, now, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_stream(i: usize, m: &Value, now: SystemTime, errors: &mut Vec<String>) {
    let text = |k: &str| m.get(k).and_then(Value::as_str);
    match text("namespace") {
        Some(ns)
            if ns.starts_with(|c: char| c.is_ascii_alphabetic())
                && ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !ns.starts_with("oci_")
                && !ns.starts_with("oracle_") => {}
        other => errors.push(format!("stream {i}: namespace {other:?}")),
    }
    if !text("compartmentId").is_some_and(|c| c.starts_with("ocid1.")) {
        errors.push(format!("stream {i}: compartmentId"));
    }
    if !text("name").is_some_and(|n| !n.is_empty() && n.len() <= 255) {
        errors.push(format!("stream {i}: name"));
    }
    match m.get("dimensions").and_then(Value::as_object) {
        Some(d) if (1..=20).contains(&d.len()) => {
            for (k, v) in d {
                let v = v.as_str().unwrap_or("");
                if k.is_empty() || v.is_empty() || v.len() > 512 {
                    errors.push(format!("stream {i}: dimension {k}={v:?}"));
                }
            }
        }
        _ => errors.push(format!("stream {i}: dimensions must hold 1 to 20 entries")),
    }
    if let Some(meta) = m.get("metadata") {
        if !meta
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_string))
        {
            errors.push(format!("stream {i}: metadata must map strings to strings"));
        }
    }
    let Some(points) = m
        .get("datapoints")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    else {
        errors.push(format!("stream {i}: datapoints"));
        return;
    };
    for p in points {
        if !p.get("value").is_some_and(Value::is_number) {
            errors.push(format!("stream {i}: datapoint value"));
        }
        let at = p
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(SystemTime::from);
        match at {
            Some(t)
                if t + Duration::from_secs(7200) >= now && t <= now + Duration::from_secs(600) => {}
            _ => errors.push(format!("stream {i}: timestamp {:?}", p.get("timestamp"))),
        }
    }
}
