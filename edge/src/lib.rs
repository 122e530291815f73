//! The edge receives webhooks from Stripe, GoHighLevel and other senders, verifies their
//! signatures over the raw bytes, normalizes them into `contacts.v1.WebhookEvent`s and
//! hands them to contacts-svc, answering each sender with the status it needs: 2xx only
//! once the event took effect, a retry status when it could not.
//!
//! [`run`] owns the server; `main.rs` only parses flags and wires.

pub mod config;
pub mod contacts;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod routes;
pub mod secret;
pub mod server;
pub mod sources;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::config::Config;
pub use crate::contacts::Contacts;
use crate::limits::BodyBudget;
pub use crate::metrics::Metrics;
pub use crate::routes::Routes;
use crate::sources::Source;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct State {
    pub sources: BTreeMap<String, Configured>,
    pub contacts: Contacts,
    pub max_body_bytes: usize,
    /// Bytes of bodies buffered at once, across every connection.
    pub body_budget: BodyBudget,
    pub metrics: Metrics,
}

/// A configured source and its name, shared with metric labels.
#[derive(Debug)]
pub struct Configured {
    pub name: Arc<String>,
    pub source: Box<dyn Source>,
}

/// Serves webhooks on `listener` until `shutdown` resolves, and metrics on `metrics`
/// when given. The webhook port serves metrics too only when there is no such listener
/// and the configuration asks for it (`metrics_on_webhook_port`): it faces the internet.
pub async fn run(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // The server is compiled once, here, rather than for every caller's future type.
    serve_all(listener, metrics, config, Box::pin(shutdown)).await;
}

async fn serve_all(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: Config,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) {
    let contacts = Contacts::connect_lazy(&config.contacts_urls, config.contacts_timeout);
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
    });
    let limits = config.limits;
    // The public port publishes internal metrics only when asked to, and never beside a
    // listener of their own.
    let webhook_routes = if metrics.is_none() && config.metrics_on_webhook_port {
        Routes::All
    } else {
        Routes::Webhooks
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics_server = metrics.map(|listener| {
        let state = state.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            server::serve(
                listener,
                state,
                Box::pin(shutdown),
                config.shutdown_grace,
                Routes::Metrics,
                limits,
            )
            .await;
        })
    });
    server::serve(
        listener,
        state,
        shutdown,
        config.shutdown_grace,
        webhook_routes,
        limits,
    )
    .await;
    let _ = stop.send(true);
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
}
