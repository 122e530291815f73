//! The benchmark's load generator (`make bench` runs it from `bench/run.sh`). It owns the
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

mod bodies;
mod histogram;
mod load;
mod procfs;
mod redis_stats;
mod report;
mod run;
#[cfg(test)]
mod tests;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::report::table_cmd;
use crate::run::run_cmd;
use crate::wait::{free_ports, wait_cmd};

/// Secret the bench configuration gives the edge's `stripe` source.
pub(crate) const DEFAULT_SECRET: &str = "whsec_hookline_bench_only";
/// What bad-signature requests are signed with: a well-formed signature, wrong key.
pub(crate) const WRONG_SECRET: &str = "whsec_not_the_configured_secret";
/// Acknowledged events each connection remembers for re-sending as duplicates.
pub(crate) const ACKED_MEMORY: usize = 256;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "hookline's benchmark load generator")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct RunArgs {
    /// Name of the run in the summary and the table.
    #[arg(long, env = "LOADGEN_LABEL", default_value = "run")]
    pub(crate) label: String,
    /// Where to POST, e.g. http://127.0.0.1:8080/webhooks/stripe (plain HTTP/1.1).
    #[arg(long, env = "LOADGEN_URL")]
    pub(crate) url: http::Uri,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 64)]
    pub(crate) connections: usize,
    /// Seconds of load before the measured window (not recorded).
    #[arg(long, env = "LOADGEN_WARMUP", default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Seconds in the measured window.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// End the window after this many answered requests (`--duration` stays a cap).
    #[arg(long, env = "LOADGEN_EVENTS")]
    pub(crate) events: Option<u64>,
    /// Size of each event body in bytes (padded through the session's metadata).
    #[arg(long, env = "LOADGEN_SIZE", default_value_t = 2048)]
    pub(crate) size: usize,
    /// Share of requests that re-send an event already acknowledged (expect 200
    /// "duplicate").
    #[arg(long, env = "LOADGEN_DUP_RATIO", default_value_t = 0.0)]
    pub(crate) dup_ratio: f64,
    /// Share of requests signed with the wrong secret (expect 401).
    #[arg(long, env = "LOADGEN_BAD_SIG_RATIO", default_value_t = 0.0)]
    pub(crate) bad_sig_ratio: f64,
    /// The source's signing secret.
    #[arg(long, env = "LOADGEN_SECRET", default_value = DEFAULT_SECRET, hide_env_values = true)]
    pub(crate) secret: String,
    /// Bound on each request, from sending to the last byte of the answer (ms).
    #[arg(long, env = "LOADGEN_TIMEOUT_MS", default_value_t = 5000)]
    pub(crate) timeout_ms: u64,
    /// Runtime worker threads; 0 means one per core. One thread costs the fewest CPU
    /// microseconds per request; the summary warns if it limited the run.
    #[arg(long, env = "LOADGEN_THREADS", default_value_t = 1)]
    pub(crate) threads: usize,
    /// A process of the system under test, `name=pid`: CPU and peak RSS are reported,
    /// and the RSS target applies.
    #[arg(long = "service", value_parser = parse_proc)]
    pub(crate) services: Vec<Proc>,
    /// A process of the system under test measured together with its descendants,
    /// `name=pid`: a Node.js cluster's primary and its workers. CPU and peak RSS are
    /// summed over the processes.
    #[arg(long = "service-tree", value_parser = parse_tree)]
    pub(crate) service_trees: Vec<Proc>,
    /// Another process to account for, `name=pid` (CPU and RSS reported, no target).
    #[arg(long = "watch", value_parser = parse_proc)]
    pub(crate) watched: Vec<Proc>,
    /// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`).
    #[arg(long, env = "LOADGEN_CLK_TCK", default_value_t = 100)]
    pub(crate) clk_tck: u64,
    /// Write the measurements here as JSON.
    #[arg(long, env = "LOADGEN_OUT")]
    pub(crate) out: Option<PathBuf>,
    /// The system's Redis, e.g. redis://127.0.0.1:6379, or the masters of a Redis Cluster,
    /// comma-separated (their counts are summed): read before and after the run for Redis
    /// commands and bytes of memory per stored event (needs `--redis-events`).
    #[arg(long, env = "LOADGEN_REDIS", requires = "redis_events")]
    pub(crate) redis: Option<String>,
    /// The key that holds one entry per stored event (a sorted set, stream, set, list
    /// or hash); its size after the run minus before is the events stored.
    #[arg(long, env = "LOADGEN_REDIS_EVENTS", requires = "redis")]
    pub(crate) redis_events: Option<String>,
    /// `--redis-events` is a stream whose entries name several events, one per field
    /// (hookline logs a batch's events in one entry): count fields, not entries.
    #[arg(long, requires = "redis_events")]
    pub(crate) redis_events_per_field: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TableArgs {
    /// JSON written by `run` against the no-op baseline.
    #[arg(long)]
    pub(crate) baseline: PathBuf,
    /// JSON written by `run` against hookline.
    #[arg(long)]
    pub(crate) hookline: PathBuf,
    /// JSON written by `run` against the Node.js yardstick (`bench/node`).
    #[arg(long)]
    pub(crate) node: Option<PathBuf>,
    /// A further Node.js run and the hookline run right after it, `NODE_JSON,HOOKLINE_JSON`:
    /// the ratio to Node.js is judged by its median over every pair (`--node` and
    /// `--hookline` the first), so that a slow spell of a shared machine during one run
    /// does not decide it.
    #[arg(
        long = "pair",
        value_name = "NODE_JSON,HOOKLINE_JSON",
        requires = "node"
    )]
    pub(crate) pairs: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    #[arg(long)]
    pub(crate) url: http::Uri,
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout_secs: u64,
}

/// A process to measure.
#[derive(Clone, Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// Measured with its descendants, as one.
    pub(crate) tree: bool,
}

pub(crate) fn parse_tree(s: &str) -> Result<Proc, String> {
    Ok(Proc {
        tree: true,
        ..parse_proc(s)?
    })
}

pub(crate) fn parse_proc(s: &str) -> Result<Proc, String> {
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

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
