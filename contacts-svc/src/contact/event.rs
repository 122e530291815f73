//! Validated input: the contact fields an event or caller states, and `ApplyEvent`
//! requests turned into effects on a contact.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hookline_proto::{prost_types, v1};

use super::text::Reader;
use super::{
    AppointmentRec, Attendance, Email, EventId, Identifier, MAX_TAGS, OpportunityRec, PaymentRefs,
    Phone, PurchaseRec, RefundRec, RefundStatus, Region, Stamp, check_system, identifiers,
};
use crate::error::Error;

/// Validated contact fields an event or caller states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactFields {
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Tags added (`true`) or taken off (`false`) one at a time.
    pub tag_changes: BTreeMap<String, bool>,
    pub dnd: Option<bool>,
    pub external_ids: BTreeMap<String, String>,
    pub payment_refs: BTreeSet<String>,
}

impl ContactFields {
    /// Reads `data` with `r`: for an event, a malformed field is left out and noted
    /// rather than failing the event (a purchase must be recorded even if the provider
    /// holds a malformed email); a caller of the API gets `InvalidArgument` instead.
    /// `prefix` names the message in errors and notes ("event.contact").
    pub fn parse(
        prefix: &str,
        data: &v1::ContactData,
        default_region: Region,
        r: &mut Reader<'_>,
    ) -> Result<Self, Error> {
        let field = |name: &str| format!("{prefix}.{name}");
        let region =
            match Region::parse_or(&field("phone_region"), &data.phone_region, default_region) {
                Ok(region) => region,
                Err(e) => {
                    r.drop(e)?;
                    default_region
                }
            };
        let mut parsed = Self::default();
        if let Some(s) = data.email.as_deref().filter(|s| !s.trim().is_empty()) {
            match Email::parse(&field("email"), s) {
                Ok(e) => parsed.email = Some(e),
                Err(e) => r.drop(e)?,
            }
        }
        if let Some(s) = data.phone.as_deref().filter(|s| !s.trim().is_empty()) {
            match Phone::parse(&field("phone"), s, region, r) {
                Ok(p) => parsed.phone = Some(p),
                Err(e) => r.drop(e)?,
            }
        }
        for (name, value, slot) in [
            ("first_name", &data.first_name, &mut parsed.first_name),
            ("last_name", &data.last_name, &mut parsed.last_name),
            ("name", &data.name, &mut parsed.name),
        ] {
            if let Some(v) = value {
                *slot = Some(r.text(&field(name), v)?).filter(|v| !v.is_empty());
            }
        }
        if let Some(list) = &data.tags {
            if list.tags.len() > MAX_TAGS {
                r.drop(Error::invalid(
                    field("tags"),
                    format!(
                        "has {} tags, more than 256: the first 256 are kept",
                        list.tags.len()
                    ),
                ))?;
            }
            let mut tags = Vec::with_capacity(list.tags.len().min(MAX_TAGS));
            for t in list.tags.iter().take(MAX_TAGS) {
                let t = r.text(&field("tags"), t)?;
                if !t.is_empty() {
                    tags.push(t);
                }
            }
            tags.sort();
            tags.dedup();
            parsed.tags = Some(tags);
        }
        // Taken off after the additions: a tag both added and removed is removed. Each
        // list is bounded on its own, so a long list of additions cannot crowd out a
        // removal.
        for (name, tags, add) in [
            ("add_tags", &data.add_tags, true),
            ("remove_tags", &data.remove_tags, false),
        ] {
            if tags.len() > MAX_TAGS {
                r.drop(Error::invalid(
                    field(name),
                    format!(
                        "has {} tags, more than 256: the first 256 are kept",
                        tags.len()
                    ),
                ))?;
            }
            for t in tags.iter().take(MAX_TAGS) {
                let t = r.text(&field(name), t)?;
                if !t.is_empty() {
                    parsed.tag_changes.insert(t, add);
                }
            }
        }
        for x in &data.external_ids {
            let system = match check_system(&field("external_ids.system"), &x.system) {
                Ok(()) => &x.system,
                Err(e) => {
                    r.drop(e)?;
                    continue;
                }
            };
            let id = match r.id(&field("external_ids.id"), &x.id) {
                Ok(id) => id,
                Err(e) => {
                    r.drop(e)?;
                    continue;
                }
            };
            match parsed.external_ids.get(system) {
                Some(prev) if *prev != id => r.drop(Error::invalid(
                    field("external_ids"),
                    "holds two ids of one system",
                ))?,
                _ => {
                    parsed.external_ids.insert(system.clone(), id);
                }
            }
        }
        for reference in &data.payment_refs {
            match r.id(&field("payment_refs"), reference) {
                Ok(reference) => {
                    parsed.payment_refs.insert(reference);
                }
                Err(e) => r.drop(e)?,
            }
        }
        parsed.dnd = data.dnd;
        Ok(parsed)
    }

    /// Identifiers for resolution, strongest first.
    pub fn identifiers(&self) -> Vec<Identifier> {
        identifiers(
            &self.external_ids,
            &self.payment_refs,
            self.email.as_ref(),
            self.phone.as_ref(),
        )
    }

    /// Keeps only the fields named in `paths` (a field mask).
    pub fn retain_paths(&mut self, paths: &[String]) -> Result<(), Error> {
        let mut keep = BTreeSet::new();
        for p in paths {
            match p.as_str() {
                "email" | "phone" | "first_name" | "last_name" | "name" | "tags" | "add_tags"
                | "remove_tags" | "dnd" | "external_ids" => {
                    keep.insert(p.as_str());
                }
                _ => {
                    return Err(Error::invalid(
                        "update_mask",
                        "names an unknown field (allowed: email, phone, first_name, \
                         last_name, name, tags, add_tags, remove_tags, dnd, external_ids)",
                    ));
                }
            }
        }
        if !keep.contains("email") {
            self.email = None;
        }
        if !keep.contains("phone") {
            self.phone = None;
        }
        if !keep.contains("first_name") {
            self.first_name = None;
        }
        if !keep.contains("last_name") {
            self.last_name = None;
        }
        if !keep.contains("name") {
            self.name = None;
        }
        if !keep.contains("tags") {
            self.tags = None;
        }
        let (add, remove) = (keep.contains("add_tags"), keep.contains("remove_tags"));
        self.tag_changes
            .retain(|_, added| if *added { add } else { remove });
        if !keep.contains("dnd") {
            self.dnd = None;
        }
        if !keep.contains("external_ids") {
            self.external_ids.clear();
        }
        Ok(())
    }
}

/// What an event does to its contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The profile fields alone (customer or contact created or updated).
    Profile,
    Deleted,
    Purchase(PurchaseRec),
    Refund {
        refund_id: Option<String>,
        refund: RefundRec,
        charge_cumulative: Option<i64>,
    },
    Appointment {
        id: String,
        appointment: AppointmentRec,
    },
    Opportunity {
        id: String,
        opportunity: OpportunityRec,
    },
}

/// A validated event that changes a contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventEffect {
    pub event_id: EventId,
    pub occurred_at: i64,
    pub data: ContactFields,
    pub effect: Effect,
}

/// A validated `ApplyEvent` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The id deliveries are deduplicated by.
    pub id: EventId,
    /// The id this delivery is recorded under: `id`, or for a content-derived id with
    /// a dedup window one occurrence of it (the same body may take effect again later).
    pub record_id: EventId,
    /// The provider's id as received, when `id` is its digest.
    pub original_id: Option<String>,
    /// For a content-derived id: how long a delivery of the same id is a duplicate.
    pub dedup_window: Option<Duration>,
    pub source: String,
    pub event_type: String,
    pub occurred_at: i64,
    pub received_at: i64,
    /// What it does; `Err` for an authentic event that changes no contact.
    pub action: Result<EventEffect, Ignored>,
    /// What was changed while reading it (a text cut, a field left out), for the log.
    pub notes: Vec<String>,
    /// Sent again by a replay of its ignored record: it may take that record over.
    pub replay: bool,
}

/// Why an event changes no contact, with the raw body for inspection and replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub reason: String,
    /// The raw body of the delivery; `None` when the event came without it (it must be
    /// sent again with it before it is recorded).
    pub body: Option<Vec<u8>>,
    /// The headers normalizing read, recorded with the body for a replay.
    pub headers: Vec<v1::Header>,
}

impl ParsedEvent {
    /// Reads an event from the edge. This is the one place that decides whether an
    /// event is ignored: when the edge could not read it as a change (its payload says
    /// so), or when no identifier of a person is left. Its content never fails it: text
    /// is cleaned and cut, unusable ids are replaced by digests, malformed fields are
    /// left out, each noted. An error means the event breaks the contract itself (no
    /// id, no source, no receipt time, no payload): a bug of the sender, not content.
    pub fn parse(ev: &v1::WebhookEvent, default_region: Region) -> Result<Self, Error> {
        let (id, original_id) = EventId::of_event(&ev.source, &ev.id)?;
        check_system("event.source", &ev.source)?;
        if hookline_proto::RESERVED_SOURCES.contains(&ev.source.as_str()) {
            return Err(Error::invalid(
                "event.source",
                "is reserved for contacts-svc's own events",
            ));
        }
        let received_at = millis("event.received_at", ev.received_at.as_ref())?;
        let mut notes = Vec::new();
        let mut r = Reader::lenient(&mut notes);
        // A provider's time out of range (or none) cannot order anything: the receipt
        // time does, as for senders that state none.
        let occurred_at = match optional_millis("event.occurred_at", ev.occurred_at.as_ref()) {
            Ok(Some(at)) => at,
            Ok(None) => received_at,
            Err(e) => {
                r.drop(e)?;
                received_at
            }
        };
        let dedup_window = (ev.dedup_window_secs > 0)
            .then(|| Duration::from_secs(u64::from(ev.dedup_window_secs)));
        let record_id = match dedup_window {
            Some(_) => id.occurrence(received_at),
            None => id.clone(),
        };
        let event_type = r.text("event.type", &ev.r#type)?;
        let data = ContactFields::parse(
            "event.contact",
            ev.contact.as_ref().unwrap_or(&v1::ContactData::default()),
            default_region,
            &mut r,
        )?;
        let body = raw_body(ev);
        let headers = if body.is_some() {
            recorded_headers(&ev.raw_headers)
        } else {
            Vec::new()
        };
        let action = match effect(&record_id, occurred_at, ev, &mut r)? {
            Err(reason) => Err(Ignored {
                reason,
                body,
                headers,
            }),
            Ok(_) if data.identifiers().is_empty() => Err(Ignored {
                reason: "no contact identifiers".to_owned(),
                body,
                headers,
            }),
            Ok(effect) => Ok(EventEffect {
                event_id: record_id.clone(),
                occurred_at,
                data,
                effect,
            }),
        };
        Ok(Self {
            id,
            record_id,
            original_id,
            dedup_window,
            source: ev.source.clone(),
            event_type,
            occurred_at,
            received_at,
            action,
            notes,
            replay: false,
        })
    }
}

impl ParsedEvent {
    /// The event as the replay of record `replay_of` (none when empty): it must be
    /// recorded under that id, or the replay would apply it under another.
    pub fn replaying(mut self, replay_of: &str) -> Result<Self, Error> {
        if replay_of.is_empty() {
            return Ok(self);
        }
        if self.record_id.as_str() != replay_of {
            return Err(Error::invalid(
                "replay_of",
                format!(
                    "the event is recorded as {}, not as the record it replays",
                    self.record_id
                ),
            ));
        }
        self.replay = true;
        Ok(self)
    }
}

/// The raw body the event carries, if any: `raw_body`, or inside an ignored payload as
/// older edges send it.
fn raw_body(ev: &v1::WebhookEvent) -> Option<Vec<u8>> {
    if let Some(body) = &ev.raw_body {
        return Some(body.clone());
    }
    match &ev.payload {
        #[allow(deprecated)] // older edges send the body inside the payload
        Some(v1::webhook_event::Payload::Ignored(i)) if !i.body.is_empty() => Some(i.body.clone()),
        _ => None,
    }
}

/// Most headers recorded with an event, and most bytes of each: the edge sends the one
/// or two a provider's normalizer reads.
const MAX_RECORDED_HEADERS: usize = 8;
const MAX_HEADER_BYTES: usize = 1024;

/// The headers to record with an ignored event's body, bounded.
fn recorded_headers(headers: &[v1::Header]) -> Vec<v1::Header> {
    headers
        .iter()
        .filter(|h| h.name.len() <= 128 && h.value.len() <= MAX_HEADER_BYTES)
        .take(MAX_RECORDED_HEADERS)
        .cloned()
        .collect()
}

/// The effect of an event's payload, or why it has none. Every value comes from the
/// provider's content and is read leniently by `r`; only a missing payload or a missing
/// id of the object it describes is an error, since the edge always sets them.
fn effect(
    event_id: &EventId,
    occurred_at: i64,
    ev: &v1::WebhookEvent,
    r: &mut Reader<'_>,
) -> Result<Result<Effect, String>, Error> {
    use v1::webhook_event::Payload;
    Ok(Ok(match ev.payload.as_ref() {
        None => return Err(Error::invalid("event.payload", "is required")),
        Some(Payload::Ignored(i)) => return Ok(Err(r.text("event.ignored.reason", &i.reason)?)),
        Some(Payload::AppLifecycle(a)) => {
            return Ok(Err(if a.installed {
                "app installed"
            } else {
                "app uninstalled"
            }
            .to_owned()));
        }
        Some(Payload::ContactUpserted(_)) => Effect::Profile,
        Some(Payload::ContactDeleted(_)) => Effect::Deleted,
        Some(Payload::PurchaseCompleted(p)) => {
            let purchase_id = r.id("event.purchase_completed.purchase_id", &p.purchase_id)?;
            let mut set = |field: &str, v: &str| -> Result<BTreeSet<String>, Error> {
                let v = r.optional_id(field, v)?;
                Ok(if v.is_empty() {
                    BTreeSet::new()
                } else {
                    BTreeSet::from([v])
                })
            };
            let mut refs = PaymentRefs {
                payment_intent: set(
                    "event.purchase_completed.payment_intent_id",
                    &p.payment_intent_id,
                )?,
                invoice: set("event.purchase_completed.invoice_id", &p.invoice_id)?,
                session: set(
                    "event.purchase_completed.checkout_session_id",
                    &p.checkout_session_id,
                )?,
                charge: set("event.purchase_completed.charge_id", &p.charge_id)?,
                other: BTreeSet::new(),
            };
            if !refs.kinds().iter().any(|s| s.contains(&purchase_id)) {
                refs.other.insert(purchase_id);
            }
            Effect::Purchase(PurchaseRec {
                amount: p.amount,
                currency: r
                    .text("event.purchase_completed.currency", &p.currency)?
                    .to_ascii_lowercase(),
                refs,
                subscription: r.optional_id(
                    "event.purchase_completed.subscription_id",
                    &p.subscription_id,
                )?,
                description: r.text("event.purchase_completed.description", &p.description)?,
                first_at: occurred_at,
                stamp: Stamp {
                    at: occurred_at,
                    ev: event_id.as_str().to_owned(),
                },
            })
        }
        Some(Payload::RefundUpdated(refund)) => {
            let refund_id = r.optional_id("event.refund_updated.refund_id", &refund.refund_id)?;
            let charge = r.optional_id("event.refund_updated.charge_id", &refund.charge_id)?;
            let cumulative =
                (refund.charge_amount_refunded > 0).then_some(refund.charge_amount_refunded);
            if refund_id.is_empty() && (cumulative.is_none() || charge.is_empty()) {
                return Ok(Err(
                    "refund has neither a refund id nor a charge with a refunded amount".to_owned(),
                ));
            }
            Effect::Refund {
                refund_id: (!refund_id.is_empty()).then_some(refund_id),
                refund: RefundRec {
                    amount: refund.amount,
                    currency: r
                        .text("event.refund_updated.currency", &refund.currency)?
                        .to_ascii_lowercase(),
                    charge,
                    payment_intent: r.optional_id(
                        "event.refund_updated.payment_intent_id",
                        &refund.payment_intent_id,
                    )?,
                    status: RefundStatus::from_proto(refund.status),
                },
                charge_cumulative: cumulative,
            }
        }
        Some(Payload::AppointmentUpdated(a)) => {
            let mut instant = |field: &str, ts: Option<&prost_types::Timestamp>| {
                optional_millis(field, ts).or_else(|e| r.drop(e).map(|()| None))
            };
            let start = instant(
                "event.appointment_updated.start_time",
                a.start_time.as_ref(),
            )?;
            let end = instant("event.appointment_updated.end_time", a.end_time.as_ref())?;
            Effect::Appointment {
                id: r.id(
                    "event.appointment_updated.appointment_id",
                    &a.appointment_id,
                )?,
                appointment: AppointmentRec {
                    status: Attendance::from_proto(a.status),
                    calendar: r
                        .optional_id("event.appointment_updated.calendar_id", &a.calendar_id)?,
                    start,
                    end,
                    title: r.text("event.appointment_updated.title", &a.title)?,
                    deleted: a.deleted,
                },
            }
        }
        Some(Payload::OpportunityUpdated(o)) => Effect::Opportunity {
            id: r.id(
                "event.opportunity_updated.opportunity_id",
                &o.opportunity_id,
            )?,
            opportunity: OpportunityRec {
                status: r.text("event.opportunity_updated.status", &o.status)?,
                value: o.monetary_value,
                name: r.text("event.opportunity_updated.name", &o.name)?,
                pipeline: r.optional_id("event.opportunity_updated.pipeline_id", &o.pipeline_id)?,
                stage: r.optional_id(
                    "event.opportunity_updated.pipeline_stage_id",
                    &o.pipeline_stage_id,
                )?,
            },
        },
    }))
}

/// Milliseconds since the Unix epoch of a required timestamp.
pub fn millis(field: &str, ts: Option<&prost_types::Timestamp>) -> Result<i64, Error> {
    optional_millis(field, ts)?.ok_or_else(|| Error::invalid(field, "is required"))
}

pub fn optional_millis(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<i64>, Error> {
    let Some(ts) = ts else { return Ok(None) };
    // 0001-01-01 .. 9999-12-31, as google.protobuf.Timestamp defines the range.
    if !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds)
        || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(Error::invalid(field, "is out of range"));
    }
    Ok(Some(ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000)))
}
