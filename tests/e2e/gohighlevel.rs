//! GoHighLevel marketplace and workflow webhooks through the whole pipeline, signed
//! with the TEST-ONLY keys, looked up afterwards by GHL contact id, email and phone.

use hookline_proto::v1;
use std::time::Duration;

use hookline_tests::{Reply, Stack, eventually, fixture, run_grpcurl, stripe_checkout};

const ED25519_PRIVATE: &str = "gohighlevel/test-vectors/TEST-ONLY-ed25519-private.pem";
const ED25519_PUBLIC: &str = "gohighlevel/test-vectors/TEST-ONLY-ed25519-public.pem";
const RSA_PUBLIC: &str = "gohighlevel/test-vectors/TEST-ONLY-rsa4096-public.pem";
const WORKFLOW_TOKEN: &str = "workflow-token-for-tests";
/// The app and location of every fixture, which the `ghl` source takes.
const APP: &str = "fdbfd90cd48bb76107d26543";
const LOCATION: &str = "DhU4XgaOzyx7J3SdoVwg";
/// An app and a location of someone else's: GHL signs their events with the same key.
const OTHER_APP: &str = "0123456789abcdef01234567";
const OTHER_LOCATION: &str = "ZZZZotherLocation000";

/// Request headers of a table row.
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn text(path: &str) -> String {
    String::from_utf8(fixture(path)).unwrap()
}

/// A stack with a `ghl` marketplace source (TEST-ONLY keys, legacy RSA on, the fixtures'
/// app and location only), a `ghl-strict` one with the legacy switch off (the app only),
/// and a `ghl-workflow` source.
async fn stack() -> Stack {
    let sources = format!(
        "[sources.ghl]\nkind = \"gohighlevel\"\nallow_legacy_rsa = true\n\
         app_id = \"{APP}\"\nlocation_ids = [\"{LOCATION}\"]\n\
         ed25519_public_key = '''{}'''\nrsa_public_key = '''{}'''\n\
         [sources.ghl-strict]\nkind = \"gohighlevel\"\napp_id = \"{APP}\"\n\
         ed25519_public_key = '''{}'''\nrsa_public_key = '''{}'''\n\
         [sources.ghl-workflow]\nkind = \"gohighlevel-workflow\"\ntoken = \"{WORKFLOW_TOKEN}\"\n\
         [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"{}\"]\n",
        text(ED25519_PUBLIC),
        text(RSA_PUBLIC),
        text(ED25519_PUBLIC),
        text(RSA_PUBLIC),
        hookline_tests::STRIPE_SECRET,
    );
    Stack::start_with_sources(&sources).await
}

/// The compact bytes GHL would send for a pretty fixture (`JSON.stringify`).
fn compact(name: &str) -> Vec<u8> {
    let value: serde_json::Value =
        serde_json::from_slice(&fixture(&format!("gohighlevel/fixtures/{name}"))).unwrap();
    serde_json::to_vec(&value).unwrap()
}

fn sign(body: &[u8]) -> String {
    edge::sources::gohighlevel::sign(&text(ED25519_PRIVATE), body).expect("TEST-ONLY key")
}

async fn post(stack: &Stack, source: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    stack
        .http
        .post(
            &stack.edge.url(&format!("/webhooks/{source}")),
            body,
            headers,
        )
        .await
}

async fn post_signed(stack: &Stack, body: Vec<u8>) -> Reply {
    let sig = sign(&body);
    post(stack, "ghl", body, &[("x-ghl-signature", &sig)]).await
}

async fn lookup(stack: &Stack, key: v1::lookup_contact_request::Key) -> v1::Contact {
    let mut grpc = stack.contacts.client().await;
    grpc.lookup_contact(v1::LookupContactRequest {
        key: Some(key.clone()),
        phone_region: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("lookup {key:?}: {e}"))
    .into_inner()
    .contact
    .unwrap()
}

fn ghl_id(id: &str) -> v1::lookup_contact_request::Key {
    v1::lookup_contact_request::Key::ExternalId(v1::ExternalId {
        system: "ghl_contact".into(),
        id: id.into(),
    })
}

#[tokio::test]
async fn every_marketplace_fixture_ends_up_on_the_right_contact() {
    let stack = stack().await;
    let expected = [
        ("ContactCreate.json", "applied"),
        ("AppointmentCreate.json", "applied"),
        ("AppointmentUpdate-showed.json", "applied"),
        ("ContactTagUpdate.json", "applied"),
        ("InvoicePaid.json", "applied"),
        ("ContactUpdate.json", "applied"),
        ("AppointmentUpdate-noshow.json", "applied"),
        ("AppointmentUpdate-cancelled.json", "applied"),
        ("AppointmentDelete.json", "applied"),
        ("ContactDelete.json", "applied"),
        ("OpportunityCreate.json", "applied"),
        ("INSTALL.json", "ignored"),
        ("UNINSTALL.json", "ignored"),
    ];
    for (name, status) in expected {
        let reply = post_signed(&stack, compact(name)).await;
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        assert_eq!(reply.json()["status"], status, "{name}: {:?}", reply.body);
    }

    // Jordan Avery: booked, then showed, then paid an invoice. Found by GHL id, email
    // and phone, in any of their spellings, through grpcurl as an engineer would.
    let addr = stack.contacts.addr.to_string();
    for request in [
        r#"{"externalId":{"system":"ghl_contact","id":"P4FmErxTM1cHho4PAAAN"}}"#,
        r#"{"email":"Jordan.Avery@EXAMPLE.com"}"#,
        r#"{"phone":"(555) 010-0199"}"#,
        r#"{"phone":"+1 555 010 0199"}"#,
    ] {
        let out = run_grpcurl(&[
            "-plaintext",
            "-d",
            request,
            &addr,
            "contacts.v1.ContactsService/LookupContact",
        ])
        .await;
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = &json["contact"];
        assert_eq!(c["email"], "jordan.avery@example.com", "{request}");
        assert_eq!(c["phone"], "+15550100199");
        assert_eq!(c["appointment"]["appointmentId"], "FN1XdtXNMPqAXiuF3XRc");
        assert_eq!(c["appointment"]["status"], "APPOINTMENT_STATUS_ATTENDED");
        assert_eq!(c["appointment"]["startTime"], "2026-12-03T15:00:00Z");
        assert_eq!(c["stage"], "STAGE_PURCHASED");
        assert!(c["milestones"]["attendedAt"].is_string());
        assert!(c["milestones"]["bookedAt"].is_string());
    }
    let jordan = lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN")).await;
    assert_eq!(jordan.tags, ["booked-call", "showed", "webinar-nov"]);
    assert_eq!(jordan.purchases.len(), 1);
    assert_eq!(
        (jordan.first_name.as_str(), jordan.last_name.as_str()),
        ("Jordan", "Avery")
    );

    // Morgan Lee: a no-show.
    let morgan = lookup(&stack, ghl_id("vkYfQv9NomBbjl2y4y5q")).await;
    assert_eq!(morgan.stage(), v1::Stage::NoShow);
    assert_eq!(
        morgan.appointment.unwrap().status(),
        v1::AppointmentStatus::NoShow
    );
    assert_eq!(morgan.email, "morgan.lee@example.com");

    // Sam Okafor: the appointment was cancelled and deleted, then the contact deleted.
    let sam = lookup(&stack, ghl_id("tO2oSoJGr297EYx8ZXnd")).await;
    assert!(sam.deleted);
    assert_eq!(sam.stage(), v1::Stage::Lead);

    // Jordan's open opportunity.
    assert_eq!(jordan.opportunities.len(), 1);
    assert_eq!(
        jordan.opportunities[0].opportunity_id,
        "jniYpMBoCO0WX8SivsTM"
    );
    assert_eq!(jordan.opportunities[0].status, "open");

    // Redelivering every fixture changes nothing.
    for name in [
        "ContactCreate.json",
        "AppointmentUpdate-showed.json",
        "InvoicePaid.json",
    ] {
        assert_eq!(
            post_signed(&stack, compact(name)).await.json()["status"],
            "duplicate"
        );
    }
}

#[tokio::test]
async fn the_signature_matrix() {
    let stack = stack().await;
    let vector = fixture("gohighlevel/test-vectors/AppointmentUpdate-showed.body.json");
    let ed = text("gohighlevel/test-vectors/AppointmentUpdate-showed.x-ghl-signature.txt");
    let rsa = text("gohighlevel/test-vectors/AppointmentUpdate-showed.x-wh-signature.txt");
    let (ed, rsa) = (ed.trim(), rsa.trim());
    let pretty = fixture("gohighlevel/fixtures/AppointmentUpdate-showed.json");
    let mut tampered = vector.clone();
    let at = tampered.iter().position(|b| *b == b'7').unwrap();
    tampered[at] = b'8';
    let other = sign(b"another body");

    // (source, body, headers, status); every 401 must leave Redis empty.
    let refused: Vec<(&str, &str, Vec<u8>, Headers)> = vec![
        (
            "bad Ed25519",
            "ghl",
            vector.clone(),
            vec![("x-ghl-signature", &other)],
        ),
        (
            "bad Ed25519 beside good RSA",
            "ghl",
            vector.clone(),
            vec![("x-ghl-signature", &other), ("x-wh-signature", rsa)],
        ),
        (
            "bad RSA",
            "ghl",
            vector.clone(),
            vec![("x-wh-signature", &rsa[4..])],
        ),
        (
            "N/A",
            "ghl",
            vector.clone(),
            vec![("x-ghl-signature", "N/A")],
        ),
        (
            "empty",
            "ghl",
            vector.clone(),
            vec![("x-ghl-signature", "")],
        ),
        ("no header", "ghl", vector.clone(), vec![]),
        (
            "re-serialized body (Ed25519)",
            "ghl",
            pretty.clone(),
            vec![("x-ghl-signature", ed)],
        ),
        (
            "re-serialized body (RSA)",
            "ghl",
            pretty.clone(),
            vec![("x-wh-signature", rsa)],
        ),
        (
            "one byte changed",
            "ghl",
            tampered,
            vec![("x-ghl-signature", ed)],
        ),
        (
            "RSA with the legacy switch off",
            "ghl-strict",
            vector.clone(),
            vec![("x-wh-signature", rsa)],
        ),
    ];
    for (name, source, body, headers) in refused {
        let reply = post(&stack, source, body, &headers).await;
        assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
    }
    assert_eq!(
        stack.redis.dbsize().await,
        0,
        "a refused delivery stored something"
    );

    let accepted: Vec<(&str, &str, Headers)> = vec![
        ("good Ed25519", "ghl-strict", vec![("x-ghl-signature", ed)]),
        ("good RSA, legacy on", "ghl", vec![("x-wh-signature", rsa)]),
        (
            "both good",
            "ghl",
            vec![("x-ghl-signature", ed), ("x-wh-signature", rsa)],
        ),
        (
            "N/A beside good RSA",
            "ghl",
            vec![("x-ghl-signature", "N/A"), ("x-wh-signature", rsa)],
        ),
    ];
    for (name, source, headers) in accepted {
        let reply = post(&stack, source, vector.clone(), &headers).await;
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
    }
}

/// An AppointmentUpdate for Jordan's appointment with this status, updated at `at`.
fn appointment_update(webhook_id: &str, status: &str, at: &str, start: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture(
        "gohighlevel/fixtures/AppointmentUpdate-showed.json",
    ))
    .unwrap();
    v["webhookId"] = webhook_id.into();
    v["appointment"]["appointmentStatus"] = status.into();
    v["appointment"]["dateUpdated"] = at.into();
    v["appointment"]["startTime"] = start.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn attendance_ends_right_whatever_the_order_of_updates() {
    let booked = appointment_update(
        "w-booked",
        "confirmed",
        "2026-12-01T10:00:00Z",
        "2026-12-03T10:00:00-05:00",
    );
    let noshow = appointment_update(
        "w-noshow",
        "noshow",
        "2026-12-03T16:00:00Z",
        "2026-12-03T10:00:00-05:00",
    );
    let stale = appointment_update(
        "w-stale",
        "confirmed",
        "2026-12-02T09:00:00Z",
        "2026-12-03T10:00:00-05:00",
    );
    let reschedule = appointment_update(
        "w-resched",
        "confirmed",
        "2026-12-04T09:00:00Z",
        "2026-12-10T10:00:00-05:00",
    );

    let cases: Vec<(&str, Vec<&Vec<u8>>, v1::Stage, &str)> = vec![
        (
            "in order",
            vec![&booked, &noshow],
            v1::Stage::NoShow,
            "2026-12-03T15:00:00Z",
        ),
        (
            "no-show first",
            vec![&noshow, &booked],
            v1::Stage::NoShow,
            "2026-12-03T15:00:00Z",
        ),
        (
            "an older confirmed after the no-show",
            vec![&noshow, &stale, &booked],
            v1::Stage::NoShow,
            "2026-12-03T15:00:00Z",
        ),
        (
            "a newer reschedule wins",
            vec![&booked, &noshow, &reschedule],
            v1::Stage::Booked,
            "2026-12-10T15:00:00Z",
        ),
        (
            "the reschedule first",
            vec![&reschedule, &noshow, &stale, &booked],
            v1::Stage::Booked,
            "2026-12-10T15:00:00Z",
        ),
    ];
    for (name, order, stage, start) in cases {
        let stack = stack().await;
        for body in order {
            assert_eq!(
                post_signed(&stack, body.clone()).await.status,
                200,
                "{name}"
            );
        }
        let c = lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN")).await;
        assert_eq!(c.stage(), stage, "{name}");
        let start_time = c.appointment.unwrap().start_time.unwrap();
        assert_eq!(
            start_time.seconds,
            start.parse::<jiff::Timestamp>().unwrap().as_second(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn workflow_webhooks_need_the_token_and_fill_in_the_contact() {
    let stack = stack().await;
    let body = fixture("gohighlevel/fixtures/workflow-webhook-appointment-booked.json");
    let bearer = format!("Bearer {WORKFLOW_TOKEN}");
    let refused: Vec<(&str, String, Headers)> = vec![
        ("missing", "/webhooks/ghl-workflow".into(), vec![]),
        (
            "bad header",
            "/webhooks/ghl-workflow".into(),
            vec![("authorization", "Bearer nope")],
        ),
        (
            "bad query",
            "/webhooks/ghl-workflow?token=nope".into(),
            vec![],
        ),
        (
            "a GHL signature is not a token",
            "/webhooks/ghl-workflow".into(),
            vec![("x-ghl-signature", "N/A")],
        ),
    ];
    for (name, path, headers) in refused {
        let reply = stack
            .http
            .post(&stack.edge.url(&path), body.clone(), &headers)
            .await;
        assert_eq!(reply.status, 401, "{name}");
    }
    assert_eq!(stack.redis.dbsize().await, 0);

    let by_header = stack
        .http
        .post(
            &stack.edge.url("/webhooks/ghl-workflow"),
            body.clone(),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(
        (by_header.status, by_header.json()["status"].as_str()),
        (200, Some("applied"))
    );
    // The same body again is the same event (its id is the body's SHA-256).
    let by_query = stack
        .http
        .post(
            &stack
                .edge
                .url(&format!("/webhooks/ghl-workflow?token={WORKFLOW_TOKEN}")),
            body,
            &[],
        )
        .await;
    assert_eq!(
        (by_query.status, by_query.json()["status"].as_str()),
        (200, Some("duplicate"))
    );
    for name in [
        "workflow-webhook-appointment-showed.json",
        "workflow-webhook-contact-created.json",
        "workflow-custom-webhook.json",
    ] {
        let reply = stack
            .http
            .post(
                &stack.edge.url("/webhooks/ghl-workflow"),
                fixture(&format!("gohighlevel/fixtures/{name}")),
                &[("authorization", &bearer)],
            )
            .await;
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        assert_eq!(reply.json()["status"], "applied", "{name}");
    }
    let jordan = lookup(
        &stack,
        v1::lookup_contact_request::Key::Phone("555-010-0199".into()),
    )
    .await;
    assert_eq!(jordan.email, "jordan.avery@example.com");
    assert_eq!(jordan.phone, "+15550100199");
    assert_eq!(jordan.stage(), v1::Stage::Attended);
    let appointment = jordan.appointment.unwrap();
    assert_eq!(appointment.status(), v1::AppointmentStatus::Attended);
    // 10:00 in America/New_York on 3 December is 15:00 UTC.
    assert_eq!(
        appointment.start_time.unwrap().seconds,
        "2026-12-03T15:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    );
    let sam = lookup(&stack, ghl_id("tO2oSoJGr297EYx8ZXnd")).await;
    assert_eq!(sam.email, "sam.okafor@example.com");
}

#[tokio::test]
async fn a_ghl_contact_links_an_appointment_only_contact_and_a_stripe_buyer() {
    // Three events about one person from two providers; the linking one may come last.
    let appointment = compact("AppointmentUpdate-showed.json");
    let contact = compact("ContactCreate.json");
    let checkout = stripe_checkout("evt_jordan", "JORDAN.AVERY@example.com", 9900, "pi_jordan");
    for order in [[0, 1, 2], [0, 2, 1], [2, 0, 1], [1, 2, 0]] {
        let stack = stack().await;
        for i in order {
            let reply = match i {
                0 => post_signed(&stack, appointment.clone()).await,
                1 => post_signed(&stack, contact.clone()).await,
                _ => stack.post_stripe(&checkout).await,
            };
            assert_eq!(reply.json()["status"], "applied", "{order:?}");
        }
        let by_ghl = lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN")).await;
        let by_email = lookup(
            &stack,
            v1::lookup_contact_request::Key::Email("jordan.avery@example.com".into()),
        )
        .await;
        assert_eq!(by_ghl.id, by_email.id, "{order:?}: one contact");
        if order[2] == 1 {
            // The appointment's contact and the buyer existed apart until the link.
            assert_eq!(by_ghl.merged_ids.len(), 1, "{order:?}: {by_ghl:?}");
        }
        assert_eq!(by_ghl.stage(), v1::Stage::Purchased);
        assert_eq!(
            by_ghl.appointment.unwrap().status(),
            v1::AppointmentStatus::Attended
        );
        assert_eq!(by_ghl.totals[0].purchased, 9900);
        // Every absorbed id still resolves to the survivor.
        for merged in &by_ghl.merged_ids {
            let got = stack.contacts.get_contact(merged).await.expect("resolves");
            assert_eq!(got.id, by_ghl.id);
        }
    }
}

#[tokio::test]
async fn two_ghl_contacts_sharing_an_email_stay_apart_and_the_conflict_is_logged() {
    let stack = stack().await;
    let first = compact("ContactCreate.json");
    let mut second: serde_json::Value = serde_json::from_slice(&first).unwrap();
    second["id"] = "SecondGhlContactId01".into();
    second["phone"] = "+15550100150".into();
    second["webhookId"] = "7c1f0e7e-0000-4000-8000-000000000002".into();
    assert_eq!(post_signed(&stack, first).await.json()["status"], "applied");
    let reply = post_signed(&stack, serde_json::to_vec(&second).unwrap()).await;
    assert_eq!(reply.json()["status"], "applied");
    assert!(
        reply.json()["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("conflict")),
        "{:?}",
        reply.body
    );

    let a = lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN")).await;
    let b = lookup(&stack, ghl_id("SecondGhlContactId01")).await;
    assert_ne!(a.id, b.id);
    assert_eq!(
        b.email, "jordan.avery@example.com",
        "both keep the email they were given"
    );
    let log = stack.contacts.contact_events(&b.id).await;
    assert_eq!(log.len(), 1);
    assert!(log[0].notes.iter().any(|n| n.contains("conflict")));
    // Filters of the webhook log.
    let mut grpc = stack.contacts.client().await;
    let by_source = grpc
        .list_events(v1::ListEventsRequest {
            source: "ghl".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(by_source.len(), 2);
    let ignored = stack
        .contacts
        .events(v1::ListEventsRequest {
            outcome: v1::EventOutcome::Ignored.into(),
            ..Default::default()
        })
        .await;
    assert!(ignored.is_empty());
}

/// One GHL key signs every app's webhooks: an authentic event of another app, or of a
/// location the source does not list, is acknowledged (GHL would retry anything else),
/// recorded with its body, and changes no contact, whether it names a new one or an
/// existing one.
#[tokio::test]
async fn events_of_another_app_or_location_are_recorded_and_change_nothing() {
    let stack = stack().await;
    let jordan_created = compact("ContactCreate.json");
    assert_eq!(
        post_signed(&stack, jordan_created).await.json()["status"],
        "applied"
    );
    let before = lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN")).await;

    /// A fixture re-addressed to another tenant, as its own delivery, with new content.
    fn foreign(name: &str, webhook_id: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&compact(name)).unwrap();
        v["webhookId"] = webhook_id.into();
        v["email"] = "mallory@example.com".into();
        v["firstName"] = "Mallory".into();
        v["dateUpdated"] = "2027-01-01T00:00:00.000Z".into();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }
    // (name, body, contact it names, whether that contact exists, the reason)
    let cases = [
        (
            "another app's update of an existing contact",
            foreign("ContactUpdate.json", "w-other-app", |v| {
                v["appId"] = OTHER_APP.into();
                v["id"] = "P4FmErxTM1cHho4PAAAN".into();
            }),
            "P4FmErxTM1cHho4PAAAN",
            true,
            "not for this app/location: appId is not the configured app_id",
        ),
        (
            "an unlisted location's new contact",
            foreign("ContactUpdate.json", "w-other-location", |v| {
                v["locationId"] = OTHER_LOCATION.into();
            }),
            "vkYfQv9NomBbjl2y4y5q",
            false,
            "not for this app/location: location is not in location_ids",
        ),
        (
            "an event without appId",
            foreign("ContactUpdate.json", "w-no-app", |v| {
                v.as_object_mut().unwrap().remove("appId");
            }),
            "vkYfQv9NomBbjl2y4y5q",
            false,
            "not for this app/location: the event has no appId",
        ),
    ];
    for (name, body, contact, exists, reason) in &cases {
        let reply = post_signed(&stack, body.clone()).await;
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        let json = reply.json();
        assert_eq!(json["status"], "ignored", "{name}: {json}");
        assert_eq!(json["reason"], *reason, "{name}");
        for tenant in [OTHER_APP, OTHER_LOCATION] {
            assert!(!json.to_string().contains(tenant), "{name}: {json}");
        }
        if *exists {
            let after = lookup(&stack, ghl_id(contact)).await;
            assert_eq!(after, before, "{name}: the contact changed");
        } else {
            let mut grpc = stack.contacts.client().await;
            let status = grpc
                .lookup_contact(v1::LookupContactRequest {
                    key: Some(ghl_id(contact)),
                    phone_region: String::new(),
                })
                .await
                .expect_err(name);
            assert_eq!(status.code(), tonic::Code::NotFound, "{name}: {status}");
        }
    }
    let mallory = stack.contacts.lookup_email("mallory@example.com").await;
    assert_eq!(
        mallory.map_err(|s| s.code()),
        Err(tonic::Code::NotFound),
        "no contact holds the foreign events' email"
    );

    // Each is in the webhook log, ignored, with its reason and the exact body received.
    let ignored = stack
        .contacts
        .events(v1::ListEventsRequest {
            source: "ghl".into(),
            outcome: v1::EventOutcome::Ignored.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(ignored.len(), cases.len(), "{ignored:?}");
    for (name, body, _, _, reason) in &cases {
        let record = ignored
            .iter()
            .find(|r| r.body == *body)
            .unwrap_or_else(|| panic!("{name}: not in the log with its body"));
        assert_eq!(record.reason, *reason, "{name}");
        assert_eq!(record.contact_id, "", "{name}");
    }
}

/// The edge types an event even when it names no contact it can find; contacts-svc,
/// having checked the fields, is the one place that decides "no contact identifiers".
#[tokio::test]
async fn events_without_contact_identifiers_are_ignored_by_contacts_svc() {
    let stack = stack().await;
    let mut appointment: serde_json::Value =
        serde_json::from_slice(&compact("AppointmentUpdate-showed.json")).unwrap();
    appointment["appointment"]
        .as_object_mut()
        .unwrap()
        .remove("contactId");
    let marketplace = post_signed(&stack, serde_json::to_vec(&appointment).unwrap()).await;
    let workflow = post(
        &stack,
        "ghl-workflow",
        br#"{"first_name":"Nobody","email":"not an email"}"#.to_vec(),
        &[("authorization", &format!("Bearer {WORKFLOW_TOKEN}"))],
    )
    .await;
    for (name, reply) in [("marketplace", marketplace), ("workflow", workflow)] {
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        let json = reply.json();
        assert_eq!(json["status"], "ignored", "{name}: {json}");
        assert!(
            json["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no contact identifiers")),
            "{name}: {json}"
        );
    }
}

#[tokio::test]
async fn a_workflow_booking_repeated_after_its_dedup_window_takes_effect_again() {
    // Workflow bodies carry no id: a body's digest deduplicates it within one second.
    let stack = Stack::start_with_sources(&format!(
        "[sources.ghl-workflow]\nkind = \"gohighlevel-workflow\"\n\
         token = \"{WORKFLOW_TOKEN}\"\ndedup_window_secs = 1\n"
    ))
    .await;
    let booked = fixture("gohighlevel/fixtures/workflow-webhook-appointment-booked.json");
    let mut cancelled: serde_json::Value = serde_json::from_slice(&booked).unwrap();
    cancelled["calendar"]["appoinmentStatus"] = "cancelled".into();
    let cancelled = serde_json::to_vec(&cancelled).unwrap();
    let url = stack.edge.url("/webhooks/ghl-workflow");
    let bearer = format!("Bearer {WORKFLOW_TOKEN}");
    let send = |body: &[u8]| {
        let (url, body, bearer) = (url.clone(), body.to_vec(), bearer.clone());
        let http = stack.http.clone();
        async move {
            let reply = http.post(&url, body, &[("authorization", &bearer)]).await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            reply.json()["status"].as_str().unwrap().to_owned()
        }
    };
    let status = || async {
        lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN"))
            .await
            .appointment
            .unwrap()
            .status()
    };

    assert_eq!(send(&booked).await, "applied");
    // The sender's retry inside the window is a duplicate.
    assert_eq!(send(&booked).await, "duplicate");
    assert_eq!(send(&cancelled).await, "applied");
    assert_eq!(status().await, v1::AppointmentStatus::Cancelled);
    // Booked again, byte for byte as the first time: once the window has passed, it
    // takes effect, and the appointment ends booked.
    eventually(Duration::from_secs(10), "the repeat to apply", || async {
        (send(&booked).await == "applied").then_some(())
    })
    .await;
    assert_eq!(status().await, v1::AppointmentStatus::Booked);
    // Both bookings are in the log, each under its own occurrence.
    let log = stack
        .contacts
        .contact_events(&lookup(&stack, ghl_id("P4FmErxTM1cHho4PAAAN")).await.id)
        .await;
    assert_eq!(log.len(), 3, "{log:?}");
}
