//! A minimal function on the FDK, used by the platform tests to exercise every FDK path without the
//! product's handler. The request body picks the behaviour:
//! `error` → handler error, `panic` → panic, `sleep:<ms>` → sleep, `headers` → sets a user header;
//! anything else is echoed back with the call context.

use std::process::ExitCode;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use oci_user_capabilities::fdk::{
    self, CallContext, FdkSettings, FnConfig, FnResponse, HandlerError, ListenerSpec, Payload,
};

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
    let mut response = FnResponse::json(StatusCode::CREATED, &echo);
    response.headers.push((
        HeaderName::from_static("x-echo"),
        HeaderValue::from_static("1"),
    ));
    Ok(response)
}

fn main() -> ExitCode {
    let spec = match ListenerSpec::from_lookup(&|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fdk_echo: {e}");
            return ExitCode::from(2);
        }
    };
    oci_user_capabilities::telemetry::init(oci_user_capabilities::telemetry::LogStyle::Json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let shutdown = fdk::ShutdownSignal::install();
        let listener = match spec.bind() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fdk_echo: {e}");
                return ExitCode::from(2);
            }
        };
        let settings = FdkSettings::new(
            "fdk-rust-echo/0.1.0".into(),
            "rust/test".into(),
            FnConfig::from_process_env(),
        );
        let served = fdk::serve(listener, fdk::router(handle, settings), shutdown.wait()).await;
        spec.cleanup();
        if served.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
