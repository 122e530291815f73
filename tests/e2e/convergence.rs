//! The final contacts must not depend on the order in which events arrive, on how often
//! each arrives, or on how many callers apply them at once. Scenarios are generated; each
//! is applied through the real contacts-svc on a real Redis in several orders (with
//! duplicates, and with the event that links two identities last), and the final
//! contacts are compared. The same properties hold on a Redis Cluster with two
//! contacts-svc, each event applied by either.

use hookline_proto::prost_types::Timestamp;
use hookline_proto::v1::contacts_service_client::ContactsServiceClient;
use hookline_proto::v1::{self, webhook_event::Payload};
use hookline_tests::{ContactsSvc, Redis, RedisCluster};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

/// One person of a scenario; every identifier is theirs alone.
#[derive(Clone, Debug)]
struct Person(usize);

impl Person {
    fn email(&self) -> String {
        format!("Person{}@Example.com", self.0)
    }
    fn phone(&self) -> String {
        format!("(415) 555-01{:02}", self.0)
    }
    fn ghl(&self) -> v1::ExternalId {
        v1::ExternalId {
            system: "ghl_contact".into(),
            id: format!("ghl{}", self.0),
        }
    }
    fn customer(&self) -> v1::ExternalId {
        v1::ExternalId {
            system: "stripe_customer".into(),
            id: format!("cus_{}", self.0),
        }
    }
    fn payment(&self, k: u8) -> String {
        format!("pi_{}_{k}", self.0)
    }
}

/// What a generated event says.
#[derive(Clone, Debug)]
enum Kind {
    /// A paid checkout: email (in a random case), maybe phone and customer id.
    Checkout {
        payment: u8,
        amount: i64,
        phone: bool,
        customer: bool,
    },
    /// payment_intent.succeeded with no contact fields: linked by the payment alone.
    Payment { payment: u8, amount: i64 },
    /// refund.created / refund.updated: linked by the payment.
    Refund {
        payment: u8,
        refund: u8,
        amount: i64,
        failed: bool,
    },
    /// charge.refunded: email and the cumulative amount of the charge.
    ChargeRefunded { payment: u8, cumulative: i64 },
    /// customer.updated: customer id, a name, maybe the email.
    Customer { name: u8, email: bool },
    /// A GoHighLevel appointment update: only the GHL contact id.
    Appointment { appointment: u8, status: i32 },
    /// A GoHighLevel contact create/update: the event that links the GHL id to the
    /// email (and maybe the phone), with tags.
    GhlContact { tags: u8, phone: bool },
    /// A workflow webhook carrying only a phone number and tags.
    PhoneOnly { tags: u8 },
}

#[derive(Clone, Debug)]
struct Ev {
    n: usize,
    person: usize,
    at: i64,
    kind: Kind,
}

fn ts(secs: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: 1_790_000_000 + secs,
        nanos: 0,
    })
}

fn tags(n: u8) -> Option<v1::TagList> {
    Some(v1::TagList {
        tags: (0..n % 3).map(|i| format!("tag{i}")).collect(),
    })
}

impl Ev {
    fn to_proto(&self) -> v1::WebhookEvent {
        let p = Person(self.person);
        let mut contact = v1::ContactData::default();
        let payload = match &self.kind {
            Kind::Checkout {
                payment,
                amount,
                phone,
                customer,
            } => {
                let email = if self.n.is_multiple_of(2) {
                    p.email()
                } else {
                    p.email().to_uppercase()
                };
                contact.email = Some(email);
                contact.phone = phone.then(|| p.phone());
                contact.external_ids = customer.then(|| p.customer()).into_iter().collect();
                contact.payment_refs = vec![p.payment(*payment)];
                Payload::PurchaseCompleted(v1::PurchaseCompleted {
                    purchase_id: p.payment(*payment),
                    amount: *amount,
                    currency: "usd".into(),
                    payment_intent_id: p.payment(*payment),
                    checkout_session_id: format!("cs_{}_{payment}", self.person),
                    ..Default::default()
                })
            }
            Kind::Payment { payment, amount } => {
                contact.payment_refs = vec![p.payment(*payment)];
                Payload::PurchaseCompleted(v1::PurchaseCompleted {
                    purchase_id: p.payment(*payment),
                    amount: *amount,
                    currency: "usd".into(),
                    payment_intent_id: p.payment(*payment),
                    ..Default::default()
                })
            }
            Kind::Refund {
                payment,
                refund,
                amount,
                failed,
            } => {
                contact.payment_refs = vec![p.payment(*payment)];
                Payload::RefundUpdated(v1::RefundUpdated {
                    refund_id: format!("re_{}_{payment}_{refund}", self.person),
                    charge_id: format!("ch_{}_{payment}", self.person),
                    payment_intent_id: p.payment(*payment),
                    amount: *amount,
                    currency: "usd".into(),
                    status: if *failed {
                        v1::RefundStatus::Failed
                    } else {
                        v1::RefundStatus::Succeeded
                    }
                    .into(),
                    charge_amount_refunded: 0,
                })
            }
            Kind::ChargeRefunded {
                payment,
                cumulative,
            } => {
                contact.email = Some(p.email());
                contact.payment_refs = vec![p.payment(*payment)];
                Payload::RefundUpdated(v1::RefundUpdated {
                    charge_id: format!("ch_{}_{payment}", self.person),
                    payment_intent_id: p.payment(*payment),
                    currency: "usd".into(),
                    status: v1::RefundStatus::Succeeded.into(),
                    charge_amount_refunded: *cumulative,
                    ..Default::default()
                })
            }
            Kind::Customer { name, email } => {
                contact.external_ids = vec![p.customer()];
                contact.name = Some(format!("Name {name}"));
                contact.email = email.then(|| p.email());
                Payload::ContactUpserted(v1::ContactUpserted {})
            }
            Kind::Appointment {
                appointment,
                status,
            } => {
                contact.external_ids = vec![p.ghl()];
                Payload::AppointmentUpdated(v1::AppointmentUpdated {
                    appointment_id: format!("ap_{}_{appointment}", self.person),
                    status: *status,
                    start_time: ts(10_000 + i64::from(*appointment) * 3600),
                    ..Default::default()
                })
            }
            Kind::GhlContact { tags: t, phone } => {
                contact.external_ids = vec![p.ghl()];
                contact.email = Some(p.email());
                contact.phone = phone.then(|| p.phone());
                contact.first_name = Some(format!("First{}", self.n % 2));
                contact.tags = tags(*t);
                Payload::ContactUpserted(v1::ContactUpserted {})
            }
            Kind::PhoneOnly { tags: t } => {
                contact.phone = Some(p.phone());
                contact.tags = tags(*t);
                Payload::ContactUpserted(v1::ContactUpserted {})
            }
        };
        v1::WebhookEvent {
            id: format!("gen:evt_{}", self.n),
            source: "gen".into(),
            kind: "generated".into(),
            r#type: format!("{:?}", self.kind)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned(),
            occurred_at: ts(self.at),
            received_at: ts(100_000),
            contact: Some(contact),
            payload: Some(payload),
            ..v1::WebhookEvent::default()
        }
    }

    /// Whether this event ties a GHL id or a bare phone to an email.
    fn links(&self) -> bool {
        matches!(self.kind, Kind::GhlContact { .. })
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    let status = prop::sample::select(vec![
        v1::AppointmentStatus::Booked as i32,
        v1::AppointmentStatus::Attended as i32,
        v1::AppointmentStatus::NoShow as i32,
        v1::AppointmentStatus::Cancelled as i32,
    ]);
    prop_oneof![
        (0u8..2, 100i64..5000, any::<bool>(), any::<bool>()).prop_map(
            |(payment, amount, phone, customer)| Kind::Checkout {
                payment,
                amount,
                phone,
                customer
            }
        ),
        (0u8..2, 100i64..5000).prop_map(|(payment, amount)| Kind::Payment { payment, amount }),
        (0u8..2, 0u8..2, 1i64..100, any::<bool>()).prop_map(|(payment, refund, amount, failed)| {
            Kind::Refund {
                payment,
                refund,
                amount,
                failed,
            }
        }),
        (0u8..2, 1i64..300).prop_map(|(payment, cumulative)| Kind::ChargeRefunded {
            payment,
            cumulative
        }),
        (0u8..3, any::<bool>()).prop_map(|(name, email)| Kind::Customer { name, email }),
        (0u8..2, status).prop_map(|(appointment, status)| Kind::Appointment {
            appointment,
            status
        }),
        (0u8..4, any::<bool>()).prop_map(|(tags, phone)| Kind::GhlContact { tags, phone }),
        (0u8..4).prop_map(|tags| Kind::PhoneOnly { tags }),
    ]
}

/// A few people and their events, with occurrence times drawn from a small range so
/// that ties (broken by event id) happen.
fn scenario() -> impl Strategy<Value = Vec<Ev>> {
    (1usize..=3)
        .prop_flat_map(|people| prop::collection::vec((0..people, 0i64..8, kind()), 2..12))
        .prop_map(|evs| {
            evs.into_iter()
                .enumerate()
                .map(|(n, (person, at, kind))| Ev {
                    n,
                    person,
                    at: at * 60,
                    kind,
                })
                .collect()
        })
}

/// The orders a scenario is applied in: as generated, reversed, linking events last,
/// and a shuffle with duplicates.
fn orders(events: &[Ev], seed: u64) -> Vec<Vec<Ev>> {
    let mut reversed = events.to_vec();
    reversed.reverse();
    let (mut linking, mut rest): (Vec<Ev>, Vec<Ev>) = events.iter().cloned().partition(Ev::links);
    rest.append(&mut linking);
    let mut shuffled: Vec<Ev> = events
        .iter()
        .chain(events.iter().take(3))
        .cloned()
        .collect();
    let mut s = seed | 1;
    for i in (1..shuffled.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        shuffled.swap(i, usize::try_from(s % (i as u64 + 1)).unwrap());
    }
    vec![events.to_vec(), reversed, rest, shuffled]
}

/// Where the cases of one property run.
#[derive(Clone, Copy, Debug)]
enum On {
    /// One Redis and one contacts-svc.
    Redis,
    /// A Redis Cluster (3 masters, a replica each) and two contacts-svc: each event goes
    /// to one of them, picked by its number and the case's seed.
    Cluster,
}

/// The Redis or cluster, flushed between runs.
enum Backend {
    Redis {
        _server: Box<Redis>,
        conn: redis::aio::MultiplexedConnection,
    },
    Cluster(RedisCluster),
}

/// A backend and contacts-svc for the cases of one property (flushed between runs),
/// with connections kept open across cases.
struct Env {
    rt: Runtime,
    backend: Backend,
    _contacts: Vec<ContactsSvc>,
    grpc: Vec<ContactsServiceClient<Channel>>,
}

impl Env {
    fn start(on: On) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (backend, contacts) = rt.block_on(async {
            match on {
                On::Redis => {
                    let redis = Redis::start().await;
                    let contacts = ContactsSvc::start(&redis.url()).await;
                    let conn = redis.conn().await;
                    (
                        Backend::Redis {
                            _server: Box::new(redis),
                            conn,
                        },
                        vec![contacts],
                    )
                }
                On::Cluster => {
                    let cluster = RedisCluster::start(3, 1).await;
                    let mut contacts = Vec::new();
                    for _ in 0..2 {
                        let options = contacts_svc::StoreOptions::default();
                        contacts
                            .push(ContactsSvc::start_on_cluster(&cluster.urls(), options).await);
                    }
                    (Backend::Cluster(cluster), contacts)
                }
            }
        });
        let grpc = rt.block_on(futures::future::join_all(
            contacts.iter().map(ContactsSvc::client),
        ));
        Self {
            rt,
            backend,
            _contacts: contacts,
            grpc,
        }
    }

    async fn flush(&self) {
        match &self.backend {
            Backend::Redis { conn, .. } => {
                let mut c = conn.clone();
                let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
            }
            Backend::Cluster(cluster) => cluster.flush().await,
        }
    }

    /// The contacts-svc that applies the event numbered `n` in an order drawn from `seed`.
    fn grpc_for(&self, n: usize, seed: u64) -> ContactsServiceClient<Channel> {
        let pick = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        self.grpc[usize::try_from(pick % self.grpc.len() as u64).unwrap()].clone()
    }

    /// Every contact, without the parts that legitimately depend on order (its
    /// generated id and the ids it absorbed), in a stable order.
    async fn final_state(&self) -> Vec<v1::Contact> {
        let mut grpc = self.grpc[0].clone();
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = grpc
                .list_contacts(v1::ListContactsRequest {
                    page_size: 500,
                    page_token: token,
                    stage: 0,
                })
                .await
                .expect("ListContacts")
                .into_inner();
            all.extend(page.contacts);
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        for c in &mut all {
            c.id.clear();
            c.merged_ids.clear();
        }
        all.sort_by_key(|c| format!("{c:?}"));
        all
    }

    /// Applies `events` in order, each through the contacts-svc `seed` picks for it;
    /// their outcomes.
    async fn apply_all(&self, events: &[Ev], seed: u64) -> Vec<v1::EventOutcome> {
        let mut outcomes = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            let answer = self
                .grpc_for(i, seed)
                .apply_event(v1::ApplyEventRequest {
                    event: Some(ev.to_proto()),
                })
                .await
                .unwrap_or_else(|e| panic!("{ev:?}: {e}"))
                .into_inner();
            assert_ne!(answer.outcome(), v1::EventOutcome::Ignored, "{ev:?}");
            outcomes.push(answer.outcome());
        }
        outcomes
    }
}

#[test]
fn any_order_and_any_duplication_give_the_same_contacts() {
    permutations(On::Redis, 200);
}

#[test]
fn any_order_and_any_duplication_give_the_same_contacts_on_a_cluster() {
    permutations(On::Cluster, 60);
}

/// Each generated scenario, applied in every order of [`orders`], ends in the same
/// contacts.
fn permutations(on: On, cases: u32) {
    let env = Env::start(on);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(scenario(), any::<u64>()), |(events, seed)| {
        env.rt.block_on(async {
            let mut states = Vec::new();
            for order in orders(&events, seed) {
                env.flush().await;
                env.apply_all(&order, seed).await;
                states.push(env.final_state().await);
            }
            for (i, state) in states.iter().enumerate().skip(1) {
                prop_assert_eq!(
                    state,
                    &states[0],
                    "order {} differs from the generated order",
                    i
                );
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn eight_parallel_appliers_of_overlapping_events_converge() {
    parallel_appliers(On::Redis, 12);
}

#[test]
fn eight_parallel_appliers_across_two_contacts_svc_converge_on_a_cluster() {
    parallel_appliers(On::Cluster, 8);
}

/// Eight appliers at once, each with an overlapping share of the events in its own
/// order, end in the contacts of applying them one by one; every redelivery after
/// them is a duplicate.
fn parallel_appliers(on: On, cases: u32) {
    let env = Env::start(on);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let many = prop::collection::vec(scenario(), 3..4).prop_map(|scenarios| {
        // Three scenarios' events, renumbered into one list of distinct events.
        scenarios
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(n, ev)| Ev { n, ..ev })
            .collect::<Vec<_>>()
    });
    let result = runner.run(&(many, any::<u64>()), |(events, seed)| {
        env.rt.block_on(async {
            env.flush().await;
            env.apply_all(&events, seed).await;
            let expected = env.final_state().await;

            env.flush().await;
            let appliers = (0..8u64).map(|i| {
                let mut order = orders(&events, seed.wrapping_add(i)).swap_remove((i % 4) as usize);
                // Each applier takes an overlapping share: most events, several twice.
                order.retain(|ev| !(ev.n as u64 + i).is_multiple_of(4) || i.is_multiple_of(2));
                let env = &env;
                async move { env.apply_all(&order, seed.wrapping_add(i)).await }
            });
            futures::future::join_all(appliers).await;
            // Every event was applied by one of the appliers: delivering each again
            // finds it done.
            let again = env.apply_all(&events, !seed).await;
            prop_assert!(
                again.iter().all(|o| *o == v1::EventOutcome::Duplicate),
                "{:?}",
                again
            );
            prop_assert_eq!(env.final_state().await, expected);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
