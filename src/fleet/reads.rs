//! What operators read about the fleet — one server, its rollouts and health, health
//! events, revisions, a rollout's timeline — as typed answers the HTTP API, the MCP tools
//! and the OpenAPI document share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::control::Control;
use super::error::{ControlError, Missing};
use super::view::ServerView;
use crate::health::ServerHealth;
use crate::store::{HealthEvent, RolloutProbe, RolloutRecord, RolloutStep, RunRecord};

/// How many rollouts (or runs) a page shows when not told, and at most. The query types'
/// schemas (`GET /openapi.json`, the MCP tools) are built from these too.
pub const ROLLOUTS_LIMIT: (usize, usize) = (20, 500);
/// How many events a page shows when not told, and at most.
pub const EVENTS_LIMIT: (usize, usize) = (50, 1000);

/// A page size: the default when none is given; one outside `1..=max` is refused, as the
/// documented schema says, rather than quietly cut.
pub fn limit(given: Option<usize>, (default, max): (usize, usize)) -> Result<usize, ControlError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ControlError::Invalid(format!(
            "`limit` must be between 1 and {max}, not {n}"
        ))),
    }
}

/// An event id to page after: never negative.
pub fn after(given: Option<i64>) -> Result<Option<i64>, ControlError> {
    match given {
        Some(n) if n < 0 => Err(ControlError::Invalid(format!(
            "`after` must be an event id (a non-negative integer), not {n}"
        ))),
        other => Ok(other),
    }
}

/// A page of the event log, oldest first.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventPage {
    pub events: Vec<crate::store::Event>,
}

/// A server's rollouts, newest first.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolloutPage {
    pub server_id: String,
    pub rollouts: Vec<RolloutRecord>,
}

/// One rollout with its timeline and the probes of its health gate.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolloutDetail {
    #[serde(flatten)]
    pub rollout: RolloutRecord,
    pub steps: Vec<RolloutStep>,
    pub probes: Vec<RolloutProbe>,
}

/// Recorded runs (one per commit tried), newest first.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RevisionPage {
    pub revisions: Vec<RunRecord>,
}

/// A monitored server's health and the recovery events since its last transition.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct MonitoredHealth {
    #[serde(flatten)]
    pub health: ServerHealth,
    #[schemars(extend("const" = true))]
    pub monitored: bool,
    /// Recovery attempts since the server last became unhealthy, newest first.
    pub recovery: Vec<HealthEvent>,
}

/// The health of a server of the manifest that the monitor does not watch: it has no
/// running instance to probe (not started yet, stopped, or unable to run here).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UnmonitoredHealth {
    pub server_id: String,
    #[schemars(extend("const" = "unknown"))]
    pub state: &'static str,
    #[schemars(extend("const" = false))]
    pub monitored: bool,
    pub reason: &'static str,
}

/// One server's health: monitored, or why not.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum HealthReport {
    Monitored(Box<MonitoredHealth>),
    Unmonitored(UnmonitoredHealth),
}

/// Every monitored server's health, and counts by state.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HealthStatus {
    pub servers: Vec<ServerHealth>,
    pub counts: BTreeMap<String, usize>,
}

/// The last hour of a server's probes (`GET /servers/{id}/health/history`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HealthHistory {
    pub server_id: String,
    /// How many seconds each sample covers.
    pub sample_seconds: i64,
    /// Oldest first, the last hour at most; empty for a server not monitored now.
    pub samples: Vec<crate::health::ProbeSample>,
}

/// Health events, newest first: of one server (`server_id` set) or of all.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HealthEventPage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    pub events: Vec<HealthEvent>,
}

impl Control {
    /// One server with its live health.
    pub fn server(&self, id: &str) -> Result<ServerView, ControlError> {
        self.fleet_live()
            .servers
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| ControlError::server_not_found(id))
    }

    /// The server's rollouts, newest first. A server that left the manifest still has its
    /// history; only an id never seen is unknown.
    pub async fn server_rollouts(
        &self,
        id: &str,
        limit_to: Option<usize>,
    ) -> Result<RolloutPage, ControlError> {
        let limit = limit(limit_to, ROLLOUTS_LIMIT)?;
        let s = id.to_owned();
        let rollouts = self
            .store
            .call(move |st| st.rollouts(Some(&s), limit))
            .await?;
        if rollouts.is_empty() && !self.known(id) {
            return Err(ControlError::server_not_found(id));
        }
        Ok(RolloutPage {
            server_id: id.to_owned(),
            rollouts,
        })
    }

    /// One rollout (its id as given, which may not even be a number).
    pub async fn rollout(&self, id: &str) -> Result<RolloutDetail, ControlError> {
        let not_found = || ControlError::NotFound {
            what: Missing::Rollout,
            id: id.to_owned(),
        };
        let n: i64 = id.parse().map_err(|_| not_found())?;
        let (record, (steps, probes)) = self
            .store
            .call(move |st| Ok((st.rollout(n)?, st.rollout_timeline(n)?)))
            .await?;
        Ok(RolloutDetail {
            rollout: record.ok_or_else(not_found)?,
            steps,
            probes,
        })
    }

    /// Recorded runs, newest first.
    pub async fn revisions(&self, limit_to: Option<usize>) -> Result<RevisionPage, ControlError> {
        let limit = limit(limit_to, ROLLOUTS_LIMIT)?;
        let revisions = self.store.call(move |s| s.runs(limit)).await?;
        Ok(RevisionPage { revisions })
    }

    /// The run of a commit, named by a prefix of at least 4 hex characters.
    pub async fn revision(&self, commit: &str) -> Result<RunRecord, ControlError> {
        let c = commit.to_owned();
        self.store
            .call(move |s| s.run_for_commit(&c))
            .await?
            .ok_or_else(|| ControlError::NotFound {
                what: Missing::Revision,
                id: commit.to_owned(),
            })
    }

    /// State, since when and why, the last probe, the consecutive counts, and the recovery
    /// events since the last transition; for a server without an instance, why it is not
    /// monitored.
    pub async fn server_health(&self, id: &str) -> Result<HealthReport, ControlError> {
        let Some(health) = self.monitor.get(id) else {
            if self.known(id) {
                return Ok(HealthReport::Unmonitored(UnmonitoredHealth {
                    server_id: id.to_owned(),
                    state: "unknown",
                    monitored: false,
                    reason: "the server has no running instance to probe",
                }));
            }
            return Err(ControlError::server_not_found(id));
        };
        let s = id.to_owned();
        let recent = self
            .store
            .call(move |st| st.health_events(Some(&s), None, 20))
            .await?;
        let recovery = recent
            .into_iter()
            .take_while(|e| {
                e.kind != "transition"
                    || e.to_state.as_deref() == Some("unhealthy")
                    || e.to_state.as_deref() == Some("failed")
            })
            .filter(|e| e.kind == "recovery")
            .collect();
        Ok(HealthReport::Monitored(Box::new(MonitoredHealth {
            health,
            monitored: true,
            recovery,
        })))
    }

    /// The last hour of a server's probes: the slowest probe and the failures of each
    /// window, across its instances.
    pub fn health_history(&self, id: &str) -> Result<HealthHistory, ControlError> {
        let (sample_seconds, samples) = match self.monitor.history(id) {
            Some(history) => history,
            None if self.known(id) => (5, Vec::new()),
            None => return Err(ControlError::server_not_found(id)),
        };
        Ok(HealthHistory {
            server_id: id.to_owned(),
            sample_seconds,
            samples,
        })
    }

    /// Every monitored server's health, and counts by state.
    pub fn health_status(&self) -> HealthStatus {
        let servers = self.monitor.snapshot();
        let mut counts = BTreeMap::<String, usize>::new();
        for h in &servers {
            *counts.entry(h.state.as_str().to_owned()).or_default() += 1;
        }
        HealthStatus { servers, counts }
    }

    /// One server's health events, newest first; `after` pages forward (for following).
    pub async fn server_health_events(
        &self,
        id: &str,
        after: Option<i64>,
        limit_to: Option<usize>,
    ) -> Result<HealthEventPage, ControlError> {
        let limit = limit(limit_to, EVENTS_LIMIT)?;
        let after = self::after(after)?;
        let s = id.to_owned();
        let events = self
            .store
            .call(move |st| st.health_events(Some(&s), after, limit))
            .await?;
        if events.is_empty() && !self.known(id) {
            return Err(ControlError::server_not_found(id));
        }
        Ok(HealthEventPage {
            server_id: Some(id.to_owned()),
            events,
        })
    }

    /// Health events of every server (or of `server`, unchecked, as a filter), newest
    /// first.
    pub async fn health_events(
        &self,
        server: Option<String>,
        after: Option<i64>,
        limit_to: Option<usize>,
    ) -> Result<HealthEventPage, ControlError> {
        let limit = limit(limit_to, EVENTS_LIMIT)?;
        let after = self::after(after)?;
        let events = self
            .store
            .call(move |st| st.health_events(server.as_deref(), after, limit))
            .await?;
        Ok(HealthEventPage {
            server_id: None,
            events,
        })
    }
}
