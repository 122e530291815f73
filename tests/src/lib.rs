//! Test harness for the end-to-end suite and the benchmark: a private `redis-server` on a
//! free port (which the harness can kill and restart), contacts-svc and the edge on
//! port 0 over real TCP, an HTTP client, a gRPC client, and signing helpers that sign
//! exactly as the providers do.
//!
//! The harness only ever talks to the Redis it started.

mod cluster;
pub mod faults;
mod private_redis;

pub use cluster::RedisCluster;
pub use private_redis::{Redis, RedisTlsFiles};
pub(crate) use private_redis::{data_dir, ping, redis_server, says};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookline_proto::v1::{self, contacts_service_client::ContactsServiceClient};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::oneshot;

pub use edge::sources::stripe::sign as stripe_sign;

/// Secret of the `stripe` source in [`Stack::start`]'s default configuration.
pub const STRIPE_SECRET: &str = "whsec_hookline_test_secret";

/// Polls `check` until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        // A check that hangs (a request that never gets an answer) fails at the
        // deadline too, instead of holding the test forever.
        if let Ok(Some(v)) = tokio::time::timeout_at(until, check()).await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// A running contacts-svc in this process, on a real TCP port.
#[derive(Debug)]
pub struct ContactsSvc {
    pub addr: SocketAddr,
    /// Where its Prometheus metrics are served.
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ContactsSvc {
    pub async fn start(redis_url: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address"), redis_url).await
    }

    pub async fn start_on(addr: SocketAddr, redis_url: &str) -> Self {
        Self::start_with_options(addr, redis_url, contacts_svc::StoreOptions::default()).await
    }

    /// A contacts-svc on `redis_url` with these store options.
    pub async fn start_with_options(
        addr: SocketAddr,
        redis_url: &str,
        options: contacts_svc::StoreOptions,
    ) -> Self {
        let store = contacts_svc::Store::open(redis_url, options).expect("redis url");
        Self::start_with_store(addr, store, contacts_svc::Auth::Disabled, None).await
    }

    /// A contacts-svc on `master` that counts an event as applied only once one replica
    /// holds its writes, waiting 300 ms for it (`--redis-wait-replicas 1`).
    pub async fn start_waiting_for_a_replica(master: &Redis) -> Self {
        let options = contacts_svc::StoreOptions {
            wait_replicas: 1,
            wait_timeout: Duration::from_millis(300),
            ..contacts_svc::StoreOptions::default()
        };
        Self::start_with_options(
            "127.0.0.1:0".parse().expect("address"),
            &master.url(),
            options,
        )
        .await
    }

    /// A contacts-svc on `redis_url` that lets in only the callers `auth` names.
    pub async fn start_with_auth(redis_url: &str, auth: contacts_svc::Auth) -> Self {
        let options = contacts_svc::StoreOptions::default();
        let store = contacts_svc::Store::open(redis_url, options).expect("redis url");
        let addr = "127.0.0.1:0".parse().expect("address");
        Self::start_with_store(addr, store, auth, None).await
    }

    /// [`ContactsSvc::start_with_auth`] on `redis` (over TLS when it speaks it), serving
    /// gRPC over `tls` when given.
    pub async fn start_secured(
        redis: &Redis,
        auth: contacts_svc::Auth,
        tls: Option<hookline_tls::ServerTls>,
    ) -> Self {
        let options = contacts_svc::StoreOptions {
            tls: redis.tls_client(),
            ..contacts_svc::StoreOptions::default()
        };
        let store = contacts_svc::Store::open(&redis.url(), options).expect("redis url");
        let addr = "127.0.0.1:0".parse().expect("address");
        Self::start_with_store(addr, store, auth, tls).await
    }

    /// A contacts-svc on the Redis Cluster these nodes belong to, with these store options.
    pub async fn start_on_cluster(nodes: &[String], options: contacts_svc::StoreOptions) -> Self {
        let store = contacts_svc::Store::open_cluster(nodes, options).expect("cluster urls");
        let addr = "127.0.0.1:0".parse().expect("address");
        Self::start_with_store(addr, store, contacts_svc::Auth::Disabled, None).await
    }

    async fn start_with_store(
        addr: SocketAddr,
        store: contacts_svc::Store,
        auth: contacts_svc::Auth,
        tls: Option<hookline_tls::ServerTls>,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind contacts-svc");
        let addr = listener.local_addr().expect("local address");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind contacts-svc metrics");
        let metrics_addr = metrics.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let deps = contacts_svc::Deps {
            store,
            default_region: contacts_svc::Region::parse("default_region", "US").expect("region"),
            shutdown_grace: Duration::from_secs(5),
            metrics_listener: Some(metrics),
            auth,
            tls,
        };
        let task = tokio::spawn(async move {
            contacts_svc::run(listener, deps, async {
                let _ = stopped.await;
            })
            .await
            .expect("contacts-svc serves");
        });
        Self {
            addr,
            metrics_addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A gRPC client over a fresh connection.
    pub async fn client(&self) -> ContactsServiceClient<tonic::transport::Channel> {
        let url = self.url();
        eventually(Duration::from_secs(10), "contacts-svc to accept", || {
            let url = url.clone();
            async move { ContactsServiceClient::connect(url).await.ok() }
        })
        .await
    }

    /// The contact holding `email`, over a fresh connection.
    pub async fn lookup_email(&self, email: &str) -> Result<v1::Contact, tonic::Status> {
        self.client()
            .await
            .lookup_contact(v1::LookupContactRequest {
                key: Some(v1::lookup_contact_request::Key::Email(email.to_owned())),
                phone_region: String::new(),
            })
            .await
            .map(|r| r.into_inner().contact.unwrap_or_default())
    }

    /// The contact `id` resolves to (the survivor, for a merged id).
    pub async fn get_contact(&self, id: &str) -> Result<v1::Contact, tonic::Status> {
        self.client()
            .await
            .get_contact(v1::GetContactRequest {
                contact_id: id.to_owned(),
            })
            .await
            .map(|r| r.into_inner().contact.unwrap_or_default())
    }

    /// The first page of the webhook log that `filter` selects, newest first.
    pub async fn events(&self, filter: v1::ListEventsRequest) -> Vec<v1::EventRecord> {
        self.client()
            .await
            .list_events(filter.clone())
            .await
            .map(|r| r.into_inner().events)
            .unwrap_or_else(|e| panic!("ListEvents {filter:?}: {e}"))
    }

    /// The first page of the contacts listing, up to 500, newest first.
    pub async fn contacts(&self) -> Vec<v1::Contact> {
        self.client()
            .await
            .list_contacts(v1::ListContactsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().contacts)
            .unwrap_or_else(|e| panic!("ListContacts: {e}"))
    }

    /// One `ApplyEvents` call of `items`: each item's answer, in order.
    pub async fn apply_events(
        &self,
        items: Vec<v1::ApplyEventsItem>,
    ) -> Vec<v1::ApplyEventResponse> {
        self.client()
            .await
            .apply_events(v1::ApplyEventsRequest { items })
            .await
            .unwrap_or_else(|e| panic!("ApplyEvents: {e}"))
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.response.expect("an answer for every item"))
            .collect()
    }

    /// The webhook log's record of event `id` (none when there is no record).
    pub async fn record(&self, id: &str) -> Vec<v1::EventRecord> {
        self.events(v1::ListEventsRequest {
            event_ids: vec![id.to_owned()],
            ..Default::default()
        })
        .await
    }

    /// The first page of the webhook log entries of contact `id`, newest first.
    pub async fn contact_events(&self, id: &str) -> Vec<v1::EventRecord> {
        self.events(v1::ListEventsRequest {
            contact_id: id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ContactsSvc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running edge in this process, on a real TCP port.
#[derive(Debug)]
pub struct Edge {
    pub addr: SocketAddr,
    /// The metrics listener, when it is separate ([`Edge::start_with_metrics_listener`]).
    pub metrics_addr: Option<SocketAddr>,
    /// The internal gRPC API (`edge.v1.ReplayService`).
    pub admin_addr: SocketAddr,
    /// Its spool's directory: private to the edge unless the caller gave one.
    pub spool_dir: Arc<TempDir>,
    /// Held while the edge runs: sending or dropping it starts the edge's shutdown.
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    /// Starts the edge with `toml` (whose `contacts_url` the caller sets).
    pub async fn start(toml: &str) -> Self {
        Self::start_on(toml, None, Arc::new(TempDir::new("hookline-spool"))).await
    }

    /// [`Edge::start`] with `GET /metrics` on a listener of its own.
    pub async fn start_with_metrics_listener(toml: &str) -> Self {
        Self::start_with_spool(toml, Arc::new(TempDir::new("hookline-spool"))).await
    }

    /// [`Edge::start_with_metrics_listener`] spooling into `spool_dir` (the directory of
    /// an edge that stopped, say).
    pub async fn start_with_spool(toml: &str, spool_dir: Arc<TempDir>) -> Self {
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        Self::start_on(toml, Some(metrics), spool_dir).await
    }

    async fn start_on(toml: &str, metrics: Option<TcpListener>, spool_dir: Arc<TempDir>) -> Self {
        Self::start_on_listener(
            TcpListener::bind("127.0.0.1:0").await.expect("bind edge"),
            toml,
            metrics,
            spool_dir,
        )
        .await
    }

    /// Starts an edge on `listener` (the port of an edge that stopped, say).
    pub async fn start_on_listener(
        listener: TcpListener,
        toml: &str,
        metrics: Option<TcpListener>,
        spool_dir: Arc<TempDir>,
    ) -> Self {
        let addr = listener.local_addr().expect("local address");
        let metrics_addr = metrics
            .as_ref()
            .map(|m| m.local_addr().expect("local address"));
        let args = edge::config::Args::for_file("test.toml");
        let mut config = edge::Config::parse(toml, Path::new("."), &args, &|_| None)
            .unwrap_or_else(|e| panic!("test config: {e}"));
        config.spool_dir = spool_dir.0.clone();
        let spool = edge::Spool::open(&config.spool_dir, config.spool_max_bytes)
            .unwrap_or_else(|e| panic!("spool: {e}"));
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin_addr = admin.local_addr().expect("local address");
        let listeners = edge::Listeners {
            webhooks: listener,
            metrics,
            admin: Some(admin),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(edge::run(listeners, config, spool, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics_addr,
            admin_addr,
            spool_dir,
            stop: Some(stop),
            task,
        }
    }

    /// Shuts the edge down as SIGTERM does and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the metrics listener; panics when the edge has none.
    pub fn metrics_url(&self, path: &str) -> String {
        let addr = self
            .metrics_addr
            .expect("an edge started with a metrics listener");
        format!("http://{addr}{path}")
    }

    /// POSTs a Stripe event signed now with [`STRIPE_SECRET`] to `/webhooks/stripe`.
    pub async fn post_stripe(&self, http: &Http, body: &[u8]) -> Reply {
        let sig = stripe_sign(STRIPE_SECRET, now_secs(), body);
        http.post(
            &self.url("/webhooks/stripe"),
            body.to_vec(),
            &[("stripe-signature", &sig)],
        )
        .await
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Redis, contacts-svc and the edge, wired together.
#[derive(Debug)]
pub struct Stack {
    pub redis: Redis,
    pub contacts: ContactsSvc,
    pub edge: Edge,
    pub http: Http,
}

impl Stack {
    /// The whole pipeline with a `stripe` source signed with [`STRIPE_SECRET`].
    pub async fn start() -> Self {
        Self::start_with_redis(Redis::start().await).await
    }

    /// [`Stack::start`] on a Redis the caller started (with AOF, say).
    pub async fn start_with_redis(redis: Redis) -> Self {
        Self::start_on(redis, "", &stripe_source()).await
    }

    /// The whole pipeline with these `[sources.*]` tables and a 64 KiB body limit.
    pub async fn start_with_sources(sources: &str) -> Self {
        Self::start_on(Redis::start().await, "", sources).await
    }

    /// [`Stack::start`] with these top-level keys added to the edge's configuration
    /// (connection limits, say; not `contacts_url`, `max_body_bytes` or
    /// `contacts_timeout_ms`, which the stack sets).
    pub async fn start_with_config(top: &str) -> Self {
        Self::start_on(Redis::start().await, top, &stripe_source()).await
    }

    async fn start_on(redis: Redis, top: &str, sources: &str) -> Self {
        let contacts = ContactsSvc::start(&redis.url()).await;
        let toml = format!(
            "contacts_url = \"{}\"\nmax_body_bytes = 65536\ncontacts_timeout_ms = 5000\n{top}\n{sources}",
            contacts.url()
        );
        // Metrics on a port of their own, as a deployment serves them: the webhook port
        // serves none by default.
        let edge = Edge::start_with_metrics_listener(&toml).await;
        let stack = Self {
            redis,
            contacts,
            edge,
            http: Http::new(),
        };
        stack.wait_ready().await;
        stack
    }

    /// Waits until the edge reports ready (contacts-svc SERVING, so Redis answers).
    pub async fn wait_ready(&self) {
        let url = self.edge.url("/readyz");
        let http = self.http.clone();
        eventually(
            Duration::from_secs(10),
            "edge /readyz to answer 200",
            || {
                let (url, http) = (url.clone(), http.clone());
                async move { (http.get(&url).await.status == 200).then_some(()) }
            },
        )
        .await;
    }

    /// POSTs a Stripe event signed now with [`STRIPE_SECRET`].
    pub async fn post_stripe(&self, body: &[u8]) -> Reply {
        self.edge.post_stripe(&self.http, body).await
    }
}

/// The `stripe` source signed with [`STRIPE_SECRET`], as a `[sources.stripe]` table.
pub fn stripe_source() -> String {
    format!("[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"{STRIPE_SECRET}\"]\n")
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A keep-alive HTTP/1.1 client.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(http::Method::GET, url, Vec::new(), &[]).await
    }

    pub async fn post(&self, url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        self.send(http::Method::POST, url, body, headers).await
    }

    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = self.client.request(req).await.expect("HTTP request");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("HTTP body").to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}

/// The directory of fixtures checked into the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Reads a fixture file.
pub fn fixture(path: &str) -> Vec<u8> {
    let p = fixtures().join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A Stripe `checkout.session.completed` event, compact JSON, with these values.
pub fn stripe_checkout(event_id: &str, email: &str, amount: i64, payment_intent: &str) -> Vec<u8> {
    serde_json::json!({
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now_secs(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": format!("cs_test_{event_id}"),
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": "usd",
            "customer": null,
            "customer_details": {
                "address": {"country": "US"},
                "email": email,
                "name": "Jenny Rosen",
                "phone": "+14155550100"
            },
            "customer_email": null,
            "mode": "payment",
            "payment_intent": payment_intent,
            "payment_status": "paid",
            "status": "complete"
        }}
    })
    .to_string()
    .into_bytes()
}

/// Path of a binary built from this workspace (`cargo build --bins`; `make test` does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test binary> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built; run `cargo build --bins` first (make test does)",
        bin.display()
    );
    bin
}

/// Signs `body` as a sender does, with `tests/fixtures/senders/sign.py`: Python's own
/// `hmac` and `base64`, and for Standard Webhooks the official `standardwebhooks`
/// package, so no line of hookline's code takes part in making the signature. `args`
/// are the script's (`["github", secret]`, `["standard-webhooks", secret, id, ts]`, …).
/// The package is found on `$HOOKLINE_PYTHONPATH`, else under `.tools/python` (both set
/// up by `make test`).
pub async fn sign_as(args: &[&str], body: &[u8]) -> String {
    use tokio::io::AsyncWriteExt as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python_path = std::env::var("HOOKLINE_PYTHONPATH")
        .unwrap_or_else(|_| root.join(".tools/python").display().to_string());
    let mut child = Command::new("python3")
        .arg(fixtures().join("senders/sign.py"))
        .args(args)
        .env("PYTHONPATH", python_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e})"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(body).await.expect("write the body");
    drop(stdin);
    let out = child.wait_with_output().await.expect("sign.py output");
    assert!(
        out.status.success(),
        "sign.py {args:?} failed (make test installs standardwebhooks): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Path of grpcurl: `$GRPCURL`, or `grpcurl` on the PATH.
pub fn grpcurl() -> String {
    std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned())
}

/// Runs grpcurl without blocking the runtime that serves the call.
pub async fn grpcurl_output(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(grpcurl())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run grpcurl ({e}); make test installs it"))
}

/// Runs grpcurl, which must succeed; its standard output.
pub async fn run_grpcurl(args: &[&str]) -> String {
    let out = grpcurl_output(args).await;
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A file in the temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `text` to a new file whose name starts with `prefix`.
    pub fn new(prefix: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).expect("write a temporary file");
        Self(path)
    }

    /// The path, as an argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory in the temporary directory, removed with what it holds when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    /// The path, as an argument or a TOML string.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads one sample from an OpenMetrics exposition: the value of `name` whose labels
/// include every `label="value"` pair given; 0 when there is none.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric_name, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            let matches = metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A `ContactUpserted` event `id` of `source` stating `email` (none: no identifier) and
/// `first_name`, at a fixed time.
pub fn contact_event(
    id: &str,
    source: &str,
    email: Option<&str>,
    first_name: Option<&str>,
) -> v1::WebhookEvent {
    let ts = hookline_proto::prost_types::Timestamp {
        seconds: 1_790_000_000,
        nanos: 0,
    };
    v1::WebhookEvent {
        id: id.into(),
        source: source.into(),
        kind: "test".into(),
        r#type: "contact".into(),
        occurred_at: Some(ts),
        received_at: Some(ts),
        contact: Some(v1::ContactData {
            email: email.map(Into::into),
            first_name: first_name.map(Into::into),
            ..Default::default()
        }),
        payload: Some(v1::webhook_event::Payload::ContactUpserted(
            v1::ContactUpserted {},
        )),
        ..v1::WebhookEvent::default()
    }
}

/// A [`contact_event`] of the source `batch` stating `email`, as an `ApplyEvents` item.
pub fn contact_item(id: &str, email: &str, first_name: Option<&str>) -> v1::ApplyEventsItem {
    v1::ApplyEventsItem {
        event: Some(contact_event(id, "batch", Some(email), first_name)),
        request_id: "r".into(),
        traceparent: String::new(),
        replay_of: String::new(),
    }
}
