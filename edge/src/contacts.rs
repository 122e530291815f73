//! The gRPC client of contacts-svc: one lazily connected HTTP/2 channel, balanced over
//! every configured address, with a deadline on every call. A configured DNS name stands
//! for all its addresses, looked up again every `contacts_dns_refresh_secs` (a headless
//! service's pods as they come and go): `discovery.rs` decides the set, `refresh.rs`
//! keeps the balancer in step with it.
//!
//! Webhooks that arrive together are sent together. Each event joins a queue; a
//! dispatcher sends what has queued up as one `ApplyEvents` call as soon as one of a few
//! call slots is free, so an event never waits for a batch to fill: when the edge is
//! idle it goes alone at once, and under load the batches grow by themselves. A call
//! costs far more than an event in it (HTTP/2 framing, wake-ups, Redis round trips).

mod discovery;
mod refresh;

use std::time::Duration;

use hookline_proto::prost::Message as _;
use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::secret::Secret;
use crate::trace::Trace;

pub use refresh::{Resolve, SystemResolver};

/// How long a connection to contacts-svc may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Changes to the balancer's endpoints waiting to be taken.
const ENDPOINT_CHANGES: usize = 64;
/// How long a readiness probe waits for contacts-svc.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Most events in one call.
const MAX_BATCH: usize = 128;
/// Most encoded bytes in one call, unless a single event is larger (it then goes
/// alone): ignored events carry their raw body.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest message either way: an ignored event with a body of the largest
/// `max_body_bytes` (64 MiB), with room for its envelope.
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;
/// Calls in flight at once. A few keep contacts-svc busy while the next batch fills.
const CALL_SLOTS: usize = 8;
/// Events waiting for a call slot; beyond this, webhooks wait to enqueue.
const QUEUE: usize = 4096;

pub type Answer = Result<v1::ApplyEventResponse, tonic::Status>;

/// An event waiting to be sent, and where its answer goes.
#[derive(Debug)]
struct Job {
    item: v1::ApplyEventsItem,
    reply: oneshot::Sender<Answer>,
}

impl Job {
    /// Whether nobody waits for the answer any more: the sender went away or the
    /// request's deadline passed while the job was queued. Such an event is not sent:
    /// the sender was told to retry (or heard nothing), so applying it now would only
    /// race its own redelivery.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The next queued job somebody still waits for; `None` once every handle is gone.
async fn next_live(jobs: &mut mpsc::Receiver<Job>) -> Option<Job> {
    loop {
        let job = jobs.recv().await?;
        if !job.abandoned() {
            return Some(job);
        }
    }
}

/// How the edge calls contacts-svc.
#[derive(Clone, Debug)]
pub struct ContactsOptions {
    /// Deadline of every call.
    pub timeout: Duration,
    /// How often DNS names are looked up again.
    pub dns_refresh: Duration,
    /// The bearer token contacts-svc asks for.
    pub token: Option<Secret>,
    /// For `https://` addresses: the authority to trust, and the edge's own certificate
    /// for mutual TLS. The server name checked is each URL's host.
    pub tls: Option<ContactsTls>,
}

/// The TLS settings of calls to contacts-svc. Its `Debug` shows nothing of them: they
/// may hold the edge's private key.
#[derive(Clone)]
pub struct ContactsTls(pub ClientTlsConfig);

impl std::fmt::Debug for ContactsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContactsTls([redacted])")
    }
}

impl ContactsOptions {
    /// Plain calls with this deadline.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            dns_refresh: Duration::from_secs(30),
            token: None,
            tls: None,
        }
    }
}

/// Adds the edge's `authorization: Bearer …` to every call, when it has a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// `None` when the token cannot travel in a header (the configuration refuses such
    /// a token before this is made).
    fn new(token: Option<&Secret>) -> Self {
        Self(token.and_then(|t| {
            let mut value = MetadataValue::try_from(format!("Bearer {}", t.expose())).ok()?;
            value.set_sensitive(true);
            Some(value)
        }))
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer([redacted])"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = ContactsServiceClient<InterceptedService<Channel, Bearer>>;

/// Handle on contacts-svc; cheap to clone.
#[derive(Clone, Debug)]
pub struct Contacts {
    queue: mpsc::Sender<Job>,
    client: Client,
    health: HealthClient<InterceptedService<Channel, Bearer>>,
    timeout: Duration,
}

impl Contacts {
    /// Prepares the channel; connections are made on first use and re-made as needed.
    /// DNS names among `urls` are looked up at once and again every
    /// `options.dns_refresh`; every call carries `options.token`, when there is one.
    /// Must be called within a tokio runtime: it starts the dispatcher.
    pub fn connect_lazy(urls: &[http::Uri], options: &ContactsOptions) -> Self {
        Self::connect_lazy_with(urls, options, SystemResolver)
    }

    /// [`Contacts::connect_lazy`] with names looked up and addresses tried by `resolver`.
    pub fn connect_lazy_with(
        urls: &[http::Uri],
        options: &ContactsOptions,
        resolver: impl Resolve,
    ) -> Self {
        let timeout = options.timeout;
        let dns_refresh = options.dns_refresh;
        let tls = options.tls.clone();
        // `uri` reaches one address of `url`; over TLS, the certificate must name `url`'s
        // host, whatever address was dialled.
        let endpoint = move |uri: http::Uri, url: &http::Uri| {
            let endpoint = Endpoint::from(uri)
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            match (&tls, url.host()) {
                (Some(tls), Some(host)) if url.scheme_str() == Some("https") => {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let tls = tls.0.clone().domain_name(host);
                    // The configuration was tried when the file was read: it holds.
                    endpoint.clone().tls_config(tls).unwrap_or(endpoint)
                }
                _ => endpoint,
            }
        };
        let names = urls
            .iter()
            .any(|u| matches!(discovery::Target::of(u), discovery::Target::Name { .. }));
        let channel = match urls {
            // IP addresses only: the channel as it always was, no task and no balancer for
            // one address.
            [url] if !names => endpoint(url.clone(), url).connect_lazy(),
            _ if !names => Channel::balance_list(urls.iter().map(|u| endpoint(u.clone(), u))),
            _ => {
                let (channel, changes) = Channel::balance_channel(ENDPOINT_CHANGES);
                let settings = refresh::Settings {
                    every: dns_refresh,
                    connect_timeout: CONNECT_TIMEOUT,
                    endpoint,
                };
                tokio::spawn(refresh::run(urls.to_vec(), settings, resolver, changes));
                channel
            }
        };
        let (queue, jobs) = mpsc::channel(QUEUE);
        let bearer = Bearer::new(options.token.as_ref());
        let client = ContactsServiceClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tokio::spawn(dispatch(jobs, client.clone(), timeout));
        Self {
            queue,
            client,
            health: HealthClient::with_interceptor(channel, bearer),
            timeout,
        }
    }

    /// Applies one event, within the deadline (waiting in the queue included).
    pub async fn apply(&self, event: v1::WebhookEvent, trace: &Trace) -> Answer {
        self.apply_item(v1::ApplyEventsItem {
            event: Some(event),
            request_id: trace.request_id.clone(),
            traceparent: trace.traceparent.clone(),
            replay_of: String::new(),
        })
        .await
    }

    /// Applies one event with the correlation ids it carries, within the deadline.
    pub async fn apply_item(&self, item: v1::ApplyEventsItem) -> Answer {
        let (reply, answer) = oneshot::channel();
        let job = Job { item, reply };
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        tokio::select! {
            sent = self.queue.send(job) => {
                if sent.is_err() {
                    return Err(tonic::Status::unavailable("the contacts-svc client stopped"));
                }
            }
            () = &mut deadline => return Err(late()),
        }
        tokio::select! {
            answer = answer => answer.unwrap_or_else(|_| Err(tonic::Status::unavailable("the call was dropped"))),
            () = &mut deadline => Err(late()),
        }
    }

    /// One page of contacts-svc's webhook log, within the deadline.
    pub async fn list_events(
        &self,
        request: v1::ListEventsRequest,
    ) -> Result<v1::ListEventsResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.list_events(request)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(late()),
        }
    }

    /// Whether contacts-svc answers and reports SERVING.
    pub async fn ready(&self) -> bool {
        let mut health = self.health.clone();
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: hookline_proto::SERVICE_NAME.to_owned(),
        });
        request.set_timeout(READY_TIMEOUT);
        match tokio::time::timeout(READY_TIMEOUT, health.check(request)).await {
            Ok(Ok(r)) => r.into_inner().status() == ServingStatus::Serving,
            _ => false,
        }
    }
}

/// What an answer of contacts-svc means for its event: the one place that decides, for
/// live deliveries and replays alike.
#[derive(Debug)]
pub enum Verdict {
    /// Applied, a duplicate, or ignored (and recorded): nothing is left to do, and the
    /// sender may be told so.
    Done(&'static str, v1::ApplyEventResponse),
    /// contacts-svc will not apply the event and records it only with its raw body:
    /// send it again with the body.
    NeedsBody,
    /// contacts-svc did not answer (down, unreachable, out of time): no event can be
    /// taken now. The event may wait in the spool.
    Unreachable(String),
    /// contacts-svc answered that this event cannot take effect now (Redis is down, or
    /// another call holds the event). The event may wait in the spool.
    Later(String),
    /// The event breaks the contract (contacts-svc refused it, or the call was refused
    /// as malformed or unauthorized): a bug, a version mismatch or a configuration
    /// error, never the sender's content. It waits for the fix.
    Rejected(String),
}

impl Verdict {
    pub fn of(answer: Answer) -> Self {
        let answer = match answer {
            Ok(a) => a,
            Err(s) => {
                let why = format!("{:?}: {}", s.code(), s.message());
                return match s.code() {
                    tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::OutOfRange
                    | tonic::Code::Unimplemented
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::NotFound
                    | tonic::Code::AlreadyExists => Self::Rejected(why),
                    _ => Self::Unreachable(why),
                };
            }
        };
        match answer.outcome() {
            v1::EventOutcome::Applied => Self::Done("applied", answer),
            v1::EventOutcome::Duplicate => Self::Done("duplicate", answer),
            v1::EventOutcome::Ignored => Self::Done("ignored", answer),
            v1::EventOutcome::BodyRequired => Self::NeedsBody,
            v1::EventOutcome::RetryLater => Self::Later(answer.reason),
            v1::EventOutcome::Rejected => Self::Rejected(answer.reason),
            v1::EventOutcome::Unspecified => Self::Later("contacts-svc gave no outcome".into()),
        }
    }
}

fn late() -> tonic::Status {
    tonic::Status::deadline_exceeded("contacts-svc did not answer in time")
}

/// Sends queued events as batches, one per free call slot, until every handle is gone.
async fn dispatch(mut jobs: mpsc::Receiver<Job>, client: Client, timeout: Duration) {
    let slots = std::sync::Arc::new(Semaphore::new(CALL_SLOTS));
    let mut pending: Option<Job> = None;
    loop {
        // Wait for a free slot first: events queue up meanwhile and go as one batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match pending.take() {
            Some(job) if !job.abandoned() => job,
            _ => match next_live(&mut jobs).await {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = first.item.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(job) = jobs.try_recv() else { break };
            if job.abandoned() {
                continue;
            }
            bytes += job.item.encoded_len();
            if bytes > MAX_BATCH_BYTES {
                pending = Some(job); // first of the next batch
                break;
            }
            batch.push(job);
        }
        let client = client.clone();
        tokio::spawn(async move {
            call(client, batch, timeout).await;
            drop(slot);
        });
    }
}

/// One `ApplyEvents` call; every job gets its own result, or the call's error.
async fn call(mut client: Client, batch: Vec<Job>, timeout: Duration) {
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.item, j.reply)).unzip();
    let count = items.len();
    let mut request = tonic::Request::new(v1::ApplyEventsRequest { items });
    request.set_timeout(timeout);
    let answer = match tokio::time::timeout(timeout, client.apply_events(request)).await {
        Ok(Ok(r)) => Ok(r.into_inner().results),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(late()),
    };
    let answer = answer.and_then(|results| {
        if results.len() == count {
            Ok(results)
        } else {
            Err(tonic::Status::internal(format!(
                "contacts-svc answered {} results for {count} events",
                results.len()
            )))
        }
    });
    match answer {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(outcome(result));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

/// One event's answer: its typed outcome, or the status a contacts-svc older than typed
/// outcomes answered instead.
#[allow(deprecated)] // `code` and `message` are read from older services only
fn outcome(result: v1::ApplyEventsResult) -> Answer {
    match (result.response, result.code) {
        (Some(r), _) if r.outcome() != v1::EventOutcome::Unspecified => Ok(r),
        (_, 0) => Err(tonic::Status::internal("contacts-svc gave no outcome")),
        (_, code) => Err(tonic::Status::new(code.into(), result.message)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn verdicts_of_answers_and_call_errors() {
        let outcome = |o: v1::EventOutcome| {
            Ok(v1::ApplyEventResponse {
                outcome: o.into(),
                ..Default::default()
            })
        };
        let status = |code| Err(tonic::Status::new(code, "why"));
        let cases: [(Answer, &str); 14] = [
            (outcome(v1::EventOutcome::Applied), "done applied"),
            (outcome(v1::EventOutcome::Duplicate), "done duplicate"),
            (outcome(v1::EventOutcome::Ignored), "done ignored"),
            (outcome(v1::EventOutcome::BodyRequired), "needs body"),
            (outcome(v1::EventOutcome::RetryLater), "later"),
            (outcome(v1::EventOutcome::Unspecified), "later"),
            (outcome(v1::EventOutcome::Rejected), "rejected"),
            // The call failed: nothing can be taken now.
            (status(tonic::Code::Unavailable), "unreachable"),
            (status(tonic::Code::DeadlineExceeded), "unreachable"),
            (status(tonic::Code::ResourceExhausted), "unreachable"),
            // The call was refused: waiting will not help, a fix will.
            (status(tonic::Code::InvalidArgument), "rejected"),
            (status(tonic::Code::Unimplemented), "rejected"),
            (status(tonic::Code::PermissionDenied), "rejected"),
            (status(tonic::Code::Unauthenticated), "rejected"),
        ];
        for (answer, want) in cases {
            let got = match Verdict::of(answer) {
                Verdict::Done(o, _) => format!("done {o}"),
                Verdict::NeedsBody => "needs body".into(),
                Verdict::Unreachable(_) => "unreachable".into(),
                Verdict::Later(_) => "later".into(),
                Verdict::Rejected(_) => "rejected".into(),
            };
            assert_eq!(got, want);
        }
    }

    #[test]
    #[allow(deprecated)]
    fn outcomes_typed_or_from_an_older_service() {
        let typed = |outcome: v1::EventOutcome| v1::ApplyEventsResult {
            response: Some(v1::ApplyEventResponse {
                outcome: outcome.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        // A typed outcome wins over the compatibility status beside it.
        let mut body_required = typed(v1::EventOutcome::BodyRequired);
        body_required.code = tonic::Code::InvalidArgument.into();
        let cases = [
            (
                typed(v1::EventOutcome::Applied),
                Ok(v1::EventOutcome::Applied),
            ),
            (body_required, Ok(v1::EventOutcome::BodyRequired)),
            // An older contacts-svc: a status only, or an answer without an outcome.
            (
                v1::ApplyEventsResult {
                    code: tonic::Code::Unavailable.into(),
                    message: "storage unavailable".into(),
                    ..Default::default()
                },
                Err(tonic::Code::Unavailable),
            ),
            (
                typed(v1::EventOutcome::Unspecified),
                Err(tonic::Code::Internal),
            ),
            (v1::ApplyEventsResult::default(), Err(tonic::Code::Internal)),
        ];
        for (result, want) in cases {
            let got = outcome(result.clone())
                .map(|r| r.outcome())
                .map_err(|s| s.code());
            assert_eq!(got, want, "{result:?}");
        }
    }

    /// Resolves every name to one address that accepts, and counts the lookups; its
    /// clones share one count, so the count's `Arc` tells whether the task still runs.
    #[derive(Clone, Debug, Default)]
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Resolve for Counting {
        async fn lookup(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        }

        async fn accepting(
            &self,
            addresses: &BTreeSet<SocketAddr>,
            _within: Duration,
        ) -> BTreeSet<SocketAddr> {
            addresses.clone()
        }
    }

    /// Polls `done` every few milliseconds until it holds, or panics after a while (of
    /// paused time: the clock jumps ahead whenever every task waits).
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_dns_refresh_ends_with_the_last_handle() {
        let resolver = Counting::default();
        let urls = ["http://contacts-svc:50051".parse().expect("a URL")];
        let options = ContactsOptions {
            dns_refresh: Duration::from_secs(1),
            ..ContactsOptions::new(Duration::from_secs(1))
        };
        let contacts = Contacts::connect_lazy_with(&urls, &options, resolver.clone());
        let lookups = || resolver.0.load(std::sync::atomic::Ordering::SeqCst);
        until("the name is looked up again", || lookups() >= 2).await;
        let copy = contacts.clone();
        drop(contacts);
        // A handle is left: the refresh goes on.
        let before = lookups();
        until("another lookup while a handle is left", || {
            lookups() > before
        })
        .await;
        drop(copy);
        // The dispatcher stops, the channel and its balancer go, and so does the task
        // with its resolver.
        until("the refresh task to end", || {
            std::sync::Arc::strong_count(&resolver.0) == 1
        })
        .await;
    }
}
