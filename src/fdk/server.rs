//! The HTTP half of the Fn `http-stream` contract: `POST /call`, one call at a time, and only the
//! statuses the platform accepts (200, 502, 504) ever leave this module.

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::{FutureExt, StreamExt};
use tokio::net::UnixListener;
use tokio::time::Instant;
use tracing::Instrument;

use super::context::{
    handler_budget, parse_deadline, CallContext, FnConfig, GatewayRequest, DEFAULT_CALL_BUDGET,
};

/// The request body as far as the FDK read it.
#[derive(Debug, Clone)]
pub enum Payload {
    Complete(Bytes),
    /// The body exceeded the configured limit; the rest was read and discarded so the connection stays
    /// usable. `received` is the full length.
    TooLarge {
        limit: usize,
        received: usize,
    },
}

/// What a handler answers. `status` reaches the client only on gateway calls (as `Fn-Http-Status`); on
/// plain calls a handler's success is always a 200 to the platform.
#[derive(Debug, Clone)]
pub struct FnResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl FnResponse {
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

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }
}

/// A handler failure: the platform gets a 502 (and may retry); the text goes to the log, because the
/// platform discards a 502 body.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<FnResponse, HandlerError>> + Send>>;

/// The function behind the socket.
pub trait Handler: Send + Sync + 'static {
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
pub struct FdkSettings {
    pub fdk_version: String,
    pub runtime: String,
    pub config: FnConfig,
    /// The FDK answers 504 this long before the platform's deadline.
    pub deadline_margin: Duration,
    pub max_body_bytes: usize,
}

impl FdkSettings {
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
        handler: Box::new(handler),
        settings,
        logframe,
        one_call: tokio::sync::Mutex::new(()),
    };
    Router::new().fallback(entry).with_state(Arc::new(inner))
}

/// Serves until `shutdown` completes, then lets the call in flight finish.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
    handle(inner, request).instrument(span).await
}

async fn handle(inner: Arc<Inner>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST || parts.uri.path() != "/call" {
        // Fn only ever sends POST /call; anything else is answered as an error the platform understands.
        tracing::error!(method = %parts.method, path = %parts.uri.path(), "unexpected request: only POST /call is served");
        return platform_error(&inner, StatusCode::BAD_GATEWAY, "only POST /call is served");
    }
    let ctx = context_from(&parts.headers, &inner.settings);

    let _one = inner.one_call.lock().await;
    let payload = match read_body(body, inner.settings.max_body_bytes).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not read the request body");
            return platform_error(
                &inner,
                StatusCode::BAD_GATEWAY,
                "could not read the request body",
            );
        }
    };
    let deadline = ctx.deadline;
    let gateway = ctx.is_gateway();
    let call = AssertUnwindSafe(inner.handler.call(ctx, payload)).catch_unwind();
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(Ok(response))) => success(&inner, response, gateway),
        Ok(Ok(Err(error))) => {
            tracing::error!(error = %error, "handler failed");
            platform_error(
                &inner,
                StatusCode::BAD_GATEWAY,
                "the function failed; see the function log",
            )
        }
        Ok(Err(panic)) => {
            tracing::error!(panic = %panic_message(&panic), "handler panicked");
            platform_error(
                &inner,
                StatusCode::BAD_GATEWAY,
                "the function failed; see the function log",
            )
        }
        Err(_) => {
            tracing::error!("handler did not finish before the call deadline");
            platform_error(
                &inner,
                StatusCode::GATEWAY_TIMEOUT,
                "the function ran out of time",
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

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
