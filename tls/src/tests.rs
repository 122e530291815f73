use std::sync::Arc;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::test_ca::TestCa;
use super::*;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookline-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsFiles {
    TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        client_ca: client_ca.map(Path::to_owned),
    }
}

#[test]
fn every_problem_names_its_file() {
    let dir = dir("problems");
    let ca = TestCa::new(&dir, "test ca");
    let server = ca.server("server", &["localhost"]);
    let other = ca.server("other", &["localhost"]);
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.join("missing.pem");
    let cases = [
        (files(&missing, &server.key, None), "missing.pem"),
        (
            files(&empty, &server.key, None),
            "empty.pem: holds no certificate",
        ),
        (
            files(&server.cert, &empty, None),
            "empty.pem: no private key",
        ),
        (
            files(&server.cert, &other.key, None),
            "server.pem: does not go with its key",
        ),
        (
            files(&server.cert, &server.key, Some(&empty)),
            "empty.pem: holds no certificate",
        ),
    ];
    for (files, want) in cases {
        let err = ServerTls::load(files.clone(), &[b"h2"])
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{files:?}: {err}");
    }
    assert!(ServerTls::load(files(&server.cert, &server.key, Some(&ca.cert_path())), &[]).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that trusts `ca` and, for mutual TLS, shows `identity`.
fn connector(ca: &Path, identity: Option<&test_ca::Issued>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&id.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&id.key).unwrap(),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = dir("reload");
    let first = dir.join("first");
    let second = dir.join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let ca1 = TestCa::new(&first, "first ca");
    let ca2 = TestCa::new(&second, "second ca");
    let server = ca1.server("server", &["localhost"]);
    let client = ca1.client("client", "edge");
    let client_ca = dir.join("clients.pem");
    std::fs::copy(ca1.cert_path(), &client_ca).unwrap();
    let tls = ServerTls::load(files(&server.cert, &server.key, Some(&client_ca)), &[]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Box::pin(tls.clone().incoming(listener));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let connect = |connector: TlsConnector| {
        let name = name.clone();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector.connect(name, tcp).await
        }
    };

    // Mutual TLS: a client with a certificate of the authority gets through; one without
    // a certificate, or trusting another authority, does not.
    let mut open = connect(connector(&ca1.cert_path(), Some(&client)))
        .await
        .unwrap();
    let mut served = incoming.next().await.unwrap().unwrap();
    let refused = connect(connector(&ca1.cert_path(), None)).await;
    // TLS 1.3: the server's refusal of a missing certificate arrives with the first read.
    if let Ok(mut s) = refused {
        let mut byte = [0u8; 1];
        assert!(
            s.read(&mut byte).await.is_err() || byte == [0],
            "refused without a certificate"
        );
    }
    assert!(
        connect(connector(&ca2.cert_path(), Some(&client)))
            .await
            .is_err()
    );

    // The files are replaced by the second authority's; a reload serves them at once.
    let server2 = ca2.server("server", &["localhost"]);
    let client2 = ca2.client("client", "edge");
    std::fs::copy(&server2.cert, &server.cert).unwrap();
    std::fs::copy(&server2.key, &server.key).unwrap();
    std::fs::copy(ca2.cert_path(), &client_ca).unwrap();
    tls.reload().unwrap();
    assert!(
        connect(connector(&ca1.cert_path(), Some(&client)))
            .await
            .is_err()
    );
    let _new = connect(connector(&ca2.cert_path(), Some(&client2)))
        .await
        .unwrap();
    let _served_new = incoming.next().await.unwrap().unwrap();

    // The connection made before the reload still carries data both ways.
    served.write_all(b"ping").await.unwrap();
    served.flush().await.unwrap();
    let mut got = [0u8; 4];
    open.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    open.write_all(b"pong").await.unwrap();
    open.flush().await.unwrap();
    served.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong");

    // A reload that cannot read its files keeps the configuration in use.
    std::fs::write(&server.key, "not a key").unwrap();
    assert!(tls.reload().is_err());
    assert!(
        connect(connector(&ca2.cert_path(), Some(&client2)))
            .await
            .is_ok()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn the_watcher_reloads_when_a_file_changes() {
    let dir = dir("watch");
    let ca = TestCa::new(&dir, "ca");
    let server = ca.server("server", &["localhost"]);
    let tls = ServerTls::load(files(&server.cert, &server.key, None), &[]).unwrap();
    let before = Arc::as_ptr(&tls.current.read().unwrap().clone());
    tokio::spawn(tls.clone().watch(Duration::from_secs(2)));
    // Another certificate, of another size, under the same name.
    let other = ca.server("other", &["localhost", "hookline.internal"]);
    std::fs::copy(&other.cert, &server.cert).unwrap();
    std::fs::copy(&other.key, &server.key).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while Arc::as_ptr(&tls.current.read().unwrap().clone()) == before {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
