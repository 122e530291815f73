//! SIGTERM with a request in flight: the edge binary stops accepting, answers the
//! request (applied, or spooled when contacts-svc does not answer within the grace
//! period), closes its spool and exits 0; a spooled event is applied after a restart.

use std::process::Stdio;
use std::time::Duration;

use hookline_tests::{
    ContactsSvc, Http, Redis, STRIPE_SECRET, TempDir, TempFile, eventually, free_port, now_secs,
    stripe_checkout, stripe_sign, workspace_bin,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::connections::read_reply;

/// The edge binary, run as its own process so that it can be sent SIGTERM.
struct EdgeProcess {
    child: Child,
    /// The webhook port.
    port: u16,
    /// The `GET /metrics` port.
    metrics: u16,
    _config: TempFile,
}

/// The edge binary on `port`, spooling into `spool`, with this grace period.
async fn edge(port: u16, contacts_url: &str, spool: &TempDir, grace_secs: u64) -> EdgeProcess {
    let metrics = free_port();
    let config = TempFile::new(
        "hookline-edge",
        &format!(
            "listen = \"127.0.0.1:{port}\"\ncontacts_url = \"{contacts_url}\"\n\
             metrics_listen = \"127.0.0.1:{metrics}\"\n\
             contacts_timeout_ms = 60000\nshutdown_grace_secs = {grace_secs}\n\
             [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"{STRIPE_SECRET}\"]\n"
        ),
    );
    let child = Command::new(workspace_bin("edge"))
        // One worker: the single-threaded scheduler `make bench` runs it on (the other
        // tests run the binaries with one worker per core).
        .args(["--config", &config.arg(), "--spool-dir", &spool.arg()])
        .args(["--worker-threads", "1"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the edge");
    eventually(
        Duration::from_secs(20),
        "the edge binary to answer",
        || async { (probe(port, "/healthz").await? == 200).then_some(()) },
    )
    .await;
    EdgeProcess {
        child,
        port,
        metrics,
        _config: config,
    }
}

/// `GET path` on a new connection: the status, `None` while nothing answers.
async fn probe(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_reply(&mut stream).await.map(|r| r.status)
}

/// Sends the head and the first half of a signed delivery of `body`, and returns the
/// connection with the rest of the body still to send once the edge has read the head.
async fn half_sent(edge: &EdgeProcess, body: &[u8]) -> TcpStream {
    let sig = stripe_sign(STRIPE_SECRET, now_secs(), body);
    let mut stream = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n\
         stripe-signature: {sig}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    // Until the edge has parsed the head, the connection holds no request: a shutdown
    // then closes it unanswered, as any server does, and its sender retries. The body's
    // reservation in the buffered-bytes budget shows that the request is in flight.
    let reserved = format!("hookline_edge_buffered_body_bytes {}\n", body.len());
    eventually(
        Duration::from_secs(10),
        "the edge to read the head",
        || async {
            let mut metrics = TcpStream::connect(("127.0.0.1", edge.metrics)).await.ok()?;
            let request = "GET /metrics HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n";
            metrics.write_all(request.as_bytes()).await.ok()?;
            let reply = read_reply(&mut metrics).await?;
            String::from_utf8_lossy(&reply.body)
                .contains(&reserved)
                .then_some(())
        },
    )
    .await;
    stream
}

/// Sends SIGTERM and waits until the edge has closed its listener (shutdown began).
async fn terminate(edge: &EdgeProcess) {
    let port = edge.port;
    let pid = edge.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(10), "the listener to close", || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

async fn exits_cleanly(mut edge: EdgeProcess) {
    let status = tokio::time::timeout(Duration::from_secs(15), edge.child.wait())
        .await
        .expect("the edge to exit within its grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_answered_and_applied() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let spool = TempDir::new("hookline-spool");
    let port = free_port();
    let edge = edge(port, &contacts.url(), &spool, 10).await;
    let body = stripe_checkout(
        "evt_in_flight",
        "inflight@example.com",
        4200,
        "pi_in_flight",
    );
    let mut stream = half_sent(&edge, &body).await;

    terminate(&edge).await;
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let reply = read_reply(&mut stream)
        .await
        .expect("an answer, not a cut connection");
    assert_eq!(reply.status, 200, "{}", reply.head);
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["status"], "applied");
    exits_cleanly(edge).await;
    let contact = contacts.lookup_email("inflight@example.com").await.unwrap();
    assert_eq!(contact.totals[0].purchased, 4200);
}

#[tokio::test]
async fn a_request_contacts_svc_does_not_answer_by_the_end_of_the_grace_period_is_spooled() {
    let redis = Redis::start().await;
    // contacts-svc as a process of its own, so that it can be frozen: it takes the call
    // and does not answer.
    let grpc = free_port();
    let mut contacts = Command::new(workspace_bin("contacts-svc"))
        .args([
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--redis-url",
            &redis.url(),
            "--insecure-no-auth",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let contacts_url = format!("http://127.0.0.1:{grpc}");
    let spool = TempDir::new("hookline-spool");
    let port = free_port();
    let edge_process = edge(port, &contacts_url, &spool, 3).await;
    let http = Http::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    eventually(Duration::from_secs(20), "the edge to be ready", || async {
        (http.get(&ready).await.json()["status"] == "ready").then_some(())
    })
    .await;

    let body = stripe_checkout(
        "evt_unanswered",
        "unanswered@example.com",
        900,
        "pi_unanswered",
    );
    let mut stream = half_sent(&edge_process, &body).await;
    let pid = contacts.id().unwrap().to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    terminate(&edge_process).await;
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let reply = read_reply(&mut stream)
        .await
        .expect("an answer, not a cut connection");
    assert_eq!(reply.status, 202, "{}", reply.head);
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["status"], "queued");
    exits_cleanly(edge_process).await;

    // The spool was closed with the event in it: a new edge on it applies it.
    signal("-CONT");
    let _edge = edge(port, &contacts_url, &spool, 3).await;
    let client = || async {
        hookline_proto::v1::contacts_service_client::ContactsServiceClient::connect(
            contacts_url.clone(),
        )
        .await
        .ok()
    };
    let contact = eventually(
        Duration::from_secs(30),
        "the spooled event to apply",
        || async {
            let mut c = client().await?;
            c.lookup_contact(hookline_proto::v1::LookupContactRequest {
                key: Some(hookline_proto::v1::lookup_contact_request::Key::Email(
                    "unanswered@example.com".into(),
                )),
                phone_region: String::new(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().contact)
        },
    )
    .await;
    assert_eq!(contact.totals[0].purchased, 900);
    let _ = contacts.kill().await;
}
