//! The key layout (see the module docs of `store`) and the scripts that change keys
//! atomically: every script touches the keys of one slot.

use std::sync::LazyLock;

use hookline_proto::prost::Message as _;
use hookline_proto::v1;
use redis::{Script, Value};

use super::stored::Stored;
use crate::contact::{ContactId, Identifier};
use crate::error::Error;

/// The layout version this code reads and writes (see `schema.rs`).
pub(super) const SCHEMA: &str = "hl:schema";

/// Contacts as they are created: a stream, one entry per batch that created any.
pub(super) const CONTACTS: &str = "hl:contacts:new";

/// The webhook log: a stream, one entry per batch, trimmed by the log's retention.
pub(super) const EVENTS: &str = "hl:events:log";

pub(super) fn event_key(id: impl std::fmt::Display) -> String {
    format!("hl:ev:{{{id}}}")
}

/// The event id an [`event_key`] names.
fn event_id_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("hl:ev:{")?.strip_suffix('}')
}

/// The lock a replay of record `id` holds while it applies the event: in the record's
/// slot, beside it, so that the record itself stays as it is until the replay is done.
pub(super) fn replay_lock_key(id: impl std::fmt::Display) -> String {
    format!("hl:rp:{{{id}}}")
}

pub(super) fn contact_key(id: impl std::fmt::Display) -> String {
    format!("hl:c:{{{id}}}")
}

pub(super) fn index_key(ident: &Identifier) -> String {
    match ident {
        Identifier::External { system, id } => format!("hl:idx:ext:{system}:{id}"),
        Identifier::PaymentRef(r) => format!("hl:idx:pay:{r}"),
        Identifier::Email(e) => format!("hl:idx:email:{e}"),
        Identifier::Phone(p) => format!("hl:idx:phone:{p}"),
    }
}

/// The index key of `ident` as logs and errors may show it: emails and phones masked.
pub(super) fn masked_index_key(ident: &Identifier) -> String {
    format!("hl:idx:{}", ident.masked())
}

/// A Lua script of one slot's keys.
pub(super) struct Lua {
    source: &'static str,
    hash: String,
}

impl Lua {
    pub(super) fn new(source: &'static str) -> Self {
        Self {
            hash: Script::new(source).get_hash().to_owned(),
            source,
        }
    }

    /// A call of the script; add its keys, then its arguments.
    pub(super) fn call(&'static self) -> LuaCall {
        LuaCall {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script.
pub(super) struct LuaCall {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall {
    pub(super) fn key(mut self, key: impl redis::ToRedisArgs) -> Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(super) fn arg(mut self, arg: impl redis::ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// `EVALSHA` by the script's hash, the cheap way; `EVAL` of its source when Redis has
    /// forgotten it, which cannot fail for that reason again.
    pub(super) fn cmd(&self, by_source: bool) -> redis::Cmd {
        let mut cmd = if by_source {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(self.lua.source);
            cmd
        } else {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&self.lua.hash);
            cmd
        };
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    /// Runs the call: by hash, and by source when Redis has lost its scripts (a restart
    /// or failover empties the cache, maybe again between a reload and its use).
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut super::conn::Conn,
    ) -> redis::RedisResult<T> {
        match self.cmd(false).query_async(conn).await {
            Err(e) if is_noscript(&e) => self.cmd(true).query_async(conn).await,
            other => other,
        }
    }
}

/// Whether Redis answered that it does not know a script.
pub(super) fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Writes a contact if its version (see `stored.rs`) is still the one read: new data,
/// or a redirect to the contact that absorbed it. A contact not written yet is written
/// with `SET … NX` instead, without a script.
pub(super) static CAS_CONTACT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local cur = redis.call('GET', KEYS[1])
if (cur and string.sub(cur, 2, 17) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Deletes a key if it still holds the given value (releases a lease).
pub(super) static DELETE_IF: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Deletes a key if it holds any of the given values (an index entry that still names an
/// erased contact or one merged into it).
pub(super) static DELETE_IF_ANY: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
for _, v in ipairs(ARGV) do
  if cur == v then return redis.call('DEL', KEYS[1]) end
end
return 0
",
    )
});

/// Replaces a key's value if it still holds the one read, keeping its time to live (an
/// event record stripped by an erasure: a new delivery may have taken the key since).
pub(super) static REWRITE_IF: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
",
    )
});

/// Points an index entry at another contact if it still names the old one.
pub(super) static REPOINT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
",
    )
});

/// `SET NX` of one index entry (a nil reply: another contact holds it).
pub(super) fn claim(ident: &Identifier, owner: &ContactId) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(index_key(ident)).arg(owner.as_str()).arg("NX");
    cmd
}

/// One entry of the listing of new contacts naming each of `ids`.
pub(super) fn list_new<'a>(ids: impl Iterator<Item = &'a ContactId>) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(CONTACTS).arg("*");
    for id in ids {
        cmd.arg(id.as_str()).arg("");
    }
    cmd
}

/// One `MGET` of the index entries of `idents` (a cluster client splits it by slot).
pub(super) fn index_read(idents: &[Identifier]) -> redis::Cmd {
    let mut cmd = redis::cmd("MGET");
    for ident in idents {
        cmd.arg(index_key(ident));
    }
    cmd
}

/// The reply of [`index_read`], as contact ids.
pub(super) fn pointer_ids(
    idents: &[Identifier],
    reply: Value,
) -> Result<Vec<Option<ContactId>>, Error> {
    let values: Vec<Value> = match reply {
        Value::Array(values) if values.len() == idents.len() => values,
        _ => {
            return Err(Error::Corrupt {
                key: idents.first().map(masked_index_key).unwrap_or_default(),
                reason: "MGET answered something other than one value per key".to_owned(),
            });
        }
    };
    values
        .into_iter()
        .zip(idents)
        .map(|(v, ident)| {
            let corrupt = |reason: &str| Error::Corrupt {
                key: masked_index_key(ident),
                reason: reason.to_owned(),
            };
            let s: Option<String> =
                redis::from_redis_value(v).map_err(|_| corrupt("not a string"))?;
            s.map(|s| ContactId::parse(&s).map_err(|_| corrupt("not a contact id")))
                .transpose()
        })
        .collect()
}

pub(super) fn decode_contact(key: &str, bytes: &[u8]) -> Result<Stored, Error> {
    Stored::decode(bytes).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.0,
    })
}

pub(super) fn decode_record(key: &str, bytes: &[u8]) -> Result<v1::EventRecord, Error> {
    let mut record = v1::EventRecord::decode(bytes).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    // A record under its own id leaves the id to its key ([`record_value`]).
    if record.event_id.is_empty() {
        record.event_id = event_id_of_key(key).unwrap_or_default().to_owned();
    }
    Ok(record)
}

/// What an event key says once its event is done: the record, and the webhook log entry
/// that lists it when the record was written knowing it.
#[derive(Debug, PartialEq)]
pub(super) struct Done {
    pub(super) record: v1::EventRecord,
    /// The id of the `hl:events:log` entry that lists the event. A listing shows the
    /// record only there: an earlier entry of an attempt that failed after logging it
    /// (its replicas did not confirm the log in time) names it too.
    pub(super) log_entry: Option<String>,
}

/// The done marker an event key's value holds (see [`record_value`]); `None` for a
/// lease, which is not one.
pub(super) fn decode_done(key: &str, value: &[u8]) -> Option<Result<Done, Error>> {
    let (log_entry, bytes) = match value {
        [b'D', rest @ ..] => (None, rest),
        [b'W', rest @ ..] => {
            let Some(space) = rest.iter().position(|&b| b == b' ') else {
                return Some(Err(Error::Corrupt {
                    key: key.to_owned(),
                    reason: "a done marker names its log entry without ending it".to_owned(),
                }));
            };
            let entry = String::from_utf8_lossy(&rest[..space]).into_owned();
            (Some(entry), &rest[space + 1..])
        }
        _ => return None,
    };
    Some(decode_record(key, bytes).map(|record| Done { record, log_entry }))
}

/// The value of the event key of `id` that says what became of the event `record`
/// describes: `D` and the record, without the event id when it is `id` (the key names
/// it; decoding restores it), which saves about 35 bytes per event. When the webhook
/// log entry listing the event is known (it was written and confirmed by the replicas
/// first), `W`, the entry's id and a space come before the record instead of `D`.
/// The id is taken out for the encoding and put back, so that an ignored event's body
/// is not copied.
pub(super) fn record_value(
    record: &mut v1::EventRecord,
    id: &str,
    log_entry: Option<&str>,
) -> Vec<u8> {
    let own = record.event_id == id;
    let event_id = if own {
        std::mem::take(&mut record.event_id)
    } else {
        String::new()
    };
    let entry_len = log_entry.map_or(0, |e| e.len() + 1);
    let mut value = Vec::with_capacity(1 + entry_len + record.encoded_len());
    match log_entry {
        Some(entry) => {
            value.push(b'W');
            value.extend_from_slice(entry.as_bytes());
            value.push(b' ');
        }
        None => value.push(b'D'),
    }
    // A Vec grows as needed, so encoding into it cannot run out of room.
    let _ = record.encode(&mut value);
    if own {
        record.event_id = event_id;
    }
    value
}

/// Creation time of a contact, from its UUID v7.
pub(super) fn created_millis(id: &ContactId) -> i64 {
    id.as_str()
        .get(3..15)
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> v1::EventRecord {
        v1::EventRecord {
            event_id: id.to_owned(),
            source: "stripe".to_owned(),
            contact_id: "ct_0190f0e0c0a07000800000000000000a".to_owned(),
            body: b"{\"id\":\"kept\"}".to_vec(),
            ..v1::EventRecord::default()
        }
    }

    #[test]
    fn an_event_record_leaves_its_id_to_its_key_and_reads_back_whole() {
        let id = "stripe:evt_1Q2w3E4r5T6y7U8i";
        let mut own = record(id);
        let value = record_value(&mut own, id, None);
        assert_eq!(own, record(id), "the record is given back as it was");
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains("evt_1Q2w"), "{text}");
        assert_eq!(
            decode_record(&event_key(id), &value[1..]).ok(),
            Some(record(id))
        );

        // Under the key of a delivery window, the record names the occurrence it
        // belongs to; records written before this layout named themselves too.
        let window = id;
        let occurrence = "stripe:evt_1Q2w3E4r5T6y7U8i#sha256:ab12";
        let mut other = record(occurrence);
        let value = record_value(&mut other, window, None);
        assert_eq!(
            decode_record(&event_key(window), &value[1..]).ok(),
            Some(record(occurrence))
        );
        let old = record(id).encode_to_vec();
        assert_eq!(decode_record(&event_key(id), &old).ok(), Some(record(id)));
    }

    #[test]
    fn a_done_marker_reads_back_with_the_log_entry_it_names() {
        let id = "stripe:evt_1Q2w3E4r5T6y7U8i";
        let key = event_key(id);
        let done = |value: &[u8]| decode_done(&key, value).map(|d| d.map_err(|e| e.to_string()));
        let cases: [(Option<&str>, Option<&str>); 2] = [
            (None, None),
            (Some("1733356800000-3"), Some("1733356800000-3")),
        ];
        for (written, read) in cases {
            let value = record_value(&mut record(id), id, written);
            assert_eq!(
                done(&value),
                Some(Ok(Done {
                    record: record(id),
                    log_entry: read.map(str::to_owned),
                })),
                "{written:?}"
            );
        }
        // A lease is not a done marker; a marker cut short is corrupt, not a lease.
        assert_eq!(done(b"L0123456789abcdef"), None);
        assert!(matches!(done(b"W1733356800000-3"), Some(Err(_))));
    }
}
