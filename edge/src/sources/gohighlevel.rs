//! GoHighLevel marketplace-app webhooks: `X-GHL-Signature` (Ed25519) verification, the
//! legacy `X-WH-Signature` (RSA-SHA256, PKCS#1 v1.5) behind a switch, the app check
//! and the location allow-list, and normalization of the event types that change
//! contacts.
//! Section numbers (§) refer to the GoHighLevel receiver specification
//! (`spec/gohighlevel.md`). The helpers shared with workflow webhooks live here too.
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
//!
//! One GHL key signs the webhooks of every marketplace app (§1.5), so a valid signature
//! proves only that GHL sent the event to *some* app: whoever receives webhooks for an
//! app of their own could replay them here. The source's `app_id` (or `app_ids`) is
//! therefore required, and an event whose `appId` is missing or not configured is
//! ignored before anything else is read, as is one of a location `location_ids` (when
//! set) does not list.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hookline_proto::prost_types::Timestamp;
use hookline_proto::v1::{self, webhook_event::Payload};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs1v15;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::{Delivery, Envelope, VerifyError, body_digest_id, not_an_object, unreadable};
use crate::config::{ConfigError, Resolver};

pub const KIND: &str = "gohighlevel";

/// GHL's published public key for `X-GHL-Signature` (§1.2). Not a secret. SHA-256 of the
/// DER SPKI: 5a2c1b2749d3efcc233fb27d4ab43d56b8d20818c42cd226f6c9a3ff20d3097c.
pub const GHL_ED25519_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
";

/// GHL's published 4096-bit RSA public key for the legacy `X-WH-Signature` (§1.2).
/// Community copies with typos exist; a unit test pins the SHA-256 of the DER SPKI:
/// 2f62045d413b1b7747e26770ce7f57840cbf86288cd20ceb90d299a62501fd25.
pub const GHL_RSA_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
";

const ED25519_HEADER: &str = "x-ghl-signature";
const ED25519_LABEL: &str = "X-GHL-Signature";
const RSA_HEADER: &str = "x-wh-signature";
const RSA_LABEL: &str = "X-WH-Signature";
/// Weaker RSA keys are refused at start-up; GHL's is 4096 bits.
const MIN_RSA_BITS: usize = 2048;
/// External id namespace of GHL contact ids (shared with workflow webhooks).
pub(super) const GHL_CONTACT: &str = "ghl_contact";

/// `[sources.<name>]` with `kind = "gohighlevel"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[allow(dead_code)]
    kind: String,
    /// PEM text, `env:NAME` or `file:PATH`. Default: GHL's published key.
    ed25519_public_key: Option<String>,
    /// PEM text (SPKI or PKCS#1), `env:NAME` or `file:PATH`. Default: GHL's published key.
    rsa_public_key: Option<String>,
    /// Accept `X-WH-Signature` when `X-GHL-Signature` is absent. Default false.
    #[serde(default)]
    allow_legacy_rsa: bool,
    /// The app whose events this source takes (the app id, or the OAuth client id
    /// `<appId>-<suffix>`). This or `app_ids` is required.
    app_id: Option<String>,
    /// Several apps, when one endpoint serves them all; exclusive with `app_id`.
    app_ids: Option<Vec<String>>,
    /// Only events of these locations (sub-accounts).
    location_ids: Option<Vec<String>>,
}

/// What a GoHighLevel source accepts besides the keys.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub allow_legacy_rsa: bool,
    /// The apps whose events are applied; an event without `appId`, or with another,
    /// is ignored. Empty (as by default) accepts no event at all: one key signs every
    /// app's webhooks, so no app check must never mean every app.
    pub app_ids: BTreeSet<String>,
    /// `Some`: events whose location is not listed are ignored.
    pub location_ids: Option<BTreeSet<String>>,
}

/// A GoHighLevel marketplace source.
pub struct GoHighLevel {
    /// Boxed: the keys' precomputed forms are a few hundred bytes.
    keys: Box<Keys>,
    rsa_bits: usize,
    options: Options,
}

struct Keys {
    ed25519: VerifyingKey,
    rsa: pkcs1v15::VerifyingKey<Sha256>,
}

impl fmt::Debug for GoHighLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys are not secrets; the raw Ed25519 key identifies which one is in use.
        f.debug_struct("GoHighLevel")
            .field(
                "ed25519_public_key",
                &hex::encode(self.keys.ed25519.as_bytes()),
            )
            .field("rsa_public_key_bits", &self.rsa_bits)
            .field("allow_legacy_rsa", &self.options.allow_legacy_rsa)
            .field("app_ids", &self.options.app_ids)
            .field("location_ids", &self.options.location_ids)
            .finish()
    }
}

/// Reads an Ed25519 public key from SPKI PEM.
pub fn parse_ed25519_pem(pem: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem.trim()).ok()
}

/// Reads an RSA public key from SPKI (`BEGIN PUBLIC KEY`) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`) PEM.
pub fn parse_rsa_pem(pem: &str) -> Option<rsa::PublicKey> {
    use rsa::pkcs8::DecodePublicKey as _;
    let pem = pem.trim();
    rsa::PublicKey::from_public_key_pem(pem)
        .or_else(|_| rsa::PublicKey::from_pkcs1_pem(pem).map_err(|_| ()))
        .ok()
}

impl GoHighLevel {
    pub fn from_config(name: &str, raw: RawConfig, r: &Resolver<'_>) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("sources.{name}.{k}");
        let ed25519_pem = match &raw.ed25519_public_key {
            Some(v) => r.text(&key("ed25519_public_key"), v)?,
            None => GHL_ED25519_PUBLIC_KEY_PEM.to_owned(),
        };
        let ed25519 = parse_ed25519_pem(&ed25519_pem).ok_or_else(|| {
            ConfigError::new(
                key("ed25519_public_key"),
                "not an Ed25519 public key in PEM",
            )
        })?;
        let rsa_pem = match &raw.rsa_public_key {
            Some(v) => r.text(&key("rsa_public_key"), v)?,
            None => GHL_RSA_PUBLIC_KEY_PEM.to_owned(),
        };
        let rsa = parse_rsa_pem(&rsa_pem).ok_or_else(|| {
            ConfigError::new(key("rsa_public_key"), "not an RSA public key in PEM")
        })?;
        if rsa.size() * 8 < MIN_RSA_BITS {
            return Err(ConfigError::new(
                key("rsa_public_key"),
                format!(
                    "RSA key has {} bits, at least {MIN_RSA_BITS} are required",
                    rsa.size() * 8
                ),
            ));
        }
        let app_ids = app_ids(name, raw.app_id, raw.app_ids)?;
        let location_ids = match raw.location_ids {
            None => None,
            Some(ids) if ids.is_empty() => {
                return Err(ConfigError::new(
                    key("location_ids"),
                    "is empty (leave it out to accept every location)",
                ));
            }
            Some(ids) => {
                let mut set = BTreeSet::new();
                for (i, id) in ids.iter().enumerate() {
                    let id = id.trim();
                    if id.is_empty() {
                        return Err(ConfigError::new(
                            format!("sources.{name}.location_ids[{i}]"),
                            "is empty",
                        ));
                    }
                    set.insert(id.to_owned());
                }
                Some(set)
            }
        };
        Ok(Self::new(
            ed25519,
            rsa,
            Options {
                allow_legacy_rsa: raw.allow_legacy_rsa,
                app_ids,
                location_ids,
            },
        ))
    }

    /// A source verifying with these keys.
    pub fn new(ed25519: VerifyingKey, rsa: rsa::PublicKey, options: Options) -> Self {
        let rsa_bits = rsa.size() * 8;
        Self {
            keys: Box::new(Keys {
                ed25519,
                rsa: pkcs1v15::VerifyingKey::new(rsa),
            }),
            rsa_bits,
            options,
        }
    }

    /// Verifies a delivery over its raw body (§0, §1). `X-GHL-Signature`, when it carries
    /// a signature, alone decides; `X-WH-Signature` is consulted only when it does not and
    /// the legacy switch is on. An empty value or `N/A` means "no signature". A value that
    /// is not base64 of the right length is a failure, never a pass.
    pub fn verify(&self, d: Delivery<'_>) -> Result<(), VerifyError> {
        // Both headers are read first so that a duplicated one is refused whichever decides.
        let ed25519 = signature_header(d.headers, ED25519_HEADER, ED25519_LABEL)?;
        let rsa = signature_header(d.headers, RSA_HEADER, RSA_LABEL)?;
        if let Some(value) = ed25519 {
            let raw = decode(value, "X-GHL-Signature is not base64")?;
            let signature = ed25519_dalek::Signature::from_slice(&raw)
                .map_err(|_| VerifyError::Malformed("X-GHL-Signature is not 64 bytes"))?;
            return self
                .keys
                .ed25519
                .verify_strict(d.body, &signature)
                .map_err(|_| VerifyError::Mismatch);
        }
        match rsa {
            Some(value) if self.options.allow_legacy_rsa => {
                let raw = decode(value, "X-WH-Signature is not base64")?;
                if raw.len() * 8 != self.rsa_bits {
                    return Err(VerifyError::Malformed(
                        "X-WH-Signature does not have the key's length",
                    ));
                }
                let signature = pkcs1v15::Signature::try_from(raw.as_slice())
                    .map_err(|_| VerifyError::Malformed("X-WH-Signature is not a signature"))?;
                self.keys
                    .rsa
                    .verify(d.body, &signature)
                    .map_err(|_| VerifyError::Mismatch)
            }
            // Without the switch, a legacy signature alone is as good as none.
            _ => Err(VerifyError::MissingHeader(ED25519_LABEL)),
        }
    }

    /// Normalizes an authentic delivery. Never fails: a body it cannot use becomes an
    /// ignored event that keeps the body for inspection and replay.
    pub fn normalize(&self, source: &str, body: &[u8], received_at_ms: i64) -> v1::WebhookEvent {
        let parsed = serde_json::from_slice::<Value>(body);
        let object = match &parsed {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        };
        let Some(m) = object else {
            return unreadable(source, KIND, body, received_at_ms, not_an_object(&parsed));
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
            kind: KIND,
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
    /// Checked before anything else is read, INSTALL and UNINSTALL included. The reason
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

/// The app ids of `app_id` or `app_ids`, exactly one of which is required (§1.5).
fn app_ids(
    name: &str,
    app_id: Option<String>,
    app_ids: Option<Vec<String>>,
) -> Result<BTreeSet<String>, ConfigError> {
    let key = |k: &str| format!("sources.{name}.{k}");
    let listed: Vec<(String, String)> = match (app_id, app_ids) {
        (None, None) => {
            return Err(ConfigError::new(
                key("app_id"),
                "is required: GoHighLevel signs every app's webhooks with one key, so \
                 without it another app's events would be applied (set app_id, or app_ids \
                 for several)",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key("app_ids"),
                "cannot be set together with app_id (app_id for one app, app_ids for several)",
            ));
        }
        (Some(id), None) => vec![(key("app_id"), id)],
        (None, Some(ids)) if ids.is_empty() => {
            return Err(ConfigError::new(
                key("app_ids"),
                "is empty (list the id of every app whose events this source takes)",
            ));
        }
        (None, Some(ids)) => ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (key(&format!("app_ids[{i}]")), id))
            .collect(),
    };
    let mut set = BTreeSet::new();
    for (key, id) in listed {
        let id = id.trim();
        if id.is_empty() {
            return Err(ConfigError::new(key, "is empty"));
        }
        // GHL's SDK compares `appId` with the client id up to its first '-'.
        let app = id.split('-').next().unwrap_or(id);
        if app.is_empty() {
            return Err(ConfigError::new(
                key,
                "has nothing before its first '-' (the app id, or the client id <appId>-<suffix>)",
            ));
        }
        set.insert(app.to_owned());
    }
    Ok(set)
}

/// The one value of a signature header, or `None` when it says "no signature".
fn signature_header<'a>(
    headers: &'a http::HeaderMap,
    name: &'static str,
    label: &'static str,
) -> Result<Option<&'a [u8]>, VerifyError> {
    let value = super::one_header(headers, name, label)?;
    // GHL's own sample code reads `N/A` as "no signature" (§1.4).
    Ok(value.filter(|v| !v.eq_ignore_ascii_case(b"N/A")))
}

/// The signature bytes of a base64 header value; `malformed` says which header it was.
fn decode(value: &[u8], malformed: &'static str) -> Result<Vec<u8>, VerifyError> {
    STANDARD
        .decode(value)
        .map_err(|_| VerifyError::Malformed(malformed))
}

/// The `X-GHL-Signature` value GHL would send for `body`, made with an Ed25519 private
/// key in PKCS#8 PEM. For tests, the sample webhook and the benchmark (with TEST-ONLY
/// keys: GHL's private key is GHL's).
pub fn sign(private_key_pem: &str, body: &[u8]) -> Option<String> {
    let key = SigningKey::from_pkcs8_pem(private_key_pem.trim()).ok()?;
    Some(STANDARD.encode(key.sign(body).to_bytes()))
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
        payment_refs: Vec::new(),
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
pub(super) fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(super) fn object_of<'a>(
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
pub(super) fn ghl_contact(id: &str) -> v1::ContactData {
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

/// The region for reading a phone number, when `country` is an ISO 3166 two-letter code.
pub(super) fn phone_region(country: Option<&str>) -> String {
    match country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            c.to_ascii_uppercase()
        }
        _ => String::new(),
    }
}

/// The full tag list from a JSON array of strings, or from a comma-separated string as
/// workflow webhooks send it. `null` says nothing; an empty list or `""` clears the tags.
pub(super) fn tag_list(v: &Value) -> Option<v1::TagList> {
    let mut tags: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && !tags.iter().any(|have| have == t) {
            tags.push(t.to_owned());
        }
    };
    match v {
        Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut push),
        Value::String(csv) => csv.split(',').for_each(&mut push),
        _ => return None,
    }
    Some(v1::TagList { tags })
}

/// Attendance from GHL's appointment status (§3.2, §6). Unknown values (including the
/// API-only `active` and `completed`) state nothing.
pub(super) fn appointment_status(status: Option<&str>) -> v1::AppointmentStatus {
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

/// An RFC 3339 instant with any offset, `Z` included. A time without an offset is not an
/// instant and gives `None`.
pub(super) fn parse_instant(s: &str) -> Option<jiff::Timestamp> {
    s.trim().parse().ok()
}

pub(super) fn proto_timestamp(t: jiff::Timestamp) -> Timestamp {
    let ns = t.as_nanosecond();
    Timestamp {
        seconds: i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or_default(),
        nanos: i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or_default(),
    }
}

/// Digits after the decimal point of an ISO 4217 currency (lower-case code).
fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "bif" | "clp" | "djf" | "gnf" | "isk" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf"
        | "ugx" | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "iqd" | "jod" | "kwd" | "lyd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// An amount GHL states in major units (`1500`, `1499.99`, or the same as a string) in
/// minor units: × 10^`exponent`. Integers are exact; decimals are rounded to the nearest
/// minor unit (half away from zero), which is exact for any amount written with at most
/// `exponent` decimals below 2^53 minor units. `None` when it is not a finite number or
/// does not fit in an i64.
pub fn to_minor_units(v: &Value, exponent: u32) -> Option<i64> {
    let factor = 10_i64.pow(exponent);
    let number = match v {
        Value::Number(n) => n.clone(),
        Value::String(s) => s.trim().parse::<serde_json::Number>().ok()?,
        _ => return None,
    };
    if let Some(i) = number.as_i64() {
        return i.checked_mul(factor);
    }
    let scaled = (number.as_f64()? * factor as f64).round();
    // i64::MAX is not representable as f64; 2^63 is the first value out of range.
    (scaled.is_finite() && scaled >= -(2f64.powi(63)) && scaled < 2f64.powi(63))
        .then_some(scaled as i64)
}

#[cfg(test)]
pub(crate) mod tests;
