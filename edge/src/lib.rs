//! The edge receives webhooks from Stripe, GoHighLevel and other senders, verifies their
//! signatures over the raw bytes, normalizes them into `contacts.v1.WebhookEvent`s and
//! hands them to contacts-svc, answering each sender with the status it needs: 2xx only
//! once the event took effect, a retry status when it could not.
//!
//! [`run`] owns the server; `main.rs` only parses flags and wires.

pub mod config;
pub mod contacts;
pub mod error;
pub mod routes;
pub mod server;
pub mod sources;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::config::Config;
pub use crate::contacts::Contacts;
use crate::sources::Source;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct State {
    pub sources: BTreeMap<String, Source>,
    pub contacts: Contacts,
    pub max_body_bytes: usize,
}

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    let contacts = Contacts::connect_lazy(&config.contacts_urls, config.contacts_timeout);
    let state = Arc::new(State {
        sources: config.sources,
        contacts,
        max_body_bytes: config.max_body_bytes,
    });
    server::serve(listener, state, shutdown, config.shutdown_grace).await;
}
