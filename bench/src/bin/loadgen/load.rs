//! The load: keep-alive connections sending events, each recording what it saw.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::bodies::Bodies;
use crate::histogram::Histogram;
use crate::{ACKED_MEMORY, WRONG_SECRET, now_secs};

pub(crate) const WARMUP: u8 = 0;
pub(crate) const RECORDING: u8 = 1;
pub(crate) const STOPPED: u8 = 2;

/// State the connections share with the conductor of the run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) phase: AtomicU8,
    /// Next event number; unique across connections.
    pub(crate) next_event: AtomicU64,
    /// Requests answered inside the window, for `--events`.
    pub(crate) recorded: AtomicU64,
}

/// What a connection needs to send.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: http::HeaderValue,
    pub(crate) path: String,
    pub(crate) bodies: Bodies,
    pub(crate) secret: String,
    pub(crate) dup_ratio: f64,
    pub(crate) bad_sig_ratio: f64,
    pub(crate) timeout: Duration,
}

/// What one connection saw inside the window.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) latency: Histogram,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) applied: u64,
    pub(crate) duplicate: u64,
    pub(crate) other_2xx: u64,
    pub(crate) dup_sent: u64,
    pub(crate) dup_confirmed: u64,
    pub(crate) bad_sent: u64,
    pub(crate) bad_rejected: u64,
    pub(crate) bad_accepted: u64,
    /// Non-2xx answers other than a 401 to a bad signature.
    pub(crate) unexpected: u64,
    pub(crate) timeouts: u64,
    pub(crate) connect_errors: u64,
    pub(crate) http_errors: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            latency: Histogram::new(),
            statuses: BTreeMap::new(),
            applied: 0,
            duplicate: 0,
            other_2xx: 0,
            dup_sent: 0,
            dup_confirmed: 0,
            bad_sent: 0,
            bad_rejected: 0,
            bad_accepted: 0,
            unexpected: 0,
            timeouts: 0,
            connect_errors: 0,
            http_errors: 0,
        }
    }

    pub(crate) fn merge(&mut self, o: &Self) {
        self.latency.merge(&o.latency);
        for (s, n) in &o.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.applied += o.applied;
        self.duplicate += o.duplicate;
        self.other_2xx += o.other_2xx;
        self.dup_sent += o.dup_sent;
        self.dup_confirmed += o.dup_confirmed;
        self.bad_sent += o.bad_sent;
        self.bad_rejected += o.bad_rejected;
        self.bad_accepted += o.bad_accepted;
        self.unexpected += o.unexpected;
        self.timeouts += o.timeouts;
        self.connect_errors += o.connect_errors;
        self.http_errors += o.http_errors;
    }

    pub(crate) fn errors(&self) -> u64 {
        self.timeouts + self.connect_errors + self.http_errors
    }
}

/// A small xorshift generator: picking request kinds needs no cryptographic quality and
/// must cost next to nothing.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Fresh,
    Duplicate,
    BadSignature,
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One client connection: the request handle and the connection future, driven by the
/// same task (rather than a spawned one) so an answer costs one task wake-up, not two.
pub(crate) struct Client {
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    pub(crate) conn: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    // As a webhook sender does: each request goes out at once, not after a delayed ACK.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = tokio::time::timeout(timeout, http1::handshake(TokioIo::new(stream)))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(Client {
        sender,
        conn: Box::pin(conn),
    })
}

/// Sends `req` and reads the whole answer, polling the connection meanwhile.
pub(crate) async fn exchange(
    client: &mut Client,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let sender = &mut client.sender;
    let request = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    tokio::select! {
        answer = request => answer.map_err(|e| e.to_string()),
        // The connection ends only when the server closed it or it failed.
        ended = client.conn.as_mut() => Err(match ended {
            Ok(()) => "connection closed".to_owned(),
            Err(e) => e.to_string(),
        }),
    }
}

/// One keep-alive connection, re-made after any error, until the run stops.
pub(crate) async fn connection(id: u64, plan: Arc<Plan>, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::new();
    let mut rng = Rng::new(id + 1);
    // Acknowledged bodies are kept only when duplicates are asked for.
    let memory = if plan.dup_ratio > 0.0 {
        ACKED_MEMORY
    } else {
        0
    };
    let mut acked: VecDeque<Bytes> = VecDeque::with_capacity(memory);
    let mut client = None;
    while shared.phase.load(Ordering::Relaxed) != STOPPED {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(plan.addr, plan.timeout).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    if shared.phase.load(Ordering::Relaxed) == RECORDING {
                        tally.connect_errors += 1;
                    }
                    // Pause rather than spin while the server is not accepting.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let roll = rng.unit();
        let kind = if roll < plan.bad_sig_ratio {
            Kind::BadSignature
        } else if roll < plan.bad_sig_ratio + plan.dup_ratio && !acked.is_empty() {
            Kind::Duplicate
        } else {
            Kind::Fresh
        };
        let body = match kind {
            Kind::Duplicate => {
                let i = (rng.next_u64() % acked.len() as u64) as usize;
                acked.get(i).cloned().unwrap_or_default()
            }
            Kind::Fresh | Kind::BadSignature => plan
                .bodies
                .event(shared.next_event.fetch_add(1, Ordering::Relaxed)),
        };
        // Signed at send time, as Stripe signs each delivery attempt.
        let secret = match kind {
            Kind::BadSignature => WRONG_SECRET,
            Kind::Fresh | Kind::Duplicate => &plan.secret,
        };
        let signature = edge::sources::stripe::sign(secret, now_secs(), &body);
        let req = Request::post(plan.path.as_str())
            .header(header::HOST, plan.authority.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("stripe-signature", signature)
            .body(Full::new(body.clone()));
        let Ok(req) = req else {
            // Only a malformed path could fail here, and it was checked up front.
            tally.http_errors += 1;
            break;
        };
        let started = Instant::now();
        let result = tokio::time::timeout(plan.timeout, exchange(c, req)).await;
        let elapsed = started.elapsed();
        let recording = shared.phase.load(Ordering::Relaxed) == RECORDING;
        let (status, answer) = match result {
            Ok(Ok(r)) => r,
            failed => {
                if recording {
                    match failed {
                        Err(_) => tally.timeouts += 1,
                        Ok(_) => tally.http_errors += 1,
                    }
                }
                // A timed-out or broken connection is not reused: make a new one.
                client = None;
                continue;
            }
        };
        if memory > 0 && status.is_success() && kind != Kind::BadSignature {
            if acked.len() == memory {
                acked.pop_front();
            }
            acked.push_back(body);
        }
        if !recording {
            continue;
        }
        shared.recorded.fetch_add(1, Ordering::Relaxed);
        tally
            .latency
            .record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        *tally.statuses.entry(status.as_u16()).or_default() += 1;
        if status.is_success() {
            if contains(&answer, b"\"duplicate\"") {
                tally.duplicate += 1;
            } else if contains(&answer, b"\"applied\"") {
                tally.applied += 1;
            } else {
                tally.other_2xx += 1;
            }
        }
        match kind {
            Kind::Fresh => {
                if !status.is_success() {
                    tally.unexpected += 1;
                }
            }
            Kind::Duplicate => {
                tally.dup_sent += 1;
                if status.is_success() && contains(&answer, b"\"duplicate\"") {
                    tally.dup_confirmed += 1;
                }
                if !status.is_success() {
                    tally.unexpected += 1;
                }
            }
            Kind::BadSignature => {
                tally.bad_sent += 1;
                if status == StatusCode::UNAUTHORIZED {
                    tally.bad_rejected += 1;
                } else if status.is_success() {
                    tally.bad_accepted += 1;
                } else {
                    tally.unexpected += 1;
                }
            }
        }
    }
    tally
}

/// Address, `Host` header and path of a plain-HTTP URL.
pub(crate) async fn target(
    url: &http::Uri,
) -> Result<(SocketAddr, http::HeaderValue, String), String> {
    if url.scheme_str() != Some("http") {
        return Err(format!("--url {url}: only http:// is supported"));
    }
    let authority = url
        .authority()
        .ok_or_else(|| format!("--url {url} has no host"))?;
    let host_port = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let addr = tokio::net::lookup_host(&host_port)
        .await
        .map_err(|e| format!("--url {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: no address"))?;
    let path = url
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let host =
        http::HeaderValue::from_str(authority.as_str()).map_err(|e| format!("--url {url}: {e}"))?;
    Ok((addr, host, path))
}
