//! The benchmark's load generator (`make bench` runs it from `dev/bench.sh`). It owns the
//! load (N keep-alive HTTP/1.1 connections sending unique, freshly signed Stripe
//! `checkout.session.completed` events), the measurement of one run (latency histogram,
//! status counts, per-process CPU from `/proc/<pid>/stat`, peak RSS from
//! `/proc/<pid>/status`, and what the system's Redis did and holds per stored event) and
//! the results table that compares hookline with the no-op baseline and the Node.js
//! yardstick. It also has two helpers the script needs without Python or curl: free ports
//! and waiting for an HTTP endpoint to answer 200.
//!
//! The load is closed-loop: each connection sends its next request when the previous
//! answer arrived, so throughput is what the server sustains with N requests in flight
//! and latency is the time one request takes at that concurrency.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// Secret the bench configuration gives the edge's `stripe` source.
const DEFAULT_SECRET: &str = "whsec_hookline_bench_only";
/// What bad-signature requests are signed with: a well-formed signature, wrong key.
const WRONG_SECRET: &str = "whsec_not_the_configured_secret";
/// Acknowledged events each connection remembers for re-sending as duplicates.
const ACKED_MEMORY: usize = 256;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "hookline's benchmark load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drives one target for a warm-up and a measured window; prints a summary and
    /// writes the measurements as JSON.
    Run(Box<RunArgs>),
    /// Prints the markdown results table of a baseline run, the Node.js yardstick's run
    /// and a hookline run.
    Table(TableArgs),
    /// Waits until a GET of the URL answers 200.
    Wait(WaitArgs),
    /// Prints N distinct free TCP ports on 127.0.0.1, space-separated.
    FreePorts {
        #[arg(default_value_t = 1)]
        n: usize,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Name of the run in the summary and the table.
    #[arg(long, env = "LOADGEN_LABEL", default_value = "run")]
    label: String,
    /// Where to POST, e.g. http://127.0.0.1:8080/webhooks/stripe (plain HTTP/1.1).
    #[arg(long, env = "LOADGEN_URL")]
    url: http::Uri,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 64)]
    connections: usize,
    /// Seconds of load before the measured window (not recorded).
    #[arg(long, env = "LOADGEN_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Seconds in the measured window.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// End the window after this many answered requests (`--duration` stays a cap).
    #[arg(long, env = "LOADGEN_EVENTS")]
    events: Option<u64>,
    /// Size of each event body in bytes (padded through the session's metadata).
    #[arg(long, env = "LOADGEN_SIZE", default_value_t = 2048)]
    size: usize,
    /// Share of requests that re-send an event already acknowledged (expect 200
    /// "duplicate").
    #[arg(long, env = "LOADGEN_DUP_RATIO", default_value_t = 0.0)]
    dup_ratio: f64,
    /// Share of requests signed with the wrong secret (expect 401).
    #[arg(long, env = "LOADGEN_BAD_SIG_RATIO", default_value_t = 0.0)]
    bad_sig_ratio: f64,
    /// The source's signing secret.
    #[arg(long, env = "LOADGEN_SECRET", default_value = DEFAULT_SECRET, hide_env_values = true)]
    secret: String,
    /// Bound on each request, from sending to the last byte of the answer (ms).
    #[arg(long, env = "LOADGEN_TIMEOUT_MS", default_value_t = 5000)]
    timeout_ms: u64,
    /// Runtime worker threads; 0 means one per core. One thread costs the fewest CPU
    /// microseconds per request; the summary warns if it limited the run.
    #[arg(long, env = "LOADGEN_THREADS", default_value_t = 1)]
    threads: usize,
    /// A process of the system under test, `name=pid`: CPU and peak RSS are reported,
    /// and the RSS target applies.
    #[arg(long = "service", value_parser = parse_proc)]
    services: Vec<Proc>,
    /// A process of the system under test measured together with its descendants,
    /// `name=pid`: a Node.js cluster's primary and its workers. CPU and peak RSS are
    /// summed over the processes.
    #[arg(long = "service-tree", value_parser = parse_tree)]
    service_trees: Vec<Proc>,
    /// Another process to account for, `name=pid` (CPU and RSS reported, no target).
    #[arg(long = "watch", value_parser = parse_proc)]
    watched: Vec<Proc>,
    /// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`).
    #[arg(long, env = "LOADGEN_CLK_TCK", default_value_t = 100)]
    clk_tck: u64,
    /// Write the measurements here as JSON.
    #[arg(long, env = "LOADGEN_OUT")]
    out: Option<PathBuf>,
    /// The system's Redis, e.g. redis://127.0.0.1:6379: read before and after the run
    /// for Redis commands and bytes of memory per stored event (needs `--redis-events`).
    #[arg(long, env = "LOADGEN_REDIS", requires = "redis_events")]
    redis: Option<String>,
    /// The key that holds one entry per stored event (a sorted set, stream, set, list
    /// or hash); its size after the run minus before is the events stored.
    #[arg(long, env = "LOADGEN_REDIS_EVENTS", requires = "redis")]
    redis_events: Option<String>,
}

#[derive(Debug, Args)]
struct TableArgs {
    /// JSON written by `run` against the no-op baseline.
    #[arg(long)]
    baseline: PathBuf,
    /// JSON written by `run` against hookline.
    #[arg(long)]
    hookline: PathBuf,
    /// JSON written by `run` against the Node.js yardstick (`bench/node`).
    #[arg(long)]
    node: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WaitArgs {
    #[arg(long)]
    url: http::Uri,
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

/// A process to measure.
#[derive(Clone, Debug)]
struct Proc {
    name: String,
    pid: u32,
    /// Measured with its descendants, as one.
    tree: bool,
}

fn parse_tree(s: &str) -> Result<Proc, String> {
    Ok(Proc {
        tree: true,
        ..parse_proc(s)?
    })
}

fn parse_proc(s: &str) -> Result<Proc, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not name=pid"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has an empty name"));
    }
    Ok(Proc {
        name: name.to_owned(),
        pid,
        tree: false,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_cmd(*args),
        Command::Table(args) => table_cmd(&args),
        Command::Wait(args) => wait_cmd(&args),
        Command::FreePorts { n } => free_ports(n),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Event bodies

/// Unique `checkout.session.completed` bodies made from one template. The unique parts
/// (event, session and payment intent ids, email, order reference, phone) are fixed-width
/// slots, so an event costs one copy of the template and a few digit writes, and the
/// generator stays cheap next to the services it measures.
#[derive(Debug)]
struct Bodies {
    template: Vec<u8>,
    /// Offsets of the 12-digit event number in every unique id.
    number_slots: Vec<usize>,
    /// Offset of the 10 national digits of the phone number.
    phone_slot: usize,
}

const NUMBER_MARK: &str = "############";
const PHONE_MARK: &str = "%%%%%%%%%%";

impl Bodies {
    /// Bodies of `size` bytes (or the smallest event, when `size` is below it) whose ids
    /// start with `run`, so runs against one Redis never collide.
    fn new(run: &str, size: usize, created: i64) -> Self {
        let token = format!("{run}{NUMBER_MARK}");
        let render = |notes: &str| {
            // Field order and shapes follow a real Stripe delivery (API 2025-03-31.basil).
            json!({
                "id": format!("evt_{token}"),
                "object": "event",
                "api_version": "2025-03-31.basil",
                "created": created,
                "data": {"object": {
                    "id": format!("cs_test_{token}"),
                    "object": "checkout.session",
                    "amount_subtotal": 4900,
                    "amount_total": 4900,
                    "currency": "usd",
                    "customer": null,
                    "customer_details": {
                        "address": {"city": "Portland", "country": "US", "line1": "1 Example St",
                                    "postal_code": "97201", "state": "OR"},
                        "email": format!("buyer.{token}@example.com"),
                        "name": "Jenny Rosen",
                        "phone": format!("+1{PHONE_MARK}"),
                        "tax_exempt": "none"
                    },
                    "customer_email": null,
                    "livemode": false,
                    "metadata": {"order_ref": format!("ord_{token}"), "notes": notes},
                    "mode": "payment",
                    "payment_intent": format!("pi_{token}"),
                    "payment_status": "paid",
                    "status": "complete"
                }},
                "livemode": false,
                "pending_webhooks": 1,
                "request": {"id": null, "idempotency_key": null},
                "type": "checkout.session.completed"
            })
            .to_string()
        };
        let smallest = render("").len();
        let filler = "Gift wrap, deliver after 5pm, leave with the concierge. ";
        let notes: String = filler
            .chars()
            .cycle()
            .take(size.saturating_sub(smallest))
            .collect();
        let template = render(&notes).into_bytes();
        let find_all = |mark: &str| -> Vec<usize> {
            let mark = mark.as_bytes();
            template
                .windows(mark.len())
                .enumerate()
                .filter(|(_, w)| *w == mark)
                .map(|(i, _)| i)
                .collect()
        };
        let number_slots = find_all(NUMBER_MARK);
        let phone_slot = find_all(PHONE_MARK).first().copied().unwrap_or(0);
        Self {
            template,
            number_slots,
            phone_slot,
        }
    }

    fn len(&self) -> usize {
        self.template.len()
    }

    /// Event number `n`: every id, the email and the phone number are unique to `n`.
    fn event(&self, n: u64) -> Bytes {
        let mut body = self.template.clone();
        for &at in &self.number_slots {
            write_digits(&mut body[at..at + NUMBER_MARK.len()], n);
        }
        // A NANP number: area code 200-999, then seven digits; unique below 8e9 events.
        let national = (200 + (n / 10_000_000) % 800) * 10_000_000 + n % 10_000_000;
        write_digits(
            &mut body[self.phone_slot..self.phone_slot + PHONE_MARK.len()],
            national,
        );
        Bytes::from(body)
    }
}

/// Writes `n` zero-padded into `out` (its low digits when `n` is wider).
fn write_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

// ---------------------------------------------------------------------------------------
// Latency histogram

/// A log-linear histogram of microseconds in the manner of HDR histograms: exact below
/// 128 µs, then 64 linear sub-buckets per power of two, so a reported value is within
/// 1.6 % of the true one. Recording is an index computation and an increment.
#[derive(Clone, Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

const SUB_BUCKETS: u64 = 64;

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; Self::index(u64::MAX) + 1],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB_BUCKETS {
            return v as usize;
        }
        let msb = 63 - u64::from(v.leading_zeros());
        // Keep the 7 top bits: `v >> shift` is in [64, 128).
        let shift = msb - 6;
        (shift * SUB_BUCKETS + (v >> shift)) as usize
    }

    /// Highest value that lands in bucket `i`.
    fn highest(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB_BUCKETS {
            return i;
        }
        let shift = i / SUB_BUCKETS - 1;
        let sub = i % SUB_BUCKETS + SUB_BUCKETS;
        ((sub + 1) << shift).saturating_sub(1)
    }

    fn record(&mut self, micros: u64) {
        self.counts[Self::index(micros)] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.max = self.max.max(micros);
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the highest value of the bucket holding the
    /// rank, never above the largest value recorded.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::highest(i).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc

/// The fields of `/proc/<pid>/stat` after the command name: the first is the state,
/// field 3 of proc(5).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// User + system CPU time of a process, all its threads, in clock ticks, plus that of
/// its children it reaped: redis-server's AOF rewrites run in forked children.
fn cpu_ticks(pid: u32) -> Option<u64> {
    // utime, stime, cutime, cstime are fields 14-17 of proc(5).
    stat_fields(pid)?
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum()
}

/// Every process's parent, from /proc (`/proc/<pid>/task/<tid>/children` needs a kernel
/// option that not every kernel has).
fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let ppid = stat_fields(pid)?.get(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// The live descendants of `root` (children, their children, ...), given every
/// process's parent.
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in parents {
            if ppid == parent && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// The processes a measured process stands for: itself, and its live descendants when it
/// is measured as a tree. A child that exits between two readings is still counted: its
/// parent reaps it, which adds its time to the parent's.
fn members(p: &Proc, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut pids = vec![p.pid];
    if p.tree {
        pids.extend(descendants(p.pid, parents));
    }
    pids
}

/// Clock ticks of the whole machine, from the `cpu` line of /proc/stat.
#[derive(Clone, Copy, Debug)]
struct MachineTicks {
    /// Every CPU state but idle and iowait.
    busy: u64,
    /// Interrupt and softirq time: mostly loopback TCP, charged to no process.
    irq: u64,
    total: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(MachineTicks {
        busy: total.saturating_sub(at(3) + at(4)),
        irq: at(5) + at(6),
        total,
    })
}

/// Peak resident set size of a process, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU counters of every measured process and of the machine at one instant.
#[derive(Debug)]
struct Snapshot {
    at: Instant,
    procs: Vec<Option<u64>>,
    /// How many processes each measured process stood for.
    members: Vec<usize>,
    machine: Option<MachineTicks>,
}

fn snapshot(procs: &[Proc]) -> Snapshot {
    let parents = if procs.iter().any(|p| p.tree) {
        parents()
    } else {
        Vec::new()
    };
    let members: Vec<Vec<u32>> = procs.iter().map(|p| members(p, &parents)).collect();
    Snapshot {
        at: Instant::now(),
        // The root first: a descendant it reaps meanwhile is then missed once rather than
        // counted twice.
        procs: members.iter().map(|pids| summed(pids, cpu_ticks)).collect(),
        members: members.iter().map(Vec::len).collect(),
        machine: machine_ticks(),
    }
}

/// Peak RSS of a measured process, KiB: the sum of its processes' peaks when it is a tree
/// (an upper bound of the tree's peak, reached when all peak together).
fn tree_peak_rss_kib(p: &Proc) -> Option<u64> {
    let parents = if p.tree { parents() } else { Vec::new() };
    summed(&members(p, &parents), peak_rss_kib)
}

/// `read` of the first process (none if it is gone) plus that of the others still there.
fn summed(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    let (root, rest) = pids.split_first()?;
    let root = read(*root)?;
    Some(root + rest.iter().filter_map(|&pid| read(pid)).sum::<u64>())
}

// ---------------------------------------------------------------------------------------
// Redis

/// What a Redis has done and holds at one instant.
#[derive(Debug)]
struct RedisReading {
    /// `used_memory` of `INFO memory`, bytes.
    used_memory: u64,
    /// Calls per command from `INFO commandstats`; commands that scripts run are counted
    /// there too, beside the script's own call.
    calls: BTreeMap<String, u64>,
    /// Entries of the key that holds one per stored event.
    stored: u64,
}

async fn redis_connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
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
) -> Result<RedisReading, String> {
    let failed = |what: &str, e: redis::RedisError| format!("redis {what}: {e}");
    let kind: String = redis::cmd("TYPE")
        .arg(events_key)
        .query_async(conn)
        .await
        .map_err(|e| failed("TYPE", e))?;
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

/// A numeric field of an `INFO` answer (`name:value` lines).
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))?
        .parse()
        .ok()
}

/// Calls per command of an `INFO commandstats` answer
/// (`cmdstat_set:calls=12,usec=34,...`).
fn command_calls(info: &str) -> BTreeMap<String, u64> {
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
fn redis_costs(events_key: &str, before: &RedisReading, after: &RedisReading) -> Value {
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

// ---------------------------------------------------------------------------------------
// The load

const WARMUP: u8 = 0;
const RECORDING: u8 = 1;
const STOPPED: u8 = 2;

/// State the connections share with the conductor of the run.
#[derive(Debug)]
struct Shared {
    phase: AtomicU8,
    /// Next event number; unique across connections.
    next_event: AtomicU64,
    /// Requests answered inside the window, for `--events`.
    recorded: AtomicU64,
}

/// What a connection needs to send.
#[derive(Debug)]
struct Plan {
    addr: SocketAddr,
    authority: http::HeaderValue,
    path: String,
    bodies: Bodies,
    secret: String,
    dup_ratio: f64,
    bad_sig_ratio: f64,
    timeout: Duration,
}

/// What one connection saw inside the window.
#[derive(Debug)]
struct Tally {
    latency: Histogram,
    statuses: BTreeMap<u16, u64>,
    applied: u64,
    duplicate: u64,
    other_2xx: u64,
    dup_sent: u64,
    dup_confirmed: u64,
    bad_sent: u64,
    bad_rejected: u64,
    bad_accepted: u64,
    /// Non-2xx answers other than a 401 to a bad signature.
    unexpected: u64,
    timeouts: u64,
    connect_errors: u64,
    http_errors: u64,
}

impl Tally {
    fn new() -> Self {
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

    fn merge(&mut self, o: &Self) {
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

    fn errors(&self) -> u64 {
        self.timeouts + self.connect_errors + self.http_errors
    }
}

/// A small xorshift generator: picking request kinds needs no cryptographic quality and
/// must cost next to nothing.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fresh,
    Duplicate,
    BadSignature,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One client connection: the request handle and the connection future, driven by the
/// same task (rather than a spawned one) so an answer costs one task wake-up, not two.
struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
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
async fn exchange(
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
async fn connection(id: u64, plan: Arc<Plan>, shared: Arc<Shared>) -> Tally {
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
        let signature = hookline_tests::stripe_sign(secret, hookline_tests::now_secs(), &body);
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
async fn target(url: &http::Uri) -> Result<(SocketAddr, http::HeaderValue, String), String> {
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

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("--{name} must be a number of seconds, not {v}"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("--{name} {v}: {e}"))
}

fn ratio(name: &str, v: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("--{name} must be between 0 and 1, not {v}"))
    }
}

fn run_cmd(args: RunArgs) -> Result<(), String> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run(args, threads))
}

async fn run(args: RunArgs, threads: usize) -> Result<(), String> {
    let warmup = seconds("warmup", args.warmup)?;
    let duration = seconds("duration", args.duration)?;
    if duration.is_zero() {
        return Err("--duration must be above 0".to_owned());
    }
    let dup_ratio = ratio("dup-ratio", args.dup_ratio)?;
    let bad_sig_ratio = ratio("bad-sig-ratio", args.bad_sig_ratio)?;
    if dup_ratio + bad_sig_ratio > 1.0 {
        return Err("--dup-ratio and --bad-sig-ratio add up to more than 1".to_owned());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".to_owned());
    }
    if args.clk_tck == 0 {
        return Err("--clk-tck must be above 0".to_owned());
    }
    let (addr, authority, path) = target(&args.url).await?;

    // Ids carry the run's start time, so several runs against one Redis never collide.
    let run_id = format!("{:08x}", hookline_tests::now_secs() & 0xffff_ffff);
    let bodies = Bodies::new(&run_id, args.size, hookline_tests::now_secs());
    let body_bytes = bodies.len();
    let plan = Arc::new(Plan {
        addr,
        authority,
        path,
        bodies,
        secret: args.secret.clone(),
        dup_ratio,
        bad_sig_ratio,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    });
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        next_event: AtomicU64::new(0),
        recorded: AtomicU64::new(0),
    });

    let own = Proc {
        name: "loadgen".to_owned(),
        pid: std::process::id(),
        tree: false,
    };
    let services: Vec<Proc> = args
        .services
        .iter()
        .chain(&args.service_trees)
        .cloned()
        .collect();
    let mut procs = services.clone();
    procs.extend(args.watched.iter().cloned());
    procs.push(own.clone());

    // Redis is read before the warm-up and after the last answer, so the events stored
    // and the commands and memory they took cover the same requests.
    let mut redis = match (&args.redis, &args.redis_events) {
        (Some(url), Some(key)) => {
            let mut conn = redis_connect(url).await?;
            let before = redis_reading(&mut conn, key).await?;
            Some((conn, key, before))
        }
        _ => None,
    };

    let tasks: Vec<_> = (0..args.connections as u64)
        .map(|i| tokio::spawn(connection(i, plan.clone(), shared.clone())))
        .collect();

    tokio::time::sleep(warmup).await;
    let before = snapshot(&procs);
    shared.phase.store(RECORDING, Ordering::Relaxed);
    let window_end = tokio::time::Instant::now() + duration;
    match args.events {
        Some(target) => {
            while tokio::time::Instant::now() < window_end
                && shared.recorded.load(Ordering::Relaxed) < target
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        None => tokio::time::sleep_until(window_end).await,
    }
    shared.phase.store(STOPPED, Ordering::Relaxed);
    let after = snapshot(&procs);

    // Every request is bounded by the timeout, so the connections end by then; past
    // that (a connect stuck in the kernel, say) they are abandoned, never waited on.
    let mut tally = Tally::new();
    let deadline = tokio::time::Instant::now() + plan.timeout * 2 + Duration::from_secs(1);
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(t)) => tally.merge(&t),
            Ok(Err(e)) => return Err(format!("a connection task failed: {e}")),
            Err(_) => return Err("connections did not stop within the timeout".to_owned()),
        }
    }

    let window = after.at.duration_since(before.at).as_secs_f64();
    let answered = tally.latency.total;
    let per_event = |ticks: u64| -> f64 {
        if answered == 0 {
            0.0
        } else {
            ticks as f64 * 1e6 / args.clk_tck as f64 / answered as f64
        }
    };
    let cores = |ticks: u64| ticks as f64 / args.clk_tck as f64 / window;
    let mut cpu = serde_json::Map::new();
    let mut cpu_cores = serde_json::Map::new();
    let mut cpu_sum = 0.0;
    let mut procs_ticks = 0;
    for (i, p) in procs.iter().enumerate() {
        let delta = match (before.procs.get(i), after.procs.get(i)) {
            (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(*a)),
            _ => None,
        };
        procs_ticks += delta.unwrap_or(0);
        let v = delta.map(per_event);
        cpu_sum += v.unwrap_or(0.0);
        cpu.insert(p.name.clone(), json!(v));
        cpu_cores.insert(p.name.clone(), json!(delta.map(cores)));
    }
    // The machine's busy time is the measured processes' plus anything else that ran:
    // another build, an editor, a Redis AOF rewrite still running at the end of the
    // window. On an idle machine the difference stays within about 0.1 cores (interrupt
    // time is mostly charged to the process it interrupted); more means the run was
    // disturbed.
    let machine = match (before.machine, after.machine) {
        (Some(m0), Some(m1)) => {
            let busy = m1.busy.saturating_sub(m0.busy);
            let irq = m1.irq.saturating_sub(m0.irq);
            json!({
                "cpu_us_per_event": per_event(busy),
                "cores_busy": cores(busy),
                "irq_cores": cores(irq),
                "outside_measured_cores": cores(busy.saturating_sub(procs_ticks)),
                "ticks_total": m1.total.saturating_sub(m0.total),
            })
        }
        _ => Value::Null,
    };
    let rss = |list: &[Proc]| -> serde_json::Map<String, Value> {
        list.iter()
            .map(|p| (p.name.clone(), json!(tree_peak_rss_kib(p))))
            .collect()
    };
    let mut other_rss = rss(&args.watched);
    other_rss.extend(rss(&[own]));
    let processes: serde_json::Map<String, Value> = procs
        .iter()
        .zip(&after.members)
        .filter(|(p, _)| p.tree)
        .map(|(p, n)| (p.name.clone(), json!(n)))
        .collect();
    let redis = match redis.as_mut() {
        Some((conn, key, before)) => {
            let after = redis_reading(conn, key).await?;
            redis_costs(key, before, &after)
        }
        None => Value::Null,
    };
    let q = |q: f64| tally.latency.quantile(q);
    let report = json!({
        "label": args.label,
        "url": args.url.to_string(),
        "connections": args.connections,
        "loadgen_threads": threads,
        "machine_cores": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "body_bytes": body_bytes,
        "dup_ratio": dup_ratio,
        "bad_sig_ratio": bad_sig_ratio,
        "warmup_secs": warmup.as_secs_f64(),
        "window_secs": window,
        "answered": answered,
        "events_per_sec": if window > 0.0 { answered as f64 / window } else { 0.0 },
        "latency_us": {
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
            "max": tally.latency.max, "mean": tally.latency.mean(),
        },
        "statuses": tally.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "outcomes": {"applied": tally.applied, "duplicate": tally.duplicate, "other_2xx": tally.other_2xx},
        "duplicates": {"sent": tally.dup_sent, "confirmed": tally.dup_confirmed},
        "bad_signatures": {"sent": tally.bad_sent, "rejected": tally.bad_rejected, "accepted": tally.bad_accepted},
        "unexpected_non_2xx": tally.unexpected,
        "errors": {"timeouts": tally.timeouts, "connect": tally.connect_errors, "http": tally.http_errors},
        "cpu_us_per_event": cpu,
        "cpu_us_per_event_sum": cpu_sum,
        "cpu_cores": cpu_cores,
        "machine": machine,
        "peak_rss_kib": rss(&services),
        "peak_rss_kib_other": other_rss,
        "processes": processes,
        "redis": redis,
    });
    print_summary(&report);
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{report:#}\n"))
            .map_err(|e| format!("--out {}: {e}", out.display()))?;
    }
    if answered == 0 {
        return Err(format!(
            "no request was answered in the window ({} errors); is {} up?",
            tally.errors(),
            args.url
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reporting

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn f(v: &Value, path: &[&str]) -> f64 {
    num(v, path).unwrap_or(0.0)
}

/// `12345.6` as `12,346`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: &Value, q: &str) -> String {
    format!("{:.2}", f(v, &["latency_us", q]) / 1000.0)
}

/// `name value, …` over an object of numbers (or nulls, shown as n/a).
fn listing(obj: Option<&Value>, show: impl Fn(f64) -> String) -> String {
    obj.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v.as_f64() {
                    Some(x) => format!("{k} {}", show(x)),
                    None => format!("{k} n/a"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn errors(v: &Value) -> f64 {
    f(v, &["errors", "timeouts"]) + f(v, &["errors", "connect"]) + f(v, &["errors", "http"])
}

/// A warning when the load generator itself set the pace: its threads were full while
/// the machine still had idle CPU. (On a saturated machine a busy generator is expected:
/// it shares the cores with the server.)
fn saturation_warning(r: &Value) -> Option<String> {
    let used = num(r, &["cpu_cores", "loadgen"])?;
    let threads = num(r, &["loadgen_threads"])?;
    let idle = num(r, &["machine_cores"])? - num(r, &["machine", "cores_busy"])?;
    (used >= 0.9 * threads && idle >= 0.3).then(|| {
        format!(
            "warning: the load generator used {used:.2} of its {threads} thread(s) while {idle:.2} cores were idle; it limited this run (raise LOADGEN_THREADS)"
        )
    })
}

fn print_summary(r: &Value) {
    let label = r.get("label").and_then(Value::as_str).unwrap_or("run");
    println!(
        "{label}: {} answered in {:.2} s = {} events/s ({} connections, {}-byte events, dup {}, bad-sig {})",
        thousands(f(r, &["answered"])),
        f(r, &["window_secs"]),
        thousands(f(r, &["events_per_sec"])),
        f(r, &["connections"]),
        f(r, &["body_bytes"]),
        f(r, &["dup_ratio"]),
        f(r, &["bad_sig_ratio"]),
    );
    println!(
        "  latency ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(r, "p50"),
        ms(r, "p90"),
        ms(r, "p99"),
        ms(r, "p999"),
        ms(r, "max"),
    );
    println!(
        "  statuses: {}; outcomes: {}",
        listing(r.get("statuses"), thousands),
        listing(r.get("outcomes"), thousands)
    );
    println!(
        "  duplicates confirmed {}/{}; bad signatures rejected {}/{} (accepted {}); unexpected non-2xx {}; errors {}",
        f(r, &["duplicates", "confirmed"]),
        f(r, &["duplicates", "sent"]),
        f(r, &["bad_signatures", "rejected"]),
        f(r, &["bad_signatures", "sent"]),
        f(r, &["bad_signatures", "accepted"]),
        f(r, &["unexpected_non_2xx"]),
        errors(r),
    );
    println!(
        "  CPU µs/event: {}; sum {:.1}; machine {:.1} ({:.2} cores busy, {:.2} outside the measured processes, {:.2} in interrupts)",
        listing(r.get("cpu_us_per_event"), |x| format!("{x:.1}")),
        f(r, &["cpu_us_per_event_sum"]),
        f(r, &["machine", "cpu_us_per_event"]),
        f(r, &["machine", "cores_busy"]),
        f(r, &["machine", "outside_measured_cores"]),
        f(r, &["machine", "irq_cores"]),
    );
    if let Some(w) = saturation_warning(r) {
        println!("  {w}");
    }
    println!(
        "  peak RSS: {}; {}",
        listing(r.get("peak_rss_kib"), mib),
        listing(r.get("peak_rss_kib_other"), mib),
    );
    if let Some(note) = processes_note(r) {
        println!("  {note}");
    }
    if let Some(note) = redis_note(r) {
        println!("  redis per stored event: {note}");
    }
}

/// Which measured processes stand for several (a Node.js cluster), if any.
fn processes_note(r: &Value) -> Option<String> {
    let trees = listing(r.get("processes"), |n| format!("{n:.0}"));
    (!trees.is_empty()).then(|| {
        format!("processes measured with their descendants, CPU and peak RSS summed: {trees}")
    })
}

/// Redis commands and bytes of memory per stored event, if the run read its Redis.
fn redis_note(r: &Value) -> Option<String> {
    let redis = r.get("redis").filter(|v| v.is_object())?;
    let stored = f(redis, &["events_stored"]);
    if stored <= 0.0 {
        return Some(format!(
            "no event stored in {}",
            redis["events_key"].as_str().unwrap_or("?")
        ));
    }
    let mut by_name: Vec<(&String, f64)> = redis
        .get("commands_per_event_by_name")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k, v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let listed = by_name
        .iter()
        .filter(|(_, n)| *n >= 0.05)
        .map(|(k, n)| format!("{k} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{:.2} commands ({listed}), {} B of memory; {} events stored ({})",
        f(redis, &["commands_per_event"]),
        thousands(f(redis, &["memory_bytes_per_event"])),
        thousands(stored),
        redis["events_key"].as_str().unwrap_or("?"),
    ))
}

/// The issues' targets for the 2-core development machine, 64 connections, 2 KiB events.
const TARGET_EVENTS_PER_SEC: f64 = 15_000.0;
const TARGET_P99_MS: f64 = 4.0;
const TARGET_CPU_US: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_RATIO: f64 = 0.38;
/// hookline's throughput against the Node.js yardstick's.
const TARGET_NODE_RATIO: f64 = 1.2;
/// Redis commands per stored event (scripts' inner commands included).
const TARGET_REDIS_COMMANDS: f64 = 4.0;
/// Bytes of Redis `used_memory` per stored event.
const TARGET_REDIS_BYTES: f64 = 500.0;
/// Cores busy outside the measured processes above which a run counts as disturbed.
const OTHER_LOAD_CORES: f64 = 0.15;

fn read_report(path: &PathBuf) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn row(r: &Value) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
        label(r),
        thousands(f(r, &["events_per_sec"])),
        ms(r, "p50"),
        ms(r, "p90"),
        ms(r, "p99"),
        ms(r, "p999"),
        thousands(f(r, &["unexpected_non_2xx"])),
        thousands(f(r, &["bad_signatures", "rejected"])),
        thousands(errors(r)),
        listing(r.get("cpu_us_per_event"), |x| format!("{x:.1}")),
        f(r, &["cpu_us_per_event_sum"]),
        f(r, &["machine", "cpu_us_per_event"]),
        listing(r.get("peak_rss_kib"), mib)
            + &match listing(r.get("peak_rss_kib_other"), mib) {
                s if s.is_empty() => String::new(),
                s => format!("; {s}"),
            },
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "holds" } else { "MISSED" }
}

fn label(r: &Value) -> &str {
    r.get("label").and_then(Value::as_str).unwrap_or("run")
}

fn table_cmd(args: &TableArgs) -> Result<(), String> {
    let base = read_report(&args.baseline)?;
    let hook = read_report(&args.hookline)?;
    let node = args.node.as_ref().map(read_report).transpose()?;
    let runs: Vec<&Value> = [Some(&base), node.as_ref(), Some(&hook)]
        .into_iter()
        .flatten()
        .collect();
    println!(
        "| run | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | non-2xx | 401 (bad sig) | errors | CPU µs/event by process | CPU µs/event, processes | CPU µs/event, machine | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|");
    for r in &runs {
        println!("{}", row(r));
    }
    let rate = f(&hook, &["events_per_sec"]);
    // hookline's throughput as a share of another run's.
    let share = |of: &Value| {
        let other = f(of, &["events_per_sec"]);
        if other > 0.0 { rate / other } else { 0.0 }
    };
    let ratio = share(&base);
    let node_ratio = node.as_ref().map(share);
    println!();
    if let Some(x) = node_ratio {
        println!("hookline / node throughput: {x:.2}");
    }
    println!("hookline / baseline throughput: {ratio:.3}");
    for r in &runs {
        let label = label(r);
        if let Some(w) = saturation_warning(r) {
            println!("{label}: {w}");
        }
        let other = f(r, &["machine", "outside_measured_cores"]);
        if other > OTHER_LOAD_CORES {
            println!(
                "{label}: warning: {other:.2} cores were busy outside the measured processes; another load disturbed this run"
            );
        }
        if let Some(note) = processes_note(r) {
            println!("{label}: {note}");
        }
    }
    let redis_notes: Vec<(&str, String)> = runs
        .iter()
        .filter_map(|r| Some((label(r), redis_note(r)?)))
        .collect();
    if !redis_notes.is_empty() {
        println!();
        println!(
            "Redis per stored event (calls in INFO commandstats, scripts' inner commands included, and used_memory after the run minus before, each divided by the events stored, warm-up included):"
        );
        for (label, note) in redis_notes {
            println!("- {label}: {note}");
        }
    }
    println!();
    let p99 = f(&hook, &["latency_us", "p99"]) / 1000.0;
    let cpu = f(&hook, &["machine", "cpu_us_per_event"]);
    let cpu_procs = f(&hook, &["cpu_us_per_event_sum"]);
    let rss_max = hook
        .get("peak_rss_kib")
        .and_then(Value::as_object)
        .map(|m| m.values().filter_map(Value::as_f64).fold(0.0, f64::max))
        .unwrap_or(0.0)
        / 1024.0;
    let hook_redis = |field: &str| {
        num(&hook, &["redis", field]).filter(|_| f(&hook, &["redis", "events_stored"]) > 0.0)
    };
    println!("targets (2 cores, 64 connections, 2 KiB events):");
    println!(
        "- throughput ≥ {} events/s: {} events/s, {}",
        thousands(TARGET_EVENTS_PER_SEC),
        thousands(rate),
        verdict(rate >= TARGET_EVENTS_PER_SEC)
    );
    println!(
        "- p99 ≤ {TARGET_P99_MS} ms: {p99:.2} ms, {}",
        verdict(p99 <= TARGET_P99_MS)
    );
    println!(
        "- machine CPU ≤ {TARGET_CPU_US} µs/event (load generator and kernel included): {cpu:.0} µs ({cpu_procs:.0} in the measured processes), {}",
        verdict(cpu <= TARGET_CPU_US)
    );
    println!(
        "- peak RSS ≤ {TARGET_RSS_MIB} MiB per service: largest {rss_max:.1} MiB, {}",
        verdict(rss_max <= TARGET_RSS_MIB)
    );
    println!(
        "- ≥ {TARGET_RATIO} of the no-op baseline: {ratio:.3}, {}",
        verdict(ratio >= TARGET_RATIO)
    );
    match node_ratio {
        Some(x) => println!(
            "- ≥ {TARGET_NODE_RATIO} × the Node.js row: {x:.2} ×, {}",
            verdict(x >= TARGET_NODE_RATIO)
        ),
        None => println!("- ≥ {TARGET_NODE_RATIO} × the Node.js row: n/a (no Node.js run)"),
    }
    match hook_redis("commands_per_event") {
        Some(n) => println!(
            "- Redis commands per new event ≤ {TARGET_REDIS_COMMANDS}: {n:.2}, {}",
            verdict(n <= TARGET_REDIS_COMMANDS)
        ),
        None => println!(
            "- Redis commands per new event ≤ {TARGET_REDIS_COMMANDS}: n/a (Redis not read)"
        ),
    }
    match hook_redis("memory_bytes_per_event") {
        Some(b) => println!(
            "- Redis memory per event ≤ {TARGET_REDIS_BYTES} B: {} B, {}",
            thousands(b),
            verdict(b <= TARGET_REDIS_BYTES)
        ),
        None => println!("- Redis memory per event ≤ {TARGET_REDIS_BYTES} B: n/a (Redis not read)"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers for the script

fn wait_cmd(args: &WaitArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(wait(args))
}

async fn wait(args: &WaitArgs) -> Result<(), String> {
    let (addr, authority, path) = target(&args.url).await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        let attempt = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::get(path.as_str())
                .header(header::HOST, authority.clone())
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(resp.status())
        };
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(StatusCode::OK)) => return Ok(()),
            Ok(Ok(status)) => last = format!("answered {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer within 1 s".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{} did not answer 200 within {} s (last: {last})",
        args.url, args.timeout_secs
    ))
}

fn free_ports(n: usize) -> Result<(), String> {
    // All bound at once, so the ports are distinct; released for the caller to bind.
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot bind a port: {e}"))?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port().to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    println!("{}", ports.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use edge::sources::Source as _;

    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut prev_index = 0;
        for v in 0..1_000_000u64 {
            let i = Histogram::index(v);
            assert!(i == prev_index || i == prev_index + 1, "gap at {v}");
            assert!(Histogram::highest(i) >= v, "{v} above its bucket");
            let err = (Histogram::highest(i) - v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / 64.0, "{v}: error {err}");
            prev_index = i;
        }
        assert!(Histogram::index(u64::MAX) < Histogram::new().counts.len());
    }

    #[test]
    fn quantiles() {
        let check = |values: &[u64], q: f64, want: u64| {
            let mut h = Histogram::new();
            values.iter().for_each(|v| h.record(*v));
            assert_eq!(h.quantile(q), want, "q{q} of {values:?}");
        };
        check(&[], 0.5, 0);
        check(&[7], 0.999, 7);
        check(&[1, 2, 3, 4], 0.5, 2);
        check(&[1, 2, 3, 4], 0.75, 3);
        check(&[1, 2, 3, 4], 1.0, 4);
        // Bucketed values report the bucket's top, capped at the maximum seen.
        check(&[1000, 1000, 1000], 0.5, 1000);
        check(&[1000, 1001, 5000], 0.5, 1007);
    }

    #[test]
    fn bodies_are_unique_sized_and_valid_stripe_events() {
        let bodies = Bodies::new("0badcafe", 2048, 1_795_870_800);
        assert_eq!(bodies.len(), 2048);
        assert_eq!(bodies.number_slots.len(), 5);
        let a = bodies.event(0);
        let b = bodies.event(123_456_789);
        assert_eq!(a.len(), 2048);
        let v: Value = serde_json::from_slice(&b).expect("JSON");
        let o = &v["data"]["object"];
        assert_eq!(v["id"], "evt_0badcafe000123456789");
        assert_eq!(v["type"], "checkout.session.completed");
        assert_eq!(o["id"], "cs_test_0badcafe000123456789");
        assert_eq!(o["payment_intent"], "pi_0badcafe000123456789");
        assert_eq!(
            o["customer_details"]["email"],
            "buyer.0badcafe000123456789@example.com"
        );
        assert_eq!(o["customer_details"]["phone"], "+12123456789");
        let a: Value = serde_json::from_slice(&a).expect("JSON");
        assert_eq!(
            a["data"]["object"]["customer_details"]["phone"],
            "+12000000000"
        );
        // Below the smallest event, the smallest event.
        assert!(Bodies::new("0badcafe", 10, 0).len() > 10);
    }

    #[test]
    fn bodies_verify_with_the_edge() {
        let bodies = Bodies::new("0badcafe", 1024, 0);
        let body = bodies.event(42);
        let t = hookline_tests::now_secs();
        let verifier = edge::sources::stripe::Stripe::new([DEFAULT_SECRET.as_bytes()], 300);
        let verify = |secret: &str| {
            let mut headers = http::HeaderMap::new();
            let sig = hookline_tests::stripe_sign(secret, t, &body);
            headers.insert("stripe-signature", sig.parse().expect("header value"));
            let delivery = edge::sources::Delivery {
                headers: &headers,
                query: "",
                body: &body,
            };
            verifier.verify(delivery, t)
        };
        assert_eq!(verify(DEFAULT_SECRET), Ok(()));
        assert_eq!(
            verify(WRONG_SECRET),
            Err(edge::sources::VerifyError::Mismatch)
        );
    }

    #[test]
    fn procs_parse() {
        assert!(parse_proc("edge=42").is_ok_and(|p| p.name == "edge" && p.pid == 42));
        assert!(parse_proc("edge").is_err());
        assert!(parse_proc("=42").is_err());
        assert!(parse_proc("edge=x").is_err());
        assert!(parse_proc("edge=42").is_ok_and(|p| !p.tree));
        assert!(parse_tree("node=7").is_ok_and(|p| p.name == "node" && p.pid == 7 && p.tree));
        assert!(parse_tree("node").is_err());
    }

    #[test]
    fn descendants_of_a_process() {
        // 1 ─┬─ 10 ─┬─ 11
        //    │      └─ 12 ── 13
        //    └─ 20
        let parents = [(10, 1), (11, 10), (12, 10), (13, 12), (20, 1), (1, 0)];
        let check = |root: u32, want: &[u32]| {
            let mut got = descendants(root, &parents);
            got.sort_unstable();
            assert_eq!(got, want, "descendants of {root}");
        };
        check(10, &[11, 12, 13]);
        check(12, &[13]);
        check(13, &[]);
        check(1, &[10, 11, 12, 13, 20]);
        // A process that is not there has none.
        check(99, &[]);
        let tree = |pid: u32, tree: bool| Proc {
            name: "p".to_owned(),
            pid,
            tree,
        };
        // The root comes first: it is read before its descendants.
        let mut m = members(&tree(10, true), &parents);
        assert_eq!(m.first(), Some(&10));
        m.sort_unstable();
        assert_eq!(m, [10, 11, 12, 13]);
        assert_eq!(members(&tree(10, false), &parents), [10]);
    }

    #[test]
    fn this_process_as_a_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = Proc {
            name: "me".to_owned(),
            pid: std::process::id(),
            tree: true,
        };
        let snap = snapshot(std::slice::from_ref(&me));
        let _ = child.kill();
        let _ = child.wait();
        assert!(snap.members[0] >= 2, "{snap:?}");
        assert!(snap.procs[0].is_some());
        assert!(tree_peak_rss_kib(&me).is_some_and(|k| k > 0));
    }

    #[test]
    fn info_answers() {
        let memory =
            "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:9\r\n";
        assert_eq!(info_field(memory, "used_memory"), Some(1_048_576));
        assert_eq!(info_field(memory, "used_memory_rss"), Some(9));
        assert_eq!(info_field(memory, "used_memory_peak"), None);
        let stats = "# Commandstats\r\n\
            cmdstat_set:calls=600,usec=900,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_evalsha:calls=100,usec=1100,usec_per_call=11.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n";
        let calls = command_calls(stats);
        assert_eq!(calls.get("set"), Some(&600));
        assert_eq!(calls.get("evalsha"), Some(&100));
        assert_eq!(calls.get("client|setinfo"), Some(&2));
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn redis_costs_per_stored_event() {
        let reading = |used_memory, calls: &[(&str, u64)], stored| RedisReading {
            used_memory,
            calls: calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            stored,
        };
        let before = reading(1_000_000, &[("info", 3), ("set", 10)], 5);
        let after = reading(
            1_450_000,
            &[("info", 5), ("set", 1010), ("hset", 1000)],
            1005,
        );
        let v = redis_costs("events", &before, &after);
        assert_eq!(v["events_stored"], 1000);
        assert_eq!(v["commands"], 2002);
        assert_eq!(v["commands_per_event"], 2.002);
        assert_eq!(v["commands_per_event_by_name"]["set"], 1.0);
        assert_eq!(v["commands_per_event_by_name"]["info"], 0.002);
        assert_eq!(v["memory_bytes_per_event"], 450.0);
        // Nothing stored: no per-event figures rather than a division by zero.
        let v = redis_costs("events", &before, &before);
        assert_eq!(v["events_stored"], 0);
        assert!(v["commands_per_event"].is_null());
        assert!(v["memory_bytes_per_event"].is_null());
    }

    #[test]
    fn proc_readers_read_this_process() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(machine_ticks().is_some_and(|m| m.irq <= m.busy && m.busy <= m.total));
    }

    #[test]
    fn thousands_separators() {
        for (v, want) in [
            (0.0, "0"),
            (999.4, "999"),
            (1000.0, "1,000"),
            (1_234_567.0, "1,234,567"),
        ] {
            assert_eq!(thousands(v), want);
        }
    }
}
