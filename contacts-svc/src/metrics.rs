//! contacts-svc's Prometheus metrics and the small HTTP server that exposes them on
//! `--metrics-listen`: events by source and outcome, dedup hits, merges, identity
//! conflicts, the latency of applying an event in Redis, erasures, and whether Redis
//! answers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Handles on every metric; cheap to share.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    dedup_hits: Family<SourceLabels, Counter>,
    apply_seconds: Family<OutcomeLabels, Histogram>,
    merges: Counter,
    conflicts: Counter,
    erasures: Counter,
    redis_up: Gauge<i64, AtomicI64>,
    auth_refused: Family<ReasonLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookline_contacts");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events by source and outcome (applied, duplicate, ignored, failed)",
            events.clone(),
        );
        let dedup_hits = Family::<SourceLabels, Counter>::default();
        registry.register(
            "dedup_hits",
            "Deliveries of an event id already applied, by source",
            dedup_hits.clone(),
        );
        let apply_seconds = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "apply_duration_seconds",
            "Time to deduplicate and apply one event in Redis, by outcome",
            apply_seconds.clone(),
        );
        let merges = Counter::default();
        registry.register(
            "merges",
            "Contacts absorbed into another because an event tied them together",
            merges.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "identity_conflicts",
            "Identifiers left on another contact because merging would join two people",
            conflicts.clone(),
        );
        let erasures = Counter::default();
        registry.register(
            "erasures",
            "EraseContact calls answered with a tombstone, repeated ones included",
            erasures.clone(),
        );
        let redis_up = Gauge::<i64, AtomicI64>::default();
        registry.register("redis_up", "1 while Redis answers", redis_up.clone());
        let auth_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_refused",
            "Calls refused by authentication: no token (missing), an unknown one (invalid), one without the scope the method needs (scope), or with an event of a source it may not write (source)",
            auth_refused.clone(),
        );
        Self {
            registry,
            events,
            dedup_hits,
            apply_seconds,
            merges,
            conflicts,
            erasures,
            redis_up,
            auth_refused,
        }
    }

    /// Records one `ApplyEvent`: its outcome ("applied", "duplicate", "ignored" or
    /// "failed"), how long it took, and what it merged.
    pub fn event(
        &self,
        source: &str,
        outcome: &'static str,
        took: Duration,
        merges: usize,
        conflicts: usize,
    ) {
        self.events
            .get_or_create(&EventLabels {
                source: source.to_owned(),
                outcome,
            })
            .inc();
        if outcome == "duplicate" {
            self.dedup_hits
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .inc();
        }
        self.apply_seconds
            .get_or_create(&OutcomeLabels { outcome })
            .observe(took.as_secs_f64());
        self.merges.inc_by(merges as u64);
        self.conflicts.inc_by(conflicts as u64);
    }

    /// Counts a call refused for `reason` (see `auth::Refusal::reason`).
    pub fn auth_refused(&self, reason: &'static str) {
        self.auth_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records one `EraseContact` answered with a tombstone.
    pub fn erased(&self) {
        self.erasures.inc();
    }

    pub fn redis_up(&self, up: bool) {
        self.redis_up.set(i64::from(up));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let metrics = metrics.clone();
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            let mut r = http::Response::new(Full::new(Bytes::from(metrics.encode())));
                            r.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                ),
                            );
                            r
                        } else {
                            let mut r = http::Response::new(Full::new(Bytes::from_static(b"not found\n")));
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                            r
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
}
