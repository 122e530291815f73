//! The public view of a stored contact: `contacts.v1.Contact`, with its derived stage,
//! totals and milestones.

use std::collections::{BTreeMap, BTreeSet};

use hookline_proto::v1;

use super::{ContactId, Lww, Record, Stamp, timestamp};

impl Record {
    /// The public view of this record.
    pub fn to_proto(&self, id: &ContactId) -> v1::Contact {
        let mut field_updated_at = std::collections::HashMap::new();
        let mut stamp_of = |name: &str, s: Option<&Stamp>| {
            if let Some(s) = s {
                field_updated_at.insert(name.to_owned(), timestamp(s.at));
            }
        };
        stamp_of("email", self.email.as_ref().map(|l| &l.stamp));
        stamp_of("phone", self.phone.as_ref().map(|l| &l.stamp));
        stamp_of("first_name", self.first_name.as_ref().map(|l| &l.stamp));
        stamp_of("last_name", self.last_name.as_ref().map(|l| &l.stamp));
        stamp_of("name", self.name.as_ref().map(|l| &l.stamp));
        stamp_of("tags", self.tags_stamp());
        stamp_of("dnd", self.dnd.as_ref().map(|l| &l.stamp));
        stamp_of("deleted", self.deleted.as_ref().map(|l| &l.stamp));

        let mut purchases: Vec<v1::Purchase> = self
            .purchases
            .iter()
            .map(|(k, p)| v1::Purchase {
                purchase_id: k.clone(),
                amount: p.amount,
                currency: p.currency.clone(),
                checkout_session_id: first(&p.refs.session),
                payment_intent_id: first(&p.refs.payment_intent),
                charge_id: first(&p.refs.charge),
                invoice_id: first(&p.refs.invoice),
                subscription_id: p.subscription.clone(),
                description: p.description.clone(),
                occurred_at: Some(timestamp(p.first_at)),
                event_id: p.stamp.ev.clone(),
            })
            .collect();
        purchases.sort_by(|a, b| {
            (a.occurred_at.map(|t| t.seconds), &a.purchase_id)
                .cmp(&(b.occurred_at.map(|t| t.seconds), &b.purchase_id))
        });
        let mut refunds: Vec<v1::Refund> = self
            .refunds
            .iter()
            .map(|(k, r)| v1::Refund {
                refund_id: k.clone(),
                amount: r.v.amount,
                currency: r.v.currency.clone(),
                charge_id: r.v.charge.clone(),
                payment_intent_id: r.v.payment_intent.clone(),
                status: r.v.status.to_proto().into(),
                occurred_at: Some(timestamp(r.stamp.at)),
            })
            .collect();
        refunds.sort_by(|a, b| {
            (a.occurred_at.map(|t| t.seconds), &a.refund_id)
                .cmp(&(b.occurred_at.map(|t| t.seconds), &b.refund_id))
        });

        let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for p in self.purchases.values() {
            let t = totals.entry(p.currency.clone()).or_default();
            t.0 = t.0.saturating_add(p.amount);
        }
        let refunded = self.refunded_totals();
        for (currency, amount) in &refunded {
            totals.entry(currency.clone()).or_default().1 = *amount;
        }

        let appointment = self
            .appointments
            .iter()
            .max_by(|a, b| (&a.1.stamp, &a.1.v).cmp(&(&b.1.stamp, &b.1.v)))
            .map(|(k, a)| v1::Appointment {
                appointment_id: k.clone(),
                calendar_id: a.v.calendar.clone(),
                status: a.v.status.to_proto().into(),
                start_time: a.v.start.map(timestamp),
                end_time: a.v.end.map(timestamp),
                title: a.v.title.clone(),
                deleted: a.v.deleted,
                updated_at: Some(timestamp(a.stamp.at)),
            });

        let text = |l: &Option<Lww<String>>| l.as_ref().map(|l| l.v.clone()).unwrap_or_default();
        v1::Contact {
            id: id.to_string(),
            email: self
                .email
                .as_ref()
                .map(|e| e.v.normalized.clone())
                .unwrap_or_default(),
            email_original: self
                .email
                .as_ref()
                .map(|e| e.v.original.clone())
                .unwrap_or_default(),
            phone: self
                .phone
                .as_ref()
                .map(|p| p.v.value.clone())
                .unwrap_or_default(),
            phone_valid: self.phone.as_ref().is_some_and(|p| p.v.valid),
            first_name: text(&self.first_name),
            last_name: text(&self.last_name),
            name: text(&self.name),
            external_ids: self
                .external_ids
                .iter()
                .map(|(system, id)| v1::ExternalId {
                    system: system.clone(),
                    id: id.clone(),
                })
                .collect(),
            stage: self.stage().to_proto().into(),
            refunded: !refunded.is_empty(),
            tags: self.current_tags(),
            dnd: self.dnd.as_ref().is_some_and(|d| d.v),
            purchases,
            refunds,
            totals: totals
                .into_iter()
                .map(|(currency, (purchased, refunded))| v1::CurrencyTotal {
                    currency,
                    purchased,
                    refunded,
                })
                .collect(),
            appointment,
            opportunities: self
                .opportunities
                .iter()
                .map(|(k, o)| v1::Opportunity {
                    opportunity_id: k.clone(),
                    status: o.v.status.clone(),
                    monetary_value: o.v.value,
                    name: o.v.name.clone(),
                    pipeline_id: o.v.pipeline.clone(),
                    pipeline_stage_id: o.v.stage.clone(),
                    updated_at: Some(timestamp(o.stamp.at)),
                })
                .collect(),
            milestones: Some(v1::Milestones {
                booked_at: self.milestones.booked.map(timestamp),
                attended_at: self.milestones.attended.map(timestamp),
                no_show_at: self.milestones.no_show.map(timestamp),
                purchased_at: self.purchased_at().map(timestamp),
                refunded_at: self.refunded_at().map(timestamp),
            }),
            created_at: self.first_seen.map(timestamp),
            updated_at: self.last_seen.map(timestamp),
            field_updated_at,
            merged_ids: self.merged.iter().map(ToString::to_string).collect(),
            deleted: self.deleted.as_ref().is_some_and(|d| d.v),
            // A live contact; an erased one is shown by `Erasure::to_proto` instead.
            erased_at: None,
            erased_by: String::new(),
        }
    }
}

fn first(set: &BTreeSet<String>) -> String {
    set.first().cloned().unwrap_or_default()
}
