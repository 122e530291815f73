//! The one error type of contacts-svc and its mapping to gRPC status codes. A status
//! for a caller's mistake says what was wrong; a status for our own failure says
//! nothing about its cause, which is logged instead.

/// Everything that can go wrong while serving a call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent a malformed value.
    #[error("{field} {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Nothing matches what the caller asked for.
    #[error("{0}")]
    NotFound(String),
    /// The caller's token may not write events of this source.
    #[error("the token {caller} may not write events of the source {source_name}")]
    ForeignSource { caller: String, source_name: String },
    /// Another caller is applying the same event right now; retrying later is safe.
    #[error("event {0} is being applied by another call")]
    InProgress(String),
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Concurrent writers kept changing the same contacts; retrying later is safe.
    #[error("gave up after {0} attempts against concurrent updates")]
    Contention(u32),
    /// The call's deadline passed before the event was done; retrying later is safe.
    #[error("out of time before the event was applied")]
    Deadline,
    /// Stored data could not be read back (a bug or outside interference). `key` names
    /// where, with any email or phone in it masked: errors are logged.
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Fewer replicas than `--redis-wait-replicas` confirmed the writes in time: a
    /// failover could take them back, so the event does not count as applied yet;
    /// retrying later is safe (the retry finds it done once they have caught up).
    #[error("only {acked} of {wanted} replicas confirmed the writes in time")]
    Replicas { wanted: u32, acked: u32 },
    /// Redis holds a storage layout this version cannot serve (see `store::schema`).
    #[error("{0}")]
    Layout(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Short label for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::ForeignSource { .. } => "foreign_source",
            Self::InProgress(_) => "in_progress",
            Self::Redis(_) => "redis",
            Self::Contention(_) => "contention",
            Self::Deadline => "deadline",
            Self::Corrupt { .. } => "corrupt",
            Self::Replicas { .. } => "replicas",
            Self::Layout(_) => "layout",
        }
    }
}
