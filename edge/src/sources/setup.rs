//! What a provider reads its `[sources.<name>]` table with: the source's name, the
//! resolver of secret references, and every problem found so far, each recorded under
//! its full key so that a whole file is checked in one pass.

use serde::de::DeserializeOwned;

use super::fields;
use crate::problem::{self, Problems};

/// The longest dedup window a source may give ids derived from content: contacts-svc's
/// default dedup TTL, 30 days.
pub const MAX_DEDUP_WINDOW_SECS: u32 = 30 * 24 * 3600;
use crate::secret::{Resolver, Secret, SecretRef, SecretRefs};

/// What a provider reads its configuration with: the source's name, the resolver of
/// secret references, and the problems found so far. Keys are relative to the source's
/// table (`secrets[0]`, `map.email`).
#[allow(missing_debug_implementations)]
pub struct Setup<'a> {
    name: &'a str,
    resolver: &'a Resolver<'a>,
    pub(super) problems: Problems,
}

impl<'a> Setup<'a> {
    /// Reading the source `name`, secrets resolved by `resolver`.
    pub fn new(name: &'a str, resolver: &'a Resolver<'a>) -> Self {
        Self {
            name,
            resolver,
            problems: Problems::default(),
        }
    }

    /// The source's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The full key of `key`: `sources.<name>.<key>` (the source's own for `""`).
    pub fn key(&self, key: &str) -> String {
        problem::join(&format!("sources.{}", self.name), key)
    }

    /// Records a problem with `key`.
    pub fn problem(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push(self.key(key), reason);
    }

    /// The value of `r`, or `None` with its error recorded under `key`.
    pub fn check<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        self.problems.check(self.key(key), r)
    }

    /// `dedup_window_secs` of a source whose ids may be digests of the content:
    /// `default` when absent, else 1..=[`MAX_DEDUP_WINDOW_SECS`]. Signed, so that a
    /// negative value gets this key's message rather than serde's.
    pub fn dedup_window(&mut self, configured: Option<i64>, default: u32) -> Option<u32> {
        let Some(secs) = configured else {
            return Some(default);
        };
        let window = u32::try_from(secs)
            .ok()
            .filter(|s| (1..=MAX_DEDUP_WINDOW_SECS).contains(s))
            .ok_or_else(|| format!("must be between 1 and {MAX_DEDUP_WINDOW_SECS} (30 days)"));
        self.check("dedup_window_secs", window)
    }

    /// The secret `value` refers to.
    pub fn secret(&mut self, key: &str, value: &SecretRef) -> Option<Secret> {
        let resolved = self.resolver.secret(value);
        self.check(key, resolved)
    }

    /// Every secret of a list (at least one), each checked by `check`, which says what
    /// is wrong with a value without quoting it. `None` when any is missing or wrong.
    pub fn secrets<T>(
        &mut self,
        key: &str,
        values: &SecretRefs,
        check: impl Fn(&Secret) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        if values.0.is_empty() {
            self.problem(key, "needs at least one secret");
            return None;
        }
        let mut out = Vec::with_capacity(values.0.len());
        let mut ok = true;
        for (i, value) in values.0.iter().enumerate() {
            let key = format!("{key}[{i}]");
            let checked = self.secret(&key, value).and_then(|s| {
                let c = check(&s);
                self.check(&key, c)
            });
            match checked {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// The text `value` refers to (inline, `env:NAME`, `file:PATH`): public keys.
    pub fn text(&mut self, key: &str, value: &str) -> Option<String> {
        let resolved = self.resolver.text(value);
        self.check(key, resolved)
    }

    /// A JSON Pointer to a field (RFC 6901, not the empty pointer to the whole body).
    pub fn pointer(&mut self, key: &str, p: &str) -> Option<String> {
        if !p.is_empty() && fields::is_json_pointer(p) {
            Some(p.to_owned())
        } else {
            self.problem(
                key,
                format!(
                    "{p:?} is not a JSON Pointer to a field (RFC 6901): it starts with '/', and \
                     '~' is written '~0' and '/' in a key '~1', e.g. \"/data/email\""
                ),
            );
            None
        }
    }

    /// A nested table (`map`, `actions[0]`) read as `T`, its unknown keys and values of
    /// the wrong type recorded by their paths.
    pub fn deserialize<T: DeserializeOwned>(&mut self, key: &str, value: toml::Value) -> Option<T> {
        let prefix = self.key(key);
        problem::deserialize(&prefix, value, &mut self.problems)
    }

    /// Whether no problem was recorded yet.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}
