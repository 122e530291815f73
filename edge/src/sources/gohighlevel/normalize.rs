//! Normalization of GoHighLevel marketplace events into `contacts.v1.WebhookEvent`s,
//! pure: raw bytes in, an event out. It starts with the app and location checks (§1.5),
//! and holds the field helpers workflow webhooks share.
//!
//! Normalization, marketplace field → event:
//!
//! | GHL | event |
//! |---|---|
//! | `webhookId` | id `"<source>:<webhookId>"` (absent: SHA-256 of the body) |
//! | `type` | type; routes the mapping below |
//! | `Appointment{Create,Update,Delete}` | `AppointmentUpdated`; `appointment.id`, `calendarId`, `title`, `appointmentStatus` (new/confirmed → booked, showed → attended, noshow → no-show, cancelled/invalid → cancelled), `startTime`/`endTime` (RFC 3339, any offset) → UTC; Delete sets `deleted` |
//! | `appointment.contactId` | contact external id `ghl_contact` |
//! | `appointment.dateUpdated` | occurred_at (else `timestamp`, else receipt) |
//! | `Contact{Create,Update,TagUpdate,DndUpdate}` | `ContactUpserted`; `id` → `ghl_contact`, `email`, `phone`, `firstName`, `lastName`, `name`, `tags` (full list, when the key is present), `dnd` (when present), `country` (two letters) → phone_region |
//! | `ContactDelete` | `ContactDeleted`; only `id` → `ghl_contact` |
//! | `Opportunity{Create,Update,StatusUpdate,StageUpdate,MonetaryValueUpdate}` | `OpportunityUpdated`; `id`, `status`, `name`, `pipelineId`, `pipelineStageId`, `monetaryValue` (major units × 100, see [`to_minor_units`]); `contactId` → `ghl_contact` |
//! | `InvoicePaid` | `PurchaseCompleted`; purchase id `"ghl_invoice:<_id>"`, `amountPaid` in minor units of `currency` (lower-cased), `name` → description; `contactDetails` {`id` → `ghl_contact`, `email`, `name`, `phoneNo`} |
//! | `INSTALL` / `UNINSTALL` | `AppLifecycle` {`appId`, `locationId`, `companyId`} |
//! | `dateUpdated` (`updatedAt` for invoices) | occurred_at of non-appointment events (else `timestamp`, else receipt) |
//!
//! Anything else, and any body the edge cannot type (not a JSON object, no or an unknown
//! `type`, without the id of the object itself: appointment `id`, opportunity `id`,
//! invoice `_id`), becomes an ignored event with the reason: the event is authentic, so
//! the sender gets a 2xx and the body is kept. An event that names no contact, or none
//! it can find (no `contactId`, no email or phone), is still typed, with what contact
//! data there is: contacts-svc decides "no contact identifiers", after it has checked
//! the fields, in one place for every source.

use hookline_proto::v1::{self, webhook_event::Payload};
use serde_json::{Map, Value};

use super::{GHL_CONTACT, GoHighLevel};
use crate::sources::Kind as _;
use crate::sources::fields::{
    currency_exponent, parse_instant, phone_region, proto_timestamp, tag_list, to_minor_units,
};
use crate::sources::{Envelope, body_digest_id, not_an_object, unreadable};

impl GoHighLevel {
    /// Normalizes an authentic delivery. Never fails: a body it cannot use becomes an
    /// ignored event that keeps the body for inspection and replay.
    pub(super) fn normalize_body(
        &self,
        source: &str,
        body: &[u8],
        received_at_ms: i64,
    ) -> v1::WebhookEvent {
        let parsed = serde_json::from_slice::<Value>(body);
        let object = match &parsed {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        };
        let Some(m) = object else {
            return unreadable(
                source,
                Self::KIND,
                body,
                received_at_ms,
                not_an_object(&parsed),
            );
        };
        let digest;
        let id = match str_of(m, "webhookId") {
            Some(id) => id,
            None => {
                digest = body_digest_id(body);
                digest.as_str()
            }
        };
        let event_type = str_of(m, "type")
            .or_else(|| infer_type(m))
            .unwrap_or_default();
        // Stale updates lose in contacts-svc by this time (last writer wins), so it is the
        // provider's change time where there is one, not the delivery's.
        let changed_at = if event_type.starts_with("Appointment") {
            object_of(m, "appointment").and_then(|a| str_of(a, "dateUpdated"))
        } else if event_type.starts_with("Invoice") {
            str_of(m, "updatedAt")
        } else {
            str_of(m, "dateUpdated")
        };
        let occurred_at_ms = changed_at
            .and_then(parse_instant)
            .or_else(|| str_of(m, "timestamp").and_then(parse_instant))
            .map_or(received_at_ms, |t| t.as_millisecond());
        let env = Envelope {
            source,
            kind: Self::KIND,
            id,
            event_type,
            occurred_at_ms,
            received_at_ms,
        };
        if let Some(reason) = self.not_for_us(m) {
            return env.ignored(reason, body);
        }
        let result = match event_type {
            "AppointmentCreate" | "AppointmentUpdate" | "AppointmentDelete" => {
                appointment(&env, m, event_type == "AppointmentDelete")
            }
            "ContactCreate" | "ContactUpdate" | "ContactTagUpdate" | "ContactDndUpdate" => {
                Ok(contact_upserted(&env, m))
            }
            "ContactDelete" => contact_deleted(&env, m),
            "OpportunityCreate"
            | "OpportunityUpdate"
            | "OpportunityStatusUpdate"
            | "OpportunityStageUpdate"
            | "OpportunityMonetaryValueUpdate" => opportunity(&env, m),
            "InvoicePaid" => invoice_paid(&env, m),
            "INSTALL" | "UNINSTALL" => Ok(lifecycle(&env, m, event_type == "INSTALL")),
            "" => Err("body has no type".to_owned()),
            other => Err(format!("event type {other:?} is not mapped")),
        };
        result.unwrap_or_else(|reason| env.ignored(reason, body))
    }

    /// Why an authentic event is not for this app or its locations (§1.5): one GHL key
    /// signs the webhooks of every app, so a valid signature alone does not make it ours.
    /// Checked before the event is mapped, INSTALL and UNINSTALL included. The reason
    /// names the check, never the values: they are another tenant's.
    fn not_for_us(&self, m: &Map<String, Value>) -> Option<String> {
        const PREFIX: &str = "not for this app/location";
        match str_of(m, "appId") {
            None => return Some(format!("{PREFIX}: the event has no appId")),
            Some(id) if !self.options.app_ids.contains(id) => {
                return Some(format!("{PREFIX}: appId is not the configured app_id"));
            }
            Some(_) => {}
        }
        if let Some(allowed) = &self.options.location_ids {
            // Invoices and orders name the location `altId` (with `altType: "location"`);
            // bulk installs may list several in `locationIds`.
            let alt_id = match str_of(m, "altType") {
                None | Some("location") => str_of(m, "altId"),
                Some(_) => None,
            };
            let single = str_of(m, "locationId").or(alt_id);
            let listed = match single {
                Some(id) => allowed.contains(id),
                None => array_of(m, "locationIds")
                    .iter()
                    .filter_map(|v| v.as_str())
                    .any(|id| allowed.contains(id.trim())),
            };
            if !listed {
                return Some(format!("{PREFIX}: location is not in location_ids"));
            }
        }
        None
    }
}

/// A type for a delivery without `type`: the docs' invoice examples have none (§7, open
/// question 7). A paid invoice snapshot is recorded as `InvoicePaid`; the purchase is
/// keyed by the invoice, so reading a later update of it again changes nothing.
fn infer_type(m: &Map<String, Value>) -> Option<&'static str> {
    let invoice = m.contains_key("invoiceNumber") && m.contains_key("amountPaid");
    (invoice && str_of(m, "status") == Some("paid")).then_some("InvoicePaid")
}

fn appointment(
    env: &Envelope<'_>,
    m: &Map<String, Value>,
    deleted: bool,
) -> Result<v1::WebhookEvent, String> {
    let a = object_of(m, "appointment").ok_or("body has no appointment object")?;
    let id = str_of(a, "id").ok_or("appointment has no id")?;
    let instant = |k| str_of(a, k).and_then(parse_instant).map(proto_timestamp);
    Ok(env.event(
        contact_of(str_of(a, "contactId")),
        Payload::AppointmentUpdated(v1::AppointmentUpdated {
            appointment_id: id.to_owned(),
            calendar_id: owned(str_of(a, "calendarId")),
            status: appointment_status(str_of(a, "appointmentStatus")).into(),
            start_time: instant("startTime"),
            end_time: instant("endTime"),
            title: owned(str_of(a, "title")),
            deleted,
            start_time_inferred: false,
        }),
    ))
}

fn contact_upserted(env: &Envelope<'_>, m: &Map<String, Value>) -> v1::WebhookEvent {
    let contact = v1::ContactData {
        email: str_of(m, "email").map(str::to_owned),
        phone: str_of(m, "phone").map(str::to_owned),
        first_name: str_of(m, "firstName").map(str::to_owned),
        last_name: str_of(m, "lastName").map(str::to_owned),
        name: str_of(m, "name").map(str::to_owned),
        external_ids: external_id(str_of(m, "id")),
        phone_region: phone_region(str_of(m, "country")),
        tags: m.get("tags").and_then(tag_list),
        dnd: m.get("dnd").and_then(Value::as_bool),
        ..v1::ContactData::default()
    };
    env.event(contact, Payload::ContactUpserted(v1::ContactUpserted {}))
}

/// A deletion names the GHL record only: its other fields are the deleted snapshot and
/// must not tie this record to other people's identifiers now.
fn contact_deleted(env: &Envelope<'_>, m: &Map<String, Value>) -> Result<v1::WebhookEvent, String> {
    let id = str_of(m, "id").ok_or("contact has no id")?;
    Ok(env.event(
        ghl_contact(id),
        Payload::ContactDeleted(v1::ContactDeleted {}),
    ))
}

fn opportunity(env: &Envelope<'_>, m: &Map<String, Value>) -> Result<v1::WebhookEvent, String> {
    let id = str_of(m, "id").ok_or("opportunity has no id")?;
    // GHL states opportunity values in major units of the location's currency and sends
    // no currency with them: two decimals are assumed.
    let monetary_value = match m.get("monetaryValue") {
        None | Some(Value::Null) => 0,
        Some(v) => to_minor_units(v, 2).ok_or("monetaryValue is not an amount in range")?,
    };
    Ok(env.event(
        contact_of(str_of(m, "contactId")),
        Payload::OpportunityUpdated(v1::OpportunityUpdated {
            opportunity_id: id.to_owned(),
            status: owned(str_of(m, "status")),
            monetary_value,
            name: owned(str_of(m, "name")),
            pipeline_id: owned(str_of(m, "pipelineId")),
            pipeline_stage_id: owned(str_of(m, "pipelineStageId")),
        }),
    ))
}

/// Purchases from GHL invoices are keyed `ghl_invoice:<_id>`: one invoice is one
/// purchase however many events report it, and the prefix keeps GHL's ids apart from
/// Stripe's in the contact's purchase set.
fn invoice_paid(env: &Envelope<'_>, m: &Map<String, Value>) -> Result<v1::WebhookEvent, String> {
    let id = str_of(m, "_id").ok_or("invoice has no _id")?;
    let currency = str_of(m, "currency")
        .ok_or("invoice has no currency")?
        .to_ascii_lowercase();
    let paid = m.get("amountPaid").ok_or("invoice has no amountPaid")?;
    let amount = to_minor_units(paid, currency_exponent(&currency))
        .ok_or("amountPaid is not an amount in range")?;
    let details = object_of(m, "contactDetails");
    let field = |k| details.and_then(|d| str_of(d, k)).map(str::to_owned);
    let purchase_id = format!("ghl_invoice:{id}");
    let contact = v1::ContactData {
        email: field("email"),
        phone: field("phoneNo"),
        name: field("name"),
        external_ids: external_id(details.and_then(|d| str_of(d, "id"))),
        payment_refs: vec![purchase_id.clone()],
        ..v1::ContactData::default()
    };
    Ok(env.event(
        contact,
        Payload::PurchaseCompleted(v1::PurchaseCompleted {
            purchase_id,
            amount,
            currency,
            invoice_id: id.to_owned(),
            description: owned(str_of(m, "name")),
            ..v1::PurchaseCompleted::default()
        }),
    ))
}

fn lifecycle(env: &Envelope<'_>, m: &Map<String, Value>, installed: bool) -> v1::WebhookEvent {
    env.event(
        v1::ContactData::default(),
        Payload::AppLifecycle(v1::AppLifecycle {
            installed,
            app_id: owned(str_of(m, "appId")),
            location_id: owned(str_of(m, "locationId")),
            company_id: owned(str_of(m, "companyId")),
        }),
    )
}

// Helpers shared with `gohighlevel_workflow`.

/// A JSON string field, trimmed, when it is not blank.
pub(in crate::sources) fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(in crate::sources) fn object_of<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Option<&'a Map<String, Value>> {
    m.get(key).and_then(Value::as_object)
}

fn array_of<'a>(m: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    m.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn owned(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn external_id(id: Option<&str>) -> Vec<v1::ExternalId> {
    id.map(|id| v1::ExternalId {
        system: GHL_CONTACT.to_owned(),
        id: id.to_owned(),
    })
    .into_iter()
    .collect()
}

/// A contact named by its GHL contact id only.
pub(in crate::sources) fn ghl_contact(id: &str) -> v1::ContactData {
    contact_of(Some(id))
}

/// The contact an event names by GHL contact id, if it names one. Without it the event
/// still has its type: whether an event without identifiers changes anything is
/// contacts-svc's to decide, after it has checked the fields.
fn contact_of(id: Option<&str>) -> v1::ContactData {
    v1::ContactData {
        external_ids: external_id(id),
        ..v1::ContactData::default()
    }
}

/// Attendance from GHL's appointment status (§3.2, §6). Unknown values (including the
/// API-only `active` and `completed`) state nothing.
pub(in crate::sources) fn appointment_status(status: Option<&str>) -> v1::AppointmentStatus {
    let Some(status) = status else {
        return v1::AppointmentStatus::Unspecified;
    };
    match status.to_ascii_lowercase().as_str() {
        "new" | "confirmed" | "booked" => v1::AppointmentStatus::Booked,
        "showed" => v1::AppointmentStatus::Attended,
        "noshow" | "no_show" | "no-show" => v1::AppointmentStatus::NoShow,
        "cancelled" | "canceled" | "invalid" => v1::AppointmentStatus::Cancelled,
        _ => v1::AppointmentStatus::Unspecified,
    }
}
