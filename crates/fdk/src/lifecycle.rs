//! The container's life: read the platform's environment, bind the socket, serve until told to stop,
//! and leave no socket file behind.

use std::path::Path;

use tokio::net::UnixListener;

use crate::{router, FdkSettings, FnConfig, Handler, ListenerSpec, StartError};

/// Why [`run`] returned with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The platform's environment or the socket was unusable; nothing was served.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The server stopped on an I/O error after it had started.
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
}

/// What the platform told the container at start, checked: the socket to listen on and the FDK
/// settings. Nothing is bound yet, so a caller can validate its own configuration before the
/// function looks ready.
#[derive(Debug)]
pub struct Fdk {
    spec: ListenerSpec,
    settings: FdkSettings,
}

impl Fdk {
    /// Reads `FN_LISTENER`, `FN_FORMAT` and the function configuration from the process environment.
    /// `fdk_version` and `runtime` become the `Fn-Fdk-Version` and `Fn-Fdk-Runtime` headers.
    pub fn from_env(
        fdk_version: impl Into<String>,
        runtime: impl Into<String>,
    ) -> Result<Self, StartError> {
        let spec = ListenerSpec::from_lookup(&|key| std::env::var(key).ok())?;
        let settings = FdkSettings::new(
            fdk_version.into(),
            runtime.into(),
            FnConfig::from_process_env(),
        );
        Ok(Fdk { spec, settings })
    }

    /// From an already validated listener and settings.
    pub fn new(spec: ListenerSpec, settings: FdkSettings) -> Self {
        Fdk { spec, settings }
    }

    /// The settings, to adjust before [`Fdk::bind`].
    pub fn settings_mut(&mut self) -> &mut FdkSettings {
        &mut self.settings
    }

    /// Installs SIGTERM/SIGINT handling, then binds and announces the socket. Must run inside a Tokio
    /// runtime. Signals come first so that one arriving right after the announcement is not fatal.
    pub fn bind(self) -> Result<BoundFdk, StartError> {
        let shutdown = ShutdownSignal::install();
        let listener = self.spec.bind()?;
        Ok(BoundFdk {
            listener,
            settings: self.settings,
            shutdown,
            socket: SocketGuard(self.spec),
        })
    }
}

/// Removes the announced link and the socket when dropped, whatever way serving ended.
#[derive(Debug)]
struct SocketGuard(ListenerSpec);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

/// A socket the platform can already connect to (calls wait in the backlog until [`BoundFdk::serve`]).
/// Dropping it removes the socket files.
#[derive(Debug)]
pub struct BoundFdk {
    listener: UnixListener,
    settings: FdkSettings,
    shutdown: ShutdownSignal,
    socket: SocketGuard,
}

impl BoundFdk {
    /// The socket's announced path (`FN_LISTENER` without `unix:`).
    pub fn socket(&self) -> &Path {
        self.socket.0.announced()
    }

    /// Serves calls with `handler` (panics and the deadline handled around it) until SIGTERM or SIGINT,
    /// lets the call in flight finish, and removes the socket files.
    pub async fn serve(self, handler: impl Handler) -> Result<(), RunError> {
        let BoundFdk {
            listener,
            settings,
            shutdown,
            socket,
        } = self;
        let served = axum::serve(listener, router(handler, settings))
            .with_graceful_shutdown(shutdown.wait())
            .await;
        drop(socket);
        served.map_err(RunError::Serve)
    }
}

/// Runs a function the way the platform expects, in one call: reads the environment, binds the socket,
/// handles signals and serves `handler` until the container is told to stop.
///
/// ```no_run
/// use oci_fdk::{CallContext, FnResponse, HandlerError, Payload};
///
/// async fn hello(_ctx: CallContext, _payload: Payload) -> Result<FnResponse, HandlerError> {
///     Ok(FnResponse::new(oci_fdk::StatusCode::OK, "text/plain", "hello"))
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), oci_fdk::RunError> {
///     oci_fdk::run(hello, "fdk-rust-hello/0.1.0", "rust").await
/// }
/// ```
pub async fn run(
    handler: impl Handler,
    fdk_version: impl Into<String>,
    runtime: impl Into<String>,
) -> Result<(), RunError> {
    Fdk::from_env(fdk_version, runtime)?
        .bind()?
        .serve(handler)
        .await
}

/// SIGTERM/SIGINT listeners, registered when this is created (inside the runtime).
#[derive(Debug)]
struct ShutdownSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        ShutdownSignal {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on SIGTERM or SIGINT. The platform may also just kill the container; nothing depends
    /// on this.
    async fn wait(self) {
        async fn next(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(self.term) => {},
            _ = next(self.int) => {},
        }
    }
}
