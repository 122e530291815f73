//! The benchmark's baseline: an HTTP server that reads each request's body and answers
//! 200 with a small JSON body, and does nothing else. It serves with the same stack and
//! settings as the edge (hyper-util's HTTP/1 + HTTP/2 builder, `TCP_NODELAY`, bounded
//! headers, a multi-threaded tokio runtime), so hookline's throughput divided by this
//! one's is the share of the machine's HTTP capacity that hookline keeps once it
//! verifies, normalizes, calls contacts-svc and writes to Redis.
//!
//! A separate binary rather than a mode of the load generator: it must be its own
//! process so its CPU time and memory are measured apart from the load's, and it shares
//! no code with the generator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The edge's default `max_body_bytes`.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "noop",
    about = "Answers 200 to every request: the benchmark's baseline"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "NOOP_LISTEN", default_value = "127.0.0.1:8099")]
    listen: SocketAddr,

    /// Threads serving requests (default: one per core), as the services take it (one:
    /// the single-threaded scheduler).
    #[arg(long, env = "NOOP_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The same scheduler as the services for the same thread count: one worker runs on
    // the single-threaded scheduler.
    let mut runtime = match args.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                runtime.worker_threads(n.max(1));
            }
            runtime
        }
    };
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("noop: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("noop: --listen {}: cannot bind: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        () = serve(listener) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}

async fn serve(listener: TcpListener) {
    // The edge's own builder and limits, so both servers parse requests alike.
    let builder = edge::server::http_builder(&edge::limits::Limits::default());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: pause rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Reads the whole body (up to the edge's limit) and answers 200.
async fn answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
