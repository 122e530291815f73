//! The gRPC client of contacts-svc: one lazily connected HTTP/2 channel, balanced over
//! every configured address, with a deadline on every call.

use std::time::Duration;

use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};
use tonic::transport::{Channel, Endpoint};

use crate::webhook::Trace;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a readiness probe waits for contacts-svc.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Handle on contacts-svc; cheap to clone.
#[derive(Clone, Debug)]
pub struct Contacts {
    client: ContactsServiceClient<Channel>,
    health: HealthClient<Channel>,
    timeout: Duration,
}

impl Contacts {
    /// Prepares the channel; connections are made on first use and re-made as needed.
    pub fn connect_lazy(urls: &[http::Uri], timeout: Duration) -> Self {
        let endpoints = urls.iter().map(|u| {
            Endpoint::from(u.clone())
                .connect_timeout(Duration::from_secs(1))
                .timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true)
        });
        let channel = match urls {
            [_] => endpoints
                .into_iter()
                .next()
                .map(|e| e.connect_lazy())
                .expect("one endpoint"),
            _ => Channel::balance_list(endpoints),
        };
        Self {
            client: ContactsServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            timeout,
        }
    }

    /// Applies one event, within the deadline.
    pub async fn apply(
        &self,
        event: v1::WebhookEvent,
        trace: &Trace,
    ) -> Result<v1::ApplyEventResponse, tonic::Status> {
        let mut request = tonic::Request::new(v1::ApplyEventRequest { event: Some(event) });
        request.set_timeout(self.timeout);
        let metadata = request.metadata_mut();
        if let Ok(v) = trace.request_id.parse() {
            metadata.insert("x-request-id", v);
        }
        if let Ok(v) = trace.traceparent.parse() {
            metadata.insert("traceparent", v);
        }
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.apply_event(request)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "contacts-svc did not answer in time",
            )),
        }
    }

    /// Whether contacts-svc answers and reports SERVING.
    pub async fn ready(&self) -> bool {
        let mut health = self.health.clone();
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: hookline_proto::SERVICE_NAME.to_owned(),
        });
        request.set_timeout(READY_TIMEOUT);
        match tokio::time::timeout(READY_TIMEOUT, health.check(request)).await {
            Ok(Ok(r)) => r.into_inner().status() == ServingStatus::Serving,
            _ => false,
        }
    }
}
