//! The HTTP accept loop: HTTP/1.1 and HTTP/2 on one listener, bounded headers, the
//! connection cap, each connection's deadlines (in [`connection`]), and a graceful
//! shutdown that lets in-flight requests finish within a grace period.

mod connection;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hookline_tls::ServerTls;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::State;
use crate::limits::Limits;
use crate::routes::Routes;

/// Most bytes buffered for one request head (HTTP/1) or header list (HTTP/2).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Under a flood of connections beyond the cap, one line per this interval says so.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The HTTP/1.1 + HTTP/2 connection builder with the edge's limits (also used by the
/// benchmark's baseline server, so both parse requests alike).
///
/// HTTP/1 has no header read timeout of hyper's: its timer runs whenever a connection
/// waits for a head, idle or not, so it would cut kept-alive connections at its value
/// whatever `idle_timeout` says. The first head is bounded by `first_request_timeout`
/// and every later one by `idle_timeout` instead, both enforced by the accept loop.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_http2_streams)
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(limits.http2_keep_alive_timeout);
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
    limits: Limits,
    tls: Option<ServerTls>,
) {
    let listener_label = match routes {
        Routes::All | Routes::Webhooks => "webhooks",
        Routes::Metrics => "metrics",
    };
    let builder = http_builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection holds a receiver: true asks it to close, and the channel closing
    // tells that the last connection is gone.
    let (closing, _) = watch::channel(false);
    let mut refusals = Refusals::default();
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
                // At the cap, the connection is accepted and closed at once rather than
                // left in the kernel's backlog, where it would hold a sender that is
                // not going to be served and crowd out those that might.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refuse(stream);
                    state.metrics.connection_refused(listener_label);
                    refusals.count(limits.max_connections, listener_label);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let open = state.metrics.connection_opened(listener_label);
                let (tracker, load) = connection::Tracker::new();
                let served = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = served.clone();
                    let in_flight = tracker.start();
                    async move {
                        let resp = crate::routes::route(&state, routes, req).await;
                        drop(in_flight);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let closing = closing.subscribe();
                let state = state.clone();
                let builder = builder.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let end = match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            connection::drive(conn, |c| c.graceful_shutdown(), load, closing, &limits).await
                        }
                        // The handshake counts against the time a first request has.
                        Some(tls) => match tokio::time::timeout(limits.first_request_timeout, tls.acceptor().accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let conn = builder.serve_connection(TokioIo::new(stream), service);
                                connection::drive(conn, |c| c.graceful_shutdown(), load, closing, &limits).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(listener = listener_label, error = %e, "tls handshake failed");
                                connection::End::Done
                            }
                            Err(_) => connection::End::FirstRequestTimeout,
                        },
                    };
                    if let Some(reason) = end.timeout_reason() {
                        tracing::debug!(listener = listener_label, reason, "connection closed");
                        state.metrics.connection_closed(listener_label, reason);
                    }
                    drop((open, slot));
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down, letting in-flight requests finish");
    closing.send_replace(true);
    tokio::select! {
        () = closing.closed() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over, closing open connections");
        }
    }
}

/// Closes a connection refused at the cap with a reset: it frees the socket at once,
/// where a normal close would leave it waiting in TIME_WAIT, one per refusal in a flood.
fn refuse(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Counts refusals between log lines, so that a flood writes one line per interval.
#[derive(Debug, Default)]
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, max_connections: usize, listener: &'static str) {
        self.unlogged += 1;
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            listener,
            max_connections,
            refused = self.unlogged,
            "connections refused, max_connections are open"
        );
        self.unlogged = 0;
        self.logged_at = Some(Instant::now());
    }
}
