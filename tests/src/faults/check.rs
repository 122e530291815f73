//! What became of a fault test's deliveries: every 2xx applied exactly once, read back
//! through contacts-svc's API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};

use crate::metric;

use super::load::{Answer, Delivery, Event};
use super::services::Services;

/// What became of a fault test's deliveries, counted from the senders' side and
/// through contacts-svc's API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: usize,
    pub applied_200: usize,
    pub duplicate_200: usize,
    pub queued: usize,
    pub retry: usize,
    /// Deliveries that met the edge down: refused, reset, or in flight when it died.
    pub edge_down: usize,
    /// Events with an APPLIED record in the webhook log.
    pub applied: usize,
    /// Answers of DUPLICATE: to live deliveries, and to the replayer.
    pub duplicate: usize,
}

impl Tally {
    pub fn acknowledged(&self) -> usize {
        self.applied_200 + self.duplicate_200 + self.queued
    }

    /// Deliveries answered 2xx, in percent of those the edge was up for.
    pub fn share_2xx(&self) -> f64 {
        let up = self.sent.saturating_sub(self.edge_down);
        if up == 0 {
            return 0.0;
        }
        // Counts of a test's deliveries are far below 2^52: exact as f64.
        100.0 * self.acknowledged() as f64 / up as f64
    }

    /// The test's one line of counts.
    pub fn line(&self, name: &str) -> String {
        format!(
            "fault {name}: sent {}, acknowledged {} (200 applied {}, 200 duplicate {}, 202 queued {}), \
             retry {}, edge down {}, applied {}, duplicate {}, 2xx share {:.1} %",
            self.sent,
            self.acknowledged(),
            self.applied_200,
            self.duplicate_200,
            self.queued,
            self.retry,
            self.edge_down,
            self.applied,
            self.duplicate,
            self.share_2xx()
        )
    }
}

/// Waits until the spool has drained, then checks `deliveries` against what
/// contacts-svc holds, and returns the counts. Panics, listing what is wrong, unless:
///
/// - every answer that is not 2xx is 503 with `Retry-After`, and deliveries went
///   unanswered only while the edge was down;
/// - every event answered 2xx has exactly one record in the webhook log, APPLIED, and
///   its contact holds exactly its one purchase; an event never acknowledged has at
///   most one (its sender would deliver it again);
/// - no event was applied after a sender was told it had been, and contacts-svc
///   answered APPLIED no more often than there are records;
/// - the log holds nothing else.
pub async fn check(services: &Services, deliveries: &[Delivery]) -> Tally {
    let mut tally = Tally {
        sent: deliveries.len(),
        ..Tally::default()
    };
    let mut wrong = Vec::new();
    for d in deliveries {
        match &d.answer {
            Answer::Applied => tally.applied_200 += 1,
            Answer::Duplicate => tally.duplicate_200 += 1,
            Answer::Queued => tally.queued += 1,
            Answer::Retry { retry_after } => {
                tally.retry += 1;
                if retry_after.is_none() {
                    wrong.push(format!("{}: 503 without Retry-After", d.event.id));
                }
            }
            Answer::Unanswered(why) => {
                if services.downs().iter().any(|w| w.met(d.started, d.ended)) {
                    tally.edge_down += 1;
                } else {
                    wrong.push(format!(
                        "{}: no answer while the edge was up: {why}",
                        d.event.id
                    ));
                }
            }
            Answer::Other { status, body } => {
                wrong.push(format!(
                    "{}: answered {status}, neither 2xx nor a retry status: {body}",
                    d.event.id
                ));
            }
        }
    }
    fail_on(&wrong, "answers");

    services.wait_drained().await;
    let text = services.metrics().await;
    let replayed = |outcome| {
        metric(
            &text,
            "hookline_edge_spool_replayed_total",
            &[("outcome", outcome)],
        )
    };
    // Counters of at most a few thousand events: whole numbers, exact as f64.
    let (replayed_applied, replayed_duplicate) =
        (replayed("applied") as usize, replayed("duplicate") as usize);
    tally.duplicate = tally.duplicate_200 + replayed_duplicate;

    let mut client = services.client().await;
    let records = records(&mut client).await;
    let contacts = contacts(&mut client).await;

    // Each event with all its deliveries.
    let mut events: BTreeMap<&str, (&Arc<Event>, Vec<&Delivery>)> = BTreeMap::new();
    for d in deliveries {
        events
            .entry(d.event.id.as_str())
            .or_insert_with(|| (&d.event, Vec::new()))
            .1
            .push(d);
    }
    let ours: HashMap<String, &Arc<Event>> =
        events.values().map(|(e, _)| (e.record_id(), *e)).collect();
    let mut logged: HashMap<&str, Vec<&v1::EventRecord>> = HashMap::new();
    for r in &records {
        if ours.contains_key(&r.event_id) {
            logged.entry(r.event_id.as_str()).or_default().push(r);
        } else {
            wrong.push(format!("a record of no event sent: {r:?}"));
        }
    }
    for (event, answers) in events.values() {
        let acknowledged = answers.iter().any(|d| d.answer.acknowledged());
        let found = logged
            .remove(event.record_id().as_str())
            .unwrap_or_default();
        match (acknowledged, found.as_slice()) {
            (_, [record]) => {
                if record.outcome() == v1::EventOutcome::Applied {
                    tally.applied += 1;
                } else {
                    wrong.push(format!("{}: recorded as {:?}", event.id, record.outcome()));
                }
                let applied_at = record
                    .applied_at
                    .as_ref()
                    .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                for d in answers.iter().filter(|d| d.answer == Answer::Applied) {
                    if applied_at > d.answered_at_ms {
                        wrong.push(format!(
                            "{}: applied again at {applied_at} ms after the sender was told \
                             at {} ms that it had been",
                            event.id, d.answered_at_ms
                        ));
                    }
                }
                check_contact(event, contacts.get(&event.email), &mut wrong);
            }
            (true, []) => wrong.push(format!(
                "{}: acknowledged ({:?}) but never applied",
                event.id,
                answers.iter().map(|d| &d.answer).collect::<Vec<_>>()
            )),
            (false, []) => {}
            (_, many) => wrong.push(format!(
                "{}: {} records in the log: {many:?}",
                event.id,
                many.len()
            )),
        }
    }
    // Every APPLIED answer is one application: more of them than records means an event
    // took effect twice. (Fewer is fine: an answer can be lost with a killed process or
    // a call given up on, and the replay then hears DUPLICATE.)
    if tally.applied_200 + replayed_applied > tally.applied {
        wrong.push(format!(
            "contacts-svc answered APPLIED {} times (live {}, replayed {replayed_applied}) \
             for {} applied events",
            tally.applied_200 + replayed_applied,
            tally.applied_200,
            tally.applied
        ));
    }
    fail_on(&wrong, "exactly-once");
    tally
}

/// The contact of `event` must hold exactly its one purchase.
fn check_contact(event: &Event, contact: Option<&v1::Contact>, wrong: &mut Vec<String>) {
    let Some(contact) = contact else {
        wrong.push(format!(
            "{}: applied, but no contact has {}",
            event.id, event.email
        ));
        return;
    };
    let purchases: Vec<(&str, i64, &str)> = contact
        .purchases
        .iter()
        .map(|p| (p.payment_intent_id.as_str(), p.amount, p.event_id.as_str()))
        .collect();
    let record_id = event.record_id();
    let want = [(
        event.payment_intent.as_str(),
        event.amount,
        record_id.as_str(),
    )];
    let totals: Vec<i64> = contact.totals.iter().map(|t| t.purchased).collect();
    if purchases != want || totals != [event.amount] {
        wrong.push(format!(
            "{}: its contact holds purchases {purchases:?} and totals {totals:?}, \
             not exactly {want:?}",
            event.id
        ));
    }
}

fn fail_on(wrong: &[String], what: &str) {
    assert!(
        wrong.is_empty(),
        "{} {what} problems, the first 20:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Pages a listing to its end (bounded, in case a token never ends).
const MAX_PAGES: usize = 1000;

/// The whole webhook log of the `stripe` source.
async fn records(
    client: &mut ContactsServiceClient<tonic::transport::Channel>,
) -> Vec<v1::EventRecord> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let page = client
            .list_events(v1::ListEventsRequest {
                page_size: 500,
                page_token: token,
                source: "stripe".into(),
                ..Default::default()
            })
            .await
            .expect("ListEvents")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("ListEvents did not end within {MAX_PAGES} pages");
}

/// Every contact, by normalized email.
async fn contacts(
    client: &mut ContactsServiceClient<tonic::transport::Channel>,
) -> HashMap<String, v1::Contact> {
    let mut out = HashMap::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let page = client
            .list_contacts(v1::ListContactsRequest {
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("ListContacts")
            .into_inner();
        for c in page.contacts {
            if let Some(previous) = out.insert(c.email.clone(), c) {
                panic!("two contacts hold {}: {previous:?}", previous.email);
            }
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("ListContacts did not end within {MAX_PAGES} pages");
}
