//! Harness of the fault-injection tests: Redis (with AOF), contacts-svc and the edge as
//! real child processes on fixed ports, so that each can be killed and come back on the
//! same address (and the edge on the same spool directory); a steady, open-loop load of
//! unique signed Stripe events that records every answer; and the check that every
//! event answered 2xx took effect exactly once, read back through the gRPC API.
//!
//! Faults are scheduled by the wall clock; states are waited for by polling with a
//! deadline, never by sleeping.
//!
//! Layers: `load` (the events and the senders), `services` (the processes and their
//! faults), `check` (what became of the deliveries, through the API).

mod check;
mod load;
mod services;

pub use check::{Tally, check};
pub use load::{Answer, Delivery, Event, Load, Sender};
pub use services::{Backend, Down, Services};

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Deliveries per second of the steady load.
pub const RATE: u32 = 100;
/// How long a sender waits for an answer: far longer than the edge's deadline on
/// contacts-svc (2 s), so a slow answer is seen as slow, not as a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the spool gets to drain once everything is back. A killed contacts-svc
/// leaves leases on the events it was applying (10 s), and the replayer waits up to
/// 5 s between passes: well under this on a busy machine.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// How long a process gets to start and answer.
const START_DEADLINE: Duration = Duration::from_secs(20);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A request's answer, its headers and body; `Err` when none came (refused, reset, or
/// no answer within `within`).
async fn fetch(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    within: Duration,
) -> Result<(http::response::Parts, Bytes), String> {
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e:?}"))?;
        Ok((parts, body.to_bytes()))
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {within:?}")))
}
