//! Configuration problems. Each names the key at fault (`sources.acme.secrets[0]`), and
//! a configuration is checked whole: every problem is collected, so one run of
//! `edge --check-config` lists them all instead of the first. No problem ever carries a
//! secret's value: callers describe values, they do not quote secrets.

use std::fmt;

use serde::de::DeserializeOwned;

/// One problem: the key at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every problem found, in the order found. Displayed one per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Problems made of one.
    pub fn one(key: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut p = Self::default();
        p.push(key, reason);
        p
    }

    pub fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was found, else the problems.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Records the error of `r` under `key`, passing its value on.
    pub fn check<T>(&mut self, key: impl Into<String>, r: Result<T, String>) -> Option<T> {
        r.map_err(|reason| self.push(key, reason)).ok()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Reads a TOML value as `T`, recording problems under `prefix` (`sources.acme`, or
/// empty for the top level): every key `T` does not know, each by its path, and a value
/// of the wrong type by its path. `None` when a value could not be read; unknown keys
/// alone still give the value, so the caller goes on checking it.
pub fn deserialize<T: DeserializeOwned>(
    prefix: &str,
    value: toml::Value,
    problems: &mut Problems,
) -> Option<T> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(render_ignored(&path));
    let read = serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
        value, &mut note,
    ));
    let known = known_keys::<T>();
    for path in unknown {
        // The keys of the table itself can be listed; a nested table's, not.
        let reason = match known {
            Some(keys) if !path.contains(['.', '[']) => {
                format!("unknown key (known: {})", keys.join(", "))
            }
            _ => "unknown key".to_owned(),
        };
        problems.push(join(prefix, &path), reason);
    }
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            let path = render_path(e.path());
            problems.push(join(prefix, &path), e.into_inner().message().to_owned());
            None
        }
    }
}

/// The keys a struct `T` reads, as serde names them: `T` is asked to deserialize from a
/// probe that records the field list it offers and then gives up.
fn known_keys<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("probe"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// `prefix.path`, without a dot at either end when one is empty. A path that starts
/// with an index (`[0]`) joins without a dot.
pub fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => path.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// A key path as TOML writes it: `map.email`, `actions[1].amount`.
fn render_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_ignored(parent)),
        Path::Map { parent, key } => join(&render_ignored(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render_ignored(parent),
    }
}

fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out = join(&out, key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Asserts that `got` (a configuration's outcome, its problems one per line) holds
/// exactly the problems `want`, in order; none means it must be `Ok`. For tests.
#[cfg(test)]
pub(crate) fn assert_problems<T>(got: Result<T, String>, want: &[&str], context: &str) {
    let got = got
        .map(|_| ())
        .map_err(|e| e.lines().map(str::to_owned).collect::<Vec<_>>());
    let want = if want.is_empty() {
        Ok(())
    } else {
        Err(want.iter().map(|s| (*s).to_owned()).collect())
    };
    assert_eq!(got, want, "{context}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        a: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        n: Option<u64>,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        map: BTreeMap<String, Inner>,
    }

    fn check(toml_text: &str, want: &[&str]) {
        let value = toml::Value::Table(toml_text.parse().expect("toml"));
        let mut problems = Problems::default();
        let _ = deserialize::<Outer>("sources.x", value, &mut problems);
        let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(got, want, "{toml_text}");
    }

    #[test]
    fn every_unknown_key_by_its_path_and_a_type_error_by_its_path() {
        check("n = 1\ninner = { a = 2 }", &[]);
        check(
            "m = 1\ninner = { b = 2, c = 3 }\nlist = [{ a = 1 }, { z = 1 }]\nmap.k = { y = 1 }",
            &[
                "sources.x.inner.b: unknown key",
                "sources.x.inner.c: unknown key",
                "sources.x.list[1].z: unknown key",
                "sources.x.m: unknown key (known: n, inner, list, map)",
                "sources.x.map.k.y: unknown key",
            ],
        );
        check(
            "n = -1",
            &["sources.x.n: invalid value: integer `-1`, expected u64"],
        );
        check(
            "list = [{ a = \"x\" }]",
            &["sources.x.list[0].a: invalid type: string \"x\", expected u32"],
        );
    }

    #[test]
    fn joins() {
        assert_eq!(join("", ""), "");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("", "b"), "b");
        assert_eq!(join("a", "b"), "a.b");
        assert_eq!(join("a", "[0]"), "a[0]");
    }
}
