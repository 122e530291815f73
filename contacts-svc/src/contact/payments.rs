//! The money side of a contact's record: payments and the references that tie the
//! events of one payment together, refunds and charge-level refunded amounts, each with
//! its join (the merge rules in `record.rs`'s module docs). No I/O.

use std::collections::BTreeSet;

use hookline_proto::v1;
use serde::{Deserialize, Serialize};

use super::Stamp;

/// Picks `hi` unless it is empty, then `lo`.
fn prefer(hi: String, lo: String) -> String {
    if hi.is_empty() { lo } else { hi }
}

/// The payment references of a purchase, by kind. Several events of one payment each
/// know some of them; sets (never single values) keep every link, so which events
/// describe one payment does not depend on the order they arrive in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefs {
    #[serde(default, rename = "pi", skip_serializing_if = "BTreeSet::is_empty")]
    pub payment_intent: BTreeSet<String>,
    #[serde(default, rename = "in", skip_serializing_if = "BTreeSet::is_empty")]
    pub invoice: BTreeSet<String>,
    #[serde(default, rename = "cs", skip_serializing_if = "BTreeSet::is_empty")]
    pub session: BTreeSet<String>,
    #[serde(default, rename = "ch", skip_serializing_if = "BTreeSet::is_empty")]
    pub charge: BTreeSet<String>,
    /// The caller's purchase id when it is none of the above.
    #[serde(default, rename = "id", skip_serializing_if = "BTreeSet::is_empty")]
    pub other: BTreeSet<String>,
}

impl PaymentRefs {
    pub(super) fn kinds(&self) -> [&BTreeSet<String>; 5] {
        [
            &self.payment_intent,
            &self.invoice,
            &self.session,
            &self.charge,
            &self.other,
        ]
    }

    /// The key the purchase is recorded under: its strongest reference.
    pub fn key(&self) -> Option<&str> {
        self.kinds()
            .into_iter()
            .find_map(|set| set.first())
            .map(String::as_str)
    }

    /// Whether the two share any reference, whatever its kind. (Comparing kind by kind
    /// would let the purchase key, the strongest reference, collide without a link.)
    pub(super) fn shares_any(&self, other: &Self) -> bool {
        let theirs = other.kinds();
        self.kinds()
            .into_iter()
            .flatten()
            .any(|r| theirs.iter().any(|set| set.contains(r)))
    }

    pub(super) fn union(&mut self, other: Self) {
        self.payment_intent.extend(other.payment_intent);
        self.invoice.extend(other.invoice);
        self.session.extend(other.session);
        self.charge.extend(other.charge);
        self.other.extend(other.other);
    }
}

/// One recorded purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRec {
    pub amount: i64,
    pub currency: String,
    pub refs: PaymentRefs,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscription: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Earliest occurrence among the events that recorded it.
    pub first_at: i64,
    /// Newest event that recorded it; its amount and currency win.
    pub stamp: Stamp,
}

impl PurchaseRec {
    pub(super) fn join(self, other: Self) -> Self {
        let (hi, lo) = if (&other.stamp, other.amount, &other.currency)
            > (&self.stamp, self.amount, &self.currency)
        {
            (other, self)
        } else {
            (self, other)
        };
        let mut refs = hi.refs;
        refs.union(lo.refs);
        Self {
            amount: hi.amount,
            currency: hi.currency,
            refs,
            subscription: prefer(hi.subscription, lo.subscription),
            description: prefer(hi.description, lo.description),
            first_at: hi.first_at.min(lo.first_at),
            stamp: hi.stamp,
        }
    }
}

/// Refund states; only pending, succeeded and requires-action refunds count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Unknown,
    Pending,
    Succeeded,
    Failed,
    Canceled,
    RequiresAction,
}

impl RefundStatus {
    pub(super) fn counts(self) -> bool {
        !matches!(self, Self::Failed | Self::Canceled)
    }

    pub(super) fn from_proto(s: i32) -> Self {
        match v1::RefundStatus::try_from(s) {
            Ok(v1::RefundStatus::Pending) => Self::Pending,
            Ok(v1::RefundStatus::Succeeded) => Self::Succeeded,
            Ok(v1::RefundStatus::Failed) => Self::Failed,
            Ok(v1::RefundStatus::Canceled) => Self::Canceled,
            Ok(v1::RefundStatus::RequiresAction) => Self::RequiresAction,
            _ => Self::Unknown,
        }
    }

    pub(super) fn to_proto(self) -> v1::RefundStatus {
        match self {
            Self::Unknown => v1::RefundStatus::Unspecified,
            Self::Pending => v1::RefundStatus::Pending,
            Self::Succeeded => v1::RefundStatus::Succeeded,
            Self::Failed => v1::RefundStatus::Failed,
            Self::Canceled => v1::RefundStatus::Canceled,
            Self::RequiresAction => v1::RefundStatus::RequiresAction,
        }
    }
}

/// One refund, as of its newest event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RefundRec {
    pub amount: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub charge: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payment_intent: String,
    pub status: RefundStatus,
}

/// Cumulative refunded amount of one charge, as reported by `charge.refunded`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRefund {
    pub amount: i64,
    pub currency: String,
    /// Earliest report of a refund on this charge.
    pub first_at: i64,
}

impl ChargeRefund {
    pub(super) fn join(self, other: Self) -> Self {
        let first_at = self.first_at.min(other.first_at);
        let hi = if (other.amount, &other.currency) > (self.amount, &self.currency) {
            other
        } else {
            self
        };
        Self { first_at, ..hi }
    }
}
