//! The steady load: unique signed events, sent open-loop, every answer recorded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{STRIPE_SECRET, now_millis, now_secs, stripe_checkout, stripe_sign};

use super::{CLIENT_TIMEOUT, HttpClient, RATE, fetch, http_client};

/// One unique Stripe `checkout.session.completed`: its own event id, email and payment
/// intent, so that each event makes a contact of its own holding one purchase.
#[derive(Debug)]
pub struct Event {
    /// The provider's event id (`evt_…`).
    pub id: String,
    pub email: String,
    pub payment_intent: String,
    pub amount: i64,
    /// The body, the same bytes on every delivery of the event, as a sender resends it.
    pub body: Bytes,
}

impl Event {
    /// The `n`th event of the run `tag`.
    pub fn new(tag: &str, n: usize) -> Arc<Self> {
        let id = format!("evt_fault_{tag}_{n:05}");
        let email = format!("fault-{tag}-{n:05}@example.com");
        let payment_intent = format!("pi_fault_{tag}_{n:05}");
        let amount = 100 + i64::try_from(n).unwrap_or(0);
        let body = Bytes::from(stripe_checkout(&id, &email, amount, &payment_intent));
        Arc::new(Self {
            id,
            email,
            payment_intent,
            amount,
            body,
        })
    }

    /// `count` events of the run `tag`.
    pub fn many(tag: &str, count: usize) -> Vec<Arc<Self>> {
        (0..count).map(|n| Self::new(tag, n)).collect()
    }

    /// The id contacts-svc records it under.
    pub fn record_id(&self) -> String {
        format!("stripe:{}", self.id)
    }
}

/// What the edge answered one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 `applied`.
    Applied,
    /// 200 `duplicate`.
    Duplicate,
    /// 202 `queued`: spooled.
    Queued,
    /// 503, the retry status of Stripe's source, with its `Retry-After` if any.
    Retry { retry_after: Option<String> },
    /// No answer: refused, reset, or none in time. Allowed only while the edge is down.
    Unanswered(String),
    /// Anything else: always a failure.
    Other { status: u16, body: String },
}

impl Answer {
    fn of(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let said = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned));
        match (status.as_u16(), said.as_deref()) {
            (200, Some("applied")) => Self::Applied,
            (200, Some("duplicate")) => Self::Duplicate,
            (202, Some("queued")) => Self::Queued,
            (503, _) => Self::Retry {
                retry_after: headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            },
            (status, _) => Self::Other {
                status,
                body: String::from_utf8_lossy(body).into_owned(),
            },
        }
    }

    /// Whether the sender was told the event is taken care of.
    pub fn acknowledged(&self) -> bool {
        matches!(self, Self::Applied | Self::Duplicate | Self::Queued)
    }
}

/// One delivery of an event and its answer.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event: Arc<Event>,
    pub started: Instant,
    pub ended: Instant,
    /// When the answer came, Unix ms (the clock contacts-svc stamps records with).
    pub answered_at_ms: i64,
    pub answer: Answer,
}

/// Delivers events to the edge's `/webhooks/stripe`, signed now, as Stripe does.
#[derive(Clone, Debug)]
pub struct Sender {
    client: HttpClient,
    url: String,
}

impl Sender {
    pub fn new(http_port: u16) -> Self {
        Self {
            client: http_client(),
            url: format!("http://127.0.0.1:{http_port}/webhooks/stripe"),
        }
    }

    /// Delivers `event` once and records the answer.
    pub async fn deliver(&self, event: Arc<Event>) -> Delivery {
        let started = Instant::now();
        let signature = stripe_sign(STRIPE_SECRET, now_secs(), &event.body);
        let req = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("stripe-signature", signature)
            .body(Full::new(event.body.clone()))
            .expect("a webhook request");
        let answer = match fetch(&self.client, req, CLIENT_TIMEOUT).await {
            Ok((parts, body)) => Answer::of(parts.status, &parts.headers, &body),
            Err(e) => Answer::Unanswered(e),
        };
        Delivery {
            event,
            started,
            ended: Instant::now(),
            answered_at_ms: now_millis(),
            answer,
        }
    }
}

/// An open-loop load: events go out at a steady rate whatever the answers, each as a
/// task of its own, so that a slow answer delays no other delivery.
#[derive(Debug)]
pub struct Load {
    sent: Arc<AtomicUsize>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts delivering `events` in order, [`RATE`] a second.
    pub fn start(sender: &Sender, events: Vec<Arc<Event>>) -> Self {
        let sent = Arc::new(AtomicUsize::new(0));
        let deliveries = Arc::new(Mutex::new(Vec::with_capacity(events.len())));
        let task = tokio::spawn({
            let (sender, sent, deliveries) = (sender.clone(), sent.clone(), deliveries.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
                let mut requests = JoinSet::new();
                for event in events {
                    tick.tick().await;
                    let (sender, deliveries) = (sender.clone(), deliveries.clone());
                    requests.spawn(async move {
                        let delivery = sender.deliver(event).await;
                        deliveries
                            .lock()
                            .expect("the deliveries' lock")
                            .push(delivery);
                    });
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                while requests.join_next().await.is_some() {}
            }
        });
        Self {
            sent,
            deliveries,
            task,
        }
    }

    /// Deliveries started so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Deliveries started and not answered yet.
    pub fn in_flight(&self) -> usize {
        let answered = self.deliveries.lock().expect("the deliveries' lock").len();
        self.sent().saturating_sub(answered)
    }

    /// Deliveries acknowledged (2xx) whose answer came before `at`.
    pub fn acknowledged_before(&self, at: Instant) -> usize {
        self.deliveries
            .lock()
            .expect("the deliveries' lock")
            .iter()
            .filter(|d| d.answer.acknowledged() && d.ended < at)
            .count()
    }

    /// Waits until every delivery is answered (or given up on) and returns them all.
    pub async fn finish(self) -> Vec<Delivery> {
        self.task.await.expect("the load's task");
        std::mem::take(&mut *self.deliveries.lock().expect("the deliveries' lock"))
    }
}
