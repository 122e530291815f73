//! A sender hookline has no code for, added by editing the configuration file alone, and
//! `edge --check-config`, which checks such a file before it is deployed.

use std::process::Stdio;
use std::time::Duration;

use hookline_proto::v1;
use hookline_tests::{
    ContactsSvc, Http, Redis, TempDir, TempFile, eventually, free_port, now_secs, sign_as,
    workspace_bin,
};
use serde_json::json;

const SECRET: &str = "acme-crm-signing-secret";

/// An imagined CRM: HMAC-SHA512 in base64 over `{timestamp}.{body}`, its event id and
/// type in the payload, deals won as purchases and tags added one at a time.
fn acme_crm(listen: u16, contacts_url: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:{listen}"
contacts_url = "{contacts_url}"

[sources.acme-crm]
kind = "hmac"
secrets = ["env:ACME_CRM_SECRET"]
header = "X-Acme-Signature"
algorithm = "sha512"
encoding = "base64"
signed_content = "{{timestamp}}.{{body}}"
timestamp_header = "X-Acme-Timestamp"
id_pointer = "/id"

[sources.acme-crm.map]
email = "/contact/email"
first_name = "/contact/first_name"
external_id = "/contact/id"
event_type = "/event"
occurred_at = "/at"

[[sources.acme-crm.actions]]
types = ["deal.won"]
do = "purchase"
purchase_id = "/deal/id"
amount = "/deal/value"
amount_unit = "major"
currency = "/deal/currency"

[[sources.acme-crm.actions]]
types = ["contact.tagged"]
do = "add_tags"
tags = "/tag"

[[sources.acme-crm.actions]]
types = ["contact.*"]
do = "contact"
"#
    )
}

async fn edge_output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let child = tokio::process::Command::new(workspace_bin("edge"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run edge");
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("edge --check-config exits")
        .expect("edge output")
}

#[tokio::test]
async fn a_new_sender_by_its_configuration_file_alone() {
    let redis = Redis::start().await;
    let contacts = ContactsSvc::start(&redis.url()).await;
    let port = free_port();
    let spool = TempDir::new("hookline-spool");
    let config = TempFile::new("hookline-acme-crm", &acme_crm(port, &contacts.url()));
    let env = [("ACME_CRM_SECRET", SECRET)];

    let checked = edge_output(&["--check-config", "--config", &config.arg()], &env).await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{checked:?}");
    assert!(
        stdout.contains("acme-crm: kind hmac, POST /webhooks/acme-crm"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET), "{stdout}");

    let mut edge = tokio::process::Command::new(workspace_bin("edge"))
        .args(["--config", &config.arg()])
        .args(["--spool-dir", &spool.arg()])
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start edge");
    let http = Http::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    eventually(Duration::from_secs(20), "the edge to be ready", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        (http.get(&ready).await.status == 200).then_some(())
    })
    .await;

    let url = format!("http://127.0.0.1:{port}/webhooks/acme-crm");
    let send = |body: serde_json::Value| {
        let (http, url) = (&http, &url);
        async move {
            let body = body.to_string().into_bytes();
            let ts = now_secs().to_string();
            let signed = [ts.as_bytes(), b".", &body].concat();
            let sig = sign_as(&["hmac", "sha512", "base64", SECRET], &signed).await;
            http.post(
                url,
                body,
                &[("x-acme-signature", &sig), ("x-acme-timestamp", &ts)],
            )
            .await
        }
    };
    let contact = json!({"id": 7, "email": "lin@example.com", "first_name": "Lin"});
    for (body, want) in [
        (
            json!({"id": "ev_1", "event": "contact.created", "at": 1_796_119_200, "contact": contact}),
            "applied",
        ),
        (
            json!({"id": "ev_2", "event": "deal.won", "at": 1_796_205_600, "contact": contact,
                   "deal": {"id": "deal_9", "value": "1250.00", "currency": "EUR"}}),
            "applied",
        ),
        (
            json!({"id": "ev_3", "event": "contact.tagged", "at": 1_796_205_601, "contact": {"id": 7},
                   "tag": "customer"}),
            "applied",
        ),
        (
            json!({"id": "ev_2", "event": "deal.won", "at": 1_796_205_600, "contact": contact,
                   "deal": {"id": "deal_9", "value": "1250.00", "currency": "EUR"}}),
            "duplicate",
        ),
    ] {
        let reply = send(body).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.json()["status"], want, "{:?}", reply.body);
    }

    let found = contacts
        .lookup_email("lin@example.com")
        .await
        .expect("the contact, over gRPC");
    assert_eq!(found.first_name, "Lin");
    assert_eq!(
        found.external_ids,
        vec![v1::ExternalId {
            system: "acme-crm".into(),
            id: "7".into()
        }]
    );
    assert_eq!(found.stage(), v1::Stage::Purchased);
    assert_eq!(
        (
            found.purchases[0].purchase_id.as_str(),
            found.purchases[0].amount,
            found.purchases[0].currency.as_str()
        ),
        ("deal_9", 125_000, "eur")
    );
    assert_eq!(found.tags, ["customer"]);

    let _ = edge.start_kill();
    let _ = edge.wait().await;
}

#[tokio::test]
async fn check_config_lists_every_problem_and_never_a_secret() {
    let file = TempFile::new(
        "hookline-problems",
        r#"
max_connections = 0
listen = "nowhere"

[sources.pigeon]
kind = "carrier-pigeon"

[sources.acme]
kind = "standard-webhooks"
secrets = ["whsec_%%s3cr3t-one%%", "env:ACME_SECRET"]
[sources.acme.map]
email = "data/email"
emial = "/data/email"

[sources.hooks]
kind = "hmac"
preset = "gitlab"
secrets = ["s3cr3t-two"]
secret = "s3cr3t-three"

[sources.stripe]
kind = "stripe"
secrets = "whsec_s3cr3t-four"
"#,
    );
    let want = [
        "edge: listen: \"nowhere\" is not host:port",
        "edge: max_connections: must be between 1 and 1000000",
        "edge: sources.acme.secrets[0]: is not a Standard Webhooks secret: whsec_ followed by \
         the base64 of the key bytes",
        "edge: sources.acme.secrets[1]: environment variable ACME_SECRET is not set",
        "edge: sources.acme.map.emial: unknown key (known: email, ",
        "edge: sources.acme.map.email: \"data/email\" is not a JSON Pointer to a field",
        "edge: sources.hooks.secret: unknown key (known: preset, secrets, header, ",
        "edge: sources.hooks.preset: unknown preset \"gitlab\" (known: github, shopify, slack)",
        "edge: sources.pigeon.kind: unknown kind \"carrier-pigeon\" (known: stripe, \
         gohighlevel, gohighlevel-workflow, standard-webhooks, hmac)",
        "edge: sources.stripe.secrets: must be a list of secrets, e.g. [\"env:NAME\"], not a \
         single string",
    ];
    let checked = edge_output(&["--check-config", "--config", &file.arg()], &[]).await;
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success(), "{stderr}");
    for line in want {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr
            .trim_end()
            .ends_with(&format!("{}: 10 problems", file.arg())),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cr3t"),
        "a secret was printed:\n{stderr}"
    );
    assert!(checked.stdout.is_empty());

    // The edge refuses to start on the same problems, each on a line of its own.
    let started = edge_output(&["--config", &file.arg()], &[]).await;
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert!(!started.status.success(), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 10, "{stderr}");
    assert!(
        !stderr.contains("s3cr3t"),
        "a secret was printed:\n{stderr}"
    );
}
