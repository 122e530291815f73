//! Parses flags and configuration and wires the edge together; everything else lives in
//! the library.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser as _;
use edge::config::{Args, Config, LogFormat};
use edge::problem::Problems;

// Both services allocate small, short-lived buffers for every request (HTTP, protobuf,
// JSON); mimalloc handles them with markedly less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A runtime of `threads` workers. One worker runs on the single-threaded scheduler: the
/// service then never hands work between threads, which costs the least CPU per request
/// (about 7 % less than the work-stealing scheduler with one worker, in `make bench`).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.check_config {
        return check_config(&args);
    }
    let runtime = runtime(
        args.worker_threads
            .map_or_else(available_cores, usize::from),
    );
    let result = match runtime {
        Ok(rt) => rt.block_on(start(args)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--check-config`: every problem on a line of its own, or what the file configures.
fn check_config(args: &Args) -> std::process::ExitCode {
    match Config::load(args) {
        Ok(config) => {
            println!("{}: ok", args.config.display());
            for line in config.summary() {
                println!("  {line}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("edge: {}", problem_lines(&problems));
            eprintln!(
                "edge: {}: {} problem{}",
                args.config.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every problem of a file on a line of its own, each after `edge: ` (the first line's
/// comes from whoever prints it).
fn problem_lines(problems: &Problems) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\nedge: ")
}

async fn start(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid filter", args.log))?;
    let config = Config::load(&args).map_err(|p| anyhow::anyhow!("{}", problem_lines(&p)))?;
    // Colours only for a terminal: in a file or a pipe they are noise, and cost CPU per line.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", config.listen))?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot bind"))?,
        ),
        None => None,
    };
    let admin = match config.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--admin-listen {addr}: cannot bind"))?,
        ),
        None => None,
    };
    let spool = edge::Spool::open(&config.spool_dir, config.spool_max_bytes)
        .with_context(|| format!("spool_dir {}", config.spool_dir.display()))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        spooled = spool.0.stats().entries(),
        sources = ?config.sources.keys().collect::<Vec<_>>(),
        contacts = ?config.contacts_urls.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "edge started"
    );
    let listeners = edge::Listeners {
        webhooks: listener,
        metrics,
        admin,
    };
    edge::run(listeners, config, spool, shutdown_signal()).await;
    tracing::info!("edge stopped");
    Ok(())
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
}
