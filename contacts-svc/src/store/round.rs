//! One round trip for what the events of a batch send together. While a batch's events
//! are polled, the commands each sends through [`Store::round_trip`] join the round's;
//! once every event has been polled, the round goes to Redis as one pipeline, led by one
//! `XADD` listing every new contact in it, and each event gets its own replies. The
//! first writes of eight new contacts then cost one write to the socket, one read for
//! Redis and one listing entry, instead of eight of each.
//!
//! Outside a batch (reads, a single call) a round trip is a pipeline of its own.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use redis::Value;
use tokio::sync::oneshot;

use super::Store;
use super::keys::list_new;
use crate::contact::ContactId;

tokio::task_local! {
    /// The round of the batch whose events this task is polling.
    static ROUND: Round;
}

/// The replies to one caller's commands, in order; a command Redis refused replies
/// [`Value::ServerError`], and a connection failure fails them all.
pub(super) type Replies = redis::RedisResult<Vec<Value>>;

/// One caller's part of a round.
struct Part {
    cmds: Vec<redis::Cmd>,
    list: Option<ContactId>,
    reply: oneshot::Sender<Replies>,
}

/// What the events of a batch have sent since the round was last flushed. Only the task
/// that polls them touches it.
#[derive(Default)]
struct Round {
    parts: RefCell<Vec<Part>>,
}

/// The pipeline of `parts`: one `XADD` listing the contacts they create (its reply is
/// not theirs), then the commands of each. A contact is listed before it is written, so a
/// crash cannot leave it unlisted (listings skip contacts not written yet).
fn pipeline<'a>(
    listed: impl Iterator<Item = &'a ContactId>,
    cmds: impl Iterator<Item = redis::Cmd>,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut listed = listed.peekable();
    if listed.peek().is_some() {
        pipe.add_command(list_new(listed)).ignore();
    }
    for cmd in cmds {
        pipe.add_command(cmd);
    }
    pipe
}

impl Store {
    /// Sends `cmds` (listing `list` first as a new contact) with the other events of the
    /// batch being polled, or alone outside a batch.
    pub(super) async fn round_trip(
        &self,
        cmds: Vec<redis::Cmd>,
        list: Option<&ContactId>,
    ) -> Replies {
        if ROUND.try_with(|_| ()).is_err() {
            let mut c = self.conn.clone();
            return pipeline(list.into_iter(), cmds.into_iter())
                .query_async(&mut c)
                .await;
        }
        let (reply, replied) = oneshot::channel();
        let part = Part {
            cmds,
            list: list.cloned(),
            reply,
        };
        ROUND.with(|round| round.parts.borrow_mut().push(part));
        replied.await.unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the batch's round trip was dropped",
            )))
        })
    }

    /// Polls `events` (the events of one batch) so that the commands they send through
    /// [`Store::round_trip`] in one pass go to Redis as one pipeline.
    pub(super) async fn in_rounds<F: Future>(&self, events: F) -> F::Output {
        ROUND
            .scope(Round::default(), async {
                let mut events = pin!(events);
                let mut sending = FuturesUnordered::new();
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(out) = events.as_mut().poll(cx) {
                        return Poll::Ready(out);
                    }
                    let parts = ROUND.with(|round| round.parts.take());
                    if !parts.is_empty() {
                        sending.push(self.send_round(parts));
                    }
                    // A round that completes wakes the events waiting for it: this task
                    // is polled again.
                    while let Poll::Ready(Some(())) = sending.poll_next_unpin(cx) {}
                    Poll::Pending
                })
                .await
            })
            .await
    }

    async fn send_round(&self, parts: Vec<Part>) {
        let mut listed = Vec::new();
        let mut cmds = Vec::new();
        let mut waiting = Vec::with_capacity(parts.len());
        for part in parts {
            listed.extend(part.list);
            waiting.push((part.cmds.len(), part.reply));
            cmds.extend(part.cmds);
        }
        let mut c = self.conn.clone();
        match pipeline(listed.iter(), cmds.into_iter())
            .query_async::<Vec<Value>>(&mut c)
            .await
        {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for (len, reply) in waiting {
                    let _ = reply.send(Ok(replies.by_ref().take(len).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
