//! What one edge process lets its senders hold: the connection limits the accept loop
//! enforces ([`Limits`], checked by `config.rs`).

use std::time::Duration;

/// The connection limits of every listener the edge runs. Defaults are the production
/// values documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time from accept to the first complete request head (HTTP/1 head or HTTP/2
    /// HEADERS); a connection that sends nothing, a few bytes or only the HTTP/2 preface
    /// is closed after it.
    pub first_request_timeout: Duration,
    /// Time a connection may stay open with no request in flight; it is then closed
    /// gracefully. Also bounds a later HTTP/1 head, which is read while no request is in
    /// flight.
    pub idle_timeout: Duration,
    /// Interval of the HTTP/2 pings that detect a dead peer.
    pub http2_keep_alive_interval: Duration,
    /// Time a ping (a keep-alive one, or the one that closes a connection gracefully)
    /// waits for its answer before the connection is dropped.
    pub http2_keep_alive_timeout: Duration,
    /// Connections served at once per listener; more are accepted and closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_http2_streams: u32,
}

impl Limits {
    pub const DEFAULT_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
    pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
    pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    pub const DEFAULT_MAX_HTTP2_STREAMS: u32 = 100;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            first_request_timeout: Self::DEFAULT_FIRST_REQUEST_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            http2_keep_alive_interval: Self::DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
            http2_keep_alive_timeout: Self::DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_http2_streams: Self::DEFAULT_MAX_HTTP2_STREAMS,
        }
    }
}
