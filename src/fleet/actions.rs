//! An operator's actions on one server — stop, deploy (also a retry), restart, rollback,
//! resume and a health override — and the answers they give. The HTTP routes and the MCP
//! tools are thin adapters over these, so the two cannot drift apart.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::control::{Control, Trigger};
use super::error::ControlError;
use crate::health::HealthState;
use crate::reconcile::execute::{ApplyContext, RolloutTrigger};

/// The states an operator may force (`unknown`, `starting` and `failed` are the monitor's).
pub const FORCEABLE: [HealthState; 3] = [
    HealthState::Healthy,
    HealthState::Degraded,
    HealthState::Unhealthy,
];

/// The longest a health override holds: a day.
pub const MAX_OVERRIDE_SECONDS: f64 = 86_400.0;

/// A stop's answer.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stopped {
    pub server_id: String,
    /// How many instances were stopped and removed.
    pub stopped_instances: usize,
    /// Always true: syncs leave the server alone until it is deployed again.
    #[schemars(extend("const" = true))]
    pub held: bool,
}

/// A deploy's (or retry's) answer: the sync loop converges right away.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployRequested {
    pub server_id: String,
    #[schemars(extend("const" = "requested"))]
    pub deploy: std::borrow::Cow<'static, str>,
}

/// A restart's answer: the restart runs in the background.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RestartRequested {
    pub server_id: String,
    #[schemars(extend("const" = "requested"))]
    pub restart: std::borrow::Cow<'static, str>,
}

/// A rollback's answer: the version the server is held at.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolledBack {
    pub server_id: String,
    pub rollback_to: String,
    #[schemars(extend("const" = "paused until resumed"))]
    pub auto_update: std::borrow::Cow<'static, str>,
}

/// A resume's answer.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resumed {
    pub server_id: String,
    /// False when no rollback held the server.
    pub resumed: bool,
}

/// A health override's answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Overridden {
    pub server_id: String,
    pub state: HealthState,
    pub until: Timestamp,
}

impl Control {
    /// An operator's stop: the server is held (syncs leave it alone) and its instances are
    /// stopped and removed. It stays stopped until [`Control::deploy`].
    pub async fn stop(&self, server: &str) -> Result<Stopped, ControlError> {
        self.require_known(server)?;
        let s = server.to_owned();
        self.store
            .call(move |st| st.set_held(&s, true, Timestamp::now()))
            .await?;
        let ctx = ApplyContext {
            run_id: None,
            trigger: RolloutTrigger::Operator,
        };
        let stopped = self
            .executor
            .stop_server(server, &ctx)
            .await
            .map_err(|e| ControlError::Internal(crate::error_text::chain(&e)))?;
        self.wake(Trigger::Operator);
        Ok(Stopped {
            server_id: server.to_owned(),
            stopped_instances: stopped,
            held: true,
        })
    }

    /// An operator's deploy: lifts a stop, forgets failed versions, lets a registry upgrade
    /// a sync window holds through (the rollout is recorded as the operator's), and
    /// converges now.
    pub async fn deploy(&self, server: &str) -> Result<DeployRequested, ControlError> {
        self.require_known(server)?;
        self.release_from_windows(server);
        let s = server.to_owned();
        self.store
            .call(move |st| {
                st.set_held(&s, false, Timestamp::now())?;
                st.clear_failed_versions(&s)
            })
            .await?;
        self.wake(Trigger::Operator);
        Ok(DeployRequested {
            server_id: server.to_owned(),
            deploy: "requested".into(),
        })
    }

    /// An operator's restart: a fresh instance replaces the current one, and the recovery
    /// count starts over. Runs in the background; returns once it is under way.
    ///
    /// A server an operator stopped stays stopped: only `deploy` lifts a stop.
    pub async fn restart(self: &Arc<Self>, server: &str) -> Result<RestartRequested, ControlError> {
        self.require_known(server)?;
        // The store, not the fleet view: a stop is recorded before its sync shows it.
        let held = self.store.call(|st| st.held_servers()).await?;
        if held.iter().any(|h| h == server) {
            return Err(ControlError::Conflict(format!(
                "`{server}` is stopped by an operator; `deploy` it to start it again"
            )));
        }
        let desired = self.desired(server).ok_or_else(|| {
            ControlError::Conflict(format!("`{server}` cannot run here; see its status"))
        })?;
        let control = self.clone();
        let id = server.to_owned();
        self.tasks.spawn(async move {
            // A stop that landed since the check above wins.
            match control.store.call(|st| st.held_servers()).await {
                Ok(h) if h.contains(&id) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(server = %id, error = %crate::error_text::chain(&e), "cannot read operator stops; not restarting");
                    return;
                }
            }
            if let Err(e) = control.executor.replace(&desired, false, RolloutTrigger::Operator).await {
                tracing::warn!(server = %id, error = %crate::error_text::chain(&e), "operator restart failed");
            }
            control.wake(Trigger::Operator);
        });
        Ok(RestartRequested {
            server_id: server.to_owned(),
            restart: "requested".into(),
        })
    }

    /// An operator's rollback: holds the server at `to` (a version, `v` prefix allowed) or
    /// at the version it ran before the current one, pausing auto-update for it, and
    /// converges now.
    ///
    /// A named version must have rolled out successfully on this server before, unless
    /// `force`: a version that never ran would otherwise "succeed" as a hold and then count
    /// as the version to go back to.
    pub async fn rollback(
        &self,
        server: &str,
        to: Option<&str>,
        force: bool,
    ) -> Result<RolledBack, ControlError> {
        let to = to
            .map(|v| {
                semver::Version::parse(v.trim_start_matches('v'))
                    .map_err(|e| ControlError::Invalid(format!("`{v}` is not a version: {e}")))
            })
            .transpose()?;
        self.require_known(server)?;
        let current = self
            .fleet()
            .servers
            .into_iter()
            .find(|s| s.id == server)
            .and_then(|s| s.running_version);
        let s = server.to_owned();
        let history = self
            .store
            .call(move |st| st.rollouts(Some(&s), 10_000))
            .await?;
        let mut ran = history
            .iter()
            .filter(|r| r.outcome == crate::store::RolloutOutcome::Succeeded)
            .filter_map(|r| r.to_version.clone());
        let version = match to {
            Some(v) => {
                let v = v.to_string();
                if !force && !ran.any(|r| r == v) {
                    return Err(ControlError::Conflict(format!(
                        "`{server}` never ran {v} successfully here; roll back to a version from its history (`mcp-orchestration history {server}`), or pass force to go anyway"
                    )));
                }
                v
            }
            // The newest successful rollout to something other than what runs now.
            None => ran.find(|v| Some(v) != current.as_ref()).ok_or_else(|| {
                ControlError::Conflict(format!(
                    "`{server}` has no earlier successful version to roll back to; name one with --to"
                ))
            })?,
        };
        let pin = crate::store::Pin {
            server_id: server.to_owned(),
            version: version.clone(),
            reason: format!(
                "rolled back by an operator from {}",
                current.as_deref().unwrap_or("nothing")
            ),
            pinned_at: Timestamp::now(),
        };
        self.store.call(move |st| st.set_pin(&pin)).await?;
        self.wake(Trigger::Operator);
        Ok(RolledBack {
            server_id: server.to_owned(),
            rollback_to: version,
            auto_update: "paused until resumed".into(),
        })
    }

    /// Lifts an operator's rollback pin: the update policy applies again.
    pub async fn resume(&self, server: &str) -> Result<Resumed, ControlError> {
        self.require_known(server)?;
        let s = server.to_owned();
        let lifted = self
            .store
            .call(move |st| st.clear_pin(&s, Timestamp::now()))
            .await?;
        self.wake(Trigger::Operator);
        Ok(Resumed {
            server_id: server.to_owned(),
            resumed: lifted,
        })
    }

    /// Shows `state` for a monitored server for `duration_seconds`, recorded as an
    /// operator's override (e.g. to keep routing to a server whose probe is known to be
    /// wrong).
    pub async fn override_health(
        &self,
        server: &str,
        state: &str,
        duration_seconds: f64,
        reason: Option<String>,
    ) -> Result<Overridden, ControlError> {
        let health = HealthState::parse(state)
            .filter(|s| FORCEABLE.contains(s))
            .ok_or_else(|| {
                ControlError::Invalid(format!(
                    "`{state}` cannot be forced; use healthy, degraded or unhealthy"
                ))
            })?;
        if !(duration_seconds > 0.0 && duration_seconds <= MAX_OVERRIDE_SECONDS) {
            return Err(ControlError::Invalid(
                "duration_seconds must be more than 0 and at most 86400 (a day)".into(),
            ));
        }
        let until = Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs_f64(duration_seconds))
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let reason = reason.unwrap_or_else(|| "forced by an operator".into());
        // The monitor only notes the override; its journal task stores the event.
        if !self.monitor.set_override(server, health, until, &reason) {
            return Err(ControlError::server_not_found(server));
        }
        Ok(Overridden {
            server_id: server.to_owned(),
            state: health,
            until,
        })
    }
}
