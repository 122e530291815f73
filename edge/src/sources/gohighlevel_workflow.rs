//! GoHighLevel workflow webhooks (Automations → Webhook / Custom Webhook actions, §2 of
//! the GoHighLevel receiver specification). GHL does not sign them, so a per-source
//! token authenticates them: `Authorization: Bearer <token>` (Custom Webhook action) or
//! `?token=<token>` in the URL (the standard action has no configurable headers).
//!
//! Normalization, workflow field → event (top-level keys first; `customData` fills the
//! keys the top level lacks, so GHL's own E.164 `phone` wins over a merge-tag rendering):
//!
//! | workflow | event |
//! |---|---|
//! | the configured `id_pointer`, else `webhookId` / `webhook_id` / `event_id` / `eventId` | id `"<source>:<value>"`; else the SHA-256 of the body, deduplicated within `dedup_window_secs` (see below) |
//! | `event` | type; else `"appointment"` or `"contact"` |
//! | `contact_id` / `contactId` | contact external id `ghl_contact` |
//! | `email`, `phone`, `first_name`/`firstName`, `last_name`/`lastName`, `full_name`/`fullName` | contact fields, passed through (contacts-svc normalizes the phone) |
//! | `tags` (comma-separated string, or an array) | full tag list |
//! | `country` (two letters) | phone_region |
//! | `dnd` (boolean) | dnd |
//! | `calendar.appointmentId`, else `appointment_id` / `appointmentId` | `AppointmentUpdated.appointment_id`; without one the event is `ContactUpserted` |
//! | `calendar.appoinmentStatus` (sic) / `appointmentStatus` / `status`, else `appointment_status` / `status` | status (as for marketplace events, plus `booked`) |
//! | `calendar.id`, else `calendar_id` | calendar_id |
//! | `calendar.title` | title |
//! | `calendar.startTime` / `endTime`, else `start_time` / `startTime` / `start`, `end_time` / `endTime` / `end` | UTC instants: an offset is used as is; a naive local time (or the merge-tag form `Thu, Dec 3rd, 2026 \| 10:00 am`) is read in `calendar.selectedTimezone`, else `selected_timezone` / `timezone`, with the bundled tz database, and flagged `start_time_inferred` |
//! | `date_updated` / `dateUpdated` (top level, `calendar`, `customData`) | occurred_at; else the receipt time |
//!
//! Workflow payloads carry no reliable occurrence time (no `timestamp`, no
//! `dateUpdated` in the published payloads), so their events are usually ordered by when
//! the edge received them: a delayed workflow delivery can overwrite a newer marketplace
//! update of the same field.
//!
//! # Event ids
//!
//! Workflow payloads have no `webhookId` (§2), and two deliveries of one body are not
//! always one event: booked → cancelled → booked again sends a third body byte for byte
//! equal to the first. The id is, in this order:
//!
//! 1. the value at the source's `id_pointer` (RFC 6901, e.g. `/customData/event_id`),
//!    when it is a non-blank string or an integer: the tenant put a real id there;
//! 2. a known id field of the payload (`webhookId`, `webhook_id`, `event_id`,
//!    `eventId`, top level or `customData`);
//! 3. else the SHA-256 of the raw body, sent with `dedup_window_secs` (default 3600):
//!    contacts-svc treats the same digest within that window as a duplicate, and after
//!    it as a new event.
//!
//! The window is a trade-off with no right answer for every tenant. A short one lets a
//! genuinely repeated identical delivery (booked again) take effect, but a retry of the
//! sender that arrives after it takes effect again too: workflow events are ordered by
//! receipt, so a late retry of "booked" that follows "cancelled" ends booked. A long one
//! absorbs late retries, but swallows the genuine repeat. An id in the payload, found through
//! `id_pointer` or a known field (the tenant's Custom Data or Custom Webhook body can
//! carry one), avoids the question: such ids are deduplicated for contacts-svc's whole
//! dedup TTL, and the field stays 0.

use std::fmt;

use hookline_proto::v1::{self, webhook_event::Payload};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::fields::{id_at, parse_instant, phone_region, proto_timestamp, tag_list, text_of};
use super::gohighlevel::{GHL_CONTACT, appointment_status, object_of};
use super::{
    Delivery, Envelope, Kind, Setup, Source, VerifyError, body_digest_id, not_an_object, unreadable,
};
use crate::secret::SecretRef;

/// `[sources.<name>]` with `kind = "gohighlevel-workflow"`.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// The shared token, inline, `env:NAME` or `file:PATH`.
    token: SecretRef,
    /// JSON Pointer (RFC 6901) to the event id in the payload, e.g. `/customData/event_id`.
    id_pointer: Option<String>,
    /// How long the same body counts as the same event when the id is its digest.
    /// Signed, so that a negative value gets this key's message rather than serde's.
    dedup_window_secs: Option<i64>,
}

/// Default `dedup_window_secs`: an hour absorbs a sender's quick retries and lets a
/// repeat later in the day (booked again) take effect.
pub const DEFAULT_DEDUP_WINDOW_SECS: u32 = 3600;

/// A workflow source: the SHA-256 of its token, and how its events get their ids.
pub struct GoHighLevelWorkflow {
    /// Comparing digests takes the same time whatever the lengths of the two tokens.
    token_digest: [u8; 32],
    options: Options,
}

/// How a workflow source identifies its events (module docs, "Event ids").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A checked JSON Pointer: empty, or starting with `/`.
    pub id_pointer: Option<String>,
    /// Sent with body-digest ids: 1..=[`crate::sources::MAX_DEDUP_WINDOW_SECS`].
    pub dedup_window_secs: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            id_pointer: None,
            dedup_window_secs: DEFAULT_DEDUP_WINDOW_SECS,
        }
    }
}

impl fmt::Debug for GoHighLevelWorkflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoHighLevelWorkflow")
            .field("token", &format_args!("[redacted]"))
            .field("id_pointer", &self.options.id_pointer)
            .field("dedup_window_secs", &self.options.dedup_window_secs)
            .finish()
    }
}

impl Kind for GoHighLevelWorkflow {
    const KIND: &'static str = "gohighlevel-workflow";
    type Config = RawConfig;

    fn from_config(raw: RawConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let token = setup.secret("token", &raw.token);
        let id_pointer = match raw.id_pointer {
            None => Some(None),
            Some(p) => setup.pointer("id_pointer", &p).map(Some),
        };
        let dedup_window_secs =
            setup.dedup_window(raw.dedup_window_secs, DEFAULT_DEDUP_WINDOW_SECS);
        let (token, id_pointer, dedup_window_secs) = (token?, id_pointer?, dedup_window_secs?);
        Some(Self::new(
            token.expose(),
            Options {
                id_pointer,
                dedup_window_secs,
            },
        ))
    }
}

impl GoHighLevelWorkflow {
    pub fn new(token: &str, options: Options) -> Self {
        Self {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            options,
        }
    }
}

impl Source for GoHighLevelWorkflow {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    /// Checks the token of a delivery. Every credential presented (a Bearer
    /// `Authorization` header, a `token` query parameter) must be the token, and at least
    /// one must be presented. A token binds no time.
    fn verify(&self, d: Delivery<'_>, _now: i64) -> Result<(), VerifyError> {
        let header = bearer_token(d.headers)?;
        let query = query_token(d.query)?;
        if header.is_none() && query.is_none() {
            return Err(VerifyError::MissingHeader("Authorization"));
        }
        for presented in [header, query].into_iter().flatten() {
            let digest = Sha256::digest(&presented);
            if !bool::from(digest.as_slice().ct_eq(&self.token_digest)) {
                return Err(VerifyError::Mismatch);
            }
        }
        Ok(())
    }

    fn normalize(&self, source: &str, d: Delivery<'_>, received_at_ms: i64) -> v1::WebhookEvent {
        self.normalize_body(source, d.body, received_at_ms)
    }

    /// GHL retries 429 under its old policy (429 only) and its new one (any non-2xx).
    fn retry_status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
}

/// The token of a `Bearer` `Authorization` header; `None` when there is no header or
/// it is blank.
fn bearer_token(headers: &http::HeaderMap) -> Result<Option<Vec<u8>>, VerifyError> {
    let Some(value) = super::one_header(headers, "authorization", "Authorization")? else {
        return Ok(None);
    };
    let split = value.iter().position(|b| *b == b' ').unwrap_or(value.len());
    let (scheme, token) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(VerifyError::Malformed(
            "Authorization is not a Bearer token",
        ));
    }
    let token = token.trim_ascii();
    Ok((!token.is_empty()).then(|| token.to_vec()))
}

/// The percent-decoded `token` query parameter; `None` when absent or blank. A `+` is
/// kept as is (tokens are often base64), not read as a space.
fn query_token(query: &str) -> Result<Option<Vec<u8>>, VerifyError> {
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key: Vec<u8> = percent_encoding::percent_decode_str(key).collect();
        if key != b"token" {
            continue;
        }
        if found.is_some() {
            return Err(VerifyError::Malformed(
                "more than one token query parameter",
            ));
        }
        found = Some(percent_encoding::percent_decode_str(value).collect::<Vec<u8>>());
    }
    Ok(found.filter(|t| !t.is_empty()))
}

/// The top-level keys of a payload, with its `customData` behind them.
#[derive(Clone, Copy)]
struct Fields<'a> {
    top: &'a Map<String, Value>,
    custom: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    /// The first of `keys` present at the top level, else in `customData`.
    fn get(&self, keys: &[&str]) -> Option<&'a Value> {
        let find = |m: &'a Map<String, Value>| {
            keys.iter().filter_map(|k| m.get(*k)).find(|v| !is_blank(v))
        };
        find(self.top).or_else(|| self.custom.and_then(find))
    }

    /// Like `get`, as text: strings trimmed, numbers (a phone typed as digits) written out.
    fn text(&self, keys: &[&str]) -> Option<String> {
        self.get(keys).and_then(text_of)
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

impl GoHighLevelWorkflow {
    /// Normalizes an authenticated workflow delivery. Never fails: a body it cannot use
    /// becomes an ignored event that keeps the body for inspection and replay.
    fn normalize_body(&self, source: &str, body: &[u8], received_at_ms: i64) -> v1::WebhookEvent {
        let parsed = serde_json::from_slice::<Value>(body);
        let Ok(value @ Value::Object(top)) = &parsed else {
            // The id is the body's digest here too, so it gets the same window.
            let reason = not_an_object(&parsed);
            return v1::WebhookEvent {
                dedup_window_secs: self.options.dedup_window_secs,
                ..unreadable(source, Self::KIND, body, received_at_ms, reason)
            };
        };
        let f = Fields {
            top,
            custom: object_of(top, "customData"),
        };
        let from_payload = self
            .options
            .id_pointer
            .as_deref()
            .and_then(|p| id_at(value, p))
            .or_else(|| f.text(&["webhookId", "webhook_id", "event_id", "eventId"]));
        // An id of the payload's is deduplicated for contacts-svc's whole TTL (window 0);
        // the body's digest only within the window (module docs, "Event ids").
        let (id, dedup_window_secs) = match from_payload {
            Some(id) => (id, 0),
            None => (body_digest_id(body), self.options.dedup_window_secs),
        };
        v1::WebhookEvent {
            dedup_window_secs,
            ..event(source, &id, f, received_at_ms)
        }
    }
}

/// The event of a workflow payload `f`, under the unscoped id `id`.
fn event(source: &str, id: &str, f: Fields<'_>, received_at_ms: i64) -> v1::WebhookEvent {
    let top = f.top;
    let calendar = object_of(top, "calendar");
    let cal = |keys: &[&str]| {
        calendar.and_then(|c| keys.iter().find_map(|k| c.get(*k).and_then(text_of)))
    };
    let appointment_id = cal(&["appointmentId", "appointment_id"])
        .or_else(|| f.text(&["appointment_id", "appointmentId"]));
    let event_type = f.text(&["event"]).unwrap_or_else(|| {
        if appointment_id.is_some() {
            "appointment"
        } else {
            "contact"
        }
        .to_owned()
    });
    let changed_at = f
        .text(&["date_updated", "dateUpdated"])
        .or_else(|| cal(&["date_updated", "dateUpdated"]));
    let occurred_at_ms = changed_at
        .as_deref()
        .and_then(parse_instant)
        .map_or(received_at_ms, |t| t.as_millisecond());
    let env = Envelope {
        source,
        kind: GoHighLevelWorkflow::KIND,
        id,
        event_type: &event_type,
        occurred_at_ms,
        received_at_ms,
    };

    let contact = v1::ContactData {
        email: f.text(&["email"]),
        phone: f.text(&["phone"]),
        first_name: f.text(&["first_name", "firstName"]),
        last_name: f.text(&["last_name", "lastName"]),
        name: f.text(&["full_name", "fullName"]),
        external_ids: f
            .text(&["contact_id", "contactId"])
            .map(|id| v1::ExternalId {
                system: GHL_CONTACT.to_owned(),
                id,
            })
            .into_iter()
            .collect(),
        phone_region: phone_region(f.text(&["country"]).as_deref()),
        // `""` is present: the contact has no tags.
        tags: top
            .get("tags")
            .or_else(|| f.custom.and_then(|c| c.get("tags")))
            .and_then(tag_list),
        dnd: f.get(&["dnd"]).and_then(Value::as_bool),
        ..v1::ContactData::default()
    };
    // Even without contact_id, email or phone the event keeps its type: contacts-svc
    // decides "no contact identifiers" once it has checked the fields.
    let Some(appointment_id) = appointment_id else {
        return env.event(contact, Payload::ContactUpserted(v1::ContactUpserted {}));
    };

    let status = cal(&["appoinmentStatus", "appointmentStatus", "status"])
        .or_else(|| f.text(&["appointment_status", "appoinmentStatus", "status"]));
    let zone = cal(&["selectedTimezone"])
        .or_else(|| f.text(&["selected_timezone", "selectedTimezone", "timezone"]));
    let zone = zone
        .as_deref()
        .and_then(|z| jiff::tz::TimeZoneDatabase::bundled().get(z).ok());
    let time = |cal_key: &str, keys: &[&str]| {
        cal(&[cal_key])
            .or_else(|| f.text(keys))
            .and_then(|s| read_time(&s, zone.as_ref()))
    };
    let start = time("startTime", &["start_time", "startTime", "start"]);
    let end = time("endTime", &["end_time", "endTime", "end"]);
    env.event(
        contact,
        Payload::AppointmentUpdated(v1::AppointmentUpdated {
            appointment_id,
            calendar_id: cal(&["id"])
                .or_else(|| f.text(&["calendar_id", "calendarId"]))
                .unwrap_or_default(),
            status: appointment_status(status.as_deref()).into(),
            start_time: start.map(|(t, _)| proto_timestamp(t)),
            end_time: end.map(|(t, _)| proto_timestamp(t)),
            title: cal(&["title"]).unwrap_or_default(),
            deleted: false,
            start_time_inferred: start.is_some_and(|(_, inferred)| inferred),
        }),
    )
}

/// An instant from a time with an offset (exact), or from a naive local time read in
/// `zone` (inferred: `true`). `None` when it cannot be read or there is no zone.
fn read_time(s: &str, zone: Option<&jiff::tz::TimeZone>) -> Option<(jiff::Timestamp, bool)> {
    if let Some(t) = parse_instant(s) {
        return Some((t, false));
    }
    let local = naive_local_time(s)?;
    // In a gap the time after it is taken, in a fold the first repetition (jiff's and
    // Temporal's "compatible" disambiguation).
    let t = zone?.to_zoned_datetime(local).ok()?.timestamp();
    Some((t, true))
}

/// `2026-12-03T10:00:00` (ISO 8601 without offset) or the rendering of GHL's
/// appointment merge tags, `Thu, Dec 3rd, 2026 | 10:00 am`.
fn naive_local_time(s: &str) -> Option<jiff::civil::DateTime> {
    let s = s.trim();
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        // A time with an offset was read as an instant before; civil parsing would
        // silently drop a numeric offset, so insist there was none.
        return (!has_offset(s)).then_some(dt);
    }
    // Drop the ordinal suffix of the day ("3rd" → "3").
    let mut cleaned = String::with_capacity(s.len());
    let mut after_digit = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if after_digit && c.is_ascii_alphabetic() {
            let next = chars.peek().copied();
            let pair: String = [Some(c), next].into_iter().flatten().collect();
            if matches!(
                pair.to_ascii_lowercase().as_str(),
                "st" | "nd" | "rd" | "th"
            ) {
                chars.next();
                after_digit = false;
                continue;
            }
        }
        after_digit = c.is_ascii_digit();
        cleaned.push(c);
    }
    let parsed = jiff::fmt::strtime::parse("%a, %b %d, %Y | %I:%M %P", &cleaned)
        .or_else(|_| jiff::fmt::strtime::parse("%a, %b %d, %Y | %I:%M %p", &cleaned))
        .ok()?;
    parsed.to_datetime().ok()
}

/// Whether an ISO 8601 date-time ends in a numeric offset or `Z`.
fn has_offset(s: &str) -> bool {
    let Some((_, time)) = s.split_once(['T', 't', ' ']) else {
        return false;
    };
    time.contains(['+', '-', 'Z', 'z'])
}

#[cfg(test)]
mod tests;
