//! One probe of one server: HTTP (the health standard), TCP, or MCP.
//!
//! [`Prober`] picks the probe by its kind; each kind lives in its own file (`http`, `tcp`,
//! `mcp`). Whatever a probe finds, the server's
//! words are redacted before they become the result's detail.
//!
//! Probes only read: they never deploy, restart or record anything.

mod http;
mod mcp;
mod tcp;

use std::time::{Duration, Instant};

use crate::manifest::ProbeKind;

// Where they lived before the state machine needed them without the probes.
pub use super::outcome::{ProbeOutcome, ProbeResult};

/// Probes servers. Holds the MCP probe's HTTP client, so its connections are reused across
/// probes; clones share it. It is built at the first MCP probe: building one reads the
/// system's CA bundle (tens of milliseconds and about 6 MiB resident), which a fleet probed
/// over HTTP or TCP never needs (those probes open their own connections, see `http`).
#[derive(Clone, Debug)]
pub struct Prober {
    http: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
    /// A server's answer may echo its configuration; what it says is redacted before it
    /// becomes a probe's detail.
    redactor: crate::redact::Redactor,
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        Prober {
            http: std::sync::Arc::default(),
            redactor: crate::redact::Redactor::default(),
        }
    }

    /// The MCP probe's client, built on first use.
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                // Health endpoints are on loopback; a proxy from the environment must not
                // apply.
                .no_proxy()
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .unwrap_or_default()
        })
    }

    /// The same prober, blanking `redactor`'s values out of every probe's detail.
    pub fn with_redactor(mut self, redactor: crate::redact::Redactor) -> Prober {
        self.redactor = redactor;
        self
    }

    /// Probes `addr` (127.0.0.1 and a port, or a swarm node's) once with the given kind,
    /// endpoint and timeout.
    pub async fn probe(
        &self,
        kind: ProbeKind,
        addr: std::net::SocketAddr,
        endpoint: &str,
        timeout: Duration,
    ) -> ProbeResult {
        let start = Instant::now();
        let (outcome, detail, version, uptime) = match kind {
            ProbeKind::Http => self.http_probe(addr, endpoint, timeout).await,
            ProbeKind::Mcp => self.mcp_probe(addr, endpoint, timeout).await,
            ProbeKind::Tcp => tcp::tcp_probe(addr, timeout).await,
        };
        ProbeResult {
            outcome,
            detail: self.redactor.redact(&detail),
            version,
            uptime_seconds: uptime,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// The innermost cause of `e`: reqwest's, hyper's and io's outer messages are generic, the
/// innermost says "Connection refused".
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
