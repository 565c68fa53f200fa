//! The smallest function: answers every call with what it received.
//!
//! Run it the way the platform would: `FN_LISTENER=unix:/tmp/fdk-hello/lsnr.sock cargo run -p oci-fdk
//! --example hello` (the directory must exist), then
//! `curl --unix-socket /tmp/fdk-hello/lsnr.sock -d 'hi' http://localhost/call`.

use oci_fdk::{CallContext, FnResponse, HandlerError, Payload, StatusCode};

async fn hello(ctx: CallContext, payload: Payload) -> Result<FnResponse, HandlerError> {
    let received = match payload {
        Payload::Complete(body) => body.len(),
        Payload::TooLarge { received, .. } => received,
    };
    let answer = serde_json::json!({
        "callId": ctx.call_id,
        "bytes": received,
        "msLeft": ctx.remaining().as_millis() as u64,
    });
    Ok(FnResponse::json(StatusCode::OK, &answer))
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hello: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(oci_fdk::run(hello, "fdk-rust-hello/0.1.0", "rust")) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
