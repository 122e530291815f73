//! The task that keeps the balancer's contacts-svc endpoints in step with DNS: every
//! configured name is looked up at start and again on every refresh, its addresses are
//! tried, and the difference to what the balancer holds is sent to it as inserts and
//! removes (the rules are in `discovery.rs`). IP literals are inserted once.
//!
//! The task ends when the balancer is gone, that is once the last handle on the channel
//! (the `Contacts` handles and their dispatcher) is dropped.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::transport::channel::Change;

use super::discovery::{self, Answer, Keep, Next, Step, Target};

/// How long one lookup may take before it counts as failed: a resolver that hangs must
/// not hold up the other names, nor the refreshes after it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint of the balancer: the index of its URL in the configuration, and the address.
pub type Key = (usize, SocketAddr);

/// Where the addresses of a name come from and whether an address takes connections:
/// DNS and TCP in the edge ([`SystemResolver`]), a script in tests.
pub trait Resolve: Send + Sync + 'static {
    /// Every address `host` resolves to, each with `port`.
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// Those of `addresses` that accept a TCP connection within `within`.
    fn accepting(
        &self,
        addresses: &BTreeSet<SocketAddr>,
        within: Duration,
    ) -> impl Future<Output = BTreeSet<SocketAddr>> + Send;
}

/// The system's resolver (`getaddrinfo`, through tokio) and a TCP connection to each
/// address.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    async fn accepting(
        &self,
        addresses: &BTreeSet<SocketAddr>,
        within: Duration,
    ) -> BTreeSet<SocketAddr> {
        // All at once: an address that drops connections silently costs `within`, once.
        let mut tries = tokio::task::JoinSet::new();
        for &address in addresses {
            tries.spawn(async move {
                let connected =
                    tokio::time::timeout(within, tokio::net::TcpStream::connect(address)).await;
                matches!(connected, Ok(Ok(_))).then_some(address)
            });
        }
        let mut accepting = BTreeSet::new();
        while let Some(tried) = tries.join_next().await {
            if let Ok(Some(address)) = tried {
                accepting.insert(address);
            }
        }
        accepting
    }
}

/// How the task builds and checks endpoints.
#[derive(Debug)]
pub struct Settings<E> {
    /// Every refresh after the first lookup.
    pub every: Duration,
    /// How long an address has to accept a connection (the endpoints' connect timeout).
    pub connect_timeout: Duration,
    /// The endpoint, with the edge's settings, that reaches a URI for a configured URL
    /// (whose host a TLS connection checks the certificate against).
    pub endpoint: E,
}

/// Sends `changes` to the balancer for `urls` until the balancer is gone.
pub async fn run<R, E>(
    urls: Vec<http::Uri>,
    settings: Settings<E>,
    resolver: R,
    changes: mpsc::Sender<Change<Key, Endpoint>>,
) where
    R: Resolve,
    E: Fn(http::Uri, &http::Uri) -> Endpoint,
{
    tokio::select! {
        () = changes.closed() => {}
        () = refresh(&urls, &settings, &resolver, &changes) => {}
    }
}

/// Inserts the IP literals, then looks the names up on every tick. Returns once a change
/// cannot be sent (the balancer is gone), or after the literals when there is no name.
async fn refresh<R, E>(
    urls: &[http::Uri],
    settings: &Settings<E>,
    resolver: &R,
    changes: &mpsc::Sender<Change<Key, Endpoint>>,
) where
    R: Resolve,
    E: Fn(http::Uri, &http::Uri) -> Endpoint,
{
    let targets: Vec<Target> = urls.iter().map(Target::of).collect();
    for (index, target) in targets.iter().enumerate() {
        if let Target::Fixed(address) = target {
            let endpoint = (settings.endpoint)(urls[index].clone(), &urls[index]);
            if changes
                .send(Change::Insert((index, *address), endpoint))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if !targets.iter().any(|t| matches!(t, Target::Name { .. })) {
        return;
    }
    let mut current: Vec<BTreeSet<SocketAddr>> = vec![BTreeSet::new(); urls.len()];
    let mut ticks = tokio::time::interval(settings.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for (index, target) in targets.iter().enumerate() {
            let Target::Name { host, port } = target else {
                continue;
            };
            let answer = ask(resolver, host, *port, settings.connect_timeout).await;
            let mut next = match discovery::next(&current[index], &answer) {
                Next::Use(next) => next,
                Next::Keep(why) => {
                    log_kept(host, &current[index], &why);
                    continue;
                }
            };
            if let Answer::Resolved { addresses, .. } = &answer {
                let refused: Vec<_> = addresses.difference(&next).collect();
                if !refused.is_empty() {
                    tracing::debug!(
                        host,
                        ?refused,
                        "contacts-svc addresses refusing connections left out"
                    );
                }
            }
            let steps = discovery::diff(&current[index], &next);
            if steps.is_empty() {
                continue;
            }
            tracing::info!(host, addresses = ?next, "contacts-svc addresses changed");
            for step in steps {
                let change = match step {
                    Step::Insert(address) => {
                        let Some(endpoint) = endpoint_for(settings, &urls[index], address) else {
                            // Not inserted, so not held: tried again on the next refresh.
                            next.remove(&address);
                            continue;
                        };
                        Change::Insert((index, address), endpoint)
                    }
                    Step::Remove(address) => Change::Remove((index, address)),
                };
                if changes.send(change).await.is_err() {
                    return;
                }
            }
            current[index] = next;
        }
    }
}

/// Looks `host` up and tries its addresses.
async fn ask<R: Resolve>(resolver: &R, host: &str, port: u16, within: Duration) -> Answer {
    let addresses = match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(host, port)).await {
        Ok(Ok(addresses)) => addresses.into_iter().collect::<BTreeSet<_>>(),
        Ok(Err(e)) => return Answer::Failed(e.to_string()),
        Err(_) => return Answer::Failed(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    };
    let accepting = resolver.accepting(&addresses, within).await;
    Answer::Resolved {
        addresses,
        accepting,
    }
}

/// The endpoint of `address` for `url`: the edge's settings, the address as URI and the
/// configured URL as origin (contacts-svc sees the name it was configured by).
fn endpoint_for<E: Fn(http::Uri, &http::Uri) -> Endpoint>(
    settings: &Settings<E>,
    url: &http::Uri,
    address: SocketAddr,
) -> Option<Endpoint> {
    match discovery::address_uri(url, address) {
        Ok(uri) => Some((settings.endpoint)(uri, url).origin(url.clone())),
        Err(e) => {
            tracing::error!(%address, error = %e, "contacts-svc address is not a valid uri, left out");
            None
        }
    }
}

fn log_kept(host: &str, current: &BTreeSet<SocketAddr>, why: &Keep) {
    match why {
        Keep::Failed(error) => {
            tracing::warn!(host, error = %error, kept = ?current, "contacts-svc name did not resolve, addresses kept");
        }
        Keep::Empty => {
            tracing::warn!(host, kept = ?current, "contacts-svc name resolved to no address, addresses kept");
        }
        Keep::NoneAccepts => {
            tracing::warn!(host, kept = ?current, "no contacts-svc address accepts connections, addresses kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;

    /// A lookup's scripted answer: the addresses, and those of them that refuse
    /// connections.
    type Scripted = Result<(Vec<&'static str>, Vec<&'static str>), &'static str>;

    /// Answers lookups from a script, one entry per lookup, then never again (the task
    /// gives up on them after `LOOKUP_TIMEOUT`); records when each lookup came.
    #[derive(Clone, Debug, Default)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Scripted>>>,
        refusing: Arc<Mutex<BTreeSet<SocketAddr>>>,
        asked_at: Arc<Mutex<Vec<Instant>>>,
    }

    impl Resolve for Script {
        async fn lookup(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            self.asked_at.lock().expect("lock").push(Instant::now());
            let answer = self.answers.lock().expect("lock").pop_front();
            match answer {
                Some(Ok((addresses, refusing))) => {
                    *self.refusing.lock().expect("lock") =
                        refusing.iter().map(|a| addr(a)).collect();
                    Ok(addresses.iter().map(|a| addr(a)).collect())
                }
                Some(Err(e)) => Err(io::Error::other(e)),
                None => std::future::pending().await,
            }
        }

        async fn accepting(
            &self,
            addresses: &BTreeSet<SocketAddr>,
            _within: Duration,
        ) -> BTreeSet<SocketAddr> {
            let refusing = self.refusing.lock().expect("lock").clone();
            addresses.difference(&refusing).copied().collect()
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    const EVERY: Duration = Duration::from_secs(30);

    /// The changes the task sends for `urls` while answering from `script`, as
    /// `+key uri` and `-key`, with the times of the lookups since the start.
    async fn changes_of(urls: &[&str], script: Vec<Scripted>) -> (Vec<String>, Vec<Duration>) {
        let resolver = Script {
            answers: Arc::new(Mutex::new(script.into())),
            ..Script::default()
        };
        let urls = urls.iter().map(|u| u.parse().expect("a URL")).collect();
        let settings = Settings {
            every: EVERY,
            connect_timeout: Duration::from_secs(1),
            endpoint: |uri: http::Uri, _: &http::Uri| Endpoint::from(uri),
        };
        let (tx, mut rx) = mpsc::channel(16);
        let start = Instant::now();
        let task = tokio::spawn(run(urls, settings, resolver.clone(), tx));
        let mut seen = Vec::new();
        // Time is paused: once the script is over, nothing happens and the clock jumps
        // to this deadline.
        while let Ok(Some(change)) = tokio::time::timeout(EVERY * 100, rx.recv()).await {
            seen.push(match change {
                Change::Insert((i, a), e) => format!("+{i} {a} {}", e.uri()),
                Change::Remove((i, a)) => format!("-{i} {a}"),
            });
        }
        // The balancer is gone: the task ends.
        drop(rx);
        tokio::time::timeout(EVERY, task)
            .await
            .expect("the task ends with the balancer")
            .expect("the task does not panic");
        let asked = resolver.asked_at.lock().expect("lock").clone();
        (seen, asked.iter().map(|t| *t - start).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn changes_follow_the_answers_on_every_refresh() {
        let (a, b, c) = ("10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051");
        let script: Vec<Scripted> = vec![
            Ok((vec![a, b], vec![])),
            Ok((vec![b, c], vec![])),
            Err("temporary failure in name resolution"),
            Ok((vec![], vec![])),
            Ok((vec![c], vec![])),
        ];
        let (changes, asked) =
            changes_of(&["http://contacts:50051", "http://10.0.9.9:50051"], script).await;
        assert_eq!(
            changes,
            [
                // The IP literal, once, as configured.
                "+1 10.0.9.9:50051 http://10.0.9.9:50051/",
                "+0 10.0.0.1:50051 http://10.0.0.1:50051/",
                "+0 10.0.0.2:50051 http://10.0.0.2:50051/",
                "+0 10.0.0.3:50051 http://10.0.0.3:50051/",
                "-0 10.0.0.1:50051",
                // The failed and the empty answer changed nothing.
                "-0 10.0.0.2:50051",
            ]
        );
        // At start, then once per refresh, on and on: the lookups past the script hang
        // and time out, failing like the third.
        assert!(asked.len() > 5, "{asked:?}");
        for (n, at) in (0u32..).zip(&asked) {
            assert_eq!(*at, EVERY * n, "lookup {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scripts_of_answers() {
        let (a, b) = ("10.0.0.1:1", "10.0.0.2:1");
        let v6 = "[::1]:1";
        let cases: Vec<(&str, Vec<Scripted>, Vec<&str>)> = vec![
            (
                "a name that never resolved is looked up again on the next refresh",
                vec![
                    Err("no such host"),
                    Err("no such host"),
                    Ok((vec![a], vec![])),
                ],
                vec!["+0 10.0.0.1:1 http://10.0.0.1:1/"],
            ),
            (
                "an address that refuses connections is left out until it accepts",
                vec![Ok((vec![v6, a], vec![v6])), Ok((vec![v6, a], vec![]))],
                vec![
                    "+0 10.0.0.1:1 http://10.0.0.1:1/",
                    "+0 [::1]:1 http://[::1]:1/",
                ],
            ),
            (
                "an address that stops accepting is taken out",
                vec![Ok((vec![a, b], vec![])), Ok((vec![a, b], vec![a]))],
                vec![
                    "+0 10.0.0.1:1 http://10.0.0.1:1/",
                    "+0 10.0.0.2:1 http://10.0.0.2:1/",
                    "-0 10.0.0.1:1",
                ],
            ),
            (
                "when none accepts the addresses are kept",
                vec![Ok((vec![a], vec![])), Ok((vec![a, b], vec![a, b]))],
                vec!["+0 10.0.0.1:1 http://10.0.0.1:1/"],
            ),
            (
                "when none accepts yet all are used",
                vec![Ok((vec![a, b], vec![a, b])), Ok((vec![a, b], vec![b]))],
                vec![
                    "+0 10.0.0.1:1 http://10.0.0.1:1/",
                    "+0 10.0.0.2:1 http://10.0.0.2:1/",
                    "-0 10.0.0.2:1",
                ],
            ),
        ];
        for (name, script, want) in cases {
            let (changes, _) = changes_of(&["http://contacts:1"], script).await;
            assert_eq!(changes, want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ip_literals_alone_are_inserted_once_and_never_looked_up() {
        let (changes, asked) = changes_of(&["http://127.0.0.1:1", "http://[::1]:2"], vec![]).await;
        assert_eq!(
            changes,
            [
                "+0 127.0.0.1:1 http://127.0.0.1:1/",
                "+1 [::1]:2 http://[::1]:2/"
            ]
        );
        assert!(asked.is_empty());
    }
}
