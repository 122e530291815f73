use hookline_proto::v1;
use proptest::prelude::*;

use super::text::Reader;
use super::*;

fn us() -> Region {
    Region::parse("t", "US").unwrap()
}

#[test]
fn emails() {
    #[track_caller]
    fn check(input: &str, expected: Option<(&str, &str)>) {
        let got = Email::parse("email", input).ok();
        let got = got
            .as_ref()
            .map(|e| (e.normalized.as_str(), e.original.as_str()));
        assert_eq!(got, expected, "{input:?}");
    }
    check(
        "jane@example.com",
        Some(("jane@example.com", "jane@example.com")),
    );
    check(
        "  Jane.Doe@Example.COM \n",
        Some(("jane.doe@example.com", "Jane.Doe@Example.COM")),
    );
    check(
        "\"quoted\"@example.com",
        Some(("\"quoted\"@example.com", "\"quoted\"@example.com")),
    );
    check("", None);
    check("   ", None);
    check("no-at-sign", None);
    check("@example.com", None);
    check("jane@", None);
    check("jane@.example.com", None);
    check("jane@example.com.", None);
    check("ja ne@example.com", None);
    check("jane@exa\u{0}mple.com", None);
    check(&format!("{}@example.com", "a".repeat(250)), None);
}

#[test]
fn e164_numbers_read_as_the_crate_reads_them() {
    // Every start of one to three digits, in numbers of each length E.164 allows past
    // the shortest the reading accepts: the shortcut and the crate's parse agree.
    for region in ["US", "GB", "DE"] {
        let region = Region::parse("r", region).unwrap();
        for start in 0..1000 {
            for len in [8, 10, 11, 12, 15] {
                let digits = format!("{start:03}{}", "5550142096143827".get(..len - 3).unwrap());
                let number = format!("+{digits}");
                assert_eq!(
                    Phone::international(&number, region),
                    Phone::international_parsed(&number, region),
                    "{number} in {region:?}"
                );
            }
        }
    }
    // Outside the shortcut's form, the parse decides.
    let us = us();
    assert_eq!(
        Phone::international("+1 415 555 0100", us).as_deref(),
        Some("+14155550100")
    );
    assert_eq!(Phone::international("+1415555", us), None);
    assert_eq!(Phone::international("+0415550100", us), None);
}

#[test]
fn phones() {
    #[track_caller]
    fn check(input: &str, region: &str, expected: &str, valid: bool) {
        let region = Region::parse("r", region).unwrap();
        let p = Phone::parse("phone", input, region, &mut Reader::strict()).unwrap();
        assert_eq!(
            (p.value.as_str(), p.valid),
            (expected, valid),
            "{input:?} in {region:?}"
        );
    }
    // US national formats, with the default region.
    check("(541) 555-0142", "US", "+15415550142", true);
    check("541.555.0142", "US", "+15415550142", true);
    check("5415550142", "US", "+15415550142", true);
    check("1-541-555-0142", "US", "+15415550142", true);
    check("+1 555 010 0199", "US", "+15550100199", true);
    check("+15550100199", "GB", "+15550100199", true);
    // International dialling prefixes: the region's own, and the common "00".
    check("011 44 20 7946 0958", "US", "+442079460958", true);
    check("001 415 555 0100", "US", "+14155550100", true);
    check("001 415 555 0100", "DE", "+14155550100", true);
    // UK, in national and international form.
    check("020 7946 0958", "GB", "+442079460958", true);
    check("+44 20 7946 0958", "US", "+442079460958", true);
    check("07911 123456", "GB", "+447911123456", true);
    // Other countries.
    check("+20 12 22203198", "US", "+201222203198", true);
    check("030 1234567", "DE", "+49301234567", true);
    check("+91 95095 97501", "US", "+919509597501", true);
    // Extensions are not part of E.164.
    check("+1 415 555 0100 ext. 123", "US", "+14155550100", true);
    check("(415) 555-0100 x12", "US", "+14155550100", true);
    // Garbage is kept raw and flagged, never dropped.
    check("call me maybe", "US", "call me maybe", false);
    check("12", "US", "12", false);
    check("+123456789012345678", "US", "+123456789012345678", false);
    check("0014155", "US", "0014155", false);
    check("N/A", "US", "N/A", false);
    // Only emptiness fails, and for a caller oversize; an event's is cut instead.
    assert!(Phone::parse("phone", "  ", us(), &mut Reader::strict()).is_err());
    assert!(Phone::parse("phone", &"1".repeat(2000), us(), &mut Reader::strict()).is_err());
    let mut notes = Vec::new();
    let long = Phone::parse(
        "phone",
        &"1".repeat(2000),
        us(),
        &mut Reader::lenient(&mut notes),
    );
    assert_eq!(
        long.map(|p| (p.value.len(), p.valid)).ok(),
        Some((1024, false))
    );
    assert_eq!(notes.len(), 1);
    assert!(Phone::parse_strict("phone", "garbage", us()).is_err());
}

#[test]
fn regions() {
    assert!(Region::parse("r", "us").is_ok());
    assert!(Region::parse("r", "GB").is_ok());
    assert!(Region::parse("r", "XX").is_err());
    assert!(Region::parse("r", "").is_err());
    assert_eq!(Region::parse_or("r", "", us()).unwrap(), us());
}

#[test]
fn contact_ids() {
    let id = ContactId::generate();
    assert_eq!(ContactId::parse(id.as_str()).unwrap(), id);
    for bad in [
        "",
        "ct_",
        "ct_0123",
        "cx_0190a2b3c4d5e6f708192a3b4c5d6e7f",
        "ct_0190A2B3C4D5E6F708192A3B4C5D6E7F",
        "ct_0190a2b3c4d5e6f708192a3b4c5d6e7g",
    ] {
        assert!(ContactId::parse(bad).is_err(), "{bad:?}");
    }
    // Ids made later sort later, so the smaller id is the older contact.
    let later = ContactId::generate();
    assert!(id < later);
}

fn stamp(at: i64, ev: &str) -> Stamp {
    Stamp {
        at,
        ev: ev.to_owned(),
    }
}

fn fields() -> ContactFields {
    ContactFields::default()
}

fn event(ev: &str, at: i64, data: ContactFields, effect: Effect) -> Record {
    Record::from_event(&EventEffect {
        event_id: EventId::parse("id", ev).unwrap(),
        occurred_at: at,
        data,
        effect,
    })
}

fn with_email(e: &str) -> ContactFields {
    ContactFields {
        email: Some(Email::parse("email", e).unwrap()),
        ..fields()
    }
}

fn set(v: &str) -> BTreeSet<String> {
    if v.is_empty() {
        BTreeSet::new()
    } else {
        BTreeSet::from([v.to_owned()])
    }
}

fn purchase(pi: &str, session: &str, invoice: &str, amount: i64) -> PurchaseRec {
    PurchaseRec {
        amount,
        currency: "usd".to_owned(),
        refs: PaymentRefs {
            payment_intent: set(pi),
            invoice: set(invoice),
            session: set(session),
            ..PaymentRefs::default()
        },
        subscription: String::new(),
        description: String::new(),
        first_at: 0,
        stamp: stamp(0, ""),
    }
}

fn purchase_event(ev: &str, at: i64, p: PurchaseRec) -> Record {
    let p = PurchaseRec {
        first_at: at,
        stamp: stamp(at, ev),
        ..p
    };
    event(ev, at, fields(), Effect::Purchase(p))
}

fn appointment_event(ev: &str, at: i64, id: &str, status: Attendance) -> Record {
    event(
        ev,
        at,
        fields(),
        Effect::Appointment {
            id: id.to_owned(),
            appointment: AppointmentRec {
                status,
                calendar: String::new(),
                start: None,
                end: None,
                title: String::new(),
                deleted: false,
            },
        },
    )
}

fn refund_event(
    ev: &str,
    at: i64,
    id: Option<&str>,
    charge: &str,
    amount: i64,
    status: RefundStatus,
    cumulative: Option<i64>,
) -> Record {
    event(
        ev,
        at,
        fields(),
        Effect::Refund {
            refund_id: id.map(str::to_owned),
            refund: RefundRec {
                amount,
                currency: "usd".to_owned(),
                charge: charge.to_owned(),
                payment_intent: String::new(),
                status,
            },
            charge_cumulative: cumulative,
        },
    )
}

fn fold(records: impl IntoIterator<Item = Record>) -> Record {
    let mut r = Record::default();
    for x in records {
        r.join(x);
    }
    r
}

#[test]
fn an_older_event_never_overwrites_a_newer_value() {
    let newer = event("e2", 2000, with_email("new@example.com"), Effect::Profile);
    let older = event("e1", 1000, with_email("old@example.com"), Effect::Profile);
    for r in [fold([newer.clone(), older.clone()]), fold([older, newer])] {
        assert_eq!(r.email.unwrap().v.normalized, "new@example.com");
        assert_eq!((r.first_seen, r.last_seen), (Some(1000), Some(2000)));
    }
}

/// A profile event stating this email, phone and GoHighLevel id.
fn person(ev: &str, at: i64, email: &str, phone: &str, ghl: &str) -> Record {
    let data = ContactFields {
        phone: Some(Phone::parse_strict("phone", phone, us()).unwrap()),
        external_ids: ext(&[("ghl_contact", ghl)]),
        ..with_email(email)
    };
    event(ev, at, data, Effect::Profile)
}

#[test]
fn identifiers_a_newer_value_replaced_are_kept_as_former_ones() {
    let first = person("e1", 1000, "a@example.com", "+14155550100", "g2");
    let second = person("e2", 2000, "b@example.com", "+14155550101", "g1");
    let want = Former {
        emails: set("a@example.com"),
        phones: set("+14155550100"),
        // One id per system: the smaller stays, the other is a former one.
        external_ids: [("ghl_contact".to_owned(), "g2".to_owned())].into(),
    };
    for (records, former) in [
        (vec![first.clone()], Former::default()),
        (vec![first.clone(), first.clone()], Former::default()),
        (vec![first.clone(), second.clone()], want.clone()),
        (vec![second.clone(), first.clone()], want.clone()),
        (vec![second.clone(), first.clone(), second.clone()], want),
    ] {
        assert_eq!(fold(records.clone()).former, former, "{records:?}");
    }
    let every: BTreeSet<Identifier> = fold([first, second])
        .every_identifier()
        .into_iter()
        .collect();
    let want: BTreeSet<Identifier> = [
        Identifier::Email("a@example.com".into()),
        Identifier::Email("b@example.com".into()),
        Identifier::Phone("+14155550100".into()),
        Identifier::Phone("+14155550101".into()),
        Identifier::external("ghl_contact", "g1").unwrap(),
        Identifier::external("ghl_contact", "g2").unwrap(),
    ]
    .into();
    assert_eq!(every, want);
}

#[test]
fn ties_are_broken_by_event_id() {
    let a = event("evt_a", 1000, with_email("a@example.com"), Effect::Profile);
    let b = event("evt_b", 1000, with_email("b@example.com"), Effect::Profile);
    assert_eq!(fold([a.clone(), b.clone()]), fold([b, a.clone()]));
    assert_eq!(
        fold([
            a.clone(),
            event("evt_b", 1000, with_email("b@example.com"), Effect::Profile)
        ])
        .email
        .unwrap()
        .v
        .normalized,
        "b@example.com"
    );
}

fn tags(list: Option<&[&str]>, add: &[&str], remove: &[&str]) -> ContactFields {
    let changes = add
        .iter()
        .map(|t| (t, true))
        .chain(remove.iter().map(|t| (t, false)));
    ContactFields {
        tags: list.map(|l| l.iter().map(|t| (*t).to_owned()).collect()),
        tag_changes: changes.map(|(t, add)| ((*t).to_owned(), add)).collect(),
        ..with_email("a@example.com")
    }
}

#[test]
fn tag_changes_apply_on_top_of_an_older_list() {
    /// Events (id, time, fields); `want` the tags whatever the order of arrival.
    fn check(events: Vec<(&str, i64, ContactFields)>, want: &[&str]) {
        let records: Vec<Record> = events
            .into_iter()
            .map(|(ev, at, data)| event(ev, at, data, Effect::Profile))
            .collect();
        for order in permutations(&records) {
            assert_eq!(fold(order).current_tags(), want, "{records:?}");
        }
    }
    let list = |l: &[&'static str]| tags(Some(l), &[], &[]);
    check(vec![("e1", 1, tags(None, &["vip"], &[]))], &["vip"]);
    check(
        vec![
            ("e1", 1, list(&["a", "b"])),
            ("e2", 2, tags(None, &["vip"], &["a"])),
        ],
        &["b", "vip"],
    );
    // A list newer than a change states the tag's fate more recently.
    check(
        vec![
            ("e1", 2, list(&["a"])),
            ("e2", 1, tags(None, &["vip"], &[])),
        ],
        &["a"],
    );
    // Per tag, the newest change wins.
    check(
        vec![
            ("e1", 1, tags(None, &["vip"], &[])),
            ("e2", 3, tags(None, &[], &["vip"])),
            ("e3", 2, tags(None, &["vip"], &[])),
        ],
        &[],
    );
    // One event that adds and takes off a tag takes it off.
    let mut both = tags(None, &["vip"], &[]);
    both.tag_changes.insert("vip".into(), false);
    check(vec![("e1", 1, both)], &[]);
    // A list and changes of one event: the changes apply on top of it.
    check(vec![("e1", 1, tags(Some(&["a"]), &["b"], &["a"]))], &["b"]);
    // Changes older than the newest list are forgotten, not kept forever.
    let r = fold([
        event("e1", 1, tags(None, &["x"], &["y"]), Effect::Profile),
        event("e2", 2, list(&["a"]), Effect::Profile),
    ]);
    assert!(r.tag_changes.is_empty(), "{:?}", r.tag_changes);
    assert_eq!(r.tags_stamp().map(|s| s.at), Some(2));
}

#[test]
fn stage_follows_the_funnel() {
    #[track_caller]
    fn check(records: Vec<Record>, expected: Stage) {
        assert_eq!(fold(records.clone()).stage(), expected);
        assert_eq!(fold(records.into_iter().rev()).stage(), expected);
    }
    use Attendance::*;
    check(
        vec![event("e", 1, with_email("a@example.com"), Effect::Profile)],
        Stage::Lead,
    );
    check(
        vec![appointment_event("a1", 1, "ap", Booked)],
        Stage::Booked,
    );
    check(
        vec![
            appointment_event("a1", 1, "ap", Booked),
            appointment_event("a2", 2, "ap", Attended),
        ],
        Stage::Attended,
    );
    // A no-show followed by an older "confirmed" stays a no-show…
    check(
        vec![
            appointment_event("a2", 2, "ap", NoShow),
            appointment_event("a1", 1, "ap", Booked),
        ],
        Stage::NoShow,
    );
    // …and a newer reschedule wins.
    check(
        vec![
            appointment_event("a2", 2, "ap", NoShow),
            appointment_event("a3", 3, "ap", Booked),
        ],
        Stage::Booked,
    );
    check(
        vec![
            appointment_event("a1", 1, "ap", Booked),
            appointment_event("a2", 2, "ap", Cancelled),
        ],
        Stage::Lead,
    );
    // The most recently updated appointment decides among several.
    check(
        vec![
            appointment_event("a1", 1, "ap1", Attended),
            appointment_event("a2", 2, "ap2", Booked),
        ],
        Stage::Booked,
    );
    check(
        vec![
            appointment_event("a1", 1, "ap", NoShow),
            purchase_event("p1", 5, purchase("pi_1", "", "", 100)),
        ],
        Stage::Purchased,
    );
    // A refund is a flag: the stage stays purchased.
    let r = fold([
        purchase_event("p1", 5, purchase("pi_1", "", "", 100)),
        refund_event(
            "r1",
            6,
            Some("re_1"),
            "ch_1",
            100,
            RefundStatus::Succeeded,
            None,
        ),
    ]);
    assert_eq!(r.stage(), Stage::Purchased);
    assert_eq!(r.refunded_totals().get("usd"), Some(&100));
}

#[test]
fn milestones_keep_the_first_time() {
    let r = fold([
        appointment_event("a3", 30, "ap", Attendance::Booked),
        appointment_event("a1", 10, "ap", Attendance::Booked),
        appointment_event("a2", 20, "ap", Attendance::Attended),
    ]);
    assert_eq!(r.milestones.booked, Some(10));
    assert_eq!(r.milestones.attended, Some(20));
    let p = r.to_proto(&ContactId::generate());
    assert_eq!(p.milestones.unwrap().booked_at.unwrap().nanos, 10_000_000);
}

#[test]
fn events_of_one_payment_record_one_purchase() {
    // Checkout session (payment intent + session), the payment intent, and the charge.
    let session = purchase_event("e1", 100, purchase("pi_1", "cs_1", "", 4900));
    let intent = purchase_event("e2", 101, purchase("pi_1", "", "", 4900));
    let mut charge = purchase("pi_1", "", "", 4900);
    charge.refs.charge = set("ch_1");
    let charge = purchase_event("e3", 102, charge);
    // Subscription checkout keyed by invoice, then the invoice with its payment intent.
    let sub_session = purchase_event("e4", 200, purchase("", "cs_2", "in_2", 900));
    let invoice = purchase_event("e5", 201, purchase("pi_2", "", "in_2", 900));
    let all = [session, intent, charge, sub_session, invoice];
    let expected = fold(all.clone());
    assert_eq!(expected.purchases.len(), 2, "{:?}", expected.purchases);
    assert!(expected.purchases.contains_key("pi_1"));
    assert!(expected.purchases.contains_key("pi_2"));
    assert_eq!(expected.purchases["pi_1"].refs.session, set("cs_1"));
    assert_eq!(expected.purchases["pi_1"].refs.charge, set("ch_1"));
    assert_eq!(expected.purchases["pi_1"].first_at, 100);
    // Every order gives the same record.
    for perm in permutations(&all) {
        assert_eq!(fold(perm), expected);
    }
}

fn permutations(items: &[Record]) -> Vec<Vec<Record>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

#[test]
fn refunded_total_is_derived_never_incremented() {
    use RefundStatus::*;
    #[track_caller]
    fn check(records: Vec<Record>, expected: i64) {
        let r = fold(records.clone());
        assert_eq!(
            r.refunded_totals().get("usd").copied().unwrap_or(0),
            expected
        );
        // Applying everything twice changes nothing.
        assert_eq!(fold(records.iter().cloned().chain(records.clone())), r);
    }
    check(
        vec![refund_event(
            "r1",
            1,
            Some("re_1"),
            "ch_1",
            300,
            Succeeded,
            None,
        )],
        300,
    );
    // Cumulative amount of a charge and the refunds on it: the larger counts.
    check(
        vec![
            refund_event("c1", 1, None, "ch_1", 0, Succeeded, Some(300)),
            refund_event("r1", 1, Some("re_1"), "ch_1", 300, Succeeded, None),
        ],
        300,
    );
    check(
        vec![
            refund_event("c1", 1, None, "ch_1", 0, Succeeded, Some(300)),
            refund_event("c2", 2, None, "ch_1", 0, Succeeded, Some(500)),
            refund_event("r1", 1, Some("re_1"), "ch_1", 300, Succeeded, None),
        ],
        500,
    );
    check(
        vec![
            refund_event("r1", 1, Some("re_1"), "ch_1", 300, Succeeded, None),
            refund_event("r2", 2, Some("re_2"), "ch_1", 200, Succeeded, None),
            refund_event("c1", 1, None, "ch_1", 0, Succeeded, Some(300)),
        ],
        500,
    );
    // A refund that failed later does not count; an older "pending" does not revive it.
    check(
        vec![
            refund_event("r1", 1, Some("re_1"), "ch_1", 300, Pending, None),
            refund_event("r2", 3, Some("re_1"), "ch_1", 300, Failed, None),
        ],
        0,
    );
    // Refunds on different charges add up.
    check(
        vec![
            refund_event("r1", 1, Some("re_1"), "ch_1", 300, Succeeded, None),
            refund_event("r2", 2, Some("re_2"), "ch_2", 200, Succeeded, None),
        ],
        500,
    );
}

fn ext(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn record_with_ext(pairs: &[(&str, &str)]) -> Record {
    Record {
        external_ids: ext(pairs),
        ..Record::default()
    }
}

#[test]
fn plans() {
    let a = ContactId::parse("ct_00000000000000000000000000000001").unwrap();
    let b = ContactId::parse("ct_00000000000000000000000000000002").unwrap();
    let email = Identifier::Email("jane@example.com".into());
    let ghl = |id: &str| Identifier::External {
        system: "ghl_contact".into(),
        id: id.into(),
    };
    let contacts: BTreeMap<ContactId, Record> = [
        (a.clone(), record_with_ext(&[("ghl_contact", "G1")])),
        (b.clone(), record_with_ext(&[("stripe_customer", "cus_1")])),
    ]
    .into();

    let own = |pairs: &[(&str, &str)], email: Option<&str>| ContactFields {
        external_ids: ext(pairs),
        email: email.map(|e| Email::parse("e", e).unwrap()),
        ..ContactFields::default()
    };
    // Nothing known: a new contact claims everything.
    let p = plan(
        &own(&[("ghl_contact", "G9")], None),
        None,
        &[(ghl("G9"), None), (email.clone(), None)],
        &contacts,
    );
    assert!(p.targets.is_empty());
    assert_eq!(p.claims, vec![ghl("G9"), email.clone()]);

    // GHL id of one contact, email of another with no GHL id: merge, oldest survives.
    let p = plan(
        &own(&[("ghl_contact", "G1")], None),
        None,
        &[
            (ghl("G1"), Some(a.clone())),
            (email.clone(), Some(b.clone())),
        ],
        &contacts,
    );
    assert_eq!(p.targets, vec![a.clone(), b.clone()]);
    assert!(p.conflicts.is_empty());
    // The same, whichever identifier named the older contact.
    let p = plan(
        &own(&[("stripe_customer", "cus_1")], None),
        None,
        &[
            (
                Identifier::external("stripe_customer", "cus_1").unwrap(),
                Some(b.clone()),
            ),
            (email.clone(), Some(a.clone())),
        ],
        &contacts,
    );
    assert_eq!(p.targets, vec![a.clone(), b.clone()]);

    // Two GHL contacts sharing an email stay apart; the conflict is reported.
    let p = plan(
        &own(&[("ghl_contact", "G2")], None),
        None,
        &[(ghl("G2"), None), (email.clone(), Some(a.clone()))],
        &contacts,
    );
    assert!(p.targets.is_empty());
    assert_eq!(p.claims, vec![ghl("G2")]);
    assert_eq!(p.conflicts, vec![(email.clone(), a.clone())]);

    // A phone shared with someone of another email does not merge them…
    let phone = Identifier::Phone("+14155550100".into());
    let mut with_email = contacts.clone();
    with_email.insert(
        a.clone(),
        fold([event(
            "e",
            1,
            with_email_fields("ann@example.com"),
            Effect::Profile,
        )]),
    );
    let p = plan(
        &own(&[], Some("bob@example.com")),
        None,
        &[
            (Identifier::Email("bob@example.com".into()), None),
            (phone.clone(), Some(a.clone())),
        ],
        &with_email,
    );
    assert!(p.targets.is_empty());
    assert_eq!(p.conflicts, vec![(phone.clone(), a.clone())]);
    // …but a phone-only contact, or one with the same email, is the same person.
    let p = plan(
        &own(&[], Some("ann@example.com")),
        None,
        &[
            (Identifier::Email("ann@example.com".into()), None),
            (phone.clone(), Some(a.clone())),
        ],
        &with_email,
    );
    assert_eq!(p.targets, vec![a.clone()]);
    let p = plan(
        &own(&[], Some("bob@example.com")),
        None,
        &[
            (Identifier::Email("bob@example.com".into()), None),
            (phone.clone(), Some(b.clone())),
        ],
        &contacts,
    );
    assert_eq!(p.targets, vec![b.clone()]);
}

fn with_email_fields(e: &str) -> ContactFields {
    with_email(e)
}

#[test]
fn lenient_parsing_drops_malformed_fields() {
    let data = v1::ContactData {
        email: Some("not an email".into()),
        phone: Some("+1 415 555 0100".into()),
        external_ids: vec![v1::ExternalId {
            system: "Bad System".into(),
            id: "x".into(),
        }],
        ..v1::ContactData::default()
    };
    assert!(ContactFields::parse("data", &data, us(), &mut Reader::strict()).is_err());
    let mut notes = Vec::new();
    let f = ContactFields::parse(
        "event.contact",
        &data,
        us(),
        &mut Reader::lenient(&mut notes),
    )
    .unwrap();
    assert_eq!(f.email, None);
    assert_eq!(f.phone.unwrap().value, "+14155550100");
    assert!(f.external_ids.is_empty());
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].starts_with("event.contact.email"), "{notes:?}");
}

#[test]
fn money_never_overflows_whatever_the_amounts() {
    let cases: [(&str, i64, i64); 4] = [
        ("maximal purchases and refunds", i64::MAX, i64::MAX),
        ("minimal amounts", i64::MIN, i64::MIN),
        ("mixed", i64::MAX, i64::MIN),
        ("ordinary", 4900, 1000),
    ];
    for (name, purchase_amount, refund_amount) in cases {
        let records = [
            purchase_event("e1", 1, purchase("pi_1", "", "", purchase_amount)),
            purchase_event("e2", 2, purchase("pi_2", "", "", purchase_amount)),
            refund_event(
                "e3",
                3,
                Some("re_1"),
                "",
                refund_amount,
                RefundStatus::Succeeded,
                None,
            ),
            refund_event(
                "e4",
                4,
                Some("re_2"),
                "",
                refund_amount,
                RefundStatus::Succeeded,
                None,
            ),
            refund_event(
                "e5",
                5,
                Some("re_3"),
                "ch_1",
                refund_amount,
                RefundStatus::Succeeded,
                None,
            ),
            refund_event(
                "e6",
                6,
                Some("re_4"),
                "ch_1",
                refund_amount,
                RefundStatus::Succeeded,
                None,
            ),
            refund_event(
                "e7",
                7,
                None,
                "ch_1",
                0,
                RefundStatus::Succeeded,
                Some(refund_amount),
            ),
        ];
        // Sums saturate: in a debug build an overflow would panic right here.
        let contact = fold(records).to_proto(&ContactId::generate());
        let usd = contact.totals.iter().find(|t| t.currency == "usd");
        let purchased = usd.map_or(0, |t| t.purchased);
        assert_eq!(
            purchased,
            purchase_amount.saturating_add(purchase_amount),
            "{name}"
        );
    }
}

#[test]
fn field_masks() {
    let mut f = with_email("a@example.com");
    f.first_name = Some("Jane".into());
    f.retain_paths(&["first_name".into()]).unwrap();
    assert_eq!(f.email, None);
    assert_eq!(f.first_name.as_deref(), Some("Jane"));
    assert!(f.retain_paths(&["nickname".into()]).is_err());

    // Tag changes read from the message: trimmed, a tag both added and removed removed;
    // the mask keeps additions and removals apart.
    let data = v1::ContactData {
        add_tags: vec![" vip ".into(), "x".into(), "".into()],
        remove_tags: vec!["x".into(), "old".into()],
        ..v1::ContactData::default()
    };
    let parsed = ContactFields::parse("event.contact", &data, us(), &mut Reader::strict()).unwrap();
    let want = |pairs: &[(&str, bool)]| -> BTreeMap<String, bool> {
        pairs.iter().map(|(t, a)| ((*t).to_owned(), *a)).collect()
    };
    assert_eq!(
        parsed.tag_changes,
        want(&[("vip", true), ("x", false), ("old", false)])
    );
    let mut added = parsed.clone();
    added.retain_paths(&["add_tags".into()]).unwrap();
    assert_eq!(added.tag_changes, want(&[("vip", true)]));
    let mut removed = parsed;
    removed.retain_paths(&["remove_tags".into()]).unwrap();
    assert_eq!(removed.tag_changes, want(&[("x", false), ("old", false)]));

    // Each list is bounded on its own: 300 additions do not crowd out a removal.
    let data = v1::ContactData {
        add_tags: (0..300)
            .map(|i| format!("t{i}"))
            .chain(["vip".into()])
            .collect(),
        remove_tags: vec!["vip".into()],
        ..v1::ContactData::default()
    };
    let mut notes = Vec::new();
    let parsed = ContactFields::parse(
        "event.contact",
        &data,
        us(),
        &mut Reader::lenient(&mut notes),
    )
    .unwrap();
    assert_eq!(parsed.tag_changes.get("vip"), Some(&false));
    assert_eq!(
        parsed.tag_changes.values().filter(|added| **added).count(),
        256
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
}

// Property tests: the join is a semilattice, so order and duplication never matter.

fn arb_stamp() -> impl Strategy<Value = (i64, String)> {
    (0i64..6, prop::sample::select(vec!["e1", "e2", "e3", "e4"]))
        .prop_map(|(t, e)| (t, e.to_owned()))
}

fn arb_record() -> impl Strategy<Value = Record> {
    let email = prop::option::of(prop::sample::select(vec!["a@example.com", "b@example.com"]));
    let phone = prop::option::of(prop::sample::select(vec!["+14155550100", "+14155550101"]));
    let ghl = prop::option::of(prop::sample::select(vec!["g1", "g2"]));
    let status = prop::sample::select(vec![
        Attendance::Booked,
        Attendance::Attended,
        Attendance::NoShow,
        Attendance::Cancelled,
    ]);
    let refs = prop::sample::select(vec!["", "r_1", "r_2"]);
    let kind = 0u8..5;
    let tag = prop::sample::select(vec!["vip", "lead", "cold"]);
    let tag_list = prop::option::of(prop::collection::btree_set(tag.clone(), 0..3));
    let tag_changes = prop::collection::btree_map(tag, any::<bool>(), 0..3);
    (
        arb_stamp(),
        email,
        status,
        refs.clone(),
        refs,
        kind,
        1i64..1000,
        tag_list,
        tag_changes,
        (phone, ghl),
    )
        .prop_map(
            |(
                (at, ev),
                email,
                status,
                pi,
                invoice,
                kind,
                amount,
                tags,
                tag_changes,
                (phone, ghl),
            )| {
                let data = ContactFields {
                    email: email.map(|e| Email::parse("e", e).unwrap()),
                    phone: phone.map(|p| Phone::parse_strict("p", p, us()).unwrap()),
                    external_ids: ghl.map(|g| ext(&[("ghl_contact", g)])).unwrap_or_default(),
                    tags: tags.map(|t| t.into_iter().map(str::to_owned).collect()),
                    tag_changes: tag_changes
                        .into_iter()
                        .map(|(t, add)| (t.to_owned(), add))
                        .collect(),
                    ..ContactFields::default()
                };
                let effect = match kind {
                    0 => Effect::Profile,
                    1 => Effect::Appointment {
                        id: "ap".into(),
                        appointment: AppointmentRec {
                            status,
                            calendar: String::new(),
                            start: Some(at),
                            end: None,
                            title: String::new(),
                            deleted: false,
                        },
                    },
                    2 => {
                        let mut p = purchase(pi, "", invoice, amount);
                        if p.refs.key().is_none() {
                            p.refs.other = set("x_1");
                        }
                        p.first_at = at;
                        p.stamp = stamp(at, &ev);
                        Effect::Purchase(p)
                    }
                    3 => Effect::Refund {
                        refund_id: Some(format!("re_{}", amount % 3)),
                        refund: RefundRec {
                            amount,
                            currency: "usd".into(),
                            charge: "ch_1".into(),
                            payment_intent: String::new(),
                            status: if amount % 2 == 0 {
                                RefundStatus::Succeeded
                            } else {
                                RefundStatus::Failed
                            },
                        },
                        charge_cumulative: Some(amount / 2),
                    },
                    _ => Effect::Deleted,
                };
                event(&ev, at, data, effect)
            },
        )
}

proptest! {
    // Cheap cases: many of them, since order-dependence hides in rare combinations.
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn join_is_commutative(a in arb_record(), b in arb_record()) {
        prop_assert_eq!(fold([a.clone(), b.clone()]), fold([b, a]));
    }

    #[test]
    fn join_is_associative(a in arb_record(), b in arb_record(), c in arb_record()) {
        let mut left = fold([a.clone(), b.clone()]);
        left.join(c.clone());
        let mut right = a;
        right.join(fold([b, c]));
        prop_assert_eq!(left, right);
    }

    #[test]
    fn join_is_idempotent(records in prop::collection::vec(arb_record(), 1..6)) {
        let once = fold(records.clone());
        let mut twice = once.clone();
        twice.join(once.clone());
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(fold(records.iter().cloned().chain(records.clone())), once);
    }

    #[test]
    fn any_order_gives_the_same_record(records in prop::collection::vec(arb_record(), 1..7), seed in any::<u64>()) {
        let mut shuffled = records.clone();
        // A deterministic shuffle driven by the seed.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, usize::try_from(s >> 33).unwrap() % (i + 1));
        }
        prop_assert_eq!(fold(shuffled), fold(records));
    }

    #[test]
    fn parsers_never_panic(s in ".{0,64}") {
        let _ = Email::parse("e", &s);
        let _ = Phone::parse("p", &s, us(), &mut Reader::strict());
        let _ = ContactId::parse(&s);
        let _ = Region::parse("r", &s);
        let _ = crate::store::Cursor::decode(&s);
    }
}

#[test]
fn masking() {
    assert_eq!(mask_email("jenny.rosen@example.com"), "j***@example.com");
    assert_eq!(mask_email("not-an-email"), "***");
    assert_eq!(mask_phone("+15550100199"), "+1******0199");
    assert_eq!(mask_phone("+442079460958"), "+4*******0958");
    assert_eq!(mask_phone("12345"), "*****");
    assert_eq!(
        Identifier::Email("jenny.rosen@example.com".into()).masked(),
        "email:j***@example.com"
    );
}
