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

/// SIGTERM/SIGINT listeners, registered when this is created (inside the runtime) so that a signal that
/// arrives right after the socket is announced is not fatal.
pub struct ShutdownSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Must run inside a Tokio runtime, before the socket is announced.
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        ShutdownSignal {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on SIGTERM or SIGINT. The platform may also just kill the container; nothing depends on
    /// this.
    pub async fn wait(self) {
        let ShutdownSignal { term, int } = self;
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async move {
            match int {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {},
            _ = int => {},
        }
    }
}
