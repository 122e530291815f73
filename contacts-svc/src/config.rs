//! Command-line flags and their environment variables, parsed once in `main`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::auth::{Auth, Tokens};
use crate::contact::Region;

/// contacts-svc: owns every contact update; deduplicates events with Redis SET NX.
#[derive(Debug, Parser)]
#[command(name = "contacts-svc", version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "CONTACTS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Redis to store contacts in. Unreachable is not fatal: health reports
    /// NOT_SERVING until it answers.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        global = true
    )]
    pub redis_url: String,

    /// A Redis Cluster to store contacts in instead: some of its nodes, comma-separated
    /// (`redis://h1:6379,redis://h2:6379`); the others are found from them. Health is
    /// SERVING only while the cluster covers every slot.
    #[arg(
        long,
        env = "REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis_url",
        global = true
    )]
    pub redis_cluster: Vec<String>,

    /// Replicas (of every master, on a cluster) that must confirm an event's writes
    /// before it counts as applied (Redis `WAIT`, up to a second; fewer answers "retry
    /// later"). Replication is asynchronous: with 0, a master that fails right after
    /// answering can lose an acknowledged event to its replica's promotion. 1 is the
    /// recommendation for a cluster.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0, global = true)]
    pub redis_wait_replicas: u32,

    /// For `rediss://` URLs: the authority (PEM file) to trust instead of the system's.
    #[arg(long, env = "REDIS_TLS_CA", global = true)]
    pub redis_tls_ca: Option<PathBuf>,

    /// For `rediss://` URLs: a client certificate (PEM file), for a Redis that asks for
    /// one (`tls-auth-clients`); with `--redis-tls-key`.
    #[arg(
        long,
        env = "REDIS_TLS_CERT",
        requires = "redis_tls_key",
        global = true
    )]
    pub redis_tls_cert: Option<PathBuf>,

    /// The private key (PEM file) of `--redis-tls-cert`.
    #[arg(
        long,
        env = "REDIS_TLS_KEY",
        requires = "redis_tls_cert",
        global = true
    )]
    pub redis_tls_key: Option<PathBuf>,

    /// Region (ISO 3166 alpha-2) for phone numbers written without a country code.
    #[arg(long, env = "CONTACTS_DEFAULT_REGION", default_value = "US", value_parser = parse_region)]
    pub default_region: Region,

    /// How long an event id is remembered with its record, in seconds (default 30 days):
    /// the dedup window. About 250 bytes of Redis memory per event (more for an ignored
    /// event, which keeps its body).
    #[arg(long, env = "CONTACTS_DEDUP_TTL_SECS", default_value_t = 30 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub dedup_ttl_secs: u64,

    /// How long the webhook log (`ListEvents`) lists an event, in seconds; at most, and
    /// by default, the dedup window (its record goes then). About 60 bytes of Redis memory
    /// per event.
    #[arg(long, env = "CONTACTS_EVENT_LOG_RETENTION_SECS",
          value_parser = clap::value_parser!(u64).range(60..))]
    pub event_log_retention_secs: Option<u64>,

    /// Who may call: a TOML file of tokens by their SHA-256 digest, each with its scopes
    /// (`events:write`, `contacts:read`, `contacts:write`, `contacts:erase`) and the
    /// sources it may write events of (README, "Authentication").
    #[arg(
        long,
        env = "CONTACTS_AUTH_TOKENS_FILE",
        conflicts_with = "insecure_no_auth"
    )]
    pub auth_tokens_file: Option<PathBuf>,

    /// Serve every caller without a token. Only for development: say so explicitly.
    #[arg(long, env = "CONTACTS_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Answer health checks (`grpc.health.v1.Health`) without a token, as load balancers
    /// and probes need.
    #[arg(long, env = "CONTACTS_PUBLIC_HEALTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub public_health: bool,

    /// Answer server reflection (what grpcurl lists) without a token.
    #[arg(long, env = "CONTACTS_PUBLIC_REFLECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub public_reflection: bool,

    /// Serve gRPC over TLS with this certificate chain (PEM); with `--tls-key`. Both
    /// files are read again when they change or on SIGHUP, without dropping connections.
    #[arg(long, env = "CONTACTS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "CONTACTS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: callers must present a certificate signed by this authority (PEM).
    #[arg(long, env = "CONTACTS_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    #[arg(long, env = "CONTACTS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Threads serving calls (default: one per core). Where contacts-svc shares a few
    /// cores with other busy processes, fewer threads spend less CPU on waking each other;
    /// one runs everything on the single-threaded scheduler, which spends the least.
    #[arg(long, env = "CONTACTS_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "CONTACTS_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "CONTACTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds in-flight calls get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "CONTACTS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Convert the data in Redis (--redis-url) from an earlier storage layout to this
    /// version's, then exit. Idempotent and resumable: run it again after a crash. Stop
    /// every contacts-svc first.
    Migrate,
}

impl Config {
    pub fn dedup_ttl(&self) -> Duration {
        Duration::from_secs(self.dedup_ttl_secs)
    }

    /// The webhook log's retention: the dedup window unless shorter.
    pub fn event_log_retention(&self) -> Result<Duration, String> {
        match self.event_log_retention_secs {
            None => Ok(self.dedup_ttl()),
            Some(s) if s <= self.dedup_ttl_secs => Ok(Duration::from_secs(s)),
            Some(s) => Err(format!(
                "--event-log-retention-secs {s} exceeds --dedup-ttl-secs {}: an event's record is kept only that long",
                self.dedup_ttl_secs
            )),
        }
    }

    /// Who may call, from `--auth-tokens-file`; without it, only an explicit
    /// `--insecure-no-auth` serves.
    pub fn auth(&self) -> Result<Auth, String> {
        match (&self.auth_tokens_file, self.insecure_no_auth) {
            (Some(path), _) => {
                let tokens = Tokens::load(path)
                    .map_err(|e| format!("--auth-tokens-file {}: {e}", path.display()))?;
                Ok(Auth::Tokens {
                    tokens,
                    public_health: self.public_health,
                    public_reflection: self.public_reflection,
                })
            }
            (None, true) => Ok(Auth::Disabled),
            (None, false) => Err(
                "no --auth-tokens-file: give one, or serve every caller without a token with --insecure-no-auth (development only)"
                    .to_owned(),
            ),
        }
    }

    /// TLS to Redis, when any file is given: read now, each problem naming its flag.
    pub fn redis_tls(&self) -> Result<Option<crate::store::RedisTls>, String> {
        let read = |flag: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
            path.as_ref()
                .map(|p| std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display())))
                .transpose()
        };
        let ca = read("--redis-tls-ca", &self.redis_tls_ca)?;
        let cert = read("--redis-tls-cert", &self.redis_tls_cert)?;
        let key = read("--redis-tls-key", &self.redis_tls_key)?;
        if ca.is_none() && cert.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::store::RedisTls {
            ca,
            client: cert.zip(key),
        }))
    }

    /// The TLS files, when gRPC is served over TLS.
    pub fn tls(&self) -> Option<hookline_tls::TlsFiles> {
        Some(hookline_tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
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

fn parse_region(s: &str) -> Result<Region, String> {
    Region::parse("default-region", s).map_err(|e| e.to_string())
}

/// `url` without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://[redacted]@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, redact_url};
    use clap::Parser as _;

    #[test]
    fn the_log_is_kept_at_most_as_long_as_the_records_it_lists() {
        let retention = |args: &[&str]| {
            let mut argv = vec!["contacts-svc"];
            argv.extend_from_slice(args);
            Config::parse_from(argv)
                .event_log_retention()
                .map(|d| d.as_secs())
        };
        assert_eq!(retention(&[]), Ok(30 * 24 * 3600));
        assert_eq!(retention(&["--dedup-ttl-secs", "7200"]), Ok(7200));
        assert_eq!(retention(&["--event-log-retention-secs", "3600"]), Ok(3600));
        let too_long = retention(&[
            "--dedup-ttl-secs",
            "3600",
            "--event-log-retention-secs",
            "7200",
        ]);
        assert!(too_long.unwrap_err().contains("exceeds --dedup-ttl-secs"));
    }

    #[test]
    fn a_cluster_is_a_list_of_nodes_and_excludes_a_single_redis() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["contacts-svc"];
            argv.extend_from_slice(args);
            Config::try_parse_from(argv).map(|c| c.redis_cluster)
        };
        assert_eq!(parse(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            parse(&["--redis-cluster", "redis://a:1,redis://b:2"]).unwrap(),
            ["redis://a:1", "redis://b:2"]
        );
        let both = parse(&[
            "--redis-url",
            "redis://a:1",
            "--redis-cluster",
            "redis://b:2",
        ]);
        assert!(
            both.unwrap_err()
                .to_string()
                .contains("cannot be used with")
        );
    }

    #[test]
    fn passwords_never_reach_logs() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@db:6379/0", "redis://[redacted]@db:6379/0"),
            (
                "rediss://user:s3cret@db:6380",
                "rediss://[redacted]@db:6380",
            ),
            ("redis://u:p@ss@db", "redis://[redacted]@db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
