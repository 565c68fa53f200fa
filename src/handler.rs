//! The function behind the socket: invocation body in, per-user report out.

use axum::http::StatusCode;

use crate::fdk::{CallContext, FnResponse, HandlerError, Payload};

/// Counts the records of a batch and acts on none of them (until the enforcement engine is wired in).
pub async fn placeholder(_ctx: CallContext, payload: Payload) -> Result<FnResponse, HandlerError> {
    let received = match &payload {
        Payload::Complete(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Array(items)) => items.len(),
            Ok(_) => 1,
            Err(_) => 0,
        },
        Payload::TooLarge { .. } => 0,
    };
    let report = serde_json::json!({ "received": received, "note": "enforcement not enabled in this build" });
    Ok(FnResponse::json(StatusCode::OK, &report))
}
