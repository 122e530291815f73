//! The edge's configuration: flags (with their environment variables) and the TOML
//! file, parsed and checked once at start-up. Nothing else reads the environment.
//! The whole file is checked and every problem reported, each naming the key at fault
//! (`edge --check-config` prints them). It knows no provider: each `[sources.<name>]`
//! table goes to `sources::build`, which picks the provider by `kind`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::limits::Limits;
use crate::problem::{self, Problems};
use crate::secret::{Resolver, Secret, SecretRef};
use crate::sources::{self, Source};

/// edge: receives webhooks, verifies them over the raw bytes and hands normalized events
/// to contacts-svc.
#[derive(Debug, Parser)]
#[command(name = "edge", version, about)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "EDGE_CONFIG")]
    pub config: PathBuf,

    /// Check the configuration, print every problem (or a summary of the sources) and
    /// exit: non-zero when there is a problem. Nothing is served.
    #[arg(long, env = "EDGE_CHECK_CONFIG")]
    pub check_config: bool,

    /// Address to serve HTTP on (overrides `listen` in the file).
    #[arg(long, env = "EDGE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// contacts-svc address(es), comma-separated (overrides `contacts_url`).
    #[arg(long, env = "CONTACTS_URL")]
    pub contacts_url: Option<String>,

    /// Serve the internal gRPC API (`edge.v1.ReplayService`) on this address (overrides
    /// `admin_listen`). Without it, it is served nowhere.
    #[arg(long, env = "EDGE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Directory of the spool (overrides `spool_dir`). Each edge needs its own.
    #[arg(long, env = "EDGE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Serve `GET /metrics` on this address (overrides `metrics_listen`). Without it,
    /// metrics are served nowhere unless the file sets `metrics_on_webhook_port`.
    #[arg(long, env = "EDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Threads serving requests (default: one per core). Where the edge shares a few
    /// cores with other busy processes, fewer threads spend less CPU on waking each other;
    /// one runs everything on the single-threaded scheduler, which spends the least.
    #[arg(long, env = "EDGE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "EDGE_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "EDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Args {
    /// Arguments naming only a configuration file, the rest left to the file.
    pub fn for_file(config: impl Into<PathBuf>) -> Self {
        Self {
            config: config.into(),
            check_config: false,
            listen: None,
            contacts_url: None,
            admin_listen: None,
            spool_dir: None,
            metrics_listen: None,
            worker_threads: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Address of `GET /metrics`. Never the public webhook port unless asked for.
    pub metrics_listen: Option<SocketAddr>,
    /// `GET /metrics` on the webhook port too: only when the file says so, because that
    /// port faces the internet and the metrics name sources, types and volumes.
    /// Never together with `metrics_listen`.
    pub metrics_on_webhook_port: bool,
    /// Address of the internal gRPC API (ReplayEvents). Never the webhook port.
    pub admin_listen: Option<SocketAddr>,
    pub contacts_urls: Vec<http::Uri>,
    /// TLS on the webhook listener, for deployments without a proxy that ends it.
    pub tls: Option<hookline_tls::ServerTls>,
    /// The bearer token the edge shows contacts-svc, when it asks for one.
    pub contacts_token: Option<Secret>,
    /// TLS for `https://` contacts-svc addresses: the authority to trust and, for mutual
    /// TLS, the edge's certificate and key.
    pub contacts_tls: Option<crate::contacts::ContactsTls>,
    /// How often the DNS names among `contacts_urls` are looked up again.
    pub contacts_dns_refresh: Duration,
    pub max_body_bytes: usize,
    pub spool_dir: PathBuf,
    /// Most bytes of events the spool holds; beyond it, deliveries are answered with the
    /// retry status. 0 turns spooling off.
    pub spool_max_bytes: u64,
    /// Deadline of every call to contacts-svc.
    pub contacts_timeout: Duration,
    /// Time in-flight requests get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Connection and buffering limits of both listeners.
    pub limits: Limits,
    pub sources: BTreeMap<String, Box<dyn Source>>,
}

/// The top-level keys. `[sources.*]` is taken out before, so that every source is
/// checked even when a top-level value has the wrong type.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    metrics_on_webhook_port: Option<bool>,
    admin_listen: Option<String>,
    contacts_url: Option<String>,
    contacts_token: Option<SecretRef>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    contacts_ca: Option<String>,
    contacts_cert: Option<String>,
    contacts_key: Option<SecretRef>,
    contacts_dns_refresh_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: Option<u64>,
    contacts_timeout_ms: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    first_request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    http2_keep_alive_interval_ms: Option<u64>,
    http2_keep_alive_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    max_http2_streams: Option<u64>,
    max_buffered_body_bytes: Option<u64>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_CONTACTS_URL: &str = "http://127.0.0.1:50051";
/// Often enough to follow pods that come and go, rarely enough to cost nothing.
const DEFAULT_CONTACTS_DNS_REFRESH_SECS: u64 = 30;
/// A day: beyond it a name is as good as resolved once, and the value is surely a typo.
const MAX_CONTACTS_DNS_REFRESH_SECS: u64 = 86_400;
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// 1 GiB: about 400,000 typical events, hours of full load or days of a quiet source.
const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// 64 GiB: far beyond any machine the edge runs on, still a number a typo cannot reach.
const MAX_BUFFERED_BODY_BYTES: u64 = 64 << 30;

impl Config {
    /// Reads and checks the file named by `args`, with flags overriding it.
    pub fn load(args: &Args) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(&args.config).map_err(|e| {
            Problems::one(
                "--config",
                format!("cannot read {}: {e}", args.config.display()),
            )
        })?;
        let base = args.config.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, args, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text. `base` resolves relative `file:` paths; `env` reads
    /// environment variables for `env:` secrets. Every problem is reported.
    pub fn parse(
        text: &str,
        base: &Path,
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let mut table = parse_toml(text, &args.config)?;
        let source_tables = take_sources(&mut table, &mut problems);
        let file = problem::deserialize::<FileConfig>("", toml::Value::Table(table), &mut problems)
            .unwrap_or_default();

        let listen = match args.listen {
            Some(a) => Some(a),
            None => {
                let s = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
                problems.check(
                    "listen",
                    s.parse().map_err(|_| format!("{s:?} is not host:port")),
                )
            }
        };
        let metrics_listen = match (args.metrics_listen, &file.metrics_listen) {
            (Some(a), _) => Some(a),
            (None, Some(s)) => problems.check(
                "metrics_listen",
                s.parse().map_err(|_| format!("{s:?} is not host:port")),
            ),
            (None, None) => None,
        };
        let admin_listen = match (args.admin_listen, &file.admin_listen) {
            (Some(a), _) => Some(a),
            (None, Some(s)) => problems.check(
                "admin_listen",
                s.parse().map_err(|_| format!("{s:?} is not host:port")),
            ),
            (None, None) => None,
        };
        let metrics_on_webhook_port = file.metrics_on_webhook_port.unwrap_or(false);
        if metrics_on_webhook_port && let Some(addr) = metrics_listen {
            let given = if args.metrics_listen.is_some() {
                "--metrics-listen"
            } else {
                "metrics_listen"
            };
            problems.push(
                "metrics_on_webhook_port",
                format!(
                    "cannot be set together with {given} ({addr}): metrics are served on one \
                     of them"
                ),
            );
        }
        let (urls_key, urls) = match &args.contacts_url {
            Some(u) => ("--contacts-url", u.as_str()),
            None => (
                "contacts_url",
                file.contacts_url.as_deref().unwrap_or(DEFAULT_CONTACTS_URL),
            ),
        };
        let contacts_urls = problems
            .check(urls_key, parse_urls(urls))
            .unwrap_or_default();
        let contacts_dns_refresh = problems
            .check(
                "contacts_dns_refresh_secs",
                in_range(
                    file.contacts_dns_refresh_secs,
                    DEFAULT_CONTACTS_DNS_REFRESH_SECS,
                    1,
                    MAX_CONTACTS_DNS_REFRESH_SECS,
                ),
            )
            .map_or(
                Duration::from_secs(DEFAULT_CONTACTS_DNS_REFRESH_SECS),
                Duration::from_secs,
            );
        let max_body_bytes = file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            problems.push("max_body_bytes", "must be between 1024 and 67108864");
        }
        let contacts_timeout = Duration::from_millis(file.contacts_timeout_ms.unwrap_or(5000));
        if contacts_timeout < Duration::from_millis(10) {
            problems.push("contacts_timeout_ms", "must be at least 10");
        }
        let limits = parse_limits(&file, max_body_bytes, &mut problems);

        let resolver = Resolver::new(base, env);
        let contacts_token = file.contacts_token.as_ref().and_then(|token| {
            let token = problems.check("contacts_token", resolver.secret(token))?;
            // Sent as `authorization: Bearer …`: visible ASCII only, or no header can hold it.
            let sendable =
                !token.expose().is_empty() && token.expose().bytes().all(|b| b.is_ascii_graphic());
            if !sendable {
                problems.push(
                    "contacts_token",
                    "must be printable ASCII without spaces, to travel as a bearer token",
                );
            }
            sendable.then_some(token)
        });
        let tls = tls::listener(&file, base, &mut problems);
        let https = contacts_urls
            .iter()
            .any(|u| u.scheme_str() == Some("https"));
        let contacts_tls = tls::contacts(&file, https, &resolver, &mut problems);
        let mut sources = BTreeMap::new();
        for (name, table) in source_tables {
            if let Some(p) = check_source_name(&name) {
                problems.extend(p);
                continue;
            }
            match sources::build(&name, table, &resolver) {
                Ok(source) => {
                    sources.insert(name, source);
                }
                Err(p) => problems.extend(p),
            }
        }
        // Without an address a problem was recorded, and this value is never used.
        let listen = listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        problems.into_result(Self {
            listen,
            metrics_listen,
            metrics_on_webhook_port,
            admin_listen,
            contacts_urls,
            tls,
            contacts_token,
            contacts_tls,
            contacts_dns_refresh,
            max_body_bytes,
            spool_dir: match (&args.spool_dir, file.spool_dir) {
                (Some(dir), _) => dir.clone(),
                (None, Some(dir)) => base.join(dir),
                (None, None) => base.join(".data/edge-spool"),
            },
            spool_max_bytes: file.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
            contacts_timeout,
            shutdown_grace: Duration::from_secs(file.shutdown_grace_secs.unwrap_or(10)),
            limits,
            sources,
        })
    }

    /// One line per source: its name, kind and route, for `--check-config`.
    pub fn summary(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|(name, s)| format!("{name}: kind {}, POST /webhooks/{name}", s.kind()))
            .collect()
    }
}

/// The file as a TOML table. A syntax error is reported by line and column without the
/// text around it, which the parser would quote and which may hold a secret.
fn parse_toml(text: &str, path: &Path) -> Result<toml::Table, Problems> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        Problems::one(
            path.display().to_string(),
            format!("{at}{}", e.message().trim()),
        )
    })
}

/// The `[sources.*]` tables, taken out of the file's table.
fn take_sources(table: &mut toml::Table, problems: &mut Problems) -> Vec<(String, toml::Table)> {
    let mut out = Vec::new();
    match table.remove("sources") {
        None => problems.push("sources", "no source is configured"),
        Some(toml::Value::Table(sources)) => {
            if sources.is_empty() {
                problems.push("sources", "no source is configured");
            }
            for (name, value) in sources {
                match value {
                    toml::Value::Table(t) => out.push((name, t)),
                    _ => problems.push(
                        format!("sources.{name}"),
                        "must be a table ([sources.<name>] with its kind and keys)",
                    ),
                }
            }
        }
        Some(_) => problems.push("sources", "must be a table of sources"),
    }
    out
}

fn parse_limits(file: &FileConfig, max_body_bytes: usize, problems: &mut Problems) -> Limits {
    let d = Limits::default();
    let mut ms = |key: &str, value: Option<u64>, default: Duration, max: u64| {
        let checked = in_range(value, millis(default), 10, max);
        problems
            .check(key, checked)
            .map_or(default, Duration::from_millis)
    };
    let first_request_timeout = ms(
        "first_request_timeout_ms",
        file.first_request_timeout_ms,
        d.first_request_timeout,
        600_000,
    );
    let idle_timeout = ms(
        "idle_timeout_ms",
        file.idle_timeout_ms,
        d.idle_timeout,
        3_600_000,
    );
    let http2_keep_alive_interval = ms(
        "http2_keep_alive_interval_ms",
        file.http2_keep_alive_interval_ms,
        d.http2_keep_alive_interval,
        3_600_000,
    );
    let http2_keep_alive_timeout = ms(
        "http2_keep_alive_timeout_ms",
        file.http2_keep_alive_timeout_ms,
        d.http2_keep_alive_timeout,
        3_600_000,
    );
    let mut count = |key: &str, value: Option<u64>, default: u64, max: u64| {
        let checked = in_range(value, default, 1, max);
        problems.check(key, checked).unwrap_or(default)
    };
    // The ranges below fit usize and u32, so the conversions cannot fail.
    let max_connections = usize::try_from(count(
        "max_connections",
        file.max_connections,
        d.max_connections as u64,
        1_000_000,
    ))
    .unwrap_or(usize::MAX);
    let max_http2_streams = u32::try_from(count(
        "max_http2_streams",
        file.max_http2_streams,
        u64::from(d.max_http2_streams),
        10_000,
    ))
    .unwrap_or(u32::MAX);
    let max_buffered = file
        .max_buffered_body_bytes
        .unwrap_or(d.max_buffered_body_bytes as u64);
    // A body of max_body_bytes must fit, or it could never be read.
    let max_buffered_body_bytes = if max_buffered < max_body_bytes as u64
        || max_buffered > MAX_BUFFERED_BODY_BYTES
    {
        problems.push(
            "max_buffered_body_bytes",
            format!(
                "must be at least max_body_bytes ({max_body_bytes}) and at most {MAX_BUFFERED_BODY_BYTES}"
            ),
        );
        d.max_buffered_body_bytes
    } else {
        usize::try_from(max_buffered).unwrap_or_else(|_| {
            problems.push("max_buffered_body_bytes", "is too large for this machine");
            d.max_buffered_body_bytes
        })
    };
    Limits {
        first_request_timeout,
        idle_timeout,
        http2_keep_alive_interval,
        http2_keep_alive_timeout,
        max_connections,
        max_http2_streams,
        max_buffered_body_bytes,
    }
}

/// `value`, or `default` when absent, checked against `min..=max`.
fn in_range(value: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64, String> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_urls(s: &str) -> Result<Vec<http::Uri>, String> {
    let mut urls = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let uri: http::Uri = part.parse().map_err(|_| format!("{part:?} is not a URL"))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none() {
            return Err(format!(
                "{part:?} must be http://host:port or https://host:port"
            ));
        }
        urls.push(uri);
    }
    if urls.is_empty() {
        return Err("no address given".to_owned());
    }
    Ok(urls)
}

/// What is wrong with a source's name, if anything.
fn check_source_name(name: &str) -> Option<Problems> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Some(Problems::one(
            format!("sources.{name}"),
            "source names are 1 to 64 of a-z, 0-9, '-' and '_' (they appear in URLs)",
        ));
    }
    // contacts-svc scopes event ids by source (`<source>:<id>`) and records events of its
    // own under these names: a webhook source taking one could collide with them.
    if hookline_proto::RESERVED_SOURCES.contains(&name) {
        return Some(Problems::one(
            format!("sources.{name}"),
            format!(
                "is reserved: contacts-svc records its own events under the source {name:?}, \
                 so this source's event ids could collide with them (choose another name)"
            ),
        ));
    }
    None
}

mod tls;

#[cfg(test)]
mod tests;
