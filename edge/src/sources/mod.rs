//! Webhook sources. Every provider has one shape, [`Source`]: its kind name, its
//! configuration ([`Kind`]), a pure verifier (raw bytes, headers, secrets and `now` in;
//! a verdict out), a pure normalizer (the delivery in; a `contacts.v1.WebhookEvent` out)
//! and the status that tells its sender to retry. [`KINDS`] lists them, one line each:
//! the kinds a configuration may name are derived from it, and adding a provider is one
//! file plus one line there.

pub mod fields;
pub mod gohighlevel;
pub mod gohighlevel_workflow;
pub mod hmac;
pub mod mapping;
mod setup;
pub mod signature;
pub mod standard_webhooks;
pub mod stripe;

pub use setup::{MAX_DEDUP_WINDOW_SECS, Setup};

use std::fmt;

use hookline_proto::prost_types::Timestamp;
use hookline_proto::v1;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problems;
use crate::secret::Resolver;

/// Every kind of source, one line each.
pub const KINDS: &[Registered] = &[
    registered::<stripe::Stripe>(),
    registered::<gohighlevel::GoHighLevel>(),
    registered::<gohighlevel_workflow::GoHighLevelWorkflow>(),
    registered::<standard_webhooks::StandardWebhooks>(),
    registered::<hmac::HmacSource>(),
];

/// What every provider does with a delivery. Verification and normalization are pure:
/// everything they look at comes in as arguments.
pub trait Source: std::any::Any + fmt::Debug + Send + Sync {
    /// The `kind` the configuration names it by.
    fn kind(&self) -> &'static str;

    /// Checks that the delivery is authentic. `now` is Unix seconds at receipt.
    fn verify(&self, delivery: Delivery<'_>, now: i64) -> Result<(), VerifyError>;

    /// Turns an authentic delivery into an event for contacts-svc. Never fails: a body
    /// it cannot use becomes an ignored event that keeps the body for inspection and
    /// replay.
    fn normalize(
        &self,
        source: &str,
        delivery: Delivery<'_>,
        received_at_ms: i64,
    ) -> v1::WebhookEvent;

    /// What tells this sender to retry later.
    fn retry_status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    /// The headers [`Source::normalize`] reads (an id or a type; never a signature or a
    /// token), recorded with an ignored event's body so that a replay normalizes it
    /// exactly as at receipt.
    fn recorded_headers(&self, _headers: &HeaderMap) -> Vec<v1::Header> {
        Vec::new()
    }

    /// For an authentic delivery that is not an event but a question the sender asks of
    /// the endpoint (Slack's `url_verification`): the JSON answer, sent with 200.
    /// Nothing is stored.
    fn handshake(&self, _delivery: Delivery<'_>) -> Option<serde_json::Value> {
        None
    }
}

/// How a provider is made from its `[sources.<name>]` table.
pub trait Kind: Source + Sized + 'static {
    /// The value of `kind` that selects it.
    const KIND: &'static str;
    /// The table, without `kind`. Unknown keys are reported by their path.
    type Config: DeserializeOwned;
    /// Checks the table, recording every problem in `setup`; `None` when there was one.
    fn from_config(raw: Self::Config, setup: &mut Setup<'_>) -> Option<Self>;
}

/// One entry of [`KINDS`].
#[derive(Clone, Copy)]
pub struct Registered {
    pub kind: &'static str,
    build: fn(toml::Table, &mut Setup<'_>) -> Option<Box<dyn Source>>,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)
    }
}

const fn registered<K: Kind>() -> Registered {
    Registered {
        kind: K::KIND,
        build: build_kind::<K>,
    }
}

fn build_kind<K: Kind>(table: toml::Table, setup: &mut Setup<'_>) -> Option<Box<dyn Source>> {
    let raw: K::Config = setup.deserialize("", toml::Value::Table(table))?;
    let source = K::from_config(raw, setup)?;
    Some(Box::new(source))
}

/// The provider behind a configured source, when it is a `T`: for tests that check
/// what a configuration built.
#[cfg(test)]
pub(crate) fn downcast<T: Source>(source: &dyn Source) -> Option<&T> {
    let any: &dyn std::any::Any = source;
    any.downcast_ref()
}

/// The names of every kind, as the configuration spells them.
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
}

/// The source `[sources.<name>]` describes, or every problem found in it.
pub fn build(
    name: &str,
    mut table: toml::Table,
    resolver: &Resolver<'_>,
) -> Result<Box<dyn Source>, Problems> {
    let mut setup = Setup::new(name, resolver);
    let kind = match table.remove("kind") {
        Some(toml::Value::String(k)) => k,
        Some(_) => {
            setup.problem(
                "kind",
                format!("must be a string, one of: {}", kind_names()),
            );
            return Err(setup.problems);
        }
        None => {
            setup.problem("kind", format!("is required, one of: {}", kind_names()));
            return Err(setup.problems);
        }
    };
    let Some(registered) = KINDS.iter().find(|k| k.kind == kind) else {
        setup.problem(
            "kind",
            format!("unknown kind {kind:?} (known: {})", kind_names()),
        );
        return Err(setup.problems);
    };
    let built = (registered.build)(table, &mut setup);
    match built {
        Some(source) if setup.problems.is_empty() => Ok(source),
        _ => {
            if setup.problems.is_empty() {
                setup.problem("", "is not valid");
            }
            Err(setup.problems)
        }
    }
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

impl<'a> Delivery<'a> {
    /// A delivery of `body` alone, without headers or query: for normalizing a body
    /// outside a request (tests, tools).
    pub fn body_only(body: &'a [u8]) -> Self {
        static NO_HEADERS: std::sync::LazyLock<HeaderMap> =
            std::sync::LazyLock::new(HeaderMap::new);
        Self {
            headers: &NO_HEADERS,
            query: "",
            body,
        }
    }
}

/// A header map of these `(name, value)` pairs, in order (a name may repeat): for tests.
#[cfg(test)]
pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("a header name"),
            http::HeaderValue::from_str(v).expect("a header value"),
        );
    }
    h
}

/// `source`'s verdict on `body` with these headers at `now`: for tests.
#[cfg(test)]
pub(crate) fn verify_with(
    source: &dyn Source,
    pairs: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let headers = header_map(pairs);
    source.verify(
        Delivery {
            headers: &headers,
            query: "",
            body,
        },
        now,
    )
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

/// The fields of `names` in `headers`, as recorded headers.
pub fn headers_named<'a>(
    headers: &HeaderMap,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<v1::Header> {
    names
        .into_iter()
        .flat_map(|name| {
            headers.get_all(name).iter().map(move |value| v1::Header {
                name: name.to_owned(),
                value: value.as_bytes().to_vec(),
            })
        })
        .collect()
}

/// A header map of recorded headers; fields that are not valid HTTP are left out.
pub fn header_map_of(recorded: &[v1::Header]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for h in recorded {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(&h.value),
        ) {
            map.append(name, value);
        }
    }
    map
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
    digest_id(&[body])
}

/// `sha256:<hex>` of `parts`, one after the other: an id derived from content.
pub fn digest_id(parts: &[&[u8]]) -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    parts.iter().for_each(|part| digest.update(part));
    format!("sha256:{}", hex::encode(digest.finalize()))
}

/// An id from a header as text; bytes that are not UTF-8 become the digest of the bytes
/// (not replacement characters, which would make two ids one).
pub fn header_id(value: &[u8]) -> String {
    std::str::from_utf8(value).map_or_else(|_| body_digest_id(value), str::to_owned)
}

/// `Some(s)` for a non-blank string.
pub fn non_blank(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}
