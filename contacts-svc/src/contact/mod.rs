//! Contact domain, with no I/O: validated values (ids, email, phone, region) and the
//! identifiers that find a contact, here; the stored record and its merge rules in
//! `record.rs` (see [`Record`]); which contacts an event concerns in `plan.rs` (see
//! [`plan()`]); validated events in `event.rs`; the public view in `view.rs`; what an
//! erased contact keeps in `erasure.rs`.

mod erasure;
mod event;
mod payments;
mod plan;
mod record;
pub mod text;
mod view;

pub use erasure::*;
pub use event::*;
pub use payments::*;
pub use plan::*;
pub use record::*;

use text::{Reader, check_id};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Longest email address (RFC 5321 path limit).
pub(crate) const MAX_EMAIL_LEN: usize = 254;
/// Most tags on one contact.
pub(crate) const MAX_TAGS: usize = 256;

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
    /// An id a caller chose (an idempotency key): refused unless usable as a key.
    pub fn parse(field: &str, s: &str) -> Result<Self, Error> {
        check_id(field, s)?;
        Ok(Self(s.to_owned()))
    }

    /// The id of a webhook event of `source`. A provider's id that cannot serve as a key
    /// (spaces, control characters, over 256 bytes) becomes `<source>:sha256:<hex>` of
    /// it, so the event is still deduplicated; the original is returned beside it, for
    /// the record (cut to the free-text limit).
    pub fn of_event(source: &str, s: &str) -> Result<(Self, Option<String>), Error> {
        if s.is_empty() {
            return Err(Error::invalid("event.id", "is required"));
        }
        if text::usable_id(s) {
            return Ok((Self(s.to_owned()), None));
        }
        let digest = Self(format!("{source}:{}", text::digest_id(s)));
        let mut notes = Vec::new();
        let original = Reader::lenient(&mut notes).text("event.id", s)?;
        Ok((digest, Some(original)))
    }

    /// This id followed by `@<suffix>`: one occurrence of an event whose id repeats.
    pub fn occurrence(&self, suffix: impl fmt::Display) -> Self {
        Self(format!("{}@{suffix}", self.0))
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

/// Checks an external id system name: 1 to 64 of a-z, 0-9, '_' and '-'.
pub(crate) fn check_system(field: &str, s: &str) -> Result<(), Error> {
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
    /// on empty or unreadable text (see [`Reader::text`]); numbers that are not phone
    /// numbers are kept raw with `valid: false`.
    pub fn parse(field: &str, s: &str, region: Region, r: &mut Reader<'_>) -> Result<Self, Error> {
        let raw = r.text(field, s)?;
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
        let phone = Self::parse(field, s, region, &mut Reader::strict())?;
        if !phone.valid {
            return Err(Error::invalid(field, "is not a phone number"));
        }
        Ok(phone)
    }

    /// E.164 form of `raw` (already trimmed), or `None` when it cannot be read with
    /// confidence.
    ///
    /// The `phonenumber` crate (0.3) strips national prefixes from numbers written
    /// with an explicit country code (`+20 12 2220 3198` becomes `+20 2222 03198`), so
    /// such numbers keep their literal digits and the crate only confirms the country
    /// code. Numbers without one must be valid for the region, except that the
    /// fictional NANP ranges (555-01xx) count as readable. A leading `00`, the
    /// international prefix of most of the world, is read as `+`.
    fn e164(raw: &str, region: Region) -> Option<String> {
        if raw.starts_with('+') {
            return Self::international(raw, region);
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
            let rest = raw.strip_prefix("00")?;
            Self::international(&format!("+{rest}"), region)
        })
    }

    /// `+<digits>` of a number written with its country code, extension cut off.
    fn international(s: &str, region: Region) -> Option<String> {
        // Most senders write numbers already in E.164: those need only their country
        // code looked up, not a parse (about 4 µs, 6 % of contacts-svc's CPU per event
        // in `make bench`).
        match s.strip_prefix('+') {
            Some(digits)
                if (8..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                starts_with_country_code(digits).then(|| s.to_owned())
            }
            _ => Self::international_parsed(s, region),
        }
    }

    /// [`Phone::international`] for any text: the crate finds the country code.
    fn international_parsed(s: &str, region: Region) -> Option<String> {
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

/// Whether `digits` (of a number after its `+`) start with a country calling code, as
/// the `phonenumber` crate reads one: the first of their first one, two or three digits
/// that is a known code, and never one starting with 0. For `+` and 8 to 15 digits the
/// crate's parse succeeds exactly then, with that code: the test
/// `e164_numbers_read_as_the_crate_reads_them` compares the two over every start.
fn starts_with_country_code(digits: &str) -> bool {
    !digits.starts_with('0')
        && (1..=3).any(|len| {
            digits
                .get(..len)
                .and_then(|code| code.parse::<u16>().ok())
                .is_some_and(|code| phonenumber::metadata::DATABASE.by_code(&code).is_some())
        })
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

/// Identifiers in order of strength: external ids, payment references, email, phone
/// (only when it could be read: raw text is not an identifier).
pub(crate) fn identifiers(
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
