//! Carrying out a [`Plan`]: each server's action runs under that server's lock (never two
//! changes to one server at once), up to `concurrency` servers at a time. Every deploy,
//! update and removal is recorded as a rollout in the store with its outcome and reason.
//!
//! A new instance must pass a health gate before it replaces anything: with a dynamic
//! port the new one starts beside the old one, which is stopped only once the new one is
//! healthy (zero downtime); with a fixed host port the old one has to stop first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span, warn};

use super::desired::Desired;
use super::plan::{Action, Plan};
use crate::health::{ProbeOutcome, Prober};
use crate::redact::Redactor;
use crate::runtime::{Instance, Runtime};
use crate::store::{NewRollout, RolloutAction, RolloutEnd, RolloutOutcome, Store};

/// Why an action was taken, for rollout records: `commit`, `registry`, `operator`,
/// `recovery` or `reconcile` (drift found without a new commit).
#[derive(Clone, Debug)]
pub struct ApplyContext {
    pub run_id: Option<i64>,
    pub trigger: &'static str,
}

/// What happened to one server.
#[derive(Clone, Debug)]
pub struct ServerOutcome {
    pub server_id: String,
    pub action: &'static str,
    /// The instance now serving (for deploy, update, keep), or the failure's reason.
    pub result: Result<Option<Instance>, String>,
}

#[derive(Clone)]
pub struct Executor {
    runtime: Arc<dyn Runtime>,
    store: Store,
    prober: Prober,
    // One async lock per server id; the map itself is behind a short-lived std lock.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    permits: Arc<Semaphore>,
    /// How long a stopping instance may take before it is killed.
    pub stop_grace: Duration,
    /// How long an old instance keeps serving after the new one is published, so clients
    /// that read the old endpoint a moment ago are not cut off.
    pub drain: Duration,
    /// Told about each rollout's phases: the health monitor steps aside while a rollout
    /// owns a server, and a new instance is published before the old one is stopped.
    on_phase: Option<PhaseHook>,
    /// Blanks secret values out of log tails, probe details and notifications.
    redactor: Redactor,
}

/// How a new instance replaces the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The new instance starts beside the old one, which keeps serving until the new one
    /// passed its gate (zero downtime; needs a dynamic port).
    Beside,
    /// The old instance stops first, to free a fixed host port.
    StopThenStart,
}

impl Strategy {
    /// Beside whenever possible: only a fixed port with an instance holding it forces the
    /// old one to stop first.
    pub fn choose(fixed_port: bool, running_before: bool) -> Strategy {
        if fixed_port && running_before {
            Strategy::StopThenStart
        } else {
            Strategy::Beside
        }
    }

    /// As recorded in the rollout.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Beside => "beside",
            Strategy::StopThenStart => "stop_then_start",
        }
    }
}

/// A rollout's phases, as [`Executor::on_phase`] reports them.
#[derive(Clone, Copy, Debug)]
pub enum RolloutPhase<'a> {
    /// The rollout owns the server from now on.
    Started,
    /// This instance passed its gate and serves now; the old one is about to drain.
    Switched(&'a Instance, &'a Desired),
    /// The rollout ended (after `Switched`, or without it when it failed).
    Finished,
}

type PhaseHook = Arc<dyn Fn(&str, RolloutPhase<'_>) + Send + Sync>;

impl Executor {
    pub fn new(runtime: Arc<dyn Runtime>, store: Store, concurrency: usize) -> Executor {
        Executor {
            runtime,
            store,
            prober: Prober::new(),
            locks: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            stop_grace: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            on_phase: None,
            redactor: Redactor::default(),
        }
    }

    /// Redacts `redactor`'s values from what servers say (log tails, probe answers) and
    /// from notifications.
    pub fn with_redactor(mut self, redactor: Redactor) -> Executor {
        self.prober = self.prober.with_redactor(redactor.clone());
        self.redactor = redactor;
        self
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Sets the callback told about each rollout's phases.
    pub fn on_phase(
        mut self,
        f: impl Fn(&str, RolloutPhase<'_>) + Send + Sync + 'static,
    ) -> Executor {
        self.on_phase = Some(Arc::new(f));
        self
    }

    fn phase(&self, server: &str, phase: RolloutPhase<'_>) {
        if let Some(hook) = &self.on_phase {
            hook(server, phase);
        }
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// The lock that serializes every change to `server`.
    pub fn server_lock(&self, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(server.to_owned()).or_default().clone()
    }

    /// Executes every changing action of `plan`, concurrently across servers.
    ///
    /// Removals run first and finish before anything starts: a commit that moves a fixed
    /// `host_port` from a removed server to a new one needs the port free first.
    pub async fn apply(&self, plan: &Plan, ctx: &ApplyContext) -> Vec<ServerOutcome> {
        let (removals, others): (Vec<_>, Vec<_>) = plan
            .changes()
            .partition(|(_, action)| matches!(action, Action::Remove { .. }));
        let mut outcomes = self.apply_wave(removals, ctx).await;
        outcomes.extend(self.apply_wave(others, ctx).await);
        outcomes.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        outcomes
    }

    /// Carries out `actions` concurrently (bounded, one at a time per server).
    async fn apply_wave(
        &self,
        actions: Vec<(&String, &Action)>,
        ctx: &ApplyContext,
    ) -> Vec<ServerOutcome> {
        let mut tasks = tokio::task::JoinSet::new();
        for (server, action) in actions {
            let this = self.clone();
            let server = server.clone();
            let action = action.clone();
            let ctx = ctx.clone();
            let span = info_span!("apply", server = %server, action = action.name());
            tasks.spawn(
                async move {
                    let _permit = this.permits.acquire().await;
                    let lock = this.server_lock(&server);
                    let _guard = lock.lock().await;
                    let result = this.one(&server, &action, &ctx).await;
                    ServerOutcome {
                        server_id: server,
                        action: action.name(),
                        result,
                    }
                }
                .instrument(span),
            );
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    warn!(error = %crate::error_text::chain(&e), "an apply task panicked or was cancelled")
                }
            }
        }
        outcomes
    }

    async fn one(
        &self,
        server: &str,
        action: &Action,
        ctx: &ApplyContext,
    ) -> Result<Option<Instance>, String> {
        match action {
            Action::Deploy { desired } => self
                .rollout(desired, &[], RolloutAction::Deploy, ctx)
                .await
                .map(Some),
            Action::Update { desired, from } => self
                .rollout(desired, from, RolloutAction::Update, ctx)
                .await
                .map(Some),
            Action::Remove { instances } => self
                .remove_server(server, instances, ctx)
                .await
                .map(|_| None),
            Action::Keep {
                instance, cleanup, ..
            } => {
                for old in cleanup {
                    info!(instance = %old.id, "removing a leftover instance");
                    self.retire(old).await?;
                }
                Ok(Some((**instance).clone()))
            }
            Action::LeaveAlone { .. } => Ok(None),
        }
    }

    async fn record_start(
        &self,
        desired: Option<&Desired>,
        server: &str,
        from: &[Instance],
        action: RolloutAction,
        ctx: &ApplyContext,
        strategy: Option<&str>,
    ) -> Option<i64> {
        let from_version = from
            .iter()
            .find(|i| i.is_running())
            .or(from.first())
            .map(|i| i.version.to_string());
        let new = NewRollout {
            run_id: ctx.run_id,
            server_id: server.to_owned(),
            trigger: ctx.trigger.to_owned(),
            action,
            from_version,
            to_version: desired.map(|d| d.spec.version.to_string()),
            image: desired.and_then(|d| d.spec.docker.as_ref().map(|k| k.image.clone())),
            command: desired.and_then(|d| d.spec.process.as_ref().map(|p| p.command.clone())),
            revision: desired.map(|d| d.spec.revision.clone()),
            strategy: strategy.map(str::to_owned),
            started_at: Timestamp::now(),
        };
        match self.store.call(move |s| s.begin_rollout(&new)).await {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(error = %crate::error_text::chain(&e), "cannot record the rollout start");
                None
            }
        }
    }

    async fn record_end(
        &self,
        id: Option<i64>,
        outcome: RolloutOutcome,
        reason: Option<String>,
        instance: Option<&Instance>,
        rolled_back_to: Option<String>,
    ) {
        let Some(id) = id else { return };
        let end = RolloutEnd {
            outcome,
            reason,
            instance_id: instance.map(|i| i.id.clone()),
            endpoint: instance.and_then(Instance::base_url),
            finished_at: Timestamp::now(),
            rolled_back_to,
        };
        if let Err(e) = self.store.call(move |s| s.finish_rollout(id, &end)).await {
            warn!(error = %crate::error_text::chain(&e), "cannot record the rollout end");
        }
    }

    async fn step(&self, id: Option<i64>, step: &str, detail: Option<String>) {
        let Some(id) = id else { return };
        let step = step.to_owned();
        let recorded = self
            .store
            .call(move |s| s.add_rollout_step(id, &step, detail.as_deref(), Timestamp::now()))
            .await;
        if let Err(e) = recorded {
            warn!(error = %crate::error_text::chain(&e), "cannot record a rollout step");
        }
    }

    /// Starts the desired instance, gates it on health, then retires `from`. When the gate
    /// fails, the version is remembered as failed for this server and, with
    /// `rollback_on_failure`, the previous version is restored (or simply kept serving, when
    /// it ran beside the new one) and verified healthy again. A restart (recovery's or an
    /// operator's) is not a new version: its failure is neither remembered nor rolled back.
    async fn rollout(
        &self,
        desired: &Desired,
        from: &[Instance],
        action: RolloutAction,
        ctx: &ApplyContext,
    ) -> Result<Instance, String> {
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
    ) -> Result<Instance, String> {
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
                "{from_text} → {} ({}, trigger {})",
                desired.spec.version,
                strategy.as_str(),
                ctx.trigger
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
        if strategy == Strategy::StopThenStart {
            for old in from {
                if let Err(e) = self.retire(old).await {
                    let reason = format!("cannot stop the old instance to free port: {e}");
                    self.record_end(id, RolloutOutcome::Failed, Some(reason.clone()), None, None)
                        .await;
                    return Err(reason);
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
            Err(e) => Err(format!("the new instance did not start: {e}")),
        };
        let (why, instance) = match started {
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
                    self.phase(
                        desired.server_id(),
                        RolloutPhase::Switched(&instance, desired),
                    );
                    if strategy == Strategy::Beside {
                        if from.iter().any(Instance::is_running) && !self.drain.is_zero() {
                            self.step(
                                id,
                                "draining",
                                Some(format!("the old instance serves {:?} more", self.drain)),
                            )
                            .await;
                            tokio::time::sleep(self.drain).await;
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
                Err(why) => (why, Some(instance)),
            },
            Err(why) => (why, None),
        };

        // The gate failed: gather what explains it, then clean up the new instance.
        let mut reason = format!(
            "{} {} failed its health gate: {why}",
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
            notify(
                &self.redactor,
                url.clone(),
                serde_json::json!({
                    "event": event,
                    "server_id": desired.server_id(),
                    "from_version": previous.as_ref().map(|p| p.version.to_string()),
                    "to_version": desired.spec.version.to_string(),
                    "rolled_back_to": rolled_back_to,
                    "reason": reason,
                    "rollout_id": id,
                    "trigger": ctx.trigger,
                    "timestamp": Timestamp::now().to_string(),
                }),
            );
        }
        Err(reason)
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
            let port = old.host_port.ok_or("the old instance has no port")?;
            let h = &desired.health;
            let r = self
                .prober
                .probe(
                    h.probe,
                    port,
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

    /// Waits until the new instance is healthy: `success_threshold` healthy probes in a row
    /// within the policy's progress deadline. Before the first answer a refused connection
    /// only means "still starting"; an answer saying unhealthy `failure_threshold` times in a
    /// row, an exited instance or the deadline fails the gate. Probes are recorded on the
    /// rollout `id`.
    async fn health_gate(
        &self,
        desired: &Desired,
        instance: &Instance,
        id: Option<i64>,
    ) -> Result<(), String> {
        let Some(port) = instance.host_port else {
            return Err("the runtime reported no host port".to_owned());
        };
        let h = &desired.health;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs_f64(desired.policy.progress_deadline_seconds);
        // During the gate probes run at least every second, so a 30 s interval does not make
        // every rollout take a minute.
        let spacing = Duration::from_secs_f64(h.interval_seconds.min(1.0));
        let timeout = Duration::from_secs_f64(h.timeout_seconds);
        let (mut successes, mut failures, mut answered) = (0u32, 0u32, false);
        let mut checks = 0u32;
        let mut last_recorded: Option<String> = None;
        loop {
            let r = self.prober.probe(h.probe, port, &h.endpoint, timeout).await;
            let last = format!("{:?}: {}", r.outcome, r.detail);
            // Refusals while starting are recorded once, not every 100 ms.
            if let Some(id) = id
                && (answered
                    || r.outcome != ProbeOutcome::Unreachable
                    || last_recorded.as_deref() != Some(last.as_str()))
            {
                let probe = crate::store::RolloutProbe {
                    at: Timestamp::now(),
                    outcome: format!("{:?}", r.outcome).to_lowercase(),
                    detail: r.detail.clone(),
                    latency_ms: r.latency_ms,
                };
                if let Err(e) = self
                    .store
                    .call(move |s| s.add_rollout_probe(id, &probe))
                    .await
                {
                    warn!(error = %crate::error_text::chain(&e), "cannot record a probe");
                }
                last_recorded = Some(last.clone());
            }
            match r.outcome {
                ProbeOutcome::Healthy => {
                    answered = true;
                    successes += 1;
                    failures = 0;
                    if successes >= h.success_threshold {
                        return Ok(());
                    }
                }
                ProbeOutcome::Degraded => {
                    answered = true;
                    successes = 0;
                    failures = 0;
                }
                ProbeOutcome::Unhealthy => {
                    answered = true;
                    successes = 0;
                    failures += 1;
                }
                ProbeOutcome::Unreachable => {
                    successes = 0;
                    if answered {
                        failures += 1;
                    }
                }
            }
            if failures >= h.failure_threshold {
                return Err(format!("{failures} failed probes in a row; last: {last}"));
            }
            // Liveness is checked less often than probes: listing can be costly (Docker).
            checks += 1;
            if !answered && checks.is_multiple_of(5) && !self.still_running(instance).await {
                return Err(format!(
                    "the instance exited before becoming healthy; last probe: {last}"
                ));
            }
            let wait = if answered {
                spacing
            } else {
                spacing.min(Duration::from_millis(100))
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(format!(
                    "not healthy within the progress deadline of {}s; last probe: {last}",
                    desired.policy.progress_deadline_seconds
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn still_running(&self, instance: &Instance) -> bool {
        match self.runtime.list().await {
            Ok(all) => all.iter().any(|i| i.id == instance.id && i.is_running()),
            // When the runtime cannot say, keep waiting; the deadline still bounds it.
            Err(_) => true,
        }
    }

    /// Stops and removes one instance.
    pub async fn retire(&self, instance: &Instance) -> Result<(), String> {
        self.runtime
            .stop(&instance.id, self.stop_grace)
            .await
            .or_else(|e| {
                if matches!(e, crate::runtime::RuntimeError::NotFound(_)) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| e.to_string())?;
        self.runtime
            .remove(&instance.id)
            .await
            .map_err(|e| e.to_string())
    }

    /// A recovery action: a new instance of `desired` replaces the server's instances once
    /// it passes its health gate (the broken one keeps whatever it still serves until then).
    /// `fresh` (recreate) also removes stopped leftovers first. Returns `Err` when the
    /// server is busy with a rollout (recovery never fights one) or the new instance does
    /// not become healthy.
    /// `trigger` is recorded on the rollout: `recovery`, or `operator` for an operator's
    /// restart.
    pub async fn replace(
        &self,
        desired: &Desired,
        fresh: bool,
        trigger: &'static str,
    ) -> Result<Instance, String> {
        let lock = self.server_lock(desired.server_id());
        let Ok(_guard) = lock.try_lock() else {
            return Err("a rollout is in progress; recovery waits".to_owned());
        };
        let from: Vec<Instance> = self
            .runtime
            .list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|i| i.server_id == desired.server_id())
            .collect();
        let mut from = from;
        if fresh {
            for old in from.iter().filter(|i| !i.is_running()) {
                self.retire(old).await?;
            }
            from.retain(Instance::is_running);
        }
        let ctx = ApplyContext {
            run_id: None,
            trigger,
        };
        self.rollout(desired, &from, RolloutAction::Restart, &ctx)
            .await
    }

    /// Stops and removes every instance of `server` (under its lock), recording it as a
    /// removal rollout with the context's trigger: an operator's stop.
    pub async fn stop_server(&self, server: &str, ctx: &ApplyContext) -> Result<usize, String> {
        let lock = self.server_lock(server);
        let _guard = lock.lock().await;
        let instances: Vec<Instance> = self
            .runtime
            .list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|i| i.server_id == server)
            .collect();
        if !instances.is_empty() {
            self.remove_server(server, &instances, ctx).await?;
        }
        Ok(instances.len())
    }

    async fn remove_server(
        &self,
        server: &str,
        instances: &[Instance],
        ctx: &ApplyContext,
    ) -> Result<(), String> {
        let id = self
            .record_start(None, server, instances, RolloutAction::Remove, ctx, None)
            .await;
        info!(
            instances = instances.len(),
            "removing a server that left the manifest"
        );
        for i in instances {
            if let Err(e) = self.retire(i).await {
                self.record_end(id, RolloutOutcome::Failed, Some(e.clone()), None, None)
                    .await;
                return Err(e);
            }
        }
        self.record_end(id, RolloutOutcome::Succeeded, None, None, None)
            .await;
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// POSTs a JSON event to a notification channel in the background: a channel that is down
/// is logged and never delays or fails a rollout.
/// Whatever the payload carries is redacted first: reasons hold log lines.
pub(crate) fn notify(redactor: &Redactor, url: String, mut payload: serde_json::Value) {
    redactor.redact_json(&mut payload);
    tokio::spawn(async move {
        // A redirect would re-send the reasons to a host the trust policy did not allow.
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %crate::error_text::chain(&e), "cannot build the notification client");
                return;
            }
        };
        match client.post(&url).json(&payload).send().await {
            Ok(r) if r.status().is_success() => info!(url = %url, "notification sent"),
            Ok(r) => {
                warn!(url = %url, status = r.status().as_u16(), "the notification channel refused the event")
            }
            Err(e) => {
                warn!(url = %url, error = %crate::error_text::chain(&e), "cannot reach the notification channel")
            }
        }
    });
}

#[cfg(test)]
mod strategy_tests {
    use super::Strategy;

    #[test]
    fn only_a_fixed_port_that_is_taken_stops_the_old_instance_first() {
        assert_eq!(Strategy::choose(false, false), Strategy::Beside);
        assert_eq!(Strategy::choose(false, true), Strategy::Beside);
        assert_eq!(Strategy::choose(true, false), Strategy::Beside);
        assert_eq!(Strategy::choose(true, true), Strategy::StopThenStart);
        assert_eq!(Strategy::StopThenStart.as_str(), "stop_then_start");
    }
}
