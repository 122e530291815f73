//! Validated input: the contact fields an event or caller states, and `ApplyEvent`
//! requests turned into effects on a contact.

use std::collections::{BTreeMap, BTreeSet};

use hookline_proto::{prost_types, v1};

use super::{
    AppointmentRec, Attendance, Email, EventId, Identifier, MAX_TAGS, OpportunityRec, PaymentRefs,
    Phone, PurchaseRec, RefundRec, RefundStatus, Region, Stamp, check_id, check_system, check_text,
    identifiers,
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
    pub dnd: Option<bool>,
    pub external_ids: BTreeMap<String, String>,
    pub payment_refs: BTreeSet<String>,
}

impl ContactFields {
    /// Validates `data`. `prefix` names the message in errors ("event.contact").
    ///
    /// With `notes`, a malformed field is dropped and described there instead of
    /// failing the whole call: an authentic webhook event should still record the
    /// purchase even if the provider holds a malformed email. Callers of the API get
    /// `InvalidArgument` instead.
    pub fn parse(
        prefix: &str,
        data: &v1::ContactData,
        default_region: Region,
        mut notes: Option<&mut Vec<String>>,
    ) -> Result<Self, Error> {
        let field = |name: &str| format!("{prefix}.{name}");
        let mut keep = |r: Result<(), Error>| -> Result<bool, Error> {
            match (r, notes.as_deref_mut()) {
                (Ok(()), _) => Ok(true),
                (Err(e), Some(notes)) => {
                    notes.push(format!("{e}; dropped"));
                    Ok(false)
                }
                (Err(e), None) => Err(e),
            }
        };
        let region =
            match Region::parse_or(&field("phone_region"), &data.phone_region, default_region) {
                Ok(r) => r,
                Err(e) => {
                    keep(Err(e))?;
                    default_region
                }
            };
        let mut parsed = Self::default();
        if let Some(s) = data.email.as_deref().filter(|s| !s.trim().is_empty()) {
            match Email::parse(&field("email"), s) {
                Ok(e) => parsed.email = Some(e),
                Err(e) => _ = keep(Err(e))?,
            }
        }
        if let Some(s) = data.phone.as_deref().filter(|s| !s.trim().is_empty()) {
            match Phone::parse(&field("phone"), s, region) {
                Ok(p) => parsed.phone = Some(p),
                Err(e) => _ = keep(Err(e))?,
            }
        }
        for (name, value, slot) in [
            ("first_name", &data.first_name, &mut parsed.first_name),
            ("last_name", &data.last_name, &mut parsed.last_name),
            ("name", &data.name, &mut parsed.name),
        ] {
            if let Some(v) = value {
                match check_text(&field(name), v) {
                    Ok(v) => *slot = Some(v).filter(|v| !v.is_empty()),
                    Err(e) => _ = keep(Err(e))?,
                }
            }
        }
        if let Some(list) = &data.tags {
            let mut tags = Vec::with_capacity(list.tags.len());
            let mut ok = keep(if list.tags.len() > MAX_TAGS {
                Err(Error::invalid(field("tags"), "has more than 256 tags"))
            } else {
                Ok(())
            })?;
            for t in list.tags.iter().take(MAX_TAGS) {
                match check_text(&field("tags"), t) {
                    Ok(t) if !t.is_empty() => tags.push(t),
                    Ok(_) => {}
                    Err(e) => ok &= keep(Err(e))?,
                }
            }
            tags.sort();
            tags.dedup();
            if ok {
                parsed.tags = Some(tags);
            }
        }
        for x in &data.external_ids {
            let valid = check_system(&field("external_ids.system"), &x.system)
                .and_then(|()| check_id(&field("external_ids.id"), &x.id))
                .and_then(|()| match parsed.external_ids.get(&x.system) {
                    Some(prev) if *prev != x.id => Err(Error::invalid(
                        field("external_ids"),
                        "holds two ids of one system",
                    )),
                    _ => Ok(()),
                });
            if keep(valid)? {
                parsed.external_ids.insert(x.system.clone(), x.id.clone());
            }
        }
        for r in &data.payment_refs {
            if keep(check_id(&field("payment_refs"), r))? {
                parsed.payment_refs.insert(r.clone());
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
                "email" | "phone" | "first_name" | "last_name" | "name" | "tags" | "dnd"
                | "external_ids" => {
                    keep.insert(p.as_str());
                }
                _ => {
                    return Err(Error::invalid(
                        "update_mask",
                        "names an unknown field (allowed: email, phone, first_name, \
                         last_name, name, tags, dnd, external_ids)",
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
    pub id: EventId,
    pub source: String,
    pub event_type: String,
    pub occurred_at: i64,
    pub received_at: i64,
    /// What it does; `Err` for an authentic event that changes no contact.
    pub action: Result<EventEffect, Ignored>,
    /// Fields dropped because they were malformed, for the event log.
    pub notes: Vec<String>,
}

/// Why an event changes no contact, with the raw body for inspection and replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub reason: String,
    pub body: Vec<u8>,
}

impl Ignored {
    fn because(reason: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            body: Vec::new(),
        }
    }
}

impl ParsedEvent {
    /// Validates an event from the edge. Errors name the offending field; malformed
    /// contact fields are dropped and noted rather than refusing an authentic event.
    pub fn parse(ev: &v1::WebhookEvent, default_region: Region) -> Result<Self, Error> {
        let id = EventId::parse("event.id", &ev.id)?;
        check_id("event.source", &ev.source)?;
        let occurred_at = millis("event.occurred_at", ev.occurred_at.as_ref())?;
        let mut notes = Vec::new();
        let data = ContactFields::parse(
            "event.contact",
            ev.contact.as_ref().unwrap_or(&v1::ContactData::default()),
            default_region,
            Some(&mut notes),
        )?;
        let action = match effect(&id, occurred_at, ev)? {
            Ok(_) if data.identifiers().is_empty() => {
                Err(Ignored::because("no contact identifiers"))
            }
            Ok(effect) => Ok(EventEffect {
                event_id: id.clone(),
                occurred_at,
                data,
                effect,
            }),
            Err(ignored) => Err(ignored),
        };
        // The kind names the sender's software; nothing depends on it, but it is checked
        // like every other text field.
        check_text("event.kind", &ev.kind)?;
        Ok(Self {
            id,
            source: ev.source.clone(),
            event_type: check_text("event.type", &ev.r#type)?,
            occurred_at,
            received_at: millis("event.received_at", ev.received_at.as_ref())?,
            action,
            notes,
        })
    }
}

/// The effect of an event's payload, or why it has none.
fn effect(
    id: &EventId,
    occurred_at: i64,
    ev: &v1::WebhookEvent,
) -> Result<Result<Effect, Ignored>, Error> {
    use v1::webhook_event::Payload;
    Ok(Ok(match ev.payload.as_ref() {
        None => return Err(Error::invalid("event.payload", "is required")),
        Some(Payload::Ignored(i)) => {
            #[allow(deprecated)] // older edges send the body inside the payload
            let legacy = &i.body;
            let body = if ev.raw_body.is_empty() {
                legacy
            } else {
                &ev.raw_body
            };
            return Ok(Err(Ignored {
                reason: check_text("event.ignored.reason", &i.reason)?,
                body: body.clone(),
            }));
        }
        Some(Payload::AppLifecycle(a)) => {
            return Ok(Err(Ignored::because(if a.installed {
                "app installed"
            } else {
                "app uninstalled"
            })));
        }
        Some(Payload::ContactUpserted(_)) => Effect::Profile,
        Some(Payload::ContactDeleted(_)) => Effect::Deleted,
        Some(Payload::PurchaseCompleted(p)) => {
            check_id("event.purchase_completed.purchase_id", &p.purchase_id)?;
            let set = |field: &str, v: &str| -> Result<BTreeSet<String>, Error> {
                if v.is_empty() {
                    return Ok(BTreeSet::new());
                }
                check_id(field, v)?;
                Ok(BTreeSet::from([v.to_owned()]))
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
            if !refs.kinds().iter().any(|s| s.contains(&p.purchase_id)) {
                refs.other.insert(p.purchase_id.clone());
            }
            let purchase = PurchaseRec {
                amount: p.amount,
                currency: check_text("event.purchase_completed.currency", &p.currency)?
                    .to_ascii_lowercase(),
                refs,
                subscription: p.subscription_id.clone(),
                description: check_text("event.purchase_completed.description", &p.description)?,
                first_at: occurred_at,
                stamp: Stamp {
                    at: occurred_at,
                    ev: id.as_str().to_owned(),
                },
            };
            Effect::Purchase(purchase)
        }
        Some(Payload::RefundUpdated(r)) => {
            let refund_id = (!r.refund_id.is_empty()).then(|| r.refund_id.clone());
            if let Some(rid) = &refund_id {
                check_id("event.refund_updated.refund_id", rid)?;
            }
            let cumulative = (r.charge_amount_refunded > 0).then_some(r.charge_amount_refunded);
            if refund_id.is_none() && (cumulative.is_none() || r.charge_id.is_empty()) {
                return Err(Error::invalid(
                    "event.refund_updated",
                    "needs a refund_id, or a charge_id with charge_amount_refunded",
                ));
            }
            Effect::Refund {
                refund_id,
                refund: RefundRec {
                    amount: r.amount,
                    currency: check_text("event.refund_updated.currency", &r.currency)?
                        .to_ascii_lowercase(),
                    charge: r.charge_id.clone(),
                    payment_intent: r.payment_intent_id.clone(),
                    status: RefundStatus::from_proto(r.status),
                },
                charge_cumulative: cumulative,
            }
        }
        Some(Payload::AppointmentUpdated(a)) => {
            check_id(
                "event.appointment_updated.appointment_id",
                &a.appointment_id,
            )?;
            Effect::Appointment {
                id: a.appointment_id.clone(),
                appointment: AppointmentRec {
                    status: Attendance::from_proto(a.status),
                    calendar: a.calendar_id.clone(),
                    start: optional_millis(
                        "event.appointment_updated.start_time",
                        a.start_time.as_ref(),
                    )?,
                    end: optional_millis(
                        "event.appointment_updated.end_time",
                        a.end_time.as_ref(),
                    )?,
                    title: check_text("event.appointment_updated.title", &a.title)?,
                    deleted: a.deleted,
                },
            }
        }
        Some(Payload::OpportunityUpdated(o)) => {
            check_id(
                "event.opportunity_updated.opportunity_id",
                &o.opportunity_id,
            )?;
            Effect::Opportunity {
                id: o.opportunity_id.clone(),
                opportunity: OpportunityRec {
                    status: check_text("event.opportunity_updated.status", &o.status)?,
                    value: o.monetary_value,
                    name: check_text("event.opportunity_updated.name", &o.name)?,
                    pipeline: o.pipeline_id.clone(),
                    stage: o.pipeline_stage_id.clone(),
                },
            }
        }
    }))
}

/// Milliseconds since the Unix epoch of a required timestamp.
pub fn millis(field: &str, ts: Option<&prost_types::Timestamp>) -> Result<i64, Error> {
    optional_millis(field, ts)?.ok_or_else(|| Error::invalid(field, "is required"))
}

fn optional_millis(field: &str, ts: Option<&prost_types::Timestamp>) -> Result<Option<i64>, Error> {
    let Some(ts) = ts else { return Ok(None) };
    // 0001-01-01 .. 9999-12-31, as google.protobuf.Timestamp defines the range.
    if !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds)
        || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(Error::invalid(field, "is out of range"));
    }
    Ok(Some(ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000)))
}
