//! The accept loop: what a socket may hold before it is a request.
//!
//! axum's `serve` installs no timer, so hyper's header timeout never fires
//! and a client that sends half a request holds its connection, and the
//! memory behind it, for as long as it likes. This loop owns the bounds
//! below the router: at most `--max-connections` sockets at once (further
//! clients wait in the kernel's accept queue), each closed if a request's
//! headers have not all arrived within `--header-read-timeout` (which also
//! ends idle keep-alive connections), and header blocks of at most
//! [`MAX_HEADER_BUFFER`] bytes. Bodies are bounded by the handler
//! (`http::read_body`), which has the request's context.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::metric;

/// The most a connection buffers while reading a request head; a longer head
/// is refused (431) rather than buffered. The widget's heads are under 2 KiB.
pub const MAX_HEADER_BUFFER: usize = 16 * 1024;

/// The connection-level bounds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Sockets served at once.
    pub max_connections: usize,
    /// Time for a request's whole head to arrive, from the moment the
    /// connection is ready to read one.
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` resolves, then lets every open
/// connection finish its request in flight and close.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    let _ = http
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BUFFER);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // A permit first: at the cap, clients wait in the accept queue
        // instead of costing this process memory.
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let (socket, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a reset before accept: the
                    // listener itself is fine, so wait a little and go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<Incoming>| {
                let _ = request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            },
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(socket), service));
        metrics::gauge!(metric::OPEN_CONNECTIONS).increment(1.0);
        let _task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts, resets and malformed requests are the client's
                // doing; nothing to log above debug.
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            metrics::gauge!(metric::OPEN_CONNECTIONS).decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
