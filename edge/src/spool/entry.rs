//! One spooled event as the spool stores it: a format byte, when it was spooled, the
//! `ApplyEventsItem` (the verified, normalized event with its request's correlation ids)
//! and the raw body, kept so that contacts-svc can record the event whole if it turns
//! out not to apply. The layout is the edge's own; the format byte lets a later edge
//! read what an earlier one wrote.

use bytes::Bytes;
use hookline_proto::prost::Message as _;
use hookline_proto::v1;

/// The layout written today.
const FORMAT: u8 = 1;
/// Format byte, spooled-at milliseconds, length of the item.
const HEADER: usize = 1 + 8 + 4;

/// A verified event waiting for contacts-svc.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// When the edge spooled it, Unix milliseconds.
    pub spooled_at_ms: i64,
    /// The event and its request's correlation ids, as the live call would send them.
    pub item: v1::ApplyEventsItem,
    /// The delivery's raw body, unless the event already carries it (`raw_body`).
    pub body: Option<Bytes>,
}

/// Why stored bytes are not an entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("entry format {0} is not one this edge reads (it reads {FORMAT})")]
    Format(u8),
    #[error("entry item length {0} runs past the entry")]
    Length(usize),
    #[error("entry item is not an ApplyEventsItem: {0}")]
    Item(String),
}

impl Entry {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let item_len = self.item.encoded_len();
        let body = self.body.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + item_len + body.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.spooled_at_ms.to_le_bytes());
        // An item is bounded by the largest body (64 MiB) and its envelope.
        out.extend_from_slice(&u32::try_from(item_len).unwrap_or(u32::MAX).to_le_bytes());
        // A Vec grows as needed, so encoding into it cannot run out of room.
        let _ = self.item.encode(&mut out);
        out.extend_from_slice(body);
        out
    }

    /// Reads stored bytes. An empty remainder after the item is "no body of its own":
    /// an empty body is recorded by the event's `raw_body`, which is set for it.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER {
            return Err(DecodeError::Short(bytes.len()));
        }
        if bytes[0] != FORMAT {
            return Err(DecodeError::Format(bytes[0]));
        }
        let mut at = [0; 8];
        at.copy_from_slice(&bytes[1..9]);
        let mut len = [0; 4];
        len.copy_from_slice(&bytes[9..HEADER]);
        let item_len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
        let rest = &bytes[HEADER..];
        if item_len > rest.len() {
            return Err(DecodeError::Length(item_len));
        }
        let (item, body) = rest.split_at(item_len);
        let item =
            v1::ApplyEventsItem::decode(item).map_err(|e| DecodeError::Item(e.to_string()))?;
        Ok(Self {
            spooled_at_ms: i64::from_le_bytes(at),
            item,
            body: (!body.is_empty()).then(|| Bytes::copy_from_slice(body)),
        })
    }

    /// The spooled-at time of stored bytes, without decoding the rest.
    pub fn spooled_at(bytes: &[u8]) -> Option<i64> {
        let at: [u8; 8] = bytes.get(1..9)?.try_into().ok()?;
        (bytes.first() == Some(&FORMAT)).then(|| i64::from_le_bytes(at))
    }

    /// The event with its raw body, for contacts-svc to record whole when it will not
    /// apply it.
    pub fn event_with_body(&self) -> v1::WebhookEvent {
        let mut event = self.item.event.clone().unwrap_or_default();
        if event.raw_body.is_none() {
            event.raw_body = Some(self.body.as_deref().unwrap_or_default().to_vec());
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: Option<&'static [u8]>, raw_body: Option<Vec<u8>>) -> Entry {
        Entry {
            spooled_at_ms: 1_764_000_000_123,
            item: v1::ApplyEventsItem {
                event: Some(v1::WebhookEvent {
                    id: "stripe:evt_1".into(),
                    source: "stripe".into(),
                    r#type: "checkout.session.completed".into(),
                    raw_body,
                    ..Default::default()
                }),
                request_id: "req-1".into(),
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                replay_of: String::new(),
            },
            body: body.map(Bytes::from_static),
        }
    }

    #[test]
    fn entries_read_back_as_written() {
        for e in [
            entry(Some(b"{\"id\":\"evt_1\"}"), None),
            entry(None, Some(b"not json".to_vec())),
            entry(None, Some(Vec::new())),
            entry(None, None),
        ] {
            assert_eq!(Entry::decode(&e.encode()), Ok(e.clone()));
            assert_eq!(Entry::spooled_at(&e.encode()), Some(e.spooled_at_ms));
        }
    }

    #[test]
    fn the_body_travels_with_the_event_when_asked_for() {
        let with_own = entry(Some(b"{}"), None).event_with_body();
        assert_eq!(with_own.raw_body.as_deref(), Some(&b"{}"[..]));
        let carried = entry(None, Some(b"x".to_vec())).event_with_body();
        assert_eq!(carried.raw_body.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let good = entry(Some(b"{}"), None).encode();
        let mut other_format = good.clone();
        other_format[0] = 9;
        let mut long_item = good.clone();
        long_item[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut bad_item = good.clone();
        bad_item[HEADER] = 0xff;
        type Check = fn(&DecodeError) -> bool;
        let cases: [(&[u8], Check); 5] = [
            (&[], |e| matches!(e, DecodeError::Short(0))),
            (&good[..5], |e| matches!(e, DecodeError::Short(5))),
            (&other_format, |e| matches!(e, DecodeError::Format(9))),
            (&long_item, |e| matches!(e, DecodeError::Length(_))),
            (&bad_item, |e| matches!(e, DecodeError::Item(_))),
        ];
        for (bytes, want) in cases {
            let got = Entry::decode(bytes).expect_err("damaged");
            assert!(want(&got), "{got:?}");
        }
    }
}
