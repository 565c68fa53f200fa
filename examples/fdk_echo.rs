//! A minimal function on the FDK, used by the platform tests to exercise every FDK path without the
//! product's handler. The request body picks the behaviour:
//! `error` → handler error, `panic` → panic, `sleep:<ms>` → sleep, `headers` → sets a user header;
//! anything else is echoed back with the call context.

use std::process::ExitCode;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use oci_user_capabilities::fdk::{self, CallContext, FnResponse, HandlerError, Payload, RunError};

async fn handle(ctx: CallContext, payload: Payload) -> Result<FnResponse, HandlerError> {
    let body = match payload {
        Payload::Complete(b) => String::from_utf8_lossy(&b).into_owned(),
        Payload::TooLarge { received, .. } => format!("too-large:{received}"),
    };
    println!(
        "handler stdout for {}",
        ctx.call_id.as_deref().unwrap_or("-")
    );
    eprintln!(
        "handler stderr for {}",
        ctx.call_id.as_deref().unwrap_or("-")
    );
    if body == "error" {
        return Err("deliberate handler error".into());
    }
    if body == "panic" {
        panic!("deliberate handler panic");
    }
    if let Some(ms) = body
        .strip_prefix("sleep:")
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let echo = serde_json::json!({
        "callId": ctx.call_id,
        "remainingMs": ctx.remaining().as_millis() as u64,
        "intent": ctx.intent,
        "gatewayMethod": ctx.gateway.as_ref().and_then(|g| g.method.clone()),
        "gatewayUrl": ctx.gateway.as_ref().and_then(|g| g.request_url.clone()),
        "gatewayHeaders": ctx.gateway.as_ref().map(|g| g.headers.clone()),
        "configKey": ctx.config.get("ECHO_CONFIG"),
        "body": body,
    });
    Ok(FnResponse::json(StatusCode::CREATED, &echo).with_header(
        HeaderName::from_static("x-echo"),
        HeaderValue::from_static("1"),
    ))
}

fn main() -> ExitCode {
    oci_user_capabilities::report::telemetry::init(oci_user_capabilities::config::LogFormat::Json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(fdk::run(handle, "fdk-rust-echo/0.1.0", "rust/test")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ RunError::Start(_)) => {
            eprintln!("fdk_echo: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("fdk_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
