//! What one probe found: the plain values the probes produce and the state machine
//! consumes. Kept apart from the probes so that `state`, which is pure, never depends on
//! the code that does IO.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    Healthy,
    Degraded,
    /// The server answered, and the answer says it is not healthy.
    Unhealthy,
    /// Nothing answered in time: refused, reset or timed out.
    Unreachable,
}

impl ProbeOutcome {
    pub fn is_success(self) -> bool {
        self == ProbeOutcome::Healthy
    }

    /// A failure counts toward `failure_threshold`; a degraded answer does not.
    pub fn is_failure(self) -> bool {
        matches!(self, ProbeOutcome::Unhealthy | ProbeOutcome::Unreachable)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbeResult {
    pub outcome: ProbeOutcome,
    /// Why, in words: `HTTP 503: {"status":"unhealthy",...}`, `connection refused`, ...
    pub detail: String,
    /// What the server says it runs, from the body's `version`.
    pub version: Option<String>,
    pub uptime_seconds: Option<f64>,
    pub latency_ms: f64,
}
