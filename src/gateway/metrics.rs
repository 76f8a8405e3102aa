//! What the gateway counts for `GET /metrics` on its listener: calls by backend and
//! outcome, the latency of the calls a backend answered, calls sent on to the instance
//! that replaced the one they were meant for, and open client sessions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::{Histogram, escape};

/// How one `tools/call` ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The backend answered with a result.
    Ok,
    /// The backend answered with a tool error (`isError: true`), passed through.
    ToolError,
    /// The backend refused the request (bad arguments...), passed through.
    ProtocolError,
    /// `BACKEND_UNHEALTHY`: the server is not in a state to route to.
    BackendUnhealthy,
    /// `BACKEND_UNAVAILABLE`: running, but the gateway has no session with it yet.
    BackendUnavailable,
    /// `BACKEND_UNREACHABLE`: the call did not reach it, or no answer came.
    Unreachable,
    /// Its client cancelled it before the answer (the backend was told).
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::ProtocolError => "protocol_error",
            Outcome::BackendUnhealthy => "backend_unhealthy",
            Outcome::BackendUnavailable => "backend_unavailable",
            Outcome::Unreachable => "unreachable",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Default)]
pub struct GatewayMetrics {
    calls: Mutex<BTreeMap<(String, Outcome), u64>>,
    latency: Mutex<BTreeMap<String, Arc<Histogram>>>,
    rerouted: AtomicU64,
}

impl GatewayMetrics {
    /// Counts a call to `server`; `answered_in` is how long the backend took, when it
    /// answered.
    pub fn call(&self, server: &str, outcome: Outcome, answered_in: Option<Duration>) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((server.to_owned(), outcome))
            .or_default() += 1;
        if let Some(took) = answered_in {
            let histogram = self
                .latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(server.to_owned())
                .or_default()
                .clone();
            histogram.observe(took.as_secs_f64());
        }
    }

    pub fn rerouted(&self) {
        self.rerouted.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls per server since the agent started, and how many of them did not end `ok`
    /// (a call its client cancelled is no error).
    pub fn totals(&self) -> BTreeMap<String, crate::fleet::GatewayCalls> {
        let mut totals: BTreeMap<String, crate::fleet::GatewayCalls> = BTreeMap::new();
        for ((server, outcome), n) in self.calls.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let t = totals.entry(server.clone()).or_default();
            t.calls += n;
            if !matches!(outcome, Outcome::Ok | Outcome::Cancelled) {
                t.errors += n;
            }
        }
        totals
    }

    /// Calls to `server` by outcome.
    pub fn calls_of(&self, server: &str) -> BTreeMap<&'static str, u64> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((s, _), _)| s == server)
            .map(|((_, o), n)| (o.as_str(), *n))
            .collect()
    }

    /// The text exposition format, with `sessions` client sessions open.
    pub fn render(&self, sessions: usize) -> String {
        let mut out = String::new();
        let name = "mcp_orchestration_gateway_calls_total";
        let _ = writeln!(
            out,
            "# HELP {name} tools/call through the gateway by backend and outcome.\n# TYPE {name} counter"
        );
        for ((server, outcome), n) in self.calls.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\",outcome=\"{}\"}} {n}",
                escape(server),
                outcome.as_str()
            );
        }
        let name = "mcp_orchestration_gateway_call_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long backends took to answer calls through the gateway.\n# TYPE {name} histogram"
        );
        for (server, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            h.render_samples(&mut out, name, Some(("backend", server)));
        }
        let name = "mcp_orchestration_gateway_rerouted_total";
        let _ = writeln!(
            out,
            "# HELP {name} Calls that could not reach their instance and went to its replacement.\n# TYPE {name} counter\n{name} {}",
            self.rerouted.load(Ordering::Relaxed)
        );
        let name = "mcp_orchestration_gateway_sessions";
        let _ = writeln!(
            out,
            "# HELP {name} Open client sessions.\n# TYPE {name} gauge\n{name} {sessions}"
        );
        out
    }
}
