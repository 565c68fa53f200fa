//! A small Fn FDK: the `http-stream` protocol on a Unix socket.
//!
//! This module knows nothing about identity domains. It validates `FN_FORMAT`/`FN_LISTENER`, binds the
//! socket the way the platform expects ([`ListenerSpec`]), and serves `POST /call` with any [`Handler`]:
//! an async function from a [`CallContext`] and the request [`Payload`] to an [`FnResponse`].
//!
//! ```no_run
//! use oci_user_capabilities::fdk::*;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = ListenerSpec::from_lookup(&|k| std::env::var(k).ok())?;
//! let listener = spec.bind()?;
//! let settings = FdkSettings::new("fdk-rust-demo/0.1.0".into(), "rust/1.95.0".into(), FnConfig::from_process_env());
//! let app = router(
//!     |_ctx: CallContext, _payload: Payload| async {
//!         Ok::<_, HandlerError>(FnResponse::new(axum::http::StatusCode::OK, "text/plain", "hello"))
//!     },
//!     settings,
//! );
//! serve(listener, app, std::future::pending()).await?;
//! spec.cleanup();
//! # Ok(()) }
//! ```
mod context;
mod listener;
mod server;

pub use context::{
    handler_budget, parse_deadline, CallContext, FnConfig, GatewayRequest, DEFAULT_CALL_BUDGET,
};
pub use listener::{ListenerSpec, StartError, MAX_SOCKET_PATH_BYTES};
pub use server::{
    router, serve, FdkSettings, FnResponse, Handler, HandlerError, HandlerFuture, Payload,
};

/// Resolves on SIGTERM or SIGINT. The platform may also just kill the container; nothing depends on this.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
