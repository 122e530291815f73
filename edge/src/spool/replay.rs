//! The replayer: a background task that drains the spool into contacts-svc, oldest
//! entry first, and removes an entry only once contacts-svc answered applied, duplicate
//! or ignored for it. Nothing is verified again: the edge verified each entry before it
//! spooled it.
//!
//! It goes a page at a time and waits for a page's answers before the next, so it never
//! holds more than a page of contacts-svc's attention and live deliveries keep the rest.
//! When contacts-svc cannot take events (it does not answer, or a whole page is told
//! "later" while its health says it is not serving: Redis is down) the pass stops and
//! the next waits, the wait doubling up to a cap, with jitter so that edges restarted
//! together do not retry together. Applying is independent of order, so an entry that
//! waits on its own (one contacts-svc rejects or cannot apply yet, one held by an
//! in-flight attempt, one that cannot be read) is passed over, and holds up none behind
//! it; the next pass tries it again.

use std::collections::HashSet;
use std::time::Duration;

use hookline_proto::v1;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Entry, Spool};
use crate::contacts::{Contacts, Verdict};
use crate::metrics::ReplayOutcomes;

/// Entries sent to contacts-svc at once.
const PAGE: usize = 64;
/// The first wait after a pass that could not finish.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// The longest wait between passes.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Drains `spool` until `stop` turns true.
pub async fn run(
    spool: Spool,
    contacts: Contacts,
    outcomes: ReplayOutcomes,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    // Unreadable entries already reported, so that each is logged once.
    let mut reported = HashSet::new();
    loop {
        while spool.stats().entries() == 0 {
            tokio::select! {
                () = spool.added() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        // Stopping abandons a pass at once: what it sent and did not hear back about
        // stays in the spool, and applying again is a duplicate.
        let passed = tokio::select! {
            passed = pass(&spool, &contacts, &outcomes, &mut reported) => passed,
            _ = stop.wait_for(|s| *s) => return,
        };
        match passed {
            Pass::Drained => backoff.reset(),
            Pass::Stalled(why) => {
                let wait = backoff.next(random());
                tracing::info!(
                    spooled = spool.stats().entries(),
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    reason = %why,
                    "spool replay paused"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// How a pass over the spool ended.
#[derive(Debug)]
enum Pass {
    /// Every entry it saw was answered for and removed.
    Drained,
    /// Something is left that a later pass must try again.
    Stalled(String),
}

/// One pass over the spool, oldest first.
async fn pass(
    spool: &Spool,
    contacts: &Contacts,
    outcomes: &ReplayOutcomes,
    reported: &mut HashSet<u64>,
) -> Pass {
    let mut after = None;
    let mut left: Option<String> = None;
    loop {
        let page = match spool.page(after, PAGE).await {
            Ok(p) => p,
            Err(e) => return Pass::Stalled(e.to_string()),
        };
        let Some((last, _)) = page.last() else {
            return left.map_or(Pass::Drained, Pass::Stalled);
        };
        after = Some(*last);
        let mut calls = JoinSet::new();
        for (key, entry) in page {
            match entry {
                Ok(entry) => {
                    let contacts = contacts.clone();
                    calls.spawn(async move { (key, replay_one(&contacts, entry).await) });
                }
                Err(e) => {
                    // Kept, never dropped: a later edge may read it. Operators see it
                    // in the log and in the spool's depth.
                    // Said once per entry, not on every pass; counted every time.
                    if reported.insert(key) {
                        tracing::error!(key, error = %e, "spooled entry cannot be read, kept");
                    }
                    outcomes.count("unreadable");
                    left = Some(format!("entry {key} cannot be read"));
                }
            }
        }
        let sent = calls.len();
        let mut done = Vec::new();
        let mut unreachable = None;
        let mut later = 0;
        while let Some(joined) = calls.join_next().await {
            let (key, verdict) = match joined {
                Ok(answer) => answer,
                Err(e) => {
                    left = Some(format!("a replay task failed: {e}"));
                    continue;
                }
            };
            match verdict {
                Verdict::Done(outcome, _) => {
                    outcomes.count(outcome);
                    done.push(key);
                }
                Verdict::Unreachable(why) => {
                    outcomes.count("retry_later");
                    unreachable = Some(why);
                }
                Verdict::Later(why) => {
                    outcomes.count("retry_later");
                    later += 1;
                    left = Some(why);
                }
                Verdict::Rejected(why) => {
                    tracing::error!(key, reason = %why, "contacts-svc rejected a spooled event, kept");
                    outcomes.count("rejected");
                    left = Some(format!("rejected: {why}"));
                }
                Verdict::NeedsBody => {
                    outcomes.count("retry_later");
                    left = Some("contacts-svc asked for a body it was sent".into());
                }
            }
        }
        if let Err(e) = spool.remove(done).await {
            return Pass::Stalled(e.to_string());
        }
        // contacts-svc cannot take events: the rest of the pass would fail too. A page
        // told "later" throughout is that too while contacts-svc says it is not serving
        // (Redis down); while it serves, those entries wait on their own.
        if let Some(why) = unreachable {
            return Pass::Stalled(why);
        }
        if sent > 0 && later == sent && !contacts.ready().await {
            return Pass::Stalled(left.unwrap_or_default());
        }
    }
}

/// Sends one entry, with its raw body when contacts-svc asks for it.
async fn replay_one(contacts: &Contacts, entry: Entry) -> Verdict {
    let item = entry.item.clone();
    match Verdict::of(contacts.apply_item(item).await) {
        Verdict::NeedsBody => {
            let item = v1::ApplyEventsItem {
                event: Some(entry.event_with_body()),
                ..entry.item
            };
            Verdict::of(contacts.apply_item(item).await)
        }
        other => other,
    }
}

/// Capped exponential backoff with jitter: each wait is drawn from the upper half of a
/// window that doubles from `base` up to `cap`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    window: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            window: base,
        }
    }

    /// The next wait, `random` choosing where in the window's upper half it falls.
    pub fn next(&mut self, random: u64) -> Duration {
        let window = self.window;
        self.window = (self.window * 2).min(self.cap);
        let half = window / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(random % spread)
    }

    pub fn reset(&mut self) {
        self.window = self.base;
    }
}

/// A random number, from the standard library's per-process random hash keys.
fn random() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_with_jitter_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(200), ms(1000));
        // (random, wait): the upper half of 200, 400, 800, then 1000 ms for good.
        let table = [
            (0, ms(100)),
            (
                u64::MAX,
                ms(200) + Duration::from_micros(u64::MAX % 200_000),
            ),
            (0, ms(400)),
            (0, ms(500)),
            (0, ms(500)),
        ];
        for (random, want) in table {
            assert_eq!(b.next(random), want);
        }
        b.reset();
        assert_eq!(b.next(0), ms(100));
        for _ in 0..100 {
            let w = b.next(random());
            assert!(w >= ms(100) && w <= ms(1000), "{w:?}");
        }
    }
}
