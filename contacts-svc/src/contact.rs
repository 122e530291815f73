//! Contact domain: validated identifiers, the stored contact record and its merge rules.
//! No I/O happens here.
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
//! - **External ids**: one per system; a contact never holds two ids of one system
//!   (resolution refuses such merges, see [`compatible`]). Should two ever meet, the
//!   smaller id is kept so the result stays deterministic.
//! - **Purchases** are keyed by payment (payment intent, else invoice, else session or
//!   charge id). Several events of one payment fill in one purchase: each field comes
//!   from the newest event that has it.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hookline_proto::v1;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Longest identifier, id or name accepted from a caller or provider.
const MAX_ID_LEN: usize = 256;
/// Longest email address (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Longest free-text field (names, descriptions, titles).
const MAX_TEXT_LEN: usize = 1024;
/// Most tags on one contact.
const MAX_TAGS: usize = 256;

/// Opaque contact id: `ct_` followed by a time-ordered UUID v7 in lower-case hex, so
/// the smaller of two ids belongs to the older contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContactId(String);

impl ContactId {
    const PREFIX: &'static str = "ct_";

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        let hex = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| Error::invalid("contact_id", "must start with \"ct_\""))?;
        if hex.len() != 32
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(
                "contact_id",
                "must be \"ct_\" and 32 lower-case hex digits",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContactId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<ContactId> for String {
    fn from(id: ContactId) -> String {
        id.0
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Source-scoped event id, `<source>:<provider id>`, or `api:<idempotency key>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn parse(field: &str, s: &str) -> Result<Self, Error> {
        check_id(field, s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an opaque id: non-empty, bounded, printable ASCII without spaces.
fn check_id(field: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::invalid(field, "is longer than 256 bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Checks an external id system name: 1 to 64 of a-z, 0-9, '_' and '-'.
fn check_system(field: &str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1 to 64 of a-z, 0-9, '_' and '-'",
        ))
    }
}

fn check_text(field: &str, s: &str) -> Result<String, Error> {
    let s = s.trim();
    if s.len() > MAX_TEXT_LEN {
        return Err(Error::invalid(field, "is longer than 1024 bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(s.to_owned())
}

/// An email address: `normalized` (trimmed, lower-case) is what matching uses,
/// `original` is what the provider or caller wrote (trimmed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Email {
    #[serde(rename = "n")]
    pub normalized: String,
    #[serde(rename = "o")]
    pub original: String,
}

impl Email {
    pub fn parse(field: &str, s: &str) -> Result<Self, Error> {
        let original = s.trim();
        if original.is_empty() {
            return Err(Error::invalid(field, "is empty"));
        }
        if original.len() > MAX_EMAIL_LEN {
            return Err(Error::invalid(field, "is longer than 254 bytes"));
        }
        let Some((local, domain)) = original.rsplit_once('@') else {
            return Err(Error::invalid(field, "is not an email address (no @)"));
        };
        if local.is_empty()
            || domain.is_empty()
            || domain.starts_with('.')
            || domain.ends_with('.')
            || original
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid(field, "is not an email address"));
        }
        Ok(Self {
            normalized: original.to_lowercase(),
            original: original.to_owned(),
        })
    }
}

/// A phone number: E.164 when it could be read, else the text as received, flagged,
/// so no number is ever dropped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Phone {
    #[serde(rename = "v")]
    pub value: String,
    #[serde(rename = "ok")]
    pub valid: bool,
}

impl Phone {
    /// Reads `s` as a phone number, in `region` when it has no country code. Fails only
    /// on empty or oversized input; unreadable numbers are kept raw with `valid: false`.
    pub fn parse(field: &str, s: &str, region: Region) -> Result<Self, Error> {
        let raw = check_text(field, s)?;
        if raw.is_empty() {
            return Err(Error::invalid(field, "is empty"));
        }
        Ok(match Self::e164(&raw, region) {
            Some(value) => Self { value, valid: true },
            None => Self {
                value: raw,
                valid: false,
            },
        })
    }

    /// Strict form for lookups: the number must be readable.
    pub fn parse_strict(field: &str, s: &str, region: Region) -> Result<Self, Error> {
        let phone = Self::parse(field, s, region)?;
        if !phone.valid {
            return Err(Error::invalid(field, "is not a phone number"));
        }
        Ok(phone)
    }

    /// E.164 form of `raw`, or `None` when it cannot be read with confidence.
    ///
    /// The `phonenumber` crate (0.3) strips national prefixes from numbers written
    /// with an explicit country code (`+20 12 2220 3198` becomes `+20 2222 03198`), so
    /// such numbers keep their literal digits and the crate only confirms the country
    /// code. Numbers without one must be valid for the region, except that the
    /// fictional NANP ranges (555-01xx) count as readable. A leading `00`, the
    /// international prefix of most of the world, is read as `+`.
    fn e164(raw: &str, region: Region) -> Option<String> {
        let trimmed = raw.trim_start();
        if trimmed.starts_with('+') {
            return Self::international(trimmed, region);
        }
        if !phonenumber::is_viable(raw) {
            return None;
        }
        let number = phonenumber::parse(Some(region.0), raw).ok();
        let national = number.as_ref().and_then(|n| {
            let formatted = n.format().mode(phonenumber::Mode::E164).to_string();
            let nanp = n.country().code() == 1 && formatted.len() == 12;
            (n.is_valid() || nanp).then_some(formatted)
        });
        national.or_else(|| {
            let rest = trimmed.strip_prefix("00")?;
            Self::international(&format!("+{rest}"), region)
        })
    }

    /// `+<digits>` of a number written with its country code, extension cut off.
    fn international(s: &str, region: Region) -> Option<String> {
        let main = s
            .split(|c: char| c.is_alphabetic() || matches!(c, '#' | ';' | ','))
            .next()
            .unwrap_or("");
        let digits: String = main.chars().filter(char::is_ascii_digit).collect();
        if !(8..=15).contains(&digits.len()) {
            return None;
        }
        let number = phonenumber::parse(Some(region.0), s).ok()?;
        digits
            .starts_with(&number.country().code().to_string())
            .then(|| format!("+{digits}"))
    }
}

/// A region (ISO 3166 alpha-2) for reading national phone numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(phonenumber::country::Id);

impl Region {
    pub fn parse(field: &str, s: &str) -> Result<Self, Error> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .map(Self)
            .map_err(|_| Error::invalid(field, "is not an ISO 3166 two-letter region"))
    }

    /// `s`, or `default` when `s` is empty.
    pub fn parse_or(field: &str, s: &str, default: Region) -> Result<Self, Error> {
        if s.trim().is_empty() {
            Ok(default)
        } else {
            Self::parse(field, s)
        }
    }
}

/// One way to find a contact. Resolution tries them in this order of priority.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identifier {
    External { system: String, id: String },
    PaymentRef(String),
    Email(String),
    Phone(String),
}

impl Identifier {
    pub fn external(system: &str, id: &str) -> Result<Self, Error> {
        check_system("external_id.system", system)?;
        check_id("external_id.id", id)?;
        Ok(Self::External {
            system: system.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The identifier for logs: emails and phones masked (`j***@example.com`,
    /// `+1******0199`), never written out in full.
    pub fn masked(&self) -> String {
        match self {
            Self::External { system, id } => format!("{system}:{id}"),
            Self::PaymentRef(r) => format!("payment:{r}"),
            Self::Email(e) => format!("email:{}", mask_email(e)),
            Self::Phone(p) => format!("phone:{}", mask_phone(p)),
        }
    }

    /// Short label for logs and conflict notes; never the full email or phone.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::External { .. } => "external id",
            Self::PaymentRef(_) => "payment",
            Self::Email(_) => "email",
            Self::Phone(_) => "phone",
        }
    }
}

/// An email for logs: the first character of the local part, then `***@domain`.
pub fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// A phone number for logs: the country code's first digit and the last four digits.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head = if chars[0] == '+' { 2 } else { 0 };
    let tail = 4;
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < head || i >= chars.len() - tail {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

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
    fn kinds(&self) -> [&BTreeSet<String>; 5] {
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
    fn shares_any(&self, other: &Self) -> bool {
        let theirs = other.kinds();
        self.kinds()
            .into_iter()
            .flatten()
            .any(|r| theirs.iter().any(|set| set.contains(r)))
    }

    fn union(&mut self, other: Self) {
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
    fn join(self, other: Self) -> Self {
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
    fn counts(self) -> bool {
        !matches!(self, Self::Failed | Self::Canceled)
    }

    fn from_proto(s: i32) -> Self {
        match v1::RefundStatus::try_from(s) {
            Ok(v1::RefundStatus::Pending) => Self::Pending,
            Ok(v1::RefundStatus::Succeeded) => Self::Succeeded,
            Ok(v1::RefundStatus::Failed) => Self::Failed,
            Ok(v1::RefundStatus::Canceled) => Self::Canceled,
            Ok(v1::RefundStatus::RequiresAction) => Self::RequiresAction,
            _ => Self::Unknown,
        }
    }

    fn to_proto(self) -> v1::RefundStatus {
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
    fn join(self, other: Self) -> Self {
        let first_at = self.first_at.min(other.first_at);
        let hi = if (other.amount, &other.currency) > (self.amount, &self.currency) {
            other
        } else {
            self
        };
        Self { first_at, ..hi }
    }
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
    fn from_proto(s: i32) -> Self {
        match v1::AppointmentStatus::try_from(s) {
            Ok(v1::AppointmentStatus::Booked) => Self::Booked,
            Ok(v1::AppointmentStatus::Attended) => Self::Attended,
            Ok(v1::AppointmentStatus::NoShow) => Self::NoShow,
            Ok(v1::AppointmentStatus::Cancelled) => Self::Cancelled,
            _ => Self::Unknown,
        }
    }

    fn to_proto(self) -> v1::AppointmentStatus {
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
}

impl Record {
    /// Joins `other` into `self`. Commutative, associative and idempotent.
    pub fn join(&mut self, other: Record) {
        join_lww(&mut self.email, other.email);
        join_lww(&mut self.phone, other.phone);
        join_lww(&mut self.first_name, other.first_name);
        join_lww(&mut self.last_name, other.last_name);
        join_lww(&mut self.name, other.name);
        join_lww(&mut self.tags, other.tags);
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

    /// Whether any appointment, purchase or other fact about the person is recorded.
    pub fn is_empty(&self) -> bool {
        self.first_seen.is_none()
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
                *totals.entry(r.v.currency.clone()).or_default() += r.v.amount;
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

    fn purchased_at(&self) -> Option<i64> {
        self.purchases.values().map(|p| p.first_at).min()
    }

    fn refunded_at(&self) -> Option<i64> {
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
        stamp_of("tags", self.tags.as_ref().map(|l| &l.stamp));
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
            tags: self.tags.as_ref().map(|t| t.v.clone()).unwrap_or_default(),
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
        }
    }
}

fn first(set: &BTreeSet<String>) -> String {
    set.first().cloned().unwrap_or_default()
}

/// Identifiers in order of strength: external ids, payment references, email, phone
/// (only when it could be read: raw text is not an identifier).
fn identifiers(
    external_ids: &BTreeMap<String, String>,
    payment_refs: &BTreeSet<String>,
    email: Option<&Email>,
    phone: Option<&Phone>,
) -> Vec<Identifier> {
    let external = external_ids
        .iter()
        .map(|(system, id)| Identifier::External {
            system: system.clone(),
            id: id.clone(),
        });
    let payments = payment_refs.iter().cloned().map(Identifier::PaymentRef);
    let email = email.map(|e| Identifier::Email(e.normalized.clone()));
    let phone = phone
        .filter(|p| p.valid)
        .map(|p| Identifier::Phone(p.value.clone()));
    external.chain(payments).chain(email).chain(phone).collect()
}

/// Whether two sets of external ids may belong to one person: no system may carry two
/// different ids.
pub fn compatible(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter()
        .all(|(system, id)| b.get(system).is_none_or(|other| other == id))
}

/// How an event's identifiers map onto stored contacts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Contacts the event concerns, smallest (oldest) id first: the first survives and
    /// absorbs the others. Empty: a new contact.
    pub targets: Vec<ContactId>,
    /// Identifiers no contact holds yet: claim them for the survivor.
    pub claims: Vec<Identifier>,
    /// Identifiers held by a contact that may not be merged with the targets, because a
    /// provider would have two ids on one contact. They are left where they are.
    pub conflicts: Vec<(Identifier, ContactId)>,
}

/// Decides which contacts an event concerns. `hits` pairs each identifier of the event,
/// strongest first, with the live contact its index names; `contacts` holds those
/// contacts' records; `explicit` is a contact the caller named.
///
/// Identifiers join the targets in order of strength while the contact they name stays
/// compatible with what was gathered so far (starting with the event's own): no
/// provider may end up with two ids on one contact, and a contact reached through a
/// phone number alone must not hold another email (a family or office line is shared
/// by different people). A weaker identifier therefore never pulls in a contact that a
/// stronger one rules out.
pub fn plan(
    own: &ContactFields,
    explicit: Option<&ContactId>,
    hits: &[(Identifier, Option<ContactId>)],
    contacts: &BTreeMap<ContactId, Record>,
) -> Plan {
    let mut plan = Plan::default();
    let mut external = own.external_ids.clone();
    let mut email = own.email.as_ref().map(|e| e.normalized.clone());
    let mut take = |id: &ContactId, through_phone: bool| -> bool {
        let Some(r) = contacts.get(id) else {
            return true;
        };
        let their_email = r.email.as_ref().map(|e| &e.v.normalized);
        if !compatible(&external, &r.external_ids)
            || (through_phone
                && email.is_some()
                && their_email.is_some_and(|e| Some(e) != email.as_ref()))
        {
            return false;
        }
        for (k, v) in &r.external_ids {
            external.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if email.is_none() {
            email = their_email.cloned();
        }
        true
    };
    if let Some(id) = explicit {
        take(id, false);
        plan.targets.push(id.clone());
    }
    for (ident, hit) in hits {
        match hit {
            None => plan.claims.push(ident.clone()),
            Some(id) if plan.targets.contains(id) => {}
            Some(id) => {
                if take(id, matches!(ident, Identifier::Phone(_))) {
                    plan.targets.push(id.clone());
                } else {
                    plan.conflicts.push((ident.clone(), id.clone()));
                }
            }
        }
    }
    // The oldest contact survives, a rule that does not depend on arrival order.
    plan.targets.sort();
    plan
}

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
    pub kind: String,
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
        let action = match effect(&id, occurred_at, ev.payload.as_ref())? {
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
        Ok(Self {
            id,
            source: ev.source.clone(),
            kind: check_text("event.kind", &ev.kind)?,
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
    payload: Option<&v1::webhook_event::Payload>,
) -> Result<Result<Effect, Ignored>, Error> {
    use v1::webhook_event::Payload;
    let text = |f: &str, s: &str| check_text(f, s);
    Ok(Ok(match payload {
        None => return Err(Error::invalid("event.payload", "is required")),
        Some(Payload::Ignored(i)) => {
            return Ok(Err(Ignored {
                reason: check_text("event.ignored.reason", &i.reason)?,
                body: i.body.clone(),
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
                currency: text("event.purchase_completed.currency", &p.currency)?
                    .to_ascii_lowercase(),
                refs,
                subscription: p.subscription_id.clone(),
                description: text("event.purchase_completed.description", &p.description)?,
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
                    currency: text("event.refund_updated.currency", &r.currency)?
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
                    title: text("event.appointment_updated.title", &a.title)?,
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
                    status: text("event.opportunity_updated.status", &o.status)?,
                    value: o.monetary_value,
                    name: text("event.opportunity_updated.name", &o.name)?,
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

/// A protobuf timestamp from milliseconds since the Unix epoch.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

use hookline_proto::prost_types;

#[cfg(test)]
mod tests;
