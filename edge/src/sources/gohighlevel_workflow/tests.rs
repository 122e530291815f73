use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::config::{Args, Config};
use crate::sources::gohighlevel::tests::{at, ghl_contact_id, tags};
use crate::sources::{Delivery, Source, downcast, timestamp};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../../../tests/fixtures/gohighlevel/fixtures/",
            $name
        ))
    };
}

const SOURCE: &str = "ghl-workflow";
const RECEIVED_MS: i64 = 1_800_000_000_000;
/// Has characters that need percent-encoding in a URL.
const TOKEN: &str = "s3cr3t+/=token";

/// A source with the default options: no `id_pointer`, the default window.
fn workflow() -> GoHighLevelWorkflow {
    GoHighLevelWorkflow::new(TOKEN, Options::default())
}

#[test]
fn tokens() {
    struct Case {
        name: &'static str,
        headers: &'static [(&'static str, &'static str)],
        query: &'static str,
        want: Result<(), VerifyError>,
    }
    fn check(c: Case) {
        let mut headers = HeaderMap::new();
        for (name, value) in c.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static(value),
            );
        }
        let d = Delivery {
            headers: &headers,
            query: c.query,
            body: b"{}",
        };
        assert_eq!(
            GoHighLevelWorkflow::new(TOKEN, Options::default()).verify(d, 0),
            c.want,
            "{}",
            c.name
        );
    }
    let missing = || Err(VerifyError::MissingHeader("Authorization"));
    let cases = [
        Case {
            name: "bearer good",
            headers: &[("Authorization", "Bearer s3cr3t+/=token")],
            query: "",
            want: Ok(()),
        },
        Case {
            name: "bearer scheme in any case, extra spaces",
            headers: &[("authorization", "bearer    s3cr3t+/=token ")],
            query: "",
            want: Ok(()),
        },
        Case {
            name: "bearer bad",
            headers: &[("Authorization", "Bearer s3cr3t+/=tokem")],
            query: "",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "bearer prefix of the token",
            headers: &[("Authorization", "Bearer s3cr3t")],
            query: "",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "bearer token with a suffix",
            headers: &[("Authorization", "Bearer s3cr3t+/=token2")],
            query: "",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "bearer empty",
            headers: &[("Authorization", "Bearer ")],
            query: "",
            want: missing(),
        },
        Case {
            name: "basic scheme",
            headers: &[("Authorization", "Basic dXNlcjpwYXNz")],
            query: "",
            want: Err(VerifyError::Malformed(
                "Authorization is not a Bearer token",
            )),
        },
        Case {
            name: "duplicate authorization",
            headers: &[
                ("Authorization", "Bearer s3cr3t+/=token"),
                ("Authorization", "Bearer s3cr3t+/=token"),
            ],
            query: "",
            want: Err(VerifyError::DuplicateHeader("Authorization")),
        },
        Case {
            name: "nothing",
            headers: &[],
            query: "",
            want: missing(),
        },
        Case {
            name: "query good, percent-encoded",
            headers: &[],
            query: "token=s3cr3t%2B%2F%3Dtoken",
            want: Ok(()),
        },
        Case {
            name: "query good, '+' kept as '+', among other parameters",
            headers: &[],
            query: "location=abc&token=s3cr3t+/=token&x",
            want: Ok(()),
        },
        Case {
            name: "query bad",
            headers: &[],
            query: "token=s3cr3t",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "query with a space where the '+' was",
            headers: &[],
            query: "token=s3cr3t%20%2F%3Dtoken",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "query empty",
            headers: &[],
            query: "token=",
            want: missing(),
        },
        Case {
            name: "query parameter with another name",
            headers: &[],
            query: "tokens=s3cr3t%2B%2F%3Dtoken&t=s3cr3t%2B%2F%3Dtoken",
            want: missing(),
        },
        Case {
            name: "query twice",
            headers: &[],
            query: "token=s3cr3t%2B%2F%3Dtoken&token=s3cr3t%2B%2F%3Dtoken",
            want: Err(VerifyError::Malformed(
                "more than one token query parameter",
            )),
        },
        Case {
            name: "query bad percent-encoding",
            headers: &[],
            query: "token=%zz",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "both good",
            headers: &[("Authorization", "Bearer s3cr3t+/=token")],
            query: "token=s3cr3t%2B%2F%3Dtoken",
            want: Ok(()),
        },
        Case {
            name: "header good, query bad: every credential must match",
            headers: &[("Authorization", "Bearer s3cr3t+/=token")],
            query: "token=wrong",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "header bad, query good",
            headers: &[("Authorization", "Bearer wrong")],
            query: "token=s3cr3t%2B%2F%3Dtoken",
            want: Err(VerifyError::Mismatch),
        },
        Case {
            name: "a GHL signature header is no credential",
            headers: &[("X-GHL-Signature", "s3cr3t+/=token")],
            query: "",
            want: missing(),
        },
    ];
    for case in cases {
        check(case);
    }
}

fn parse_config(source_toml: &str) -> Result<Config, String> {
    let args = Args::for_file("edge.toml");
    let text = format!("[sources.ghl-workflow]\n{source_toml}");
    Config::parse(&text, Path::new("."), &args, &|name| {
        (name == "GHL_WORKFLOW_TOKEN").then(|| format!("{TOKEN}\n"))
    })
    .map_err(|e| e.to_string())
}

#[test]
fn config() {
    fn check(toml: &str, want: Result<(), &str>) {
        match (parse_config(toml), want) {
            (Ok(config), Ok(())) => {
                let source = config.sources.get("ghl-workflow").expect("the source");
                let Some(w) = downcast::<GoHighLevelWorkflow>(source.as_ref()) else {
                    panic!("{toml}: not a workflow source");
                };
                assert_eq!(source.retry_status(), http::StatusCode::TOO_MANY_REQUESTS);
                let debug = format!("{config:?}");
                assert!(!debug.contains("s3cr3t"), "{debug}");
                assert!(format!("{w:?}").contains("[redacted]"));
                // The environment's trailing newline is not part of the token.
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer s3cr3t+/=token"),
                );
                let d = Delivery {
                    headers: &headers,
                    query: "",
                    body: b"{}",
                };
                assert_eq!(source.verify(d, 0), Ok(()), "{toml}");
            }
            (Err(e), Err(want)) => assert!(e.starts_with(want), "{toml}: {e}"),
            (got, want) => panic!("{toml}: got {got:?}, want {want:?}"),
        }
    }
    check(
        "kind = \"gohighlevel-workflow\"\ntoken = \"env:GHL_WORKFLOW_TOKEN\"",
        Ok(()),
    );
    check(
        "kind = \"gohighlevel-workflow\"\ntoken = \"s3cr3t+/=token\"",
        Ok(()),
    );
    check(
        "kind = \"gohighlevel-workflow\"",
        Err("sources.ghl-workflow: missing field `token`"),
    );
    check(
        "kind = \"gohighlevel-workflow\"\ntoken = \"  \"",
        Err("sources.ghl-workflow.token: is empty"),
    );
    check(
        "kind = \"gohighlevel-workflow\"\ntoken = \"env:NOPE\"",
        Err("sources.ghl-workflow.token: environment variable NOPE is not set"),
    );
    check(
        "kind = \"gohighlevel-workflow\"\ntoken = \"x\"\napp_id = \"y\"",
        Err(
            "sources.ghl-workflow.app_id: unknown key (known: token, id_pointer, \
             dedup_window_secs)",
        ),
    );
}

#[test]
fn id_options_config() {
    /// `extra`: keys after `kind` and `token`; `want`: the options or the whole error.
    fn check(extra: &str, want: Result<Options, &str>) {
        let toml = format!("kind = \"gohighlevel-workflow\"\ntoken = \"t\"\n{extra}");
        let got = parse_config(&toml).map(|config| {
            let source = config.sources.get("ghl-workflow").expect("the source");
            downcast::<GoHighLevelWorkflow>(source.as_ref())
                .expect("a workflow source")
                .options
                .clone()
        });
        match (got, want) {
            (Err(got), Err(want)) if want.ends_with("id_pointer: ") => assert!(
                got.starts_with(want)
                    && got.contains("is not a JSON Pointer to a field (RFC 6901)"),
                "{extra}: {got}"
            ),
            (got, want) => assert_eq!(got, want.map_err(str::to_owned), "{extra}"),
        }
    }
    let options = |id_pointer: Option<&str>, dedup_window_secs| Options {
        id_pointer: id_pointer.map(str::to_owned),
        dedup_window_secs,
    };
    let bad_pointer = "sources.ghl-workflow.id_pointer: ";
    let bad_window =
        "sources.ghl-workflow.dedup_window_secs: must be between 1 and 2592000 (30 days)";
    let cases = [
        ("", Ok(options(None, 3600))),
        (
            "id_pointer = \"/customData/event_id\"",
            Ok(options(Some("/customData/event_id"), 3600)),
        ),
        (
            "id_pointer = \"/a~1b/c~0d/\"",
            Ok(options(Some("/a~1b/c~0d/"), 3600)),
        ),
        ("id_pointer = \"customData/event_id\"", Err(bad_pointer)),
        ("id_pointer = \"\"", Err(bad_pointer)),
        ("id_pointer = \"/a~2\"", Err(bad_pointer)),
        ("id_pointer = \"/a~\"", Err(bad_pointer)),
        ("dedup_window_secs = 1", Ok(options(None, 1))),
        ("dedup_window_secs = 2592000", Ok(options(None, 2_592_000))),
        ("dedup_window_secs = 0", Err(bad_window)),
        ("dedup_window_secs = -60", Err(bad_window)),
        ("dedup_window_secs = 2592001", Err(bad_window)),
        ("dedup_window_secs = 99999999999", Err(bad_window)),
    ];
    for (extra, want) in cases {
        check(extra, want);
    }
}

// Normalization.

fn event(
    body: &[u8],
    event_type: &str,
    contact: v1::ContactData,
    payload: Payload,
) -> v1::WebhookEvent {
    v1::WebhookEvent {
        id: format!("{SOURCE}:{}", body_digest_id(body)),
        source: SOURCE.to_owned(),
        kind: "gohighlevel-workflow".to_owned(),
        r#type: event_type.to_owned(),
        // Workflow payloads carry no change time: the receipt time orders them.
        occurred_at: Some(timestamp(RECEIVED_MS)),
        received_at: Some(timestamp(RECEIVED_MS)),
        contact: Some(contact),
        payload: Some(payload),
        // The fixtures carry no id: the digest's window goes with it.
        dedup_window_secs: DEFAULT_DEDUP_WINDOW_SECS,
        ..v1::WebhookEvent::default()
    }
}

fn jordan(tag_list: &[&str]) -> v1::ContactData {
    v1::ContactData {
        email: Some("jordan.avery@example.com".to_owned()),
        // The top-level E.164 phone wins over customData's "+1 555 010 0199".
        phone: Some("+15550100199".to_owned()),
        first_name: Some("Jordan".to_owned()),
        last_name: Some("Avery".to_owned()),
        name: Some("Jordan Avery".to_owned()),
        external_ids: ghl_contact_id("P4FmErxTM1cHho4PAAAN"),
        phone_region: "US".to_owned(),
        tags: tags(tag_list),
        dnd: None,
        payment_refs: vec![],
        ..v1::ContactData::default()
    }
}

fn discovery_call(status: v1::AppointmentStatus) -> Payload {
    Payload::AppointmentUpdated(v1::AppointmentUpdated {
        appointment_id: "FN1XdtXNMPqAXiuF3XRc".to_owned(),
        calendar_id: "1mof4efXgMxhV8az36a4".to_owned(),
        status: status.into(),
        // 10:00 in America/New_York on 2026-12-03 (EST, -05:00).
        start_time: Some(at("2026-12-03T15:00:00Z")),
        end_time: Some(at("2026-12-03T15:30:00Z")),
        title: "Discovery Call - Jordan Avery".to_owned(),
        deleted: false,
        start_time_inferred: true,
    })
}

#[test]
fn normalizes_every_fixture() {
    fn check(name: &str, body: &[u8], want: v1::WebhookEvent) {
        assert_eq!(
            workflow().normalize(SOURCE, Delivery::body_only(body), RECEIVED_MS),
            want,
            "{name}"
        );
    }
    let booked = fixture!("workflow-webhook-appointment-booked.json").as_slice();
    let showed = fixture!("workflow-webhook-appointment-showed.json").as_slice();
    let created = fixture!("workflow-webhook-contact-created.json").as_slice();
    let custom = fixture!("workflow-custom-webhook.json").as_slice();
    let cases = [
        (
            "appointment booked: naive local time in selectedTimezone, tags CSV",
            booked,
            event(
                booked,
                "appointment_booked",
                jordan(&["webinar-nov", "booked-call"]),
                discovery_call(v1::AppointmentStatus::Booked),
            ),
        ),
        (
            "appointment showed: appoinmentStatus (sic) wins over calendar.status",
            showed,
            event(
                showed,
                "appointment_status",
                jordan(&["webinar-nov", "booked-call", "showed"]),
                discovery_call(v1::AppointmentStatus::Attended),
            ),
        ),
        (
            "contact created: empty tags string is an empty list",
            created,
            event(
                created,
                "contact_created",
                v1::ContactData {
                    email: Some("sam.okafor@example.com".to_owned()),
                    phone: Some("+15550100117".to_owned()),
                    first_name: Some("Sam".to_owned()),
                    last_name: Some("Okafor".to_owned()),
                    name: Some("Sam Okafor".to_owned()),
                    external_ids: ghl_contact_id("tO2oSoJGr297EYx8ZXnd"),
                    phone_region: "US".to_owned(),
                    tags: tags(&[]),
                    dnd: None,
                    payment_refs: vec![],
                    ..v1::ContactData::default()
                },
                Payload::ContactUpserted(v1::ContactUpserted {}),
            ),
        ),
        (
            "custom webhook: free-form keys, phone passed through, merge-tag date",
            custom,
            event(
                custom,
                "appointment_status_changed",
                v1::ContactData {
                    email: Some("jordan.avery@example.com".to_owned()),
                    phone: Some("(555) 010-0199".to_owned()),
                    first_name: Some("Jordan".to_owned()),
                    last_name: Some("Avery".to_owned()),
                    external_ids: ghl_contact_id("P4FmErxTM1cHho4PAAAN"),
                    ..v1::ContactData::default()
                },
                Payload::AppointmentUpdated(v1::AppointmentUpdated {
                    appointment_id: "FN1XdtXNMPqAXiuF3XRc".to_owned(),
                    status: v1::AppointmentStatus::Attended.into(),
                    start_time: Some(at("2026-12-03T15:00:00Z")),
                    start_time_inferred: true,
                    ..v1::AppointmentUpdated::default()
                }),
            ),
        ),
    ];
    for (name, body, want) in cases {
        check(name, body, want);
    }
}

/// `fixture` with its JSON changed by `edit`.
fn edited(fixture: &[u8], edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(fixture).expect("fixture is JSON");
    edit(value.as_object_mut().expect("object"));
    serde_json::to_vec(&value).expect("serializes")
}

fn calendar_with(entries: &[(&'static str, Value)]) -> Vec<u8> {
    edited(fixture!("workflow-webhook-appointment-booked.json"), |m| {
        let c = m.get_mut("calendar").and_then(Value::as_object_mut);
        let c = c.expect("calendar");
        for (k, v) in entries {
            if v.is_null() {
                c.remove(*k);
            } else {
                c.insert((*k).to_owned(), v.clone());
            }
        }
    })
}

fn appointment(e: &v1::WebhookEvent) -> v1::AppointmentUpdated {
    match &e.payload {
        Some(Payload::AppointmentUpdated(a)) => a.clone(),
        other => panic!("not an appointment: {other:?}"),
    }
}

#[test]
fn times() {
    /// `want`: the start instant and whether it was inferred; `None`: unset.
    fn check(name: &str, body: Vec<u8>, want: Option<(&str, bool)>) {
        let a = appointment(&workflow().normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS));
        let got = a.start_time.map(|t| (t, a.start_time_inferred));
        let want = want.map(|(t, inferred)| (at(t), inferred));
        assert_eq!(got, want, "{name}");
    }
    use serde_json::json;
    let cases = [
        (
            "summer time in New York (-04:00)",
            calendar_with(&[("startTime", json!("2026-07-01T10:00:00"))]),
            Some(("2026-07-01T14:00:00Z", true)),
        ),
        (
            "Los Angeles",
            calendar_with(&[("selectedTimezone", json!("America/Los_Angeles"))]),
            Some(("2026-12-03T18:00:00Z", true)),
        ),
        (
            "Kolkata (+05:30)",
            calendar_with(&[("selectedTimezone", json!("Asia/Kolkata"))]),
            Some(("2026-12-03T04:30:00Z", true)),
        ),
        (
            "in the spring-forward gap: the time after it",
            calendar_with(&[("startTime", json!("2026-03-08T02:30:00"))]),
            Some(("2026-03-08T07:30:00Z", true)),
        ),
        (
            "in the fall-back fold: the first repetition",
            calendar_with(&[("startTime", json!("2026-11-01T01:30:00"))]),
            Some(("2026-11-01T05:30:00Z", true)),
        ),
        (
            "a time with an offset is exact",
            calendar_with(&[("startTime", json!("2026-12-03T10:00:00-05:00"))]),
            Some(("2026-12-03T15:00:00Z", false)),
        ),
        (
            "a time in UTC is exact",
            calendar_with(&[("startTime", json!("2026-12-03T15:00:00.000Z"))]),
            Some(("2026-12-03T15:00:00Z", false)),
        ),
        (
            "no selectedTimezone: the contact's timezone",
            calendar_with(&[("selectedTimezone", Value::Null)]),
            Some(("2026-12-03T15:00:00Z", true)),
        ),
        (
            "unknown zone: no start rather than a guess",
            calendar_with(&[("selectedTimezone", json!("Mars/Olympus_Mons"))]),
            None,
        ),
        (
            "unreadable time",
            calendar_with(&[("startTime", json!("soon"))]),
            None,
        ),
        (
            "no start time",
            calendar_with(&[("startTime", Value::Null)]),
            None,
        ),
    ];
    for (name, body, want) in cases {
        check(name, body, want);
    }
}

#[test]
fn field_variations() {
    fn check(name: &str, body: Vec<u8>, inspect: impl FnOnce(&v1::WebhookEvent)) {
        let got = workflow().normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS);
        assert!(
            !matches!(got.payload, Some(Payload::Ignored(_))),
            "{name}: {got:?}"
        );
        inspect(&got);
    }
    use serde_json::json;
    let contact = |e: &v1::WebhookEvent| e.contact.clone().expect("contact");
    let created = fixture!("workflow-webhook-contact-created.json").as_slice();
    let booked = fixture!("workflow-webhook-appointment-booked.json").as_slice();
    check(
        "webhookId in the payload is the id",
        edited(created, |m| {
            m.insert("webhookId".into(), json!("wf-1"));
        }),
        |e| assert_eq!(e.id, "ghl-workflow:wf-1"),
    );
    check(
        "event_id in customData is the id",
        edited(created, |m| {
            let c = m.get_mut("customData").and_then(Value::as_object_mut);
            c.expect("customData").insert("event_id".into(), json!(77));
        }),
        |e| assert_eq!(e.id, "ghl-workflow:77"),
    );
    check(
        "date_updated is the occurrence time",
        edited(created, |m| {
            m.insert(
                "date_updated".into(),
                json!("2026-12-01T08:09:40.777-06:00"),
            );
        }),
        |e| assert_eq!(e.occurred_at, Some(at("2026-12-01T14:09:40.777Z"))),
    );
    check(
        "calendar.dateUpdated is the occurrence time",
        calendar_with(&[("dateUpdated", json!("2026-12-03T15:41:07.903Z"))]),
        |e| assert_eq!(e.occurred_at, Some(at("2026-12-03T15:41:07.903Z"))),
    );
    check(
        "customData fills a missing phone, passed through as written",
        edited(booked, |m| {
            m.remove("phone");
        }),
        |e| assert_eq!(contact(e).phone.as_deref(), Some("+1 555 010 0199")),
    );
    check(
        "camelCase keys, tags as an array, a phone typed as digits, dnd",
        br#"{"contactId":"c1","firstName":"A","lastName":"B","fullName":"A B","phone":5550100199,"tags":["x"," y "],"dnd":true,"country":"ca"}"#.to_vec(),
        |e| {
            assert_eq!(
                contact(e),
                v1::ContactData {
                    phone: Some("5550100199".to_owned()),
                    first_name: Some("A".to_owned()),
                    last_name: Some("B".to_owned()),
                    name: Some("A B".to_owned()),
                    external_ids: ghl_contact_id("c1"),
                    phone_region: "CA".to_owned(),
                    tags: tags(&["x", "y"]),
                    dnd: Some(true),
                    ..v1::ContactData::default()
                }
            );
            assert_eq!(e.r#type, "contact");
        },
    );
    check(
        "tags CSV with spaces and empty items",
        edited(created, |m| {
            m.insert("tags".into(), json!(" a, b ,,a,c "));
        }),
        |e| assert_eq!(contact(e).tags, tags(&["a", "b", "c"])),
    );
    check(
        "no tags key: tags unset",
        edited(created, |m| {
            m.remove("tags");
        }),
        |e| assert_eq!(contact(e).tags, None),
    );
    check(
        "calendar without appointmentId: a contact event",
        calendar_with(&[("appointmentId", Value::Null)]),
        |e| {
            // customData.appointment_id still names the appointment.
            assert_eq!(appointment(e).appointment_id, "FN1XdtXNMPqAXiuF3XRc");
        },
    );
    check(
        "no appointment id anywhere: a contact event",
        edited(booked, |m| {
            m.remove("calendar");
            m.remove("customData");
        }),
        |e| {
            assert_eq!(
                e.payload,
                Some(Payload::ContactUpserted(v1::ContactUpserted {}))
            );
            assert_eq!(e.r#type, "contact");
        },
    );
    check(
        "custom webhook with appointment_status and a naive start in its timezone",
        br#"{"contact_id":"c1","appointment_id":"a1","appointment_status":"noshow","start_time":"2026-12-03T10:00:00","timezone":"Europe/Paris"}"#.to_vec(),
        |e| {
            let a = appointment(e);
            assert_eq!(a.status(), v1::AppointmentStatus::NoShow);
            assert_eq!(a.start_time, Some(at("2026-12-03T09:00:00Z")));
            assert!(a.start_time_inferred);
            assert_eq!(e.r#type, "appointment");
        },
    );
    check(
        "a top-level status without an appointment says nothing",
        br#"{"contact_id":"c1","status":"showed"}"#.to_vec(),
        |e| {
            assert_eq!(
                e.payload,
                Some(Payload::ContactUpserted(v1::ContactUpserted {}))
            );
        },
    );
}

/// The unscoped id expected (`None`: the body's digest) and the window sent with it.
type WantId<'a> = (Option<&'a str>, u32);

#[test]
fn ids() {
    fn check(name: &str, options: &Options, body: &[u8], want: WantId<'_>) {
        let got = GoHighLevelWorkflow::new(TOKEN, options.clone()).normalize(
            SOURCE,
            Delivery::body_only(body),
            RECEIVED_MS,
        );
        let want_id = want.0.map_or_else(|| body_digest_id(body), str::to_owned);
        assert_eq!(
            (got.id.as_str(), got.dedup_window_secs),
            (format!("{SOURCE}:{want_id}").as_str(), want.1),
            "{name}"
        );
    }
    let pointer = |p: &str| Options {
        id_pointer: Some(p.to_owned()),
        dedup_window_secs: 600,
    };
    let none = Options {
        id_pointer: None,
        dedup_window_secs: 600,
    };
    let custom = pointer("/customData/event_id");
    // A key no known id field shares, so that what falls through reaches the digest.
    let reference = pointer("/customData/ref");
    let cases: [(&str, &Options, &[u8], WantId<'_>); 14] = [
        (
            "the pointer wins over the fields",
            &custom,
            br#"{"webhookId":"w","customData":{"event_id":"p1"},"contact_id":"c"}"#,
            (Some("p1"), 0),
        ),
        (
            "the pointer wins over a field at the top level of the same name",
            &pointer("/calendar/appointmentId"),
            br#"{"event_id":"e","calendar":{"appointmentId":"a1"},"contact_id":"c"}"#,
            (Some("a1"), 0),
        ),
        (
            "a field wins over the digest",
            &none,
            br#"{"webhook_id":" w2 ","contact_id":"c"}"#,
            (Some("w2"), 0),
        ),
        (
            "a field in customData",
            &none,
            br#"{"customData":{"eventId":"e3"},"contact_id":"c"}"#,
            (Some("e3"), 0),
        ),
        (
            "no id: the digest, with the window",
            &none,
            br#"{"contact_id":"c","calendar":{"appoinmentStatus":"confirmed"}}"#,
            (None, 600),
        ),
        (
            "the default window",
            &Options::default(),
            br#"{"contact_id":"c"}"#,
            (None, 3600),
        ),
        (
            "a pointer to an integer",
            &pointer("/customData/n"),
            br#"{"customData":{"n":42},"contact_id":"c"}"#,
            (Some("42"), 0),
        ),
        (
            "a pointer into an array, with escaped keys",
            &pointer("/a~1b/0/c~0d"),
            br#"{"a/b":[{"c~d":"x9"}],"contact_id":"c"}"#,
            (Some("x9"), 0),
        ),
        (
            "a pointer to nothing falls through to the fields",
            &pointer("/customData/missing"),
            br#"{"eventId":"e4","contact_id":"c"}"#,
            (Some("e4"), 0),
        ),
        (
            "a pointer to nothing, and no field: the digest",
            &pointer("/customData/missing"),
            br#"{"customData":{},"contact_id":"c"}"#,
            (None, 600),
        ),
        (
            "a blank string falls through",
            &reference,
            br#"{"customData":{"ref":"  "},"contact_id":"c"}"#,
            (None, 600),
        ),
        (
            "a float falls through",
            &reference,
            br#"{"customData":{"ref":1.5},"contact_id":"c"}"#,
            (None, 600),
        ),
        (
            "an object falls through",
            &custom,
            br#"{"customData":{"event_id":{"id":"x"}},"webhookId":"w5"}"#,
            (Some("w5"), 0),
        ),
        (
            "an unreadable body: the digest, with the window",
            &custom,
            b"not json",
            (None, 600),
        ),
    ];
    for (name, options, body, want) in cases {
        check(name, options, body, want);
    }
}

/// Booked, cancelled, booked again: the third body is the first, byte for byte. Without
/// an id in the payload both share the digest, and the window is what lets the third
/// take effect once it has passed.
#[test]
fn a_repeated_identical_body_shares_its_id_within_a_window() {
    let booked = fixture!("workflow-webhook-appointment-booked.json").as_slice();
    let cancelled = calendar_with(&[("appoinmentStatus", serde_json::json!("cancelled"))]);
    let w = workflow();
    let [first, second, third] = [booked, &cancelled, booked]
        .map(|b| w.normalize(SOURCE, Delivery::body_only(b), RECEIVED_MS));
    assert_eq!(first.id, third.id);
    assert_ne!(first.id, second.id);
    for e in [&first, &second, &third] {
        assert_eq!(e.dedup_window_secs, DEFAULT_DEDUP_WINDOW_SECS);
    }
}

#[test]
fn unusable_bodies_are_ignored_with_a_reason() {
    fn check(name: &str, body: &[u8], want_reason: &str) {
        let got = workflow().normalize(SOURCE, Delivery::body_only(body), RECEIVED_MS);
        assert_eq!(
            got.id,
            format!("{SOURCE}:{}", body_digest_id(body)),
            "{name}"
        );
        match &got.payload {
            Some(Payload::Ignored(i)) => {
                assert!(i.reason.starts_with(want_reason), "{name}: {}", i.reason);
                assert_eq!(got.raw_body.as_deref(), Some(body), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let cases: [(&str, &[u8], &str); 3] = [
        ("not JSON", b"contact_id=1", "body is not JSON"),
        ("empty", b"", "body is not JSON"),
        ("JSON string", br#""hello""#, "body is not a JSON object"),
    ];
    for (name, body, reason) in cases {
        check(name, body, reason);
    }
}

/// Whether an event without contact identifiers changes anything is contacts-svc's
/// decision, made once it has checked the fields: the edge still types the event.
#[test]
fn events_without_contact_identifiers_keep_their_type() {
    fn check(name: &str, body: &[u8], want_contact: v1::ContactData, want_appointment: bool) {
        let got = workflow().normalize(SOURCE, Delivery::body_only(body), RECEIVED_MS);
        assert_eq!(got.contact, Some(want_contact), "{name}");
        match &got.payload {
            Some(Payload::AppointmentUpdated(a)) if want_appointment => {
                assert_eq!(a.appointment_id, "a1", "{name}");
            }
            Some(Payload::ContactUpserted(_)) if !want_appointment => {}
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            got.raw_body.is_none(),
            "{name}: a typed event carries no body"
        );
    }
    let cases: [(&str, &[u8], v1::ContactData, bool); 4] = [
        (
            "a name and tags only",
            br#"{"first_name":"A","tags":"x"}"#,
            v1::ContactData {
                first_name: Some("A".to_owned()),
                tags: tags(&["x"]),
                ..v1::ContactData::default()
            },
            false,
        ),
        (
            "blank identifiers",
            br#"{"contact_id":" ","email":"","phone":null}"#,
            v1::ContactData::default(),
            false,
        ),
        (
            "identifiers of the wrong type",
            br#"{"contact_id":{},"email":[]}"#,
            v1::ContactData::default(),
            false,
        ),
        (
            "an appointment without a contact",
            br#"{"appointment_id":"a1","status":"cancelled"}"#,
            v1::ContactData::default(),
            true,
        ),
    ];
    for (name, body, contact, appointment) in cases {
        check(name, body, contact, appointment);
    }
}

#[test]
fn never_panics_on_truncated_bodies() {
    let bodies: [&[u8]; 4] = [
        fixture!("workflow-webhook-appointment-booked.json"),
        fixture!("workflow-webhook-appointment-showed.json"),
        fixture!("workflow-webhook-contact-created.json"),
        fixture!("workflow-custom-webhook.json"),
    ];
    for body in bodies {
        for end in 0..body.len() {
            let event =
                workflow().normalize(SOURCE, Delivery::body_only(&body[..end]), RECEIVED_MS);
            assert!(event.id.starts_with("ghl-workflow:"));
        }
    }
}

#[test]
fn naive_local_times() {
    fn check(input: &str, want: Option<&str>) {
        let got = naive_local_time(input).map(|dt| dt.to_string());
        assert_eq!(got.as_deref(), want, "{input:?}");
    }
    let cases = [
        ("2026-12-03T10:00:00", Some("2026-12-03T10:00:00")),
        ("2026-12-03 10:00", Some("2026-12-03T10:00:00")),
        ("Thu, Dec 3rd, 2026 | 10:00 am", Some("2026-12-03T10:00:00")),
        ("Thu, Oct 30th, 2025 | 2:00 pm", Some("2025-10-30T14:00:00")),
        ("Mon, Jun 1st, 2026 | 12:30 PM", Some("2026-06-01T12:30:00")),
        ("Sat, Aug 22nd, 2026 | 9:05 am", Some("2026-08-22T09:05:00")),
        // The weekday must agree with the date.
        ("Fri, Dec 3rd, 2026 | 10:00 am", None),
        ("2026-12-03T10:00:00-05:00", None),
        ("soon", None),
        ("", None),
    ];
    for (input, want) in cases {
        check(input, want);
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Normalization never panics and always keeps the source's id scope.
        #[test]
        fn normalize_takes_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let event = workflow().normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS);
            prop_assert!(event.id.starts_with("ghl-workflow:"));
        }

        /// Any JSON object of string fields normalizes without panicking.
        #[test]
        fn normalize_takes_any_flat_object(
            fields in proptest::collection::btree_map(
                prop::sample::select(vec![
                    "contact_id", "email", "phone", "tags", "appointment_id", "status",
                    "start_time", "timezone", "event_id", "date_updated", "country",
                ]),
                ".{0,40}",
                0..8,
            )
        ) {
            let body = serde_json::to_vec(&fields).expect("serializes");
            let event = workflow().normalize(SOURCE, Delivery::body_only(&body), RECEIVED_MS);
            prop_assert!(event.id.starts_with("ghl-workflow:"));
        }

        /// Only the token itself passes, in the header or the query.
        #[test]
        fn only_the_token_passes(candidate in "[ -~]{0,40}") {
            let source = GoHighLevelWorkflow::new(TOKEN, Options::default());
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {candidate}")) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let d = Delivery { headers: &headers, query: "", body: b"{}" };
            let passes = source.verify(d, 0).is_ok();
            prop_assert_eq!(passes, candidate.trim() == TOKEN);
            let query = format!(
                "token={}",
                percent_encoding::utf8_percent_encode(&candidate, percent_encoding::NON_ALPHANUMERIC)
            );
            let d = Delivery { headers: &HeaderMap::new(), query: &query, body: b"{}" };
            prop_assert_eq!(source.verify(d, 0).is_ok(), candidate == TOKEN);
        }
    }
}
