//! The HTTP half of the Fn `http-stream` contract: `POST /call`, one call at a time, and only the
//! statuses the platform accepts (200, 502, 504) ever leave this module.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::{
    handler_budget, parse_deadline, CallContext, FnConfig, GatewayRequest, DEFAULT_CALL_BUDGET,
};
use crate::layers::{CatchPanic, Deadline, DeadlineExceeded};

/// The request body as far as the FDK read it.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The whole body.
    Complete(Bytes),
    /// The body exceeded the configured limit; the rest was read and discarded so the connection stays
    /// usable. `received` is the full length.
    TooLarge {
        /// The configured limit ([`FdkSettings::max_body_bytes`]).
        limit: usize,
        /// The body's full length.
        received: usize,
    },
}

/// What a handler answers. `status` reaches the client only on gateway calls (as `Fn-Http-Status`); on
/// plain calls a handler's success is always a 200 to the platform.
#[derive(Debug, Clone)]
pub struct FnResponse {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl FnResponse {
    /// A response with one `Content-Type` header.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        FnResponse {
            status,
            headers: vec![(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )],
            body: body.into(),
        }
    }

    /// A JSON response.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// Adds a header. On gateway calls, headers other than `Content-Type` and `Fn-*` reach the client
    /// through the platform's `Fn-Http-H-` prefix, which the FDK adds.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status a gateway client sees.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A handler failure: the platform gets a 502 (and may retry); the text goes to the log, because the
/// platform discards a 502 body.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The boxed future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<FnResponse, HandlerError>> + Send>>;

/// The function behind the socket. Any `async fn(CallContext, Payload) -> Result<FnResponse,
/// HandlerError>` (or closure returning such a future) is one.
pub trait Handler: Send + Sync + 'static {
    /// Handles one call.
    fn call(&self, ctx: CallContext, payload: Payload) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(CallContext, Payload) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<FnResponse, HandlerError>> + Send + 'static,
{
    fn call(&self, ctx: CallContext, payload: Payload) -> HandlerFuture {
        Box::pin(self(ctx, payload))
    }
}

/// FDK settings; `fdk_version` and `runtime` become `Fn-Fdk-Version` and `Fn-Fdk-Runtime`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FdkSettings {
    /// The `Fn-Fdk-Version` header value.
    pub fdk_version: String,
    /// The `Fn-Fdk-Runtime` header value.
    pub runtime: String,
    /// The function's configuration as the platform passed it.
    pub config: FnConfig,
    /// The FDK answers 504 this long before the platform's deadline.
    pub deadline_margin: Duration,
    /// Bodies longer than this reach the handler as [`Payload::TooLarge`] (default: the platform's
    /// 6 MiB).
    pub max_body_bytes: usize,
}

impl FdkSettings {
    /// Settings with the default margin and body limit.
    pub fn new(fdk_version: String, runtime: String, config: FnConfig) -> Self {
        FdkSettings {
            fdk_version,
            runtime,
            config,
            deadline_margin: Duration::from_millis(250),
            max_body_bytes: 6 * 1024 * 1024,
        }
    }
}

#[allow(missing_debug_implementations)]
struct Inner {
    handler: Box<dyn Handler>,
    settings: FdkSettings,
    fdk_version: HeaderValue,
    runtime: HeaderValue,
    logframe: Option<(String, HeaderName)>,
    /// The platform sends one call at a time; this keeps it so even if a client does not.
    one_call: tokio::sync::Mutex<()>,
}

/// Builds the router: every method and path reaches the same entry point so that nothing ever answers
/// 404/405, which the platform would treat as a broken container.
pub fn router(handler: impl Handler, settings: FdkSettings) -> Router {
    let header_value =
        |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let logframe = match (
        settings.config.get("FN_LOGFRAME_NAME"),
        settings.config.get("FN_LOGFRAME_HDR"),
    ) {
        (Some(name), Some(hdr)) if !name.is_empty() => HeaderName::from_bytes(hdr.as_bytes())
            .ok()
            .map(|h| (name.to_string(), h)),
        _ => None,
    };
    let inner = Inner {
        fdk_version: header_value(&settings.fdk_version),
        runtime: header_value(&settings.runtime),
        handler: Box::new(Deadline(CatchPanic(handler))),
        settings,
        logframe,
        one_call: tokio::sync::Mutex::new(()),
    };
    Router::new().fallback(entry).with_state(Arc::new(inner))
}

async fn entry(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    write_logframe(&inner, request.headers());
    let call_id = request
        .headers()
        .get("fn-call-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let span = tracing::info_span!("call", call_id = %call_id);
    // The call runs as a task of its own: if the caller goes away (Fn's own timeout, a restart),
    // the work still runs to its end within the deadline, and everything it logs is logged. Only
    // the answer is lost, which no one is left to read.
    let call = tokio::spawn(handle(inner.clone(), request).instrument(span));
    match call.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %Chain(&e), "the call's task ended abnormally");
            platform_error(
                &inner,
                StatusCode::BAD_GATEWAY,
                "the function failed; see the function log",
            )
        }
    }
}

async fn handle(inner: Arc<Inner>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST || parts.uri.path() != "/call" {
        // Fn only ever sends POST /call; anything else is answered as an error the platform understands.
        tracing::error!(method = %parts.method, path = %parts.uri.path(), "unexpected request: only POST /call is served");
        return platform_error(&inner, StatusCode::BAD_GATEWAY, "only POST /call is served");
    }
    let ctx = context_from(&parts.headers, &inner.settings);

    // One call at a time, but an earlier call never holds this one past its own deadline.
    let deadline = ctx.deadline;
    let Ok(_one) = tokio::time::timeout_at(deadline, inner.one_call.lock()).await else {
        tracing::error!("an earlier call still held the function at this call's deadline");
        return platform_error(
            &inner,
            StatusCode::GATEWAY_TIMEOUT,
            "an earlier call was still running at this call's deadline",
        );
    };
    // A body that trickles in is read only until the deadline.
    let read = tokio::time::timeout_at(deadline, read_body(body, inner.settings.max_body_bytes));
    let payload = match read.await {
        Ok(Ok(p)) => p,
        Err(_) => {
            tracing::error!("the request body was still arriving at the call deadline");
            return platform_error(
                &inner,
                StatusCode::GATEWAY_TIMEOUT,
                "the request body was still arriving at the call deadline",
            );
        }
        Ok(Err(e)) => {
            tracing::error!(error = %Chain(&e), "could not read the request body");
            return platform_error(
                &inner,
                StatusCode::BAD_GATEWAY,
                "could not read the request body",
            );
        }
    };
    let gateway = ctx.is_gateway();
    if ctx.remaining().is_zero() {
        // No budget left: starting work now could only be cut off half-way.
        tracing::error!("the call arrived with its deadline already passed");
        return platform_error(
            &inner,
            StatusCode::GATEWAY_TIMEOUT,
            "the call deadline had already passed",
        );
    }
    match inner.handler.call(ctx, payload).await {
        Ok(response) => success(&inner, response, gateway),
        Err(error) if error.is::<DeadlineExceeded>() => {
            tracing::error!(error = %Chain(&*error), "handler failed");
            platform_error(
                &inner,
                StatusCode::GATEWAY_TIMEOUT,
                "the function ran out of time",
            )
        }
        Err(error) => {
            tracing::error!(error = %Chain(&*error), "handler failed");
            platform_error(
                &inner,
                StatusCode::BAD_GATEWAY,
                "the function failed; see the function log",
            )
        }
    }
}

fn context_from(headers: &HeaderMap, settings: &FdkSettings) -> CallContext {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let call_id = text("fn-call-id");
    let now = SystemTime::now();
    let platform_deadline = match text("fn-deadline") {
        Some(raw) => {
            let parsed = parse_deadline(&raw);
            if parsed.is_none() {
                tracing::warn!(value = %raw, default_seconds = DEFAULT_CALL_BUDGET.as_secs(), "Fn-Deadline is not an RFC 3339 time; using the default budget");
            }
            parsed
        }
        None => {
            tracing::warn!(
                default_seconds = DEFAULT_CALL_BUDGET.as_secs(),
                "no Fn-Deadline header; using the default budget"
            );
            None
        }
    };
    let budget = platform_deadline
        .map(|d| handler_budget(d, now, settings.deadline_margin))
        .unwrap_or(DEFAULT_CALL_BUDGET);
    let intent = text("fn-intent");
    let gateway = intent
        .as_deref()
        .filter(|i| i.eq_ignore_ascii_case("httprequest"))
        .map(|_| GatewayRequest {
            method: text("fn-http-method"),
            request_url: text("fn-http-request-url"),
            headers: headers
                .iter()
                .filter_map(|(name, value)| {
                    let stripped = name.as_str().strip_prefix("fn-http-h-")?;
                    Some((stripped.to_string(), value.to_str().ok()?.to_string()))
                })
                .collect(),
        });
    CallContext {
        call_id,
        deadline: Instant::now() + budget,
        platform_deadline,
        intent,
        gateway,
        content_type: text("content-type"),
        headers: headers.clone(),
        config: settings.config.clone(),
    }
}

/// Writes the platform's log-frame line on both streams before anything else of the call is logged.
fn write_logframe(inner: &Inner, headers: &HeaderMap) {
    let Some((name, header)) = &inner.logframe else {
        return;
    };
    let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let line = format!("\n{name}={value}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes()).and_then(|_| err.flush());
}

async fn read_body(body: Body, limit: usize) -> Result<Payload, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        received = received.saturating_add(chunk.len());
        if received <= limit {
            buf.extend_from_slice(&chunk);
        } else if !buf.is_empty() {
            buf = Vec::new();
        }
    }
    Ok(if received <= limit {
        Payload::Complete(Bytes::from(buf))
    } else {
        Payload::TooLarge { limit, received }
    })
}

fn success(inner: &Inner, response: FnResponse, gateway: bool) -> Response {
    let mut out = Response::new(Body::from(response.body));
    let headers = out.headers_mut();
    for (name, value) in response.headers {
        let keep = !gateway
            || name == axum::http::header::CONTENT_TYPE
            || name.as_str().starts_with("fn-");
        if keep {
            headers.append(name, value);
        } else if let Ok(prefixed) =
            HeaderName::from_bytes(format!("fn-http-h-{}", name.as_str()).as_bytes())
        {
            headers.append(prefixed, value);
        }
    }
    if gateway {
        headers.insert(
            "fn-http-status",
            HeaderValue::from(response.status.as_u16()),
        );
    }
    if !headers.contains_key(axum::http::header::CONTENT_TYPE) {
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    stamp(inner, out)
}

fn platform_error(inner: &Inner, status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    *out.status_mut() = status;
    stamp(inner, out)
}

fn stamp(inner: &Inner, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("fn-fdk-version", inner.fdk_version.clone());
    headers.insert("fn-fdk-runtime", inner.runtime.clone());
    response
}

/// An error and its causes, `: `-separated: errors say only their own part in `Display`, so the log
/// line prints the chain once.
struct Chain<'a>(&'a (dyn std::error::Error + 'a));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    fn settings(max_body: usize) -> FdkSettings {
        let mut s = FdkSettings::new(
            "fdk-rust-test/1.2.3".into(),
            "rust/test".into(),
            FnConfig::default(),
        );
        s.max_body_bytes = max_body;
        s
    }

    /// Answers with what the handler saw, so each header edge case can be asserted on.
    async fn inspect(ctx: CallContext, payload: Payload) -> Result<FnResponse, HandlerError> {
        let payload = match payload {
            Payload::Complete(b) => serde_json::json!({ "len": b.len() }),
            Payload::TooLarge { limit, received } => {
                serde_json::json!({ "limit": limit, "received": received })
            }
        };
        if ctx.header("x-fail").is_some() {
            return Err("asked to fail".into());
        }
        Ok(FnResponse::json(
            StatusCode::OK,
            &serde_json::json!({
                "callId": ctx.call_id,
                "remainingMs": ctx.remaining().as_millis() as u64,
                "hasPlatformDeadline": ctx.platform_deadline.is_some(),
                "gateway": ctx.gateway.as_ref().map(|g| g.headers.clone()),
                "payload": payload,
            }),
        ))
    }

    async fn call(
        req: HttpRequest<Body>,
        max_body: usize,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = router(inspect, settings(max_body))
            .oneshot(req)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    fn post() -> axum::http::request::Builder {
        HttpRequest::builder().method("POST").uri("/call")
    }

    #[tokio::test]
    async fn non_utf8_call_id_and_bad_deadline_do_not_panic() {
        let req = post()
            .header("fn-call-id", HeaderValue::from_bytes(b"\xff\xfe").unwrap())
            .header("fn-deadline", "2030-02-30T00:00:00Z")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(req, 1024).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["fn-fdk-version"], "fdk-rust-test/1.2.3");
        assert_eq!(body["callId"], serde_json::Value::Null);
        assert_eq!(body["hasPlatformDeadline"], false);
        assert!(body["remainingMs"].as_u64().unwrap() > 29_000);
    }

    #[tokio::test]
    async fn past_deadline_gives_504_at_once() {
        let req = post()
            .header("fn-deadline", "2001-01-01T00:00:00Z")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = call(req, 1024).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(headers["fn-fdk-runtime"], "rust/test");
    }

    #[tokio::test]
    async fn gateway_headers_are_unprefixed_for_the_handler() {
        let req = post()
            .header("fn-intent", "HTTPREQUEST")
            .header("fn-http-h-x-a", "1")
            .header("fn-http-h-accept", "text/plain")
            .header("x-other", "2")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(req, 1024).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["fn-http-status"], "200");
        assert_eq!(
            body["gateway"],
            serde_json::json!([["x-a", "1"], ["accept", "text/plain"]])
        );
    }

    #[tokio::test]
    async fn oversized_body_is_reported_not_truncated() {
        let (_, _, body) = call(post().body(Body::from(vec![0u8; 100])).unwrap(), 64).await;
        assert_eq!(
            body["payload"],
            serde_json::json!({ "limit": 64, "received": 100 })
        );
        let (_, _, body) = call(post().body(Body::from(vec![0u8; 64])).unwrap(), 64).await;
        assert_eq!(body["payload"], serde_json::json!({ "len": 64 }));
    }

    #[tokio::test]
    async fn errors_and_strange_requests_stay_within_200_502_504() {
        let (status, headers, _) = call(
            post().header("x-fail", "1").body(Body::empty()).unwrap(),
            64,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(headers.contains_key("fn-fdk-version"));
        for (method, uri) in [
            ("GET", "/call"),
            ("DELETE", "/call"),
            ("POST", "/"),
            ("POST", "/call/extra"),
        ] {
            let req = HttpRequest::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let (status, headers, _) = call(req, 64).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{method} {uri}");
            assert!(headers.contains_key("fn-fdk-runtime"));
        }
    }
}
