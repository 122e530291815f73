//! The edge's error type and the one place it becomes an HTTP answer. A 4xx says what
//! the caller did wrong; a 5xx asks the sender to retry and says nothing about the cause,
//! which is logged instead.

use http::StatusCode;

use crate::sources::VerifyError;

/// Every way a webhook request can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no route")]
    NotFound,
    #[error("unknown source")]
    UnknownSource,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("body could not be read: {0}")]
    BadBody(String),
    #[error("body was not received in time")]
    BodyTimeout,
    #[error("signature verification failed: {0}")]
    Unauthorized(#[from] VerifyError),
    /// contacts-svc (or Redis behind it) cannot take the event now; the sender retries.
    #[error("cannot apply now: {cause}")]
    RetryLater { status: StatusCode, cause: String },
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::UnknownSource => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RetryLater { status, .. } => *status,
        }
    }

    /// What the caller is told. Retry answers do not reveal the cause.
    pub fn public_message(&self) -> String {
        match self {
            Self::RetryLater { .. } => {
                "temporarily unable to accept the event, retry later".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// Short label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound | Self::UnknownSource => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge(_) => "too_large",
            Self::BadBody(_) | Self::BodyTimeout => "bad_body",
            Self::Unauthorized(_) => "rejected",
            Self::RetryLater { .. } => "retry_later",
        }
    }
}
