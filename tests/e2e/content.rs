//! Authentic events are never lost for their content: line breaks, long descriptions and
//! names, control characters, ids no key can hold. Each is applied, cleaned and cut as
//! documented, with what was changed noted on its record; what is not applied is
//! recorded with its raw body.

use hookline_proto::v1;
use hookline_tests::{Reply, Stack, fixture, now_secs};
use serde_json::{Value, json};

const GHL_APP: &str = "fdbfd90cd48bb76107d26543";
const GHL_PRIVATE: &str = "gohighlevel/test-vectors/TEST-ONLY-ed25519-private.pem";
const GHL_PUBLIC: &str = "gohighlevel/test-vectors/TEST-ONLY-ed25519-public.pem";

/// A stack with the `stripe` source and a GoHighLevel one verified with TEST-ONLY keys.
async fn stack() -> Stack {
    let public = String::from_utf8(fixture(GHL_PUBLIC)).unwrap();
    Stack::start_with_sources(&format!(
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"{}\"]\n\
         [sources.ghl]\nkind = \"gohighlevel\"\napp_id = \"{GHL_APP}\"\n\
         ed25519_public_key = '''{public}'''\n",
        hookline_tests::STRIPE_SECRET
    ))
    .await
}

fn json_fixture(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

async fn post_stripe(stack: &Stack, event: &Value) -> Reply {
    let reply = stack.post_stripe(&serde_json::to_vec(event).unwrap()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply
}

async fn post_ghl(stack: &Stack, event: &Value) -> Reply {
    let body = serde_json::to_vec(event).unwrap();
    let key = String::from_utf8(fixture(GHL_PRIVATE)).unwrap();
    let sig = edge::sources::gohighlevel::sign(&key, &body).unwrap();
    let url = stack.edge.url("/webhooks/ghl");
    let reply = stack
        .http
        .post(&url, body, &[("x-ghl-signature", &sig)])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply
}

/// The contact holding `email`.
async fn contact(stack: &Stack, email: &str) -> v1::Contact {
    stack.contacts.lookup_email(email).await.unwrap()
}

/// The record of `event_id` in the webhook log.
async fn record(stack: &Stack, event_id: &str) -> v1::EventRecord {
    let events = stack
        .contacts
        .events(v1::ListEventsRequest::default())
        .await;
    events
        .into_iter()
        .find(|e| e.event_id == event_id)
        .unwrap_or_else(|| panic!("{event_id} is not in the log"))
}

#[tokio::test]
async fn stripe_text_with_line_breaks_or_over_the_limit_is_kept_and_cut() {
    let stack = stack().await;

    // An invoice memo over three lines (Windows line ends on one): kept as written.
    let mut invoice = json_fixture("stripe/invoice_paid_basil.json");
    let memo = "Thank you!\nOrder 42\r\nShip to the side door";
    invoice["data"]["object"]["description"] = memo.into();
    let reply = post_stripe(&stack, &invoice).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    let grace = contact(&stack, "grace.hopper@example.com").await;
    assert_eq!(grace.purchases.len(), 1);
    assert_eq!(
        grace.purchases[0].description,
        "Thank you!\nOrder 42\nShip to the side door"
    );
    let logged = record(&stack, "stripe:evt_1QhkNbHookLine0013InvPaid").await;
    assert_eq!(logged.outcome(), v1::EventOutcome::Applied);
    assert!(
        logged.notes.is_empty(),
        "nothing was cut: {:?}",
        logged.notes
    );

    // A 2,000-character description: cut at 1,024 bytes, and the cut noted.
    let mut charge = json_fixture("stripe/charge_succeeded.json");
    let description = "Spring webinar ticket. ".repeat(87);
    charge["data"]["object"]["description"] = description[..2000].into();
    let reply = post_stripe(&stack, &charge).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    let note = "event.purchase_completed.description cut to 1024 of its 2000 bytes";
    assert_eq!(reply.json()["notes"], json!([note]));
    let jenny = contact(&stack, "jenny.rosen@example.com").await;
    let purchase = &jenny.purchases[0];
    assert_eq!(purchase.amount, 4900);
    assert!(description.starts_with(&purchase.description));
    assert!(purchase.description.len() <= 1024 && purchase.description.len() > 1000);
    let logged = record(&stack, "stripe:evt_3QhkLnHookLine0006ChOk").await;
    assert_eq!(logged.notes, [note]);

    // A 3,000-character name with emoji (4 bytes each): cut on a character boundary.
    let mut checkout = json_fixture("stripe/checkout_session_completed_guest_paid.json");
    checkout["id"] = "evt_long_name".into();
    checkout["data"]["object"]["id"] = "cs_long_name".into();
    checkout["data"]["object"]["payment_intent"] = "pi_long_name".into();
    let details = &mut checkout["data"]["object"]["customer_details"];
    details["email"] = "emoji@example.com".into();
    details["phone"] = "+15415550100".into();
    let name = "Ada 🎉 Lovelace ".repeat(250);
    details["name"] = name[..name.char_indices().nth(3000).unwrap().0].into();
    let reply = post_stripe(&stack, &checkout).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    let emoji = contact(&stack, "emoji@example.com").await;
    assert_eq!(emoji.purchases.len(), 1);
    assert!(emoji.name.len() <= 1024 && emoji.name.len() > 1000);
    assert!(name.starts_with(&emoji.name));
    let logged = record(&stack, "stripe:evt_long_name").await;
    assert_eq!(logged.notes.len(), 1, "{:?}", logged.notes);
    assert!(logged.notes[0].starts_with("event.contact.name cut to "));
}

#[tokio::test]
async fn a_gohighlevel_title_of_many_lines_is_kept_and_cut() {
    let stack = stack().await;
    let mut appointment = json_fixture("gohighlevel/fixtures/AppointmentCreate.json");
    let title = "Discovery call\nAgenda:\n- budget\n- timeline\n".repeat(35);
    let title = &title[..1500];
    appointment["appointment"]["title"] = title.into();
    let reply = post_ghl(&stack, &appointment).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);

    let mut grpc = stack.contacts.client().await;
    let contact = grpc
        .lookup_contact(v1::LookupContactRequest {
            key: Some(v1::lookup_contact_request::Key::ExternalId(
                v1::ExternalId {
                    system: "ghl_contact".into(),
                    id: "P4FmErxTM1cHho4PAAAN".into(),
                },
            )),
            phone_region: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    let kept = contact.appointment.unwrap();
    assert_eq!(kept.status(), v1::AppointmentStatus::Booked);
    assert!(title.starts_with(&kept.title) && kept.title.contains('\n'));
    assert!(kept.title.len() <= 1024 && kept.title.len() > 1000);
    let id = appointment["webhookId"].as_str().unwrap();
    let logged = record(&stack, &format!("ghl:{id}")).await;
    assert_eq!(
        logged.notes,
        [format!(
            "event.appointment_updated.title cut to {} of its 1500 bytes",
            kept.title.len()
        )]
    );
}

#[tokio::test]
async fn control_characters_and_ids_no_key_can_hold_do_not_cost_the_event() {
    let stack = stack().await;
    // A currency with a control character in it, and an event id of 300 characters.
    let long_id = format!("evt_{}", "x".repeat(296));
    let mut checkout = json_fixture("stripe/checkout_session_completed_guest_paid.json");
    checkout["id"] = long_id.clone().into();
    checkout["data"]["object"]["currency"] = "us\u{1}d".into();
    let reply = post_stripe(&stack, &checkout).await;
    assert_eq!(reply.json()["status"], "applied", "{:?}", reply.body);
    let jenny = contact(&stack, "jenny.rosen@example.com").await;
    assert_eq!(jenny.purchases[0].currency, "usd");

    // Recorded under a stable digest of its id, the original kept; a redelivery of the
    // same id is a duplicate.
    let events = stack
        .contacts
        .events(v1::ListEventsRequest::default())
        .await;
    assert_eq!(events.len(), 1);
    assert!(events[0].event_id.starts_with("stripe:sha256:"));
    assert_eq!(events[0].original_event_id, format!("stripe:{long_id}"));
    let again = post_stripe(&stack, &checkout).await;
    assert_eq!(again.json()["status"], "duplicate");
}

#[tokio::test]
async fn an_event_contacts_svc_ignores_is_recorded_with_its_raw_body() {
    let stack = stack().await;
    // A refund that names neither a charge nor a payment intent: nobody to apply it to.
    // contacts-svc decides so, asks for the body, and records the event with it.
    let refund = json!({
        "id": "evt_orphan_refund", "object": "event", "type": "refund.created",
        "created": now_secs(),
        "data": {"object": {"id": "re_orphan", "object": "refund", "amount": 500,
                            "currency": "usd", "status": "succeeded"}}
    });
    let reply = post_stripe(&stack, &refund).await;
    assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    assert_eq!(reply.json()["reason"], "no contact identifiers");
    let logged = record(&stack, "stripe:evt_orphan_refund").await;
    assert_eq!(logged.outcome(), v1::EventOutcome::Ignored);
    assert_eq!(logged.body, serde_json::to_vec(&refund).unwrap());
    let again = post_stripe(&stack, &refund).await;
    assert_eq!(again.json()["status"], "duplicate");

    // The same for a GoHighLevel app install, which changes no contact.
    let install = json_fixture("gohighlevel/fixtures/INSTALL.json");
    let reply = post_ghl(&stack, &install).await;
    assert_eq!(reply.json()["status"], "ignored", "{:?}", reply.body);
    let id = install["webhookId"].as_str().unwrap();
    let logged = record(&stack, &format!("ghl:{id}")).await;
    assert_eq!(logged.body, serde_json::to_vec(&install).unwrap());
}
