//! The stored state of a contact and its merge rules. No I/O.
//!
//! # Merge rules
//!
//! A stored contact is a join-semilattice: applying an event means joining the record
//! with a small record built from that event ([`Record::from_event`]), and merging two
//! contacts means joining their records ([`Record::join`]). The join is commutative,
//! associative and idempotent, so the final contact is the same whatever the order in
//! which events arrive, however often each arrives, and whichever contact survives a
//! merge. The rules, field by field:
//!
//! - **Scalar fields** (email, phone, names, tags, dnd, deleted): last writer wins by
//!   the event's occurrence time; ties are broken by the event id, then by the value.
//!   An older event never overwrites a newer value.
//! - **Tag changes** (one tag added or taken off, from senders that report changes
//!   rather than the list): each tag's newest change wins, and applies on top of the
//!   full list when it is not older than the list; a change older than the list is
//!   forgotten, since the list states that tag's fate more recently.
//! - **External ids**: one per system; a contact never holds two ids of one system
//!   (resolution refuses such merges, see [`super::plan()`]). Should two ever meet, the
//!   smaller id is kept so the result stays deterministic.
//! - **Purchases**: records that share any payment reference (payment intent, invoice,
//!   checkout session, charge id) are one payment, recorded once under its strongest
//!   reference; references are kept as sets, amounts come from the newest event.
//! - **Refunds** are keyed by refund id, each last-writer-wins (status moves). Charge
//!   level cumulative amounts keep their maximum. The refunded total of a charge is
//!   `max(cumulative amount, sum of counted refunds)`; failed and canceled refunds do
//!   not count. It is derived on read, never incremented.
//! - **Appointments** are keyed by appointment id, each last-writer-wins (GoHighLevel's
//!   `dateUpdated` is the occurrence time, so a stale update changes nothing).
//! - **Milestones** keep the first time each was reached (minimum).
//! - **Stage** is derived on read: `purchased` when a purchase exists; otherwise from the
//!   most recently updated appointment (attended, no-show, booked; cancelled is a lead);
//!   otherwise `lead`. It therefore moves back only through a newer explicit event, such
//!   as a reschedule after a no-show. `refunded` is a flag derived from refunds.
//! - **created / updated** are the earliest and newest occurrence times seen.
//! - **Former identifiers**: every email, phone and external id an event stated that the
//!   fields no longer show (replaced by a newer one, lost to it, a second id of a
//!   system) is kept in [`Former`], as the set of every identifier seen minus the
//!   current ones: the index may still name the contact by each (a claim is not taken
//!   back when its value loses), and erasing the contact must delete those entries too.

use std::collections::{BTreeMap, BTreeSet};

use hookline_proto::v1;
use serde::{Deserialize, Serialize};

use super::{
    ChargeRefund, ContactId, Effect, Email, EventEffect, Identifier, Phone, PurchaseRec, RefundRec,
    identifiers,
};

/// Occurrence stamp of a write: event time in milliseconds, then event id for ties.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub at: i64,
    pub ev: String,
}

/// A last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    #[serde(flatten)]
    pub stamp: Stamp,
    pub v: T,
}

impl<T> Lww<T> {
    fn at(stamp: &Stamp, v: T) -> Self {
        Self {
            stamp: stamp.clone(),
            v,
        }
    }
}

impl<T: Ord> Lww<T> {
    fn newer_than(&self, other: &Self) -> bool {
        (&self.stamp, &self.v) > (&other.stamp, &other.v)
    }
}

fn join_lww<T: Ord>(mine: &mut Option<Lww<T>>, theirs: Option<Lww<T>>) {
    if let Some(theirs) = theirs {
        match mine {
            Some(m) if !theirs.newer_than(m) => {}
            _ => *mine = Some(theirs),
        }
    }
}

fn join_lww_map<T: Ord>(mine: &mut BTreeMap<String, Lww<T>>, theirs: BTreeMap<String, Lww<T>>) {
    for (k, t) in theirs {
        match mine.get(&k) {
            Some(m) if !t.newer_than(m) => {}
            _ => {
                mine.insert(k, t);
            }
        }
    }
}

fn join_min(mine: &mut Option<i64>, theirs: Option<i64>) {
    *mine = match (*mine, theirs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

fn join_max(mine: &mut Option<i64>, theirs: Option<i64>) {
    *mine = match (*mine, theirs) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
}

/// Attendance of an appointment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attendance {
    Unknown,
    Booked,
    Attended,
    NoShow,
    Cancelled,
}

impl Attendance {
    pub(super) fn from_proto(s: i32) -> Self {
        match v1::AppointmentStatus::try_from(s) {
            Ok(v1::AppointmentStatus::Booked) => Self::Booked,
            Ok(v1::AppointmentStatus::Attended) => Self::Attended,
            Ok(v1::AppointmentStatus::NoShow) => Self::NoShow,
            Ok(v1::AppointmentStatus::Cancelled) => Self::Cancelled,
            _ => Self::Unknown,
        }
    }

    pub(super) fn to_proto(self) -> v1::AppointmentStatus {
        match self {
            Self::Unknown => v1::AppointmentStatus::Unspecified,
            Self::Booked => v1::AppointmentStatus::Booked,
            Self::Attended => v1::AppointmentStatus::Attended,
            Self::NoShow => v1::AppointmentStatus::NoShow,
            Self::Cancelled => v1::AppointmentStatus::Cancelled,
        }
    }
}

/// One appointment, as of its newest update.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppointmentRec {
    pub status: Attendance,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub calendar: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default)]
    pub deleted: bool,
}

/// One sales opportunity, as of its newest update.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpportunityRec {
    pub status: String,
    pub value: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
}

/// First times the contact reached each milestone that is not derivable from a set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestones {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attended: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_show: Option<i64>,
}

/// Funnel stage, derived from the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Lead,
    Booked,
    Attended,
    NoShow,
    Purchased,
}

impl Stage {
    pub fn to_proto(self) -> v1::Stage {
        match self {
            Self::Lead => v1::Stage::Lead,
            Self::Booked => v1::Stage::Booked,
            Self::Attended => v1::Stage::Attended,
            Self::NoShow => v1::Stage::NoShow,
            Self::Purchased => v1::Stage::Purchased,
        }
    }
}

/// Identifiers events stated about a contact that its fields no longer show (see the
/// module docs). Empty for a contact whose email, phone and provider ids never changed,
/// so that it costs nothing there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Former {
    /// Normalized emails.
    #[serde(default, rename = "e", skip_serializing_if = "BTreeSet::is_empty")]
    pub emails: BTreeSet<String>,
    /// Phones in E.164 (only those that could be read: raw text is never indexed).
    #[serde(default, rename = "p", skip_serializing_if = "BTreeSet::is_empty")]
    pub phones: BTreeSet<String>,
    /// (system, id) pairs.
    #[serde(default, rename = "x", skip_serializing_if = "BTreeSet::is_empty")]
    pub external_ids: BTreeSet<(String, String)>,
}

impl Former {
    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.phones.is_empty() && self.external_ids.is_empty()
    }

    fn union(&mut self, other: Self) {
        self.emails.extend(other.emails);
        self.phones.extend(other.phones);
        self.external_ids.extend(other.external_ids);
    }
}

/// The stored state of a contact. Every field joins as the module docs describe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Lww<Email>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Lww<Phone>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Lww<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Lww<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Lww<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Lww<Vec<String>>>,
    /// Tags added (`true`) or taken off (`false`) one at a time, newer than `tags`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_changes: BTreeMap<String, Lww<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnd: Option<Lww<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Lww<bool>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
    /// Payment references claimed in the index for this contact.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub payment_refs: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub purchases: BTreeMap<String, PurchaseRec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refunds: BTreeMap<String, Lww<RefundRec>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub charge_refunds: BTreeMap<String, ChargeRefund>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub appointments: BTreeMap<String, Lww<AppointmentRec>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub opportunities: BTreeMap<String, Lww<OpportunityRec>>,
    #[serde(default)]
    pub milestones: Milestones,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Contacts merged into this one.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub merged: BTreeSet<ContactId>,
    /// Identifiers stated before that the fields above no longer show.
    #[serde(default, skip_serializing_if = "Former::is_empty")]
    pub former: Former,
}

impl Record {
    /// Joins `other` into `self`. Commutative, associative and idempotent.
    pub fn join(&mut self, other: Record) {
        let mut seen = self.seen();
        seen.union(other.seen());
        join_lww(&mut self.email, other.email);
        join_lww(&mut self.phone, other.phone);
        join_lww(&mut self.first_name, other.first_name);
        join_lww(&mut self.last_name, other.last_name);
        join_lww(&mut self.name, other.name);
        join_lww(&mut self.tags, other.tags);
        join_lww_map(&mut self.tag_changes, other.tag_changes);
        if let Some(list) = &self.tags {
            self.tag_changes.retain(|_, c| c.stamp >= list.stamp);
        }
        join_lww(&mut self.dnd, other.dnd);
        join_lww(&mut self.deleted, other.deleted);
        for (system, id) in other.external_ids {
            let slot = self
                .external_ids
                .entry(system)
                .or_insert_with(|| id.clone());
            if id < *slot {
                *slot = id;
            }
        }
        self.payment_refs.extend(other.payment_refs);
        for p in other.purchases.into_values() {
            self.add_purchase(p);
        }
        join_lww_map(&mut self.refunds, other.refunds);
        for (k, c) in other.charge_refunds {
            let joined = match self.charge_refunds.remove(&k) {
                Some(mine) => mine.join(c),
                None => c,
            };
            self.charge_refunds.insert(k, joined);
        }
        join_lww_map(&mut self.appointments, other.appointments);
        join_lww_map(&mut self.opportunities, other.opportunities);
        join_min(&mut self.milestones.booked, other.milestones.booked);
        join_min(&mut self.milestones.attended, other.milestones.attended);
        join_min(&mut self.milestones.no_show, other.milestones.no_show);
        join_min(&mut self.first_seen, other.first_seen);
        join_max(&mut self.last_seen, other.last_seen);
        self.merged.extend(other.merged);
        // Every identifier seen is kept: as a field, or else as a former one.
        if let Some(e) = &self.email {
            seen.emails.remove(&e.v.normalized);
        }
        if let Some(p) = self.phone.as_ref().filter(|p| p.v.valid) {
            seen.phones.remove(&p.v.value);
        }
        seen.external_ids
            .retain(|(system, id)| self.external_ids.get(system) != Some(id));
        self.former = seen;
    }

    /// Every email, phone and external id events stated about this contact: the current
    /// ones and the former.
    fn seen(&self) -> Former {
        let mut seen = self.former.clone();
        if let Some(e) = &self.email {
            seen.emails.insert(e.v.normalized.clone());
        }
        if let Some(p) = self.phone.as_ref().filter(|p| p.v.valid) {
            seen.phones.insert(p.v.value.clone());
        }
        seen.external_ids.extend(self.external_ids.clone());
        seen
    }

    /// Records a purchase, joined with every recorded purchase of the same payment
    /// (sharing any reference), under the key of its strongest reference. Joining grows
    /// the references, so it repeats until nothing more is shared.
    fn add_purchase(&mut self, mut p: PurchaseRec) {
        loop {
            let same: Vec<String> = self
                .purchases
                .iter()
                .filter(|(k, q)| q.refs.shares_any(&p.refs) || Some(k.as_str()) == p.refs.key())
                .map(|(k, _)| k.clone())
                .collect();
            if same.is_empty() {
                break;
            }
            for k in same {
                if let Some(q) = self.purchases.remove(&k) {
                    p = q.join(p);
                }
            }
        }
        let key = p.refs.key().unwrap_or_default().to_owned();
        self.purchases.insert(key, p);
    }

    /// The identifiers this contact holds in the index.
    pub fn identifiers(&self) -> Vec<Identifier> {
        identifiers(
            &self.external_ids,
            &self.payment_refs,
            self.email.as_ref().map(|e| &e.v),
            self.phone.as_ref().map(|p| &p.v),
        )
    }

    /// Every identifier the index may name this contact by: the current ones and the
    /// former (see [`Former`]).
    pub fn every_identifier(&self) -> Vec<Identifier> {
        let mut all = self.identifiers();
        let former = &self.former;
        all.extend(
            former
                .external_ids
                .iter()
                .map(|(system, id)| Identifier::External {
                    system: system.clone(),
                    id: id.clone(),
                }),
        );
        all.extend(former.emails.iter().cloned().map(Identifier::Email));
        all.extend(former.phones.iter().cloned().map(Identifier::Phone));
        all
    }

    /// The contact's tags: the newest full list, with the tag changes not older than it.
    pub fn current_tags(&self) -> Vec<String> {
        let mut tags: BTreeSet<String> = self
            .tags
            .as_ref()
            .map(|l| l.v.iter().cloned().collect())
            .unwrap_or_default();
        for (tag, change) in &self.tag_changes {
            if change.v {
                tags.insert(tag.clone());
            } else {
                tags.remove(tag);
            }
        }
        tags.into_iter().collect()
    }

    /// When the tags last changed: the newer of the list and the changes.
    pub fn tags_stamp(&self) -> Option<&Stamp> {
        let list = self.tags.as_ref().map(|l| &l.stamp);
        let changes = self.tag_changes.values().map(|c| &c.stamp).max();
        list.into_iter().chain(changes).max()
    }

    pub fn stage(&self) -> Stage {
        if !self.purchases.is_empty() {
            return Stage::Purchased;
        }
        let current = self
            .appointments
            .values()
            .filter(|a| !a.v.deleted)
            .max_by(|a, b| (&a.stamp, &a.v).cmp(&(&b.stamp, &b.v)));
        match current.map(|a| a.v.status) {
            Some(Attendance::Booked) => Stage::Booked,
            Some(Attendance::Attended) => Stage::Attended,
            Some(Attendance::NoShow) => Stage::NoShow,
            Some(Attendance::Cancelled | Attendance::Unknown) | None => Stage::Lead,
        }
    }

    /// Refunded amount per currency: per charge the larger of the cumulative amount and
    /// the counted refunds on it, plus counted refunds not tied to a known charge.
    pub fn refunded_totals(&self) -> BTreeMap<String, i64> {
        let mut by_charge: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for r in self.refunds.values().filter(|r| r.v.status.counts()) {
            if r.v.charge.is_empty() {
                let t = totals.entry(r.v.currency.clone()).or_default();
                *t = t.saturating_add(r.v.amount);
            } else {
                let e = by_charge.entry(&r.v.charge).or_insert((0, &r.v.currency));
                e.0 = e.0.saturating_add(r.v.amount);
            }
        }
        for (charge, c) in &self.charge_refunds {
            let e = by_charge.entry(charge).or_insert((0, &c.currency));
            e.0 = e.0.max(c.amount);
        }
        for (amount, currency) in by_charge.into_values() {
            let t = totals.entry(currency.to_owned()).or_default();
            *t = t.saturating_add(amount);
        }
        totals.retain(|_, v| *v > 0);
        totals
    }

    pub(super) fn purchased_at(&self) -> Option<i64> {
        self.purchases.values().map(|p| p.first_at).min()
    }

    pub(super) fn refunded_at(&self) -> Option<i64> {
        let by_id = self
            .refunds
            .values()
            .filter(|r| r.v.status.counts() && r.v.amount > 0)
            .map(|r| r.stamp.at);
        let by_charge = self
            .charge_refunds
            .values()
            .filter(|c| c.amount > 0)
            .map(|c| c.first_at);
        by_id.chain(by_charge).min()
    }

    /// The record an event contributes. Joining it into a contact applies the event.
    pub fn from_event(ev: &EventEffect) -> Record {
        let stamp = Stamp {
            at: ev.occurred_at,
            ev: ev.event_id.as_str().to_owned(),
        };
        let d = &ev.data;
        let mut r = Record {
            email: d.email.clone().map(|v| Lww::at(&stamp, v)),
            phone: d.phone.clone().map(|v| Lww::at(&stamp, v)),
            first_name: d.first_name.clone().map(|v| Lww::at(&stamp, v)),
            last_name: d.last_name.clone().map(|v| Lww::at(&stamp, v)),
            name: d.name.clone().map(|v| Lww::at(&stamp, v)),
            tags: d.tags.clone().map(|v| Lww::at(&stamp, v)),
            tag_changes: d
                .tag_changes
                .iter()
                .map(|(t, add)| (t.clone(), Lww::at(&stamp, *add)))
                .collect(),
            dnd: d.dnd.map(|v| Lww::at(&stamp, v)),
            deleted: None,
            external_ids: d.external_ids.clone(),
            payment_refs: d.payment_refs.clone(),
            first_seen: Some(ev.occurred_at),
            last_seen: Some(ev.occurred_at),
            ..Record::default()
        };
        match &ev.effect {
            Effect::Profile => r.deleted = Some(Lww::at(&stamp, false)),
            Effect::Deleted => r.deleted = Some(Lww::at(&stamp, true)),
            Effect::Purchase(purchase) => r.add_purchase(purchase.clone()),
            Effect::Refund {
                refund_id,
                refund,
                charge_cumulative,
            } => {
                if let Some(id) = refund_id {
                    r.refunds
                        .insert(id.clone(), Lww::at(&stamp, refund.clone()));
                }
                if let Some(amount) = charge_cumulative.filter(|_| !refund.charge.is_empty()) {
                    r.charge_refunds.insert(
                        refund.charge.clone(),
                        ChargeRefund {
                            amount,
                            currency: refund.currency.clone(),
                            first_at: ev.occurred_at,
                        },
                    );
                }
            }
            Effect::Appointment { id, appointment } => {
                let at = Some(ev.occurred_at);
                match appointment.status {
                    Attendance::Booked if !appointment.deleted => r.milestones.booked = at,
                    Attendance::Attended => r.milestones.attended = at,
                    Attendance::NoShow => r.milestones.no_show = at,
                    _ => {}
                }
                r.appointments
                    .insert(id.clone(), Lww::at(&stamp, appointment.clone()));
            }
            Effect::Opportunity { id, opportunity } => {
                r.opportunities
                    .insert(id.clone(), Lww::at(&stamp, opportunity.clone()));
            }
        }
        r
    }
}
