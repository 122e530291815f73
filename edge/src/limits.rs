//! What one edge process lets its senders hold: the connection limits the accept loop
//! enforces ([`Limits`], checked by `config.rs`), and the budget of request bodies
//! buffered at once across all connections ([`BodyBudget`]), which `webhook.rs` draws on
//! before it buffers a body and gives back when the request is done.

use std::time::Duration;

use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::Error;

/// How long a body waits for its share of the budget before the sender is told to retry.
/// Bodies are read in milliseconds, so a short wait rides out a burst; a longer one would
/// only hold the connection of a sender that will be refused anyway.
const BUDGET_WAIT: Duration = Duration::from_millis(100);

/// The connection limits of every listener the edge runs. Defaults are the production
/// values documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time from accept to the first complete request head (HTTP/1 head or HTTP/2
    /// HEADERS); a connection that sends nothing, a few bytes or only the HTTP/2 preface
    /// is closed after it.
    pub first_request_timeout: Duration,
    /// Time a connection may stay open with no request in flight; it is then closed
    /// gracefully. Also bounds a later HTTP/1 head, which is read while no request is in
    /// flight.
    pub idle_timeout: Duration,
    /// Interval of the HTTP/2 pings that detect a dead peer.
    pub http2_keep_alive_interval: Duration,
    /// Time a ping (a keep-alive one, or the one that closes a connection gracefully)
    /// waits for its answer before the connection is dropped.
    pub http2_keep_alive_timeout: Duration,
    /// Connections served at once per listener; more are accepted and closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_http2_streams: u32,
    /// Bytes of request bodies buffered at once across all connections.
    pub max_buffered_body_bytes: usize,
}

impl Limits {
    pub const DEFAULT_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
    pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
    pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    pub const DEFAULT_MAX_HTTP2_STREAMS: u32 = 100;
    pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 128 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            first_request_timeout: Self::DEFAULT_FIRST_REQUEST_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            http2_keep_alive_interval: Self::DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
            http2_keep_alive_timeout: Self::DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_http2_streams: Self::DEFAULT_MAX_HTTP2_STREAMS,
            max_buffered_body_bytes: Self::DEFAULT_MAX_BUFFERED_BODY_BYTES,
        }
    }
}

/// The bytes of request bodies that may be buffered at once, shared by every connection,
/// so that many slow or large bodies arriving together cannot exhaust memory.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Semaphore,
    total: usize,
    reserved: Gauge,
    refused: Counter,
}

impl BodyBudget {
    /// A budget of `total` bytes, whose reservations and refusals the two metrics count.
    pub fn new(total: usize, reserved: Gauge, refused: Counter) -> Self {
        Self {
            bytes: Semaphore::new(total.min(Semaphore::MAX_PERMITS)),
            total,
            reserved,
            refused,
        }
    }

    /// An empty share for one request, grown as its body arrives and given back when
    /// dropped. `retry_status` is what its sender is answered when the budget is spent.
    pub fn share(&self, retry_status: StatusCode) -> BodyShare<'_> {
        BodyShare {
            budget: self,
            held: None,
            retry_status,
        }
    }
}

/// One request's part of the [`BodyBudget`]; dropping it gives the bytes back.
#[derive(Debug)]
pub struct BodyShare<'a> {
    budget: &'a BodyBudget,
    held: Option<SemaphorePermit<'a>>,
    retry_status: StatusCode,
}

impl<'a> BodyShare<'a> {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.held.as_ref().map_or(0, SemaphorePermit::num_permits)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds at least `bytes` in all, waiting briefly for what is missing; when it does
    /// not come, the sender's retry status.
    pub async fn grow_to(&mut self, bytes: usize) -> Result<(), Error> {
        let held = self.len();
        if bytes <= held {
            return Ok(());
        }
        let budget = self.budget;
        // More than the whole budget can never be granted: refuse without waiting.
        let missing = u32::try_from(bytes - held)
            .ok()
            .filter(|_| bytes <= budget.total);
        let granted = match missing {
            Some(n) => tokio::time::timeout(BUDGET_WAIT, budget.bytes.acquire_many(n))
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let Some(granted) = granted else {
            budget.refused.inc();
            return Err(Error::RetryLater {
                status: self.retry_status,
                cause: "the buffered body budget is spent".to_owned(),
            });
        };
        budget.reserved.inc_by(gauge_value(granted.num_permits()));
        match &mut self.held {
            Some(held) => held.merge(granted),
            None => self.held = Some(granted),
        }
        Ok(())
    }
}

impl Drop for BodyShare<'_> {
    fn drop(&mut self) {
        self.budget.reserved.dec_by(gauge_value(self.len()));
    }
}

fn gauge_value(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize) -> BodyBudget {
        BodyBudget::new(total, Gauge::default(), Counter::default())
    }

    fn share(budget: &BodyBudget) -> BodyShare<'_> {
        budget.share(StatusCode::SERVICE_UNAVAILABLE)
    }

    #[tokio::test]
    async fn shares_are_given_back_when_dropped() {
        let budget = budget(100);
        let mut a = share(&budget);
        a.grow_to(60).await.unwrap();
        a.grow_to(70).await.unwrap();
        assert_eq!(a.len(), 70);
        assert_eq!(budget.reserved.get(), 70);
        let mut b = share(&budget);
        let refused = b.grow_to(31).await.unwrap_err();
        assert_eq!(
            refused.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "only 30 left"
        );
        b.grow_to(30).await.unwrap();
        drop(a);
        assert_eq!(budget.reserved.get(), 30);
        let mut c = share(&budget);
        c.grow_to(70).await.unwrap();
        assert_eq!(budget.refused.get(), 1);
        // More than the whole budget can never be granted.
        assert!(share(&budget).grow_to(101).await.is_err());
        assert_eq!(budget.refused.get(), 2);
    }
}
