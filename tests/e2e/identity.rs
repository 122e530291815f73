//! Many people at once: bursts of events about each person, delivered concurrently,
//! while the people share a phone number (a company switchboard, a form's default) and
//! Redis has just forgotten its scripts (started, restarted or failed over). Every
//! person's lookup must still return their own contact with their own purchase.
//!
//! Such a burst races index claims against contact writes: a claim names a contact
//! before that contact is written (in the same round trip, or never, when Redis forgot
//! the script or the caller died). Two tests put such claims in place with raw Redis
//! commands and show they are waited for or cleared, never joined; the burst test
//! shows the whole pipeline under the traffic that first showed the fault.

use edge::sources::{Delivery, Source};
use futures::StreamExt as _;
use futures::future::join_all;
use hookline_proto::v1::contacts_service_client::ContactsServiceClient;
use hookline_proto::v1::{self, lookup_contact_request::Key};
use hookline_tests::{ContactsSvc, Redis, now_millis, now_secs};
use serde_json::json;

/// The GoHighLevel app of the bookings.
const GHL_APP: &str = "fdbfd90cd48bb76107d26543";
/// The number everybody shares.
const SHARED_PHONE: &str = "+14155550100";
/// People per round, and rounds: a failure seen in one round of five before the fix
/// escapes 25 rounds with a chance of 0.8^25, under half a percent.
const PEOPLE: usize = 120;
const ROUNDS: usize = 25;
/// Events per ApplyEvents call.
const BATCH: usize = 24;
/// Times the script cache is emptied while a round's burst begins.
const FLUSHES: usize = 50;
/// Deliveries of an event told to retry later before the test gives up on it.
const SENDER_RETRIES: usize = 20;

/// One buyer of a round.
struct Buyer {
    email: String,
    customer: String,
    payment_intent: String,
    charge: String,
    amount: i64,
}

impl Buyer {
    fn new(round: usize, i: usize) -> Self {
        Self {
            email: format!("buyer{i}.round{round}@example.com"),
            customer: format!("cus_r{round}_{i}"),
            payment_intent: format!("pi_r{round}_{i}"),
            charge: format!("ch_r{round}_{i}"),
            amount: i64::try_from(1000 + i).unwrap(),
        }
    }

    /// A buyer of 42.00 named by `tag`, on the shared phone.
    fn tagged(tag: &str, email: &str) -> Self {
        Self {
            email: email.to_owned(),
            customer: format!("cus_{tag}"),
            payment_intent: format!("pi_{tag}"),
            charge: format!("ch_{tag}"),
            amount: 4200,
        }
    }

    /// What Stripe sends about one checkout, within milliseconds of each other:
    /// the customer, the checkout session, the payment intent and the charge.
    fn burst(&self) -> Vec<Vec<u8>> {
        let person = json!({
            "email": self.email,
            "name": "Shared Line",
            "phone": SHARED_PHONE,
            "address": {"country": "US"},
        });
        let event = |suffix: &str, kind: &str, object: serde_json::Value| {
            json!({
                "id": format!("evt_{}_{suffix}", self.payment_intent),
                "object": "event",
                "api_version": "2025-03-31.basil",
                "created": now_secs(),
                "type": kind,
                "data": {"object": object},
            })
            .to_string()
            .into_bytes()
        };
        vec![
            event(
                "customer",
                "customer.created",
                json!({
                    "id": self.customer, "object": "customer",
                    "email": self.email, "name": "Shared Line", "phone": SHARED_PHONE,
                }),
            ),
            event(
                "session",
                "checkout.session.completed",
                json!({
                    "id": format!("cs_{}", self.payment_intent), "object": "checkout.session",
                    "amount_total": self.amount, "currency": "usd",
                    "customer": self.customer, "customer_details": person,
                    "payment_intent": self.payment_intent, "payment_status": "paid",
                    "mode": "payment", "status": "complete",
                }),
            ),
            event(
                "intent",
                "payment_intent.succeeded",
                json!({
                    "id": self.payment_intent, "object": "payment_intent",
                    "amount": self.amount, "amount_received": self.amount, "currency": "usd",
                    "customer": self.customer, "latest_charge": self.charge,
                    "receipt_email": self.email,
                }),
            ),
            event(
                "charge",
                "charge.succeeded",
                json!({
                    "id": self.charge, "object": "charge",
                    "amount": self.amount, "amount_captured": self.amount, "currency": "usd",
                    "captured": true, "customer": self.customer,
                    "payment_intent": self.payment_intent, "billing_details": person,
                }),
            ),
        ]
    }
}

/// A GoHighLevel booking of `buyer` (contact, appointment, opportunity and a paid
/// invoice, within moments of each other) through the source `ghl`.
fn booking(buyer: &Buyer, ghl: &dyn Source) -> Vec<v1::WebhookEvent> {
    let ghl_id = format!("ghl_{}", buyer.customer);
    let base = |kind: &str, hook: &str| {
        json!({
            "type": kind, "locationId": "DhU4XgaOzyx7J3SdoVwg", "appId": GHL_APP,
            "webhookId": format!("{hook}-{}", buyer.customer),
            "timestamp": "2026-12-03T15:45:20.871Z",
        })
    };
    let mut contact = base("ContactCreate", "contact");
    contact["id"] = ghl_id.clone().into();
    contact["email"] = buyer.email.clone().into();
    contact["phone"] = SHARED_PHONE.into();
    contact["name"] = "Shared Line".into();
    let mut appointment = base("AppointmentCreate", "appointment");
    appointment["appointment"] = json!({
        "id": format!("appt_{}", buyer.customer), "contactId": ghl_id,
        "appointmentStatus": "confirmed", "title": "Discovery call",
        "startTime": "2026-12-10T10:00:00-05:00", "dateUpdated": "2026-12-03T15:45:20.308Z",
    });
    let mut opportunity = base("OpportunityCreate", "opportunity");
    opportunity["id"] = format!("opp_{}", buyer.customer).into();
    opportunity["contactId"] = ghl_id.clone().into();
    opportunity["monetaryValue"] = 1500.into();
    opportunity["status"] = "open".into();
    let mut invoice = base("InvoicePaid", "invoice");
    invoice["_id"] = format!("inv_{}", buyer.customer).into();
    invoice["status"] = "paid".into();
    invoice["amountPaid"] = 15.into();
    invoice["currency"] = "USD".into();
    invoice["invoiceNumber"] = "1042".into();
    invoice["contactDetails"] = json!({
        "id": ghl_id, "name": "Shared Line", "email": buyer.email, "phoneNo": SHARED_PHONE,
    });
    [contact, appointment, opportunity, invoice]
        .iter()
        .map(|body| {
            let body = body.to_string();
            ghl.normalize("ghl", Delivery::body_only(body.as_bytes()), now_millis())
        })
        .collect()
}

/// The GoHighLevel source the booking events are normalized by, as the edge does.
fn ghl_source() -> Box<dyn Source> {
    let toml = format!("[sources.ghl]\nkind = \"gohighlevel\"\napp_id = \"{GHL_APP}\"\n");
    let args = edge::config::Args::for_file("identity.toml");
    let mut config = edge::Config::parse(&toml, std::path::Path::new("."), &args, &|_| None)
        .expect("a GoHighLevel source");
    config.sources.remove("ghl").expect("the ghl source")
}

type Client = ContactsServiceClient<tonic::transport::Channel>;

/// The contact `key` finds, or what went wrong.
async fn find(grpc: &Client, key: Key) -> Result<v1::Contact, String> {
    grpc.clone()
        .lookup_contact(v1::LookupContactRequest {
            key: Some(key.clone()),
            phone_region: String::new(),
        })
        .await
        .map(|r| r.into_inner().contact.unwrap_or_default())
        .map_err(|e| format!("lookup by {key:?}: {e}"))
}

fn external(system: &str, id: &str) -> Key {
    Key::ExternalId(v1::ExternalId {
        system: system.into(),
        id: id.into(),
    })
}

/// What is wrong with the contact `grpc` finds for `buyer`, if anything.
async fn check(grpc: &Client, buyer: &Buyer) -> Option<String> {
    let by_email = match find(grpc, Key::Email(buyer.email.clone())).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let by_customer = match find(grpc, external("stripe_customer", &buyer.customer)).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let purchases: Vec<(&str, i64)> = by_email
        .purchases
        .iter()
        .filter(|p| p.invoice_id.is_empty())
        .map(|p| (p.payment_intent_id.as_str(), p.amount))
        .collect();
    let customers: Vec<&str> = by_email
        .external_ids
        .iter()
        .filter(|x| x.system == "stripe_customer")
        .map(|x| x.id.as_str())
        .collect();
    let right = by_email.email == buyer.email
        && by_customer.id == by_email.id
        && customers == [buyer.customer.as_str()]
        && purchases == [(buyer.payment_intent.as_str(), buyer.amount)];
    (!right).then(|| {
        format!(
            "{}: by email {} (email {}, customers {customers:?}, purchases {purchases:?}), \
             by customer {}",
            buyer.email, by_email.id, by_email.email, by_customer.id
        )
    })
}

/// What is wrong with the GoHighLevel side of `buyer`'s contact, if anything: found
/// by the GHL id, it is the contact found by email, with the invoice and appointment.
async fn check_booking(grpc: &Client, buyer: &Buyer) -> Option<String> {
    let ghl_id = format!("ghl_{}", buyer.customer);
    let by_ghl = match find(grpc, external("ghl_contact", &ghl_id)).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let invoices: Vec<&str> = by_ghl
        .purchases
        .iter()
        .filter(|p| !p.invoice_id.is_empty())
        .map(|p| p.invoice_id.as_str())
        .collect();
    let appointment = by_ghl
        .appointment
        .as_ref()
        .map(|a| a.appointment_id.as_str());
    let right = by_ghl.email == buyer.email
        && invoices == [format!("inv_{}", buyer.customer)]
        && appointment == Some(format!("appt_{}", buyer.customer).as_str());
    (!right).then(|| {
        format!(
            "{}: by GHL id {} (email {}, invoices {invoices:?}, appointment {appointment:?})",
            buyer.email, by_ghl.id, by_ghl.email
        )
    })
}

/// Applies `events` as the edge does under load: batches of a few dozen events, four
/// calls in flight, each slot sending the next batch as soon as its call returns, so
/// batches meet the empty script cache at different moments. An event answered "retry
/// later" is delivered again, as its sender would; in the end every event must be
/// applied or be a duplicate.
async fn apply_as_the_edge_does(replicas: &[&ContactsSvc], events: Vec<v1::WebhookEvent>) {
    let mut pending: Vec<v1::ApplyEventsItem> = events
        .into_iter()
        .map(|event| v1::ApplyEventsItem {
            event: Some(event),
            ..Default::default()
        })
        .collect();
    for _ in 0..SENDER_RETRIES {
        let calls = pending
            .chunks(BATCH)
            .enumerate()
            .map(|(i, chunk)| async move {
                let mut grpc = replicas[i % replicas.len()].client().await;
                let results = grpc
                    .apply_events(v1::ApplyEventsRequest {
                        items: chunk.to_vec(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .results;
                let mut again = Vec::new();
                for (item, result) in chunk.iter().zip(results) {
                    match result.response.as_ref().map(|r| r.outcome()) {
                        Some(v1::EventOutcome::Applied | v1::EventOutcome::Duplicate) => {}
                        Some(v1::EventOutcome::RetryLater) => again.push(item.clone()),
                        _ => panic!("{:?}: {result:?}", item.event.as_ref().map(|e| &e.id)),
                    }
                }
                again
            });
        pending = futures::stream::iter(calls)
            .buffer_unordered(4)
            .concat()
            .await;
        if pending.is_empty() {
            return;
        }
    }
    panic!("{} events still not applied", pending.len());
}

/// A deterministic shuffle (xorshift), so a failing round can be run again.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap());
    }
}

#[tokio::test]
async fn bursts_for_people_sharing_a_phone_land_on_their_own_contacts() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let replica = ContactsSvc::start(&redis.url()).await;
    let mut conn = redis.conn().await;
    let ghl = ghl_source();
    let grpc = contacts.client().await;
    for round in 0..ROUNDS {
        // As after a Redis restart or failover: every script must be loaded again.
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        let buyers: Vec<Buyer> = (0..PEOPLE).map(|i| Buyer::new(round, i)).collect();
        // The edge's own normalizers turn the bodies into events, which arrive in an
        // order of their own each round. Every other buyer also booked through
        // GoHighLevel with the same email, and checked out with only a Stripe session.
        let mut events: Vec<v1::WebhookEvent> = Vec::new();
        for (i, buyer) in buyers.iter().enumerate() {
            let mut burst = buyer.burst();
            if i % 2 == 1 {
                burst.truncate(2);
                events.extend(booking(buyer, ghl.as_ref()));
            }
            events.extend(burst.iter().map(|b| stripe_event(b)));
        }
        shuffle(&mut events, round as u64);
        // And again every millisecond while the burst begins, as Redis restarting or
        // failing over a few times would: some calls meet an empty script cache while
        // others run with a full one.
        let flusher = {
            let mut conn = redis.conn().await;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
                for _ in 0..FLUSHES {
                    tick.tick().await;
                    let flushed: Result<(), _> = redis::cmd("SCRIPT")
                        .arg("FLUSH")
                        .query_async(&mut conn)
                        .await;
                    flushed.unwrap();
                }
            })
        };
        apply_as_the_edge_does(&[&contacts, &replica], events).await;
        flusher.await.unwrap();
        let checks = buyers.iter().enumerate().map(|(i, b)| {
            let grpc = &grpc;
            async move {
                let booked = if i % 2 == 1 {
                    check_booking(grpc, b).await
                } else {
                    None
                };
                check(grpc, b).await.or(booked)
            }
        });
        let wrong: Vec<String> = join_all(checks).await.into_iter().flatten().collect();
        assert!(
            wrong.is_empty(),
            "round {round}: {} of {PEOPLE} people resolve wrongly:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

/// A contact id created `ago_secs` seconds ago, as contacts-svc makes them (UUID v7).
fn contact_id_created(ago_secs: u64) -> String {
    let at = std::time::SystemTime::now() - std::time::Duration::from_secs(ago_secs);
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    format!("ct_{}", uuid::Uuid::new_v7(ts).simple())
}

/// A paid checkout of `email` on the shared phone, with its own customer and payment.
fn checkout(tag: &str, email: &str) -> v1::WebhookEvent {
    let session = Buyer::tagged(tag, email).burst().swap_remove(1);
    stripe_event(&session)
}

/// A Stripe body as the edge's `stripe` source normalizes it.
fn stripe_event(body: &[u8]) -> v1::WebhookEvent {
    edge::sources::stripe::Stripe::new([&b"whsec_unused"[..]], 300).normalize(
        "stripe",
        Delivery::body_only(body),
        now_millis(),
    )
}

/// Claims `identifiers` (index keys) for `contact` with raw commands, as a call leaves
/// them between its claims and its write.
async fn claim_raw(redis: &Redis, contact: &str, keys: &[String]) {
    let mut conn = redis.conn().await;
    for key in keys {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(contact)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

async fn apply_one(contacts: &ContactsSvc, event: v1::WebhookEvent) -> v1::ApplyEventResponse {
    let mut results = contacts
        .client()
        .await
        .apply_events(v1::ApplyEventsRequest {
            items: vec![v1::ApplyEventsItem {
                event: Some(event),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    results.pop().and_then(|r| r.response).unwrap_or_default()
}

#[tokio::test]
async fn claims_left_by_a_call_that_died_before_writing_are_cleared_not_joined() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    // Ann's first event claimed her email and the shared phone for a new contact, then
    // its call died before writing it (a minute ago).
    let dead = contact_id_created(60);
    claim_raw(
        &redis,
        &dead,
        &[
            "hl:idx:email:ann@example.com".to_owned(),
            format!("hl:idx:phone:{SHARED_PHONE}"),
        ],
    )
    .await;

    // Bob, on the same switchboard, and then Ann's checkout.
    let bob = apply_one(&contacts, checkout("bob", "bob@example.com")).await;
    assert_eq!(bob.outcome(), v1::EventOutcome::Applied, "{bob:?}");
    assert_ne!(bob.contact_id, dead, "Bob joined a contact nobody wrote");
    let ann = apply_one(&contacts, checkout("ann", "ann@example.com")).await;
    assert_eq!(ann.outcome(), v1::EventOutcome::Applied, "{ann:?}");

    for (tag, email) in [("bob", "bob@example.com"), ("ann", "ann@example.com")] {
        assert_eq!(
            check(&contacts.client().await, &Buyer::tagged(tag, email)).await,
            None
        );
    }
}

#[tokio::test]
async fn a_claimed_contact_still_being_written_is_waited_for_never_joined() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    // Ann's call has claimed her email and the shared phone for a new contact and is
    // about to write it (a contacts-svc replica, between two commands of its pipeline).
    let writing = contact_id_created(0);
    claim_raw(
        &redis,
        &writing,
        &[
            "hl:idx:email:ann@example.com".to_owned(),
            format!("hl:idx:phone:{SHARED_PHONE}"),
        ],
    )
    .await;

    // Bob's event waits for that write rather than take Ann's identifiers for his own;
    // if it does not land in time, Bob's sender is told to retry and nothing is stored.
    let bob = apply_one(&contacts, checkout("bob", "bob@example.com")).await;
    assert_eq!(bob.outcome(), v1::EventOutcome::RetryLater, "{bob:?}");
    let missing = contacts.lookup_email("bob@example.com").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Ann's write lands; Bob's retry then gets a contact of his own.
    // Layout 2: the version (16 hex digits) and the record with the contact's log.
    let ann = r#"20000000000000001d{"d":{"email":{"at":1,"ev":"stripe:evt_ann","v":{"n":"ann@example.com","o":"ann@example.com"}},"phone":{"at":1,"ev":"stripe:evt_ann","v":{"v":"+14155550100","ok":true}}}}"#;
    let mut conn = redis.conn().await;
    let () = redis::pipe()
        .cmd("XADD")
        .arg("hl:contacts:new")
        .arg("*")
        .arg(&writing)
        .arg("")
        .ignore()
        .cmd("SET")
        .arg(format!("hl:c:{{{writing}}}"))
        .arg(ann)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let bob = apply_one(&contacts, checkout("bob", "bob@example.com")).await;
    assert_eq!(bob.outcome(), v1::EventOutcome::Applied, "{bob:?}");
    assert_ne!(bob.contact_id, writing);
    let bob_buyer = Buyer::tagged("bob", "bob@example.com");
    assert_eq!(check(&contacts.client().await, &bob_buyer).await, None);
    let ann = contacts.lookup_email("ann@example.com").await.unwrap();
    assert_eq!(
        (ann.id.as_str(), ann.purchases.len()),
        (writing.as_str(), 0)
    );
}
