//! Helpers for the script: free ports, waiting for an endpoint.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::WaitArgs;
use crate::load::target;

pub(crate) fn wait_cmd(args: &WaitArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(wait(args))
}

pub(crate) async fn wait(args: &WaitArgs) -> Result<(), String> {
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

pub(crate) fn free_ports(n: usize) -> Result<(), String> {
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
