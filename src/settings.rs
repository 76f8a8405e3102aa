//! The agent's settings, resolved once from flags, environment and an optional config file.
//!
//! Precedence: a flag beats its `MCP_ORCHESTRATION_*` variable (clap merges those two),
//! which beats the config file, which beats the built-in default. Every environment
//! variable the program reads is a constant in [`env`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::decode::Decoder;
use crate::manifest::policy::TrustPolicy;
use crate::manifest::{Diagnostic, TextFile};
use crate::source::{ReadError, read_text};

/// Environment variables, in one place.
pub mod env {
    /// Path of the YAML config file.
    pub const CONFIG: &str = "MCP_ORCHESTRATION_CONFIG";
    /// Path of the operator's trust policy file.
    pub const TRUST_POLICY: &str = "MCP_ORCHESTRATION_TRUST_POLICY";
    /// `human` (default) or `json`.
    pub const LOG_FORMAT: &str = "MCP_ORCHESTRATION_LOG_FORMAT";
    /// A tracing filter such as `info` or `mcp_orchestration=debug`.
    pub const LOG: &str = "MCP_ORCHESTRATION_LOG";
    /// Disables coloured output when set to anything (https://no-color.org).
    pub const NO_COLOR: &str = "NO_COLOR";
    /// The manifest repository: a URL or a local path.
    pub const REPO: &str = "MCP_ORCHESTRATION_REPO";
    pub const BRANCH: &str = "MCP_ORCHESTRATION_BRANCH";
    pub const MANIFEST_PATH: &str = "MCP_ORCHESTRATION_MANIFEST_PATH";
    /// `30s`, `500ms`, `2m` or plain seconds.
    pub const POLL_INTERVAL: &str = "MCP_ORCHESTRATION_POLL_INTERVAL";
    /// How often registries are asked for new tags: `60s`.
    pub const REGISTRY_POLL_INTERVAL: &str = "MCP_ORCHESTRATION_REGISTRY_POLL_INTERVAL";
    /// Gateways to publish the backend set to, comma-separated.
    pub const GATEWAY_URL: &str = "MCP_ORCHESTRATION_GATEWAY_URL";
    /// YAML list of `{registry, username, password}` for pulls and tag listing.
    pub const REGISTRY_CREDENTIALS: &str = "MCP_ORCHESTRATION_REGISTRY_CREDENTIALS";
    /// `process` (default) or `docker`.
    pub const RUNTIME: &str = "MCP_ORCHESTRATION_RUNTIME";
    /// Address of the agent's HTTP API.
    pub const LISTEN: &str = "MCP_ORCHESTRATION_LISTEN";
    /// Address of the MCP gateway (`/mcp` there), or `off`.
    pub const GATEWAY_LISTEN: &str = "MCP_ORCHESTRATION_GATEWAY_LISTEN";
    /// The gateway's address as clients elsewhere reach it (client configurations).
    pub const GATEWAY_PUBLIC_URL: &str = "MCP_ORCHESTRATION_GATEWAY_PUBLIC_URL";
    pub const DATA_DIR: &str = "MCP_ORCHESTRATION_DATA_DIR";
    /// HMAC secret of `POST /webhooks/git` (`X-Hub-Signature-256`).
    pub const WEBHOOK_SECRET: &str = "MCP_ORCHESTRATION_WEBHOOK_SECRET";
    pub const REQUIRE_KEY_FOR_READS: &str = "MCP_ORCHESTRATION_REQUIRE_KEY_FOR_READS";
    /// Token for https git remotes.
    pub const GIT_TOKEN: &str = "MCP_ORCHESTRATION_GIT_TOKEN";
    /// Private key file for ssh git remotes.
    pub const SSH_KEY: &str = "MCP_ORCHESTRATION_SSH_KEY";
    /// YAML file of `NAME: value` secrets for config requirements.
    pub const SECRETS_FILE: &str = "MCP_ORCHESTRATION_SECRETS_FILE";
    /// The agent the CLI talks to.
    pub const URL: &str = "MCP_ORCHESTRATION_URL";
    /// An API key: accepted by the agent, sent by the CLI.
    pub const API_KEY: &str = "MCP_ORCHESTRATION_API_KEY";
    /// A file of API keys the agent accepts, one per line.
    pub const API_KEYS_FILE: &str = "MCP_ORCHESTRATION_API_KEYS_FILE";
    /// How often a webhook delivery is tried before it becomes a dead letter.
    pub const DELIVERY_ATTEMPTS: &str = "MCP_ORCHESTRATION_DELIVERY_ATTEMPTS";
    /// The wait after a delivery's first failed try (it doubles, up to 60s).
    pub const DELIVERY_BACKOFF: &str = "MCP_ORCHESTRATION_DELIVERY_BACKOFF";
    pub const WRITE_NOTES: &str = "MCP_ORCHESTRATION_WRITE_NOTES";
    /// The operator's sync windows file (YAML).
    pub const SYNC_WINDOWS: &str = "MCP_ORCHESTRATION_SYNC_WINDOWS";
    /// The secret `webhooks subscribe` sends (rather than `--secret`, which `ps` shows).
    pub const SUBSCRIPTION_SECRET: &str = "MCP_ORCHESTRATION_SUBSCRIPTION_SECRET";
}

/// The generated API key's file in the data dir.
pub const API_KEY_FILE: &str = "api-key";

/// Defaults that are not `None`.
pub mod defaults {
    pub const BRANCH: &str = "main";
    pub const MANIFEST_PATH: &str = "ecosystem-manifest.yaml";
    pub const POLL_INTERVAL_SECONDS: f64 = 30.0;
    pub const REGISTRY_POLL_INTERVAL_SECONDS: f64 = 60.0;
    pub const LISTEN: &str = "127.0.0.1:7070";
    pub const AGENT_URL: &str = "http://127.0.0.1:7070";
    pub const GATEWAY_LISTEN: &str = "127.0.0.1:7071";
    /// rmcp logs every MCP session at info; that is noise in an agent's log.
    pub const LOG_LEVEL: &str = "info,rmcp=warn";
    pub const CONCURRENCY: usize = 4;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeChoice {
    #[default]
    Process,
    Docker,
    /// Docker Swarm services, through a manager (`DOCKER_HOST`).
    Swarm,
}

/// Parses `30s`, `500ms`, `2m`, `1h` or plain (fractional) seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}` must be a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The agent's own options, as given (every field optional): the same shape serves the
/// config file and the flags.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOptions {
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub manifest_path: Option<String>,
    pub poll_interval: Option<String>,
    pub registry_poll_interval: Option<String>,
    pub drain: Option<String>,
    pub registry_credentials: Option<PathBuf>,
    pub gateway_url: Option<Vec<String>>,
    pub gateway_resend_interval: Option<String>,
    pub runtime: Option<RuntimeChoice>,
    pub docker_host: Option<String>,
    pub listen: Option<String>,
    pub gateway_listen: Option<String>,
    pub gateway_public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub webhook_secret: Option<String>,
    pub git_token: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub secrets_file: Option<PathBuf>,
    pub concurrency: Option<usize>,
    pub api_keys_file: Option<PathBuf>,
    pub require_key_for_reads: Option<bool>,
    pub header_read_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub git_timeout: Option<String>,
    pub delivery_attempts: Option<u32>,
    pub delivery_backoff: Option<String>,
    pub write_notes: Option<bool>,
    pub sync_windows: Option<PathBuf>,
}

impl AgentOptions {
    /// Fills every unset field from `other`.
    fn or(self, other: AgentOptions) -> AgentOptions {
        AgentOptions {
            repo: self.repo.or(other.repo),
            branch: self.branch.or(other.branch),
            manifest_path: self.manifest_path.or(other.manifest_path),
            poll_interval: self.poll_interval.or(other.poll_interval),
            registry_poll_interval: self.registry_poll_interval.or(other.registry_poll_interval),
            drain: self.drain.or(other.drain),
            registry_credentials: self.registry_credentials.or(other.registry_credentials),
            gateway_url: self.gateway_url.or(other.gateway_url),
            gateway_resend_interval: self
                .gateway_resend_interval
                .or(other.gateway_resend_interval),
            runtime: self.runtime.or(other.runtime),
            listen: self.listen.or(other.listen),
            gateway_listen: self.gateway_listen.or(other.gateway_listen),
            gateway_public_url: self.gateway_public_url.or(other.gateway_public_url),
            docker_host: self.docker_host.or(other.docker_host),
            data_dir: self.data_dir.or(other.data_dir),
            webhook_secret: self.webhook_secret.or(other.webhook_secret),
            git_token: self.git_token.or(other.git_token),
            ssh_key: self.ssh_key.or(other.ssh_key),
            secrets_file: self.secrets_file.or(other.secrets_file),
            concurrency: self.concurrency.or(other.concurrency),
            api_keys_file: self.api_keys_file.or(other.api_keys_file),
            require_key_for_reads: self.require_key_for_reads.or(other.require_key_for_reads),
            header_read_timeout: self.header_read_timeout.or(other.header_read_timeout),
            max_connections: self.max_connections.or(other.max_connections),
            git_timeout: self.git_timeout.or(other.git_timeout),
            delivery_attempts: self.delivery_attempts.or(other.delivery_attempts),
            delivery_backoff: self.delivery_backoff.or(other.delivery_backoff),
            write_notes: self.write_notes.or(other.write_notes),
            sync_windows: self.sync_windows.or(other.sync_windows),
        }
    }
}

/// The optional YAML config file; every key mirrors a flag.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub trust_policy: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub agent_url: Option<String>,
    pub api_key: Option<String>,
    /// The `agent` command's options, nested so unknown keys are still caught.
    #[serde(default)]
    pub agent: AgentOptions,
}

/// What the command line and environment said (clap fills this in `cli`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub trust_policy: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub agent_url: Option<String>,
    pub api_key: Option<String>,
    pub agent: AgentOptions,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub log_format: LogFormat,
    pub log_level: String,
    /// `None`: the shipped trust policy.
    pub trust_policy: Option<PathBuf>,
    /// The agent the CLI talks to.
    pub agent_url: String,
    /// An API key given explicitly (flag, env or file); see [`Settings::client_api_key`].
    pub api_key: Option<String>,
    /// The agent's options after merging flags, env and file; see [`Settings::agent`].
    pub agent: AgentOptions,
}

/// Everything `mcp-orchestration agent` needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    pub git: crate::source::GitSettings,
    pub poll_interval: std::time::Duration,
    pub registry_poll_interval: std::time::Duration,
    /// How long an old instance keeps serving after its successor is published.
    pub drain: std::time::Duration,
    pub registry_credentials: Option<PathBuf>,
    /// Gateways that receive the backend set (see `publish`).
    pub gateway_urls: Vec<String>,
    /// How often the latest backend set is sent again without a change, so a gateway that
    /// restarted (and lost its table) learns it; its sequence makes it a no-op otherwise.
    pub gateway_resend_interval: std::time::Duration,
    pub runtime: RuntimeChoice,
    /// The Docker Engine (or Swarm manager) the docker and swarm runtimes talk to
    /// (`unix://…`, `tcp://…`); `None`: `DOCKER_HOST`, then the local socket.
    pub docker_host: Option<String>,
    pub listen: std::net::SocketAddr,
    /// Where the MCP gateway listens; `None`: it is off.
    pub gateway_listen: Option<std::net::SocketAddr>,
    /// The gateway's base URL as clients reach it (`https://mcp.example.com`), written
    /// into client configurations; `None`: its own address (loopback when it listens on
    /// every interface).
    pub gateway_public_url: Option<String>,
    /// Whether the gateway needs a key for every request: beyond loopback always, and on
    /// loopback with `require_key_for_reads` (the gateway only reads and calls tools).
    pub gateway_keys: bool,
    pub data_dir: PathBuf,
    /// The home directory whose MCP client files `deploy_config` writes on this host;
    /// `None`: the agent's own (`HOME`). Tests point it at a temporary directory.
    pub clients_home: Option<PathBuf>,
    pub webhook_secret: Option<String>,
    pub secrets_file: Option<PathBuf>,
    pub concurrency: usize,
    /// A key the API accepts (besides those of `api_keys_file`).
    pub api_key: Option<String>,
    pub api_keys_file: Option<PathBuf>,
    /// Whether read routes need a key too: always beyond loopback, and on loopback when
    /// asked (a machine shared with people who should not see the fleet).
    pub keys_for_reads: bool,
    /// An API client must send a whole request head within this long of connecting or of
    /// its previous response; idle and slow connections are closed after it.
    pub header_read_timeout: std::time::Duration,
    /// At most this many API connections at once; `None`: 4,096, or half the open-file
    /// limit when that is lower.
    pub max_connections: Option<usize>,
    /// How webhook deliveries (subscriptions and notification channels) are retried.
    pub delivery: crate::subscriptions::Retry,
    /// Whether each run's result is written as a git note on its commit and the notes ref
    /// pushed to the repository (`--write-notes`).
    pub write_notes: bool,
    /// The operator's sync windows file (`--sync-windows`); `None`: nothing waits.
    pub sync_windows: Option<PathBuf>,
}

/// The data dir when none is given: `$XDG_DATA_HOME/mcp-orchestration`, else
/// `~/.local/share/mcp-orchestration`, else `./.mcp-orchestration`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("mcp-orchestration");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/mcp-orchestration");
    }
    PathBuf::from(".mcp-orchestration")
}

/// The directory of this user's own CLI files of kind `xdg_var` (`XDG_CONFIG_HOME`,
/// `XDG_STATE_HOME`): `$XDG_…/mcp-orchestration`, else `~/{fallback}/mcp-orchestration`;
/// `None` without either. A relative XDG value is ignored, as the XDG spec says.
fn user_dir(xdg_var: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(xdg_var)
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return Some(d.join("mcp-orchestration"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(fallback).join("mcp-orchestration"))
}

/// Where the CLI keeps what the operator configured on this machine (the agent keys it
/// trusts): `$XDG_CONFIG_HOME/mcp-orchestration`, else `~/.config/mcp-orchestration`.
pub fn user_config_dir() -> Option<PathBuf> {
    user_dir("XDG_CONFIG_HOME", ".config")
}

/// Where the CLI keeps what it did on this machine (the client files it deployed):
/// `$XDG_STATE_HOME/mcp-orchestration`, else `~/.local/state/mcp-orchestration`.
pub fn user_state_dir() -> Option<PathBuf> {
    user_dir("XDG_STATE_HOME", ".local/state")
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("invalid config file {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid setting `{name}`: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("invalid trust policy {}:\n{}", path.display(), render(diagnostics))]
    TrustPolicy {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Settings {
    pub fn resolve(over: Overrides) -> Result<Settings, SettingsError> {
        let file = match &over.config {
            Some(path) => load_config(path)?,
            None => ConfigFile::default(),
        };
        Ok(Settings {
            log_format: over.log_format.or(file.log_format).unwrap_or_default(),
            log_level: over
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned()),
            trust_policy: over.trust_policy.or(file.trust_policy),
            agent_url: over
                .agent_url
                .or(file.agent_url)
                .unwrap_or_else(|| defaults::AGENT_URL.to_owned()),
            api_key: over
                .api_key
                .or(file.api_key)
                .filter(|k| !k.trim().is_empty()),
            agent: over.agent.or(file.agent),
        })
    }

    /// The key the CLI sends: the explicit one, else the one the agent generated in the
    /// data dir (readable when the CLI runs on the agent's machine as its user).
    pub fn client_api_key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| {
            std::fs::read_to_string(self.client_key_file())
                .ok()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
        })
    }

    /// Where the CLI looks for the agent's generated key when none is given.
    pub fn client_key_file(&self) -> PathBuf {
        self.agent
            .data_dir
            .clone()
            .unwrap_or_else(default_data_dir)
            .join(API_KEY_FILE)
    }

    /// What to tell a user whose key the agent refused: which key was sent, or where the
    /// CLI looked for one, and how to point it at the right one. A CLI run with another data
    /// dir than the agent's (the quickstart's, say) otherwise only sees "401".
    pub fn client_key_hint(&self) -> String {
        let file = self.client_key_file();
        let dir = file.parent().unwrap_or(&file).display();
        let point = format!(
            "export {}=<the agent's --data-dir> (or pass --data-dir), or give the key with \
             --api-key or {}",
            env::DATA_DIR,
            env::API_KEY
        );
        if self.api_key.is_some() {
            format!(
                "the key given by --api-key, {} or the config file was refused; give the \
                 agent's key, or leave it out to read the agent's {API_KEY_FILE} file",
                env::API_KEY
            )
        } else if self.client_api_key().is_some() {
            format!(
                "the key in {} (data dir {dir}) was refused, so the agent uses another data \
                 dir: {point}",
                file.display()
            )
        } else {
            format!(
                "no API key: none was given and {} does not exist or is unreadable (data dir \
                 {dir}): {point}",
                file.display()
            )
        }
    }

    /// Validates the agent's options into [`AgentSettings`].
    pub fn agent(&self) -> Result<AgentSettings, SettingsError> {
        let a = &self.agent;
        let repo = a.repo.clone().ok_or(SettingsError::Invalid {
            name: "repo",
            message: format!(
                "the agent needs a manifest repository: --repo URL|PATH (or {})",
                env::REPO
            ),
        })?;
        if let Some(path) = local_repo_path(&repo).filter(|p| !p.exists()) {
            // git2 would call it an "unsupported URL protocol", and the agent would retry
            // for ever something that cannot work.
            let relative = if path.is_relative() {
                std::env::current_dir()
                    .map(|d| format!(" (relative to {})", d.display()))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            return Err(SettingsError::Invalid {
                name: "repo",
                message: format!(
                    "the repository path {}{relative} does not exist; give an existing \
                     repository, or a URL such as https://host/org/manifest.git or \
                     git@host:org/manifest.git",
                    path.display()
                ),
            });
        }
        let poll_interval = duration(
            &a.poll_interval,
            "poll-interval",
            std::time::Duration::from_secs_f64(defaults::POLL_INTERVAL_SECONDS),
        )?;
        let registry_poll_interval = duration(
            &a.registry_poll_interval,
            "registry-poll-interval",
            std::time::Duration::from_secs_f64(defaults::REGISTRY_POLL_INTERVAL_SECONDS),
        )?;
        let drain = match &a.drain {
            Some(text) if text.trim() == "0" => std::time::Duration::ZERO,
            Some(text) => parse_duration(text).map_err(|message| SettingsError::Invalid {
                name: "drain",
                message,
            })?,
            None => std::time::Duration::from_secs(2),
        };
        let gateway_resend_interval = match &a.gateway_resend_interval {
            Some(text) => parse_duration(text)
                .and_then(|d| {
                    if d < std::time::Duration::from_secs(1) {
                        Err("at least 1s (it is a safety net, not a stream)".to_owned())
                    } else {
                        Ok(d)
                    }
                })
                .map_err(|message| SettingsError::Invalid {
                    name: "gateway-resend-interval",
                    message,
                })?,
            None => std::time::Duration::from_secs(30),
        };
        let listen_text = a
            .listen
            .clone()
            .unwrap_or_else(|| defaults::LISTEN.to_owned());
        let listen = listen_text.parse().map_err(|_| SettingsError::Invalid {
            name: "listen",
            message: format!("`{listen_text}` is not an address like 127.0.0.1:7070"),
        })?;
        let gateway_text = a
            .gateway_listen
            .clone()
            .unwrap_or_else(|| defaults::GATEWAY_LISTEN.to_owned());
        let gateway_listen = match gateway_text.trim() {
            "off" => None,
            text => Some(text.parse().map_err(|_| SettingsError::Invalid {
                name: "gateway-listen",
                message: format!(
                    "`{gateway_text}` is not an address like 127.0.0.1:7071, nor `off`"
                ),
            })?),
        };
        let gateway_public_url = a
            .gateway_public_url
            .as_deref()
            .map(public_url)
            .transpose()?;
        let gateway_keys: bool = a.require_key_for_reads.unwrap_or(false)
            || gateway_listen.is_some_and(|g: std::net::SocketAddr| !g.ip().is_loopback());
        let git_timeout = duration(
            &a.git_timeout,
            "git-timeout",
            std::time::Duration::from_secs(30),
        )?;
        let header_read_timeout = duration(
            &a.header_read_timeout,
            "header-read-timeout",
            std::time::Duration::from_secs(10),
        )?;
        if a.max_connections == Some(0) {
            return Err(SettingsError::Invalid {
                name: "max-connections",
                message: "must be at least 1".to_owned(),
            });
        }
        let mut delivery = crate::subscriptions::Retry::default();
        if let Some(n) = a.delivery_attempts {
            if n == 0 {
                return Err(SettingsError::Invalid {
                    name: "delivery-attempts",
                    message: "must be at least 1".to_owned(),
                });
            }
            delivery.attempts = n;
        }
        delivery.first = duration(&a.delivery_backoff, "delivery-backoff", delivery.first)?;
        delivery.max = delivery.max.max(delivery.first);
        let concurrency = a.concurrency.unwrap_or(defaults::CONCURRENCY);
        if concurrency == 0 {
            return Err(SettingsError::Invalid {
                name: "concurrency",
                message: "must be at least 1".to_owned(),
            });
        }
        Ok(AgentSettings {
            git: crate::source::GitSettings {
                url: repo,
                branch: a
                    .branch
                    .clone()
                    .unwrap_or_else(|| defaults::BRANCH.to_owned()),
                manifest_path: a
                    .manifest_path
                    .clone()
                    .unwrap_or_else(|| defaults::MANIFEST_PATH.to_owned()),
                token: a.git_token.clone(),
                ssh_key: a.ssh_key.clone(),
                timeout: git_timeout,
            },
            poll_interval,
            registry_poll_interval,
            drain,
            registry_credentials: a.registry_credentials.clone(),
            gateway_urls: a.gateway_url.clone().unwrap_or_default(),
            gateway_resend_interval,
            runtime: a.runtime.unwrap_or_default(),
            listen,
            gateway_listen,
            gateway_public_url,
            docker_host: a.docker_host.clone().filter(|h| !h.trim().is_empty()),
            gateway_keys,
            data_dir: a.data_dir.clone().unwrap_or_else(default_data_dir),
            clients_home: None,
            webhook_secret: a.webhook_secret.clone().filter(|s| !s.is_empty()),
            secrets_file: a.secrets_file.clone(),
            concurrency,
            api_key: self.api_key.clone(),
            api_keys_file: a.api_keys_file.clone(),
            keys_for_reads: a.require_key_for_reads.unwrap_or(false) || !listen.ip().is_loopback(),
            header_read_timeout,
            max_connections: a.max_connections,
            delivery,
            write_notes: a.write_notes.unwrap_or(false),
            sync_windows: a.sync_windows.clone(),
        })
    }

    /// The operator's trust policy: the file named in the settings, or the shipped default.
    pub fn load_trust_policy(&self) -> Result<TrustPolicy, SettingsError> {
        let Some(path) = &self.trust_policy else {
            return Ok(TrustPolicy::shipped());
        };
        let file = TextFile::new(path.display().to_string(), read_text(path)?);
        let mut d = Decoder::new(file.path.clone());
        match TrustPolicy::decode(&mut d, &file) {
            Some(t) if !d.diags.has_errors() => Ok(t),
            _ => Err(SettingsError::TrustPolicy {
                path: path.clone(),
                diagnostics: d.diags.into_vec(),
            }),
        }
    }
}

/// The local path a `--repo` value names, as git reads it: a `file://` URL's path, or
/// anything that is neither a URL with a scheme (`https://`, `ssh://`, ...) nor scp-like
/// (`[user@]host:path`, a colon before any slash). `None` for remotes.
pub fn local_repo_path(repo: &str) -> Option<&Path> {
    if let Some((scheme, rest)) = repo.split_once("://") {
        let is_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            return (scheme == "file").then(|| Path::new(rest));
        }
    }
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), None) if colon > 0 => None,
        (Some(colon), Some(slash)) if colon > 0 && colon < slash => None,
        _ => Some(Path::new(repo)),
    }
}

/// A duration setting: `given` parsed (`30s`, `500ms`, `2m`, plain seconds), or `default`.
/// A base URL clients can reach: http(s), a host, no query; a trailing `/` is dropped and
/// a path is kept (a gateway behind a proxy under `/mcp-gateway`).
fn public_url(text: &str) -> Result<String, SettingsError> {
    let text = text.trim().trim_end_matches('/');
    let invalid = |why: &str| SettingsError::Invalid {
        name: "gateway-public-url",
        message: format!("`{text}` {why}; give a base URL such as https://mcp.example.com"),
    };
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| invalid("is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(invalid("names no host (or carries user info)"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(invalid("has a query, a fragment or spaces"));
    }
    Ok(text.to_owned())
}

fn duration(
    given: &Option<String>,
    name: &'static str,
    default: std::time::Duration,
) -> Result<std::time::Duration, SettingsError> {
    match given {
        Some(text) => {
            parse_duration(text).map_err(|message| SettingsError::Invalid { name, message })
        }
        None => Ok(default),
    }
}

fn load_config(path: &Path) -> Result<ConfigFile, SettingsError> {
    let text = read_text(path)?;
    serde_yaml::from_str(&text).map_err(|e| SettingsError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_gateway_url_is_a_base_url() {
        assert_eq!(
            public_url("https://mcp.example.com/").unwrap(),
            "https://mcp.example.com"
        );
        assert_eq!(
            public_url("http://10.0.0.5:7071/gw").unwrap(),
            "http://10.0.0.5:7071/gw"
        );
        for bad in [
            "mcp.example.com",
            "ftp://x",
            "https://",
            "https://u:p@x",
            "https://x?a=1",
        ] {
            let e = public_url(bad).unwrap_err().to_string();
            assert!(e.contains("gateway-public-url"), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_beat_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, "log_format: json\ntrust_policy: /etc/trust.yaml\n").unwrap();
        let s = Settings::resolve(Overrides {
            config: Some(cfg.clone()),
            trust_policy: Some("/mine.yaml".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.trust_policy, Some(PathBuf::from("/mine.yaml")));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.2"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn agent_settings_need_a_repo_and_fill_defaults() {
        let s = Settings::resolve(Overrides::default()).unwrap();
        assert!(s.agent().unwrap_err().to_string().contains("--repo"));
        let repo = tempfile::tempdir().unwrap();
        let s = Settings::resolve(Overrides {
            agent: AgentOptions {
                repo: Some(repo.path().display().to_string()),
                poll_interval: Some("2s".into()),
                ..AgentOptions::default()
            },
            ..Overrides::default()
        })
        .unwrap();
        let a = s.agent().unwrap();
        assert_eq!(a.git.branch, "main");
        assert_eq!(a.git.manifest_path, "ecosystem-manifest.yaml");
        assert_eq!(a.poll_interval, std::time::Duration::from_secs(2));
        assert_eq!(a.runtime, RuntimeChoice::Process);
        assert_eq!(a.listen.to_string(), "127.0.0.1:7070");
    }

    #[test]
    fn the_config_file_carries_agent_options() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            "agent:\n  repo: https://example.org/m.git\n  runtime: docker\n  branch: prod\n",
        )
        .unwrap();
        let s = Settings::resolve(Overrides {
            config: Some(cfg),
            agent: AgentOptions {
                branch: Some("staging".into()),
                ..AgentOptions::default()
            },
            ..Overrides::default()
        })
        .unwrap();
        let a = s.agent().unwrap();
        assert_eq!(a.runtime, RuntimeChoice::Docker);
        assert_eq!(a.git.branch, "staging", "the flag wins over the file");
    }

    #[test]
    fn only_paths_count_as_local_repositories_not_urls_or_scp_like_remotes() {
        let local = |r: &str| local_repo_path(r).map(|p| p.display().to_string());
        assert_eq!(local("/srv/git/m.git"), Some("/srv/git/m.git".into()));
        assert_eq!(local("manifest"), Some("manifest".into()));
        assert_eq!(local("./a:b/m.git"), Some("./a:b/m.git".into()));
        assert_eq!(local("file:///srv/m.git"), Some("/srv/m.git".into()));
        assert_eq!(
            local("file://localhost/srv/m.git"),
            Some("/srv/m.git".into())
        );
        assert_eq!(local("https://github.com/org/m.git"), None);
        assert_eq!(local("ssh://git@host:22/m.git"), None);
        assert_eq!(local("git+ssh://host/m.git"), None);
        assert_eq!(local("git@github.com:org/m.git"), None);
        assert_eq!(local("host:m.git"), None);
    }

    #[test]
    fn a_repo_path_that_does_not_exist_is_a_settings_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.git");
        for repo in [
            missing.display().to_string(),
            format!("file://{}", missing.display()),
        ] {
            let s = Settings::resolve(Overrides {
                agent: AgentOptions {
                    repo: Some(repo.clone()),
                    ..AgentOptions::default()
                },
                ..Overrides::default()
            })
            .unwrap();
            let err = s.agent().unwrap_err().to_string();
            assert!(err.contains("does not exist"), "{repo}: {err}");
            assert!(err.contains(&missing.display().to_string()), "{err}");
        }
        // A remote is not checked here: reaching it is the fetch's job, with retries.
        let s = Settings::resolve(Overrides {
            agent: AgentOptions {
                repo: Some("git@example.invalid:org/m.git".into()),
                ..AgentOptions::default()
            },
            ..Overrides::default()
        })
        .unwrap();
        assert!(s.agent().is_ok());
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, "log_formt: json\n").unwrap();
        let err = Settings::resolve(Overrides {
            config: Some(cfg),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("log_formt"), "{err}");
    }
}
