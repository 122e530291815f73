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
    let event = ghl.normalize("gohighlevel", body, 0);
    assert!(
        matches!(event.payload, Some(Payload::AppointmentUpdated(_))),
        "{:?}",
        event.payload
    );
}
