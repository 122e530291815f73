//! TLS on every hop, with a throwaway certificate authority: a sender posts a signed
//! webhook to the edge over HTTPS, the edge calls contacts-svc over `https://` with its
//! own client certificate (mutual TLS) and its token, and contacts-svc reaches a Redis
//! that speaks only TLS (`rediss://`) and asks for a client certificate. A client that
//! does not trust the authority, or shows no certificate, gets nothing.

use std::time::Duration;

use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};
use hookline_tests::{
    ContactsSvc, Edge, Redis, RedisTlsFiles, TempDir, eventually, stripe_checkout, stripe_source,
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
async fn every_hop_speaks_tls_and_refuses_clients_without_the_authority() {
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
    let redis_cert = ca.server("redis", &["localhost"]);
    let redis_client = ca.client("contacts-svc-client", "contacts-svc");
    let redis = Redis::start_tls(RedisTlsFiles {
        cert: redis_cert.cert,
        key: redis_cert.key,
        ca: ca.cert_path(),
        client_cert: redis_client.cert,
        client_key: redis_client.key,
    })
    .await;
    assert!(redis.url().starts_with("rediss://"));
    let contacts = ContactsSvc::start_secured(&redis, auth(), Some(tls)).await;
    let listener = ca.server("edge-listener", &["localhost"]);
    let port = contacts.addr.port();
    let token = hookline_tests::TempFile::new("hookline-token", EDGE_TOKEN);
    let edge = Edge::start(&format!(
        "contacts_url = \"https://localhost:{port}\"\n\
         contacts_ca = \"file:{}\"\n\
         contacts_cert = \"file:{}\"\n\
         contacts_key = \"file:{}\"\n\
         contacts_token = \"file:{}\"\n\
         tls_cert = \"{}\"\n\
         tls_key = \"{}\"\n{}",
        ca.cert_path().display(),
        edge_cert.cert.display(),
        edge_cert.key.display(),
        token.arg(),
        listener.cert.display(),
        listener.key.display(),
        stripe_source()
    ))
    .await;
    let edge_port: u16 = edge
        .url("/")
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.trim_end_matches('/').parse().ok())
        .unwrap();
    let https = connector(&ca.cert_path());
    eventually(Duration::from_secs(10), "the edge to be ready", || async {
        let (status, _) = send(&https, edge_port, "GET", "/readyz", &[], Vec::new())
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    let body = stripe_checkout("evt_tls_1", "buyer@example.com", 4200, "pi_tls_1");
    let sig = hookline_tests::stripe_sign(
        hookline_tests::STRIPE_SECRET,
        hookline_tests::now_secs(),
        &body,
    );
    let (status, answer) = send(
        &https,
        edge_port,
        "POST",
        "/webhooks/stripe",
        &[
            ("stripe-signature", &sig),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"applied\""), "{answer}");
    // Plain HTTP to the edge's TLS port gets no HTTP answer.
    let answer = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", edge_port))
            .await
            .unwrap();
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
        got
    };
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered on the TLS port"
    );

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

/// A TLS client that trusts `ca` only.
fn connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// One HTTPS/1.1 request to `localhost:port`: the status and the body.
async fn send(
    tls: &tokio_rustls::TlsConnector,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt as _, Full};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{port}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
