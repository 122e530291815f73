//! Routing: a plain `match` on method and path.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::State;
use crate::error::Error;
use crate::spool::Stats;
use crate::webhook::{self, json_response};

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// Webhooks, probes and `GET /metrics`: the webhook port when the configuration
    /// asks for metrics there (`metrics_on_webhook_port`).
    All,
    /// Webhooks and probes: the webhook port by default, since it faces the internet.
    Webhooks,
    /// `GET /metrics` only.
    Metrics,
}

/// Routes one request.
pub async fn route<B>(state: &State, routes: Routes, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["metrics"]) if routes != Routes::Webhooks => {
            state
                .metrics
                .spool_state(state.spool.stats(), state.spool.max_bytes(), now_ms());
            let mut resp = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            resp
        }
        _ if routes == Routes::Metrics => error(&Error::NotFound),
        (&Method::POST, ["webhooks", source]) if !source.is_empty() => {
            webhook::handle(state, source, req).await
        }
        (_, ["webhooks", source]) if !source.is_empty() => {
            let mut resp = error(&Error::MethodNotAllowed);
            resp.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            resp
        }
        (&Method::GET, ["healthz"]) => json_response(StatusCode::OK, &json!({"status": "ok"}), ""),
        (&Method::GET, ["readyz"]) => {
            let readiness = Readiness::of(
                state.contacts.ready().await,
                state.spool.stats(),
                state.spool.max_bytes(),
            );
            json_response(readiness.status(), &readiness.body(), "")
        }
        (_, ["healthz" | "readyz"]) => error(&Error::MethodNotAllowed),
        _ => error(&Error::NotFound),
    }
}

/// What `/readyz` reports: whether deliveries can be taken, and how.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    /// contacts-svc serves and the spool is empty.
    Ready,
    /// Deliveries are acknowledged, through the spool: contacts-svc is not serving
    /// (`spooling`), or serves and the replayer is catching up (`draining`).
    Degraded { reason: &'static str, spooled: u64 },
    /// contacts-svc is not serving and the spool cannot take events: deliveries are
    /// answered with the retry status.
    Down { reason: &'static str, spooled: u64 },
}

impl Readiness {
    fn of(serving: bool, spool: &Stats, max_bytes: u64) -> Self {
        let spooled = spool.entries();
        // Room for at least one more typical event.
        let room = spool.bytes().saturating_add(ROOM_FOR_ONE) <= max_bytes;
        match (serving, spooled) {
            (true, 0) => Self::Ready,
            (true, _) => Self::Degraded {
                reason: "draining: contacts-svc is serving, spooled events are being applied",
                spooled,
            },
            (false, _) if spool.failing() => Self::Down {
                reason: "contacts-svc is not serving and the spool cannot be written",
                spooled,
            },
            (false, _) if !room => Self::Down {
                reason: "contacts-svc is not serving and the spool is full (spool_max_bytes)",
                spooled,
            },
            (false, _) => Self::Degraded {
                reason: "spooling: contacts-svc is not serving, events are spooled and acknowledged",
                spooled,
            },
        }
    }

    /// Degraded answers 200: the edge still acknowledges what it receives, so a load
    /// balancer should keep sending to it.
    fn status(&self) -> StatusCode {
        match self {
            Self::Ready | Self::Degraded { .. } => StatusCode::OK,
            Self::Down { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Self::Ready => json!({"status": "ready"}),
            Self::Degraded { reason, spooled } => {
                json!({"status": "degraded", "reason": reason, "spooled": spooled})
            }
            Self::Down { reason, spooled } => {
                json!({"status": "down", "error": reason, "spooled": spooled})
            }
        }
    }
}

/// Bytes a typical event takes in the spool.
const ROOM_FOR_ONE: u64 = 4096;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn error(e: &Error) -> Response<Full<Bytes>> {
    json_response(e.status(), &json!({ "error": e.public_message() }), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a readiness is, in a word and the start of its reason.
    fn shape(r: &Readiness) -> (&'static str, &'static str) {
        let head = |reason: &'static str| reason.split(':').next().unwrap_or(reason);
        match r {
            Readiness::Ready => ("ready", ""),
            Readiness::Degraded { reason, .. } => ("degraded", head(reason)),
            Readiness::Down { reason, .. } => ("down", reason),
        }
    }

    #[test]
    fn readiness_says_whether_and_how_deliveries_are_taken() {
        let max = 1 << 20;
        let full = "contacts-svc is not serving and the spool is full (spool_max_bytes)";
        let failing = "contacts-svc is not serving and the spool cannot be written";
        // (contacts-svc serving, spooled entries and bytes, writes failing): state, status.
        let table = [
            ((true, 0, 0, false), ("ready", ""), 200),
            ((true, 3, 9000, false), ("degraded", "draining"), 200),
            // Serving wins over a failing spool: deliveries apply without it.
            ((true, 0, 0, true), ("ready", ""), 200),
            ((false, 0, 0, false), ("degraded", "spooling"), 200),
            (
                (false, 40, max - ROOM_FOR_ONE, false),
                ("degraded", "spooling"),
                200,
            ),
            (
                (false, 41, max - ROOM_FOR_ONE + 1, false),
                ("down", full),
                503,
            ),
            ((false, 2, 100, true), ("down", failing), 503),
        ];
        for ((serving, entries, bytes, fails), want, status) in table {
            let got = Readiness::of(serving, &Stats::holding(entries, bytes, fails), max);
            assert_eq!(shape(&got), want, "{serving} {entries} {bytes} {fails}");
            assert_eq!(got.status().as_u16(), status, "{got:?}");
        }
        let body = Readiness::of(false, &Stats::holding(7, 100, false), max).body();
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["spooled"], 7);
    }
}
