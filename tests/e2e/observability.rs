//! What operators see: Prometheus metrics that move with the traffic, and logs with one
//! line per webhook, correlated across both services, that never hold a secret, a
//! signature or a full email or phone number.

use std::process::Stdio;
use std::time::Duration;

use hookline_tests::{
    Edge, Http, Redis, Stack, TempDir, TempFile, eventually, free_port, metric, now_secs,
    stripe_checkout, stripe_sign, workspace_bin,
};

#[tokio::test]
async fn counters_move_with_applied_duplicate_and_rejected_events() {
    let stack = Stack::start().await;
    let body = stripe_checkout("evt_metrics", "metrics@example.com", 100, "pi_metrics");
    assert_eq!(stack.post_stripe(&body).await.json()["status"], "applied");
    assert_eq!(stack.post_stripe(&body).await.json()["status"], "duplicate");
    let forged = stripe_sign("whsec_wrong", now_secs(), &body);
    let reply = stack
        .http
        .post(
            &stack.edge.url("/webhooks/stripe"),
            body.clone(),
            &[("stripe-signature", &forged)],
        )
        .await;
    assert_eq!(reply.status, 401);
    let unknown = stack
        .http
        .post(&stack.edge.url("/webhooks/nope"), b"{}".to_vec(), &[])
        .await;
    assert_eq!(unknown.status, 404);

    let edge = stack.http.get(&stack.edge.metrics_url("/metrics")).await;
    assert_eq!(edge.status, 200);
    assert!(
        edge.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let edge = String::from_utf8(edge.body.to_vec()).unwrap();
    let m = |name, labels: &[(&str, &str)]| metric(&edge, name, labels);
    assert_eq!(
        m(
            "hookline_edge_webhook_requests_total",
            &[("source", "stripe"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        m(
            "hookline_edge_webhook_requests_total",
            &[("source", "stripe"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "hookline_edge_webhook_requests_total",
            &[("source", "unknown"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "hookline_edge_verification_failures_total",
            &[("source", "stripe"), ("reason", "mismatch")]
        ),
        1.0
    );
    let applied = [
        ("source", "stripe"),
        ("type", "checkout.session.completed"),
        ("outcome", "applied"),
    ];
    assert_eq!(m("hookline_edge_events_total", &applied), 1.0);
    assert_eq!(
        m(
            "hookline_edge_events_total",
            &[("source", "stripe"), ("outcome", "duplicate")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "hookline_edge_webhook_request_duration_seconds_count",
            &[("source", "stripe")]
        ),
        3.0
    );
    assert_eq!(
        m("hookline_edge_contacts_call_duration_seconds_count", &[]),
        2.0
    );

    let url = format!("http://{}/metrics", stack.contacts.metrics_addr);
    let svc = String::from_utf8(stack.http.get(&url).await.body.to_vec()).unwrap();
    let m = |name, labels: &[(&str, &str)]| metric(&svc, name, labels);
    assert_eq!(
        m(
            "hookline_contacts_events_total",
            &[("source", "stripe"), ("outcome", "applied")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "hookline_contacts_events_total",
            &[("source", "stripe"), ("outcome", "duplicate")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "hookline_contacts_dedup_hits_total",
            &[("source", "stripe")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "hookline_contacts_apply_duration_seconds_count",
            &[("outcome", "applied")]
        ),
        1.0
    );
    assert_eq!(m("hookline_contacts_redis_up", &[]), 1.0);
    assert_eq!(
        stack
            .http
            .get(&format!("http://{}/other", stack.contacts.metrics_addr))
            .await
            .status,
        404
    );
}

/// With `--metrics-listen`, metrics are served there and only there: the webhook port
/// no longer answers `/metrics`, and the metrics port answers nothing else.
#[tokio::test]
async fn a_separate_metrics_listener_serves_metrics_alone() {
    let unused = free_port();
    let edge = Edge::start_with_metrics_listener(&format!(
        "contacts_url = \"http://127.0.0.1:{unused}\"\n\
         [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_metrics_listener\"]\n"
    ))
    .await;
    let metrics = format!("http://{}", edge.metrics_addr.expect("a metrics listener"));
    let http = Http::new();
    let unknown = http
        .post(&edge.url("/webhooks/nope"), b"{}".to_vec(), &[])
        .await;
    assert_eq!(unknown.status, 404);

    let scraped = http.get(&format!("{metrics}/metrics")).await;
    assert_eq!(scraped.status, 200);
    let text = String::from_utf8_lossy(&scraped.body);
    assert_eq!(
        metric(
            &text,
            "hookline_edge_webhook_requests_total",
            &[("source", "unknown"), ("status", "404")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(http.get(&edge.url("/metrics")).await.status, 404);
    assert_eq!(http.get(&edge.url("/healthz")).await.status, 200);
    assert_eq!(http.get(&format!("{metrics}/healthz")).await.status, 404);
    let post = http
        .post(&format!("{metrics}/webhooks/stripe"), b"{}".to_vec(), &[])
        .await;
    assert_eq!(post.status, 404);
}

/// The webhook port faces the internet: it serves `GET /metrics` only when the file asks
/// for it, and it is refused beside a metrics listener of its own.
#[tokio::test]
async fn the_webhook_port_serves_metrics_only_when_asked() {
    let unused = free_port();
    let config = |extra: &str| {
        format!(
            "contacts_url = \"http://127.0.0.1:{unused}\"\n{extra}\n\
             [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_metrics_port\"]\n"
        )
    };
    let http = Http::new();
    for (name, extra, want) in [
        ("by default", "", 404),
        ("asked for", "metrics_on_webhook_port = true", 200),
        ("refused explicitly", "metrics_on_webhook_port = false", 404),
    ] {
        let edge = Edge::start(&config(extra)).await;
        let reply = http.get(&edge.url("/metrics")).await;
        assert_eq!(reply.status, want, "{name}: {:?}", reply.body);
        if want == 200 {
            assert!(
                reply.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/openmetrics-text"),
                "{name}"
            );
            let text = String::from_utf8_lossy(&reply.body);
            assert!(text.contains("hookline_edge_"), "{name}: {text}");
        }
        // Webhooks and probes are there either way.
        assert_eq!(http.get(&edge.url("/healthz")).await.status, 200, "{name}");
    }
}

#[tokio::test]
async fn logs_correlate_both_services_and_never_hold_secrets_or_personal_data() {
    const SECRET: &str = "whsec_log_capture_secret_value_0123456789";
    const EMAIL: &str = "secret.person@example.com";
    const TOKEN: &str = "workflow-token-that-must-not-be-logged";
    let redis = Redis::start().await;
    let (grpc, http_port) = (free_port(), free_port());
    let spool = TempDir::new("hookline-spool");
    let config = TempFile::new(
        "hookline-logs",
        &format!(
            "listen = \"127.0.0.1:{http_port}\"\ncontacts_url = \"http://127.0.0.1:{grpc}\"\n\
             [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:HOOKLINE_TEST_SECRET\"]\n\
             [sources.ghl-workflow]\nkind = \"gohighlevel-workflow\"\ntoken = \"{TOKEN}\"\n"
        ),
    );
    // Everything at debug level, so that libraries' logs are checked too.
    let contacts = tokio::process::Command::new(workspace_bin("contacts-svc"))
        .args([
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--redis-url",
            &redis.url(),
            "--insecure-no-auth",
        ])
        .args(["--log", "debug", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let edge = tokio::process::Command::new(workspace_bin("edge"))
        .args([
            "--config",
            &config.arg(),
            "--spool-dir",
            &spool.arg(),
            "--log",
            "debug",
            "--log-format",
            "json",
        ])
        .env("HOOKLINE_TEST_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = Http::new();
    let base = format!("http://127.0.0.1:{http_port}");
    eventually(Duration::from_secs(20), "the edge to be ready", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", http_port))
            .await
            .ok()?;
        (http.get(&format!("{base}/readyz")).await.status == 200).then_some(())
    })
    .await;

    let body = stripe_checkout("evt_logged", EMAIL, 4200, "pi_logged");
    let signature = stripe_sign(SECRET, now_secs(), &body);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = http
        .post(
            &format!("{base}/webhooks/stripe"),
            body.clone(),
            &[
                ("stripe-signature", &signature),
                ("x-request-id", "req-log-test"),
                ("traceparent", traceparent),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.headers["x-request-id"], "req-log-test");
    let forged = stripe_sign("whsec_forged_secret_value", now_secs(), &body);
    assert_eq!(
        http.post(
            &format!("{base}/webhooks/stripe"),
            body.clone(),
            &[("stripe-signature", &forged)]
        )
        .await
        .status,
        401
    );
    let workflow =
        serde_json::json!({"contact_id": "logc1", "email": EMAIL, "phone": "+1 415 555 0142"})
            .to_string();
    assert_eq!(
        http.post(
            &format!("{base}/webhooks/ghl-workflow?token={TOKEN}"),
            workflow.into_bytes(),
            &[]
        )
        .await
        .status,
        200
    );
    // A shared phone with another email: the conflict is logged, masked.
    let conflict = stripe_checkout("evt_conflict", "other.person@example.com", 1, "pi_conflict");
    let conflict = String::from_utf8(conflict)
        .unwrap()
        .replace("+14155550100", "+14155550142");
    assert_eq!(
        http.post(
            &format!("{base}/webhooks/stripe"),
            conflict.clone().into_bytes(),
            &[(
                "stripe-signature",
                &stripe_sign(SECRET, now_secs(), conflict.as_bytes())
            )],
        )
        .await
        .status,
        200
    );
    // An index entry nobody can read (outside interference): the event fails, and the
    // error line names the key with its email masked.
    let mut conn = redis.conn().await;
    let () = redis::cmd("SET")
        .arg("hl:idx:email:corrupt.person@example.com")
        .arg("not a contact id")
        .query_async(&mut conn)
        .await
        .unwrap();
    let corrupt = stripe_checkout("evt_corrupt", "corrupt.person@example.com", 1, "pi_corrupt");
    let reply = http
        .post(
            &format!("{base}/webhooks/stripe"),
            corrupt.clone(),
            &[(
                "stripe-signature",
                &stripe_sign(SECRET, now_secs(), &corrupt),
            )],
        )
        .await;
    assert_eq!(
        reply.status, 202,
        "spooled until the index is repaired: {:?}",
        reply.body
    );

    let mut logs = String::new();
    for child in [edge, contacts] {
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
            .await
            .expect("stopped")
            .unwrap();
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }

    for forbidden in [
        SECRET,
        "log_capture_secret",
        "whsec_forged",
        TOKEN,
        EMAIL,
        "other.person@example.com",
        "corrupt.person@example.com",
        "4155550100",
        "4155550142",
        &signature,
        &forged,
    ] {
        assert!(!logs.contains(forbidden), "the logs hold {forbidden:?}");
    }
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("hl:idx:email:c***@example.com"))),
        "the corrupt entry is logged, masked"
    );
    let webhook = lines
        .iter()
        .find(|l| l["message"] == "webhook" && l["event_id"] == "evt_logged")
        .expect("one line for the webhook");
    for field in [
        "source",
        "outcome",
        "status",
        "latency_us",
        "request_id",
        "trace_id",
    ] {
        assert!(!webhook[field].is_null(), "{field} missing from {webhook}");
    }
    assert_eq!(webhook["outcome"], "applied");
    assert_eq!(webhook["request_id"], "req-log-test");
    assert_eq!(webhook["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let event = lines
        .iter()
        .find(|l| l["message"] == "event" && l["event_id"] == "stripe:evt_logged")
        .expect("contacts-svc logged the event");
    assert_eq!(
        event["request_id"], "req-log-test",
        "the request id crossed to contacts-svc"
    );
    assert_eq!(
        event["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "so did the trace"
    );
    let rejected = lines
        .iter()
        .find(|l| l["message"] == "webhook" && l["status"] == 401)
        .expect("the forged request is logged");
    assert_eq!(rejected["outcome"], "rejected");
    let masked = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("identity conflict"))
        })
        .expect("the conflict is logged");
    assert_eq!(masked["identifier"], "phone:+1******0142");
}
