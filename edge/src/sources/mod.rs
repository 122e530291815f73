//! Webhook sources: one file per provider kind, each with a pure verifier (raw bytes,
//! headers, secrets and `now` in; a verdict out) and a pure normalizer (raw bytes in; a
//! `contacts.v1.WebhookEvent` out). Dispatch is a plain `match` on the kind.

pub mod gohighlevel;
pub mod gohighlevel_workflow;
pub mod stripe;

use hookline_proto::prost_types::Timestamp;
use hookline_proto::v1;
use http::{HeaderMap, StatusCode};

/// A configured source.
#[derive(Debug)]
pub enum Source {
    Stripe(stripe::Stripe),
    GoHighLevel(gohighlevel::GoHighLevel),
    GoHighLevelWorkflow(gohighlevel_workflow::GoHighLevelWorkflow),
}

/// The parts of a delivery a verifier may look at.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// The exact bytes received.
    pub body: &'a [u8],
}

/// Why a delivery is not authentic. Every variant answers 401 and stores nothing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("timestamp outside the tolerance window")]
    StaleTimestamp,
    #[error("no signature matches")]
    Mismatch,
}

impl VerifyError {
    /// Stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::Malformed(_) => "malformed_header",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Mismatch => "mismatch",
        }
    }
}

impl Source {
    /// Checks that the delivery is authentic. `now` is Unix seconds at receipt.
    pub fn verify(&self, delivery: Delivery<'_>, now: i64) -> Result<(), VerifyError> {
        match self {
            Self::Stripe(s) => s.verify(delivery, now),
            // GHL signatures bind no time: retries resend the original body (§1.5).
            Self::GoHighLevel(g) => g.verify(delivery),
            Self::GoHighLevelWorkflow(w) => w.verify(delivery),
        }
    }

    /// Turns an authentic body into an event for contacts-svc.
    pub fn normalize(&self, source: &str, body: &[u8], received_at_ms: i64) -> v1::WebhookEvent {
        match self {
            Self::Stripe(_) => stripe::normalize(source, body, received_at_ms),
            Self::GoHighLevel(g) => g.normalize(source, body, received_at_ms),
            Self::GoHighLevelWorkflow(w) => w.normalize(source, body, received_at_ms),
        }
    }

    /// What tells this sender to retry later.
    pub fn retry_status(&self) -> StatusCode {
        match self {
            Self::Stripe(_) => StatusCode::SERVICE_UNAVAILABLE,
            // GHL retries 429 under its old policy (429 only) and its new one (any non-2xx).
            Self::GoHighLevel(_) | Self::GoHighLevelWorkflow(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// The one value of header `name`, trimmed; `None` when it is absent or blank. Two or
/// more fields are refused: which one would count is exactly what a forger would probe.
pub fn one_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    label: &'static str,
) -> Result<Option<&'a [u8]>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(VerifyError::DuplicateHeader(label));
    }
    let value = value.as_bytes().trim_ascii();
    Ok((!value.is_empty()).then_some(value))
}

/// A protobuf timestamp from milliseconds since the Unix epoch.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The common envelope of every normalized event.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub source: &'a str,
    pub kind: &'static str,
    /// Provider event id, unscoped.
    pub id: &'a str,
    pub event_type: &'a str,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
}

impl Envelope<'_> {
    /// An event with `payload` about the contact `contact` describes.
    pub fn event(
        &self,
        contact: v1::ContactData,
        payload: v1::webhook_event::Payload,
    ) -> v1::WebhookEvent {
        v1::WebhookEvent {
            id: format!("{}:{}", self.source, self.id),
            source: self.source.to_owned(),
            kind: self.kind.to_owned(),
            r#type: self.event_type.to_owned(),
            occurred_at: Some(timestamp(self.occurred_at_ms)),
            received_at: Some(timestamp(self.received_at_ms)),
            contact: Some(contact),
            payload: Some(payload),
            ..v1::WebhookEvent::default()
        }
    }

    /// An authentic event that changes no contact, sent with its raw body so that it is
    /// recorded whole for inspection and replay.
    pub fn ignored(&self, reason: impl Into<String>, body: &[u8]) -> v1::WebhookEvent {
        v1::WebhookEvent {
            raw_body: Some(body.to_vec()),
            ..self.event(
                v1::ContactData::default(),
                v1::webhook_event::Payload::Ignored(v1::EventIgnored {
                    reason: reason.into(),
                    ..v1::EventIgnored::default()
                }),
            )
        }
    }
}

/// An authentic body that cannot be read as the provider's event: recorded as ignored,
/// with the body, under the body's digest (so redeliveries deduplicate), at receipt time.
pub fn unreadable(
    source: &str,
    kind: &'static str,
    body: &[u8],
    received_at_ms: i64,
    reason: impl Into<String>,
) -> v1::WebhookEvent {
    let id = body_digest_id(body);
    let env = Envelope {
        source,
        kind,
        id: &id,
        event_type: "",
        occurred_at_ms: received_at_ms,
        received_at_ms,
    };
    env.ignored(reason, body)
}

/// Why a body parsed (or not) as JSON is not a JSON object.
pub fn not_an_object(parsed: &Result<serde_json::Value, serde_json::Error>) -> String {
    match parsed {
        Err(e) => format!("body is not JSON: {e}"),
        Ok(_) => "body is not a JSON object".to_owned(),
    }
}

/// Id for a body that carries none: its SHA-256, so redeliveries deduplicate.
pub fn body_digest_id(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// `Some(s)` for a non-blank string.
pub fn non_blank(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}
