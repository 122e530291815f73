//! The edge's Prometheus metrics: requests by source and status, verification failures
//! by reason, events by source, type and outcome, and latency histograms of whole
//! requests and of calls to contacts-svc, connections open, refused at the cap and
//! closed for a timeout, and the buffered-body budget. Encoded in the OpenMetrics text
//! format.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::spool::Stats;

/// Label value for requests naming a source that is not configured: the path segment is
/// the caller's, so it must not become a label (unbounded cardinality).
const UNKNOWN_SOURCE: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: Arc<String>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    source: Arc<String>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: Arc<String>,
    r#type: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: Arc<String>,
}

/// Which listener a connection came to: `webhooks` or `metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// Handles on every metric; cheap to share.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    verification_failures: Family<FailureLabels, Counter>,
    events: Family<EventLabels, Counter>,
    request_seconds: Family<SourceLabels, Histogram>,
    contacts_call_seconds: Histogram,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    connections_closed: Family<ClosedLabels, Counter>,
    buffered_body_bytes: Gauge,
    body_budget_refusals: Counter,
    spool_entries: Gauge,
    spool_bytes: Gauge,
    spool_max_bytes: Gauge,
    spool_oldest_age_seconds: Gauge,
    spool_failing: Gauge,
    spool_writes: Family<ResultLabels, Counter>,
    replayed: Family<OutcomeLabels, Counter>,
}

/// Counts what became of spooled events the replayer sent; cheap to clone.
#[derive(Clone, Debug)]
pub struct ReplayOutcomes(Family<OutcomeLabels, Counter>);

impl ReplayOutcomes {
    /// Counts one entry's outcome: applied, duplicate, ignored, retry_later, rejected or
    /// unreadable.
    pub fn count(&self, outcome: &'static str) {
        self.0.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookline_edge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests by source and HTTP status",
            requests.clone(),
        );
        let verification_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "verification_failures",
            "Deliveries refused as not authentic, by source and reason",
            verification_failures.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Authentic events by source, provider type and outcome (applied, duplicate, ignored, queued)",
            events.clone(),
        );
        let request_seconds = Family::<SourceLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "webhook_request_duration_seconds",
            "Time from the request head to the answer, by source",
            request_seconds.clone(),
        );
        let contacts_call_seconds = latency_histogram();
        registry.register(
            "contacts_call_duration_seconds",
            "Duration of ApplyEvent calls to contacts-svc",
            contacts_call_seconds.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open, by listener",
            connections_open.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept because max_connections were open, by listener",
            connections_refused.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the edge closed for a timeout (first_request_timeout, idle_timeout), by listener",
            connections_closed.clone(),
        );
        let buffered_body_bytes = Gauge::default();
        registry.register(
            "buffered_body_bytes",
            "Bytes of request bodies reserved in the max_buffered_body_bytes budget",
            buffered_body_bytes.clone(),
        );
        let body_budget_refusals = Counter::default();
        registry.register(
            "body_budget_refusals",
            "Requests answered with the retry status because the buffered-body budget was spent",
            body_budget_refusals.clone(),
        );
        let spool_entries = Gauge::default();
        registry.register(
            "spool_entries",
            "Events held in the spool, waiting for contacts-svc",
            spool_entries.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Bytes of events held in the spool",
            spool_bytes.clone(),
        );
        let spool_max_bytes = Gauge::default();
        registry.register(
            "spool_max_bytes",
            "The spool's limit (spool_max_bytes); at it, deliveries are answered with the retry status",
            spool_max_bytes.clone(),
        );
        let spool_oldest_age_seconds = Gauge::default();
        registry.register(
            "spool_oldest_age_seconds",
            "Age of the oldest event in the spool (0 when it is empty)",
            spool_oldest_age_seconds.clone(),
        );
        let spool_failing = Gauge::default();
        registry.register(
            "spool_failing",
            "1 when the last write to the spool failed in storage (a full disk, say)",
            spool_failing.clone(),
        );
        let spool_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spool_writes",
            "Events offered to the spool, by result (spooled, full, error)",
            spool_writes.clone(),
        );
        let replayed = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "spool_replayed",
            "Spooled events sent again, by outcome (applied, duplicate, ignored: removed; retry_later, rejected, unreadable: kept)",
            replayed.clone(),
        );
        Self {
            registry,
            requests,
            verification_failures,
            events,
            request_seconds,
            contacts_call_seconds,
            connections_open,
            connections_refused,
            connections_closed,
            buffered_body_bytes,
            body_budget_refusals,
            spool_entries,
            spool_bytes,
            spool_max_bytes,
            spool_oldest_age_seconds,
            spool_failing,
            spool_writes,
            replayed,
        }
    }

    /// The counter of replay outcomes, for the replayer.
    pub fn replay_outcomes(&self) -> ReplayOutcomes {
        ReplayOutcomes(self.replayed.clone())
    }

    /// Counts an event offered to the spool: `spooled`, `full` or `error`.
    pub fn spool_write(&self, result: &'static str) {
        self.spool_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets the spool's gauges from what it holds at `now_ms`.
    pub fn spool_state(&self, stats: &Stats, max_bytes: u64, now_ms: i64) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.spool_entries.set(gauge(stats.entries()));
        self.spool_bytes.set(gauge(stats.bytes()));
        self.spool_max_bytes.set(gauge(max_bytes));
        let age = stats
            .oldest_ms()
            .map_or(0, |at| (now_ms - at).max(0) / 1000);
        self.spool_oldest_age_seconds.set(age);
        self.spool_failing.set(i64::from(stats.failing()));
    }

    /// The gauge of bytes reserved and the counter of refusals a
    /// [`BodyBudget`](crate::limits::BodyBudget) keeps.
    pub fn body_budget(&self) -> (Gauge, Counter) {
        (
            self.buffered_body_bytes.clone(),
            self.body_budget_refusals.clone(),
        )
    }

    /// Counts a connection open until the returned guard is dropped.
    pub fn connection_opened(&self, listener: &'static str) -> OpenConnection {
        let gauge = self
            .connections_open
            .get_or_create(&ListenerLabels { listener })
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    pub fn connection_refused(&self, listener: &'static str) {
        self.connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Counts a connection the edge closed, `reason` being the limit that closed it.
    pub fn connection_closed(&self, listener: &'static str, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }

    /// Records one webhook request. `source` is `None` for an unknown source.
    pub fn request(&self, source: Option<&Arc<String>>, status: u16, took: Duration) {
        let source = source
            .cloned()
            .unwrap_or_else(|| Arc::new(UNKNOWN_SOURCE.to_owned()));
        self.requests
            .get_or_create(&RequestLabels {
                source: source.clone(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&SourceLabels { source })
            .observe(took.as_secs_f64());
    }

    pub fn verification_failure(&self, source: &Arc<String>, reason: &'static str) {
        self.verification_failures
            .get_or_create(&FailureLabels {
                source: source.clone(),
                reason,
            })
            .inc();
    }

    /// Records an authentic event's outcome. Provider types are free text: odd ones are
    /// counted as "other" so that a sender cannot grow the label set without bound.
    pub fn event(&self, source: &Arc<String>, event_type: &str, outcome: &'static str) {
        let sane = !event_type.is_empty()
            && event_type.len() <= 64
            && event_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        self.events
            .get_or_create(&EventLabels {
                source: source.clone(),
                r#type: if sane { event_type } else { "other" }.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn contacts_call(&self, took: Duration) {
        self.contacts_call_seconds.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One open connection in `hookline_edge_connections_open`, until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
