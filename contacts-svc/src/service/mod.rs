//! The `contacts.v1.ContactsService` gRPC service: validates requests, calls the store
//! and shapes answers. The only place a `tonic::Status` is made. Applying webhook
//! events, and what each becomes, is in `events.rs`; erasing a contact is the store's
//! (`store/erase.rs`).

mod events;

use std::sync::Arc;

use hookline_proto::v1::{self, contacts_service_server::ContactsService};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::contact::text::Reader;
use crate::contact::{
    ContactFields, ContactId, Effect, Email, EventEffect, EventId, Identifier, ParsedEvent, Phone,
    Region, optional_millis,
};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::{Cursor, EventFilter, Loaded, Store, now_millis};

const DEFAULT_PAGE: usize = 50;
/// Most events in one ApplyEvents call.
const MAX_BATCH: usize = 1000;
const MAX_PAGE: usize = 500;
/// Most ids one ListEvents call looks up.
const MAX_EVENT_IDS: usize = 1000;

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
    /// Refuses a call with an event `caller` may not write (see `events::writable`).
    fn writable(&self, caller: &Caller, items: &[v1::ApplyEventsItem]) -> Result<(), Status> {
        events::writable(caller, items).map_err(|e| {
            self.metrics.auth_refused("source");
            tracing::info!(caller = %caller.name, error = %e, "call refused");
            status(e)
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

/// Maps an error to a status, logging our own failures with their cause.
fn status(e: Error) -> Status {
    match &e {
        Error::Redis(_)
        | Error::Contention(_)
        | Error::Deadline
        | Error::InProgress(_)
        | Error::Replicas { .. } => {
            tracing::warn!(error = %e, class = e.class(), "call failed, caller may retry");
        }
        Error::Corrupt { .. } | Error::Layout(_) => tracing::error!(error = %e, "call failed"),
        Error::InvalidArgument { .. } | Error::NotFound(_) | Error::ForeignSource { .. } => {}
    }
    status_of(&e)
}

/// The status of an error: a caller's mistake says what was wrong; our own failure says
/// nothing about its cause.
fn status_of(e: &Error) -> Status {
    match e {
        Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::ForeignSource { .. } => Status::permission_denied(e.to_string()),
        Error::InProgress(_) => {
            Status::aborted("the event is being applied by another call, retry later")
        }
        Error::Redis(_) | Error::Contention(_) => {
            Status::unavailable("storage unavailable, retry later")
        }
        Error::Deadline => Status::unavailable("not applied in time, retry later"),
        Error::Replicas { .. } => Status::unavailable("not replicated in time, retry later"),
        Error::Corrupt { .. } => Status::internal("internal error"),
        Error::Layout(_) => Status::failed_precondition("the storage layout needs a migration"),
    }
}

fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE),
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        n => Ok(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
    }
}

#[tonic::async_trait]
impl ContactsService for Service {
    async fn apply_event(
        &self,
        request: Request<v1::ApplyEventRequest>,
    ) -> Result<Response<v1::ApplyEventResponse>, Status> {
        let deadline = events::deadline(request.metadata());
        let caller = Caller::of(&request);
        let item = v1::ApplyEventsItem {
            request_id: metadata(&request, "x-request-id").to_owned(),
            traceparent: metadata(&request, "traceparent").to_owned(),
            event: request.into_inner().event,
            replay_of: String::new(),
        };
        let items = vec![item];
        self.writable(&caller, &items)?;
        let outcome = self.apply_items(items, deadline).await?.swap_remove(0);
        outcome
            .map(|a| Response::new(events::response(a)))
            .map_err(status)
    }

    async fn apply_events(
        &self,
        request: Request<v1::ApplyEventsRequest>,
    ) -> Result<Response<v1::ApplyEventsResponse>, Status> {
        let deadline = events::deadline(request.metadata());
        let caller = Caller::of(&request);
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH {
            return Err(status(Error::invalid(
                "items",
                "holds more than 1000 events",
            )));
        }
        // One event of a source the caller may not write refuses the whole call, so
        // that nothing of it takes effect.
        self.writable(&caller, &items)?;
        let results = self
            .apply_items(items, deadline)
            .await?
            .into_iter()
            .map(events::result)
            .collect();
        Ok(Response::new(v1::ApplyEventsResponse { results }))
    }

    async fn upsert_contact(
        &self,
        request: Request<v1::UpsertContactRequest>,
    ) -> Result<Response<v1::UpsertContactResponse>, Status> {
        let deadline = events::deadline(request.metadata());
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
            &mut Reader::strict(),
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
            record_id: id.clone(),
            original_id: None,
            dedup_window: None,
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
            replay: false,
        };
        let applied = self
            .store
            .apply(&event, explicit.as_ref(), deadline)
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
            contact: Some(loaded.to_proto()),
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
            contact: Some(loaded.to_proto()),
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
            contact: Some(loaded.to_proto()),
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
            .list_contacts(after, limit, |l| {
                // A tombstone is in no stage: listed only when no stage is asked for.
                stage.is_none_or(|s| l.erased.is_none() && l.record.stage().to_proto() == s)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListContactsResponse {
            contacts: page.items.iter().map(Loaded::to_proto).collect(),
            next_page_token: page.next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn erase_contact(
        &self,
        request: Request<v1::EraseContactRequest>,
    ) -> Result<Response<v1::EraseContactResponse>, Status> {
        let deadline = events::deadline(request.metadata());
        let caller = Caller::of(&request);
        let id = ContactId::parse(&request.into_inner().contact_id).map_err(status)?;
        // A task of its own, so that a caller that hangs up does not cut the erasure off
        // halfway. The deadline may (the erasure is written so that the next call
        // completes it), and answers "retry later".
        let store = self.store.clone();
        let by = caller.name.clone();
        let erased = tokio::spawn(async move {
            let erase = store.erase(&id, &by, now_millis());
            tokio::time::timeout_at(deadline.into(), erase)
                .await
                .unwrap_or(Err(Error::Deadline))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "erasing a contact failed");
            Status::internal("internal error")
        })?
        .map_err(status)?;
        self.metrics.erased();
        // The contact's id and who asked: nothing of the person.
        tracing::info!(contact_id = %erased.id, caller = %caller.name, "contact erased");
        Ok(Response::new(v1::EraseContactResponse {
            contact: Some(erased.to_proto()),
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
            event_type: (!req.r#type.is_empty()).then_some(req.r#type),
            received_from: optional_millis("received_from", req.received_from.as_ref())
                .map_err(status)?,
            received_before: optional_millis("received_before", req.received_before.as_ref())
                .map_err(status)?,
            ids: if req.event_ids.len() > MAX_EVENT_IDS {
                return Err(status(Error::invalid(
                    "event_ids",
                    format!("holds more than {MAX_EVENT_IDS} ids"),
                )));
            } else {
                req.event_ids
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
