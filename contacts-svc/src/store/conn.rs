//! The connection to Redis, behind one type so that the store's commands, pipelines and
//! scripts do not depend on how Redis is deployed. It reconnects by itself: a command
//! sent while Redis is away fails, and the next one tries again.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to Redis; cheap to clone (clones share it).
#[derive(Clone)]
pub(super) struct Conn {
    inner: ConnectionManager,
}

impl Conn {
    /// Prepares a connection to one Redis server at `url` without connecting: the
    /// connection is made on first use and re-made in the background whenever it breaks.
    /// Every command times out after `timeout`.
    pub(super) fn single(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let inner = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { inner })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
