//! Stripe: `Stripe-Signature` verification and normalization of the event types that
//! change contacts. The rules follow Stripe's SDKs; where they disagree, the safe choice
//! documented in the README's "Stripe verification" section.

use std::fmt;

use hookline_proto::v1::{self, webhook_event::Payload};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::signature::{self, Algorithm, Keys};
use super::{Delivery, Envelope, Kind, Setup, Source, VerifyError, non_blank, unreadable};
use crate::secret::SecretRefs;

const HEADER: &str = "stripe-signature";

/// `[sources.<name>]` with `kind = "stripe"`.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// Endpoint secrets (`whsec_…`), inline, `env:NAME` or `file:PATH`. Several while a
    /// secret is being rolled.
    secrets: SecretRefs,
    tolerance_secs: Option<u64>,
}

/// A Stripe source: one keyed HMAC per endpoint secret.
pub struct Stripe {
    keys: Keys,
    tolerance_secs: i64,
}

impl fmt::Debug for Stripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stripe")
            .field("secrets", &self.keys)
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl Kind for Stripe {
    const KIND: &'static str = "stripe";
    type Config = RawConfig;

    fn from_config(raw: RawConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let secrets = setup.secrets("secrets", &raw.secrets, |s| {
            if s.expose().starts_with("whsec_") {
                Ok(s.clone())
            } else {
                Err("is not a Stripe endpoint secret (they start with \"whsec_\")".to_owned())
            }
        });
        let tolerance = setup.check("tolerance_secs", signature::tolerance(raw.tolerance_secs));
        let (secrets, tolerance) = (secrets?, tolerance?);
        setup
            .ok()
            .then(|| Self::new(secrets.iter().map(|s| s.expose().as_bytes()), tolerance))
    }
}

impl Stripe {
    /// A verifier for these secrets. The key is the whole `whsec_…` string, not decoded.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>, tolerance_secs: i64) -> Self {
        Self {
            keys: Keys::new(Algorithm::Sha256, secrets),
            tolerance_secs,
        }
    }
}

impl Source for Stripe {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    /// Verifies `Stripe-Signature` over the raw body. `now` is Unix seconds at receipt.
    fn verify(&self, d: Delivery<'_>, now: i64) -> Result<(), VerifyError> {
        let header = single_header(d.headers)?;
        let parsed = parse_header(header)?;
        // The SDKs sign the decimal form of the parsed integer, not the raw text.
        let t = parsed.t.to_string();
        if !self
            .keys
            .any_matches(&[t.as_bytes(), b".", d.body], &parsed.v1)
        {
            return Err(VerifyError::Mismatch);
        }
        // Age only, as every Stripe SDK: a timestamp in the future is accepted.
        if now.saturating_sub(parsed.t) > self.tolerance_secs {
            return Err(VerifyError::StaleTimestamp);
        }
        Ok(())
    }

    fn normalize(&self, source: &str, d: Delivery<'_>, received_at_ms: i64) -> v1::WebhookEvent {
        normalize(source, d.body, received_at_ms)
    }
}

fn single_header(headers: &http::HeaderMap) -> Result<&str, VerifyError> {
    let value = super::one_header(headers, HEADER, "Stripe-Signature")?
        .ok_or(VerifyError::MissingHeader("Stripe-Signature"))?;
    std::str::from_utf8(value)
        .ok()
        .filter(|v| v.is_ascii())
        .ok_or(VerifyError::Malformed("not ASCII"))
}

/// A parsed `Stripe-Signature` (crate-visible for the fuzz target of its parser).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) t: i64,
    /// Decoded `v1` values that are 32 bytes of hex; others are skipped.
    pub(crate) v1: Vec<[u8; 32]>,
}

/// Parses `t=…,v1=…[,v1=…][,v0=…]`: elements split at the first `=`, elements without
/// one ignored, exactly one `t` of ASCII digits fitting i64, at least one `v1`.
pub(crate) fn parse_header(value: &str) -> Result<Header, VerifyError> {
    let mut t = None;
    let mut v1 = Vec::new();
    let mut any_v1 = false;
    for element in value.split(',') {
        let Some((key, val)) = element.split_once('=') else {
            continue;
        };
        match key {
            "t" => {
                if t.is_some() {
                    return Err(VerifyError::Malformed("more than one t"));
                }
                if val.is_empty() || !val.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VerifyError::Malformed("t is not a number"));
                }
                let parsed: i64 = val
                    .parse()
                    .map_err(|_| VerifyError::Malformed("t is out of range"))?;
                t = Some(parsed);
            }
            "v1" => {
                any_v1 = true;
                let mut mac = [0u8; 32];
                if hex::decode_to_slice(val, &mut mac).is_ok() {
                    v1.push(mac);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed("no t"))?;
    if !any_v1 {
        return Err(VerifyError::Malformed("no v1 signature"));
    }
    Ok(Header { t, v1 })
}

/// A Stripe id that may be expanded into an object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

fn id_of(e: &Option<Expandable>) -> Option<String> {
    non_blank(e.as_ref().map(Expandable::id))
}

#[derive(Debug, Deserialize)]
struct StripeEvent<'a> {
    id: Option<String>,
    object: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    created: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<EventData<'a>>,
}

#[derive(Debug, Deserialize)]
struct EventData<'a> {
    #[serde(borrow)]
    object: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Address {
    country: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Person {
    email: Option<String>,
    name: Option<String>,
    phone: Option<String>,
    address: Option<Address>,
}

#[derive(Debug, Deserialize)]
struct CheckoutSession {
    id: String,
    customer: Option<Expandable>,
    customer_email: Option<String>,
    #[serde(default)]
    customer_details: Option<Person>,
    amount_total: Option<i64>,
    currency: Option<String>,
    payment_intent: Option<Expandable>,
    invoice: Option<Expandable>,
    subscription: Option<Expandable>,
    payment_status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    customer: Option<Expandable>,
    receipt_email: Option<String>,
    #[serde(default)]
    shipping: Option<Person>,
    amount: Option<i64>,
    amount_received: Option<i64>,
    currency: Option<String>,
    latest_charge: Option<Expandable>,
    invoice: Option<Expandable>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Charge {
    id: String,
    customer: Option<Expandable>,
    receipt_email: Option<String>,
    #[serde(default)]
    billing_details: Option<Person>,
    amount: Option<i64>,
    amount_captured: Option<i64>,
    amount_refunded: Option<i64>,
    captured: Option<bool>,
    currency: Option<String>,
    payment_intent: Option<Expandable>,
    invoice: Option<Expandable>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    amount: Option<i64>,
    currency: Option<String>,
    charge: Option<Expandable>,
    payment_intent: Option<Expandable>,
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Customer {
    id: String,
    email: Option<String>,
    name: Option<String>,
    phone: Option<String>,
    address: Option<Address>,
}

#[derive(Debug, Deserialize)]
struct Invoice {
    id: String,
    customer: Option<Expandable>,
    customer_email: Option<String>,
    customer_name: Option<String>,
    customer_phone: Option<String>,
    customer_address: Option<Address>,
    amount_paid: Option<i64>,
    currency: Option<String>,
    payment_intent: Option<Expandable>,
    charge: Option<Expandable>,
    subscription: Option<Expandable>,
    parent: Option<InvoiceParent>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InvoiceParent {
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Deserialize)]
struct SubscriptionDetails {
    subscription: Option<Expandable>,
}

/// Contact fields in the shape contacts-svc takes.
fn contact(
    person: Option<&Person>,
    fallback_email: Option<&str>,
    customer: Option<String>,
    payment_refs: impl IntoIterator<Item = Option<String>>,
) -> v1::ContactData {
    let person_email = person.and_then(|p| p.email.as_deref());
    v1::ContactData {
        email: non_blank(person_email).or_else(|| non_blank(fallback_email)),
        phone: non_blank(person.and_then(|p| p.phone.as_deref())),
        name: non_blank(person.and_then(|p| p.name.as_deref())),
        phone_region: person
            .and_then(|p| p.address.as_ref())
            .and_then(|a| non_blank(a.country.as_deref()))
            .unwrap_or_default(),
        external_ids: customer
            .map(|id| v1::ExternalId {
                system: "stripe_customer".to_owned(),
                id,
            })
            .into_iter()
            .collect(),
        payment_refs: payment_refs.into_iter().flatten().collect(),
        ..v1::ContactData::default()
    }
}

fn lower(s: Option<String>) -> String {
    s.map(|s| s.to_ascii_lowercase()).unwrap_or_default()
}

/// Normalizes an authentic Stripe delivery. Never fails: a body it cannot use becomes an
/// ignored event that keeps the body for inspection and replay.
fn normalize(source: &str, body: &[u8], received_at_ms: i64) -> v1::WebhookEvent {
    let parsed: Result<StripeEvent<'_>, _> = serde_json::from_slice(body);
    let ev = match parsed {
        Ok(ev) if ev.id.as_deref().is_some_and(|id| !id.trim().is_empty()) => ev,
        Ok(_) => {
            return unreadable(
                source,
                Stripe::KIND,
                body,
                received_at_ms,
                "body has no event id",
            );
        }
        Err(e) => {
            let reason = format!("body is not a Stripe event: {e}");
            return unreadable(source, Stripe::KIND, body, received_at_ms, reason);
        }
    };
    let id = ev.id.as_deref().map(str::trim).unwrap_or_default();
    let event_type = ev.event_type.as_deref().unwrap_or_default();
    // Snapshot events carry Unix seconds; thin events an ISO string (they are ignored).
    let occurred_at_ms = ev
        .created
        .as_ref()
        .and_then(serde_json::Value::as_i64)
        .and_then(|s| s.checked_mul(1000))
        .unwrap_or(received_at_ms);
    let env = Envelope {
        source,
        kind: Stripe::KIND,
        id,
        event_type,
        occurred_at_ms,
        received_at_ms,
    };
    if ev.object.as_deref() == Some("v2.core.event") {
        return env.ignored("thin (v2) event: it carries no object to apply", body);
    }
    let Some(object) = ev.data.and_then(|d| d.object) else {
        return env.ignored("event has no data.object", body);
    };
    let result = match event_type {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            from_json(object).map(|s| checkout_session(&env, s))
        }
        "payment_intent.succeeded" => from_json(object).map(|p| payment_intent(&env, p)),
        "charge.succeeded" => from_json(object).map(|c| charge_succeeded(&env, c)),
        "charge.refunded" => from_json(object).map(|c| charge_refunded(&env, c)),
        "refund.created" | "refund.updated" => from_json(object).map(|r| refund(&env, r)),
        "customer.created" | "customer.updated" => from_json(object).map(|c| customer(&env, c)),
        "invoice.paid" => from_json(object).map(|i| invoice_paid(&env, i)),
        _ => return env.ignored(format!("event type {event_type:?} is not mapped"), body),
    };
    match result {
        Ok(event) => event,
        Err(e) => env.ignored(format!("unexpected {event_type} object: {e}"), body),
    }
}

fn from_json<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, serde_json::Error> {
    serde_json::from_str(raw.get())
}

fn checkout_session(env: &Envelope<'_>, s: CheckoutSession) -> v1::WebhookEvent {
    let payment_intent = id_of(&s.payment_intent);
    let invoice = id_of(&s.invoice);
    let contact = contact(
        s.customer_details.as_ref(),
        s.customer_email.as_deref(),
        id_of(&s.customer),
        [payment_intent.clone(), invoice.clone(), Some(s.id.clone())],
    );
    // A delayed payment method completes the session unpaid; the purchase comes with
    // checkout.session.async_payment_succeeded. Until then the buyer is a lead.
    let paid = matches!(
        s.payment_status.as_deref(),
        Some("paid" | "no_payment_required")
    );
    if !paid {
        return env.event(contact, Payload::ContactUpserted(v1::ContactUpserted {}));
    }
    let purchase_id = payment_intent
        .clone()
        .or_else(|| invoice.clone())
        .unwrap_or_else(|| s.id.clone());
    env.event(
        contact,
        Payload::PurchaseCompleted(v1::PurchaseCompleted {
            purchase_id,
            amount: s.amount_total.unwrap_or(0),
            currency: lower(s.currency),
            checkout_session_id: s.id,
            payment_intent_id: payment_intent.unwrap_or_default(),
            invoice_id: invoice.unwrap_or_default(),
            subscription_id: id_of(&s.subscription).unwrap_or_default(),
            ..v1::PurchaseCompleted::default()
        }),
    )
}

fn payment_intent(env: &Envelope<'_>, p: PaymentIntent) -> v1::WebhookEvent {
    let charge = id_of(&p.latest_charge);
    let invoice = id_of(&p.invoice);
    let contact = contact(
        p.shipping.as_ref(),
        p.receipt_email.as_deref(),
        id_of(&p.customer),
        [Some(p.id.clone()), charge.clone(), invoice.clone()],
    );
    env.event(
        contact,
        Payload::PurchaseCompleted(v1::PurchaseCompleted {
            purchase_id: p.id.clone(),
            amount: p.amount_received.or(p.amount).unwrap_or(0),
            currency: lower(p.currency),
            payment_intent_id: p.id,
            charge_id: charge.unwrap_or_default(),
            invoice_id: invoice.unwrap_or_default(),
            description: p.description.unwrap_or_default(),
            ..v1::PurchaseCompleted::default()
        }),
    )
}

fn charge_succeeded(env: &Envelope<'_>, c: Charge) -> v1::WebhookEvent {
    let payment_intent = id_of(&c.payment_intent);
    let invoice = id_of(&c.invoice);
    let contact = contact(
        c.billing_details.as_ref(),
        c.receipt_email.as_deref(),
        id_of(&c.customer),
        [payment_intent.clone(), Some(c.id.clone()), invoice.clone()],
    );
    // `captured: false` is an authorisation only (manual capture), not yet a purchase.
    if c.captured == Some(false) {
        return env.event(contact, Payload::ContactUpserted(v1::ContactUpserted {}));
    }
    env.event(
        contact,
        Payload::PurchaseCompleted(v1::PurchaseCompleted {
            purchase_id: payment_intent
                .clone()
                .or_else(|| invoice.clone())
                .unwrap_or_else(|| c.id.clone()),
            amount: c.amount_captured.or(c.amount).unwrap_or(0),
            currency: lower(c.currency),
            payment_intent_id: payment_intent.unwrap_or_default(),
            charge_id: c.id,
            invoice_id: invoice.unwrap_or_default(),
            description: c.description.unwrap_or_default(),
            ..v1::PurchaseCompleted::default()
        }),
    )
}

fn charge_refunded(env: &Envelope<'_>, c: Charge) -> v1::WebhookEvent {
    let payment_intent = id_of(&c.payment_intent);
    let contact = contact(
        c.billing_details.as_ref(),
        c.receipt_email.as_deref(),
        id_of(&c.customer),
        [payment_intent.clone(), Some(c.id.clone())],
    );
    // Since API 2022-11-15 the charge no longer embeds its refunds: record the
    // cumulative amount per charge; refund.created events add the refunds by id.
    env.event(
        contact,
        Payload::RefundUpdated(v1::RefundUpdated {
            charge_id: c.id,
            payment_intent_id: payment_intent.unwrap_or_default(),
            currency: lower(c.currency),
            status: v1::RefundStatus::Succeeded.into(),
            charge_amount_refunded: c.amount_refunded.unwrap_or(0),
            ..v1::RefundUpdated::default()
        }),
    )
}

fn refund(env: &Envelope<'_>, r: Refund) -> v1::WebhookEvent {
    let charge = id_of(&r.charge);
    let payment_intent = id_of(&r.payment_intent);
    // A refund names no person: it finds the contact through the purchase it refunds.
    let contact = contact(None, None, None, [payment_intent.clone(), charge.clone()]);
    let status = match r.status.as_deref() {
        Some("pending") => v1::RefundStatus::Pending,
        Some("succeeded") => v1::RefundStatus::Succeeded,
        Some("failed") => v1::RefundStatus::Failed,
        Some("canceled") => v1::RefundStatus::Canceled,
        Some("requires_action") => v1::RefundStatus::RequiresAction,
        _ => v1::RefundStatus::Unspecified,
    };
    env.event(
        contact,
        Payload::RefundUpdated(v1::RefundUpdated {
            refund_id: r.id,
            charge_id: charge.unwrap_or_default(),
            payment_intent_id: payment_intent.unwrap_or_default(),
            amount: r.amount.unwrap_or(0),
            currency: lower(r.currency),
            status: status.into(),
            charge_amount_refunded: 0,
        }),
    )
}

fn customer(env: &Envelope<'_>, c: Customer) -> v1::WebhookEvent {
    let person = Person {
        email: c.email,
        name: c.name,
        phone: c.phone,
        address: c.address,
    };
    let contact = contact(Some(&person), None, Some(c.id), []);
    env.event(contact, Payload::ContactUpserted(v1::ContactUpserted {}))
}

fn invoice_paid(env: &Envelope<'_>, i: Invoice) -> v1::WebhookEvent {
    let payment_intent = id_of(&i.payment_intent);
    let charge = id_of(&i.charge);
    // API 2025-03-31.basil moved the subscription under parent.subscription_details.
    let subscription = i
        .parent
        .as_ref()
        .and_then(|p| p.subscription_details.as_ref())
        .and_then(|d| id_of(&d.subscription))
        .or_else(|| id_of(&i.subscription));
    let person = Person {
        email: i.customer_email,
        name: i.customer_name,
        phone: i.customer_phone,
        address: i.customer_address,
    };
    let contact = contact(
        Some(&person),
        None,
        id_of(&i.customer),
        [Some(i.id.clone()), payment_intent.clone(), charge.clone()],
    );
    env.event(
        contact,
        Payload::PurchaseCompleted(v1::PurchaseCompleted {
            purchase_id: payment_intent.clone().unwrap_or_else(|| i.id.clone()),
            amount: i.amount_paid.unwrap_or(0),
            currency: lower(i.currency),
            payment_intent_id: payment_intent.unwrap_or_default(),
            charge_id: charge.unwrap_or_default(),
            invoice_id: i.id,
            subscription_id: subscription.unwrap_or_default(),
            description: i.description.unwrap_or_default(),
            ..v1::PurchaseCompleted::default()
        }),
    )
}

/// Signs `body` as Stripe does, for tests, the sample webhook and the benchmark.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    let mac = signature::mac(
        Algorithm::Sha256,
        secret.as_bytes(),
        &[t.as_bytes(), b".", body],
    );
    format!("t={t},v1={}", hex::encode(mac))
}

#[cfg(test)]
mod tests;
