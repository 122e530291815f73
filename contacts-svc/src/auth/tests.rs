use super::*;

const EDGE_TOKEN: &str = "edge-token-0123456789";
const READER_TOKEN: &str = "reader-token-0123456789";

fn file() -> String {
    format!(
        r#"
[[tokens]]
name = "edge"
sha256 = "{}"
scopes = ["events:write"]
sources = ["stripe", "gohighlevel"]

[[tokens]]
name = "crm"
sha256 = "{}"
scopes = ["contacts:read", "contacts:write"]
"#,
        hex::encode(digest(EDGE_TOKEN.as_bytes())),
        hex::encode(digest(READER_TOKEN.as_bytes()))
    )
}

fn auth(public_health: bool, public_reflection: bool) -> Auth {
    Auth::Tokens {
        tokens: Tokens::parse(&file()).unwrap(),
        public_health,
        public_reflection,
    }
}

#[test]
fn each_method_needs_its_scope() {
    let cases = [
        (
            "/contacts.v1.ContactsService/ApplyEvents",
            Access::Scope(Scope::EventsWrite),
        ),
        (
            "/contacts.v1.ContactsService/ApplyEvent",
            Access::Scope(Scope::EventsWrite),
        ),
        (
            "/contacts.v1.ContactsService/GetContact",
            Access::Scope(Scope::ContactsRead),
        ),
        (
            "/contacts.v1.ContactsService/LookupContact",
            Access::Scope(Scope::ContactsRead),
        ),
        (
            "/contacts.v1.ContactsService/ListContacts",
            Access::Scope(Scope::ContactsRead),
        ),
        (
            "/contacts.v1.ContactsService/ListEvents",
            Access::Scope(Scope::ContactsRead),
        ),
        (
            "/contacts.v1.ContactsService/UpsertContact",
            Access::Scope(Scope::ContactsWrite),
        ),
        (
            "/contacts.v1.ContactsService/EraseContact",
            Access::Scope(Scope::ContactsErase),
        ),
        // A method nobody decided a scope for is closed, not open.
        (
            "/contacts.v1.ContactsService/DropEverything",
            Access::Nobody,
        ),
        ("/grpc.health.v1.Health/Check", Access::Health),
        ("/grpc.health.v1.Health/Watch", Access::Health),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Access::Reflection,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            Access::Reflection,
        ),
        ("/other.Service/Method", Access::Nobody),
        ("/", Access::Nobody),
        ("", Access::Nobody),
    ];
    for (path, want) in cases {
        assert_eq!(access_of(path), want, "{path}");
    }
}

#[test]
fn calls_are_admitted_by_token_and_scope() {
    let edge = || {
        Ok(Some(Caller {
            name: "edge".to_owned(),
            sources: Sources::Only(["gohighlevel", "stripe"].map(str::to_owned).into()),
        }))
    };
    // A token without events:write writes no source.
    let crm = || {
        Ok(Some(Caller {
            name: "crm".to_owned(),
            sources: Sources::Only(BTreeSet::new()),
        }))
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let apply = "/contacts.v1.ContactsService/ApplyEvents";
    let get = "/contacts.v1.ContactsService/GetContact";
    let erase = "/contacts.v1.ContactsService/EraseContact";
    let health = "/grpc.health.v1.Health/Check";
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let scope = |caller: &str, needs| {
        Err(Refusal::Scope {
            caller: caller.to_owned(),
            needs,
        })
    };
    type Admitted = Result<Option<Caller>, Refusal>;
    let cases: Vec<(&str, Option<String>, Admitted)> = vec![
        (apply, Some(bearer(EDGE_TOKEN)), edge()),
        (apply, Some(format!("bearer {EDGE_TOKEN}")), edge()),
        (apply, Some(format!("BEARER {EDGE_TOKEN}")), edge()),
        (apply, None, Err(Refusal::Missing)),
        (apply, Some(String::new()), Err(Refusal::Missing)),
        (apply, Some("Bearer ".to_owned()), Err(Refusal::Missing)),
        (
            apply,
            Some(format!("Basic {EDGE_TOKEN}")),
            Err(Refusal::Missing),
        ),
        (apply, Some(EDGE_TOKEN.to_owned()), Err(Refusal::Missing)),
        (
            apply,
            Some(bearer("edge-token-012345678")),
            Err(Refusal::Invalid),
        ),
        (
            apply,
            Some(bearer(&format!("{EDGE_TOKEN} "))),
            Err(Refusal::Invalid),
        ),
        (
            apply,
            Some(bearer(READER_TOKEN)),
            scope("crm", Scope::EventsWrite),
        ),
        (get, Some(bearer(READER_TOKEN)), crm()),
        (
            get,
            Some(bearer(EDGE_TOKEN)),
            scope("edge", Scope::ContactsRead),
        ),
        (
            erase,
            Some(bearer(READER_TOKEN)),
            scope("crm", Scope::ContactsErase),
        ),
        (health, None, Ok(None)),
        (reflection, None, Err(Refusal::Missing)),
        (reflection, Some(bearer(READER_TOKEN)), crm()),
        (
            "/contacts.v1.ContactsService/DropEverything",
            Some(bearer(READER_TOKEN)),
            Err(Refusal::Nobody),
        ),
    ];
    let auth = auth(true, false);
    for (path, header, want) in cases {
        let got = auth.admit(path, header.as_deref().map(str::as_bytes));
        assert_eq!(got, want, "{path} {header:?}");
    }
    // Health and reflection behind a token when the flags say so.
    let closed = super::Auth::Tokens {
        tokens: Tokens::parse(&file()).unwrap(),
        public_health: false,
        public_reflection: true,
    };
    assert_eq!(closed.admit(health, None), Err(Refusal::Missing));
    assert_eq!(closed.admit(reflection, None), Ok(None));
    // Without authentication, everything goes, with no caller named.
    assert_eq!(Auth::Disabled.admit(apply, None), Ok(None));
}

#[test]
fn a_refusal_never_quotes_the_token() {
    for refusal in [
        Refusal::Missing,
        Refusal::Invalid,
        Refusal::Scope {
            caller: "crm".to_owned(),
            needs: Scope::EventsWrite,
        },
        Refusal::Nobody,
    ] {
        let status = refusal.status();
        assert!(!status.message().contains(EDGE_TOKEN), "{status:?}");
        let code = status.code();
        let want = match refusal {
            Refusal::Missing | Refusal::Invalid => tonic::Code::Unauthenticated,
            _ => tonic::Code::PermissionDenied,
        };
        assert_eq!(code, want);
    }
    let tokens = Tokens::parse(&file()).unwrap();
    let shown = format!("{tokens:?}");
    assert!(
        !shown.contains(&hex::encode(digest(EDGE_TOKEN.as_bytes()))),
        "{shown}"
    );
}

#[test]
fn every_problem_of_a_tokens_file_names_its_field() {
    let digest_a = hex::encode(digest(b"a"));
    let digest_b = hex::encode(digest(b"b"));
    let entry = |name: &str, sha: &str, scopes: &str, sources: &str| {
        format!("[[tokens]]\nname = {name:?}\nsha256 = {sha:?}\nscopes = {scopes}\n{sources}\n")
    };
    let ok_reader = entry("r", &digest_a, r#"["contacts:read"]"#, "");
    let cases: Vec<(String, &str)> = vec![
        ("tokens = []".to_owned(), "lists no token"),
        ("[[tokens]]\nname = \"x\"".to_owned(), "missing field"),
        (
            entry("", &digest_a, r#"["contacts:read"]"#, ""),
            "tokens[0].name",
        ),
        (
            entry("a b", &digest_a, r#"["contacts:read"]"#, ""),
            "tokens[0].name",
        ),
        (
            format!(
                "{ok_reader}{}",
                entry("r", &digest_b, r#"["contacts:read"]"#, "")
            ),
            "tokens[1].name: names another",
        ),
        (
            entry("r", "abc", r#"["contacts:read"]"#, ""),
            "tokens[0].sha256",
        ),
        (
            format!(
                "{ok_reader}{}",
                entry("s", &digest_a, r#"["contacts:read"]"#, "")
            ),
            "tokens[1].sha256: is the digest",
        ),
        (
            entry("r", &digest_a, r#"["contacts:admin"]"#, ""),
            "tokens[0].scopes: \"contacts:admin\" is not one of",
        ),
        (
            entry("r", &digest_a, "[]", ""),
            "tokens[0].scopes: lists no scope",
        ),
        (
            entry("e", &digest_a, r#"["events:write"]"#, ""),
            "tokens[0].sources: an events:write token lists",
        ),
        (
            entry(
                "r",
                &digest_a,
                r#"["contacts:read"]"#,
                r#"sources = ["stripe"]"#,
            ),
            "tokens[0].sources: only an events:write",
        ),
        (
            entry(
                "e",
                &digest_a,
                r#"["events:write"]"#,
                r#"sources = ["*", "stripe"]"#,
            ),
            "tokens[0].sources: \"*\" stands alone",
        ),
        (format!("{ok_reader}colour = \"blue\""), "unknown field"),
    ];
    for (text, want) in cases {
        let got = Tokens::parse(&text)
            .map(|t| t.len())
            .map_err(|e| e.to_string());
        assert!(
            got.as_ref().is_err_and(|e| e.contains(want)),
            "{text}\n=> {got:?}, wanted an error with {want:?}"
        );
    }
    let any = entry(
        "e",
        &digest_a,
        r#"["events:write", "contacts:read"]"#,
        r#"sources = ["*"]"#,
    );
    let tokens = Tokens::parse(&any).unwrap();
    assert_eq!(tokens.find(b"a").map(|t| &t.sources), Some(&Sources::Any));
    assert!(tokens.find(b"b").is_none());
}
