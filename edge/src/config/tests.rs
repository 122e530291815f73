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
