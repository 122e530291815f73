//! The connection to Redis, behind one type so that the store's commands, pipelines and
//! scripts do not depend on how Redis is deployed: one server, or a Redis Cluster. It
//! reconnects by itself: a command sent while Redis is away fails, and the next one
//! tries again.
//!
//! A cluster takes a pipeline only when every command in it touches one slot, and the
//! store's pipelines span many (a batch's leases, index entries and contacts). So on a
//! cluster a pipeline is cut by slot ([`slot_of`]): one pipeline per slot, each command
//! without a single slot (a multi-key `MGET`, which the cluster client splits itself)
//! alone, all sent at once, and the replies put back in the pipeline's order. No
//! command or script ever spans two slots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Arg, Cmd, Pipeline, RedisFuture, Value};

/// A connection to Redis; cheap to clone (clones share it).
#[derive(Clone)]
pub(super) struct Conn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    /// Connected on first use; the cluster client follows the cluster's changes that
    /// its nodes announce (MOVED, ASK). A connection that fails or times out is dropped
    /// and the next use connects anew, reading the slots from the nodes given: that is
    /// how a master that died (its replica promoted) is left behind.
    Cluster {
        client: Arc<ClusterClient>,
        conn: Arc<Mutex<Option<ClusterConnection>>>,
    },
}

impl Conn {
    /// Prepares a connection to one Redis server at `url` without connecting: the
    /// connection is made on first use and re-made in the background whenever it breaks.
    /// Every command times out after `timeout`.
    /// `certs`, for `rediss://`, say whom to trust and who we are.
    pub(super) fn single(
        url: &str,
        timeout: Duration,
        certs: Option<redis::TlsCertificates>,
    ) -> redis::RedisResult<Self> {
        let client = match certs {
            Some(certs) => redis::Client::build_with_tls(url, certs)?,
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let inner = Inner::Single(ConnectionManager::new_lazy_with_config(client, config)?);
        Ok(Self { inner })
    }

    /// Prepares a connection to the Redis Cluster that `urls` (some of its nodes) belong
    /// to, without connecting.
    pub(super) fn cluster(
        urls: &[String],
        timeout: Duration,
        certs: Option<redis::TlsCertificates>,
    ) -> redis::RedisResult<Self> {
        let mut builder = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        let client = builder.build()?;
        Ok(Self {
            inner: Inner::Cluster {
                client: Arc::new(client),
                conn: Arc::new(Mutex::new(None)),
            },
        })
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster { .. })
    }

    async fn cluster_conn(
        client: &ClusterClient,
        conn: &Mutex<Option<ClusterConnection>>,
    ) -> redis::RedisResult<ClusterConnection> {
        if let Some(c) = conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let fresh = client.get_async_connection().await?;
        *conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops the cluster connection after `result` failed in a way a new topology may
    /// cure (a node unreachable or silent, the cluster down or moving).
    fn after<T>(
        conn: &Mutex<Option<ClusterConnection>>,
        result: redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        if let Err(e) = &result
            && (e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown))
        {
            *conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Single(c) => c.req_packed_command(cmd),
            Inner::Cluster { client, conn } => Box::pin(async move {
                let result = match Self::cluster_conn(client, conn).await {
                    Ok(mut c) => c.req_packed_command(cmd).await,
                    Err(e) => Err(e),
                };
                Self::after(conn, result)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster { client, conn } => Box::pin(async move {
                if pipeline.is_transaction() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a transaction cannot be cut by slot",
                    )));
                }
                let result = match Self::cluster_conn(client, conn).await {
                    Ok(c) => by_slot(c, pipeline).await,
                    Err(e) => Err(e),
                };
                let replies = Self::after(conn, result)?;
                Ok(replies.into_iter().skip(offset).take(count).collect())
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster { .. } => 0,
        }
    }
}

/// Sends `pipeline` to a cluster cut by slot, all parts at once; the replies in the
/// pipeline's order.
async fn by_slot(c: ClusterConnection, pipeline: &Pipeline) -> redis::RedisResult<Vec<Value>> {
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut slots: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    let mut alone = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        match slot_of(cmd) {
            Some(slot) => slots.entry(slot).or_default().push(i),
            None => alone.push(i),
        }
    }
    let parts = slots.into_values().map(|at| {
        let mut c = c.clone();
        let mut part = redis::pipe();
        for &i in &at {
            part.add_command(cmds[i].clone());
        }
        async move {
            let replies = c.req_packed_commands(&part, 0, at.len()).await?;
            Ok::<_, redis::RedisError>(at.into_iter().zip(replies).collect::<Vec<_>>())
        }
    });
    let singles = alone.into_iter().map(|i| {
        let mut c = c.clone();
        let cmd = cmds[i];
        async move { Ok::<_, redis::RedisError>(vec![(i, c.req_packed_command(cmd).await?)]) }
    });
    let (parts, singles) = futures::future::join(
        futures::future::try_join_all(parts),
        futures::future::try_join_all(singles),
    )
    .await;
    let mut replies: Vec<Value> = vec![Value::Nil; cmds.len()];
    for (i, reply) in parts?.into_iter().chain(singles?).flatten() {
        replies[i] = reply;
    }
    Ok(replies)
}

/// The one slot every key of `cmd` is in, or `None` when it has no key or keys in
/// several slots. The key is the first argument after the command's name, or after the
/// script and the key count for `EVAL` and `EVALSHA`; `MGET`, `EXISTS` and `DEL` of
/// several keys may span slots.
pub(super) fn slot_of(cmd: &Cmd) -> Option<u16> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(bytes) => bytes,
            _ => &b""[..],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let keys: &[&[u8]] = match name.as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            args.get(3..3 + n)?
        }
        b"MGET" | b"EXISTS" | b"DEL" | b"UNLINK" => args.get(1..)?,
        b"PING" | b"INFO" | b"SCRIPT" | b"CLUSTER" | b"SCAN" | b"DBSIZE" | b"WAIT" => {
            return None;
        }
        _ => args.get(1..2)?,
    };
    let mut slots = keys.iter().map(|k| key_slot(k));
    let first = slots.next()?;
    slots.all(|s| s == first).then_some(first)
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_the_slots_redis_cluster_gives_them() {
        // `CLUSTER KEYSLOT` of each, on a real Redis.
        for (key, slot) in [
            (&b"foo"[..], 12182),
            (b"bar", 5061),
            (b"hl:c:{ct_0190f0e0c0a07000800000000000000a}", 1255),
            (b"{ct_0190f0e0c0a07000800000000000000a}", 1255),
            (b"hl:idx:email:jenny@example.com", 10674),
            (b"a{}b", 13694),
            (b"", 0),
        ] {
            assert_eq!(key_slot(key), slot, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn a_command_has_the_slot_of_its_keys_or_none() {
        let c = "hl:c:{ct_0190f0e0c0a07000800000000000000a}";
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(1).arg(c).arg("x");
        let mut set = redis::cmd("SET");
        set.arg(c).arg("v").arg("NX");
        let mut mget = redis::cmd("MGET");
        mget.arg("foo").arg("bar");
        let mut same = redis::cmd("MGET");
        same.arg("{a}1").arg("{a}2");
        for (cmd, want) in [
            (eval, Some(1255)),
            (set, Some(1255)),
            (mget, None),
            (same, Some(key_slot(b"a"))),
            (redis::cmd("PING"), None),
        ] {
            assert_eq!(slot_of(&cmd), want);
        }
    }
}
