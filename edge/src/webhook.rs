//! One webhook delivery: read the body up to the limit, verify it, normalize it, hand it
//! to contacts-svc, and answer with the status the sender needs to see.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hookline_proto::v1;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use serde_json::json;

use crate::State;
use crate::error::Error;
use crate::sources::{Delivery, Source};

/// How long a sender may take to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// What `Retry-After` asks of a sender when contacts-svc cannot take an event.
const RETRY_AFTER_SECS: &str = "5";

/// Handles `POST /webhooks/{source}`.
pub async fn handle<B>(state: &State, source_name: &str, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let request_id = request_id(&req);
    let result = process(state, source_name, req, &request_id).await;
    let latency_us = started.elapsed().as_micros();
    match result {
        Ok(done) => {
            tracing::info!(
                source = source_name,
                event_id = %done.event_id,
                outcome = done.outcome,
                status = 200,
                latency_us,
                request_id = %request_id,
                "webhook"
            );
            let mut body = json!({ "status": done.outcome, "event_id": done.event_id });
            if !done.reason.is_empty() {
                body["reason"] = done.reason.into();
            }
            json_response(StatusCode::OK, &body, &request_id)
        }
        Err(e) => {
            let status = e.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                tracing::warn!(source = source_name, outcome = e.outcome(), status = status.as_u16(), latency_us, request_id = %request_id, error = %e, "webhook");
            } else {
                tracing::info!(source = source_name, outcome = e.outcome(), status = status.as_u16(), latency_us, request_id = %request_id, error = %e, "webhook");
            }
            let mut resp =
                json_response(status, &json!({ "error": e.public_message() }), &request_id);
            if matches!(e, Error::RetryLater { .. }) {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            resp
        }
    }
}

/// A delivery that was taken care of.
struct Done {
    outcome: &'static str,
    event_id: String,
    reason: String,
}

async fn process<B>(
    state: &State,
    source_name: &str,
    req: Request<B>,
    request_id: &str,
) -> Result<Done, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let source = state.sources.get(source_name).ok_or(Error::UnknownSource)?;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(Error::PayloadTooLarge(state.max_body_bytes));
    }
    let body = read_body(body, state.max_body_bytes).await?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
    let delivery = Delivery {
        headers: &parts.headers,
        query: parts.uri.query().unwrap_or(""),
        body: &body,
    };
    source.verify(delivery, now_secs)?;

    let event = source.normalize(source_name, &body, now_ms);
    let event_id = event
        .id
        .strip_prefix(source_name)
        .and_then(|s| s.strip_prefix(':'))
        .unwrap_or(&event.id)
        .to_owned();
    let answer = apply(state, source, event, request_id).await?;
    let outcome = match v1::EventOutcome::try_from(answer.outcome) {
        Ok(v1::EventOutcome::Applied) => "applied",
        Ok(v1::EventOutcome::Duplicate) => "duplicate",
        _ => "ignored",
    };
    Ok(Done {
        outcome,
        event_id,
        reason: answer.reason,
    })
}

/// Hands the event to contacts-svc. An event it refuses as malformed cannot succeed on
/// a retry, so it is recorded as ignored, with the reason, for inspection and replay.
async fn apply(
    state: &State,
    source: &Source,
    event: v1::WebhookEvent,
    request_id: &str,
) -> Result<v1::ApplyEventResponse, Error> {
    let retry = |status: tonic::Status| Error::RetryLater {
        status: source.retry_status(),
        cause: format!("{:?}: {}", status.code(), status.message()),
    };
    match state.contacts.apply(event.clone(), request_id).await {
        Ok(answer) => Ok(answer),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            tracing::warn!(event_id = %event.id, error = status.message(), "event refused as malformed, recording it as ignored");
            let ignored = v1::WebhookEvent {
                contact: None,
                payload: Some(v1::webhook_event::Payload::Ignored(v1::EventIgnored {
                    reason: format!("refused by contacts-svc: {}", status.message()),
                    body: Vec::new(),
                })),
                ..event
            };
            state
                .contacts
                .apply(ignored, request_id)
                .await
                .map_err(retry)
        }
        Err(status) => Err(retry(status)),
    }
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Error::BodyTimeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Error::PayloadTooLarge(limit)),
        Err(e) => Err(Error::BadBody(e.to_string())),
    }
}

/// The caller's `X-Request-Id` when it is a sane token, else a new one.
fn request_id<B>(req: &Request<B>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

pub fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
