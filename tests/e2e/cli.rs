//! The binaries as operators run them: flags, configuration errors, graceful stop.

use std::process::Command;
use std::time::Duration;

use hookline_tests::{Redis, TempDir, TempFile, eventually, free_port, workspace_bin};

/// Runs a binary to completion; returns its exit code and stderr. A binary that accepts
/// what it should refuse would serve forever: it is killed at the deadline and the test
/// fails saying so.
async fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let child = tokio::process::Command::new(workspace_bin(bin))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run binary");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("{bin} {args:?} did not exit: it accepted what it should refuse")
        })
        .expect("binary output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_flags_and_configs_fail_with_one_clear_line() {
    let missing = TempFile::new(
        "hookline-edge",
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:STRIPE_WEBHOOK_SECRET\"]\n",
    );
    let unknown_kind = TempFile::new(
        "hookline-edge",
        "[sources.acme]\nkind = \"carrier-pigeon\"\n",
    );
    let bad_secret = TempFile::new(
        "hookline-edge",
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"sk_live_oops\"]\n",
    );
    let unknown_key = TempFile::new(
        "hookline-edge",
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\nsecret = \"typo\"\n",
    );
    // contacts-svc records its own events under the source `api`.
    let reserved = TempFile::new(
        "hookline-edge",
        "[sources.api]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n",
    );
    // One GHL key signs every app's webhooks: a source must say whose it takes.
    let no_app = TempFile::new(
        "hookline-edge",
        "[sources.ghl]\nkind = \"gohighlevel\"\nlocation_ids = [\"loc\"]\n",
    );
    // Metrics on the public webhook port, and on a listener of their own: which one?
    let metrics_port = free_port();
    let metrics_twice = TempFile::new(
        "hookline-edge",
        &format!(
            "metrics_on_webhook_port = true\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n"
        ),
    );
    let metrics_on_port = TempFile::new(
        "hookline-edge",
        "metrics_on_webhook_port = true\n[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n",
    );
    let bad_tokens = TempFile::new(
        "hookline-tokens",
        "[[tokens]]\nname = \"edge\"\nsha256 = \"sk_live_oops\"\nscopes = [\"events:write\"]\nsources = [\"stripe\"]\n",
    );
    let no_connections = TempFile::new(
        "hookline-edge",
        "max_connections = 0\n[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n",
    );
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("edge", vec![], "--config"),
        (
            "edge",
            vec!["--config".into(), "/nonexistent/edge.toml".into()],
            "--config: cannot read",
        ),
        (
            "edge",
            vec!["--config".into(), missing.arg()],
            "sources.stripe.secrets[0]: environment variable STRIPE_WEBHOOK_SECRET is not set",
        ),
        (
            "edge",
            vec!["--config".into(), unknown_kind.arg()],
            "sources.acme.kind: unknown kind \"carrier-pigeon\"",
        ),
        (
            "edge",
            vec!["--config".into(), bad_secret.arg()],
            "sources.stripe.secrets[0]: is not a Stripe endpoint secret",
        ),
        (
            "edge",
            vec!["--config".into(), unknown_key.arg()],
            "sources.stripe.secret: unknown key (known: secrets, tolerance_secs)",
        ),
        (
            "edge",
            vec!["--config".into(), reserved.arg()],
            "sources.api: is reserved",
        ),
        (
            "edge",
            vec!["--config".into(), no_app.arg()],
            "sources.ghl.app_id: is required",
        ),
        (
            "edge",
            vec!["--config".into(), metrics_twice.arg()],
            "metrics_on_webhook_port: cannot be set together with metrics_listen",
        ),
        (
            "edge",
            vec![
                "--config".into(),
                metrics_on_port.arg(),
                "--metrics-listen".into(),
                format!("127.0.0.1:{metrics_port}"),
            ],
            "metrics_on_webhook_port: cannot be set together with --metrics-listen",
        ),
        (
            "edge",
            vec!["--config".into(), no_connections.arg()],
            "max_connections: must be between 1 and 1000000",
        ),
        (
            "edge",
            vec![
                "--config".into(),
                missing.arg(),
                "--listen".into(),
                "nowhere".into(),
            ],
            "--listen",
        ),
        (
            "contacts-svc",
            vec!["--default-region".into(), "XX".into()],
            "default-region",
        ),
        (
            "contacts-svc",
            vec!["--listen".into(), "nowhere".into()],
            "--listen",
        ),
        (
            "contacts-svc",
            vec!["--redis-url".into(), "mysql://x".into()],
            "--redis-url",
        ),
        ("contacts-svc", vec!["--bogus".into()], "--bogus"),
        // Without tokens, only an explicit --insecure-no-auth serves.
        (
            "contacts-svc",
            vec!["--listen".into(), format!("127.0.0.1:{metrics_port}")],
            "no --auth-tokens-file: give one, or serve every caller without a token with --insecure-no-auth",
        ),
        (
            "contacts-svc",
            vec!["--auth-tokens-file".into(), bad_tokens.arg()],
            "tokens[0].sha256: must be the 64 hex digits",
        ),
        // TLS files that cannot be read: the flag and the file named.
        (
            "contacts-svc",
            vec![
                "--insecure-no-auth".into(),
                "--tls-cert".into(),
                "nowhere.pem".into(),
                "--tls-key".into(),
                "nowhere.key".into(),
            ],
            "--tls-cert: nowhere.pem",
        ),
        (
            "contacts-svc",
            vec![
                "--insecure-no-auth".into(),
                "--redis-tls-ca".into(),
                "nowhere-ca.pem".into(),
            ],
            "--redis-tls-ca nowhere-ca.pem",
        ),
    ];
    for (bin, args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run(bin, &args, &[]).await;
        assert_ne!(code, 0, "{bin} {args:?} should fail");
        assert!(
            stderr.contains(needle),
            "{bin} {args:?}: {stderr:?} should contain {needle:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        // clap's usage errors come with a usage hint; every other error is one line.
        if !stderr.starts_with("error:") {
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "{bin} {args:?}: {stderr}"
            );
        }
        assert!(
            !stderr.contains("sk_live_oops"),
            "a secret reached stderr: {stderr}"
        );
    }
}

#[tokio::test]
async fn both_services_stop_gracefully_on_sigterm() {
    let redis = Redis::start().await;
    let grpc_port = free_port();
    let http_port = free_port();
    let spool = TempDir::new("hookline-spool");
    let config = TempFile::new(
        "hookline-edge",
        &format!(
            "listen = \"127.0.0.1:{http_port}\"\ncontacts_url = \"http://127.0.0.1:{grpc_port}\"\n[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n"
        ),
    );
    let mut contacts = tokio::process::Command::new(workspace_bin("contacts-svc"))
        .args([
            "--listen",
            &format!("127.0.0.1:{grpc_port}"),
            "--redis-url",
            &redis.url(),
            "--insecure-no-auth",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut edge = tokio::process::Command::new(workspace_bin("edge"))
        .args(["--config", &config.arg()])
        .args(["--spool-dir", &spool.arg()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = hookline_tests::Http::new();
    let ready = format!("http://127.0.0.1:{http_port}/readyz");
    eventually(
        Duration::from_secs(20),
        "the edge binary to be ready",
        || async {
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await;
            if connect.is_err() {
                return None;
            }
            (http.get(&ready).await.status == 200).then_some(())
        },
    )
    .await;
    for child in [&mut edge, &mut contacts] {
        let pid = child.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("stopped within the grace period")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}
