//! A private Redis Cluster: masters and their replicas as `redis-server` processes on
//! free ports, joined with `redis-cli --cluster create`, each in its own directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::private_redis::send_signal;
use crate::{data_dir, eventually, free_port, redis_server, says};

/// A running cluster; dropping it stops every node and removes its files.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: Child,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, every slot covered.
    pub async fn start(masters: usize, replicas: usize) -> Self {
        let dir = data_dir("hookline-cluster");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("create a node's directory");
            let child = spawn_node(port, &node_dir);
            nodes.push(Node { port, child });
        }
        let cluster = Self { nodes, dir };
        for node in &cluster.nodes {
            let url = format!("redis://127.0.0.1:{}", node.port);
            eventually(Duration::from_secs(10), "a cluster node to answer", || {
                let url = url.clone();
                async move { crate::ping(&url).await.then_some(()) }
            })
            .await;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = addresses;
        args.extend(["--cluster-replicas".to_owned(), replicas.to_string()]);
        cluster_cli("create", &args).await;
        // Every node must know the whole cluster, and every replica be in sync (or a
        // write waiting for one would wait), before it is used.
        cluster.wait_in_sync().await;
        cluster
    }

    /// Kills a master (SIGKILL) and waits until its replica has taken over its slots and
    /// the cluster covers every slot again; the killed node's port. For `behind` before
    /// the kill, the replica is frozen (SIGSTOP) and its link cut, so that it misses every
    /// write the master acknowledges meanwhile, as a replica that lags does: replication
    /// is asynchronous, and what the replica missed is lost with the master.
    pub async fn kill_a_master(&mut self, behind: Duration) -> u16 {
        let mut master = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if replication(node.port).await == Some((false, false)) {
                master = Some(i);
                break;
            }
        }
        let master = master.expect("a master");
        let killed = self.nodes[master].port;
        let id = cluster_command(killed, "MYID")
            .await
            .expect("the master's id");
        let replica = replica_of(killed).await.expect("the master's replica");
        let replica = self
            .nodes
            .iter()
            .find(|n| n.port == replica)
            .and_then(|n| n.child.id())
            .expect("the replica runs");
        // Frozen, and cut off: what the master sent before is in the replica's socket
        // and reaches it when it thaws; what the master acknowledges from now on stays
        // in its backlog, which dies with it.
        send_signal(replica, "-STOP");
        let mut on_master = connect(killed).await.expect("connect to the master");
        let _: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "replica"])
            .query_async(&mut on_master)
            .await
            .expect("CLIENT KILL TYPE replica");
        tokio::time::sleep(behind).await;
        let node = &mut self.nodes[master];
        node.child.start_kill().expect("kill a master");
        let _ = node.child.wait().await;
        send_signal(replica, "-CONT");
        for node in self.nodes.iter().filter(|n| n.port != killed) {
            let (port, id) = (node.port, id.clone());
            eventually(Duration::from_secs(30), "a replica to take over", || {
                let id = id.clone();
                async move {
                    // The killed node marked failed, holding no slot any more.
                    let nodes = cluster_command(port, "NODES").await?;
                    let line = nodes.lines().find(|l| l.starts_with(id.as_str()))?;
                    let taken_over = line.contains("fail") && line.split(' ').count() <= 8;
                    (taken_over && covers_every_slot(port).await?).then_some(())
                }
            })
            .await;
        }
        killed
    }

    /// `CLUSTER FAILOVER` on a replica: it and its master agree on a moment when the
    /// replica holds every write, then swap roles. Returns once the replica serves its
    /// slots as a master and the old master follows it in sync; the promoted node's port.
    pub async fn fail_over(&mut self) -> u16 {
        let mut replica = None;
        for node in &self.nodes {
            if replication(node.port).await == Some((true, true)) {
                replica = Some(node.port);
                break;
            }
        }
        let port = replica.expect("a replica in sync");
        let mut c = connect(port).await.expect("connect to a replica");
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query_async(&mut c)
            .await
            .expect("CLUSTER FAILOVER");
        eventually(
            Duration::from_secs(30),
            "the replica to take over",
            || async move {
                let promoted = replication(port).await? == (false, false);
                (promoted && covers_every_slot(port).await?).then_some(())
            },
        )
        .await;
        self.wait_in_sync().await;
        port
    }

    /// Moves `slots` slots from one master to another with `redis-cli --cluster reshard`,
    /// key by key (`MIGRATE`), while the cluster serves; returns once it is done.
    pub async fn reshard(&self, slots: usize) {
        let mut masters = Vec::new();
        for node in &self.nodes {
            if replication(node.port).await == Some((false, false)) {
                let id = cluster_command(node.port, "MYID").await.expect("an id");
                masters.push((node.port, id));
            }
        }
        let [(port, from), (_, to), ..] = masters.as_slice() else {
            panic!("two masters to reshard between: {masters:?}");
        };
        let args = [
            format!("127.0.0.1:{port}"),
            "--cluster-from".to_owned(),
            from.clone(),
            "--cluster-to".to_owned(),
            to.clone(),
            "--cluster-slots".to_owned(),
            slots.to_string(),
        ];
        cluster_cli("reshard", &args).await;
    }

    /// Waits until every node sees every slot covered and every replica is in sync.
    async fn wait_in_sync(&self) {
        for node in &self.nodes {
            let port = node.port;
            eventually(
                Duration::from_secs(20),
                "the cluster to be ready",
                || async move {
                    let (replica, up) = replication(port).await?;
                    (covers_every_slot(port).await? && (!replica || up)).then_some(())
                },
            )
            .await;
        }
    }

    /// Starts the node on `port` again (killed before): it rejoins as a replica of the
    /// master that took its place, and the call returns once it is in sync.
    pub async fn restart(&mut self, port: u16) {
        let dir = self.dir.join(port.to_string());
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        node.child = spawn_node(port, &dir);
        eventually(
            Duration::from_secs(30),
            "the node to rejoin in sync",
            || async move { (replication(port).await? == (true, true)).then_some(()) },
        )
        .await;
    }

    /// The nodes' URLs, as `contacts-svc --redis-cluster` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Empties every master (`FLUSHALL`); their replicas follow.
    pub async fn flush(&self) {
        for node in &self.nodes {
            if replication(node.port).await != Some((false, false)) {
                continue;
            }
            let mut c = connect(node.port).await.expect("connect to a master");
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut c)
                .await
                .expect("FLUSHALL");
        }
    }

    /// The number of keys each master holds (`DBSIZE`).
    pub async fn keys_per_master(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            if replication(node.port).await != Some((false, false)) {
                continue;
            }
            let mut c = connect(node.port).await.expect("connect to a master");
            let n: u64 = redis::cmd("DBSIZE")
                .query_async(&mut c)
                .await
                .expect("DBSIZE");
            counts.push(n);
        }
        counts
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cluster node on `port` with its files in `dir` (a node started again on the same
/// directory rejoins the cluster it knew).
fn spawn_node(port: u16, dir: &std::path::Path) -> Child {
    Command::new(redis_server())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", "2000"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a cluster node (redis-server)")
}

async fn connect(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    client.get_multiplexed_async_connection().await.ok()
}

/// `CLUSTER <sub>` on one node, its answer as text.
async fn cluster_command(port: u16, sub: &str) -> Option<String> {
    let mut c = connect(port).await?;
    redis::cmd("CLUSTER")
        .arg(sub)
        .query_async(&mut c)
        .await
        .ok()
}

/// Whether the node sees every slot covered.
async fn covers_every_slot(port: u16) -> Option<bool> {
    Some(says(
        &cluster_command(port, "INFO").await?,
        "cluster_state:ok",
    ))
}

/// Whether the node is a replica, and whether its link to its master is up.
async fn replication(port: u16) -> Option<(bool, bool)> {
    let mut c = connect(port).await?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .ok()?;
    Some((
        says(&info, "role:slave"),
        says(&info, "master_link_status:up"),
    ))
}

/// The port of the first replica of the master on `port`.
async fn replica_of(port: u16) -> Option<u16> {
    let mut c = connect(port).await?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .ok()?;
    // slave0:ip=127.0.0.1,port=7004,state=online,offset=…,lag=0
    let line = info.lines().find(|l| l.starts_with("slave0:"))?;
    let port = line.split(',').find_map(|f| f.strip_prefix("port="))?;
    port.parse().ok()
}

/// `redis-cli --cluster <command> <args> --cluster-yes`, which must succeed.
async fn cluster_cli(command: &str, args: &[String]) {
    let out = Command::new(redis_cli())
        .args(["--cluster", command])
        .args(args)
        .arg("--cluster-yes")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run redis-cli --cluster {command}: {e}"));
    assert!(
        out.status.success(),
        "redis-cli --cluster {command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn redis_cli() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}
