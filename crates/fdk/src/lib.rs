//! A small FDK for OCI Functions (Fn): the `http-stream` protocol on a Unix socket.
//!
//! It knows nothing about what the function does. [`run`] reads the platform's environment
//! (`FN_LISTENER`, `FN_FORMAT`, the function configuration), binds the socket the way the platform
//! expects (a private name, mode 0666, then the announced symlink), handles SIGTERM/SIGINT and serves
//! `POST /call` with any [`Handler`]: an async function from a [`CallContext`] and the request
//! [`Payload`] to an [`FnResponse`]. Whatever the handler does, only 200, 502 and 504 reach the
//! platform: a handler error or panic is a 502 (logged, since the platform discards the body), a
//! call past its deadline a 504. (A header block over about 400 KiB, which the HTTP layer will not
//! read, gets hyper's own 431 before any handler runs; see the crate README.)
//!
//! ```no_run
//! use oci_fdk::{CallContext, FnResponse, HandlerError, Payload, StatusCode};
//!
//! async fn hello(ctx: CallContext, payload: Payload) -> Result<FnResponse, HandlerError> {
//!     let size = match payload {
//!         Payload::Complete(body) => body.len(),
//!         Payload::TooLarge { received, .. } => received,
//!     };
//!     let text = format!("call {:?}: {size} bytes", ctx.call_id);
//!     Ok(FnResponse::new(StatusCode::OK, "text/plain", text))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), oci_fdk::RunError> {
//!     oci_fdk::run(hello, "fdk-rust-hello/0.1.0", "rust").await
//! }
//! ```
//!
//! To check your own configuration before the function looks ready (the platform routes calls as soon
//! as the socket is announced), split the steps: [`Fdk::from_env`], your checks, [`Fdk::bind`], then
//! [`BoundFdk::serve`].
mod context;
pub mod layers;
mod lifecycle;
mod listener;
mod server;

pub use axum::http::{HeaderName, HeaderValue, StatusCode};
pub use context::{
    handler_budget, parse_deadline, CallContext, FnConfig, GatewayRequest, DEFAULT_CALL_BUDGET,
};
pub use lifecycle::{run, BoundFdk, Fdk, RunError};
pub use listener::{ListenerSpec, StartError, MAX_SOCKET_PATH_BYTES};
pub use server::{router, FdkSettings, FnResponse, Handler, HandlerError, HandlerFuture, Payload};
