//! `edge.v1.ReplayService/ReplayEvents`, served on the internal `admin_listen` address:
//! re-applies events contacts-svc recorded as ignored, normalizing each anew from its
//! recorded body and headers with today's configuration (a fixed mapping, a location
//! now allowed). Nothing is verified again: the edge verified each at receipt, and
//! contacts-svc records only what an edge verified. contacts-svc lets a replay take over
//! only a record that still says ignored, so an event never takes effect twice.

use std::sync::Arc;

use hookline_proto::edge::v1 as edge_v1;
use hookline_proto::edge::v1::replay_service_server::ReplayService;
use hookline_proto::v1;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use crate::State;
use crate::contacts::Verdict;
use crate::sources::{Delivery, header_map_of};

/// Events replayed by one call unless it says otherwise, and at most.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;
/// Most ids one call names.
const MAX_IDS: usize = 1000;
/// Records read, and held, at once.
const PAGE: usize = 100;
/// Replays sent to contacts-svc at once.
const CONCURRENCY: usize = 32;

/// The service, over the edge's sources and its contacts-svc client.
#[derive(Debug)]
pub struct Replays {
    state: Arc<State>,
}

impl Replays {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl ReplayService for Replays {
    async fn replay_events(
        &self,
        request: Request<edge_v1::ReplayEventsRequest>,
    ) -> Result<Response<edge_v1::ReplayEventsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n if n < 0 => return Err(Status::invalid_argument("limit: must not be negative")),
            n => usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
        };
        if req.event_ids.len() > MAX_IDS {
            return Err(Status::invalid_argument(format!(
                "event_ids: holds more than {MAX_IDS} ids"
            )));
        }
        if req.event_ids.is_empty() && req.source.is_empty() {
            return Err(Status::invalid_argument(
                "name the events: event_ids, or a source (with type and received_from / received_before to narrow it)",
            ));
        }
        let (events, truncated) = self.replay_selected(&req, limit).await?;
        let count = |r: edge_v1::ReplayResult| events.iter().filter(|e| e.result() == r).count();
        tracing::info!(
            selected = events.len(),
            applied = count(edge_v1::ReplayResult::Applied),
            still_ignored = count(edge_v1::ReplayResult::StillIgnored),
            already_applied = count(edge_v1::ReplayResult::AlreadyApplied),
            skipped = count(edge_v1::ReplayResult::Skipped),
            failed = count(edge_v1::ReplayResult::Failed),
            truncated,
            "recorded events replayed"
        );
        Ok(Response::new(edge_v1::ReplayEventsResponse {
            events,
            truncated,
        }))
    }
}

impl Replays {
    /// Replays the records the request selects, a page at a time (at most `limit`), and
    /// says whether more matched. Only a page of records is held at once: their bodies
    /// may be large.
    async fn replay_selected(
        &self,
        req: &edge_v1::ReplayEventsRequest,
        limit: usize,
    ) -> Result<(Vec<edge_v1::ReplayedEvent>, bool), Status> {
        let filter = v1::ListEventsRequest {
            source: req.source.clone(),
            r#type: req.r#type.clone(),
            received_from: req.received_from,
            received_before: req.received_before,
            ..Default::default()
        };
        let contacts = &self.state.contacts;
        let mut events = Vec::new();
        if !req.event_ids.is_empty() {
            let named = &req.event_ids[..req.event_ids.len().min(limit)];
            for ids in named.chunks(PAGE) {
                let found = contacts
                    .list_events(v1::ListEventsRequest {
                        event_ids: ids.to_vec(),
                        ..filter.clone()
                    })
                    .await
                    .map_err(from_contacts)?
                    .events;
                let missing: Vec<String> = ids
                    .iter()
                    .filter(|id| !found.iter().any(|r| &r.event_id == *id))
                    .cloned()
                    .collect();
                events.extend(self.replay_page(found).await);
                events.extend(
                    missing
                        .into_iter()
                        .map(|id| skipped(id, "no record of this event")),
                );
            }
            return Ok((events, req.event_ids.len() > limit));
        }
        let mut page_token = String::new();
        loop {
            let room = limit - events.len();
            let page = contacts
                .list_events(v1::ListEventsRequest {
                    page_size: i32::try_from(room.min(PAGE)).unwrap_or(1).max(1),
                    page_token: page_token.clone(),
                    outcome: v1::EventOutcome::Ignored.into(),
                    ..filter.clone()
                })
                .await
                .map_err(from_contacts)?;
            events.extend(self.replay_page(page.events).await);
            if page.next_page_token.is_empty() {
                return Ok((events, false));
            }
            if events.len() >= limit {
                return Ok((events, true));
            }
            page_token = page.next_page_token;
        }
    }

    /// Replays one page of records, a few at once, and answers for each in its order.
    async fn replay_page(&self, records: Vec<v1::EventRecord>) -> Vec<edge_v1::ReplayedEvent> {
        let mut answers: Vec<Option<edge_v1::ReplayedEvent>> = vec![None; records.len()];
        let ids: Vec<String> = records.iter().map(|r| r.event_id.clone()).collect();
        let mut calls = JoinSet::new();
        for (i, record) in records.into_iter().enumerate() {
            if calls.len() >= CONCURRENCY
                && let Some(Ok((at, answer))) = calls.join_next().await
            {
                answers[at] = Some(answer);
            }
            let state = self.state.clone();
            calls.spawn(async move { (i, replay(&state, record).await) });
        }
        while let Some(joined) = calls.join_next().await {
            if let Ok((at, answer)) = joined {
                answers[at] = Some(answer);
            }
        }
        answers
            .into_iter()
            .zip(ids)
            .map(|(answer, id)| {
                answer.unwrap_or_else(|| edge_v1::ReplayedEvent {
                    event_id: id,
                    result: edge_v1::ReplayResult::Failed.into(),
                    reason: "the replay task failed".to_owned(),
                    contact_id: String::new(),
                })
            })
            .collect()
    }
}

/// Replays one record: normalized anew from its body and headers, sent as the replay
/// of that record.
async fn replay(state: &State, record: v1::EventRecord) -> edge_v1::ReplayedEvent {
    let id = record.event_id.clone();
    let ignored = i32::from(v1::EventOutcome::Ignored);
    if record.outcome != ignored {
        return match v1::EventOutcome::try_from(record.outcome) {
            Ok(v1::EventOutcome::Applied | v1::EventOutcome::Duplicate) => edge_v1::ReplayedEvent {
                event_id: id,
                result: edge_v1::ReplayResult::AlreadyApplied.into(),
                reason: String::new(),
                contact_id: record.contact_id,
            },
            other => skipped(id, &format!("recorded as {other:?}, not as ignored")),
        };
    }
    let Some(configured) = state.sources.get(&record.source) else {
        return skipped(
            id,
            &format!("source {:?} is not configured on this edge", record.source),
        );
    };
    let headers = header_map_of(&record.headers);
    let delivery = Delivery {
        headers: &headers,
        query: "",
        body: &record.body,
    };
    let received_ms = received_ms(&record);
    let mut event = configured
        .source
        .normalize(&configured.name, delivery, received_ms);
    // The record's id is the one deliveries were deduplicated by (unless a dedup window
    // made it one occurrence of it): a record from before headers were kept may not
    // give the same id from its body alone.
    // A record whose id is a digest of an unusable provider id keeps the original: the
    // event made again carries that id, and contacts-svc digests it the same way.
    if event.dedup_window_secs == 0 && record.original_event_id.is_empty() {
        event.id.clone_from(&record.event_id);
    }
    event.raw_body = Some(record.body);
    event.raw_headers = record.headers;
    let item = v1::ApplyEventsItem {
        event: Some(event),
        request_id: uuid::Uuid::new_v4().simple().to_string(),
        traceparent: String::new(),
        replay_of: id.clone(),
    };
    let (result, reason, contact_id) = match Verdict::of(state.contacts.apply_item(item).await) {
        Verdict::Done("applied", a) => {
            (edge_v1::ReplayResult::Applied, String::new(), a.contact_id)
        }
        Verdict::Done("ignored", a) => {
            (edge_v1::ReplayResult::StillIgnored, a.reason, String::new())
        }
        Verdict::Done(_, a) => (
            edge_v1::ReplayResult::AlreadyApplied,
            String::new(),
            a.contact_id,
        ),
        Verdict::Unreachable(why) | Verdict::Later(why) => {
            (edge_v1::ReplayResult::Failed, why, String::new())
        }
        Verdict::Rejected(why) => (
            edge_v1::ReplayResult::Failed,
            format!("rejected: {why}"),
            String::new(),
        ),
        Verdict::NeedsBody => (
            edge_v1::ReplayResult::Failed,
            "contacts-svc asked for the body it was sent".to_owned(),
            String::new(),
        ),
    };
    edge_v1::ReplayedEvent {
        event_id: id,
        result: result.into(),
        reason,
        contact_id,
    }
}

fn skipped(event_id: String, reason: &str) -> edge_v1::ReplayedEvent {
    edge_v1::ReplayedEvent {
        event_id,
        result: edge_v1::ReplayResult::Skipped.into(),
        reason: reason.to_owned(),
        contact_id: String::new(),
    }
}

fn received_ms(record: &v1::EventRecord) -> i64 {
    record
        .received_at
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}

/// contacts-svc's refusal, as the caller's: its code kept (a bad filter is the
/// caller's mistake, an unreachable contacts-svc is "call again").
fn from_contacts(s: Status) -> Status {
    Status::new(s.code(), format!("contacts-svc: {}", s.message()))
}
