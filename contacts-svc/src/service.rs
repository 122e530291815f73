//! The `contacts.v1.ContactsService` gRPC service: validates requests, calls the store
//! and shapes answers. The only place a `tonic::Status` is made.

use std::sync::Arc;
use std::time::Instant;

use hookline_proto::v1::{self, contacts_service_server::ContactsService};
use tonic::{Request, Response, Status};

use crate::contact::{
    ContactFields, ContactId, Effect, Email, EventEffect, EventId, Identifier, ParsedEvent, Phone,
    Region,
};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::{Applied, Cursor, EventFilter, Store, now_millis};

const DEFAULT_PAGE: usize = 50;
/// Most events in one ApplyEvents call.
const MAX_BATCH: usize = 1000;
const MAX_PAGE: usize = 500;

/// The service implementation; cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    store: Store,
    default_region: Region,
    metrics: Arc<Metrics>,
}

impl Service {
    pub fn new(store: Store, default_region: Region, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            default_region,
            metrics,
        }
    }
}

impl Service {
    /// Validates, deduplicates and applies one event; logs it and counts it.
    async fn apply_one(
        &self,
        event: Option<&v1::WebhookEvent>,
        request_id: &str,
        traceparent: &str,
    ) -> Result<v1::ApplyEventResponse, Status> {
        let started = Instant::now();
        let parsed = self.parse(event)?;
        let applied = self.store.apply(&parsed, None).await;
        self.report(&parsed, applied, started, request_id, traceparent)
    }

    /// Validates, deduplicates and applies a batch of independent events, logging and
    /// counting each; one result per item, in order.
    async fn apply_many(
        &self,
        items: &[v1::ApplyEventsItem],
    ) -> Vec<Result<v1::ApplyEventResponse, Status>> {
        let started = Instant::now();
        let parsed: Vec<Result<ParsedEvent, Status>> = items
            .iter()
            .map(|item| self.parse(item.event.as_ref()))
            .collect();
        let valid: Vec<(&ParsedEvent, Option<&ContactId>)> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|ev| (ev, None)))
            .collect();
        let mut applied = self.store.apply_batch(&valid).await.into_iter();
        items
            .iter()
            .zip(parsed)
            .map(|(item, parsed)| {
                let parsed = parsed?;
                let result = applied.next().unwrap_or(Err(Error::Contention(0)));
                self.report(
                    &parsed,
                    result,
                    started,
                    &item.request_id,
                    &item.traceparent,
                )
            })
            .collect()
    }

    fn parse(&self, event: Option<&v1::WebhookEvent>) -> Result<ParsedEvent, Status> {
        let event = event.ok_or_else(|| status(Error::invalid("event", "is required")))?;
        ParsedEvent::parse(event, self.default_region).map_err(status)
    }

    /// Counts and logs what became of an event, and makes its answer.
    fn report(
        &self,
        parsed: &ParsedEvent,
        applied: Result<Applied, Error>,
        started: Instant,
        request_id: &str,
        traceparent: &str,
    ) -> Result<v1::ApplyEventResponse, Status> {
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                self.metrics
                    .event(&parsed.source, "failed", started.elapsed(), 0, 0);
                return Err(status(e));
            }
        };
        let took = started.elapsed();
        let outcome = outcome_name(applied.outcome);
        self.metrics.event(
            &parsed.source,
            outcome,
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
                event_id = %parsed.id,
                contact_id,
                identifier = %ident.masked(),
                held_by = %holder,
                "identity conflict: identifier left on a different person's contact"
            );
        }
        tracing::info!(
            source = %parsed.source,
            event_id = %parsed.id,
            r#type = %parsed.event_type,
            outcome,
            contact_id,
            merges = applied.merges,
            request_id,
            trace_id = trace_id(traceparent),
            latency_us = took.as_micros(),
            "event"
        );
        Ok(v1::ApplyEventResponse {
            outcome: applied.outcome.into(),
            contact_id: applied
                .contact_id
                .map(|c| c.to_string())
                .unwrap_or_default(),
            reason: applied.reason,
            notes: Vec::new(),
        })
    }
}

/// A metadata value the edge passed along, for logs.
fn metadata<'a, T>(request: &'a Request<T>, key: &str) -> &'a str {
    request
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// Maps an error to a status: a caller's mistake says what was wrong; our own failure
/// is logged with its cause and says nothing about it.
fn status(e: Error) -> Status {
    match &e {
        Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::InProgress(_) => Status::aborted(e.to_string()),
        Error::Redis(_) | Error::Contention(_) => {
            tracing::warn!(error = %e, class = e.class(), "call failed, caller may retry");
            Status::unavailable("storage unavailable, retry later")
        }
        Error::Corrupt { .. } => {
            tracing::error!(error = %e, "call failed");
            Status::internal("internal error")
        }
    }
}

fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE),
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        n => Ok(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
    }
}

fn outcome_name(o: v1::EventOutcome) -> &'static str {
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

#[tonic::async_trait]
impl ContactsService for Service {
    async fn apply_event(
        &self,
        request: Request<v1::ApplyEventRequest>,
    ) -> Result<Response<v1::ApplyEventResponse>, Status> {
        let request_id = metadata(&request, "x-request-id").to_owned();
        let traceparent = metadata(&request, "traceparent").to_owned();
        let event = request.into_inner().event;
        self.apply_one(event.as_ref(), &request_id, &traceparent)
            .await
            .map(Response::new)
    }

    #[allow(deprecated)] // replaced by the typed outcomes next
    async fn apply_events(
        &self,
        request: Request<v1::ApplyEventsRequest>,
    ) -> Result<Response<v1::ApplyEventsResponse>, Status> {
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH {
            return Err(status(Error::invalid(
                "items",
                "holds more than 1000 events",
            )));
        }
        let results = self
            .apply_many(&items)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(response) => v1::ApplyEventsResult {
                    response: Some(response),
                    code: 0,
                    message: String::new(),
                },
                Err(s) => v1::ApplyEventsResult {
                    response: None,
                    code: s.code().into(),
                    message: s.message().to_owned(),
                },
            })
            .collect();
        Ok(Response::new(v1::ApplyEventsResponse { results }))
    }

    async fn upsert_contact(
        &self,
        request: Request<v1::UpsertContactRequest>,
    ) -> Result<Response<v1::UpsertContactResponse>, Status> {
        let req = request.into_inner();
        let key = EventId::parse("idempotency_key", &req.idempotency_key).map_err(status)?;
        let id = EventId::parse("idempotency_key", &format!("api:{key}")).map_err(status)?;
        let explicit = match req.contact_id.as_str() {
            "" => None,
            s => Some(ContactId::parse(s).map_err(status)?),
        };
        let mut data = ContactFields::parse(
            "data",
            &req.data.unwrap_or_default(),
            self.default_region,
            None,
        )
        .map_err(status)?;
        if let Some(mask) = &req.update_mask
            && !mask.paths.is_empty()
        {
            data.retain_paths(&mask.paths).map_err(status)?;
        }
        if explicit.is_none() && data.identifiers().is_empty() {
            return Err(status(Error::invalid(
                "data",
                "needs an email, phone or external id when contact_id is empty",
            )));
        }
        let now = now_millis();
        let occurred_at = match &req.occurred_at {
            Some(_) => {
                crate::contact::millis("occurred_at", req.occurred_at.as_ref()).map_err(status)?
            }
            None => now,
        };
        let event = ParsedEvent {
            id: id.clone(),
            source: "api".to_owned(),
            event_type: "UpsertContact".to_owned(),
            occurred_at,
            received_at: now,
            action: Ok(EventEffect {
                event_id: id,
                occurred_at,
                data,
                effect: Effect::Profile,
            }),
            notes: Vec::new(),
        };
        let applied = self
            .store
            .apply(&event, explicit.as_ref())
            .await
            .map_err(status)?;
        let contact_id = applied
            .contact_id
            .ok_or_else(|| status(Error::NotFound("the contact no longer exists".into())))?;
        let loaded = self
            .store
            .get(&contact_id)
            .await
            .map_err(status)?
            .ok_or_else(|| status(Error::NotFound(format!("no contact {contact_id}"))))?;
        Ok(Response::new(v1::UpsertContactResponse {
            contact: Some(loaded.record.to_proto(&loaded.id)),
            applied: applied.outcome == v1::EventOutcome::Applied,
        }))
    }

    async fn get_contact(
        &self,
        request: Request<v1::GetContactRequest>,
    ) -> Result<Response<v1::GetContactResponse>, Status> {
        let id = ContactId::parse(&request.into_inner().contact_id).map_err(status)?;
        let loaded = self
            .store
            .get(&id)
            .await
            .map_err(status)?
            .ok_or_else(|| status(Error::NotFound(format!("no contact {id}"))))?;
        Ok(Response::new(v1::GetContactResponse {
            contact: Some(loaded.record.to_proto(&loaded.id)),
        }))
    }

    async fn lookup_contact(
        &self,
        request: Request<v1::LookupContactRequest>,
    ) -> Result<Response<v1::LookupContactResponse>, Status> {
        use v1::lookup_contact_request::Key;
        let req = request.into_inner();
        let region = Region::parse_or("phone_region", &req.phone_region, self.default_region)
            .map_err(status)?;
        let ident = match req.key {
            Some(Key::Email(e)) => {
                Identifier::Email(Email::parse("email", &e).map_err(status)?.normalized)
            }
            Some(Key::Phone(p)) => Identifier::Phone(
                Phone::parse_strict("phone", &p, region)
                    .map_err(status)?
                    .value,
            ),
            Some(Key::ExternalId(x)) => Identifier::external(&x.system, &x.id).map_err(status)?,
            None => {
                return Err(status(Error::invalid(
                    "key",
                    "is required: set email, phone or external_id",
                )));
            }
        };
        let loaded = self
            .store
            .lookup(&ident)
            .await
            .map_err(status)?
            .ok_or_else(|| {
                status(Error::NotFound(format!(
                    "no contact with this {}",
                    ident.kind()
                )))
            })?;
        Ok(Response::new(v1::LookupContactResponse {
            contact: Some(loaded.record.to_proto(&loaded.id)),
        }))
    }

    async fn list_contacts(
        &self,
        request: Request<v1::ListContactsRequest>,
    ) -> Result<Response<v1::ListContactsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size).map_err(status)?;
        let after = Cursor::decode(&req.page_token).map_err(status)?;
        let stage = match v1::Stage::try_from(req.stage) {
            Ok(v1::Stage::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => return Err(status(Error::invalid("stage", "is not a known stage"))),
        };
        let page = self
            .store
            .list_contacts(after, limit, |r| {
                stage.is_none_or(|s| r.stage().to_proto() == s)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListContactsResponse {
            contacts: page
                .items
                .iter()
                .map(|l| l.record.to_proto(&l.id))
                .collect(),
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size).map_err(status)?;
        let after = Cursor::decode(&req.page_token).map_err(status)?;
        let filter = EventFilter {
            contact: match req.contact_id.as_str() {
                "" => None,
                s => Some(ContactId::parse(s).map_err(status)?),
            },
            source: (!req.source.is_empty()).then_some(req.source),
            outcome: match v1::EventOutcome::try_from(req.outcome) {
                Ok(v1::EventOutcome::Unspecified) => None,
                Ok(o) => Some(o),
                Err(_) => return Err(status(Error::invalid("outcome", "is not a known outcome"))),
            },
        };
        let page = self
            .store
            .list_events(after, limit, &filter)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListEventsResponse {
            events: page.items,
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }
}
