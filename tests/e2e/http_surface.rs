//! The edge's HTTP surface: routes, methods, limits and probes.

use hookline_tests::{Stack, stripe_checkout};

#[tokio::test]
async fn routes_answer_with_the_documented_statuses() {
    let stack = Stack::start().await;
    let http = &stack.http;
    assert_eq!(http.get(&stack.edge.url("/healthz")).await.status, 200);
    assert_eq!(http.get(&stack.edge.url("/readyz")).await.status, 200);
    let unknown = http
        .post(&stack.edge.url("/webhooks/nope"), b"{}".to_vec(), &[])
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(http.get(&stack.edge.url("/nowhere")).await.status, 404);
    let get = http.get(&stack.edge.url("/webhooks/stripe")).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST");
    assert_eq!(stack.redis.dbsize().await, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let stack = Stack::start().await;
    // The test stack's limit is 64 KiB.
    let mut big = stripe_checkout("evt_big", "big@example.com", 1, "pi_big");
    big.truncate(big.len() - 1);
    big.extend(format!(",\"padding\":\"{}\"}}", "x".repeat(70 * 1024)).into_bytes());
    let reply = stack.post_stripe(&big).await;
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(stack.redis.dbsize().await, 0);

    // Without a Content-Length the limit is enforced while reading.
    let (status, _) = raw_chunked_post(&stack, 70 * 1024).await;
    assert_eq!(status, 413);
    // Just under the limit is fine (and, unsigned here, refused as unauthenticated).
    let (status, _) = raw_chunked_post(&stack, 1024).await;
    assert_eq!(status, 401);
}

/// POSTs `len` bytes with chunked transfer encoding over a raw socket.
async fn raw_chunked_post(stack: &Stack, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(stack.edge.addr)
        .await
        .unwrap();
    let head = "POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 8192];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        let frame = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
        // The edge may answer and close before the whole body is sent.
        if s.write_all(&frame).await.is_err() {
            break;
        }
        sent += n;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}
