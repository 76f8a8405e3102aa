//! Carrying out a [`Plan`]: each server's action runs under that server's lock (never two
//! changes to one server at once), up to `concurrency` servers at a time. Every deploy,
//! update and removal is recorded as a rollout in the store with its outcome and reason.
//!
//! A new instance must pass a health gate before it replaces anything: with a dynamic
//! port the new one starts beside the old one, which is stopped only once the new one is
//! healthy (zero downtime); with a fixed host port the old one has to stop first.
//!
//! `rollout` owns one rollout, `gate` the health gate, `record` the rollout's record.

mod error;
mod gate;
mod guard;
mod order;
mod record;
mod rollout;

pub use error::ExecuteError;
pub use gate::{GateCount, GateStep};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span, warn};

use super::desired::Desired;
use super::plan::{Action, Plan};
use super::toolset::ToolShape;
use crate::health::Prober;
use crate::redact::Redactor;
use crate::runtime::{Instance, Runtime, RuntimeError};
use crate::store::{RolloutAction, RolloutOutcome, Store};

/// Why a rollout happened, as its record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutTrigger {
    /// A new commit.
    Commit,
    /// New tags in the registry.
    Registry,
    /// An operator's action (deploy, retry, stop, restart, rollback).
    Operator,
    /// Auto-recovery of an unhealthy server.
    Recovery,
    /// Drift found without a new commit (an instance gone, a runtime that moved it).
    Reconcile,
}

impl RolloutTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutTrigger::Commit => "commit",
            RolloutTrigger::Registry => "registry",
            RolloutTrigger::Operator => "operator",
            RolloutTrigger::Recovery => "recovery",
            RolloutTrigger::Reconcile => "reconcile",
        }
    }
}

/// The run a change belongs to (if any) and why it happens.
#[derive(Clone, Debug)]
pub struct ApplyContext {
    pub run_id: Option<i64>,
    pub trigger: RolloutTrigger,
}

/// What happened to one server.
#[derive(Clone, Debug)]
pub struct ServerOutcome {
    pub server_id: String,
    pub action: &'static str,
    /// The instance now serving (for deploy, update, keep), or the failure's reason.
    pub result: Result<Option<Instance>, ExecuteError>,
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
    /// that read the old endpoint a moment ago are not cut off. With a drain hook (the
    /// gateway's), the most it waits.
    pub drain: Duration,
    /// Says when the old instances may stop, instead of waiting `drain` in full.
    drain_hook: Option<DrainHook>,
    /// Lists a server's tools for the tool-set guard; without it there is no guard.
    tool_lister: Option<ToolLister>,
    /// Told about each rollout's phases: the health monitor steps aside while a rollout
    /// owns a server, and a new instance is published before the old one is stopped.
    on_phase: Option<PhaseHook>,
    /// Blanks secret values out of log tails, probe details and notifications.
    redactor: Redactor,
    /// Delivers notification channels' events (retries, dead letters).
    outbox: crate::subscriptions::Outbox,
    /// Says whether a dependency is healthy; without it a dependency's passed gate is enough.
    monitor: Option<crate::health::Monitor>,
    /// `depends_on` as the last desired state said, and who waits on whom.
    dependencies: order::Dependencies,
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

    /// Why, in words for the rollout's timeline, on `runtime`.
    pub fn why(self, runtime: crate::runtime::RuntimeKind) -> &'static str {
        match (self, runtime) {
            (Strategy::StopThenStart, _) => {
                "the fixed host_port is held by the running instance, so it stops first"
            }
            (Strategy::Beside, crate::runtime::RuntimeKind::Swarm) => {
                "a Swarm service for the new version beside the old one's, not Swarm's rolling update: our health gate on every task and the tool-set guard decide before traffic moves"
            }
            (Strategy::Beside, _) => {
                "the new instance starts beside the old one, which serves until the new one passed its gate"
            }
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

/// What a drain hook is asked: may `old_instances` of `server` stop, now that
/// `new_instance` serves? It answers within `max`, in words for the rollout's timeline.
#[derive(Clone, Debug)]
pub struct DrainRequest {
    pub server: String,
    pub new_instance: String,
    pub old_instances: Vec<String>,
    pub max: Duration,
}

/// Lists the tools of the MCP server at a URL (`http://127.0.0.1:PORT/mcp`).
pub type ToolLister = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<Vec<ToolShape>, String>>
        + Send
        + Sync,
>;

pub type DrainHook =
    Arc<dyn Fn(DrainRequest) -> futures::future::BoxFuture<'static, String> + Send + Sync>;

impl Executor {
    pub fn new(runtime: Arc<dyn Runtime>, store: Store, concurrency: usize) -> Executor {
        Executor {
            runtime,
            store: store.clone(),
            prober: Prober::new(),
            locks: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            stop_grace: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            drain_hook: None,
            tool_lister: None,
            on_phase: None,
            redactor: Redactor::default(),
            outbox: crate::subscriptions::Outbox::new(
                store,
                crate::subscriptions::Retry::default(),
                tokio_util::sync::CancellationToken::new(),
            ),
            monitor: None,
            dependencies: order::Dependencies::default(),
        }
    }

    /// Asks `monitor` whether a server's dependencies are healthy before it starts.
    pub fn with_monitor(mut self, monitor: crate::health::Monitor) -> Executor {
        self.monitor = Some(monitor);
        self
    }

    /// Takes what each of `servers` (id, `depends_on`) depends on, to order their removal
    /// should a later apply remove them: the sync loop hands over the manifest in force
    /// before a new commit, which after a restart no apply has seen yet.
    pub fn remember_dependencies<'a>(
        &self,
        servers: impl Iterator<Item = (&'a str, &'a [String])>,
    ) {
        self.dependencies.remember(servers);
    }

    /// Servers whose change waits for (or was refused for) dependencies not healthy yet,
    /// with those dependencies.
    pub fn blocked(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.dependencies.blocked()
    }

    /// Sends notification channels' events through `outbox` (the agent's: its retries,
    /// and ending with its shutdown).
    pub fn with_outbox(mut self, outbox: crate::subscriptions::Outbox) -> Executor {
        self.outbox = outbox;
        self
    }

    /// Lets `hook` decide when old instances stop after a switch (at most `drain` later):
    /// the gateway answers once it routes to the new instance and the old one's calls in
    /// flight have finished.
    pub fn with_drain(mut self, hook: DrainHook) -> Executor {
        self.drain_hook = Some(hook);
        self
    }

    /// Holds back a version whose tools break clients (see `guard`), listing tools with
    /// `lister`.
    pub fn with_tool_guard(mut self, lister: ToolLister) -> Executor {
        self.tool_lister = Some(lister);
        self
    }

    /// Redacts `redactor`'s values from what servers say (log tails, probe answers) and
    /// from notifications.
    pub fn with_redactor(mut self, redactor: Redactor) -> Executor {
        self.prober = self.prober.with_redactor(redactor.clone());
        self.redactor = redactor;
        self
    }

    /// Probes health gates with `prober` (the monitor's, so both share one client).
    pub fn with_prober(mut self, prober: Prober) -> Executor {
        self.prober = prober.with_redactor(self.redactor.clone());
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
    ///
    /// `depends_on` orders them: a server's deploy or update waits until each server it
    /// depends on is healthy (one changed in this apply finishes its rollout first), and
    /// a removal waits for the removals of the servers that depend on it.
    pub async fn apply(&self, plan: &Plan, ctx: &ApplyContext) -> Vec<ServerOutcome> {
        self.dependencies.remember(
            plan.actions
                .values()
                .filter_map(Action::desired)
                .map(|d| (d.server_id(), d.depends_on.as_slice())),
        );
        // A server with nothing to change waits for nothing.
        for (server, _) in plan.actions.iter().filter(|(_, a)| !a.is_change()) {
            self.dependencies.set_blocked(server, Vec::new());
        }
        let (removals, others): (Vec<_>, Vec<_>) = plan
            .changes()
            .partition(|(_, action)| matches!(action, Action::Remove { .. }));
        let removed: Vec<&str> = removals.iter().map(|(s, _)| s.as_str()).collect();
        let mut outcomes = self
            .apply_wave(removals.clone(), ctx, |server, _| {
                (
                    self.dependencies.dependents_among(server, &removed),
                    Vec::new(),
                )
            })
            .await;
        for server in &removed {
            self.dependencies.forget(server);
        }
        outcomes.extend(
            self.apply_wave(others, ctx, |server, wave| {
                let deps = self.dependencies.of(server);
                let first = deps.iter().filter(|d| wave.has(d)).cloned().collect();
                (first, deps)
            })
            .await,
        );
        outcomes.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        outcomes
    }

    /// Carries out `actions` concurrently (bounded, one at a time per server). `waits`
    /// names, for a server, the changes of this wave it waits for and the servers that
    /// must then be healthy.
    async fn apply_wave(
        &self,
        actions: Vec<(&String, &Action)>,
        ctx: &ApplyContext,
        waits: impl Fn(&str, &order::Wave) -> (Vec<String>, Vec<String>),
    ) -> Vec<ServerOutcome> {
        let mut wave = order::Wave::default();
        let done: Vec<_> = actions.iter().map(|(s, _)| wave.add(s)).collect();
        let prerequisites: Vec<_> = actions.iter().map(|(s, _)| waits(s, &wave)).collect();
        let wave = Arc::new(wave);
        let mut tasks = tokio::task::JoinSet::new();
        for (((server, action), done), (first, healthy)) in
            actions.into_iter().zip(done).zip(prerequisites)
        {
            let this = self.clone();
            let server = server.clone();
            let action = action.clone();
            let ctx = ctx.clone();
            let wave = wave.clone();
            let span = info_span!("apply", server = %server, action = action.name());
            tasks.spawn(
                async move {
                    let result = match this.wait_for(&server, &first, &healthy, &wave).await {
                        Ok(()) => {
                            let _permit = this.permits.acquire().await;
                            let lock = this.server_lock(&server);
                            let _guard = lock.lock().await;
                            this.one(&server, &action, &ctx).await
                        }
                        Err(e) => Err(e),
                    };
                    // A removal that failed still lets what it waited for go: the
                    // manifest wants both gone.
                    let ok = result.is_ok() || matches!(action, Action::Remove { .. });
                    let _ = done.send(Some(ok));
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

    /// Waits for `first` (changes of this wave) to finish, then for `healthy` to be
    /// healthy; says what `server` is blocked by meanwhile, and after, if it stays blocked.
    async fn wait_for(
        &self,
        server: &str,
        first: &[String],
        healthy: &[String],
        wave: &order::Wave,
    ) -> Result<(), ExecuteError> {
        if first.is_empty() && healthy.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<String> = first.iter().chain(healthy).cloned().collect();
        pending.dedup();
        self.dependencies.set_blocked(server, pending.clone());
        for dep in first {
            if !wave.finished(dep).await {
                let why = format!("the change of `{dep}` in this apply did not succeed");
                info!(dependency = %dep, "blocked: {why}");
                return Err(ExecuteError::Blocked {
                    on: vec![dep.clone()],
                    why,
                });
            }
        }
        let mut unhealthy = Vec::new();
        for dep in healthy {
            // A dependency changed in this apply just passed its gate: give the monitor
            // time to confirm it. One that was already running is judged as it is now.
            let wait = if wave.has(dep) {
                order::SAME_APPLY_WAIT
            } else {
                Duration::ZERO
            };
            if !order::healthy(self.monitor.as_ref(), dep, wait).await {
                unhealthy.push(dep.clone());
            }
        }
        if !unhealthy.is_empty() {
            self.dependencies.set_blocked(server, unhealthy.clone());
            info!(dependencies = ?unhealthy, "blocked: not healthy");
            return Err(ExecuteError::Blocked {
                why: "not healthy yet; the change waits and is tried again".to_owned(),
                on: unhealthy,
            });
        }
        self.dependencies.set_blocked(server, Vec::new());
        info!(dependencies = ?healthy, "dependencies healthy");
        Ok(())
    }

    async fn one(
        &self,
        server: &str,
        action: &Action,
        ctx: &ApplyContext,
    ) -> Result<Option<Instance>, ExecuteError> {
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
                    self.retire(old)
                        .await
                        .map_err(ExecuteError::runtime("cannot remove a leftover instance"))?;
                }
                Ok(Some((**instance).clone()))
            }
            Action::LeaveAlone { .. } => Ok(None),
        }
    }

    /// Stops and removes one instance.
    pub async fn retire(&self, instance: &Instance) -> Result<(), RuntimeError> {
        self.runtime
            .stop(&instance.id, self.stop_grace)
            .await
            .or_else(|e| {
                if matches!(e, RuntimeError::NotFound(_)) {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        self.runtime.remove(&instance.id).await
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
        trigger: RolloutTrigger,
    ) -> Result<Instance, ExecuteError> {
        let lock = self.server_lock(desired.server_id());
        let Ok(_guard) = lock.try_lock() else {
            return Err(ExecuteError::Busy);
        };
        let from: Vec<Instance> = self
            .runtime
            .list()
            .await
            .map_err(ExecuteError::runtime("cannot list instances"))?
            .into_iter()
            .filter(|i| i.server_id == desired.server_id())
            .collect();
        let mut from = from;
        if fresh {
            for old in from.iter().filter(|i| !i.is_running()) {
                self.retire(old)
                    .await
                    .map_err(ExecuteError::runtime("cannot remove a stopped instance"))?;
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
    pub async fn stop_server(
        &self,
        server: &str,
        ctx: &ApplyContext,
    ) -> Result<usize, ExecuteError> {
        let lock = self.server_lock(server);
        let _guard = lock.lock().await;
        let instances: Vec<Instance> = self
            .runtime
            .list()
            .await
            .map_err(ExecuteError::runtime("cannot list instances"))?
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
    ) -> Result<(), ExecuteError> {
        let id = self
            .record_start(None, server, instances, RolloutAction::Remove, ctx, None)
            .await;
        info!(
            instances = instances.len(),
            "removing a server that left the manifest"
        );
        for i in instances {
            if let Err(e) = self.retire(i).await {
                let e = ExecuteError::Runtime {
                    doing: "cannot remove an instance",
                    source: e,
                };
                let reason = crate::error_text::chain(&e);
                self.record_end(id, RolloutOutcome::Failed, Some(reason), None, None)
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

impl Executor {
    /// POSTs a JSON event to a notification channel in the background: a channel that is
    /// down never delays or fails a rollout. Whatever the payload carries is redacted
    /// first (reasons hold log lines), then it is queued on the outbox, which retries and
    /// dead-letters it like a subscription's delivery.
    pub(crate) fn notify(&self, url: String, mut payload: serde_json::Value) {
        self.redactor.redact_json(&mut payload);
        self.outbox.notify(url, payload);
    }
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

#[cfg(test)]
mod tests;
