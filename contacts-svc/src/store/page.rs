//! Paging newest first over the listings, which are Redis streams of one entry per
//! batch, each entry naming several items (a field per item, its value beside it).
//! The cursor is the place of the last item returned: its entry and its field's index.

use redis::Value;

use super::Store;
use crate::error::Error;

/// Position in a listing, newest first: the last item returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// In a stream listing: the item's entry and its field's index.
    Stream(At),
    /// In a contact's log: the item's receipt time and record id.
    Log { at: i64, member: String },
}

/// The place of an item of a stream listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    /// The stream entry's id, `<ms>-<seq>`.
    pub entry: String,
    /// The item's index among the entry's fields.
    pub index: usize,
}

impl Cursor {
    pub fn encode(&self) -> String {
        match self {
            Self::Stream(at) => format!("s{}.{}", at.entry, at.index),
            Self::Log { at, member } => format!("l{at}:{member}"),
        }
    }

    pub fn decode(s: &str) -> Result<Option<Self>, Error> {
        if s.is_empty() {
            return Ok(None);
        }
        let bad = || Error::invalid("page_token", "is not a token this service issued");
        if let Some(log) = s.strip_prefix('l') {
            let (at, member) = log.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Self::Log {
                at: at.parse().map_err(|_| bad())?,
                member: member.to_owned(),
            }));
        }
        let stream = s.strip_prefix('s').ok_or_else(bad)?;
        let (entry, index) = stream.rsplit_once('.').ok_or_else(bad)?;
        let (ms, seq) = entry.split_once('-').ok_or_else(bad)?;
        if ms.parse::<u64>().is_err() || seq.parse::<u64>().is_err() {
            return Err(bad());
        }
        Ok(Some(Self::Stream(At {
            entry: entry.to_owned(),
            index: index.parse().map_err(|_| bad())?,
        })))
    }

    /// The place in a stream listing; a token of another listing is refused.
    pub(super) fn stream(this: Option<Self>) -> Result<Option<At>, Error> {
        match this {
            None => Ok(None),
            Some(Self::Stream(at)) => Ok(Some(at)),
            Some(Self::Log { .. }) => Err(Error::invalid(
                "page_token",
                "belongs to the listing of one contact's events",
            )),
        }
    }

    /// The place in a contact's log; a token of another listing is refused.
    pub(super) fn log(this: Option<Self>) -> Result<Option<(i64, String)>, Error> {
        match this {
            None => Ok(None),
            Some(Self::Log { at, member }) => Ok(Some((at, member))),
            Some(Self::Stream(_)) => Err(Error::invalid(
                "page_token",
                "belongs to another listing than this contact's events",
            )),
        }
    }
}

impl At {
    /// Whether an item at `entry`/`index` comes after this place, newest first.
    fn before(&self, entry: &str, index: usize) -> bool {
        match stream_order(entry, &self.entry) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => index < self.index,
            std::cmp::Ordering::Greater => false,
        }
    }
}

/// Stream ids compared as Redis orders them (`<ms>-<seq>`, numerically).
fn stream_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parts(a).cmp(&parts(b))
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// An item of a listing: where it is, its name (a contact or record id) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) at: At,
    pub(super) member: String,
    pub(super) value: String,
}

/// Items examined per listing call, whatever the filter, to bound its cost.
pub(super) const SCAN_BUDGET: usize = 2000;
/// Most encoded bytes of event records in one page (an ignored event carries its raw
/// body): under the 4 MiB a gRPC client takes by default. A page holds at least one.
pub(super) const PAGE_BYTES: usize = 3 * 1024 * 1024;

/// A stream entry: its id and its field-value pairs.
pub(super) type Entry = (String, Vec<(String, String)>);

/// The items of `XREVRANGE` entries, newest first, after `after`.
pub(super) fn items(entries: Vec<Entry>, after: Option<&At>) -> Vec<Item> {
    let mut out = Vec::new();
    for (entry, fields) in entries {
        for (index, (member, value)) in fields.into_iter().enumerate().rev() {
            if after.is_none_or(|a| a.before(&entry, index)) {
                out.push(Item {
                    at: At {
                        entry: entry.clone(),
                        index,
                    },
                    member,
                    value,
                });
            }
        }
    }
    out
}

/// Gathers one page from a listing, newest first: up to `limit` items and
/// [`PAGE_BYTES`] of them by `weigh`, or fewer after examining [`SCAN_BUDGET`] items
/// (a rarely matching filter returns a short page with a token to go on).
pub(super) struct Pager<T> {
    key: &'static str,
    /// The last item examined (the cursor given, at first).
    after: Option<At>,
    /// The last item taken or skipped for good: where the next page starts.
    last: Option<At>,
    limit: usize,
    /// Stream entries read per round trip.
    chunk: usize,
    weigh: fn(&T) -> usize,
    bytes: usize,
    examined: usize,
    items: Vec<T>,
    done: bool,
}

impl<T> Pager<T> {
    /// A pager whose items are small: weighed as nothing.
    pub(super) fn new(key: &'static str, after: Option<At>, limit: usize) -> Self {
        Self::weighed(key, after, limit, 16, |_| 0)
    }

    /// A pager whose items may be large: read `chunk` entries at a time, and `weigh`ed.
    pub(super) fn weighed(
        key: &'static str,
        after: Option<At>,
        limit: usize,
        chunk: usize,
        weigh: fn(&T) -> usize,
    ) -> Self {
        Self {
            key,
            last: after.clone(),
            after,
            limit,
            chunk,
            weigh,
            bytes: 0,
            examined: 0,
            items: Vec::new(),
            done: false,
        }
    }

    fn full(&self) -> bool {
        self.items.len() >= self.limit || self.bytes >= PAGE_BYTES
    }

    /// The next items to turn into page items, or `None` when the page is complete.
    pub(super) async fn next_batch(&mut self, store: &Store) -> Result<Option<Vec<Item>>, Error> {
        if self.done || self.full() || self.examined >= SCAN_BUDGET {
            return Ok(None);
        }
        let mut c = store.conn.clone();
        // The cursor's own entry is read again while items of it come after the cursor.
        let end = match &self.after {
            None => "+".to_owned(),
            Some(a) if a.index == 0 => format!("({}", a.entry),
            Some(a) => a.entry.clone(),
        };
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(self.key)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(self.chunk)
            .query_async(&mut c)
            .await?;
        let batch = items(entries(self.key, reply)?, self.after.as_ref());
        // Every entry names at least one item, and the read starts at one after the
        // cursor: nothing read means the end of the listing.
        let Some(last) = batch.last() else {
            self.done = true;
            return Ok(None);
        };
        self.after = Some(last.at.clone());
        self.last = Some(last.at.clone());
        self.examined += batch.len();
        Ok(Some(batch))
    }

    /// Adds the page items made of `batch` (`None`: not listed), up to the limit.
    pub(super) fn take(&mut self, batch: &[Item], items: Vec<Option<T>>) {
        for (i, item) in items.into_iter().enumerate() {
            if let Some(item) = item {
                // The first item always fits: a page is never empty for its size alone.
                let weight = (self.weigh)(&item);
                if !self.items.is_empty() && self.bytes.saturating_add(weight) > PAGE_BYTES {
                    self.bytes = PAGE_BYTES;
                    self.rewind_to_before(batch, i);
                    return;
                }
                self.bytes = self.bytes.saturating_add(weight);
                self.items.push(item);
                if self.full() {
                    self.last = batch.get(i).map(|b| b.at.clone());
                    return;
                }
            }
        }
    }

    /// Resume at item `i` of `batch`: just above it, so that it comes first.
    fn rewind_to_before(&mut self, batch: &[Item], i: usize) {
        if let Some(item) = batch.get(i) {
            self.last = Some(At {
                entry: item.at.entry.clone(),
                index: item.at.index + 1,
            });
        }
    }

    pub(super) fn finish(self) -> Page<T> {
        Page {
            items: self.items,
            next: if self.done {
                None
            } else {
                self.last.map(Cursor::Stream)
            },
        }
    }
}

/// The entries of an `XREVRANGE` reply: their ids and field-value pairs.
fn entries(key: &str, reply: Value) -> Result<Vec<Entry>, Error> {
    let corrupt = |reason: &str| Error::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed: Vec<(String, Vec<String>)> =
        redis::from_redis_value(reply).map_err(|_| corrupt("not a stream of strings"))?;
    parsed
        .into_iter()
        .map(|(id, flat)| {
            if flat.len() % 2 != 0 {
                return Err(corrupt("an entry has a field without a value"));
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(f), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((f, v));
            }
            Ok((id, pairs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(entry: &str, index: usize) -> At {
        At {
            entry: entry.to_owned(),
            index,
        }
    }

    #[test]
    fn tokens_read_back_and_foreign_ones_are_refused() {
        for c in [
            Cursor::Stream(at("1700000000000-3", 12)),
            Cursor::Log {
                at: 1_700_000_000_000,
                member: "stripe:evt_1".to_owned(),
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), Some(c));
        }
        assert_eq!(Cursor::decode("").unwrap(), None);
        // The last is a token of the previous layout: its listings are gone.
        for bad in [
            "s17:abc",
            "s1700-0",
            "sx-1.2",
            "s1-y.2",
            "s1-2.z",
            "lx:a",
            "1700000000000:ct_1",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
        let stream = Cursor::Stream(at("1-0", 0));
        assert!(Cursor::log(Some(stream.clone())).is_err());
        assert!(Cursor::stream(Some(stream)).is_ok());
    }

    #[test]
    fn items_come_newest_first_and_resume_after_the_cursor() {
        let entries = || {
            vec![
                (
                    "20-0".to_owned(),
                    vec![
                        ("c".to_owned(), "3".to_owned()),
                        ("d".to_owned(), "4".to_owned()),
                    ],
                ),
                (
                    "10-1".to_owned(),
                    vec![
                        ("a".to_owned(), "1".to_owned()),
                        ("b".to_owned(), "2".to_owned()),
                    ],
                ),
            ]
        };
        let names = |after: Option<At>| -> Vec<String> {
            items(entries(), after.as_ref())
                .into_iter()
                .map(|i| i.member)
                .collect()
        };
        assert_eq!(names(None), ["d", "c", "b", "a"]);
        assert_eq!(names(Some(at("20-0", 1))), ["c", "b", "a"]);
        assert_eq!(names(Some(at("20-0", 0))), ["b", "a"]);
        assert_eq!(names(Some(at("10-1", 1))), ["a"]);
        assert_eq!(names(Some(at("10-1", 0))), Vec::<String>::new());
        // Numeric, not textual, order of ids: 9-5 is older than 10-1.
        assert_eq!(names(Some(at("9-5", 0))), Vec::<String>::new());
        assert!(at("10-1", 0).before("9-5", 7));
    }
}
