//! Who may call what. Every gRPC call passes one tower layer (`layer.rs`) that reads the
//! bearer token, finds it among the configured tokens (`tokens.rs`, digests compared in
//! constant time), and lets the call through only when the token's scopes grant the
//! method ([`access_of`], the one place that maps methods to scopes). The caller it
//! finds goes into the request's extensions: the service checks there that an event's
//! source is one the caller may write, and an erasure records who asked for it.

mod layer;
mod tokens;

use std::collections::BTreeSet;

pub use layer::AuthLayer;
pub use tokens::{Token, Tokens, TokensError, digest};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `ApplyEvent`, `ApplyEvents`: events of the sources the token lists.
    EventsWrite,
    /// Reading contacts and the webhook log.
    ContactsRead,
    /// `UpsertContact`.
    ContactsWrite,
    /// `EraseContact`.
    ContactsErase,
}

impl Scope {
    pub const ALL: [Self; 4] = [
        Self::EventsWrite,
        Self::ContactsRead,
        Self::ContactsWrite,
        Self::ContactsErase,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::ContactsRead => "contacts:read",
            Self::ContactsWrite => "contacts:write",
            Self::ContactsErase => "contacts:erase",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The sources whose events a caller may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sources {
    Any,
    Only(BTreeSet<String>),
}

impl Sources {
    pub fn allows(&self, source: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(names) => names.contains(source),
        }
    }
}

/// The caller of a request: the name of its token and the sources it may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub sources: Sources,
}

impl Caller {
    /// The caller of `request`. A server run without authentication (`--insecure-no-auth`)
    /// puts none there: anyone may do anything.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self {
                name: "unauthenticated".to_owned(),
                sources: Sources::Any,
            })
    }
}

/// How the gRPC API is protected.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Every caller may call every method (`--insecure-no-auth`).
    Disabled,
    Tokens {
        tokens: Tokens,
        /// Health checks without a token (load balancers and probes have none).
        public_health: bool,
        /// Server reflection without a token.
        public_reflection: bool,
    },
}

/// What a call of one gRPC path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `grpc.health.v1.Health`.
    Health,
    /// Server reflection (v1 and v1alpha).
    Reflection,
    /// A token with this scope.
    Scope(Scope),
    /// Nobody: a path no scope grants (a method added without deciding its scope is
    /// refused rather than open).
    Nobody,
}

/// What calling `path` (`/package.Service/Method`) needs.
pub fn access_of(path: &str) -> Access {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Access::Nobody;
    };
    match service {
        "grpc.health.v1.Health" => Access::Health,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            Access::Reflection
        }
        hookline_proto::SERVICE_NAME => match method {
            "ApplyEvent" | "ApplyEvents" => Access::Scope(Scope::EventsWrite),
            "GetContact" | "LookupContact" | "ListContacts" | "ListEvents" | "WatchChanges" => {
                Access::Scope(Scope::ContactsRead)
            }
            "UpsertContact" => Access::Scope(Scope::ContactsWrite),
            "EraseContact" => Access::Scope(Scope::ContactsErase),
            _ => Access::Nobody,
        },
        _ => Access::Nobody,
    }
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer …` header, or not one that can hold a token.
    Missing,
    /// A token that is none of the configured ones.
    Invalid,
    /// A valid token without the scope the method needs.
    Scope { caller: String, needs: Scope },
    /// A path no token may call.
    Nobody,
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Scope { .. } | Self::Nobody => "scope",
        }
    }

    /// The answer; neither says anything of the token.
    pub fn status(&self) -> tonic::Status {
        match self {
            Self::Missing => {
                tonic::Status::unauthenticated("this call needs an authorization: Bearer token")
            }
            Self::Invalid => tonic::Status::unauthenticated("the bearer token is not valid"),
            Self::Scope { caller, needs } => tonic::Status::permission_denied(format!(
                "the token {caller} lacks the scope {} this call needs",
                needs.name()
            )),
            Self::Nobody => tonic::Status::permission_denied("no token may call this method"),
        }
    }
}

impl Auth {
    /// Decides a call of `path` with this `authorization` header value: let through,
    /// with the caller when a token was needed, or refused.
    pub fn admit(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Caller>, Refusal> {
        let Self::Tokens {
            tokens,
            public_health,
            public_reflection,
        } = self
        else {
            return Ok(None);
        };
        let needs = match access_of(path) {
            Access::Health if *public_health => return Ok(None),
            Access::Reflection if *public_reflection => return Ok(None),
            Access::Health | Access::Reflection => None,
            Access::Scope(scope) => Some(scope),
            Access::Nobody => return Err(Refusal::Nobody),
        };
        let token = authorization.and_then(bearer).ok_or(Refusal::Missing)?;
        let found = tokens.find(token).ok_or(Refusal::Invalid)?;
        if let Some(scope) = needs
            && !found.scopes.contains(&scope)
        {
            return Err(Refusal::Scope {
                caller: found.name.clone(),
                needs: scope,
            });
        }
        Ok(Some(Caller {
            name: found.name.clone(),
            sources: found.sources.clone(),
        }))
    }
}

/// The token of an `authorization` header value `Bearer <token>` (the scheme in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;
