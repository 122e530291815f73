//! Mapping by configuration: how a sender hookline has no code for (a `standard-webhooks`
//! or `hmac` source) becomes contact events. `[sources.<name>.map]` names, with JSON
//! Pointers (RFC 6901) into the payload, where the person's fields, the occurrence time
//! and the event type are; `[[sources.<name>.actions]]`, chosen by event type, says what
//! an event does. Pure: a body and what the provider read from the headers in, an event
//! out.
//!
//! | `map` key | |
//! |---|---|
//! | `email`, `phone`, `first_name`, `last_name`, `name` | the person |
//! | `phone_region` | two-letter country for a phone written without `+` |
//! | `external_id`, `external_id_system` | the sender's id of the person, under a system name (default: the source's name) |
//! | `occurred_at` | RFC 3339, or Unix seconds or milliseconds; else the provider's time, else receipt |
//! | `event_type` | the event's type; else the provider's (a header), else none |
//!
//! | `do` | keys | effect |
//! |---|---|---|
//! | `contact` | | the mapped fields (every event, when no action is configured) |
//! | `purchase` | `purchase_id`, `amount`, `currency`/`currency_value`, `amount_unit`, `description` | a paid purchase, keyed by `purchase_id` |
//! | `refund` | `refund_id`, `purchase_id`, `amount`, `currency`/`currency_value`, `amount_unit` | a succeeded refund of that purchase |
//! | `add_tags`, `remove_tags` | `tags`/`tags_value` | tags added or taken off |
//! | `appointment` | `appointment_id`, `status`/`status_value`, `statuses`, `start_time`, `end_time`, `title`, `calendar_id` | an appointment's state (booked, attended, no-show, cancelled) |
//!
//! The first action whose `types` lists the event's type (a trailing `*` matches a
//! prefix; no `types` matches every type) decides. An event no action takes, a body
//! that is not a JSON object, or a value an action needs that is missing or unreadable
//! (an amount that is not a number, say) is ignored with the reason, and recorded with
//! its body: after the mapping is fixed it can be replayed. An event without any mapped
//! identifier of a person is ignored by contacts-svc ("no contact identifiers").

use std::collections::BTreeMap;

use hookline_proto::v1::{self, webhook_event::Payload};
use serde_json::Value;

use super::fields::{currency_exponent, instant_millis, phone_region, text_of, to_minor_units};
use super::{Envelope, not_an_object, timestamp};

/// Pointers a provider kind uses when the map does not say (Standard Webhooks payloads
/// are recommended to carry `type` and `timestamp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    pub event_type: Option<&'static str>,
    pub occurred_at: Option<&'static str>,
}

/// What the provider read before the body: the event id, and the type and time when
/// its headers carry them.
#[derive(Clone, Copy, Debug)]
pub struct Given<'a> {
    pub source: &'a str,
    pub kind: &'static str,
    /// Unscoped event id.
    pub id: &'a str,
    pub event_type: Option<&'a str>,
    pub occurred_at_ms: Option<i64>,
    pub received_at_ms: i64,
}

/// A checked mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    email: Option<String>,
    phone: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    phone_region: Option<String>,
    external_id: Option<(String, String)>,
    occurred_at: Option<String>,
    event_type: Option<String>,
    actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Action {
    /// Empty: every type.
    types: Vec<String>,
    effect: Effect,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    Contact,
    Purchase {
        purchase_id: String,
        money: Money,
        description: Option<String>,
    },
    Refund {
        refund_id: String,
        purchase_id: Option<String>,
        money: Money,
    },
    Tags {
        add: bool,
        tags: Values,
    },
    Appointment {
        appointment_id: String,
        status: Status,
        start_time: Option<String>,
        end_time: Option<String>,
        title: Option<String>,
        calendar_id: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Money {
    amount: String,
    major_units: bool,
    currency: Option<String>,
    /// Lower-case ISO 4217 code used when the pointer finds none.
    currency_value: Option<String>,
}

/// Where a list of values comes from: a pointer, a constant, or the pointer with the
/// constant when it finds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Values {
    pointer: Option<String>,
    constant: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    pointer: Option<String>,
    constant: Option<v1::AppointmentStatus>,
    /// The sender's words, lower-case, before the known ones.
    words: BTreeMap<String, v1::AppointmentStatus>,
}

const STATUSES: &str = "booked, attended, no_show, cancelled";

/// The appointment status a word names: the four hookline knows, and the words senders
/// commonly use for them (GoHighLevel's among them). Case and `-`/space are ignored.
fn known_status(word: &str) -> Option<v1::AppointmentStatus> {
    use v1::AppointmentStatus as S;
    let w = word.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    Some(match w.as_str() {
        "booked" | "new" | "confirmed" | "scheduled" | "rescheduled" => S::Booked,
        "attended" | "showed" | "show" | "completed" => S::Attended,
        "no_show" | "noshow" | "missed" => S::NoShow,
        "cancelled" | "canceled" | "invalid" | "declined" => S::Cancelled,
        _ => return None,
    })
}

impl Mapping {
    /// The event a delivery's body makes. Never fails: what the mapping cannot read
    /// becomes an ignored event that keeps the body.
    pub fn event(&self, given: Given<'_>, body: &[u8]) -> v1::WebhookEvent {
        let parsed = serde_json::from_slice::<Value>(body);
        let top = match &parsed {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return self
                    .envelope(given, None)
                    .ignored(not_an_object(&parsed), body);
            }
        };
        let env = self.envelope(given, Some(top));
        let Some(action) = self.actions_for(env.event_type) else {
            return env.ignored(
                format!("event type {:?} matches no action", env.event_type),
                body,
            );
        };
        match action.apply(top, self.contact(top)) {
            Ok((contact, payload)) => env.event(contact, payload),
            Err(reason) => env.ignored(reason, body),
        }
    }

    fn envelope<'a>(&self, given: Given<'a>, top: Option<&'a Value>) -> Envelope<'a> {
        let at = |p: &Option<String>| top.zip(p.as_deref()).and_then(|(v, p)| v.pointer(p));
        let event_type = at(&self.event_type)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .or(given.event_type)
            .unwrap_or_default();
        let occurred_at_ms = at(&self.occurred_at)
            .and_then(instant_millis)
            .or(given.occurred_at_ms)
            .unwrap_or(given.received_at_ms);
        Envelope {
            source: given.source,
            kind: given.kind,
            id: given.id,
            event_type,
            occurred_at_ms,
            received_at_ms: given.received_at_ms,
        }
    }

    fn actions_for(&self, event_type: &str) -> Option<&Action> {
        if self.actions.is_empty() {
            return Some(&CONTACT);
        }
        self.actions.iter().find(|a| {
            a.types.is_empty()
                || a.types.iter().any(|t| match t.strip_suffix('*') {
                    Some(prefix) => event_type.starts_with(prefix),
                    None => t == event_type,
                })
        })
    }

    fn contact(&self, top: &Value) -> v1::ContactData {
        let text = |p: &Option<String>| p.as_deref().and_then(|p| top.pointer(p)).and_then(text_of);
        v1::ContactData {
            email: text(&self.email),
            phone: text(&self.phone),
            first_name: text(&self.first_name),
            last_name: text(&self.last_name),
            name: text(&self.name),
            phone_region: phone_region(text(&self.phone_region).as_deref()),
            external_ids: self
                .external_id
                .iter()
                .filter_map(|(p, system)| {
                    let id = top.pointer(p).and_then(text_of)?;
                    Some(v1::ExternalId {
                        system: system.clone(),
                        id,
                    })
                })
                .collect(),
            ..v1::ContactData::default()
        }
    }
}

static CONTACT: Action = Action {
    types: Vec::new(),
    effect: Effect::Contact,
};

impl Action {
    /// The contact and payload of this action for a payload `top`, or why it is ignored.
    fn apply(
        &self,
        top: &Value,
        mut contact: v1::ContactData,
    ) -> Result<(v1::ContactData, Payload), String> {
        let payload = match &self.effect {
            Effect::Contact => Payload::ContactUpserted(v1::ContactUpserted {}),
            Effect::Purchase {
                purchase_id,
                money,
                description,
            } => {
                let purchase_id = required_id(top, purchase_id)?;
                let (amount, currency) = money.read(top)?;
                contact.payment_refs.push(purchase_id.clone());
                Payload::PurchaseCompleted(v1::PurchaseCompleted {
                    purchase_id,
                    amount,
                    currency,
                    description: optional_text(top, description.as_deref()).unwrap_or_default(),
                    ..v1::PurchaseCompleted::default()
                })
            }
            Effect::Refund {
                refund_id,
                purchase_id,
                money,
            } => {
                let refund_id = required_id(top, refund_id)?;
                let (amount, currency) = money.read(top)?;
                if let Some(p) = purchase_id.as_deref() {
                    contact.payment_refs.push(required_id(top, p)?);
                }
                Payload::RefundUpdated(v1::RefundUpdated {
                    refund_id,
                    amount,
                    currency,
                    status: v1::RefundStatus::Succeeded.into(),
                    ..v1::RefundUpdated::default()
                })
            }
            Effect::Tags { add, tags } => {
                let list = tags.read(top)?;
                if *add {
                    contact.add_tags = list;
                } else {
                    contact.remove_tags = list;
                }
                Payload::ContactUpserted(v1::ContactUpserted {})
            }
            Effect::Appointment {
                appointment_id,
                status,
                start_time,
                end_time,
                title,
                calendar_id,
            } => {
                let time = |p: &Option<String>| {
                    p.as_deref()
                        .and_then(|p| top.pointer(p))
                        .and_then(instant_millis)
                        .map(timestamp)
                };
                Payload::AppointmentUpdated(v1::AppointmentUpdated {
                    appointment_id: required_id(top, appointment_id)?,
                    status: status.read(top)?.into(),
                    start_time: time(start_time),
                    end_time: time(end_time),
                    title: optional_text(top, title.as_deref()).unwrap_or_default(),
                    calendar_id: optional_text(top, calendar_id.as_deref()).unwrap_or_default(),
                    ..v1::AppointmentUpdated::default()
                })
            }
        };
        Ok((contact, payload))
    }
}

impl Money {
    /// The amount in minor units and the lower-case currency, or why not.
    fn read(&self, top: &Value) -> Result<(i64, String), String> {
        let at = self.currency.as_deref().unwrap_or_default();
        let currency = match self.currency.as_deref().and_then(|p| top.pointer(p)) {
            Some(Value::String(c)) if is_currency_code(c.trim()) => c.trim().to_ascii_lowercase(),
            Some(_) => return Err(format!("the currency at {at} is not an ISO 4217 code")),
            None => self
                .currency_value
                .clone()
                .ok_or_else(|| format!("no currency at {at}"))?,
        };
        let value = top
            .pointer(&self.amount)
            .ok_or_else(|| format!("no amount at {}", self.amount))?;
        let amount = if self.major_units {
            to_minor_units(value, currency_exponent(&currency))
        } else {
            minor_units(value)
        };
        let amount = amount.ok_or_else(|| {
            let unit = if self.major_units { "major" } else { "minor" };
            format!(
                "the amount at {} is not a number in {unit} units",
                self.amount
            )
        })?;
        if amount < 0 {
            return Err(format!("the amount at {} is negative", self.amount));
        }
        Ok((amount, currency))
    }
}

/// Three ASCII letters, as ISO 4217 codes are.
pub(super) fn is_currency_code(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A whole number of minor units: an integer, or a string of one.
fn minor_units(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Values {
    /// The tags: a string (comma-separated allowed) or an array of strings at the
    /// pointer, else the constant ones.
    fn read(&self, top: &Value) -> Result<Vec<String>, String> {
        let found = self
            .pointer
            .as_deref()
            .and_then(|p| top.pointer(p))
            .and_then(super::fields::tag_list)
            .map(|l| l.tags)
            .filter(|t| !t.is_empty());
        match found {
            Some(tags) => Ok(tags),
            None if !self.constant.is_empty() => Ok(self.constant.clone()),
            None => Err(format!(
                "no tag at {}",
                self.pointer.as_deref().unwrap_or_default()
            )),
        }
    }
}

impl Status {
    fn read(&self, top: &Value) -> Result<v1::AppointmentStatus, String> {
        let Some(p) = self.pointer.as_deref() else {
            return self.constant.ok_or_else(|| "no status".to_owned());
        };
        match top.pointer(p).and_then(text_of) {
            Some(word) => self
                .words
                .get(&word.to_lowercase())
                .copied()
                .or_else(|| known_status(&word))
                .ok_or_else(|| {
                    format!(
                        "the status at {p} is not one hookline knows (map it in statuses to \
                         one of: {STATUSES})"
                    )
                }),
            None => self.constant.ok_or_else(|| format!("no status at {p}")),
        }
    }
}

fn required_id(top: &Value, pointer: &str) -> Result<String, String> {
    super::fields::id_at(top, pointer).ok_or_else(|| format!("no id at {pointer}"))
}

fn optional_text(top: &Value, pointer: Option<&str>) -> Option<String> {
    pointer.and_then(|p| top.pointer(p)).and_then(text_of)
}

mod config;

#[cfg(test)]
mod tests;
