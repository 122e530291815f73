//! Which contacts-svc addresses the balancer holds, decided without I/O: which configured
//! URLs name a host to resolve, what a new answer for a name makes of its set of
//! addresses, and the changes that turn one set into the next. The task that looks the
//! names up and sends the changes is `refresh.rs`.
//!
//! Invariant: a name never loses its last address because of an answer. A lookup that
//! fails or finds nothing, or addresses none of which accepts a connection, leave the set
//! as it was: a DNS blip or a restarting service must not leave the edge with nowhere to
//! send.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// The port of an `http://` URL that names none.
const HTTP_PORT: u16 = 80;

/// What a configured contacts-svc URL points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An IP literal: one address, for good.
    Fixed(SocketAddr),
    /// A DNS name, resolved again on every refresh.
    Name { host: String, port: u16 },
}

impl Target {
    /// The target of `url` (an `http://host[:port]` URL, as the configuration checked).
    pub fn of(url: &http::Uri) -> Self {
        let host = url.host().unwrap_or_default();
        let port = url.port_u16().unwrap_or(HTTP_PORT);
        // An IPv6 literal keeps its brackets in the URL's host.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => Self::Fixed(SocketAddr::new(ip, port)),
            Err(_) => Self::Name {
                host: host.to_owned(),
                port,
            },
        }
    }
}

/// What looking a name up found this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The lookup failed (or timed out).
    Failed(String),
    /// The addresses the name resolved to, and those of them that accepted a connection.
    Resolved {
        addresses: BTreeSet<SocketAddr>,
        accepting: BTreeSet<SocketAddr>,
    },
}

/// What to do with a name's set of addresses after an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Use this set from now on (it may be the same as before).
    Use(BTreeSet<SocketAddr>),
    /// Keep the set as it is, for this reason.
    Keep(Keep),
}

/// Why an answer leaves a name's set as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The lookup failed.
    Failed(String),
    /// The name resolved to no address.
    Empty,
    /// None of the addresses accepted a connection, and the set already has some: they
    /// are as good as any, and their connections are made again when the service is back.
    NoneAccepts,
}

/// The set a name's addresses become after `answer`, given the set it has.
///
/// Only the addresses that accept a connection are used: tonic's balancer keeps sending
/// calls to an address that refuses connections (each such call fails at once) for as long
/// as it holds it, so an address of the wrong family (`localhost` resolving to `::1` where
/// the service listens on 127.0.0.1 only) or of a pod that is gone would fail a share of
/// the calls. When none accepts and the name has no address yet (contacts-svc starts after
/// the edge), all of them are used, as a configured IP address would be: the calls then
/// go through as soon as the service is up, and the next refresh leaves out those that
/// still refuse.
pub fn next(current: &BTreeSet<SocketAddr>, answer: &Answer) -> Next {
    match answer {
        Answer::Failed(why) => Next::Keep(Keep::Failed(why.clone())),
        Answer::Resolved { addresses, .. } if addresses.is_empty() => Next::Keep(Keep::Empty),
        Answer::Resolved { accepting, .. } if !accepting.is_empty() => Next::Use(accepting.clone()),
        Answer::Resolved { addresses, .. } if current.is_empty() => Next::Use(addresses.clone()),
        Answer::Resolved { .. } => Next::Keep(Keep::NoneAccepts),
    }
}

/// One change to the balancer's set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<K> {
    Insert(K),
    Remove(K),
}

/// The changes that turn `current` into `next`: inserts first, so that the balancer never
/// holds an empty set between two of them.
pub fn diff<K: Ord + Copy>(current: &BTreeSet<K>, next: &BTreeSet<K>) -> Vec<Step<K>> {
    let inserts = next.difference(current).map(|k| Step::Insert(*k));
    let removes = current.difference(next).map(|k| Step::Remove(*k));
    inserts.chain(removes).collect()
}

/// The URI that reaches `address` for `url`: its scheme, the address as authority. The
/// endpoint keeps `url` as its origin, so contacts-svc still sees the configured name as
/// `:authority`.
pub fn address_uri(url: &http::Uri, address: SocketAddr) -> Result<http::Uri, http::Error> {
    http::Uri::builder()
        .scheme(url.scheme_str().unwrap_or("http"))
        .authority(address.to_string())
        .path_and_query("/")
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
        addrs.iter().map(|a| addr(a)).collect()
    }

    #[test]
    fn targets_of_urls() {
        let name = |host: &str, port| Target::Name {
            host: host.to_owned(),
            port,
        };
        let cases = [
            (
                "http://127.0.0.1:50051",
                Target::Fixed(addr("127.0.0.1:50051")),
            ),
            ("http://[::1]:50051", Target::Fixed(addr("[::1]:50051"))),
            ("http://10.0.0.7", Target::Fixed(addr("10.0.0.7:80"))),
            ("http://localhost:50051", name("localhost", 50051)),
            (
                "http://contacts-svc.hookline.svc.cluster.local:50051/",
                name("contacts-svc.hookline.svc.cluster.local", 50051),
            ),
            ("http://contacts", name("contacts", 80)),
            // Not an IP literal, however close: a name.
            ("http://127.0.0.1.nip.io:1", name("127.0.0.1.nip.io", 1)),
        ];
        for (url, want) in cases {
            let uri: http::Uri = url.parse().expect("a URL");
            assert_eq!(Target::of(&uri), want, "{url}");
        }
    }

    #[test]
    fn the_next_set_after_an_answer() {
        let resolved = |addresses: &[&str], accepting: &[&str]| Answer::Resolved {
            addresses: set(addresses),
            accepting: set(accepting),
        };
        let failed = || Answer::Failed("no such host".to_owned());
        let use_ = |addrs: &[&str]| Next::Use(set(addrs));
        const A: &str = "10.0.0.1:50051";
        const B: &str = "10.0.0.2:50051";
        const C: &str = "10.0.0.3:50051";
        const V6: &str = "[::1]:50051";
        let cases: Vec<(&str, &[&str], Answer, Next)> = vec![
            (
                "first answer",
                &[],
                resolved(&[A, B], &[A, B]),
                use_(&[A, B]),
            ),
            (
                "a pod came",
                &[A],
                resolved(&[A, B], &[A, B]),
                use_(&[A, B]),
            ),
            ("a pod went", &[A, B], resolved(&[B], &[B]), use_(&[B])),
            (
                "all replaced",
                &[A],
                resolved(&[B, C], &[B, C]),
                use_(&[B, C]),
            ),
            ("the same", &[A], resolved(&[A], &[A]), use_(&[A])),
            // An address that refuses connections is left out, or taken out.
            ("wrong family", &[], resolved(&[V6, A], &[A]), use_(&[A])),
            (
                "a pod is down",
                &[A, B],
                resolved(&[A, B], &[B]),
                use_(&[B]),
            ),
            // Never nothing because of an answer.
            (
                "lookup failed",
                &[A],
                failed(),
                Next::Keep(Keep::Failed("no such host".to_owned())),
            ),
            (
                "never resolved",
                &[],
                failed(),
                Next::Keep(Keep::Failed("no such host".to_owned())),
            ),
            (
                "no address",
                &[A],
                resolved(&[], &[]),
                Next::Keep(Keep::Empty),
            ),
            (
                "none accepts",
                &[A],
                resolved(&[A, B], &[]),
                Next::Keep(Keep::NoneAccepts),
            ),
            // Nothing to keep: every address, as a configured IP would be.
            (
                "none accepts yet",
                &[],
                resolved(&[A, B], &[]),
                use_(&[A, B]),
            ),
        ];
        for (name, current, answer, want) in cases {
            assert_eq!(next(&set(current), &answer), want, "{name}");
        }
    }

    #[test]
    fn changes_between_two_sets() {
        const A: &str = "10.0.0.1:1";
        const B: &str = "10.0.0.2:1";
        const C: &str = "10.0.0.3:1";
        let insert = |s: &str| Step::Insert(addr(s));
        let remove = |s: &str| Step::Remove(addr(s));
        // From, to, and the changes between them.
        type Case = (
            &'static [&'static str],
            &'static [&'static str],
            Vec<Step<SocketAddr>>,
        );
        let cases: Vec<Case> = vec![
            (&[], &[], vec![]),
            (&[], &[A, B], vec![insert(A), insert(B)]),
            (&[A, B], &[A, B], vec![]),
            (&[A, B], &[B, C], vec![insert(C), remove(A)]),
            (&[A, B, C], &[B], vec![remove(A), remove(C)]),
            // Inserts before removes: the balancer is never left empty in between.
            (&[A], &[C], vec![insert(C), remove(A)]),
            (&[A], &[], vec![remove(A)]),
        ];
        for (current, next, want) in cases {
            assert_eq!(
                diff(&set(current), &set(next)),
                want,
                "{current:?} → {next:?}"
            );
        }
    }

    #[test]
    fn uris_of_resolved_addresses() {
        let cases = [
            (
                "http://contacts:50051",
                "10.0.0.7:50051",
                "http://10.0.0.7:50051/",
            ),
            (
                "http://localhost:50051",
                "[::1]:50051",
                "http://[::1]:50051/",
            ),
            ("http://contacts/", "10.0.0.7:80", "http://10.0.0.7:80/"),
        ];
        for (url, address, want) in cases {
            let url: http::Uri = url.parse().expect("a URL");
            let got = address_uri(&url, addr(address)).expect("a URI");
            assert_eq!(got.to_string(), want);
        }
    }
}
