//! The edge receives webhooks from Stripe, GoHighLevel and other senders, verifies their
//! signatures over the raw bytes, normalizes them into `contacts.v1.WebhookEvent`s and
//! hands them to contacts-svc, answering each sender with the status it needs: 2xx only
//! once the event took effect, a retry status when it could not.
//!
//! [`run`] owns the server; `main.rs` only parses flags and wires.

pub mod config;
pub mod contacts;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod replay_service;
pub mod routes;
pub mod secret;
pub mod server;
pub mod sources;
pub mod spool;
pub mod trace;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub use crate::config::Config;
pub use crate::contacts::{Contacts, ContactsOptions, ContactsTls};
use crate::limits::BodyBudget;
pub use crate::metrics::Metrics;
pub use crate::routes::Routes;
use crate::sources::Source;
pub use crate::spool::{Closer, Spool};

/// Of the shutdown grace period, what is kept for spooling the requests still waiting
/// for contacts-svc when it ends.
const SPOOL_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the webhook listener's TLS files are checked for a change.
const TLS_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything a request handler needs.
#[derive(Debug)]
pub struct State {
    pub sources: BTreeMap<String, Configured>,
    pub contacts: Contacts,
    pub max_body_bytes: usize,
    /// Bytes of bodies buffered at once, across every connection.
    pub body_budget: BodyBudget,
    pub metrics: Metrics,
    /// Where events wait when contacts-svc cannot take them.
    pub spool: Spool,
    /// Set when shutdown begins: the moment by which requests still waiting for
    /// contacts-svc stop waiting and spool their event, so that they are answered
    /// within the grace period.
    pub answer_by: watch::Receiver<Option<Instant>>,
}

/// A configured source and its name, shared with metric labels.
#[derive(Debug)]
pub struct Configured {
    pub name: Arc<String>,
    pub source: Box<dyn Source>,
}

/// The addresses the edge serves, bound by the caller (tests pass `:0` listeners).
#[derive(Debug)]
pub struct Listeners {
    /// Webhooks and probes; it faces the senders.
    pub webhooks: TcpListener,
    /// `GET /metrics`, when served on an address of its own.
    pub metrics: Option<TcpListener>,
    /// The internal gRPC API (`edge.v1.ReplayService`), when served.
    pub admin: Option<TcpListener>,
}

/// Serves until `shutdown` resolves: webhooks, metrics and the internal API on their
/// listeners, spooling into `spool` (opened by the caller, from `config.spool_dir`) and
/// replaying from it. The webhook port serves metrics too only when there is no
/// listener for them and the configuration asks for it (`metrics_on_webhook_port`): it
/// faces the internet. Returns once in-flight requests are answered (or the grace
/// period is over) and the spool is closed.
pub async fn run(
    listeners: Listeners,
    config: Config,
    spool: (Spool, Closer),
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // The server is compiled once, here, rather than for every caller's future type.
    serve_all(listeners, config, spool, Box::pin(shutdown)).await;
}

async fn serve_all(
    Listeners {
        webhooks: listener,
        metrics,
        admin,
    }: Listeners,
    config: Config,
    (spool, closer): (Spool, Closer),
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) {
    let contacts = Contacts::connect_lazy(
        &config.contacts_urls,
        &ContactsOptions {
            timeout: config.contacts_timeout,
            dns_refresh: config.contacts_dns_refresh,
            token: config.contacts_token.clone(),
            tls: config.contacts_tls.clone(),
        },
    );
    let (set_answer_by, answer_by) = watch::channel(None);
    let grace = config.shutdown_grace;
    // One signal for every server and the replayer, and one deadline for all of them:
    // the grace period from the moment shutdown begins.
    let (stop, stopped) = watch::channel(None::<Instant>);
    let shutdown = Box::pin(async move {
        shutdown.await;
        let now = Instant::now();
        set_answer_by.send_replace(Some(
            now + grace.saturating_sub(SPOOL_MARGIN.min(grace / 2)),
        ));
        stop.send_replace(Some(now + grace));
    });
    let recorded = Metrics::new();
    let (reserved, refused) = recorded.body_budget();
    let body_budget = BodyBudget::new(config.limits.max_buffered_body_bytes, reserved, refused);
    let state = Arc::new(State {
        sources: config
            .sources
            .into_iter()
            .map(|(name, source)| {
                let configured = Configured {
                    name: Arc::new(name.clone()),
                    source,
                };
                (name, configured)
            })
            .collect(),
        contacts,
        max_body_bytes: config.max_body_bytes,
        body_budget,
        metrics: recorded,
        spool: spool.clone(),
        answer_by,
    });
    let (stop_replay, replay_stopped) = watch::channel(false);
    let replayer = tokio::spawn(spool::replay::run(
        spool,
        state.contacts.clone(),
        state.metrics.replay_outcomes(),
        replay_stopped,
    ));
    let stopping = |mut stopped: watch::Receiver<Option<Instant>>| async move {
        let _ = stopped.wait_for(Option::is_some).await;
    };
    let limits = config.limits;
    // The public port publishes internal metrics only when asked to, and never beside a
    // listener of their own.
    let webhook_routes = if metrics.is_none() && config.metrics_on_webhook_port {
        Routes::All
    } else {
        Routes::Webhooks
    };
    let metrics_server = metrics.map(|listener| {
        let state = state.clone();
        let shutdown = stopping(stopped.clone());
        tokio::spawn(async move {
            server::serve(
                listener,
                state,
                Box::pin(shutdown),
                config.shutdown_grace,
                Routes::Metrics,
                limits,
                None,
            )
            .await;
        })
    });
    let admin_server = admin.map(|listener| {
        let shutdown = stopping(stopped.clone());
        tokio::spawn(serve_admin(listener, state.clone(), shutdown))
    });
    let tls_watcher = config
        .tls
        .clone()
        .map(|tls| tokio::spawn(tls.watch(TLS_CHECK_INTERVAL)));
    server::serve(
        listener,
        state,
        shutdown,
        config.shutdown_grace,
        webhook_routes,
        limits,
        config.tls.clone(),
    )
    .await;
    if let Some(watcher) = tls_watcher {
        watcher.abort();
    }
    let _ = stop_replay.send(true);
    let _ = replayer.await;
    // The other servers stopped accepting with the webhook port; their calls get what
    // is left of the same grace period.
    let deadline = (*stopped.borrow()).unwrap_or_else(Instant::now);
    for task in [metrics_server, admin_server].into_iter().flatten() {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            abort.abort();
        }
    }
    closer.close().await;
}

/// The internal gRPC API, with reflection for grpcurl, until `shutdown`.
async fn serve_admin(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hookline_proto::FILE_DESCRIPTOR_SET)
            .with_service_name(hookline_proto::REPLAY_SERVICE_NAME)
    };
    // Both versions: grpcurl and other tools still ask for v1alpha.
    let reflections = reflection()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .and_then(|v1| {
            reflection()
                .with_service_name("grpc.reflection.v1alpha.ServerReflection")
                .build_v1alpha()
                .map(|v1alpha| (v1, v1alpha))
        });
    let (reflection_v1, reflection_v1alpha) = match reflections {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the internal API cannot describe itself, not served");
            return;
        }
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let replays = hookline_proto::edge::v1::replay_service_server::ReplayServiceServer::new(
        replay_service::Replays::new(state),
    );
    let served = tonic::transport::Server::builder()
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(replays)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the internal API stopped");
    }
}
