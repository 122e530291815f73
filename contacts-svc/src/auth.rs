//! Who calls the gRPC API: the caller a request's bearer token names, put into the
//! request's extensions by the authentication layer, read by the service where an
//! answer or a record depends on it (an erasure records who asked for it).

/// The caller of a request: the name of its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
}

impl Caller {
    /// The caller of `request`; a server run without authentication (`--insecure-no-auth`)
    /// knows none.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self {
                name: "unauthenticated".to_owned(),
            })
    }
}
