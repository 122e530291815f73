//! The edge's configuration: flags (with their environment variables) and the TOML
//! file, parsed and checked once at start-up. Nothing else reads the environment.
//! Errors name the source and key at fault.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::limits::Limits;
use crate::sources::{Source, gohighlevel, gohighlevel_workflow, stripe};

/// edge: receives webhooks, verifies them over the raw bytes and hands normalized events
/// to contacts-svc.
#[derive(Debug, Parser)]
#[command(name = "edge", version, about)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "EDGE_CONFIG")]
    pub config: PathBuf,

    /// Address to serve HTTP on (overrides `listen` in the file).
    #[arg(long, env = "EDGE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// contacts-svc address(es), comma-separated (overrides `contacts_url`).
    #[arg(long, env = "CONTACTS_URL")]
    pub contacts_url: Option<String>,

    /// Serve `GET /metrics` on this address (overrides `metrics_listen`). Without it,
    /// metrics are served nowhere unless the file sets `metrics_on_webhook_port`.
    #[arg(long, env = "EDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Threads serving requests (default: one per core). Where the edge shares a few
    /// cores with other busy processes, fewer threads spend less CPU on waking each other.
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
            listen: None,
            contacts_url: None,
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

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
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
    pub contacts_urls: Vec<http::Uri>,
    pub max_body_bytes: usize,
    pub spool_dir: PathBuf,
    /// Deadline of every call to contacts-svc.
    pub contacts_timeout: Duration,
    /// Time in-flight requests get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Connection and buffering limits of both listeners.
    pub limits: Limits,
    pub sources: BTreeMap<String, Source>,
}

/// A secret value. Its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    metrics_on_webhook_port: Option<bool>,
    contacts_url: Option<String>,
    max_body_bytes: Option<usize>,
    spool_dir: Option<PathBuf>,
    contacts_timeout_ms: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    first_request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    http2_keep_alive_interval_ms: Option<u64>,
    http2_keep_alive_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    max_http2_streams: Option<u64>,
    max_buffered_body_bytes: Option<u64>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Table>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_CONTACTS_URL: &str = "http://127.0.0.1:50051";
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// 64 GiB: far beyond any machine the edge runs on, still a number a typo cannot reach.
const MAX_BUFFERED_BODY_BYTES: u64 = 64 << 30;

impl Config {
    /// Reads and checks the file named by `args`, with flags overriding it.
    pub fn load(args: &Args) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(&args.config).map_err(|e| {
            ConfigError::new(
                "--config",
                format!("cannot read {}: {e}", args.config.display()),
            )
        })?;
        let base = args.config.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, args, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text. `base` resolves relative `file:` paths; `env` reads
    /// environment variables for `env:` secrets.
    pub fn parse(
        text: &str,
        base: &Path,
        args: &Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text)
            .map_err(|e| ConfigError::new(args.config.display().to_string(), e.to_string()))?;
        let listen = match args.listen {
            Some(a) => a,
            None => {
                let s = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
                s.parse()
                    .map_err(|_| ConfigError::new("listen", format!("{s:?} is not host:port")))?
            }
        };
        let metrics_listen = match (args.metrics_listen, &file.metrics_listen) {
            (Some(a), _) => Some(a),
            (None, Some(s)) => Some(s.parse().map_err(|_| {
                ConfigError::new("metrics_listen", format!("{s:?} is not host:port"))
            })?),
            (None, None) => None,
        };
        let metrics_on_webhook_port = file.metrics_on_webhook_port.unwrap_or(false);
        if metrics_on_webhook_port && let Some(addr) = metrics_listen {
            let given = if args.metrics_listen.is_some() {
                "--metrics-listen"
            } else {
                "metrics_listen"
            };
            return Err(ConfigError::new(
                "metrics_on_webhook_port",
                format!(
                    "cannot be set together with {given} ({addr}): metrics are served on one \
                     of them"
                ),
            ));
        }
        let (urls_key, urls) = match &args.contacts_url {
            Some(u) => ("--contacts-url", u.as_str()),
            None => (
                "contacts_url",
                file.contacts_url.as_deref().unwrap_or(DEFAULT_CONTACTS_URL),
            ),
        };
        let contacts_urls = parse_urls(urls_key, urls)?;
        let max_body_bytes = file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(ConfigError::new(
                "max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let contacts_timeout = Duration::from_millis(file.contacts_timeout_ms.unwrap_or(5000));
        if contacts_timeout < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "contacts_timeout_ms",
                "must be at least 10",
            ));
        }
        let limits = parse_limits(&file, max_body_bytes)?;
        if file.sources.is_empty() {
            return Err(ConfigError::new("sources", "no source is configured"));
        }
        let resolver = Resolver { base, env };
        let mut sources = BTreeMap::new();
        for (name, table) in file.sources {
            check_source_name(&name)?;
            let source = parse_source(&name, table, &resolver)?;
            sources.insert(name, source);
        }
        Ok(Self {
            listen,
            metrics_listen,
            metrics_on_webhook_port,
            contacts_urls,
            max_body_bytes,
            spool_dir: file
                .spool_dir
                .map_or_else(|| base.join(".data/edge-spool"), |p| base.join(p)),
            contacts_timeout,
            shutdown_grace: Duration::from_secs(file.shutdown_grace_secs.unwrap_or(10)),
            limits,
            sources,
        })
    }
}

fn parse_limits(file: &FileConfig, max_body_bytes: usize) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let ms = |key: &str, value: Option<u64>, default: Duration, max: u64| {
        in_range(key, value, millis(default), 10, max).map(Duration::from_millis)
    };
    let count = |key: &str, value: Option<u64>, default: u64, max: u64| {
        in_range(key, value, default, 1, max)
    };
    let max_buffered = file
        .max_buffered_body_bytes
        .unwrap_or(d.max_buffered_body_bytes as u64);
    // A body of max_body_bytes must fit, or it could never be read.
    if max_buffered < max_body_bytes as u64 || max_buffered > MAX_BUFFERED_BODY_BYTES {
        return Err(ConfigError::new(
            "max_buffered_body_bytes",
            format!(
                "must be at least max_body_bytes ({max_body_bytes}) and at most {MAX_BUFFERED_BODY_BYTES}"
            ),
        ));
    }
    Ok(Limits {
        first_request_timeout: ms(
            "first_request_timeout_ms",
            file.first_request_timeout_ms,
            d.first_request_timeout,
            600_000,
        )?,
        idle_timeout: ms(
            "idle_timeout_ms",
            file.idle_timeout_ms,
            d.idle_timeout,
            3_600_000,
        )?,
        http2_keep_alive_interval: ms(
            "http2_keep_alive_interval_ms",
            file.http2_keep_alive_interval_ms,
            d.http2_keep_alive_interval,
            3_600_000,
        )?,
        http2_keep_alive_timeout: ms(
            "http2_keep_alive_timeout_ms",
            file.http2_keep_alive_timeout_ms,
            d.http2_keep_alive_timeout,
            3_600_000,
        )?,
        // The ranges below fit usize and u32, so the conversions cannot fail.
        max_connections: usize::try_from(count(
            "max_connections",
            file.max_connections,
            d.max_connections as u64,
            1_000_000,
        )?)
        .unwrap_or(usize::MAX),
        max_http2_streams: u32::try_from(count(
            "max_http2_streams",
            file.max_http2_streams,
            u64::from(d.max_http2_streams),
            10_000,
        )?)
        .unwrap_or(u32::MAX),
        max_buffered_body_bytes: usize::try_from(max_buffered).map_err(|_| {
            ConfigError::new("max_buffered_body_bytes", "is too large for this machine")
        })?,
    })
}

/// `value`, or `default` when absent, checked against `min..=max`.
fn in_range(
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            key,
            format!("must be between {min} and {max}"),
        ))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_urls(key: &str, s: &str) -> Result<Vec<http::Uri>, ConfigError> {
    let mut urls = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let uri: http::Uri = part
            .parse()
            .map_err(|_| ConfigError::new(key, format!("{part:?} is not a URL")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(ConfigError::new(
                key,
                format!("{part:?} must be http://host:port"),
            ));
        }
        urls.push(uri);
    }
    if urls.is_empty() {
        return Err(ConfigError::new(key, "no address given"));
    }
    Ok(urls)
}

fn check_source_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(ConfigError::new(
            format!("sources.{name}"),
            "source names are 1 to 64 of a-z, 0-9, '-' and '_' (they appear in URLs)",
        ));
    }
    // contacts-svc scopes event ids by source (`<source>:<id>`) and records events of its
    // own under these names: a webhook source taking one could collide with them.
    if hookline_proto::RESERVED_SOURCES.contains(&name) {
        return Err(ConfigError::new(
            format!("sources.{name}"),
            format!(
                "is reserved: contacts-svc records its own events under the source {name:?}, \
                 so this source's event ids could collide with them (choose another name)"
            ),
        ));
    }
    Ok(())
}

/// Resolves `env:NAME` and `file:PATH` values.
#[allow(missing_debug_implementations)]
pub struct Resolver<'a> {
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    /// The secret `value` refers to, with surrounding whitespace removed (a trailing
    /// newline in a file or variable would otherwise fail every verification).
    pub fn secret(&self, key: &str, value: &str) -> Result<Secret, ConfigError> {
        let resolved = self.text(key, value)?;
        let trimmed = resolved.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::new(key, "is empty"));
        }
        Ok(Secret::new(trimmed))
    }

    /// The text `value` refers to: inline, `env:NAME` or `file:PATH`.
    pub fn text(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        if let Some(name) = value.strip_prefix("env:") {
            (self.env)(name).ok_or_else(|| {
                ConfigError::new(key, format!("environment variable {name} is not set"))
            })
        } else if let Some(path) = value.strip_prefix("file:") {
            let path = self.base.join(path);
            std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
        } else {
            Ok(value.to_owned())
        }
    }
}

fn parse_source(name: &str, table: toml::Table, r: &Resolver<'_>) -> Result<Source, ConfigError> {
    let key = |k: &str| format!("sources.{name}.{k}");
    let kind = match table.get("kind") {
        Some(toml::Value::String(k)) => k.clone(),
        Some(_) => return Err(ConfigError::new(key("kind"), "must be a string")),
        None => return Err(ConfigError::new(key("kind"), "is required")),
    };
    let value = toml::Value::Table(table);
    // The table as the source's own raw config; an unknown or mistyped key names the source.
    fn raw<T: serde::de::DeserializeOwned>(
        name: &str,
        value: toml::Value,
    ) -> Result<T, ConfigError> {
        value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new(format!("sources.{name}"), e.message()))
    }
    match kind.as_str() {
        stripe::KIND => Ok(Source::Stripe(stripe::Stripe::from_config(
            name,
            raw(name, value)?,
            r,
        )?)),
        gohighlevel::KIND => Ok(Source::GoHighLevel(gohighlevel::GoHighLevel::from_config(
            name,
            raw(name, value)?,
            r,
        )?)),
        gohighlevel_workflow::KIND => Ok(Source::GoHighLevelWorkflow(
            gohighlevel_workflow::GoHighLevelWorkflow::from_config(name, raw(name, value)?, r)?,
        )),
        other => Err(ConfigError::new(
            key("kind"),
            format!("unknown kind {other:?} (known: stripe, gohighlevel, gohighlevel-workflow)"),
        )),
    }
}

#[cfg(test)]
mod tests;
