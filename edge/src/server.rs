//! The HTTP accept loop: HTTP/1.1 and HTTP/2 on one listener, bounded headers, and a
//! graceful shutdown that lets in-flight requests finish within a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::State;
use crate::routes::Routes;

/// Time a client gets to send the request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes buffered for one request head (HTTP/1) or header list (HTTP/2).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The HTTP/1.1 + HTTP/2 connection builder with the edge's limits (also used by the
/// benchmark's baseline server, so both parse requests alike).
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

/// Accepts connections until `shutdown` resolves, then waits up to `grace` for open
/// requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    grace: Duration,
    routes: Routes,
) {
    let builder = http_builder();
    let graceful = GracefulShutdown::new();
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(crate::routes::route(&state, routes, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down, letting in-flight requests finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over, closing open connections");
        }
    }
}
