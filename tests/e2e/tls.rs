//! TLS between the edge and contacts-svc, with a throwaway certificate authority: the
//! edge calls `https://` with its own client certificate (mutual TLS) and its token, and
//! applies a signed webhook; a client that does not trust the authority, or shows no
//! certificate, gets nothing from contacts-svc.

use std::time::Duration;

use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};
use hookline_tests::{
    ContactsSvc, Edge, Http, Redis, TempDir, eventually, stripe_checkout, stripe_source,
};
use hookline_tls::test_ca::TestCa;
use hookline_tls::{ServerTls, TlsFiles};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const EDGE_TOKEN: &str = "edge-tls-3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f";

fn auth() -> contacts_svc::Auth {
    let digest = hex::encode(contacts_svc::auth::digest(EDGE_TOKEN.as_bytes()));
    let file = format!(
        "[[tokens]]\nname = \"edge\"\nsha256 = \"{digest}\"\n\
         scopes = [\"events:write\", \"contacts:read\"]\nsources = [\"stripe\"]\n"
    );
    contacts_svc::Auth::Tokens {
        tokens: contacts_svc::auth::Tokens::parse(&file).unwrap(),
        public_health: true,
        public_reflection: false,
    }
}

/// A LookupContact through a client with these TLS settings: what it answered.
async fn lookup(port: u16, tls: ClientTlsConfig) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut client = ContactsServiceClient::new(channel);
    let mut request = tonic::Request::new(v1::LookupContactRequest {
        key: Some(v1::lookup_contact_request::Key::Email(
            "buyer@example.com".into(),
        )),
        phone_region: String::new(),
    });
    let token = format!("Bearer {EDGE_TOKEN}").parse().unwrap();
    request.metadata_mut().insert("authorization", token);
    client
        .lookup_contact(request)
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn the_edge_calls_contacts_svc_over_mutual_tls() {
    let dir = TempDir::new("hookline-tls");
    let ca = TestCa::new(&dir.0, "hookline test ca");
    let server = ca.server("contacts-svc", &["localhost", "127.0.0.1"]);
    let edge_cert = ca.client("edge", "edge");
    let tls = ServerTls::load(
        TlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(ca.cert_path()),
        },
        &[b"h2"],
    )
    .unwrap();
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start_secured(&redis.url(), auth(), Some(tls)).await;
    let port = contacts.addr.port();
    let token = hookline_tests::TempFile::new("hookline-token", EDGE_TOKEN);
    let edge = Edge::start(&format!(
        "contacts_url = \"https://localhost:{port}\"\n\
         contacts_ca = \"file:{}\"\n\
         contacts_cert = \"file:{}\"\n\
         contacts_key = \"file:{}\"\n\
         contacts_token = \"file:{}\"\n{}",
        ca.cert_path().display(),
        edge_cert.cert.display(),
        edge_cert.key.display(),
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
    let body = stripe_checkout("evt_tls_1", "buyer@example.com", 4200, "pi_tls_1");
    let reply = edge.post_stripe(&http, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["status"], "applied");

    // The authority and the edge's certificate: the contact is there.
    let ca_pem = std::fs::read_to_string(ca.cert_path()).unwrap();
    let identity = Identity::from_pem(
        std::fs::read_to_string(&edge_cert.cert).unwrap(),
        std::fs::read_to_string(&edge_cert.key).unwrap(),
    );
    let trusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .identity(identity.clone());
    lookup(port, trusted).await.unwrap();
    // No certificate of the authority: refused in the handshake.
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem));
    assert!(lookup(port, anonymous).await.is_err());
    // Not trusting the authority: the client refuses contacts-svc's certificate.
    let elsewhere = TempDir::new("hookline-tls-other");
    let other = TestCa::new(&elsewhere.0, "another ca");
    let other_pem = std::fs::read_to_string(other.cert_path()).unwrap();
    let stranger = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&other_pem))
        .identity(identity);
    let refused = lookup(port, stranger).await.unwrap_err();
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("certificate"),
        "{refused}"
    );
    // Plain HTTP/2 to the TLS port gets no answer either.
    let plain = ContactsServiceClient::connect(format!("http://127.0.0.1:{port}")).await;
    let answered = match plain {
        Ok(mut client) => client
            .list_events(v1::ListEventsRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "plain HTTP/2 was answered on the TLS port");
}
