//! The API's accept loop: every connection is served by hyper's HTTP/1 server with a
//! header-read timeout and counted against a cap, so idle, slow or never-finishing clients
//! cannot hold the agent's file descriptors (which git fetches and runtime listings need
//! too).
//!
//! hyper starts the header-read timer whenever a connection waits for a request head, also
//! between two requests on a kept-alive connection, so the one timeout closes both a
//! slowloris client and an idle one. A response being streamed (`GET /events`) is not
//! waiting for a head and is not cut. Connections over the cap are closed as soon as they
//! are accepted rather than left queued with a descriptor each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// The client's address, in each request's extensions (see the webhook's rate limit).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// How long connections may idle and how many may be open at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// A client must send a whole request head within this long after the connection
    /// opens or its previous response ends.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// How long a request may take, its body included, until its answer starts: three
    /// header-read timeouts.
    pub fn request_timeout(&self) -> Duration {
        self.header_read_timeout * 3
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// How long shutdown waits for requests in flight once it has asked connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// requests in flight finish (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept:
                    // neither is fatal, and retrying at once would spin.
                    warn!(error = %crate::error_text::chain(&e), "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(peer = %peer, limit = limits.max_connections, "connection cap reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let request_timeout = limits.request_timeout();
        connections.spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    let mut app = app.clone();
                    let answer = tower_service::Service::call(&mut app, request);
                    async move {
                        // Until its answer starts: a client that trickles a body in holds
                        // a connection no longer than this. A streamed answer (`GET
                        // /events`) has started by then and is not cut.
                        match tokio::time::timeout(request_timeout, answer).await {
                            Ok(answer) => answer,
                            Err(_) => Ok(super::error::ApiError::new(
                                axum::http::StatusCode::REQUEST_TIMEOUT,
                                "REQUEST_TIMEOUT",
                                format!(
                                    "the request was not received and answered within {:.1} s",
                                    request_timeout.as_secs_f64()
                                ),
                            )
                            .into_response()),
                        }
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(peer = %peer, error = %crate::error_text::chain(&e), "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
    Ok(())
}
