//! Taking connections from the open internet. `axum::serve` keeps a half-sent request, a body that
//! never comes and an idle keep-alive open forever, takes connections until the process runs out
//! of descriptors, and on shutdown waits for each of them. Here:
//!
//! - the request line and headers must arrive within [`HEADER_TIMEOUT`], and an idle keep-alive
//!   connection waits no longer than that for its next request (hyper's header timer starts when
//!   a connection is ready for a request, not at its first byte);
//! - a whole request, body included, must be answered within [`REQUEST_TIMEOUT`] (Twilio gives
//!   up on a webhook after 15 s anyway), or it gets 408 and its connection closes;
//! - at most `max_connections` are open, counting HTTP connections and the relay's live media
//!   streams; past that a connection is closed as soon as it is accepted, so `/healthz` and the
//!   calls already on keep their descriptors;
//! - when the server stops, idle connections close at once and busy ones get [`CLOSE_GRACE`].
//!
//! A WebSocket upgrade leaves the HTTP connection here and becomes a live stream, counted by the
//! relay's [`crate::drain::Drain`] until it ends.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// For the request line and headers, and for an idle keep-alive connection's next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// For a whole request: headers, body and answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// When the server stops, how long a connection still mid-request gets to finish.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After `accept` fails (out of descriptors, most likely), how long to wait before trying again,
/// rather than spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections: the HTTP ones this module holds, and whatever else `also_open` counts.
#[derive(Clone)]
pub struct Limit {
    pub max_connections: usize,
    /// Connections held elsewhere that count against the cap (the relay's live streams).
    pub also_open: Arc<dyn Fn() -> usize + Send + Sync>,
}

/// Serves `router` on `listener` within the limits above until `stop` resolves; then closes the
/// connections (idle ones at once, busy ones within [`CLOSE_GRACE`]) and returns.
pub async fn serve(listener: TcpListener, router: axum::Router, limit: Limit, stop: impl Future<Output = ()>) {
    let service = TowerToHyperService::new(router.layer(axum::middleware::from_fn(request_deadline)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let (closing, _) = tokio::sync::watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    let mut refused: u64 = 0;
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
            () = &mut stop => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) + (limit.also_open)() >= limit.max_connections {
            refused += 1;
            // Logged on the first and then every thousandth, so a flood does not become a log flood.
            if refused % 1000 == 1 {
                tracing::warn!(max_connections = limit.max_connections, refused, "connection cap reached; closing new connections");
            }
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        // The peer's address, for what limits by client (the CRM's sign-in) as axum's ConnectInfo.
        let service = service.clone();
        let with_peer = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            hyper::service::Service::call(&service, request)
        });
        let connection = builder.serve_connection(TokioIo::new(socket), with_peer).with_upgrades();
        let mut closing = closing.subscribe();
        let held = Held::new(&open);
        connections.spawn(async move {
            let _held = held;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing.wait_for(|c| *c) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    closing.send_replace(true);
    if tokio::time::timeout(CLOSE_GRACE, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open = connections.len(), "connections still mid-request at the close grace; closing them");
        connections.shutdown().await;
    }
}

/// Counts an open HTTP connection until dropped.
struct Held(Arc<AtomicUsize>);

impl Held {
    fn new(open: &Arc<AtomicUsize>) -> Held {
        open.fetch_add(1, Ordering::Relaxed);
        Held(open.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// 408 for a request not answered within [`REQUEST_TIMEOUT`]: a body trickled in, or never sent.
async fn request_deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "the request was not complete in time\n").into_response(),
    }
}
