//! The tokens file (`--auth-tokens-file`): who may call, by the SHA-256 digest of their
//! token (the file never holds a token itself), with their scopes and the sources whose
//! events they may write. Read and checked whole at start-up; every problem names its
//! entry and field.
//!
//! ```toml
//! [[tokens]]
//! name = "edge"                      # shown in logs and answers
//! sha256 = "9c56…"                   # printf %s "$TOKEN" | sha256sum
//! scopes = ["events:write"]
//! sources = ["stripe", "gohighlevel"] # the sources it may write events of; ["*"]: any
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Scope, Sources};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tokens: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    scopes: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
}

/// One caller's token, known by its digest.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
    pub scopes: BTreeSet<Scope>,
    pub sources: Sources,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("digest", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("sources", &self.sources)
            .finish()
    }
}

/// The configured tokens.
#[derive(Clone, Debug)]
pub struct Tokens(Vec<Token>);

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("tokens[{index}].{field}: {problem}")]
    Field {
        index: usize,
        field: &'static str,
        problem: String,
    },
    #[error("tokens: the file lists no token")]
    Empty,
}

/// The SHA-256 digest of a token.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let file: File = toml::from_str(text).map_err(|e| TokensError::Syntax(e.to_string()))?;
        if file.tokens.is_empty() {
            return Err(TokensError::Empty);
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(file.tokens.len());
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let problem = |field, problem: &str| TokensError::Field {
                index,
                field,
                problem: problem.to_owned(),
            };
            let name_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if entry.name.is_empty() || !entry.name.chars().all(name_ok) {
                return Err(problem("name", "must be letters, digits, '.', '_' or '-'"));
            }
            if tokens.iter().any(|t| t.name == entry.name) {
                return Err(problem("name", "names another token too"));
            }
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&entry.sha256, &mut digest).is_err() {
                return Err(problem(
                    "sha256",
                    "must be the 64 hex digits of the token's SHA-256 digest",
                ));
            }
            if tokens.iter().any(|t| t.digest == digest) {
                return Err(problem("sha256", "is the digest of another token too"));
            }
            let mut scopes = BTreeSet::new();
            for name in &entry.scopes {
                let scope = Scope::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = Scope::ALL.iter().map(|s| s.name()).collect();
                    problem(
                        "scopes",
                        &format!("{name:?} is not one of {}", known.join(", ")),
                    )
                })?;
                scopes.insert(scope);
            }
            if scopes.is_empty() {
                return Err(problem("scopes", "lists no scope"));
            }
            let writes = scopes.contains(&Scope::EventsWrite);
            let sources = match entry.sources.as_slice() {
                [] if writes => {
                    return Err(problem(
                        "sources",
                        "an events:write token lists the sources it may write (\"*\": any)",
                    ));
                }
                [_, ..] if !writes => {
                    return Err(problem(
                        "sources",
                        "only an events:write token writes events",
                    ));
                }
                [any] if any == "*" => Sources::Any,
                names if names.iter().any(|n| n == "*") => {
                    return Err(problem("sources", "\"*\" stands alone"));
                }
                names => Sources::Only(names.iter().cloned().collect()),
            };
            tokens.push(Token {
                name: entry.name,
                digest,
                scopes,
                sources,
            });
        }
        Ok(Self(tokens))
    }

    /// The token whose digest `token` has. Every digest is compared, in constant time,
    /// so the time taken says nothing of which one matched or how closely.
    pub fn find(&self, token: &[u8]) -> Option<&Token> {
        let digest = digest(token);
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
