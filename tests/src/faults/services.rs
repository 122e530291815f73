//! Redis, contacts-svc and the edge as child processes, and the faults done to them.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hookline_proto::v1::contacts_service_client::ContactsServiceClient;
use http_body_util::Full;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::{
    Redis, RedisCluster, STRIPE_SECRET, TempDir, TempFile, eventually, free_port, metric,
    now_millis, workspace_bin,
};

use super::load::Sender;
use super::{DRAIN_DEADLINE, HttpClient, START_DEADLINE, fetch, http_client};

/// A stretch of time during which the edge was down: from the moment it was killed to
/// the moment its successor answered.
#[derive(Clone, Copy, Debug)]
pub struct Down {
    pub from: Instant,
    pub to: Option<Instant>,
}

impl Down {
    /// Whether a delivery running from `started` to `ended` met the edge down.
    pub(super) fn met(&self, started: Instant, ended: Instant) -> bool {
        self.from <= ended && self.to.is_none_or(|to| started <= to)
    }
}

/// Where contacts-svc keeps its data.
#[derive(Debug)]
pub enum Backend {
    /// One Redis with AOF.
    Single(Redis),
    /// A Redis Cluster; contacts-svc waits for one replica per write.
    Cluster(RedisCluster),
}

/// Redis (one, or a cluster), contacts-svc and the edge as child processes on fixed
/// ports. Processes are killed when this is dropped; if that happens in a failing test
/// their logs are printed first.
#[derive(Debug)]
pub struct Services {
    pub backend: Backend,
    pub http_port: u16,
    metrics_port: u16,
    grpc_port: u16,
    config: TempFile,
    spool: TempDir,
    logs: TempDir,
    contacts: Option<Child>,
    edge: Option<Child>,
    /// Probes (readiness, metrics), apart from the load's connections.
    probe: HttpClient,
    downs: Vec<Down>,
}

impl Services {
    /// Starts everything, the edge with these top-level keys added to its configuration
    /// (`spool_max_bytes`, say), and waits until the edge is ready.
    pub async fn start(top: &str) -> Self {
        Self::start_on(Backend::Single(Redis::start_with(true).await), top).await
    }

    /// [`Services::start`] on a Redis Cluster of 3 masters with a replica each.
    pub async fn start_on_cluster() -> Self {
        Self::start_on(Backend::Cluster(RedisCluster::start(3, 1).await), "").await
    }

    async fn start_on(backend: Backend, top: &str) -> Self {
        let (http_port, metrics_port, grpc_port) = (free_port(), free_port(), free_port());
        let config = TempFile::new(
            "hookline-faults",
            &format!(
                "listen = \"127.0.0.1:{http_port}\"\n\
                 metrics_listen = \"127.0.0.1:{metrics_port}\"\n\
                 contacts_url = \"http://127.0.0.1:{grpc_port}\"\n\
                 contacts_timeout_ms = 2000\n\
                 shutdown_grace_secs = 5\n\
                 {top}\n\
                 [sources.stripe]\nkind = \"stripe\"\nsecrets = [\"{STRIPE_SECRET}\"]\n"
            ),
        );
        let mut services = Self {
            backend,
            http_port,
            metrics_port,
            grpc_port,
            config,
            spool: TempDir::new("hookline-faults-spool"),
            logs: TempDir::new("hookline-faults-logs"),
            contacts: None,
            edge: None,
            probe: http_client(),
            downs: Vec::new(),
        };
        services.start_contacts().await;
        services.start_edge().await;
        services.wait_ready().await;
        services
    }

    /// The one Redis (not a cluster).
    pub fn redis(&mut self) -> &mut Redis {
        match &mut self.backend {
            Backend::Single(redis) => redis,
            Backend::Cluster(_) => panic!("these services run on a cluster"),
        }
    }

    /// The cluster.
    pub fn cluster(&mut self) -> &mut RedisCluster {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster,
            Backend::Single(_) => panic!("these services run on one Redis"),
        }
    }

    /// A sender to this edge.
    pub fn sender(&self) -> Sender {
        Sender::new(self.http_port)
    }

    /// Opens `name`'s log for appending, marking where this run of it begins.
    fn log(&self, name: &str) -> (Stdio, Stdio) {
        let path = self.logs.0.join(format!("{name}.log"));
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open a log file");
        writeln!(file, "----- {name} starts at {} ms", now_millis()).expect("write the log");
        let err = file.try_clone().expect("clone the log file");
        (Stdio::from(file), Stdio::from(err))
    }

    /// Starts contacts-svc on its port and waits until the port accepts.
    pub async fn start_contacts(&mut self) {
        assert!(self.contacts.is_none(), "contacts-svc runs already");
        let (out, err) = self.log("contacts-svc");
        let child = Command::new(workspace_bin("contacts-svc"))
            .args(["--listen", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(match &self.backend {
                Backend::Single(redis) => vec!["--redis-url".to_owned(), redis.url()],
                Backend::Cluster(cluster) => vec![
                    "--redis-cluster".to_owned(),
                    cluster.urls().join(","),
                    "--redis-wait-replicas".to_owned(),
                    "1".to_owned(),
                ],
            })
            .args(["--shutdown-grace-secs", "5", "--insecure-no-auth"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("start contacts-svc");
        self.contacts = Some(child);
        let port = self.grpc_port;
        eventually(START_DEADLINE, "contacts-svc to accept", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
    }

    /// Kills contacts-svc (SIGKILL: calls in flight are cut) and waits until it is gone.
    pub async fn kill_contacts(&mut self) {
        let mut child = self.contacts.take().expect("contacts-svc runs");
        child.kill().await.expect("kill contacts-svc");
    }

    /// Starts the edge on its ports and spool directory and waits until it answers.
    pub async fn start_edge(&mut self) {
        assert!(self.edge.is_none(), "the edge runs already");
        let (out, err) = self.log("edge");
        let child = Command::new(workspace_bin("edge"))
            .args(["--config", &self.config.arg()])
            .args(["--spool-dir", &self.spool.arg()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("start the edge");
        self.edge = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port);
        eventually(START_DEADLINE, "the edge to answer", || {
            let req = get(&url);
            async { self.answer(req).await.ok().filter(|(s, _)| *s == 200) }
        })
        .await;
        if let Some(down) = self.downs.last_mut().filter(|d| d.to.is_none()) {
            down.to = Some(Instant::now());
        }
    }

    /// Kills the edge (SIGKILL: whatever it was doing, a spool write included, stops
    /// there) and waits until it is gone.
    pub async fn kill_edge(&mut self) {
        let mut child = self.edge.take().expect("the edge runs");
        self.downs.push(Down {
            from: Instant::now(),
            to: None,
        });
        child.kill().await.expect("kill the edge");
    }

    /// When the edge was down.
    pub fn downs(&self) -> &[Down] {
        &self.downs
    }

    async fn answer(&self, req: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        fetch(&self.probe, req, Duration::from_secs(5))
            .await
            .map(|(parts, body)| (parts.status.as_u16(), body))
    }

    /// `/readyz`: its status and JSON body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let (status, body) = self
            .answer(get(&url))
            .await
            .unwrap_or_else(|e| panic!("GET /readyz: {e}"));
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "/readyz is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, json)
    }

    /// The edge's metrics.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let (status, body) = self
            .answer(get(&url))
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(status, 200, "GET /metrics");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Waits until the edge reports ready: contacts-svc serving, the spool empty.
    pub async fn wait_ready(&self) {
        eventually(START_DEADLINE, "the edge to be ready", || async {
            let (status, body) = self.readyz().await;
            (status == 200 && body["status"] == "ready").then_some(())
        })
        .await;
    }

    /// Waits until the replayer has applied everything the spool held and the edge is
    /// ready again.
    pub async fn wait_drained(&self) {
        eventually(DRAIN_DEADLINE, "the spool to drain", || async {
            let entries = metric(&self.metrics().await, "hookline_edge_spool_entries", &[]);
            if entries > 0.0 {
                return None;
            }
            let (status, body) = self.readyz().await;
            (status == 200 && body["status"] == "ready").then_some(())
        })
        .await;
    }

    /// A gRPC client of contacts-svc.
    pub async fn client(&self) -> ContactsServiceClient<tonic::transport::Channel> {
        let url = format!("http://127.0.0.1:{}", self.grpc_port);
        eventually(START_DEADLINE, "contacts-svc to accept", || {
            let url = url.clone();
            async move { ContactsServiceClient::connect(url).await.ok() }
        })
        .await
    }

    /// Warnings, errors and the last lines of every process's log.
    fn print_logs(&self) {
        for name in ["edge", "contacts-svc"] {
            let path: PathBuf = self.logs.0.join(format!("{name}.log"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let notable: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| {
                    l.starts_with("-----")
                        || l.contains("WARN")
                        || l.contains("ERROR")
                        || l.contains("panicked")
                })
                .collect();
            eprintln!("===== {name}: warnings, errors and starts (last 60)");
            for l in &notable[notable.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
            eprintln!("===== {name}: last 30 lines");
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("a GET request")
}
