use std::path::Path;

use hookline_proto::prost_types::Timestamp;
use serde_json::json;

use super::*;
use crate::secret::Resolver;
use crate::sources::Setup;

const RECEIVED_MS: i64 = 1_800_000_000_000;

/// The mapping of a source named `acme` whose `map` and `actions` are in `toml`, or
/// every problem, one per line.
fn mapping(toml: &str) -> Result<Mapping, String> {
    let table: toml::Table = toml.parse().expect("toml");
    let map = table.get("map").and_then(toml::Value::as_table).cloned();
    let actions = table
        .get("actions")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_table().expect("a table").clone())
                .collect()
        });
    let env = |_: &str| None;
    let resolver = Resolver::new(Path::new("."), &env);
    let mut setup = Setup::new("acme", &resolver);
    let built = Mapping::from_config(map, actions, Defaults::default(), &mut setup);
    match built {
        Some(m) if setup.problems.is_empty() => Ok(m),
        _ => Err(setup.problems.to_string()),
    }
}

fn event(m: &Mapping, body: &serde_json::Value, type_hint: Option<&str>) -> v1::WebhookEvent {
    let body = body.to_string();
    m.event(
        Given {
            source: "acme",
            kind: "hmac",
            id: "evt_1",
            event_type: type_hint,
            occurred_at_ms: None,
            received_at_ms: RECEIVED_MS,
        },
        body.as_bytes(),
    )
}

/// The reason of an ignored event; panics on any other.
fn ignored(e: &v1::WebhookEvent) -> &str {
    match &e.payload {
        Some(Payload::Ignored(i)) => {
            assert!(e.raw_body.is_some(), "an ignored event keeps its body");
            &i.reason
        }
        other => panic!("not ignored: {other:?}"),
    }
}

fn ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

const PERSON: &str = r#"
[map]
email = "/data/email"
phone = "/data/phone"
first_name = "/data/first"
last_name = "/data/last"
name = "/data/name"
phone_region = "/data/country"
external_id = "/data/id"
occurred_at = "/at"
event_type = "/kind"
"#;

#[test]
fn the_person_the_time_and_the_type() {
    let m = mapping(PERSON).expect("valid");
    let body = json!({
        "kind": "customer.updated",
        "at": "2026-12-04T10:00:00Z",
        "data": {
            "email": " Ada@Example.com ", "phone": "020 7946 0958", "first": "Ada",
            "last": "Lovelace", "name": "Ada Lovelace", "country": "gb", "id": 42
        }
    });
    let e = event(&m, &body, None);
    assert_eq!(e.id, "acme:evt_1");
    assert_eq!(e.source, "acme");
    assert_eq!(e.kind, "hmac");
    assert_eq!(e.r#type, "customer.updated");
    assert_eq!(ms(e.occurred_at), Some(1_796_378_400_000));
    assert_eq!(ms(e.received_at), Some(RECEIVED_MS));
    assert!(matches!(e.payload, Some(Payload::ContactUpserted(_))));
    let c = e.contact.expect("contact");
    assert_eq!(c.email.as_deref(), Some("Ada@Example.com"));
    assert_eq!(c.phone.as_deref(), Some("020 7946 0958"));
    assert_eq!(c.phone_region, "GB");
    assert_eq!(
        (
            c.first_name.as_deref(),
            c.last_name.as_deref(),
            c.name.as_deref()
        ),
        (Some("Ada"), Some("Lovelace"), Some("Ada Lovelace"))
    );
    // The system defaults to the source's name; a number is an id too.
    assert_eq!(
        c.external_ids,
        vec![v1::ExternalId {
            system: "acme".into(),
            id: "42".into()
        }]
    );
    assert_eq!(e.raw_body, None);

    // Times as epoch seconds and milliseconds; a missing one is the receipt's.
    for (at, want) in [
        (json!(1_796_378_400), 1_796_378_400_000),
        (json!(1_796_378_400_250_i64), 1_796_378_400_250),
        (json!("not a time"), RECEIVED_MS),
        (json!(null), RECEIVED_MS),
    ] {
        let e = event(&m, &json!({ "at": at, "data": {} }), None);
        assert_eq!(ms(e.occurred_at), Some(want), "{at}");
    }
    // Absent fields say nothing; the type falls back to the provider's (a header).
    let e = event(
        &m,
        &json!({ "data": { "email": "a@example.com" } }),
        Some("ping"),
    );
    assert_eq!(e.r#type, "ping");
    let c = e.contact.expect("contact");
    assert_eq!((c.phone, c.name, c.external_ids.len()), (None, None, 0));
    // The system can be named.
    let m =
        mapping("[map]\nexternal_id = \"/id\"\nexternal_id_system = \"acme_user\"").expect("valid");
    let c = event(&m, &json!({ "id": "u_1" }), None)
        .contact
        .expect("contact");
    assert_eq!(c.external_ids[0].system, "acme_user");
}

#[test]
fn what_cannot_be_read_is_ignored_with_its_body() {
    let m = mapping(PERSON).expect("valid");
    for (body, reason) in [
        (&b"not json"[..], "body is not JSON"),
        (&b"[1, 2]"[..], "body is not a JSON object"),
        (&b""[..], "body is not JSON"),
    ] {
        let e = m.event(
            Given {
                source: "acme",
                kind: "hmac",
                id: "evt_1",
                event_type: Some("t"),
                occurred_at_ms: None,
                received_at_ms: RECEIVED_MS,
            },
            body,
        );
        assert!(ignored(&e).starts_with(reason), "{}", ignored(&e));
        assert_eq!(e.id, "acme:evt_1");
        assert_eq!(e.r#type, "t");
        assert_eq!(e.raw_body.as_deref(), Some(body));
    }
}

const SHOP: &str = r#"
[map]
email = "/email"
event_type = "/topic"

[[actions]]
types = ["orders/paid"]
do = "purchase"
purchase_id = "/order_id"
amount = "/total"
amount_unit = "major"
currency = "/currency"
description = "/title"

[[actions]]
types = ["refunds/*"]
do = "refund"
refund_id = "/id"
purchase_id = "/order_id"
amount = "/amount"
currency_value = "USD"

[[actions]]
types = ["customers/tagged"]
do = "add_tags"
tags = "/tags"
tags_value = ["customer"]

[[actions]]
types = ["customers/untagged"]
do = "remove_tags"
tags = "/tag"

[[actions]]
types = ["bookings/created", "bookings/changed"]
do = "appointment"
appointment_id = "/booking/id"
status = "/booking/state"
status_value = "booked"
statuses = { "Showed Up" = "attended", gone = "cancelled" }
start_time = "/booking/start"
end_time = "/booking/end"
title = "/booking/title"
calendar_id = "/booking/calendar"

[[actions]]
types = ["customers/*"]
do = "contact"
"#;

#[test]
fn actions_chosen_by_type() {
    let m = mapping(SHOP).expect("valid");
    let purchase = |e: &v1::WebhookEvent| match &e.payload {
        Some(Payload::PurchaseCompleted(p)) => p.clone(),
        other => panic!("not a purchase: {other:?}"),
    };
    // Major units by the currency's exponent; the purchase id is a payment reference.
    let e = event(
        &m,
        &json!({"topic": "orders/paid", "email": "a@example.com", "order_id": 820982911946154508_u64,
                "total": "403.10", "currency": "USD", "title": "Order #1001"}),
        None,
    );
    let p = purchase(&e);
    assert_eq!(
        (
            p.purchase_id.as_str(),
            p.amount,
            p.currency.as_str(),
            p.description.as_str()
        ),
        ("820982911946154508", 40310, "usd", "Order #1001")
    );
    assert_eq!(
        e.contact.expect("contact").payment_refs,
        vec!["820982911946154508".to_owned()]
    );
    let yen = event(
        &m,
        &json!({"topic": "orders/paid", "order_id": "o2", "total": 4900, "currency": "jpy"}),
        None,
    );
    assert_eq!(purchase(&yen).amount, 4900);

    // A refund (by prefix) finds its purchase through the reference; the constant
    // currency stands in.
    let e = event(
        &m,
        &json!({"topic": "refunds/create", "id": "re_9", "order_id": "o2", "amount": 1500}),
        None,
    );
    match &e.payload {
        Some(Payload::RefundUpdated(r)) => {
            assert_eq!(
                (r.refund_id.as_str(), r.amount, r.currency.as_str()),
                ("re_9", 1500, "usd")
            );
            assert_eq!(r.status(), v1::RefundStatus::Succeeded);
        }
        other => panic!("not a refund: {other:?}"),
    }
    assert_eq!(
        e.contact.expect("contact").payment_refs,
        vec!["o2".to_owned()]
    );

    // Tags: an array, a comma-separated string, the constant when the pointer finds none.
    let tagged = |body: serde_json::Value| {
        let c = event(&m, &body, None).contact.expect("contact");
        (c.add_tags, c.remove_tags)
    };
    assert_eq!(
        tagged(json!({"topic": "customers/tagged", "tags": ["vip", " gold "]})),
        (vec!["vip".to_owned(), "gold".to_owned()], vec![])
    );
    assert_eq!(
        tagged(json!({"topic": "customers/tagged", "tags": "vip, gold"})),
        (vec!["vip".to_owned(), "gold".to_owned()], vec![])
    );
    assert_eq!(
        tagged(json!({"topic": "customers/tagged"})),
        (vec!["customer".to_owned()], vec![])
    );
    assert_eq!(
        tagged(json!({"topic": "customers/untagged", "tag": "vip"})),
        (vec![], vec!["vip".to_owned()])
    );

    // Appointments: the sender's words, the known ones, the constant.
    let appointment = |state: serde_json::Value| {
        let e = event(
            &m,
            &json!({"topic": "bookings/changed", "booking": {
                "id": "b1", "state": state, "start": 1_796_378_400, "end": "2026-12-04T10:30:00Z",
                "title": "Intro call", "calendar": "cal_1"}}),
            None,
        );
        match e.payload {
            Some(Payload::AppointmentUpdated(a)) => Ok(a),
            _ => Err(ignored(&e).to_owned()),
        }
    };
    let a = appointment(json!("Showed Up")).expect("an appointment");
    assert_eq!(a.appointment_id, "b1");
    assert_eq!(a.status(), v1::AppointmentStatus::Attended);
    assert_eq!(ms(a.start_time), Some(1_796_378_400_000));
    assert_eq!(ms(a.end_time), Some(1_796_380_200_000));
    assert_eq!(
        (a.title.as_str(), a.calendar_id.as_str()),
        ("Intro call", "cal_1")
    );
    for (state, want) in [
        (json!("no-show"), v1::AppointmentStatus::NoShow),
        (json!("CANCELED"), v1::AppointmentStatus::Cancelled),
        (json!("gone"), v1::AppointmentStatus::Cancelled),
        (json!("confirmed"), v1::AppointmentStatus::Booked),
        (json!(null), v1::AppointmentStatus::Booked),
    ] {
        assert_eq!(
            appointment(state.clone()).map(|a| a.status()),
            Ok(want),
            "{state}"
        );
    }
    assert_eq!(
        appointment(json!("maybe")).map(|a| a.status()),
        Err(
            "the status at /booking/state is not one hookline knows (map it in statuses to one \
             of: booked, attended, no_show, cancelled)"
                .to_owned()
        )
    );

    // The first action that takes the type wins; an untaken type is ignored.
    let e = event(
        &m,
        &json!({"topic": "customers/update", "email": "a@example.com"}),
        None,
    );
    assert!(matches!(e.payload, Some(Payload::ContactUpserted(_))));
    let e = event(&m, &json!({"topic": "orders/create"}), None);
    assert_eq!(
        ignored(&e),
        "event type \"orders/create\" matches no action"
    );
    let e = event(&m, &json!({}), None);
    assert_eq!(ignored(&e), "event type \"\" matches no action");
}

#[test]
fn a_value_an_action_needs_is_missing_or_unreadable() {
    let m = mapping(SHOP).expect("valid");
    for (body, reason) in [
        (
            json!({"topic": "orders/paid", "total": "1.00", "currency": "usd"}),
            "no id at /order_id",
        ),
        (
            json!({"topic": "orders/paid", "order_id": "o", "currency": "usd"}),
            "no amount at /total",
        ),
        (
            json!({"topic": "orders/paid", "order_id": "o", "total": "ten", "currency": "usd"}),
            "the amount at /total is not a number in major units",
        ),
        (
            json!({"topic": "orders/paid", "order_id": "o", "total": "1.00"}),
            "no currency at /currency",
        ),
        (
            json!({"topic": "refunds/create", "id": "re", "order_id": "o", "amount": 1.5}),
            "the amount at /amount is not a number in minor units",
        ),
        (
            json!({"topic": "orders/paid", "order_id": "o", "total": "1.00", "currency": 840}),
            "the currency at /currency is not an ISO 4217 code",
        ),
        (
            json!({"topic": "orders/paid", "order_id": "o", "total": "1.00", "currency": "US Dollar"}),
            "the currency at /currency is not an ISO 4217 code",
        ),
        (
            json!({"topic": "refunds/create", "id": "re", "order_id": "o", "amount": -500}),
            "the amount at /amount is negative",
        ),
        (json!({"topic": "customers/untagged"}), "no tag at /tag"),
        (
            json!({"topic": "bookings/created", "booking": {"state": "booked"}}),
            "no id at /booking/id",
        ),
    ] {
        let e = event(&m, &body, None);
        assert_eq!(ignored(&e), reason, "{body}");
    }
}

#[test]
fn configuration_problems() {
    fn check(toml: &str, want: &[&str]) {
        crate::problem::assert_problems(mapping(toml), want, toml);
    }
    let pointer = |key: &str, p: &str| {
        format!(
            "sources.acme.{key}: {p:?} is not a JSON Pointer to a field (RFC 6901): it starts \
             with '/', and '~' is written '~0' and '/' in a key '~1', e.g. \"/data/email\""
        )
    };
    check("", &[]);
    check(SHOP, &[]);
    // Types are trimmed as the event's type is.
    let m = mapping("[[actions]]\ntypes = [\" orders/paid \"]\ndo = \"contact\"").expect("valid");
    assert!(matches!(
        event(&m, &json!({}), Some("orders/paid")).payload,
        Some(Payload::ContactUpserted(_))
    ));
    check(
        "[map]\nemail = \"data/email\"\nphone = \"/a~2\"",
        &[
            &pointer("map.email", "data/email"),
            &pointer("map.phone", "/a~2"),
        ],
    );
    check(
        "[map]\nemial = \"/email\"",
        &[
            "sources.acme.map.emial: unknown key (known: email, phone, first_name, last_name, \
           name, phone_region, external_id, external_id_system, occurred_at, event_type)",
        ],
    );
    check(
        "[map]\nexternal_id_system = \"acme\"",
        &[
            "sources.acme.map.external_id_system: names the system of external_id, which is \
           not set",
        ],
    );
    check(
        "[map]\nexternal_id = \"/id\"\nexternal_id_system = \"Acme User\"",
        &[
            "sources.acme.map.external_id_system: \"Acme User\" is not 1 to 64 of a-z, 0-9, '_' \
           and '-'",
        ],
    );
    check(
        "[[actions]]\ntypes = []\n",
        &[
            "sources.acme.actions[0].do: is required, one of: contact, purchase, refund, \
             add_tags, remove_tags, appointment",
        ],
    );
    check(
        "[[actions]]\ndo = \"purchase\"\ntypes = [\"\"]\n[[actions]]\ndo = \"upsert\"\n[[actions]]\ndo = \"contact\"\namount = \"/a\"\nstatuses = { a = \"b\" }",
        &[
            "sources.acme.actions[0].types[0]: is empty",
            "sources.acme.actions[0].purchase_id: is required by a \"purchase\" action (a JSON \
             Pointer)",
            "sources.acme.actions[0].amount: is required by a \"purchase\" action (a JSON \
             Pointer)",
            "sources.acme.actions[0].currency: is required by a \"purchase\" action: a JSON \
             Pointer, or currency_value for a fixed currency",
            "sources.acme.actions[1].do: unknown action \"upsert\" (known: contact, purchase, \
             refund, add_tags, remove_tags, appointment)",
            "sources.acme.actions[2].amount: is not used by a \"contact\" action",
            "sources.acme.actions[2].statuses: is not used by a \"contact\" action",
        ],
    );
    check(
        "[[actions]]\ndo = \"refund\"\nrefund_id = \"/id\"\namount = \"/a\"\namount_unit = \"cents\"\ncurrency_value = \"dollars\"",
        &[
            "sources.acme.actions[0].amount_unit: \"cents\" is not \"minor\" (cents: 4900) or \
             \"major\" (units: \"49.00\")",
            "sources.acme.actions[0].currency_value: \"dollars\" is not an ISO 4217 code such \
             as \"usd\"",
        ],
    );
    check(
        "[[actions]]\ndo = \"add_tags\"\n[[actions]]\ndo = \"remove_tags\"\ntags_value = [\" \"]",
        &[
            "sources.acme.actions[0].tags: is required: a JSON Pointer to a tag or a list of \
             tags, or tags_value for fixed tags",
            "sources.acme.actions[1].tags_value: holds an empty tag",
        ],
    );
    check(
        "[[actions]]\ndo = \"appointment\"\nappointment_id = \"/id\"\nstatus_value = \"done\"\n\
         [[actions]]\ndo = \"appointment\"\nappointment_id = \"/id\"\nstatuses = { x = \"maybe\" }\n\
         [[actions]]\ndo = \"appointment\"\nappointment_id = \"/id\"\nstatus = \"/s\"\nbogus = 1",
        &[
            "sources.acme.actions[0].status_value: \"done\" is not one of: booked, attended, \
             no_show, cancelled",
            "sources.acme.actions[1].statuses.x: \"maybe\" is not one of: booked, attended, \
             no_show, cancelled",
            "sources.acme.actions[1].status: is required by an \"appointment\" action: a JSON \
             Pointer, or status_value for a fixed status",
            "sources.acme.actions[2].bogus: unknown key (known: types, do, purchase_id, \
             refund_id, amount, amount_unit, currency, currency_value, description, tags, \
             tags_value, appointment_id, status, status_value, statuses, start_time, \
             end_time, title, calendar_id)",
        ],
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A JSON value of a few levels, of the shapes payloads hold.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "topic", "order_id", "total", "currency", "id", "amount", "tags", "tag",
                        "booking", "state", "start", "email", "0",
                    ]),
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// Whatever the payload, the mapping answers with an event under the given id: an
        /// effect, or ignored with the body.
        #[test]
        fn any_payload_makes_an_event(value in json_value(), topic in prop::sample::select(vec![
            "orders/paid", "refunds/create", "customers/tagged", "customers/untagged",
            "bookings/created", "customers/x", "other",
        ])) {
            let m = mapping(SHOP).expect("valid");
            let mut body = serde_json::json!({ "topic": topic });
            if let serde_json::Value::Object(fields) = value {
                body.as_object_mut().expect("object").extend(fields);
            }
            let e = event(&m, &body, None);
            prop_assert_eq!(&e.id, "acme:evt_1");
            if let Some(Payload::Ignored(_)) = e.payload {
                prop_assert!(e.raw_body.is_some());
            }
        }

        #[test]
        fn any_bytes_make_an_event(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let m = mapping(SHOP).expect("valid");
            let e = m.event(
                Given {
                    source: "acme",
                    kind: "hmac",
                    id: "evt_1",
                    event_type: None,
                    occurred_at_ms: None,
                    received_at_ms: RECEIVED_MS,
                },
                &body,
            );
            prop_assert_eq!(e.id, "acme:evt_1");
        }
    }
}
