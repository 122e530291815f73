//! The edge reaching contacts-svc by a DNS name: every address of the name is an endpoint
//! of the balancer, and only those that take connections get calls.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use edge::contacts::{Resolve, SystemResolver};
use hookline_proto::v1;
use hookline_tests::{
    ContactsSvc, Edge, Http, Redis, Stack, contact_item, free_port, stripe_checkout, stripe_source,
};

#[tokio::test]
async fn an_edge_given_contacts_svc_by_name_applies_signed_webhooks() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    // `localhost`, not 127.0.0.1: a name, looked up by the edge. Where it resolves to
    // ::1 too, that address refuses (contacts-svc listens on 127.0.0.1 only) and must
    // get no call: every webhook below is applied, none spooled.
    let toml = format!(
        "contacts_url = \"http://localhost:{}\"\ncontacts_dns_refresh_secs = 1\n\
         max_body_bytes = 65536\ncontacts_timeout_ms = 5000\n{}",
        contacts.addr.port(),
        stripe_source()
    );
    let edge = Edge::start_with_metrics_listener(&toml).await;
    let stack = Stack {
        redis,
        contacts,
        edge,
        http: Http::new(),
    };
    stack.wait_ready().await;
    for n in 0..10 {
        let email = format!("by.name{n}@example.com");
        let body = stripe_checkout(&format!("evt_by_name_{n}"), &email, 100, "pi_by_name");
        let reply = stack.post_stripe(&body).await;
        assert_eq!(reply.status, 200, "webhook {n}: {:?}", reply.body);
        assert_eq!(reply.json()["status"], "applied", "webhook {n}");
        let contact = stack.contacts.lookup_email(&email).await.expect("found");
        assert_eq!(contact.email, email);
    }
}

/// A name resolving to `addresses`, each tried for real.
#[derive(Debug)]
struct Name {
    addresses: Vec<SocketAddr>,
}

impl Resolve for Name {
    async fn lookup(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(self.addresses.clone())
    }

    async fn accepting(
        &self,
        addresses: &BTreeSet<SocketAddr>,
        within: Duration,
    ) -> BTreeSet<SocketAddr> {
        SystemResolver.accepting(addresses, within).await
    }
}

/// tonic's balancer keeps an endpoint that refuses connections and fails the calls it
/// sends there (about half of them, here, with every address used) for as long as it
/// holds it: the edge must leave such addresses out.
#[tokio::test]
async fn addresses_that_refuse_connections_get_no_call() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let name = Name {
        addresses: vec![
            // contacts-svc's port on ::1, where it does not listen: `localhost` on a
            // machine whose hosts file names both families.
            SocketAddr::from((Ipv6Addr::LOCALHOST, contacts.addr.port())),
            // A port nothing listens on: a pod that is gone.
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            contacts.addr,
        ],
    };
    let url: http::Uri = format!("http://contacts-svc.test:{}", contacts.addr.port())
        .parse()
        .unwrap();
    let options = edge::ContactsOptions::new(Duration::from_secs(5));
    let client = edge::Contacts::connect_lazy_with(&[url], &options, name);
    let trace = edge::trace::Trace::of(&http::HeaderMap::new());
    // One after the other: each call picks its endpoint anew.
    for n in 0..30 {
        let item = contact_item(&format!("by-name:{n}"), "refused@example.com", None);
        let answer = client
            .apply(item.event.unwrap(), &trace)
            .await
            .unwrap_or_else(|status| panic!("call {n}: {status}"));
        assert_eq!(answer.outcome(), v1::EventOutcome::Applied, "call {n}");
    }
}
