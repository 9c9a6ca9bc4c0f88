//! Settings: command-line flags, `QUAYSIDE_*` environment variables and a TOML file.
//!
//! Precedence, highest first: flag, environment variable, `--config` file, built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::discovery::docker::Endpoint;

use crate::admin::{AdminConfig, Token};
use crate::proxy::ProxyConfig;
pub use crate::types::parse_duration;
use crate::types::{ListenAddr, check_duration};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8001";
pub const DEFAULT_STATE: &str = "quayside-state.json";
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:8443";

const AFTER_HELP: &str = "\
Precedence: flag > QUAYSIDE_* environment variable > --config file > default.
Durations are written like 500ms, 5s, 2m or a plain number of seconds.

Examples:
  quayside --no-docker                         # manual backends only
  curl 'http://127.0.0.1:8001/add?no=1&ip=127.0.0.1&port=8081'
  curl 'http://127.0.0.1:8001/get?no=1'
  curl 'http://127.0.0.1:8001/delete?no=1'";

/// quayside: a reverse proxy for services in Docker, with a runtime API to add, drain and
/// remove backends.
#[derive(Debug, Default, Parser)]
#[command(name = "quayside", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// TOML file with the same keys as the flags (listen, admin_listen, state, ...)
    #[arg(long, env = "QUAYSIDE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address the proxy listens on: IP:PORT, :PORT (every address) or localhost:PORT
    /// [default: 0.0.0.0:8080]
    #[arg(help_heading = "Listeners", long, env = "QUAYSIDE_LISTEN", value_name = "ADDR", value_parser = crate::types::parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Address of the TLS (HTTPS) listener, used when certificates are given
    /// [default: 0.0.0.0:8443]. Certificates are re-read on SIGHUP.
    #[arg(help_heading = "Listeners", long, env = "QUAYSIDE_TLS_LISTEN", value_name = "ADDR", value_parser = crate::types::parse_listen)]
    pub tls_listen: Option<SocketAddr>,

    /// Proxies (address blocks, comma-separated) whose `X-Forwarded-For` is believed: the
    /// client address of a request through them is the last one there that is not theirs. It
    /// is what `ip_allow`, `rate_limit`, `hash`, the access log and `X-Forwarded-For` use.
    /// With this set, an `X-Forwarded-For` from anyone else is replaced [default: none, and
    /// the connection's peer is the client]
    #[arg(
        help_heading = "Listeners",
        long,
        env = "QUAYSIDE_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Address of the admin API (/add, /get, /delete, /api/v1) [default: 127.0.0.1:8001].
    /// Anyone who can reach it can change routing: keep it on loopback or a private network.
    #[arg(help_heading = "Admin API and tokens", long, env = "QUAYSIDE_ADMIN_LISTEN", value_name = "ADDR", value_parser = crate::types::parse_listen)]
    pub admin_listen: Option<SocketAddr>,

    /// Token for the admin API: clients send `Authorization: Bearer TOKEN`. Without one, the
    /// admin API starts only on a loopback address (see --admin-insecure)
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// File holding the admin token (Docker and Swarm secrets), instead of --admin-token
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub admin_token_file: Option<PathBuf>,

    /// Token for read-only use of the admin API (dashboards, Prometheus): every GET, no change
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_READ_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_read_token: Option<String>,

    /// File holding the read-only token, instead of --admin-read-token
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_READ_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub admin_read_token_file: Option<PathBuf>,

    /// Serve the admin API on a non-loopback address without a token (anyone who reaches it
    /// can change routing; a warning is logged at start)
    #[arg(help_heading = "Admin API and tokens", long, env = "QUAYSIDE_ADMIN_INSECURE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", value_parser = crate::types::parse_bool)]
    pub admin_insecure: Option<bool>,

    /// Host names the admin API answers to besides localhost and IP addresses (a request for
    /// another name is refused: DNS rebinding); comma-separated or repeated
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub admin_host: Vec<String>,

    /// TLS certificate (PEM) for the admin listener, with --admin-tls-key
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_TLS_CERT",
        value_name = "FILE"
    )]
    pub admin_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the admin listener
    #[arg(
        help_heading = "Admin API and tokens",
        long,
        env = "QUAYSIDE_ADMIN_TLS_KEY",
        value_name = "FILE"
    )]
    pub admin_tls_key: Option<PathBuf>,

    /// Do not watch Docker; serve manual backends only
    #[arg(help_heading = "Docker and Swarm", long, env = "QUAYSIDE_NO_DOCKER", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", value_parser = crate::types::parse_bool)]
    pub no_docker: Option<bool>,

    /// Docker endpoint (unix:///path, tcp://host:port), as NAME=URI to name it; repeat it (or
    /// separate with commas) to follow several daemons [default: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock]
    #[arg(
        help_heading = "Docker and Swarm",
        long,
        env = "QUAYSIDE_DOCKER_HOST",
        value_name = "[NAME=]URI",
        value_delimiter = ','
    )]
    pub docker_host: Vec<String>,

    /// How often the tasks of labelled Swarm services are listed (Docker sends no task events;
    /// nothing is listed while no service is labelled) [default: 1s]
    #[arg(help_heading = "Docker and Swarm", long, env = "QUAYSIDE_SWARM_POLL", value_name = "DURATION", value_parser = parse_duration)]
    pub swarm_poll: Option<Duration>,

    /// Prefix of the container labels quayside reads (`<prefix>.port`, ...) [default: quayside]
    #[arg(
        help_heading = "Docker and Swarm",
        long,
        env = "QUAYSIDE_LABEL_PREFIX",
        value_name = "PREFIX"
    )]
    pub label_prefix: Option<String>,

    /// Several quaysides on one Docker host: route only containers and Swarm services labelled
    /// `<prefix>.instance=NAME` (without it: only those without that label); the state file,
    /// the Swarm state store and the ACME folder get names of their own from it
    #[arg(
        help_heading = "Docker and Swarm",
        long,
        env = "QUAYSIDE_INSTANCE",
        value_name = "NAME"
    )]
    pub instance: Option<String>,

    /// State file for manual backends, drains and service settings
    /// [default: quayside-state.json in the working directory]
    #[arg(
        help_heading = "State",
        long,
        env = "QUAYSIDE_STATE",
        value_name = "PATH"
    )]
    pub state: Option<PathBuf>,

    /// Where manual entries, drains and service settings are kept: `file` (--state) or `swarm`
    /// (Swarm configs on the first Docker endpoint, a manager; shared by every replica)
    /// [default: file]
    #[arg(
        help_heading = "State",
        long,
        env = "QUAYSIDE_STATE_STORE",
        value_name = "STORE"
    )]
    pub state_store: Option<String>,

    /// With --state-store swarm: the name of the configs (`<name>-<generation>`); replicas
    /// that share it share their state [default: quayside-state]
    #[arg(
        help_heading = "State",
        long,
        env = "QUAYSIDE_STATE_STORE_NAME",
        value_name = "NAME"
    )]
    pub state_store_name: Option<String>,

    /// TLS certificate chain (PEM); repeat with --tls-key for several, chosen by SNI
    #[arg(
        help_heading = "TLS and ACME",
        long,
        env = "QUAYSIDE_TLS_CERT",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub tls_cert: Vec<PathBuf>,

    /// TLS private key (PEM), one per --tls-cert, in the same order
    #[arg(
        help_heading = "TLS and ACME",
        long,
        env = "QUAYSIDE_TLS_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub tls_key: Vec<PathBuf>,

    /// The port clients reach HTTPS on, where `https_redirect` sends them (the published port
    /// is not known inside a container) [default: 443]
    #[arg(help_heading = "TLS and ACME", long, env = "QUAYSIDE_HTTPS_PORT", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub https_port: Option<u16>,

    /// Automatic HTTPS: obtain a certificate from an ACME CA (Let's Encrypt by default) for
    /// every exact host name in the services' rules, with this contact address. Certificates and
    /// the account key are kept beside the state file
    #[arg(
        help_heading = "TLS and ACME",
        long,
        env = "QUAYSIDE_ACME_EMAIL",
        value_name = "EMAIL"
    )]
    pub acme_email: Option<String>,

    /// The ACME directory URL [default: Let's Encrypt production]
    #[arg(
        help_heading = "TLS and ACME",
        long,
        env = "QUAYSIDE_ACME_DIRECTORY",
        value_name = "URL"
    )]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, generous rate limits)
    #[arg(help_heading = "TLS and ACME", long, env = "QUAYSIDE_ACME_STAGING", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", value_parser = crate::types::parse_bool)]
    pub acme_staging: Option<bool>,

    /// Trust this CA certificate (PEM) for the ACME server's own HTTPS, instead of the system's
    /// roots (a private ACME server)
    #[arg(
        help_heading = "TLS and ACME",
        long,
        env = "QUAYSIDE_ACME_CA_CERT",
        value_name = "FILE"
    )]
    pub acme_ca_cert: Option<PathBuf>,

    /// The challenge to answer: http-01 (on the plain listener, which the CA must reach on port
    /// 80) or tls-alpn-01 (on the TLS listener, reached on 443) [default: http-01]
    #[arg(
        help_heading = "TLS and ACME",
        long,
        env = "QUAYSIDE_ACME_CHALLENGE",
        value_name = "TYPE"
    )]
    pub acme_challenge: Option<String>,

    /// quayside's own log lines: `text` or `json` (one object per line) [default: text]
    #[arg(
        help_heading = "Logs and metrics",
        long,
        env = "QUAYSIDE_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<String>,

    /// Write an access log line per request to this file, or `-` for stdout [default: off].
    /// SIGUSR1 reopens the file (logrotate)
    #[arg(
        help_heading = "Logs and metrics",
        long,
        env = "QUAYSIDE_ACCESS_LOG",
        value_name = "PATH"
    )]
    pub access_log: Option<PathBuf>,

    /// Access log format: `json` or `common` [default: json]
    #[arg(
        help_heading = "Logs and metrics",
        long,
        env = "QUAYSIDE_ACCESS_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub access_log_format: Option<String>,

    /// Timeout for connecting to a backend [default: 5s]
    #[arg(help_heading = "Tuning", long, env = "QUAYSIDE_CONNECT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,

    /// Timeout for a backend's response headers after the request is sent [default: 60s]
    #[arg(help_heading = "Tuning", long, env = "QUAYSIDE_RESPONSE_HEADER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub response_header_timeout: Option<Duration>,

    /// Time a client has to send a request's headers [default: 30s]
    #[arg(help_heading = "Tuning", long, env = "QUAYSIDE_CLIENT_HEADER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub client_header_timeout: Option<Duration>,

    /// Idle pooled backend connections are closed after this [default: 30s]
    #[arg(help_heading = "Tuning", long, env = "QUAYSIDE_POOL_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub pool_idle_timeout: Option<Duration>,

    /// Request bodies larger than this many bytes get 413 [default: no limit]
    #[arg(
        help_heading = "Tuning",
        long,
        env = "QUAYSIDE_MAX_BODY_SIZE",
        value_name = "BYTES"
    )]
    pub max_body_size: Option<u64>,

    /// Client connections open at once; more wait to be accepted [default: 50000]
    #[arg(
        help_heading = "Tuning",
        long,
        env = "QUAYSIDE_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub max_connections: Option<usize>,

    /// Proxy worker threads per listener (plain and TLS) [default: the number of CPUs]
    #[arg(help_heading = "Tuning", long, env = "QUAYSIDE_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,

    /// On SIGTERM/SIGINT, time given to in-flight requests; also how long an upgraded
    /// connection (WebSocket) outlives the drain or removal of its backend [default: 30s]
    #[arg(help_heading = "Tuning", long, env = "QUAYSIDE_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
}

/// What to do instead of serving.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Sub {
    /// Ask a running quayside's /readyz on --admin-listen (the image's HEALTHCHECK, which has no
    /// curl): exit 0 when ready, 1 otherwise
    Healthcheck,
    /// Move the operator's state (manual entries, overrides, service settings) in or out of the
    /// store (--state-store), e.g. between the state file and Swarm, or for backups
    State {
        #[command(subcommand)]
        action: StateAction,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum StateAction {
    /// Write the stored state, in the state file's format, to FILE (or stdout)
    Export { file: Option<PathBuf> },
    /// Replace the stored state with FILE's (the state file's format; checked first). With
    /// --state-store swarm, running replicas take it at once; with the state file, stop
    /// quayside first
    Import { file: PathBuf },
}

/// Where the operator's state is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateStore {
    /// The state file (`--state`), on this host.
    #[default]
    File,
    /// Swarm configs named `<name>-<generation>`, shared by every replica.
    Swarm { name: String },
}

/// The `--config` file. Same keys as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<ListenAddr>,
    pub admin_listen: Option<ListenAddr>,
    /// (Tokens themselves only by flag, environment or file: not in the config file.)
    pub admin_token_file: Option<PathBuf>,
    pub admin_read_token_file: Option<PathBuf>,
    pub admin_insecure: Option<bool>,
    #[serde(default)]
    pub admin_host: Vec<String>,
    pub admin_tls_cert: Option<PathBuf>,
    pub admin_tls_key: Option<PathBuf>,
    pub access_log: Option<PathBuf>,
    pub access_log_format: Option<String>,
    pub log_format: Option<String>,
    pub state: Option<PathBuf>,
    pub state_store: Option<String>,
    pub state_store_name: Option<String>,
    pub no_docker: Option<bool>,
    pub docker_host: Option<String>,
    /// `[[docker]]` tables: one per Docker daemon.
    #[serde(default)]
    pub docker: Vec<FileEndpoint>,
    pub swarm_poll: Option<FileDuration>,
    pub label_prefix: Option<String>,
    pub instance: Option<String>,
    pub connect_timeout: Option<FileDuration>,
    pub response_header_timeout: Option<FileDuration>,
    pub client_header_timeout: Option<FileDuration>,
    pub pool_idle_timeout: Option<FileDuration>,
    pub shutdown_timeout: Option<FileDuration>,
    pub workers: Option<u16>,
    pub max_body_size: Option<u64>,
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub tls_cert: Vec<PathBuf>,
    #[serde(default)]
    pub tls_key: Vec<PathBuf>,
    pub tls_listen: Option<ListenAddr>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub https_port: Option<u16>,
    pub acme_email: Option<String>,
    pub acme_directory: Option<String>,
    pub acme_staging: Option<bool>,
    pub acme_ca_cert: Option<PathBuf>,
    pub acme_challenge: Option<String>,
}

/// A duration in the file: `"5s"` or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileDuration {
    Seconds(u64),
    Text(String),
}

impl FileDuration {
    fn get(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            FileDuration::Seconds(s) => check_duration(Duration::from_secs(*s), &s.to_string()),
            FileDuration::Text(t) => parse_duration(t),
        }
        .map_err(|reason| ConfigError::Value {
            key: key.to_owned(),
            reason,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{key}: {reason}")]
    Value { key: String, reason: String },
    /// A flag or variable clap refused, as its first line (without clap's own `error: `).
    #[error("{0}")]
    Usage(String),
}

/// A `[[docker]]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEndpoint {
    pub name: Option<String>,
    pub host: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub address: Option<String>,
}

/// Docker discovery settings.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    pub enabled: bool,
    /// The daemons to follow; none: one, at `$DOCKER_HOST` or else the local socket.
    pub endpoints: Vec<Endpoint>,
    /// How often Swarm tasks are listed.
    pub swarm_poll: Duration,
    /// Label prefix, `quayside` by default.
    pub label_prefix: String,
    /// `--instance`: route only containers labelled `<prefix>.instance=NAME` (none: only
    /// those without that label).
    pub instance: Option<String>,
}

/// A token from its flag or environment variable, or from a file (trailing white space
/// dropped: secrets files usually end with a newline).
fn token(
    value: Option<String>,
    file: Option<PathBuf>,
    key: &str,
) -> Result<Option<Token>, ConfigError> {
    let err = |reason: String| ConfigError::Value {
        key: key.to_owned(),
        reason,
    };
    // An empty value is none: Compose's `${VAR:-}` passes one for a variable left unset. (An
    // empty file is still refused below: a secret that was meant to be there.)
    let value = value.filter(|v| !v.is_empty());
    let t = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(err(format!(
                "give --{} or --{}-file, not both",
                key.replace('_', "-"),
                key.replace('_', "-")
            )));
        }
        (Some(v), None) => v,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?
            .trim_end()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if t.is_empty() {
        return Err(err("must not be empty".into()));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "must be one word of visible characters (it goes in an Authorization header)".into(),
        ));
    }
    Ok(Some(Token::new(t)))
}

/// Fully resolved settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `quayside healthcheck`: ask the running server instead of serving.
    pub healthcheck: bool,
    /// `quayside state …`: move state in or out of the store instead of serving.
    pub state_action: Option<StateAction>,
    /// Where the operator's state is kept.
    pub state_store: StateStore,
    /// quayside's own logs as JSON lines.
    pub log_json: bool,
    /// Where and how to write the access log (none: off).
    pub access_log: Option<(crate::access_log::Target, crate::access_log::Format)>,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin: AdminConfig,
    /// Where manual changes are saved; `None` keeps them in memory only (tests).
    pub state: Option<PathBuf>,
    pub docker: DockerConfig,
    pub proxy: ProxyConfig,
    pub tls: TlsConfig,
    /// Automatic HTTPS (none: off).
    pub acme: Option<crate::acme::AcmeConfig>,
}

/// TLS termination settings: off when `certs` is empty.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub certs: Vec<PathBuf>,
    pub keys: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Cli::default(), FileConfig::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Parse the command line (and environment), read `--config` if given, and resolve.
    pub fn from_args() -> Result<Self, ConfigError> {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) if e.use_stderr() => {
                // One line, as every other start-up error: clap's first (its tip and usage
                // would follow).
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                return Err(ConfigError::Usage(
                    first.strip_prefix("error: ").unwrap_or(first).to_owned(),
                ));
            }
            // --help, --version.
            Err(e) => e.exit(),
        };
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Config::resolve(cli, file)
    }

    /// Merge flags/env (`cli`) over the file over defaults.
    pub fn resolve(cli: Cli, file: FileConfig) -> Result<Self, ConfigError> {
        let d = ProxyConfig::default();
        let dur = |flag: Option<Duration>,
                   f: &Option<FileDuration>,
                   key: &str,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            match (flag, f) {
                (Some(v), _) => Ok(v),
                (None, Some(v)) => v.get(key),
                (None, None) => Ok(default),
            }
        };
        let tls = TlsConfig {
            listen: cli
                .tls_listen
                .or(file.tls_listen.map(|l| l.0))
                .unwrap_or_else(|| DEFAULT_TLS_LISTEN.parse().unwrap()),
            certs: if cli.tls_cert.is_empty() {
                file.tls_cert
            } else {
                cli.tls_cert
            },
            keys: if cli.tls_key.is_empty() {
                file.tls_key
            } else {
                cli.tls_key
            },
        };
        if tls.certs.len() != tls.keys.len() {
            return Err(ConfigError::Value {
                key: "tls_cert".into(),
                reason: format!(
                    "--tls-cert and --tls-key must come in pairs (got {} certificates, {} keys)",
                    tls.certs.len(),
                    tls.keys.len()
                ),
            });
        }
        let admin = AdminConfig {
            token: token(
                cli.admin_token,
                cli.admin_token_file.or(file.admin_token_file),
                "admin_token",
            )?,
            read_token: token(
                cli.admin_read_token,
                cli.admin_read_token_file.or(file.admin_read_token_file),
                "admin_read_token",
            )?,
            insecure: cli.admin_insecure.or(file.admin_insecure).unwrap_or(false),
            hosts: if cli.admin_host.is_empty() {
                file.admin_host
            } else {
                cli.admin_host
            }
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
            tls: match (
                cli.admin_tls_cert.or(file.admin_tls_cert),
                cli.admin_tls_key.or(file.admin_tls_key),
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Value {
                        key: "admin_tls_cert".into(),
                        reason: "--admin-tls-cert and --admin-tls-key go together".into(),
                    });
                }
            },
            limits: Default::default(),
        };
        if admin.read_token.is_some() && admin.read_token == admin.token {
            return Err(ConfigError::Value {
                key: "admin_read_token".into(),
                reason: "must differ from the admin token".into(),
            });
        }
        if admin.read_token.is_some() && admin.token.is_none() {
            return Err(ConfigError::Value {
                key: "admin_read_token".into(),
                reason: "needs --admin-token too (without it the API would be open to change)"
                    .into(),
            });
        }
        let format = match cli
            .access_log_format
            .or(file.access_log_format)
            .as_deref()
            .map(str::trim)
        {
            None | Some("json") => crate::access_log::Format::Json,
            Some("common") => crate::access_log::Format::Common,
            Some(other) => {
                return Err(ConfigError::Value {
                    key: "access_log_format".into(),
                    reason: format!("must be json or common, got {other}"),
                });
            }
        };
        let access_log = cli.access_log.or(file.access_log).map(|p| {
            let target = if p.as_os_str() == "-" {
                crate::access_log::Target::Stdout
            } else {
                crate::access_log::Target::File(p)
            };
            (target, format)
        });
        let log_json = match cli.log_format.or(file.log_format).as_deref().map(str::trim) {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::Value {
                    key: "log_format".into(),
                    reason: format!("must be text or json, got {other}"),
                });
            }
        };
        let instance = match cli.instance.clone().or(file.instance.clone()) {
            None => None,
            Some(n) => Some(crate::registry::validate::service(n.trim()).map_err(|e| {
                ConfigError::Value {
                    key: "instance".into(),
                    reason: e.reason,
                }
            })?),
        };
        Ok(Config {
            healthcheck: cli.command == Some(Sub::Healthcheck),
            state_action: match cli.command.clone() {
                Some(Sub::State { action }) => Some(action),
                _ => None,
            },
            state_store: match cli.state_store.or(file.state_store).as_deref() {
                None | Some("file") => StateStore::File,
                Some("swarm") => StateStore::Swarm {
                    name: crate::registry::validate::service(
                        &cli.state_store_name
                            .or(file.state_store_name)
                            // (An instance's own, so two on one host do not share one.)
                            .unwrap_or_else(|| match &instance {
                                Some(n) => format!("quayside-state-{n}"),
                                None => "quayside-state".into(),
                            }),
                    )
                    .map_err(|e| ConfigError::Value {
                        key: "state_store_name".into(),
                        reason: e.reason,
                    })?,
                },
                Some(other) => {
                    return Err(ConfigError::Value {
                        key: "state_store".into(),
                        reason: format!("must be file or swarm, got {other:?}"),
                    });
                }
            },
            log_json,
            access_log,
            tls,
            acme: acme(
                cli.acme_email.or(file.acme_email),
                cli.acme_directory.or(file.acme_directory),
                cli.acme_staging.or(file.acme_staging).unwrap_or(false),
                cli.acme_ca_cert.or(file.acme_ca_cert),
                cli.acme_challenge.or(file.acme_challenge),
            )?,
            admin,
            listen: cli
                .listen
                .or(file.listen.map(|l| l.0))
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap()),
            admin_listen: cli
                .admin_listen
                .or(file.admin_listen.map(|l| l.0))
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().unwrap()),
            state: Some(cli.state.or(file.state).unwrap_or_else(|| match &instance {
                Some(n) => PathBuf::from(format!("quayside-state.{n}.json")),
                None => PathBuf::from(DEFAULT_STATE),
            })),
            docker: DockerConfig {
                enabled: !cli.no_docker.or(file.no_docker).unwrap_or(false),
                endpoints: endpoints(cli.docker_host, file.docker_host, file.docker)?,
                swarm_poll: dur(
                    cli.swarm_poll,
                    &file.swarm_poll,
                    "swarm_poll",
                    Duration::from_secs(1),
                )?,
                label_prefix: label_prefix(cli.label_prefix.or(file.label_prefix))?,
                instance: instance.clone(),
            },
            proxy: ProxyConfig {
                connect_timeout: dur(
                    cli.connect_timeout,
                    &file.connect_timeout,
                    "connect_timeout",
                    d.connect_timeout,
                )?,
                response_header_timeout: dur(
                    cli.response_header_timeout,
                    &file.response_header_timeout,
                    "response_header_timeout",
                    d.response_header_timeout,
                )?,
                client_header_timeout: dur(
                    cli.client_header_timeout,
                    &file.client_header_timeout,
                    "client_header_timeout",
                    d.client_header_timeout,
                )?,
                pool_idle_timeout: dur(
                    cli.pool_idle_timeout,
                    &file.pool_idle_timeout,
                    "pool_idle_timeout",
                    d.pool_idle_timeout,
                )?,
                shutdown_timeout: dur(
                    cli.shutdown_timeout,
                    &file.shutdown_timeout,
                    "shutdown_timeout",
                    d.shutdown_timeout,
                )?,
                workers: match cli.workers.or(file.workers) {
                    Some(0) => {
                        return Err(ConfigError::Value {
                            key: "workers".into(),
                            reason: "must be at least 1".into(),
                        });
                    }
                    Some(n) => n as usize,
                    None => d.workers,
                },
                max_body_size: cli.max_body_size.or(file.max_body_size),
                max_connections: match cli.max_connections.or(file.max_connections) {
                    Some(0) => {
                        return Err(ConfigError::Value {
                            key: "max_connections".into(),
                            reason: "must be at least 1".into(),
                        });
                    }
                    Some(n) => n,
                    None => d.max_connections,
                },
                park_after: d.park_after,
                observer: None,
                trusted_proxies: trusted_proxies(if cli.trusted_proxies.is_empty() {
                    file.trusted_proxies
                } else {
                    cli.trusted_proxies
                })?,
                https_port: match cli.https_port.or(file.https_port) {
                    Some(0) => {
                        return Err(ConfigError::Value {
                            key: "https_port".into(),
                            reason: "must be 1-65535".into(),
                        });
                    }
                    Some(p) => p,
                    None => d.https_port,
                },
                acme: None,
            },
        })
    }
}

/// The `--acme-*` settings: off without an email address.
fn acme(
    email: Option<String>,
    directory: Option<String>,
    staging: bool,
    ca_cert: Option<PathBuf>,
    challenge: Option<String>,
) -> Result<Option<crate::acme::AcmeConfig>, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::Value {
        key: key.into(),
        reason,
    };
    let Some(email) = email.filter(|e| !e.is_empty()) else {
        return match (&directory, staging, &ca_cert, &challenge) {
            (None, false, None, None) => Ok(None),
            _ => Err(err(
                "acme_email",
                "the other --acme-* settings need --acme-email, which turns automatic HTTPS on"
                    .into(),
            )),
        };
    };
    if email.contains(char::is_whitespace)
        || !email
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
    {
        return Err(err(
            "acme_email",
            format!("{email:?} is not an email address (user@example.com)"),
        ));
    }
    let directory = match (directory, staging) {
        (Some(_), true) => {
            return Err(err(
                "acme_staging",
                "give --acme-staging or --acme-directory, not both".into(),
            ));
        }
        (Some(d), false) => {
            if !d.starts_with("https://") || d.parse::<http::Uri>().is_err() {
                return Err(err(
                    "acme_directory",
                    format!("{d:?} is not an https:// URL (ACME servers speak HTTPS)"),
                ));
            }
            d
        }
        (None, true) => crate::acme::LETS_ENCRYPT_STAGING.to_owned(),
        (None, false) => crate::acme::LETS_ENCRYPT.to_owned(),
    };
    if let Some(path) = &ca_cert
        && !path.is_file()
    {
        return Err(err(
            "acme_ca_cert",
            format!("{} is not a readable file", path.display()),
        ));
    }
    let challenge = match challenge.as_deref() {
        None | Some("http-01") => crate::acme::Challenge::Http01,
        Some("tls-alpn-01") => crate::acme::Challenge::TlsAlpn01,
        Some(other) => {
            return Err(err(
                "acme_challenge",
                format!("{other:?} is not http-01 or tls-alpn-01"),
            ));
        }
    };
    Ok(Some(crate::acme::AcmeConfig {
        email,
        directory,
        ca_cert,
        challenge,
    }))
}

/// `--trusted-proxies`: each an address block.
fn trusted_proxies(v: Vec<String>) -> Result<std::sync::Arc<[crate::types::Cidr]>, ConfigError> {
    v.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            crate::types::Cidr::parse(s).map_err(|reason| ConfigError::Value {
                key: "trusted_proxies".into(),
                reason,
            })
        })
        .collect()
}

/// The Docker endpoints: from `--docker-host` (each `URI` or `NAME=URI`), else the file's
/// `[[docker]]` tables, else its `docker_host`. Unnamed ones are `default` (the first) and
/// `docker2`, `docker3`, ... (by position); names must be distinct.
fn endpoints(
    cli: Vec<String>,
    file_host: Option<String>,
    tables: Vec<FileEndpoint>,
) -> Result<Vec<Endpoint>, ConfigError> {
    let err = |key: String, reason: String| ConfigError::Value { key, reason };
    if file_host.is_some() && !tables.is_empty() {
        return Err(err(
            "docker_host".into(),
            "give the Docker endpoints either as docker_host or as [[docker]] tables, not both"
                .into(),
        ));
    }
    let tables: Vec<(String, FileEndpoint)> = if !cli.is_empty() {
        cli.into_iter()
            .map(|v| {
                // `NAME=URI`: a name has no `:` or `/`, which every URI has before any `=`.
                let (name, host) = match v.split_once('=') {
                    Some((n, h)) if !n.contains([':', '/']) => (Some(n.to_owned()), h.to_owned()),
                    _ => (None, v),
                };
                let e = FileEndpoint {
                    name,
                    host: Some(host),
                    ..Default::default()
                };
                ("--docker-host".to_owned(), e)
            })
            .collect()
    } else if !tables.is_empty() {
        tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("docker[{i}]"), t))
            .collect()
    } else {
        match file_host {
            Some(h) => vec![(
                "docker_host".to_owned(),
                FileEndpoint {
                    host: Some(h),
                    ..Default::default()
                },
            )],
            None => return Ok(Vec::new()),
        }
    };
    let mut out: Vec<Endpoint> = Vec::new();
    for (i, (key, t)) in tables.into_iter().enumerate() {
        let name = match t.name {
            Some(n) => crate::registry::validate::service(&n)
                .map_err(|e| err(format!("{key}.name"), e.reason))?,
            None if i == 0 => crate::discovery::docker::DEFAULT_NAME.to_owned(),
            None => format!("docker{}", i + 1),
        };
        if out.iter().any(|e| e.name == name) {
            return Err(err(
                format!("{key}.name"),
                format!("{name:?} names two Docker endpoints; give each its own name"),
            ));
        }
        let tls = match (t.tls_ca, t.tls_cert, t.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                Some(crate::discovery::docker::EndpointTls { ca, cert, key })
            }
            _ => {
                return Err(err(
                    format!("{key}.tls_cert"),
                    "tls_ca, tls_cert and tls_key go together".into(),
                ));
            }
        };
        let address = t
            .address
            .map(|a| {
                crate::registry::validate::ip(&a)
                    .map_err(|e| err(format!("{key}.address"), e.reason))
            })
            .transpose()?;
        out.push(Endpoint {
            name,
            host: t.host,
            tls,
            address,
        });
    }
    Ok(out)
}

fn label_prefix(v: Option<String>) -> Result<String, ConfigError> {
    let v = v.unwrap_or_else(|| "quayside".to_owned());
    let ok = !v.is_empty()
        && !v.ends_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(v)
    } else {
        Err(ConfigError::Value {
            key: "label_prefix".into(),
            reason: format!(
                "must be letters, digits, '.', '-' or '_' and not end in '.', got {v:?}"
            ),
        })
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: describe_toml_error(&text, &e),
        })
    }
}

/// A config file's error on one line, where it is (`line L, column C: ...`), and for a token
/// given in the file, which key or variable to use instead.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().trim().replace('\n', " ");
    for (key, flag) in [
        ("admin_token", "admin-token"),
        ("admin_read_token", "admin-read-token"),
    ] {
        if message.starts_with(&format!("unknown field `{key}`")) {
            let var = format!("QUAYSIDE_{}", key.to_ascii_uppercase());
            message = format!(
                "{key} is not read from the config file (a file that is often shared or checked in): put the token in a file of its own and give {key}_file = \"/path/to/it\", or set {var} or --{flag}"
            );
        }
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - start + 1;
            // The key the line sets, unless the message names it already.
            let key = text[start..]
                .lines()
                .next()
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| {
                    !k.is_empty() && !message.starts_with(k) && !message.contains(&format!("`{k}`"))
                });
            match key {
                Some(k) => format!("line {line}, column {column}: {k}: {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_groups_the_flags_under_headings_and_ends_with_the_examples() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        let headings: Vec<&str> = help
            .lines()
            .filter(|l| l.ends_with(':') && !l.starts_with(' '))
            .collect();
        assert_eq!(
            headings,
            [
                "Commands:",
                "Options:",
                "Listeners:",
                "Admin API and tokens:",
                "Docker and Swarm:",
                "State:",
                "TLS and ACME:",
                "Logs and metrics:",
                "Tuning:",
                "Examples:"
            ],
            "{help}"
        );
        // Only --config, --help and --version are left without a heading.
        let options = help.split("Options:").nth(1).unwrap();
        let options = options.split("\n\n").next().unwrap();
        assert_eq!(
            options.lines().filter(|l| l.contains("--")).count(),
            3,
            "{options}"
        );
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9001\"\nno_docker = true\nconnect_timeout = \"2s\"\nshutdown_timeout = 7\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["quayside", "--listen", "127.0.0.1:7000"]).unwrap();
        let c = Config::resolve(cli, file).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.admin_listen.port(), 9001);
        assert!(!c.docker.enabled);
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.proxy.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(c.proxy.response_header_timeout, Duration::from_secs(60));
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(c.docker.enabled);
        let cli = Cli::try_parse_from(["quayside", "--no-docker=false"]).unwrap();
        let file: FileConfig = toml::from_str("no_docker = true").unwrap();
        assert!(Config::resolve(cli, file).unwrap().docker.enabled);
    }

    #[test]
    fn acme_settings_are_checked_and_named() {
        let resolve = |args: &[&str], file: &str| {
            let mut argv = vec!["quayside"];
            argv.extend_from_slice(args);
            let cli = Cli::try_parse_from(argv).unwrap();
            Config::resolve(cli, toml::from_str(file).unwrap())
        };
        assert!(resolve(&[], "").unwrap().acme.is_none());
        let a = resolve(&["--acme-email", "ops@example.com"], "")
            .unwrap()
            .acme
            .unwrap();
        assert_eq!(a.directory, crate::acme::LETS_ENCRYPT);
        assert_eq!(a.challenge, crate::acme::Challenge::Http01);
        let a = resolve(
            &["--acme-staging", "--acme-challenge", "tls-alpn-01"],
            "acme_email = \"ops@example.com\"",
        )
        .unwrap()
        .acme
        .unwrap();
        assert_eq!(a.directory, crate::acme::LETS_ENCRYPT_STAGING);
        assert_eq!(a.challenge, crate::acme::Challenge::TlsAlpn01);
        let err = |args: &[&str]| resolve(args, "").unwrap_err().to_string();
        assert!(err(&["--acme-email", "nobody"]).starts_with("acme_email: "));
        assert!(err(&["--acme-staging"]).contains("need --acme-email"));
        let e = err(&[
            "--acme-email",
            "a@b.c",
            "--acme-directory",
            "http://ca.test/dir",
        ]);
        assert!(
            e.starts_with("acme_directory: ") && e.contains("https://"),
            "{e}"
        );
        let e = err(&[
            "--acme-email",
            "a@b.c",
            "--acme-directory",
            "https://ca.test/dir",
            "--acme-staging",
        ]);
        assert!(e.starts_with("acme_staging: "), "{e}");
        let e = err(&["--acme-email", "a@b.c", "--acme-challenge", "dns-01"]);
        assert!(
            e.starts_with("acme_challenge: ") && e.contains("dns-01"),
            "{e}"
        );
        let e = err(&[
            "--acme-email",
            "a@b.c",
            "--acme-ca-cert",
            "/nonexistent.pem",
        ]);
        assert!(e.starts_with("acme_ca_cert: "), "{e}");
    }

    #[test]
    fn docker_endpoints_from_flags_and_tables() {
        let resolve = |args: &[&str], file: &str| {
            let mut argv = vec!["quayside"];
            argv.extend_from_slice(args);
            let cli = Cli::try_parse_from(argv).unwrap();
            Config::resolve(cli, toml::from_str(file).unwrap()).map(|c| c.docker.endpoints)
        };
        let e = resolve(
            &[
                "--docker-host",
                "unix:///var/run/docker.sock",
                "--docker-host",
                "edge=tcp://10.0.0.2:2375",
                "--docker-host",
                "tcp://10.0.0.3:2375",
            ],
            "",
        )
        .unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["default", "edge", "docker3"]);
        assert_eq!(e[1].host.as_deref(), Some("tcp://10.0.0.2:2375"));
        let tables = "[[docker]]\nname = \"local\"\n\n[[docker]]\nname = \"b\"\nhost = \"tcp://10.0.0.2:2376\"\naddress = \"10.0.0.2\"\ntls_ca = \"ca.pem\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";
        let e = resolve(&[], tables).unwrap();
        assert_eq!((e[0].name.as_str(), e[0].host.as_deref()), ("local", None));
        assert_eq!(e[1].address, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(e[1].tls.as_ref().unwrap().key, PathBuf::from("key.pem"));
        // The flag wins over the file, as everywhere.
        let e = resolve(&["--docker-host", "unix:///x.sock"], tables).unwrap();
        assert_eq!(e.len(), 1);
        // Mistakes name the field.
        let err = |args: &[&str], file: &str| resolve(args, file).unwrap_err().to_string();
        assert!(
            err(
                &[
                    "--docker-host",
                    "a=unix:///1",
                    "--docker-host",
                    "a=unix:///2"
                ],
                ""
            )
            .contains("names two Docker endpoints"),
        );
        assert!(err(&[], "[[docker]]\naddress = \"web.local\"").starts_with("docker[0].address: "));
        assert!(err(&[], "[[docker]]\ntls_ca = \"ca.pem\"").starts_with("docker[0].tls_cert: "));
        assert!(err(&[], "docker_host = \"unix:///1\"\n[[docker]]\n").starts_with("docker_host: "));
        assert!(
            err(&["--docker-host", "bad name=unix:///1"], "").starts_with("--docker-host.name: ")
        );
    }

    /// Flags (and no file) resolved.
    fn resolve(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["quayside"];
        argv.extend_from_slice(args);
        Config::resolve(Cli::try_parse_from(argv).unwrap(), FileConfig::default())
    }

    #[test]
    fn an_empty_token_value_is_none_and_an_empty_token_file_is_refused() {
        // (Compose's `${QUAYSIDE_ADMIN_READ_TOKEN:-}` passes an empty value when it is unset.)
        let c = resolve(&["--admin-token", "", "--admin-read-token", ""]).unwrap();
        assert!(c.admin.token.is_none() && c.admin.read_token.is_none());
        let c = resolve(&["--admin-token", "a", "--admin-read-token", "r"]).unwrap();
        assert!(c.admin.read_token.is_some());
        let file = std::env::temp_dir().join(format!("qs-empty-token-{}", std::process::id()));
        std::fs::write(&file, "\n").unwrap();
        let e = resolve(&["--admin-token-file", file.to_str().unwrap()]).unwrap_err();
        let _ = std::fs::remove_file(&file);
        assert_eq!(e.to_string(), "admin_token: must not be empty");
    }

    #[test]
    fn state_store_is_file_or_swarm() {
        assert_eq!(resolve(&[]).unwrap().state_store, StateStore::File);
        assert_eq!(
            resolve(&["--state-store", "swarm"]).unwrap().state_store,
            StateStore::Swarm {
                name: "quayside-state".into()
            }
        );
        let e = resolve(&["--state-store", "etcd"]).unwrap_err().to_string();
        assert_eq!(e, "state_store: must be file or swarm, got \"etcd\"");
        let e = resolve(&["--state-store", "swarm", "--state-store-name", "a b"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("state_store_name: "), "{e}");
        let c = resolve(&["state", "export", "backup.json"]).unwrap();
        assert_eq!(
            c.state_action,
            Some(StateAction::Export {
                file: Some("backup.json".into())
            })
        );
    }

    #[test]
    fn an_instance_gets_names_of_its_own() {
        let c = resolve(&["--instance", "blue", "--state-store", "swarm"]).unwrap();
        assert_eq!(c.docker.instance.as_deref(), Some("blue"));
        assert_eq!(c.state, Some(PathBuf::from("quayside-state.blue.json")));
        assert_eq!(
            c.state_store,
            StateStore::Swarm {
                name: "quayside-state-blue".into()
            }
        );
        // Set names stay as set.
        let c = resolve(&["--instance", "blue", "--state", "/s.json"]).unwrap();
        assert_eq!(c.state, Some(PathBuf::from("/s.json")));
        assert_eq!(resolve(&[]).unwrap().docker.instance, None);
        let e = resolve(&["--instance", "a b"]).unwrap_err().to_string();
        assert!(e.starts_with("instance: "), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        // One line, where, and for a token the key or variable that takes it.
        let path = std::env::temp_dir().join(format!("qs-token-{}.toml", std::process::id()));
        std::fs::write(&path, "no_docker = true\nadmin_token = \"s3cret\"\n").unwrap();
        let e = FileConfig::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("line 2, column 1: admin_token is not read"),
            "{e}"
        );
        assert!(
            e.contains("admin_token_file") && e.contains("QUAYSIDE_ADMIN_TOKEN"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }
}
