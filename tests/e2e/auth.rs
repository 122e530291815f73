//! Authentication and scopes on contacts-svc's gRPC API: every call needs a bearer token
//! whose scopes grant the method, and an event's source (and its id's namespace) must be
//! one the token may write. Refused calls change nothing and never echo the token; the
//! edge shows its own token and applies signed webhooks; grpcurl works with `-H`.

use std::time::Duration;

use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};
use hookline_tests::{
    ContactsSvc, Edge, Http, Redis, TempFile, contact_event, eventually, grpcurl_output,
    run_grpcurl, stripe_checkout, stripe_source,
};
use tonic::metadata::MetadataValue;

const EDGE_TOKEN: &str = "edge-2f1c6a0e4b9d4c7a8e5f3b2d1c0a9e8f";
const READER_TOKEN: &str = "reader-5b7e9c1d3f2a4b6c8d0e1f2a3b4c5d6e";
const ADMIN_TOKEN: &str = "admin-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d";

fn tokens_file() -> String {
    let digest = |t: &str| hex::encode(contacts_svc::auth::digest(t.as_bytes()));
    format!(
        r#"
[[tokens]]
name = "edge"
sha256 = "{}"
scopes = ["events:write", "contacts:read"]
sources = ["stripe", "batch"]

[[tokens]]
name = "reader"
sha256 = "{}"
scopes = ["contacts:read"]

[[tokens]]
name = "admin"
sha256 = "{}"
scopes = ["events:write", "contacts:read", "contacts:write", "contacts:erase"]
sources = ["*"]
"#,
        digest(EDGE_TOKEN),
        digest(READER_TOKEN),
        digest(ADMIN_TOKEN)
    )
}

fn auth() -> contacts_svc::Auth {
    contacts_svc::Auth::Tokens {
        tokens: contacts_svc::auth::Tokens::parse(&tokens_file()).unwrap(),
        public_health: true,
        public_reflection: false,
    }
}

/// `request` with `authorization: Bearer <token>`, or without one.
fn with<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn apply(id: &str, source: &str, email: &str) -> v1::ApplyEventsRequest {
    let mut event = contact_event(id, source, Some(email), Some("Ada"));
    event.source = source.to_owned();
    v1::ApplyEventsRequest {
        items: vec![v1::ApplyEventsItem {
            event: Some(event),
            ..v1::ApplyEventsItem::default()
        }],
    }
}

#[tokio::test]
async fn calls_need_a_token_with_the_scope_and_the_source_they_use() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start_with_auth(&redis.url(), auth()).await;
    let mut client = ContactsServiceClient::connect(contacts.url())
        .await
        .unwrap();

    // Refused, each with its code and a message that names no token.
    let cases: Vec<(&str, Option<&str>, v1::ApplyEventsRequest, tonic::Code)> = vec![
        (
            "no token",
            None,
            apply("batch:evt_1", "batch", "ada@example.com"),
            tonic::Code::Unauthenticated,
        ),
        (
            "a wrong token",
            Some("edge-2f1c6a0e4b9d4c7a8e5f3b2d1c0a9e8e"),
            apply("batch:evt_1", "batch", "ada@example.com"),
            tonic::Code::Unauthenticated,
        ),
        (
            "a read token writing",
            Some(READER_TOKEN),
            apply("batch:evt_1", "batch", "ada@example.com"),
            tonic::Code::PermissionDenied,
        ),
        (
            "the edge's token writing a source it does not have",
            Some(EDGE_TOKEN),
            apply("gohighlevel:wh_1", "gohighlevel", "ada@example.com"),
            tonic::Code::PermissionDenied,
        ),
        (
            "the edge's token taking another source's event id",
            Some(EDGE_TOKEN),
            apply("gohighlevel:wh_1", "stripe", "ada@example.com"),
            tonic::Code::PermissionDenied,
        ),
    ];
    for (what, token, request, code) in cases {
        let refused = client.apply_events(with(token, request)).await.unwrap_err();
        assert_eq!(refused.code(), code, "{what}: {refused:?}");
        for t in [EDGE_TOKEN, READER_TOKEN, ADMIN_TOKEN] {
            assert!(!refused.message().contains(t), "{what}: {refused:?}");
        }
    }
    // A read token may not change a contact either, nor erase one.
    let upsert = client
        .upsert_contact(with(
            Some(READER_TOKEN),
            v1::UpsertContactRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(upsert.code(), tonic::Code::PermissionDenied, "{upsert:?}");
    // Nothing of it took effect: no contact, no record, and the squatted id is free.
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k == "hl:schema"),
        "only the layout's version is stored: {keys:?}"
    );
    let lookup = client
        .lookup_contact(with(
            Some(READER_TOKEN),
            v1::LookupContactRequest {
                key: Some(v1::lookup_contact_request::Key::Email(
                    "ada@example.com".into(),
                )),
                phone_region: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), tonic::Code::NotFound);

    // Allowed: the edge's token for its own source, then a reader reads it.
    let applied = client
        .apply_events(with(
            Some(EDGE_TOKEN),
            apply("batch:evt_1", "batch", "ada@example.com"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        applied.results[0].response.as_ref().unwrap().outcome(),
        v1::EventOutcome::Applied
    );
    let listed = client
        .list_events(with(Some(READER_TOKEN), v1::ListEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 1);
    // An admin token may write any source.
    let admin = client
        .apply_events(with(
            Some(ADMIN_TOKEN),
            apply("other:evt_1", "other", "grace@example.com"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        admin.results[0].response.as_ref().unwrap().outcome(),
        v1::EventOutcome::Applied
    );

    // Health is public (probes carry no token); reflection is not, by default.
    let addr = contacts.addr.to_string();
    let channel = tonic::transport::Endpoint::from_shared(contacts.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    assert!(health.check(check).await.is_ok(), "health needs no token");
    let closed = grpcurl_output(&["-plaintext", &addr, "list"]).await;
    assert!(!closed.status.success());
    let header = format!("authorization: Bearer {READER_TOKEN}");
    let services = run_grpcurl(&["-plaintext", "-H", &header, &addr, "list"]).await;
    assert!(
        services.contains("contacts.v1.ContactsService"),
        "{services}"
    );
    let found = run_grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        "-d",
        r#"{"email": "ada@example.com"}"#,
        &addr,
        "contacts.v1.ContactsService/LookupContact",
    ])
    .await;
    assert!(found.contains("ada@example.com"), "{found}");

    let metrics = Http::new()
        .get(&format!("http://{}/metrics", contacts.metrics_addr))
        .await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let reasons = [
        ("missing", 1.0),
        ("invalid", 1.0),
        ("scope", 2.0),
        ("source", 2.0),
    ];
    for (reason, at_least) in reasons {
        let n = hookline_tests::metric(
            &text,
            "hookline_contacts_auth_refused_total",
            &[("reason", reason)],
        );
        assert!(n >= at_least, "{reason}: {n}\n{text}");
    }
}

#[tokio::test]
async fn the_edge_shows_its_token_and_applies_signed_webhooks() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start_with_auth(&redis.url(), auth()).await;
    let token = TempFile::new("hookline-edge-token", EDGE_TOKEN);
    let edge = Edge::start(&format!(
        "contacts_url = \"{}\"\ncontacts_token = \"file:{}\"\n{}",
        contacts.url(),
        token.arg(),
        stripe_source()
    ))
    .await;
    let http = Http::new();
    let ready = edge.url("/readyz");
    eventually(Duration::from_secs(10), "the edge to be ready", || async {
        (http.get(&ready).await.status == 200).then_some(())
    })
    .await;
    let body = stripe_checkout("evt_auth_1", "buyer@example.com", 4200, "pi_auth_1");
    let reply = edge.post_stripe(&http, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "applied");
    let mut client = ContactsServiceClient::connect(contacts.url())
        .await
        .unwrap();
    let found = client
        .lookup_contact(with(
            Some(READER_TOKEN),
            v1::LookupContactRequest {
                key: Some(v1::lookup_contact_request::Key::Email(
                    "buyer@example.com".into(),
                )),
                phone_region: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    assert_eq!(found.totals[0].purchased, 4200);
}
