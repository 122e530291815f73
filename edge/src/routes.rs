//! Routing: a plain `match` on method and path.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::State;
use crate::error::Error;
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
            if state.contacts.ready().await {
                json_response(StatusCode::OK, &json!({"status": "ready"}), "")
            } else {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "unavailable", "error": "contacts-svc is not serving"}),
                    "",
                )
            }
        }
        (_, ["healthz" | "readyz"]) => error(&Error::MethodNotAllowed),
        _ => error(&Error::NotFound),
    }
}

fn error(e: &Error) -> Response<Full<Bytes>> {
    json_response(e.status(), &json!({ "error": e.public_message() }), "")
}
