//! One rollout: start the new instance (beside the old one, or after it when a fixed port
//! forces it), gate it on health, publish it, drain and retire the old one; and when the
//! gate fails, explain why, remember the version and roll back.

use std::time::Duration;

use jiff::Timestamp;
use tracing::{info, warn};

use super::{ApplyContext, ExecuteError, Executor, RolloutPhase, Strategy, first_line};
use crate::reconcile::Desired;
use crate::runtime::Instance;
use crate::store::{RolloutAction, RolloutOutcome};

impl Executor {
    /// Starts the desired instance, gates it on health, then retires `from`. When the gate
    /// fails, the version is remembered as failed for this server and, with
    /// `rollback_on_failure`, the previous version is restored (or simply kept serving, when
    /// it ran beside the new one) and verified healthy again. A restart (recovery's or an
    /// operator's) is not a new version: its failure is neither remembered nor rolled back.
    pub(super) async fn rollout(
        &self,
        desired: &Desired,
        from: &[Instance],
        action: RolloutAction,
        ctx: &ApplyContext,
    ) -> Result<Instance, ExecuteError> {
        self.phase(desired.server_id(), RolloutPhase::Started);
        let result = self.rollout_inner(desired, from, action, ctx).await;
        self.phase(desired.server_id(), RolloutPhase::Finished);
        result
    }

    async fn rollout_inner(
        &self,
        desired: &Desired,
        from: &[Instance],
        action: RolloutAction,
        ctx: &ApplyContext,
    ) -> Result<Instance, ExecuteError> {
        let fixed_port = desired.spec.host_port.is_some();
        let previous = from
            .iter()
            .filter(|i| i.is_running())
            .max_by_key(|i| i.started_at)
            .cloned();
        let strategy = Strategy::choose(fixed_port, previous.is_some());
        let id = self
            .record_start(
                Some(desired),
                desired.server_id(),
                from,
                action,
                ctx,
                Some(strategy.as_str()),
            )
            .await;
        let from_text = previous
            .as_ref()
            .map(|p| p.version.to_string())
            .unwrap_or_else(|| "nothing".into());
        info!(version = %desired.spec.version, strategy = strategy.as_str(), "rolling out");
        self.step(
            id,
            "started",
            Some(format!(
                "{from_text} → {} ({}, trigger {}): {}",
                desired.spec.version,
                strategy.as_str(),
                ctx.trigger.as_str(),
                strategy.why(self.runtime.kind())
            )),
        )
        .await;

        // Leftovers of earlier attempts (an agent killed mid-rollout leaves a created,
        // exited or never-gated instance behind) go before another instance is started;
        // left for later, every interrupted attempt would add one more.
        // Only instances that do not run: a running one may be the one serving (the newest
        // running is not necessarily the published one after an interrupted rollout).
        let leftovers: Vec<&Instance> = from.iter().filter(|i| !i.is_running()).collect();
        // A recovery restart keeps them: recreate is the attempt that clears them.
        if strategy == Strategy::Beside && action != RolloutAction::Restart && !leftovers.is_empty()
        {
            for leftover in &leftovers {
                if let Err(e) = self.retire(leftover).await {
                    warn!(instance = %leftover.id, error = %e, "cannot remove a leftover instance");
                }
            }
            self.step(
                id,
                "removed_leftovers",
                Some(format!(
                    "{} instance(s) left by an earlier, unfinished attempt",
                    leftovers.len()
                )),
            )
            .await;
        }
        let tools_before = self
            .tools_before(desired, previous.as_ref(), action, id)
            .await;
        if strategy == Strategy::StopThenStart {
            for old in from {
                if let Err(e) = self.retire(old).await {
                    let e = ExecuteError::Runtime {
                        doing: "cannot stop the old instance to free port",
                        source: e,
                    };
                    let reason = crate::error_text::chain(&e);
                    self.record_end(id, RolloutOutcome::Failed, Some(reason), None, None)
                        .await;
                    return Err(e);
                }
            }
            self.step(
                id,
                "stopped_old",
                Some("fixed host port: the old instance stopped first".into()),
            )
            .await;
        }
        let started = match self.runtime.start(&desired.spec).await {
            Ok(i) => {
                self.step(
                    id,
                    "instance_started",
                    Some(format!(
                        "{} on port {}",
                        i.id,
                        i.host_port.map_or("?".into(), |p| p.to_string())
                    )),
                )
                .await;
                if let (Some(rid), Some(digest)) = (id, i.image_digest.clone())
                    && let Err(e) = self
                        .store
                        .call(move |s| s.set_rollout_digest(rid, &digest))
                        .await
                {
                    warn!(error = %crate::error_text::chain(&e), "cannot record the image digest");
                }
                Ok(i)
            }
            // The runtime itself is away (a Docker daemon restarting): nothing is wrong
            // with the version, so it is neither remembered as failed nor rolled back, and
            // the next sync tries again.
            Err(e) if e.is_retryable() => {
                let e = ExecuteError::Runtime {
                    doing: "the new instance did not start",
                    source: e,
                };
                let reason = crate::error_text::chain(&e);
                warn!(reason = %reason, "rollout failed; the runtime is unavailable");
                self.record_end(id, RolloutOutcome::Failed, Some(reason), None, None)
                    .await;
                return Err(e);
            }
            Err(e) => Err(format!(
                "the new instance did not start: {}",
                crate::error_text::chain(&e)
            )),
        };
        let (why, instance, gate) = match started {
            Ok(instance) => match self.health_gate(desired, &instance, id).await {
                Ok(()) => {
                    self.step(
                        id,
                        "healthy",
                        Some(format!(
                            "{} consecutive healthy probes",
                            desired.health.success_threshold
                        )),
                    )
                    .await;
                    if let Err(why) = self.tool_guard(desired, tools_before, &instance, id).await {
                        (why, Some(instance), "tool-set guard")
                    } else {
                        self.phase(
                            desired.server_id(),
                            RolloutPhase::Switched(&instance, desired),
                        );
                        if strategy == Strategy::Beside {
                            if from.iter().any(Instance::is_running) && !self.drain.is_zero() {
                                self.drain_old(id, desired.server_id(), &instance, from)
                                    .await;
                            }
                            for old in from {
                                if let Err(e) = self.retire(old).await {
                                    warn!(instance = %old.id, error = %e, "cannot remove the old instance; the next sync retries");
                                }
                            }
                            if !from.is_empty() {
                                self.step(
                                    id,
                                    "switched",
                                    Some(format!(
                                        "now serving {}; the old instance is stopped",
                                        desired.spec.version
                                    )),
                                )
                                .await;
                            }
                        }
                        self.record_end(id, RolloutOutcome::Succeeded, None, Some(&instance), None)
                            .await;
                        info!(version = %desired.spec.version, endpoint = instance.base_url().unwrap_or_default(), "rolled out");
                        return Ok(instance);
                    }
                }
                Err(why) => (why, Some(instance), "health gate"),
            },
            Err(why) => (why, None, "health gate"),
        };

        // The gate failed: gather what explains it, then clean up the new instance.
        let mut reason = format!(
            "{} {} failed its {gate}: {why}",
            desired.server_id(),
            desired.spec.version
        );
        if let Some(instance) = &instance {
            let state = self
                .runtime
                .list()
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|i| i.id == instance.id))
                .map(|i| i.state);
            if let Some(crate::runtime::InstanceState::Exited { code }) = state {
                reason.push_str(&format!(
                    "; the instance exited with code {}",
                    code.map_or("unknown".into(), |c| c.to_string())
                ));
            }
            let tail = self
                .runtime
                .logs_tail(&instance.id, 20)
                .await
                .unwrap_or_default();
            let tail = self.redactor.redact(&tail);
            if !tail.trim().is_empty() {
                reason.push_str(&format!("\nlast log lines:\n{}", tail.trim_end()));
            }
            let _ = self.retire(instance).await;
        }
        self.step(id, "gate_failed", Some(first_line(&reason)))
            .await;
        warn!(reason = %first_line(&reason), "rollout failed");
        // A restart (recovery's or an operator's) runs the version already in force: its
        // failure says the instance or its surroundings are broken, not the version. So it
        // is not remembered as a failed version (the server would be frozen long after a
        // passing outage) nor "rolled back" onto the broken instance it meant to replace;
        // recovery's next attempt, or the operator, decides what comes next.
        let new_version = action != RolloutAction::Restart;
        if new_version {
            let failed = crate::store::FailedVersion {
                server_id: desired.server_id().to_owned(),
                version: desired.spec.version.to_string(),
                spec_hash: desired.spec.spec_hash.clone(),
                reason: first_line(&reason),
                rollout_id: id,
                failed_at: Timestamp::now(),
            };
            if let Err(e) = self
                .store
                .call(move |s| s.record_failed_version(&failed))
                .await
            {
                warn!(error = %crate::error_text::chain(&e), "cannot remember the failed version");
            }
        }

        let rollback = desired.policy.rollback_on_failure && new_version;
        let restored = match (&previous, rollback) {
            (Some(old), true) => Some(self.roll_back(desired, old, strategy, id).await),
            _ => None,
        };
        let (outcome, rolled_back_to, event) = match &restored {
            Some(Ok(v)) => (
                RolloutOutcome::RolledBack,
                Some(v.clone()),
                "rollout_rolled_back",
            ),
            Some(Err(e)) => {
                reason.push_str(&format!("\nthe rollback failed too: {e}"));
                (RolloutOutcome::Failed, None, "rollout_failed")
            }
            None => (RolloutOutcome::Failed, None, "rollout_failed"),
        };
        self.record_end(
            id,
            outcome,
            Some(reason.clone()),
            None,
            rolled_back_to.clone(),
        )
        .await;
        if let Some(url) = &desired.policy.notification_channel {
            self.notify(
                url.clone(),
                serde_json::json!({
                    "event": event,
                    "server_id": desired.server_id(),
                    "from_version": previous.as_ref().map(|p| p.version.to_string()),
                    "to_version": desired.spec.version.to_string(),
                    "rolled_back_to": rolled_back_to,
                    "reason": reason,
                    "rollout_id": id,
                    "trigger": ctx.trigger.as_str(),
                    "timestamp": Timestamp::now().to_string(),
                }),
            );
        }
        Err(ExecuteError::Failed(reason))
    }

    /// Lets the old instances serve until they may stop: until the drain hook (the
    /// gateway) says so, at most `drain`; without a hook, `drain` in full.
    async fn drain_old(&self, id: Option<i64>, server: &str, new: &Instance, old: &[Instance]) {
        let Some(hook) = &self.drain_hook else {
            self.step(
                id,
                "draining",
                Some(format!("the old instance serves {:?} more", self.drain)),
            )
            .await;
            tokio::time::sleep(self.drain).await;
            return;
        };
        self.step(
            id,
            "draining",
            Some(format!(
                "until the gateway routes to the new instance and the old one's calls in flight finish (at most {:?})",
                self.drain
            )),
        )
        .await;
        let started = std::time::Instant::now();
        let outcome = hook(super::DrainRequest {
            server: server.to_owned(),
            new_instance: new.id.clone(),
            old_instances: old.iter().map(|i| i.id.clone()).collect(),
            max: self.drain,
        })
        .await;
        self.step(
            id,
            "drained",
            Some(format!("{outcome} ({} ms)", started.elapsed().as_millis())),
        )
        .await;
    }

    /// Restores `old` after a failed rollout and checks it is healthy again; returns the
    /// version restored.
    async fn roll_back(
        &self,
        desired: &Desired,
        old: &Instance,
        strategy: Strategy,
        id: Option<i64>,
    ) -> Result<String, String> {
        let version = old.version.to_string();
        if strategy == Strategy::Beside {
            // The old instance never stopped serving; make sure it still does.
            let addr = old.addr().ok_or("the old instance has no port")?;
            let h = &desired.health;
            let r = self
                .prober
                .probe(
                    h.probe,
                    addr,
                    &h.endpoint,
                    Duration::from_secs_f64(h.timeout_seconds),
                )
                .await;
            if r.outcome.is_failure() {
                return Err(format!(
                    "the old instance {} is not healthy either: {}",
                    old.id, r.detail
                ));
            }
            self.step(
                id,
                "rolled_back",
                Some(format!("{version} kept serving throughout")),
            )
            .await;
            return Ok(version);
        }
        let previous = desired.at_version(&old.version);
        self.step(id, "restarting_previous", Some(version.clone()))
            .await;
        let instance = self
            .runtime
            .start(&previous.spec)
            .await
            .map_err(|e| format!("cannot start {version} again: {e}"))?;
        if let Err(e) = self.health_gate(&previous, &instance, None).await {
            let _ = self.retire(&instance).await;
            return Err(format!("{version} did not become healthy again: {e}"));
        }
        self.step(
            id,
            "rolled_back",
            Some(format!("{version} restarted and healthy")),
        )
        .await;
        Ok(version)
    }
}
