//! Applying webhook events (`ApplyEvent`, `ApplyEvents`): the time a call gives them,
//! reading each (`ParsedEvent::parse` decides what is ignored), and what each became in
//! the answer: a typed outcome per event for `ApplyEvents`, a status for `ApplyEvent`.

use std::time::{Duration, Instant};

use hookline_proto::v1;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::{Service, status_of};
use crate::auth::{Caller, Sources};
use crate::contact::{ContactId, ParsedEvent};
use crate::error::Error;
use crate::store::Applied;

/// Time for a call without a deadline of its own (grpcurl, say).
const DEFAULT_BUDGET: Duration = Duration::from_secs(10);
/// Most time any call gets, below the server's own request timeout.
const MAX_BUDGET: Duration = Duration::from_secs(25);

/// What one event became.
pub(super) type Outcome = Result<Applied, Error>;

/// When the events of a call must be done: four fifths of the caller's deadline
/// (`grpc-timeout`), so that the answer still reaches it in time; the rest of the time
/// an unfinished event gives its lease back and is answered "retry later".
pub(super) fn deadline(metadata: &MetadataMap) -> Instant {
    let budget = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(DEFAULT_BUDGET, |t| t * 4 / 5)
        .min(MAX_BUDGET);
    Instant::now() + budget
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether `caller` may write every event of `items`: each event's source must be one
/// its token lists, so that no caller can take another source's event ids (answered
/// "duplicate" when the real event arrives) or invent sources.
/// A caller limited to some sources must also keep to their ids: an event's id begins
/// with its source and a colon (as the edge writes them), or it would take the id of
/// an event of another source.
pub(super) fn writable(caller: &Caller, items: &[v1::ApplyEventsItem]) -> Result<(), Error> {
    if caller.sources == Sources::Any {
        return Ok(());
    }
    for ev in items.iter().filter_map(|i| i.event.as_ref()) {
        let namespace = ev.id.split_once(':').map(|(prefix, _)| prefix);
        for source in [Some(ev.source.as_str()), namespace] {
            match source {
                Some(source) if caller.sources.allows(source) => {}
                Some(source) => {
                    return Err(Error::ForeignSource {
                        caller: caller.name.clone(),
                        source_name: source.to_owned(),
                    });
                }
                None => {
                    return Err(Error::invalid(
                        "event.id",
                        "must begin with the event's source and a colon (stripe:evt_…)",
                    ));
                }
            }
        }
        if namespace != Some(ev.source.as_str()) {
            return Err(Error::invalid(
                "event.id",
                "must begin with the event's source and a colon (stripe:evt_…)",
            ));
        }
    }
    Ok(())
}

impl Service {
    /// Reads, deduplicates and applies the events of one call, logging and counting
    /// each; one outcome per item, in order. It runs as a task of its own: a caller that
    /// gives up does not cut its events off halfway, each is recorded or gives its lease
    /// back by the deadline.
    pub(super) async fn apply_items(
        &self,
        items: Vec<v1::ApplyEventsItem>,
        deadline: Instant,
    ) -> Result<Vec<Outcome>, Status> {
        let this = self.clone();
        tokio::spawn(async move { this.apply_all(&items, deadline).await })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "applying a batch of events failed");
                Status::internal("internal error")
            })
    }

    async fn apply_all(&self, items: &[v1::ApplyEventsItem], deadline: Instant) -> Vec<Outcome> {
        let started = Instant::now();
        let parsed: Vec<Result<ParsedEvent, Error>> = items
            .iter()
            .map(|item| match &item.event {
                Some(ev) => ParsedEvent::parse(ev, self.default_region)
                    .and_then(|parsed| parsed.replaying(&item.replay_of)),
                None => Err(Error::invalid("event", "is required")),
            })
            .collect();
        let valid: Vec<(&ParsedEvent, Option<&ContactId>)> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|ev| (ev, None)))
            .collect();
        let mut applied = self.store.apply_batch(&valid, deadline).await.into_iter();
        items
            .iter()
            .zip(&parsed)
            .map(|(item, parsed)| {
                let outcome = match parsed {
                    Err(e) => Err(e.clone()),
                    // `apply_batch` answers every event it was given, in order.
                    Ok(_) => applied
                        .next()
                        .expect("apply_batch answers every event it is given"),
                };
                self.report(item, parsed.as_ref().ok(), &outcome, started);
                outcome
            })
            .collect()
    }

    /// Counts and logs what became of an event.
    fn report(
        &self,
        item: &v1::ApplyEventsItem,
        parsed: Option<&ParsedEvent>,
        outcome: &Outcome,
        started: Instant,
    ) {
        let took = started.elapsed();
        // An event that could not be read has no source to count it under that a
        // caller could not invent.
        let source = parsed.map_or("unknown", |p| p.source.as_str());
        let event_id = parsed.map_or("", |p| p.record_id.as_str());
        let event_type = parsed.map_or("", |p| p.event_type.as_str());
        let trace_id = trace_id(&item.traceparent);
        let latency_us = took.as_micros();
        let request_id = item.request_id.as_str();
        let applied = match outcome {
            Ok(applied) => applied,
            Err(e) => {
                let outcome = outcome_name(error_outcome(e));
                self.metrics.event(source, outcome, took, 0, 0);
                if matches!(e, Error::Corrupt { .. }) {
                    tracing::error!(source, event_id, r#type = event_type, outcome, request_id, trace_id, latency_us, error = %e, "event");
                } else {
                    tracing::warn!(source, event_id, r#type = event_type, outcome, request_id, trace_id, latency_us, error = %e, class = e.class(), "event");
                }
                return;
            }
        };
        self.metrics.event(
            source,
            outcome_name(applied.outcome),
            took,
            applied.merges,
            applied.conflicts.len(),
        );
        let contact_id = applied
            .contact_id
            .as_ref()
            .map(ContactId::as_str)
            .unwrap_or("");
        for (ident, holder) in &applied.conflicts {
            tracing::info!(
                event_id,
                contact_id,
                identifier = %ident.masked(),
                held_by = %holder,
                "identity conflict: identifier left on a different person's contact"
            );
        }
        // One line per event is the webhook log's job (`ListEvents`) and the metrics'
        // at full speed: events that took effect as expected are logged at debug, the
        // rest (ignored, a body required) at info.
        macro_rules! event_line {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    source,
                    event_id,
                    r#type = event_type,
                    outcome = outcome_name(applied.outcome),
                    contact_id,
                    merges = applied.merges,
                    notes = applied.notes.len(),
                    request_id,
                    trace_id,
                    latency_us,
                    "event"
                )
            };
        }
        if matches!(
            applied.outcome,
            v1::EventOutcome::Applied | v1::EventOutcome::Duplicate
        ) && applied.notes.is_empty()
        {
            event_line!(tracing::Level::DEBUG);
        } else {
            event_line!(tracing::Level::INFO);
        }
    }
}

/// The answer about an event that was taken care of (or must come with its body).
pub(super) fn response(a: Applied) -> v1::ApplyEventResponse {
    v1::ApplyEventResponse {
        outcome: a.outcome.into(),
        contact_id: a.contact_id.map(|c| c.to_string()).unwrap_or_default(),
        reason: a.reason,
        notes: a.notes,
    }
}

/// What an error means for the event: the sender's mistake (rejected) or a reason to
/// try again later (nothing was stored either way).
fn error_outcome(e: &Error) -> v1::EventOutcome {
    match e {
        Error::InvalidArgument { .. } | Error::NotFound(_) | Error::ForeignSource { .. } => {
            v1::EventOutcome::Rejected
        }
        Error::InProgress(_)
        | Error::Redis(_)
        | Error::Contention(_)
        | Error::Deadline
        | Error::Replicas { .. }
        | Error::Corrupt { .. }
        | Error::Layout(_) => v1::EventOutcome::RetryLater,
    }
}

/// One event's entry of an `ApplyEvents` answer. The deprecated `code` and `message`
/// carry the status `ApplyEvent` would have answered, for edges older than the typed
/// outcomes (a body required is what they knew as "refused as malformed").
#[allow(deprecated)]
pub(super) fn result(outcome: Outcome) -> v1::ApplyEventsResult {
    let (response, compat) = match outcome {
        Ok(applied) => {
            let compat = (applied.outcome == v1::EventOutcome::BodyRequired)
                .then(|| Status::invalid_argument(applied.reason.clone()));
            (response(applied), compat)
        }
        Err(e) => {
            let status = status_of(&e);
            let response = v1::ApplyEventResponse {
                outcome: error_outcome(&e).into(),
                reason: status.message().to_owned(),
                ..v1::ApplyEventResponse::default()
            };
            (response, Some(status))
        }
    };
    v1::ApplyEventsResult {
        response: Some(response),
        code: compat.as_ref().map_or(0, |s| s.code().into()),
        message: compat.map(|s| s.message().to_owned()).unwrap_or_default(),
    }
}

/// Label of an outcome in logs and metrics.
pub(super) fn outcome_name(o: v1::EventOutcome) -> &'static str {
    match o {
        v1::EventOutcome::Applied => "applied",
        v1::EventOutcome::Duplicate => "duplicate",
        v1::EventOutcome::Ignored => "ignored",
        v1::EventOutcome::RetryLater => "retry_later",
        v1::EventOutcome::BodyRequired => "body_required",
        v1::EventOutcome::Rejected => "rejected",
        v1::EventOutcome::Unspecified => "unspecified",
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_writes_only_its_sources_and_their_ids() {
        let edge = Caller {
            name: "edge".to_owned(),
            sources: Sources::Only(["stripe".to_owned(), "acme".to_owned()].into()),
        };
        let admin = Caller {
            name: "admin".to_owned(),
            sources: Sources::Any,
        };
        let item = |source: &str, id: &str| v1::ApplyEventsItem {
            event: Some(v1::WebhookEvent {
                source: source.to_owned(),
                id: id.to_owned(),
                ..v1::WebhookEvent::default()
            }),
            ..v1::ApplyEventsItem::default()
        };
        let foreign = |s: &str| {
            Err(format!(
                "the token edge may not write events of the source {s}"
            ))
        };
        let bad_id = || {
            Err("event.id must begin with the event's source and a colon (stripe:evt_…)".to_owned())
        };
        let cases: Vec<(&Caller, Vec<v1::ApplyEventsItem>, Result<(), String>)> = vec![
            (&edge, vec![item("stripe", "stripe:evt_1")], Ok(())),
            (
                &edge,
                vec![item("stripe", "stripe:evt_1"), item("acme", "acme:msg_1")],
                Ok(()),
            ),
            (
                &edge,
                vec![item("gohighlevel", "gohighlevel:wh_1")],
                foreign("gohighlevel"),
            ),
            // One foreign event refuses the whole call.
            (
                &edge,
                vec![item("stripe", "stripe:evt_1"), item("ghl", "ghl:1")],
                foreign("ghl"),
            ),
            // Another source's id under an allowed source: squatting.
            (
                &edge,
                vec![item("acme", "gohighlevel:wh_1")],
                foreign("gohighlevel"),
            ),
            (&edge, vec![item("acme", "stripe:evt_1")], bad_id()),
            (&edge, vec![item("stripe", "evt_1")], bad_id()),
            (&admin, vec![item("anything", "other:1")], Ok(())),
            (&edge, vec![v1::ApplyEventsItem::default()], Ok(())),
        ];
        for (caller, items, want) in cases {
            let got = writable(caller, &items).map_err(|e| e.to_string());
            assert_eq!(got, want, "{}: {items:?}", caller.name);
        }
    }

    #[test]
    #[allow(deprecated)]
    fn results_carry_a_typed_outcome_and_the_status_older_edges_read() {
        let applied = Applied {
            outcome: v1::EventOutcome::Applied,
            contact_id: None,
            reason: String::new(),
            notes: vec!["a note".into()],
            merges: 0,
            conflicts: Vec::new(),
        };
        let body_required = Applied {
            outcome: v1::EventOutcome::BodyRequired,
            reason: "no contact identifiers".into(),
            ..applied.clone()
        };
        let cases = [
            (Ok(applied), v1::EventOutcome::Applied, tonic::Code::Ok),
            (
                Ok(body_required),
                v1::EventOutcome::BodyRequired,
                tonic::Code::InvalidArgument,
            ),
            (
                Err(Error::invalid("event.id", "is required")),
                v1::EventOutcome::Rejected,
                tonic::Code::InvalidArgument,
            ),
            (
                Err(Error::InProgress("hl:ev:{x}".into())),
                v1::EventOutcome::RetryLater,
                tonic::Code::Aborted,
            ),
            (
                Err(Error::Deadline),
                v1::EventOutcome::RetryLater,
                tonic::Code::Unavailable,
            ),
            (
                Err(Error::Contention(3)),
                v1::EventOutcome::RetryLater,
                tonic::Code::Unavailable,
            ),
            (
                Err(Error::Corrupt {
                    key: "hl:idx:email:j***@example.com".into(),
                    reason: "not a contact id".into(),
                }),
                v1::EventOutcome::RetryLater,
                tonic::Code::Internal,
            ),
        ];
        for (outcome, want, code) in cases {
            let name = format!("{outcome:?}");
            let result = result(outcome);
            let response = result.response.expect("always a response");
            assert_eq!(response.outcome(), want, "{name}");
            assert_eq!(result.code, i32::from(code), "{name}");
            // Our own failures say nothing of their cause.
            assert!(!result.message.contains("j***"), "{name}");
        }
    }

    #[test]
    fn grpc_timeouts() {
        let cases = [
            ("5S", Some(Duration::from_secs(5))),
            ("4999987u", Some(Duration::from_micros(4_999_987))),
            ("250m", Some(Duration::from_millis(250))),
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("10n", Some(Duration::from_nanos(10))),
            ("", None),
            ("S", None),
            ("5", None),
            ("5s", None),
            ("123456789S", None),
            ("-5S", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_grpc_timeout(value), want, "{value:?}");
        }
    }
}
