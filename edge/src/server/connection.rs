//! One connection's deadlines: the first request must arrive within
//! `first_request_timeout` of accept, a connection with nothing in flight for
//! `idle_timeout` is closed gracefully, and one that was asked to close but does not
//! finish (an HTTP/2 peer that never answers the closing ping) is dropped once it has had
//! nothing in flight for the keep-alive timeout.
//!
//! They are enforced around the connection future rather than by hyper alone: the
//! protocol detection of hyper-util's `auto` builder waits for bytes without a timer, and
//! hyper's HTTP/1 header timer covers neither a silent socket nor an HTTP/2 preface.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::limits::Limits;

/// What the service reports about its requests, read by [`drive`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests started: a complete HTTP/1 head or HTTP/2 HEADERS arrived.
    requests: u64,
    /// Requests whose handler has not finished.
    in_flight: usize,
}

/// The service's side of a connection's [`Load`]: it marks each request as it starts.
#[derive(Clone, Debug)]
pub struct Tracker(Arc<watch::Sender<Load>>);

impl Tracker {
    /// A tracker and the receiver [`drive`] watches it with.
    pub fn new() -> (Self, watch::Receiver<Load>) {
        let (tx, rx) = watch::channel(Load::default());
        (Self(Arc::new(tx)), rx)
    }

    /// Marks a request started; it is in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight {
        self.0.send_modify(|load| {
            load.requests += 1;
            load.in_flight += 1;
        });
        InFlight(self.0.clone())
    }
}

/// A request in flight on its connection, until dropped (also when its handler is
/// cancelled, so a cut request never leaves the connection counted busy).
#[derive(Debug)]
pub struct InFlight(Arc<watch::Sender<Load>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|load| load.in_flight -= 1);
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed it, or it ended by the protocol's own rules.
    Done,
    /// No request arrived in time: dropped.
    FirstRequestTimeout,
    /// Nothing in flight for the idle timeout: closed gracefully.
    IdleTimeout,
    /// The listener shut down: closed gracefully.
    Shutdown,
}

impl End {
    /// The `reason` label of a close the edge decided for a timeout.
    pub fn timeout_reason(self) -> Option<&'static str> {
        match self {
            Self::FirstRequestTimeout => Some("first_request_timeout"),
            Self::IdleTimeout => Some("idle_timeout"),
            Self::Done | Self::Shutdown => None,
        }
    }
}

/// Drives `conn` to its end under the deadlines of `limits`. `graceful` starts its
/// graceful shutdown; `closing` turns true when the listener shuts down.
pub async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    mut load: watch::Receiver<Load>,
    mut closing: watch::Receiver<bool>,
    limits: &Limits,
) -> End
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let accepted = Instant::now();
    let mut seen = Load::default();
    // Since when nothing has been in flight.
    let mut quiet_since = accepted;
    // Set once the edge asked the connection to close: why. It then only drains.
    let mut closing_for: Option<End> = None;
    let mut load_open = true;
    loop {
        let now = *load.borrow_and_update();
        if now != seen {
            if now.in_flight == 0 {
                quiet_since = Instant::now();
            }
            seen = now;
        }
        let deadline = if now.in_flight > 0 {
            None
        } else if closing_for.is_some() {
            Some(quiet_since + limits.http2_keep_alive_timeout)
        } else if now.requests == 0 {
            Some(accepted + limits.first_request_timeout)
        } else {
            Some(quiet_since + limits.idle_timeout)
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return closing_for.unwrap_or(End::Done);
            }
            changed = load.changed(), if load_open => {
                // The service lives as long as the connection; should it go first, the
                // connection's own end is what remains to wait for.
                load_open = changed.is_ok();
            }
            () = tokio::time::sleep_until(deadline.unwrap_or(accepted)), if deadline.is_some() => {
                // A request that started in the same turn as the timer fired wins.
                if load.has_changed().unwrap_or(false) {
                    continue;
                }
                match closing_for {
                    Some(reason) => return reason,
                    None if now.requests == 0 => return End::FirstRequestTimeout,
                    None => {
                        graceful(conn.as_mut());
                        closing_for = Some(End::IdleTimeout);
                        quiet_since = Instant::now();
                    }
                }
            }
            () = async { let _ = closing.wait_for(|c| *c).await; }, if closing_for.is_none() => {
                // Without a request there is nothing to finish: an HTTP/2 peer that sent
                // only its preface would otherwise hold the shutdown for its closing ping.
                if load.borrow().requests == 0 {
                    return End::Shutdown;
                }
                graceful(conn.as_mut());
                closing_for = Some(End::Shutdown);
                quiet_since = Instant::now();
            }
        }
    }
}
