//! The accept/serve loop every loopback stand-in shares (identity domain, Functions, Monitoring):
//! an ephemeral port on 127.0.0.1, every request to one handler, stopped when dropped.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Request, Response};

/// A running loopback HTTP server; it stops (gracefully) when dropped.
pub struct LoopbackServer {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LoopbackServer {
    /// Binds an ephemeral loopback port and serves every request with the handler `make` returns
    /// for that address (a stand-in that names itself in its answers needs it).
    pub async fn start<H, F>(make: impl FnOnce(SocketAddr) -> H) -> Self
    where
        H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new().fallback(make(addr));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        LoopbackServer { addr, _stop: stop }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
