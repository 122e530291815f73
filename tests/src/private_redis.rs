//! A private `redis-server` on a free port, with its own data directory: plain or
//! speaking only TLS, a replica of another, killed, frozen and restarted at will.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{eventually, free_port};

/// A private `redis-server` with its own data directory.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    aof: bool,
    /// The port of the master this server replicates.
    replica_of: Option<u16>,
    /// Serving TLS only (`rediss://`), asking clients for a certificate.
    tls: Option<Box<RedisTlsFiles>>,
}

/// The files of a Redis that serves TLS: its certificate and key, the authority its
/// clients' certificates come from, and a client certificate for the harness itself.
#[derive(Clone, Debug)]
pub struct RedisTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisTlsFiles {
    /// What a client needs to reach such a Redis.
    pub fn client(&self) -> contacts_svc::RedisTls {
        let read = |p: &PathBuf| std::fs::read(p).expect("read a TLS file");
        contacts_svc::RedisTls {
            ca: Some(read(&self.ca)),
            client: Some((read(&self.client_cert), read(&self.client_key))),
        }
    }
}

impl Redis {
    /// Starts a private server on a free port. Persistence is off unless `aof`.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    pub async fn start_with(aof: bool) -> Self {
        let dir = data_dir("hookline-redis");
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir,
            aof,
            replica_of: None,
            tls: None,
        };
        redis.spawn().await;
        redis
    }

    /// A server that speaks only TLS, and asks every client for a certificate of `tls.ca`.
    pub async fn start_tls(tls: RedisTlsFiles) -> Self {
        let dir = data_dir("hookline-redis");
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir,
            aof: false,
            replica_of: None,
            tls: Some(Box::new(tls)),
        };
        redis.spawn().await;
        redis
    }

    /// A replica of `master`, once it has synchronized.
    pub async fn start_replica_of(master: &Redis) -> Self {
        let dir = data_dir("hookline-redis");
        let mut replica = Self {
            child: None,
            port: free_port(),
            dir,
            aof: false,
            replica_of: Some(master.port),
            tls: None,
        };
        replica.spawn().await;
        let c = replica.conn().await;
        eventually(
            Duration::from_secs(10),
            "the replica to synchronize",
            || {
                let mut c = c.clone();
                async move {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    says(&info, "master_link_status:up").then_some(())
                }
            },
        )
        .await;
        replica
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(redis_server());
        match &self.tls {
            None => cmd.arg("--port").arg(self.port.to_string()),
            Some(tls) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "yes"]),
        };
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("everysec")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(
                self.replica_of
                    .map(|port| {
                        vec![
                            "--replicaof".to_owned(),
                            "127.0.0.1".to_owned(),
                            port.to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}); install it (make test does: apt-get install redis-server)"
            )
        });
        self.child = Some(child);
        eventually(
            Duration::from_secs(10),
            "redis-server to answer",
            || async { ping_client(&self.client()).await.then_some(()) },
        )
        .await;
    }

    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            // The certificate names the host.
            Some(_) => format!("rediss://localhost:{}/0", self.port),
        }
    }

    /// What a client of this server needs when it speaks TLS.
    pub fn tls_client(&self) -> Option<contacts_svc::RedisTls> {
        self.tls.as_ref().map(|files| files.client())
    }

    /// A client of this server, with the harness's certificate when it speaks TLS.
    fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).expect("redis url"),
            Some(tls) => {
                let client = tls.client();
                let certs = redis::TlsCertificates {
                    client_tls: client.client.map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: client.ca,
                };
                redis::Client::build_with_tls(self.url(), certs).expect("rediss url")
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and commands wait, as with a
    /// Redis that hangs.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the server runs");
        send_signal(pid, signal);
    }

    /// Kills the server (SIGKILL: no chance to save) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts the server again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Stops the server as an operator does (SIGTERM: it flushes its append-only file
    /// and exits) and waits until it is gone. Unlike [`Redis::kill`], nothing it
    /// acknowledged is lost, whatever the fsync policy.
    pub async fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            assert!(
                matches!(&exited, Ok(Ok(status)) if status.success()),
                "redis-server did not stop cleanly on SIGTERM: {exited:?}"
            );
        }
    }

    /// Starts a stopped server again on the same port and data directory, and waits
    /// until it answers (it has read its append-only file back).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        self.spawn().await;
    }

    /// A plain connection for inspecting what the services stored.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis")
    }

    /// Number of keys holding data: every key but the storage layout's version, which
    /// contacts-svc writes into an empty database as soon as it reaches it.
    pub async fn dbsize(&self) -> u64 {
        let mut c = self.conn().await;
        let (keys, marker): (u64, u64) = redis::pipe()
            .cmd("DBSIZE")
            .exists("hl:schema")
            .query_async(&mut c)
            .await
            .expect("DBSIZE");
        keys - marker
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn redis_server() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

pub(crate) async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    ping_client(&client).await
}

async fn ping_client(client: &redis::Client) -> bool {
    let Ok(Ok(mut c)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .is_ok()
}

/// Whether an `INFO`-style answer holds the line `line`.
pub(crate) fn says(info: &str, line: &str) -> bool {
    info.lines().any(|l| l.trim() == line)
}

/// A new directory of its own under the system's temporary directory.
pub(crate) fn data_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), uuid_ish()));
    std::fs::create_dir_all(&dir).expect("create a data directory");
    dir
}

pub(crate) fn uuid_ish() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Sends a signal to a process (`kill -STOP`, say), which must succeed.
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}
