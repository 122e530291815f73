use super::*;

/// A Stripe source, the smallest valid one, under `name`.
fn stripe_source(name: &str) -> String {
    format!("[sources.{name}]\nkind = \"stripe\"\nsecrets = [\"whsec_config_tests\"]\n")
}

fn parse(text: &str, args: &Args) -> Result<Config, String> {
    Config::parse(text, Path::new("."), args, &|_| None).map_err(|e| e.to_string())
}

#[test]
fn source_names() {
    /// `want`: `Ok(())` when the name is accepted, else the whole error line.
    fn check(name: &str, want: Result<(), &str>) {
        let got = parse(&stripe_source(name), &Args::for_file("edge.toml"));
        assert_eq!(
            got.as_ref().map(|_| ()).map_err(String::as_str),
            want,
            "{name:?}"
        );
    }
    let cases = [
        ("stripe", Ok(())),
        ("acme-2_b", Ok(())),
        ("apis", Ok(())),
        (
            "api",
            Err(
                "sources.api: is reserved: contacts-svc records its own events under the \
                 source \"api\", so this source's event ids could collide with them (choose \
                 another name)",
            ),
        ),
        (
            "Stripe",
            Err(
                "sources.Stripe: source names are 1 to 64 of a-z, 0-9, '-' and '_' (they appear in URLs)",
            ),
        ),
        (
            "\"a.b\"",
            Err(
                "sources.a.b: source names are 1 to 64 of a-z, 0-9, '-' and '_' (they appear in URLs)",
            ),
        ),
    ];
    for (name, want) in cases {
        check(name, want);
    }
    // Every reserved name is refused, not only the one spelled above.
    for name in hookline_proto::RESERVED_SOURCES {
        let err = parse(&stripe_source(name), &Args::for_file("edge.toml")).expect_err(name);
        assert!(
            err.starts_with(&format!("sources.{name}: is reserved")),
            "{err}"
        );
    }
}

/// `make run` starts the edge with `dev/edge.toml`: it must load, and take the signed
/// GoHighLevel test vector the README tells developers to send.
#[test]
fn the_development_config_loads_and_takes_the_test_vector() {
    use hookline_proto::v1::webhook_event::Payload;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/edge.toml");
    let config = Config::load(&Args::for_file(path)).unwrap_or_else(|e| panic!("{e}"));
    let ghl = config
        .sources
        .get("gohighlevel")
        .expect("a gohighlevel source");
    let body = include_bytes!(
        "../../../tests/fixtures/gohighlevel/test-vectors/AppointmentUpdate-showed.body.json"
    );
    let signature = include_str!(
        "../../../tests/fixtures/gohighlevel/test-vectors/AppointmentUpdate-showed.x-ghl-signature.txt"
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-ghl-signature",
        http::HeaderValue::from_str(signature.trim()).expect("header value"),
    );
    let delivery = crate::sources::Delivery {
        headers: &headers,
        query: "",
        body,
    };
    assert_eq!(ghl.verify(delivery, 0), Ok(()));
    let event = ghl.normalize("gohighlevel", crate::sources::Delivery::body_only(body), 0);
    assert!(
        matches!(event.payload, Some(Payload::AppointmentUpdated(_))),
        "{:?}",
        event.payload
    );

    // The Standard Webhooks sample, signed with the development secret, maps to its
    // contact.
    let acme = config.sources.get("acme").expect("an acme source");
    let sample = include_bytes!("../../../dev/sample-acme.json");
    let now = 1_796_400_000;
    let signature = crate::sources::standard_webhooks::sign_v1(
        "whsec_aG9va2xpbmUtZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=",
        "msg_hookline_sample_0001",
        now,
        sample,
    )
    .expect("sign");
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("webhook-id", "msg_hookline_sample_0001".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signature),
    ] {
        headers.insert(k, http::HeaderValue::from_str(&v).expect("header value"));
    }
    let delivery = crate::sources::Delivery {
        headers: &headers,
        query: "",
        body: sample,
    };
    assert_eq!(acme.verify(delivery, now), Ok(()));
    let event = acme.normalize("acme", delivery, 0);
    assert_eq!(event.id, "acme:msg_hookline_sample_0001");
    assert_eq!(
        event.contact.and_then(|c| c.email).as_deref(),
        Some("Grace.Hopper@Example.com")
    );
}

/// Where metrics are served: (metrics_listen, metrics_on_webhook_port), or the error line.
type Metrics<'a> = Result<(Option<&'a str>, bool), &'a str>;

#[test]
fn where_metrics_are_served() {
    /// `flag`: `--metrics-listen`.
    fn check(file: &str, flag: Option<&str>, want: Metrics<'_>) {
        let mut args = Args::for_file("edge.toml");
        args.metrics_listen = flag.map(|a| a.parse().expect("address"));
        let got = parse(&format!("{file}\n{}", stripe_source("stripe")), &args).map(|c| {
            (
                c.metrics_listen.map(|a| a.to_string()),
                c.metrics_on_webhook_port,
            )
        });
        let want = want
            .map(|(listen, on_port)| (listen.map(str::to_owned), on_port))
            .map_err(str::to_owned);
        assert_eq!(got, want, "{file:?} {flag:?}");
    }
    let cases: [(&str, Option<&str>, Metrics<'_>); 9] = [
        // The webhook port faces the internet: by default metrics are served nowhere.
        ("", None, Ok((None, false))),
        (
            "metrics_listen = \"127.0.0.1:9100\"",
            None,
            Ok((Some("127.0.0.1:9100"), false)),
        ),
        (
            "",
            Some("127.0.0.1:9101"),
            Ok((Some("127.0.0.1:9101"), false)),
        ),
        (
            "metrics_listen = \"127.0.0.1:9100\"",
            Some("127.0.0.1:9101"),
            Ok((Some("127.0.0.1:9101"), false)),
        ),
        ("metrics_on_webhook_port = true", None, Ok((None, true))),
        (
            "metrics_on_webhook_port = false\nmetrics_listen = \"127.0.0.1:9100\"",
            None,
            Ok((Some("127.0.0.1:9100"), false)),
        ),
        (
            "metrics_on_webhook_port = true\nmetrics_listen = \"127.0.0.1:9100\"",
            None,
            Err(
                "metrics_on_webhook_port: cannot be set together with metrics_listen \
                 (127.0.0.1:9100): metrics are served on one of them",
            ),
        ),
        (
            "metrics_on_webhook_port = true",
            Some("127.0.0.1:9101"),
            Err(
                "metrics_on_webhook_port: cannot be set together with --metrics-listen \
                 (127.0.0.1:9101): metrics are served on one of them",
            ),
        ),
        (
            "metrics_listen = \"nowhere\"",
            None,
            Err("metrics_listen: \"nowhere\" is not host:port"),
        ),
    ];
    for (file, flag, want) in cases {
        check(file, flag, want);
    }
}

const SOURCE: &str = "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_test\"]\n";

/// The limits `top` (top-level keys) configures, or the one-line error.
fn limits(top: &str) -> Result<Limits, String> {
    let text = format!("{top}\n{SOURCE}");
    Config::parse(&text, Path::new("."), &Args::for_file("edge.toml"), &|_| {
        None
    })
    .map(|c| c.limits)
    .map_err(|e| e.to_string())
}

#[test]
fn connection_limits() {
    let d = Limits::default();
    let ms = Duration::from_millis;
    let cases: Vec<(&str, Result<Limits, &str>)> = vec![
        ("", Ok(d)),
        (
            "first_request_timeout_ms = 500\nidle_timeout_ms = 250",
            Ok(Limits {
                first_request_timeout: ms(500),
                idle_timeout: ms(250),
                ..d
            }),
        ),
        (
            "http2_keep_alive_interval_ms = 10\nhttp2_keep_alive_timeout_ms = 3600000",
            Ok(Limits {
                http2_keep_alive_interval: ms(10),
                http2_keep_alive_timeout: ms(3_600_000),
                ..d
            }),
        ),
        (
            "max_connections = 1\nmax_http2_streams = 10000",
            Ok(Limits {
                max_connections: 1,
                max_http2_streams: 10_000,
                ..d
            }),
        ),
        (
            "max_body_bytes = 2048\nmax_buffered_body_bytes = 2048",
            Ok(Limits {
                max_buffered_body_bytes: 2048,
                ..d
            }),
        ),
        (
            "first_request_timeout_ms = 9",
            Err("first_request_timeout_ms: must be between 10 and 600000"),
        ),
        (
            "first_request_timeout_ms = 600001",
            Err("first_request_timeout_ms: must be between 10 and 600000"),
        ),
        (
            "idle_timeout_ms = 0",
            Err("idle_timeout_ms: must be between 10 and 3600000"),
        ),
        (
            "http2_keep_alive_interval_ms = 3600001",
            Err("http2_keep_alive_interval_ms: must be between 10 and 3600000"),
        ),
        (
            "http2_keep_alive_timeout_ms = 5",
            Err("http2_keep_alive_timeout_ms: must be between 10 and 3600000"),
        ),
        (
            "max_connections = 0",
            Err("max_connections: must be between 1 and 1000000"),
        ),
        (
            "max_connections = 1000001",
            Err("max_connections: must be between 1 and 1000000"),
        ),
        (
            "max_http2_streams = 0",
            Err("max_http2_streams: must be between 1 and 10000"),
        ),
        (
            "max_buffered_body_bytes = 1048575",
            Err(
                "max_buffered_body_bytes: must be at least max_body_bytes (1048576) and at most 68719476736",
            ),
        ),
        (
            "max_buffered_body_bytes = 68719476737",
            Err(
                "max_buffered_body_bytes: must be at least max_body_bytes (1048576) and at most 68719476736",
            ),
        ),
    ];
    for (top, expected) in cases {
        assert_eq!(limits(top), expected.map_err(str::to_owned), "{top}");
    }
    // A negative number or a string is a type error naming the key.
    for top in ["max_connections = -1", "idle_timeout_ms = \"60s\""] {
        let err = limits(top).unwrap_err();
        let key = top.split(' ').next().unwrap();
        assert!(err.contains(key), "{top}: {err}");
    }
}

/// The contacts-svc URLs and how often their names are looked up again, or the one-line
/// error.
#[test]
fn contacts_addresses_and_their_refresh() {
    let check = |top: &str, want: Result<(&[&str], u64), &str>| {
        let got = Config::parse(
            &format!("{top}\n{SOURCE}"),
            Path::new("."),
            &Args::for_file("edge.toml"),
            &|_| None,
        )
        .map(|c| {
            let urls: Vec<String> = c.contacts_urls.iter().map(ToString::to_string).collect();
            (urls, c.contacts_dns_refresh.as_secs())
        })
        .map_err(|e| e.to_string());
        let want = want
            .map(|(urls, secs)| (urls.iter().map(|u| (*u).to_owned()).collect(), secs))
            .map_err(str::to_owned);
        assert_eq!(got, want, "{top}");
    };
    check("", Ok((&["http://127.0.0.1:50051/"], 30)));
    check(
        "contacts_url = \"http://contacts-svc:50051, http://10.0.0.2:50051\"\n\
         contacts_dns_refresh_secs = 1",
        Ok((&["http://contacts-svc:50051/", "http://10.0.0.2:50051/"], 1)),
    );
    check(
        "contacts_dns_refresh_secs = 86400",
        Ok((&["http://127.0.0.1:50051/"], 86_400)),
    );
    for bad in ["0", "86401"] {
        check(
            &format!("contacts_dns_refresh_secs = {bad}"),
            Err("contacts_dns_refresh_secs: must be between 1 and 86400"),
        );
    }
    // A negative number or a string is a type error naming the key.
    for top in [
        "contacts_dns_refresh_secs = -1",
        "contacts_dns_refresh_secs = \"30s\"",
    ] {
        let err = Config::parse(top, Path::new("."), &Args::for_file("edge.toml"), &|_| None)
            .expect_err("a type error")
            .to_string();
        assert!(err.contains("contacts_dns_refresh_secs"), "{top}: {err}");
    }
}

/// The token the edge shows contacts-svc: a secret like any other, and one that can
/// travel in a header.
#[test]
fn the_contacts_token() {
    let source = "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n";
    let env = |name: &str| (name == "CONTACTS_TOKEN").then(|| "from-env-123".to_owned());
    let parse = |top: &str| {
        Config::parse(
            &format!("{top}\n{source}"),
            Path::new("."),
            &Args::for_file("edge.toml"),
            &env,
        )
        .map(|c| c.contacts_token.map(|t| t.expose().to_owned()))
        .map_err(|e| e.to_string())
    };
    assert_eq!(parse(""), Ok(None));
    assert_eq!(
        parse("contacts_token = \"edge-0123\""),
        Ok(Some("edge-0123".to_owned()))
    );
    assert_eq!(
        parse("contacts_token = \"env:CONTACTS_TOKEN\""),
        Ok(Some("from-env-123".to_owned()))
    );
    for (top, want) in [
        (
            "contacts_token = \"env:NOPE\"",
            "contacts_token: environment variable NOPE is not set",
        ),
        (
            "contacts_token = \"two words\"",
            "contacts_token: must be printable ASCII without spaces",
        ),
    ] {
        let err = parse(top).expect_err(top);
        assert!(err.contains(want), "{top}: {err}");
        assert!(!err.contains("two words"), "{err}");
    }
}

/// `https://` contacts-svc addresses and their TLS settings.
#[test]
fn contacts_over_tls() {
    let source = "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_x\"]\n";
    let parse = |top: &str| {
        Config::parse(
            &format!("{top}\n{source}"),
            Path::new("."),
            &Args::for_file("edge.toml"),
            &|_| None,
        )
        .map(|c| c.contacts_tls.is_some())
        .map_err(|e| e.to_string())
    };
    let https = "contacts_url = \"https://contacts-svc:50051\"";
    let cases = [
        (
            https.to_owned(),
            "contacts_ca: is required with an https:// contacts_url",
        ),
        (
            "contacts_ca = \"pem\"".to_owned(),
            "contacts_ca: TLS settings need an https:// address in contacts_url",
        ),
        (
            format!("{https}\ncontacts_ca = \"not a pem\""),
            "contacts_ca: holds no PEM certificate",
        ),
        (
            format!("{https}\ncontacts_ca = \"x\"\ncontacts_cert = \"x\""),
            "contacts_key: is required with contacts_cert",
        ),
        (
            format!("{https}\ncontacts_ca = \"file:nowhere.pem\""),
            "contacts_ca: cannot read",
        ),
        (
            "contacts_url = \"ftp://contacts-svc:50051\"".to_owned(),
            "must be http://host:port or https://host:port",
        ),
    ];
    for (top, want) in cases {
        let err = parse(&top).expect_err(&top);
        assert!(err.contains(want), "{top}: {err}");
    }
    assert_eq!(parse(""), Ok(false));
}

/// Problems of the file's shape, each with its key; a syntax error located without the
/// text around it, which may hold a secret.
#[test]
fn the_shape_of_the_file() {
    let args = Args::for_file("edge.toml");
    let check = |text: &str, want: &[&str]| {
        crate::problem::assert_problems(parse(text, &args), want, text);
    };
    check(
        "listen = \"127.0.0.1:8080\"\n[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"whsec_s3cr3t\"",
        &["edge.toml: line 4, column 26: unclosed array, expected `]`"],
    );
    assert!(
        !parse("[sources.s]\nsecrets = [\"whsec_s3cr3t\"", &args)
            .expect_err("a syntax error")
            .contains("s3cr3t")
    );
    check(
        "listen = \"127.0.0.1:8080\"",
        &["sources: no source is configured"],
    );
    check("[sources]", &["sources: no source is configured"]);
    check("sources = 1", &["sources: must be a table of sources"]);
    check(
        "[sources]\nstripe = \"whsec_x\"",
        &["sources.stripe: must be a table ([sources.<name>] with its kind and keys)"],
    );
    check(
        "[sources.a]\nsecrets = [\"whsec_x\"]\n[sources.b]\nkind = 1",
        &[
            "sources.a.kind: is required, one of: stripe, gohighlevel, gohighlevel-workflow, \
             standard-webhooks, hmac",
            "sources.b.kind: must be a string, one of: stripe, gohighlevel, \
             gohighlevel-workflow, standard-webhooks, hmac",
        ],
    );
    // Top-level problems and every source's, together.
    check(
        "max_body_bytes = 1\nlisten = 5\n[sources.x]\nkind = \"stripe\"\nsecrets = []",
        &[
            "listen: invalid type: integer `5`, expected a string",
            "sources.x.secrets: needs at least one secret",
        ],
    );
}
