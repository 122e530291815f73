//! contacts-svc owns every contact update. It serves `contacts.v1.ContactsService` over
//! gRPC, deduplicates webhook events with Redis SET NX and applies them to contacts with
//! merge rules that make the result independent of delivery order.
//!
//! [`run`] owns the server; `main.rs` only parses flags and wires.

pub mod auth;
pub mod config;
pub mod contact;
pub mod error;
pub mod metrics;
pub mod service;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hookline_proto::v1::contacts_service_server::ContactsServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

pub use crate::auth::Auth;
pub use crate::contact::Region;
use crate::error::Error;
pub use crate::metrics::Metrics;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub use crate::store::fuzzing;
pub use crate::store::{RedisTls, Store, StoreOptions};

/// How often Redis is pinged to keep the health status current.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// How often the TLS files are checked for a change.
const TLS_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often the webhook log is trimmed to its retention.
const TRIM_INTERVAL: Duration = Duration::from_secs(60);
/// Largest gRPC message accepted: an ignored event carries its raw body, which the edge
/// accepts up to 64 MiB (`max_body_bytes`), and a batch of them up to 4 MiB more.
const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// What the server needs from the outside.
#[derive(Debug)]
pub struct Deps {
    pub store: Store,
    pub default_region: Region,
    /// Time in-flight calls get after `shutdown` resolves.
    pub shutdown_grace: Duration,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    /// Who may call what.
    pub auth: Auth,
    /// TLS on the gRPC listener, when it has any.
    pub tls: Option<hookline_tls::ServerTls>,
}

/// Why the server stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Serve(#[from] tonic::transport::Error),
    /// Redis holds a storage layout this version cannot serve.
    #[error("{0}")]
    Layout(String),
}

/// Serves gRPC on `listener` until `shutdown` resolves, then lets in-flight calls finish
/// within the grace period. Stops at once, with [`RunError::Layout`], when Redis turns
/// out to hold a storage layout this version cannot serve (checked whenever Redis
/// becomes reachable; an empty database is marked with the current layout).
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // The server is compiled once, here, rather than for every caller's future type.
    serve(listener, deps, Box::pin(shutdown)).await
}

async fn serve(
    listener: TcpListener,
    deps: Deps,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<(), RunError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(hookline_proto::SERVICE_NAME, ServingStatus::NotServing)
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let reflection_v1 = reflection()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");

    let metrics = Arc::new(Metrics::new());
    let (refused_tx, refused) = tokio::sync::oneshot::channel::<String>();
    let monitor = tokio::spawn(monitor(
        deps.store.clone(),
        health,
        metrics.clone(),
        refused_tx,
    ));
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = deps.metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(listener, metrics.clone(), async {
            let _ = metrics_stopped.await;
        }))
    });
    let auth = auth::AuthLayer::new(deps.auth, metrics.clone());
    let service = service::Service::new(deps.store, deps.default_region, metrics);
    let contacts = ContactsServiceServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .layer(auth)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(contacts);
    let stopped = async {
        let _ = stop_rx.await;
    };
    let mut watcher = None;
    let mut server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match deps.tls {
            None => {
                // Replies go out at once: with Nagle on, a reply spanning several segments
                // waits for the peer's delayed ACK (40 ms). The server's own tcp_nodelay
                // setting applies only to listeners it binds itself.
                let incoming = TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60)));
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            Some(tls) => {
                watcher = Some(tokio::spawn(tls.clone().watch(TLS_CHECK_INTERVAL)));
                Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), stopped))
            }
        };

    let grace = deps.shutdown_grace;
    let result = tokio::select! {
        r = &mut server => r.map_err(RunError::from),
        Ok(why) = refused => {
            // Nothing was served: the health status never said SERVING.
            let _ = stop_tx.send(());
            let _ = tokio::time::timeout(grace, &mut server).await;
            Err(RunError::Layout(why))
        }
        () = shutdown => {
            tracing::info!("shutting down, letting in-flight calls finish");
            let _ = stop_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r.map_err(RunError::from),
                Err(_) => {
                    tracing::warn!(grace_secs = grace.as_secs(), "grace period over, closing open calls");
                    Ok(())
                }
            }
        }
    };
    monitor.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    result
}

/// Keeps the health status in step with Redis and trims the webhook log. Says SERVING
/// only once the database's layout is one this version serves; `refused` says why not.
async fn monitor(
    store: Store,
    health: tonic_health::server::HealthReporter,
    metrics: Arc<Metrics>,
    refused: tokio::sync::oneshot::Sender<String>,
) {
    let mut serving = None;
    let mut last_trim = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checked = match store.ping().await {
            // The layout is checked whenever Redis comes (back) up: it may be another
            // database now.
            Ok(()) if serving != Some(true) => store.check_layout().await,
            other => other,
        };
        let up = match checked {
            Ok(()) => true,
            Err(Error::Layout(why)) => {
                let _ = refused.send(why);
                return;
            }
            Err(e) => {
                if serving != Some(false) {
                    tracing::warn!(error = %e, "redis unreachable, reporting NOT_SERVING");
                }
                false
            }
        };
        metrics.redis_up(up);
        if serving != Some(up) {
            let status = if up {
                tracing::info!("redis reachable, reporting SERVING");
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health
                .set_service_status(hookline_proto::SERVICE_NAME, status)
                .await;
            health.set_service_status("", status).await;
            serving = Some(up);
        }
        if up && last_trim.elapsed() >= TRIM_INTERVAL {
            last_trim = tokio::time::Instant::now();
            match store.trim_log().await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "webhook log trimmed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook log not trimmed"),
            }
        }
    }
}

/// Reflection of the services served here: the descriptor set also holds the edge's.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hookline_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(hookline_proto::SERVICE_NAME)
        .with_service_name("grpc.health.v1.Health")
}
