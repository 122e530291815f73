//! One webhook delivery: read the body up to the limit, verify it, normalize it, hand it
//! to contacts-svc, and answer with the status the sender needs to see.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hookline_proto::v1;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use serde_json::json;

use crate::contacts::{self, Verdict};
use crate::error::Error;
use crate::limits::BodyShare;
use crate::sources::Delivery;
use crate::spool::{Entry, SpoolError};
use crate::trace::Trace;
use crate::{Configured, State};

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
    let trace = Trace::of(req.headers());
    let configured = state.sources.get(source_name);
    let result = match configured {
        Some(c) => process(state, c, req, &trace).await,
        None => Err(Error::UnknownSource),
    };
    let took = started.elapsed();
    let latency_us = took.as_micros();
    let status = match &result {
        Ok(Done::Event(taken)) => taken.status,
        Ok(Done::Handshake(_)) => StatusCode::OK,
        Err(e) => e.status(),
    };
    state
        .metrics
        .request(configured.map(|c| &c.name), status.as_u16(), took);
    match result {
        Ok(Done::Handshake(answer)) => {
            tracing::info!(
                source = source_name,
                outcome = "handshake",
                status = 200,
                latency_us,
                request_id = %trace.request_id,
                trace_id = %trace.trace_id,
                "webhook"
            );
            json_response(StatusCode::OK, &answer, &trace.request_id)
        }
        Ok(Done::Event(done)) => {
            // At full speed a line per delivery costs more than verifying it: deliveries
            // applied or duplicate as expected are counted in the metrics, recorded in
            // the webhook log and logged at debug; the rest (queued, ignored) at info.
            macro_rules! webhook_line {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        source = source_name,
                        event_id = %done.event_id,
                        r#type = %done.event_type,
                        outcome = done.outcome,
                        status = done.status.as_u16(),
                        latency_us,
                        request_id = %trace.request_id,
                        trace_id = %trace.trace_id,
                        "webhook"
                    )
                };
            }
            if matches!(done.outcome, "applied" | "duplicate") && done.notes.is_empty() {
                webhook_line!(tracing::Level::DEBUG);
            } else {
                webhook_line!(tracing::Level::INFO);
            }
            let mut body = json!({ "status": done.outcome, "event_id": done.event_id });
            if !done.reason.is_empty() {
                body["reason"] = done.reason.into();
            }
            if !done.notes.is_empty() {
                body["notes"] = done.notes.into();
            }
            json_response(done.status, &body, &trace.request_id)
        }
        Err(e) => {
            // Server-side trouble is a warning; a caller's mistake is routine.
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                tracing::warn!(source = source_name, outcome = e.outcome(), status = status.as_u16(), latency_us, request_id = %trace.request_id, trace_id = %trace.trace_id, error = %e, "webhook");
            } else {
                tracing::info!(source = source_name, outcome = e.outcome(), status = status.as_u16(), latency_us, request_id = %trace.request_id, trace_id = %trace.trace_id, error = %e, "webhook");
            }
            let mut resp = json_response(
                status,
                &json!({ "error": e.public_message() }),
                &trace.request_id,
            );
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
enum Done {
    /// An event, with what became of it.
    Event(Taken),
    /// A question of the sender's, answered (nothing stored).
    Handshake(serde_json::Value),
}

/// What became of an event.
struct Taken {
    /// 200 once it took effect, 202 once it is spooled.
    status: StatusCode,
    outcome: &'static str,
    event_id: String,
    event_type: String,
    reason: String,
    notes: Vec<String>,
}

async fn process<B>(
    state: &State,
    configured: &Configured,
    req: Request<B>,
    trace: &Trace,
) -> Result<Done, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    // The request's share of the body budget, held until it is done.
    let mut share = state.body_budget.share(configured.source.retry_status());
    let body = read_body(body, state.max_body_bytes, &mut share).await?;

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
    let source = &configured.source;
    if let Err(e) = source.verify(delivery, now_secs) {
        state
            .metrics
            .verification_failure(&configured.name, e.reason());
        return Err(e.into());
    }
    if let Some(answer) = source.handshake(delivery) {
        return Ok(Done::Handshake(answer));
    }

    let delivery = Normalized {
        configured,
        delivery,
        received_at_ms: now_ms,
    };
    let event = delivery.event(false);
    let event_id = event
        .id
        .strip_prefix(configured.name.as_str())
        .and_then(|s| s.strip_prefix(':'))
        .unwrap_or(&event.id)
        .to_owned();
    let event_type = event.r#type.clone();
    let called = Instant::now();
    let answer = apply(state, &delivery, event, trace).await;
    state.metrics.contacts_call(called.elapsed());
    let (status, outcome, answer) = answer?;
    state.metrics.event(&configured.name, &event_type, outcome);
    Ok(Done::Event(Taken {
        status,
        outcome,
        event_id,
        event_type,
        reason: answer.reason,
        notes: answer.notes,
    }))
}

/// An authentic delivery, from which its event can be made again.
struct Normalized<'a> {
    configured: &'a Configured,
    delivery: Delivery<'a>,
    received_at_ms: i64,
}

impl Normalized<'_> {
    /// The event (normalizing is pure: made again, it is the same event). An event that
    /// will be recorded with its body (it carries it, or `recorded` says it will) carries
    /// the headers its normalizer read too, so that a replay normalizes it as now.
    fn event(&self, recorded: bool) -> v1::WebhookEvent {
        let source = &self.configured.source;
        let mut event = source.normalize(&self.configured.name, self.delivery, self.received_at_ms);
        if recorded || event.raw_body.is_some() {
            event.raw_headers = source.recorded_headers(self.delivery.headers);
        }
        event
    }
}

/// Hands the event to contacts-svc and acts on its [`Verdict`]: applied, duplicate or
/// ignored (the sender is told 200); not now (contacts-svc or Redis is down or slow:
/// the event is spooled and the sender told 202, or, when it cannot be spooled, told
/// to retry); refused (the sender retries until the fix). An event contacts-svc will
/// not apply is recorded whole: asked for the raw body, the edge sends the event once
/// more with it (normalizing is pure, so it is the same event).
async fn apply(
    state: &State,
    delivery: &Normalized<'_>,
    event: v1::WebhookEvent,
    trace: &Trace,
) -> Result<(StatusCode, &'static str, v1::ApplyEventResponse), Error> {
    let source = &delivery.configured.source;
    let retry = |cause: String| Error::RetryLater {
        status: source.retry_status(),
        cause,
    };
    let mut verdict = Verdict::of(call(state, event, trace).await);
    if let Verdict::NeedsBody = verdict {
        let mut event = delivery.event(true);
        event.raw_body = Some(delivery.delivery.body.to_vec());
        verdict = Verdict::of(call(state, event, trace).await);
    }
    match verdict {
        Verdict::Done(outcome, answer) => Ok((StatusCode::OK, outcome, answer)),
        Verdict::Unreachable(cause) | Verdict::Later(cause) => {
            spool(state, delivery, trace, &cause)
                .await
                .map(|()| {
                    (
                        StatusCode::ACCEPTED,
                        "queued",
                        v1::ApplyEventResponse::default(),
                    )
                })
                .map_err(|e| retry(format!("{cause}; and cannot spool: {e}")))
        }
        Verdict::Rejected(reason) => {
            tracing::error!(source = %delivery.configured.name, reason = %reason, "contacts-svc rejected an event");
            Err(retry(format!("rejected: {reason}")))
        }
        Verdict::NeedsBody => Err(retry("contacts-svc asked again for the body".to_owned())),
    }
}

/// One call to contacts-svc, given up when shutdown says requests must be answered.
async fn call(state: &State, event: v1::WebhookEvent, trace: &Trace) -> contacts::Answer {
    let mut answer_by = state.answer_by.clone();
    let closing = async move {
        let by = loop {
            if let Some(by) = *answer_by.borrow_and_update() {
                break by;
            }
            if answer_by.changed().await.is_err() {
                return std::future::pending().await;
            }
        };
        tokio::time::sleep_until(by).await;
    };
    tokio::select! {
        answer = state.contacts.apply(event, trace) => answer,
        () = closing => Err(tonic::Status::deadline_exceeded("shutting down before contacts-svc answered")),
    }
}

/// Keeps the event in the spool, on disk when this returns, for the replayer to apply.
async fn spool(
    state: &State,
    delivery: &Normalized<'_>,
    trace: &Trace,
    cause: &str,
) -> Result<(), SpoolError> {
    let event = delivery.event(true);
    let body = event
        .raw_body
        .is_none()
        .then(|| Bytes::copy_from_slice(delivery.delivery.body));
    let entry = Entry {
        spooled_at_ms: delivery.received_at_ms,
        item: v1::ApplyEventsItem {
            event: Some(event),
            request_id: trace.request_id.clone(),
            traceparent: trace.traceparent.clone(),
            replay_of: String::new(),
        },
        body,
    };
    let put = state.spool.put(&entry).await;
    let result = match &put {
        Ok(()) => "spooled",
        Err(SpoolError::Full { .. }) => "full",
        Err(_) => "error",
    };
    state.metrics.spool_write(result);
    tracing::debug!(source = %delivery.configured.name, cause, result, "contacts-svc cannot take the event now");
    put
}

/// Reads the body, at most `limit` bytes, taking its bytes from the body budget into
/// `share` before buffering them: a declared length whole, before reading any, otherwise
/// chunk by chunk. When the budget is spent the sender is told to retry rather than kept
/// waiting.
async fn read_body<B>(body: B, limit: usize, share: &mut BodyShare<'_>) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let read = async {
        if let Some(declared) = hyper::body::Body::size_hint(&body).exact() {
            let declared = usize::try_from(declared).unwrap_or(usize::MAX);
            if declared > limit {
                return Err(Error::PayloadTooLarge(limit));
            }
            share.grow_to(declared).await?;
        }
        let mut body = std::pin::pin!(Limited::new(body, limit));
        let mut chunks = Vec::new();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<LengthLimitError>() {
                    Error::PayloadTooLarge(limit)
                } else {
                    Error::BadBody(e.to_string())
                }
            })?;
            if let Ok(data) = frame.into_data() {
                len += data.len();
                share.grow_to(len).await?;
                chunks.push(data);
            }
        }
        // One chunk, the usual case, is passed on without a copy.
        Ok(match chunks.len() {
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        })
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| Error::BodyTimeout)?
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
