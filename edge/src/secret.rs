//! Secrets in the configuration: how a file refers to one (inline, `env:NAME`,
//! `file:PATH`), how the reference is resolved, and the types that hold them, which
//! print `[redacted]` and whose deserialization errors never quote the value (serde's
//! own messages would: "invalid type: string \"whsec_…\"").

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// A secret value. Its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the file names one secret: the value inline, `env:NAME` or `file:PATH`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef(String);

impl SecretRef {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

const SECRET_EXPECTED: &str = "a string: the secret, env:NAME or file:PATH";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SECRET_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRef, E> {
                Ok(SecretRef(v.to_owned()))
            }
            // Every other type is refused without showing the value.
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(format!("must be {SECRET_EXPECTED}")))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(format!("must be {SECRET_EXPECTED}")))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(format!("must be {SECRET_EXPECTED}")))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(format!("must be {SECRET_EXPECTED}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(de::Error::custom(format!("must be {SECRET_EXPECTED}")))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
                Err(de::Error::custom(format!("must be {SECRET_EXPECTED}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Several secrets (for rotation): a list of [`SecretRef`]s. A single string where the
/// list belongs is refused without showing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretRefs(pub Vec<SecretRef>);

impl<'de> Deserialize<'de> for SecretRefs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a list of secrets, e.g. [\"env:NAME\"]";
        impl<'de> Visitor<'de> for V {
            type Value = SecretRefs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SecretRefs, A::Error> {
                let mut refs = Vec::new();
                while let Some(r) = seq.next_element::<SecretRef>()? {
                    refs.push(r);
                }
                Ok(SecretRefs(refs))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRefs, E> {
                Err(E::custom(format!(
                    "must be {EXPECTED}, not a single string"
                )))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRefs, E> {
                Err(E::custom(format!("must be {EXPECTED}")))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRefs, E> {
                Err(E::custom(format!("must be {EXPECTED}")))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRefs, E> {
                Err(E::custom(format!("must be {EXPECTED}")))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRefs, E> {
                Err(E::custom(format!("must be {EXPECTED}")))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<SecretRefs, A::Error> {
                Err(de::Error::custom(format!("must be {EXPECTED}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Resolves `env:NAME` and `file:PATH` values: the one place that reads the environment
/// and secret files for the configuration.
#[allow(missing_debug_implementations)]
pub struct Resolver<'a> {
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Resolver<'a> {
    /// `base` resolves relative `file:` paths; `env` reads environment variables.
    pub fn new(base: &'a Path, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { base, env }
    }

    /// The secret `value` refers to, with surrounding whitespace removed (a trailing
    /// newline in a file or variable would otherwise fail every verification).
    pub fn secret(&self, value: &SecretRef) -> Result<Secret, String> {
        let resolved = self.text(&value.0)?;
        let trimmed = resolved.trim();
        if trimmed.is_empty() {
            return Err("is empty".to_owned());
        }
        Ok(Secret::new(trimmed))
    }

    /// The text `value` refers to: inline, `env:NAME` or `file:PATH`.
    pub fn text(&self, value: &str) -> Result<String, String> {
        if let Some(name) = value.strip_prefix("env:") {
            (self.env)(name).ok_or_else(|| format!("environment variable {name} is not set"))
        } else if let Some(path) = value.strip_prefix("file:") {
            let path = self.base.join(path);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        } else {
            Ok(value.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        one: Option<SecretRef>,
        #[allow(dead_code)]
        many: Option<SecretRefs>,
    }

    /// A secret written where it does not belong is refused without being quoted.
    #[test]
    fn errors_never_quote_a_secret() {
        for text in [
            "one = [\"whsec_leak\"]",
            "one = { v = \"whsec_leak\" }",
            "many = \"whsec_leak\"",
            "many = [[\"whsec_leak\"]]",
            "many = { a = \"whsec_leak\" }",
            "one = 12345",
        ] {
            let err = toml::from_str::<Holder>(text).expect_err(text);
            let message = err.message().to_owned();
            assert!(!message.contains("leak"), "{text}: {message}");
            assert!(!message.contains("12345"), "{text}: {message}");
            assert!(message.contains("must be"), "{text}: {message}");
        }
        let ok: Holder = toml::from_str("one = \"a\"\nmany = [\"b\", \"c\"]").expect("valid");
        assert_eq!(
            format!("{ok:?}"),
            "Holder { one: Some([redacted]), many: Some(SecretRefs([[redacted], [redacted]])) }"
        );
    }

    #[test]
    fn references_resolve() {
        let dir = std::env::temp_dir();
        let name = format!("hookline-secret-{}", std::process::id());
        std::fs::write(dir.join(&name), "  from-file\n").expect("write");
        let env = |n: &str| (n == "SET").then(|| " from-env ".to_owned());
        let r = Resolver::new(&dir, &env);
        let get = |v: &str| r.secret(&SecretRef::new(v)).map(|s| s.expose().to_owned());
        assert_eq!(get("inline"), Ok("inline".to_owned()));
        assert_eq!(get("env:SET"), Ok("from-env".to_owned()));
        assert_eq!(
            get("env:UNSET"),
            Err("environment variable UNSET is not set".to_owned())
        );
        assert_eq!(get(&format!("file:{name}")), Ok("from-file".to_owned()));
        assert!(get("file:does-not-exist").is_err());
        assert_eq!(get("  "), Err("is empty".to_owned()));
        let _ = std::fs::remove_file(dir.join(&name));
    }
}
