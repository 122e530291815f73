//! Connection limits of the edge, over raw TCP: the first-request deadline, the idle and
//! HTTP/2 keep-alive timeouts, the connection cap, the HTTP/2 stream cap and the budget
//! of request bodies buffered at once.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hookline_tests::{
    Edge, Http, Stack, eventually, free_port, metric, stripe_checkout, stripe_source,
};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long something the edge should do at once, or after a configured few hundred
/// milliseconds, may take on a busy machine. Well below every default it stands in for
/// (10 s for the first request, 60 s idle, 20 s keep-alive, 30 s for a body), so a
/// limit left unapplied fails the test.
const SOON: Duration = Duration::from_secs(3);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 SETTINGS frame with no settings: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;

/// An edge with a metrics listener of its own (so that scraping takes no connection of
/// the webhook port), these top-level keys and a contacts-svc that is not there.
async fn edge_with(top: &str) -> Edge {
    let contacts = format!("http://127.0.0.1:{}", free_port());
    edge_calling(&contacts, top).await
}

/// [`edge_with`] calling contacts-svc at `contacts_url`.
async fn edge_calling(contacts_url: &str, top: &str) -> Edge {
    let toml = format!(
        "contacts_url = \"{contacts_url}\"\n{top}\n{}",
        stripe_source()
    );
    Edge::start_with_metrics_listener(&toml).await
}

async fn scrape(edge: &Edge) -> String {
    let addr = edge.metrics_addr.expect("a metrics listener");
    let reply = Http::new().get(&format!("http://{addr}/metrics")).await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Reads until the edge closes `stream` (end of stream or a reset), discarding what it
/// sends; panics naming `what` if it is still open after [`SOON`].
async fn closed_soon(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(SOON, read_to_end)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {SOON:?}"));
}

/// An HTTP/1.1 answer read off a raw socket.
#[derive(Debug)]
pub(crate) struct RawReply {
    pub(crate) status: u16,
    /// The status line and headers, lower-cased.
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// Reads one HTTP/1.1 answer (the edge always sends a Content-Length); `None` if the
/// connection ends first.
pub(crate) async fn read_reply(stream: &mut TcpStream) -> Option<RawReply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    Some(RawReply { status, head, body })
}

/// `GET /healthz` on a kept-alive connection: its status, `None` if the connection is
/// closed instead.
async fn healthz(stream: &mut TcpStream) -> Option<u16> {
    let request = b"GET /healthz HTTP/1.1\r\nhost: edge\r\n\r\n";
    stream.write_all(request).await.ok()?;
    read_reply(stream).await.map(|r| r.status)
}

/// Reads HTTP/2 frames up to the server's SETTINGS and returns its parameters.
async fn server_settings(stream: &mut TcpStream) -> BTreeMap<u16, u32> {
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.unwrap();
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        let (kind, ack) = (header[3], header[4] & 1 == 1);
        if kind == 4 && !ack {
            return payload
                .chunks_exact(6)
                .map(|p| {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    (id, u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
                })
                .collect();
        }
    }
}

/// An HTTP/2 HEADERS frame opening stream 1 (HPACK without Huffman coding or the
/// dynamic table): `POST /webhooks/stripe` with its body to follow, or a complete
/// `GET /healthz`.
fn headers_frame(post: bool) -> Vec<u8> {
    let (method, path, flags): (u8, &[u8], u8) = if post {
        // :method POST; flags END_HEADERS.
        (0x83, b"/webhooks/stripe", 0x4)
    } else {
        // :method GET; flags END_HEADERS | END_STREAM.
        (0x82, b"/healthz", 0x5)
    };
    // :scheme http, then :path with its name from the static table and a literal value.
    let mut block = vec![method, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 0x04]); // :authority, then "edge"
    block.extend_from_slice(b"edge");
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    // Type HEADERS, stream 1.
    let mut frame = vec![len[1], len[2], len[3], 0x1, flags, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    frame
}

/// A Stripe event of `len` bytes (padded).
fn padded_checkout(event_id: &str, len: usize) -> Vec<u8> {
    let mut body = stripe_checkout(event_id, "budget@example.com", 4900, "pi_budget");
    body.truncate(body.len() - 1);
    let padding = len - body.len() - r#","padding":""}"#.len();
    body.extend(format!(",\"padding\":\"{}\"}}", "x".repeat(padding)).into_bytes());
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn silent_one_byte_and_http2_preface_connections_are_closed_while_webhooks_are_served() {
    let stack = Stack::start_with_config("first_request_timeout_ms = 500").await;
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(stack.edge.addr).await.unwrap();
        match i % 3 {
            0 => {}
            // One stray byte: "G" starts an HTTP/1 head, "P" the HTTP/2 preface, which
            // keeps the protocol detection waiting for more.
            1 => s
                .write_all(if i % 2 == 0 { b"G" } else { b"P" })
                .await
                .unwrap(),
            _ => s
                .write_all(&[PREFACE, &EMPTY_SETTINGS].concat())
                .await
                .unwrap(),
        }
        idle.push(s);
    }
    // A sender on a connection of its own is served while they hold theirs.
    let body = stripe_checkout("evt_conn_flood", "flood@example.com", 4900, "pi_flood");
    let reply = stack.edge.post_stripe(&Http::new(), &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    futures::future::join_all(
        idle.iter_mut()
            .map(|s| closed_soon(s, "a connection without a request")),
    )
    .await;
    let text = String::from_utf8_lossy(
        &stack
            .http
            .get(&stack.edge.metrics_url("/metrics"))
            .await
            .body,
    )
    .into_owned();
    let closed = [
        ("listener", "webhooks"),
        ("reason", "first_request_timeout"),
    ];
    assert_eq!(
        metric(&text, "hookline_edge_connections_closed_total", &closed),
        300.0,
        "{text}"
    );
}

#[tokio::test]
async fn kept_alive_connections_with_nothing_in_flight_are_closed_after_the_idle_timeout() {
    let edge = edge_with("idle_timeout_ms = 300").await;
    let mut http1 = TcpStream::connect(edge.addr).await.unwrap();
    assert_eq!(healthz(&mut http1).await, Some(200));

    let io = TokioIo::new(TcpStream::connect(edge.addr).await.unwrap());
    let (mut http2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get(edge.url("/healthz"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(http2.send_request(request).await.unwrap().status(), 200);
    // The metrics listener keeps the same limits.
    let mut scraper = TcpStream::connect(edge.metrics_addr.unwrap())
        .await
        .unwrap();
    let scrape_request = b"GET /metrics HTTP/1.1\r\nhost: edge\r\n\r\n";
    scraper.write_all(scrape_request).await.unwrap();
    let scraped = read_reply(&mut scraper).await.expect("an answer");
    assert_eq!(scraped.status, 200, "{}", scraped.head);

    closed_soon(&mut http1, "an idle HTTP/1.1 connection").await;
    closed_soon(&mut scraper, "an idle connection to the metrics listener").await;
    // The client's connection task ends once the edge has closed the connection.
    tokio::time::timeout(SOON, conn)
        .await
        .expect("an idle HTTP/2 connection to be closed")
        .unwrap()
        .unwrap();
    let text = scrape(&edge).await;
    let closed = [("listener", "webhooks"), ("reason", "idle_timeout")];
    assert_eq!(
        metric(&text, "hookline_edge_connections_closed_total", &closed),
        2.0,
        "{text}"
    );
}

#[tokio::test]
async fn http2_peers_are_told_the_stream_cap_and_dropped_when_they_stop_answering_pings() {
    let edge = edge_with(
        "max_http2_streams = 7\nhttp2_keep_alive_interval_ms = 200\nhttp2_keep_alive_timeout_ms = 200",
    )
    .await;
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(&[PREFACE, &EMPTY_SETTINGS].concat())
        .await
        .unwrap();
    let settings = server_settings(&mut s).await;
    assert_eq!(
        settings.get(&SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(&7),
        "{settings:?}"
    );
    // A request whose body never comes stays in flight, so neither the first-request
    // deadline nor the idle timeout applies: only the unanswered pings close it.
    s.write_all(&[&SETTINGS_ACK[..], &headers_frame(true)].concat())
        .await
        .unwrap();
    closed_soon(&mut s, "an HTTP/2 peer that answers no ping").await;
}

#[tokio::test]
async fn http2_peers_that_ignore_the_closing_ping_are_dropped() {
    // Keep-alive pings are far apart, so only the bound on a graceful close can end it.
    let edge = edge_with(
        "idle_timeout_ms = 200\nhttp2_keep_alive_interval_ms = 600000\nhttp2_keep_alive_timeout_ms = 300",
    )
    .await;
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    let hello = [
        PREFACE,
        &EMPTY_SETTINGS,
        &SETTINGS_ACK,
        &headers_frame(false),
    ]
    .concat();
    s.write_all(&hello).await.unwrap();
    // Idle after its request, the connection is asked to close (GOAWAY and a ping that
    // this peer never answers), then dropped.
    closed_soon(&mut s, "an HTTP/2 peer that ignores GOAWAY").await;
    let text = scrape(&edge).await;
    let closed = [("listener", "webhooks"), ("reason", "idle_timeout")];
    assert_eq!(
        metric(&text, "hookline_edge_connections_closed_total", &closed),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn on_shutdown_idle_connections_close_and_requests_in_flight_are_answered() {
    let edge = edge_with("").await;
    let mut idle = TcpStream::connect(edge.addr).await.unwrap();
    assert_eq!(healthz(&mut idle).await, Some(200));
    let mut busy = TcpStream::connect(edge.addr).await.unwrap();
    let head = "POST /webhooks/stripe HTTP/1.1\r\nhost: edge\r\ncontent-length: 100\r\n\r\n";
    busy.write_all(head.as_bytes()).await.unwrap();
    busy.write_all(&[b'a'; 50]).await.unwrap();
    eventually(SOON, "the request to be in flight", || async {
        let text = scrape(&edge).await;
        (metric(&text, "hookline_edge_buffered_body_bytes", &[]) >= 100.0).then_some(())
    })
    .await;

    let stopped = tokio::spawn(edge.stop());
    closed_soon(&mut idle, "an idle connection on shutdown").await;
    // Unsigned, so 401: answered rather than cut.
    busy.write_all(&[b'a'; 50]).await.unwrap();
    let reply = read_reply(&mut busy).await.expect("an answer");
    assert_eq!(reply.status, 401, "{}", reply.head);
    tokio::time::timeout(SOON, stopped)
        .await
        .expect("the edge to stop once its connections are done")
        .unwrap();
}

#[tokio::test]
async fn beyond_max_connections_new_connections_are_closed_and_open_ones_still_served() {
    let edge = edge_with("max_connections = 20").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        assert_eq!(healthz(&mut s).await, Some(200));
        held.push(s);
    }
    // The connection is accepted by the kernel and then closed by the edge, at once
    // (the first-request deadline, 10 s by default, is not what closes it).
    let mut refused = TcpStream::connect(edge.addr).await.unwrap();
    closed_soon(&mut refused, "the 21st connection").await;
    for s in &mut held {
        assert_eq!(healthz(s).await, Some(200), "a held connection is served");
    }
    let text = scrape(&edge).await;
    let webhooks = [("listener", "webhooks")];
    assert_eq!(
        metric(&text, "hookline_edge_connections_refused_total", &webhooks),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "hookline_edge_connections_open", &webhooks),
        20.0,
        "{text}"
    );

    // Slots come back as connections close.
    held.truncate(15);
    let addr = edge.addr;
    let mut again = eventually(SOON, "a new connection to be served", || async move {
        let mut s = TcpStream::connect(addr).await.ok()?;
        (healthz(&mut s).await == Some(200)).then_some(s)
    })
    .await;
    assert_eq!(healthz(&mut again).await, Some(200));
    eventually(SOON, "the open connections to be counted", || async {
        let text = scrape(&edge).await;
        (metric(&text, "hookline_edge_connections_open", &webhooks) == 16.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bodies_beyond_the_buffered_body_budget_get_the_retry_status() {
    // The budget is the smallest allowed: one body of max_body_bytes (64 KiB here).
    let stack = Stack::start_with_config("max_buffered_body_bytes = 65536").await;
    let buffering = || {
        let http = stack.http.clone();
        let url = stack.edge.metrics_url("/metrics");
        async move {
            let text = String::from_utf8_lossy(&http.get(&url).await.body).into_owned();
            (metric(&text, "hookline_edge_buffered_body_bytes", &[]) > 0.0).then_some(())
        }
    };

    // A body of 40000 declared bytes, half sent, holds its share while it is read.
    let mut held = TcpStream::connect(stack.edge.addr).await.unwrap();
    let head = "POST /webhooks/stripe HTTP/1.1\r\nhost: edge\r\ncontent-length: 40000\r\n\r\n";
    held.write_all(head.as_bytes()).await.unwrap();
    held.write_all(&[b'a'; 20_000]).await.unwrap();
    eventually(SOON, "the held body to be buffering", buffering).await;

    // A declared length beyond what is left is refused before a byte is read…
    let big = padded_checkout("evt_budget_big", 40_000);
    let reply = stack.post_stripe(&big).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.headers["retry-after"], "5");
    // …and a body without one when it grows past it.
    let mut chunked = TcpStream::connect(stack.edge.addr).await.unwrap();
    let head = "POST /webhooks/stripe HTTP/1.1\r\nhost: edge\r\ntransfer-encoding: chunked\r\n\r\n";
    chunked.write_all(head.as_bytes()).await.unwrap();
    let chunk = [format!("{:x}\r\n", 8192).as_bytes(), &[b'a'; 8192], b"\r\n"].concat();
    for _ in 0..4 {
        // The edge may answer before it has read everything.
        if chunked.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = chunked.write_all(b"0\r\n\r\n").await;
    let refused = read_reply(&mut chunked).await.expect("an answer");
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(
        refused.head.contains("\r\nretry-after: 5\r\n"),
        "{}",
        refused.head
    );

    // Once the held body is read and answered (unsigned: 401), its share is back.
    held.write_all(&[b'a'; 20_000]).await.unwrap();
    assert_eq!(read_reply(&mut held).await.expect("an answer").status, 401);
    let reply = stack.post_stripe(&big).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let text = String::from_utf8_lossy(
        &stack
            .http
            .get(&stack.edge.metrics_url("/metrics"))
            .await
            .body,
    )
    .into_owned();
    assert_eq!(
        metric(&text, "hookline_edge_body_budget_refusals_total", &[]),
        2.0,
        "{text}"
    );
    assert_eq!(metric(&text, "hookline_edge_buffered_body_bytes", &[]), 0.0);
}

#[tokio::test]
async fn a_body_holds_its_share_of_the_budget_until_it_is_answered() {
    // A contacts-svc that speaks HTTP/2 but answers no call keeps the handler of a fully
    // read body waiting, up to contacts_timeout_ms.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let contacts = format!("http://{}", silent.local_addr().unwrap());
    let _silent = tokio::spawn(async move {
        while let Ok((mut s, _)) = silent.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&[EMPTY_SETTINGS, SETTINGS_ACK].concat()).await;
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let edge = edge_calling(
        &contacts,
        "max_body_bytes = 65536\nmax_buffered_body_bytes = 65536\ncontacts_timeout_ms = 10000",
    )
    .await;
    let http = Http::new();
    let waiting = padded_checkout("evt_budget_waiting", 40_000);
    let _waiting = tokio::spawn({
        let (edge_url, http) = (edge.url("/webhooks/stripe"), http.clone());
        let sig = hookline_tests::stripe_sign(
            hookline_tests::STRIPE_SECRET,
            hookline_tests::now_secs(),
            &waiting,
        );
        async move {
            http.post(&edge_url, waiting, &[("stripe-signature", &sig)])
                .await
        }
    });
    eventually(SOON, "the waiting body's share to be reserved", || async {
        let text = scrape(&edge).await;
        (metric(&text, "hookline_edge_buffered_body_bytes", &[]) >= 40_000.0).then_some(())
    })
    .await;

    let reply = edge
        .post_stripe(&http, &padded_checkout("evt_budget_refused", 40_000))
        .await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    let text = scrape(&edge).await;
    assert_eq!(
        metric(&text, "hookline_edge_body_budget_refusals_total", &[]),
        1.0,
        "refused for the budget, not for the silent contacts-svc: {text}"
    );
}
