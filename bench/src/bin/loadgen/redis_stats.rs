//! What a Redis did and holds over a run: commands and memory per stored event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// What a Redis has done and holds at one instant.
#[derive(Debug)]
pub(crate) struct RedisReading {
    /// `used_memory` of `INFO memory`, bytes.
    pub(crate) used_memory: u64,
    /// Calls per command from `INFO commandstats`; commands that scripts run are counted
    /// there too, beside the script's own call.
    pub(crate) calls: BTreeMap<String, u64>,
    /// Entries of the key that holds one per stored event.
    pub(crate) stored: u64,
}

pub(crate) async fn redis_connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("--redis {url}: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("--redis {url}: no connection within 5 s"))?
    .map_err(|e| format!("--redis {url}: {e}"))
}

async fn redis_reading(
    conn: &mut redis::aio::MultiplexedConnection,
    events_key: &str,
    per_field: bool,
) -> Result<RedisReading, String> {
    let failed = |what: &str, e: redis::RedisError| format!("redis {what}: {e}");
    // A master of a Redis Cluster that does not serve the key's slot answers MOVED: it
    // holds none of it.
    let kind: String = match redis::cmd("TYPE").arg(events_key).query_async(conn).await {
        Ok(kind) => kind,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
            "none".to_owned()
        }
        Err(e) => return Err(failed("TYPE", e)),
    };
    let size = match kind.as_str() {
        "none" => None,
        "zset" => Some("ZCARD"),
        "stream" => Some("XLEN"),
        "set" => Some("SCARD"),
        "list" => Some("LLEN"),
        "hash" => Some("HLEN"),
        other => {
            return Err(format!(
                "--redis-events {events_key} is a {other}, not a sorted set, stream, set, list or hash"
            ));
        }
    };
    let stored = match size {
        Some("XLEN") if per_field => stream_fields(conn, events_key)
            .await
            .map_err(|e| failed("XRANGE", e))?,
        Some(cmd) => redis::cmd(cmd)
            .arg(events_key)
            .query_async(conn)
            .await
            .map_err(|e| failed(cmd, e))?,
        None => 0,
    };
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .map_err(|e| failed("INFO memory", e))?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .map_err(|e| failed("INFO commandstats", e))?;
    Ok(RedisReading {
        used_memory: info_field(&memory, "used_memory").ok_or("INFO memory has no used_memory")?,
        calls: command_calls(&stats),
        stored,
    })
}

/// What several Redis hold together (the masters of a cluster), read one after another.
pub(crate) async fn redis_readings(
    conns: &mut [redis::aio::MultiplexedConnection],
    events_key: &str,
    per_field: bool,
) -> Result<RedisReading, String> {
    let mut total = RedisReading {
        used_memory: 0,
        calls: BTreeMap::new(),
        stored: 0,
    };
    for conn in conns {
        let one = redis_reading(conn, events_key, per_field).await?;
        total.used_memory += one.used_memory;
        total.stored += one.stored;
        for (name, calls) in one.calls {
            *total.calls.entry(name).or_default() += calls;
        }
    }
    Ok(total)
}

/// The fields of every entry of a stream, read a thousand entries at a time.
async fn stream_fields(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<u64> {
    let mut start = "-".to_owned();
    let mut fields = 0u64;
    loop {
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let Some((last, _)) = entries.last() else {
            return Ok(fields);
        };
        start = format!("({last}");
        fields += entries.iter().map(|(_, f)| f.len() as u64 / 2).sum::<u64>();
    }
}

/// A numeric field of an `INFO` answer (`name:value` lines).
pub(crate) fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))?
        .parse()
        .ok()
}

/// Calls per command of an `INFO commandstats` answer
/// (`cmdstat_set:calls=12,usec=34,...`).
pub(crate) fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, stats) = l.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands and bytes of memory per stored event between two readings. The few calls the
/// readings make themselves (INFO, TYPE, the size) are counted too: a handful against
/// thousands of events.
pub(crate) fn redis_costs(events_key: &str, before: &RedisReading, after: &RedisReading) -> Value {
    let stored = after.stored.saturating_sub(before.stored);
    let per_event = |v: f64| (stored > 0).then(|| v / stored as f64);
    let by_command: BTreeMap<&str, u64> = after
        .calls
        .iter()
        .map(|(name, calls)| {
            let was = before.calls.get(name).copied().unwrap_or(0);
            (name.as_str(), calls.saturating_sub(was))
        })
        .filter(|(_, calls)| *calls > 0)
        .collect();
    let commands: u64 = by_command.values().sum();
    let memory = after.used_memory as f64 - before.used_memory as f64;
    json!({
        "events_key": events_key,
        "events_stored": stored,
        "commands": commands,
        "commands_per_event": per_event(commands as f64),
        "commands_per_event_by_name": by_command
            .iter()
            .map(|(name, calls)| (name.to_string(), json!(per_event(*calls as f64))))
            .collect::<serde_json::Map<_, _>>(),
        "used_memory_before": before.used_memory,
        "used_memory_after": after.used_memory,
        "memory_bytes_per_event": per_event(memory),
    })
}
