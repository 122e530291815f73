//! The tower layer every gRPC call passes before it reaches a service: it asks
//! [`Auth::admit`] about the call's path and `authorization` header, answers a refusal
//! itself (UNAUTHENTICATED or PERMISSION_DENIED, never quoting the token), and hands an
//! admitted call on with its [`Caller`](super::Caller) in the request's extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};

use super::Auth;
use crate::metrics::Metrics;

/// Wraps the gRPC routes in [`Authenticated`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub fn new(auth: Auth, metrics: Arc<Metrics>) -> Self {
        Self {
            auth: Arc::new(auth),
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.auth.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The gRPC routes behind the check.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        match self.auth.admit(request.uri().path(), authorization) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Either::Left(self.inner.call(request))
            }
            Err(refusal) => {
                self.metrics.auth_refused(refusal.reason());
                tracing::info!(
                    path = request.uri().path(),
                    reason = refusal.reason(),
                    "call refused"
                );
                Either::Right(ready(Ok(refusal.status().into_http())))
            }
        }
    }
}
