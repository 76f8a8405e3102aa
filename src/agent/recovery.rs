//! Bounded auto-recovery. When the monitor marks a server unhealthy, up to
//! `recovery.max_attempts` actions follow, each after an exponential backoff
//! (`backoff_seconds × backoff_multiplier^n`): restart (a fresh instance beside the broken
//! one), then recreate (the broken one removed first, the image pulled again), then notify.
//! Recovery stops as soon as the server serves again, never fights an operator's stop, a
//! rollout in progress or a server removed from the manifest, and records every attempt and
//! its outcome as a health event. When the attempts are used up the server is `failed` and
//! stays monitored; an operator restart or a new commit starts over. The attempt count
//! resets once the server has stayed healthy for ten probe intervals.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::fleet::{Control, Trigger};
use crate::health::{HealthState, Monitor};
use crate::reconcile::execute::RolloutTrigger;
use crate::runtime::{RuntimeEvent, RuntimeEventKind};
use crate::store::NewHealthEvent;

/// Forwards runtime exits to the monitor (a crash is unhealthy at once) and wakes a sync:
/// a runtime may restart the instance itself (Docker's restart policy), possibly on another
/// host port, and the published endpoint must follow.
pub async fn watch_exits(
    mut events: broadcast::Receiver<RuntimeEvent>,
    monitor: Monitor,
    wake: tokio::sync::mpsc::Sender<crate::fleet::Trigger>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(RuntimeEvent {
                kind: RuntimeEventKind::Rescheduled { detail },
                server_id,
                instance_id,
                ..
            }) => {
                // Still serving, perhaps elsewhere: publish where, at once.
                info!(server = %server_id, %detail, "the runtime moved tasks");
                monitor.rescheduled(&server_id, &instance_id, &detail);
                let _ = wake.try_send(crate::fleet::Trigger::Runtime);
            }
            Ok(e) => {
                let cause = match e.kind {
                    RuntimeEventKind::Exited { code: Some(c) } => {
                        format!("the instance exited with code {c}")
                    }
                    RuntimeEventKind::Exited { code: None } => "the instance exited".to_owned(),
                    RuntimeEventKind::OomKilled => {
                        "the instance was killed for running out of memory".to_owned()
                    }
                    RuntimeEventKind::Rescheduled { .. } => continue,
                };
                monitor.instance_exited(&e.instance_id, &cause);
                // Docker restarts within a second or so; refresh after it had the chance. A
                // full queue already holds a wake-up, which is all that is needed.
                let wake = wake.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    let _ = wake.try_send(crate::fleet::Trigger::Runtime);
                });
            }
            Err(broadcast::error::RecvError::Lagged(n)) => warn!(
                missed = n,
                "runtime events were dropped; probes will catch up"
            ),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How long recovery waits for a replacement the runtime is starting itself before it
/// acts: longer than Swarm takes to start a task from a local image, short enough that a
/// replacement stuck on a node does not keep the server down for long.
const REPLACEMENT_WINDOW: Duration = Duration::from_secs(30);

/// What the runtime says it is doing to bring the server's instance back, if anything.
/// The instance is the one the view routes to, or else (nothing serves while a task is
/// replaced, so the view has none) the server's newest one the runtime lists.
async fn runtime_replacing(state: &Control, server: &str) -> Option<String> {
    let runtime = state.executor.runtime();
    let instance = match state.view.server(server).and_then(|s| s.instance_id) {
        Some(id) => id,
        None => {
            runtime
                .list()
                .await
                .ok()?
                .into_iter()
                .filter(|i| i.server_id == server)
                .max_by_key(|i| i.started_at)?
                .id
        }
    };
    runtime.replacing(&instance).await
}

/// Waits while the runtime heals the server itself: for its grace at the first attempt of
/// an episode (it may not have noticed yet: Swarm declares a node down only after a few
/// missed heartbeats), and as long as it reports a replacement on its way, up to
/// [`REPLACEMENT_WINDOW`]. Records what it waits for; true when the server is healthy again.
async fn wait_for_runtime(
    state: &Control,
    server: &str,
    first: bool,
    shutdown: &CancellationToken,
) -> bool {
    let started = tokio::time::Instant::now();
    let grace = if first {
        state.executor.runtime().heals_itself()
    } else {
        None
    };
    let mut until = started + grace.unwrap_or_default();
    if let Some(grace) = grace {
        let runtime = state.executor.runtime().kind().as_str();
        let detail = format!(
            "the {runtime} runtime replaces what fails by itself; giving it {:.1}s first",
            grace.as_secs_f64()
        );
        event(state, server, detail).await;
    }
    let mut told = false;
    loop {
        if is_healthy(state, server) {
            if grace.is_some() || told {
                event(
                    state,
                    server,
                    "healthy again: the runtime brought it back".into(),
                )
                .await;
            }
            return true;
        }
        if shutdown.is_cancelled() {
            return false;
        }
        if let Some(how) = runtime_replacing(state, server).await {
            until = until.max(started + REPLACEMENT_WINDOW);
            if !told {
                event(state, server, format!("{how}: waiting for it")).await;
                told = true;
            }
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a recovery attempt does, by how many came before it in this episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryAction {
    /// A new instance beside the broken one, switched to once healthy.
    Restart,
    /// The same after removing stopped leftovers.
    Recreate,
    /// Tell the policy's notification channel; nothing else is tried.
    Notify,
}

impl RecoveryAction {
    /// restart, then recreate, then notify (the seed's order).
    pub fn for_attempt(attempt: u32) -> RecoveryAction {
        match attempt {
            0 => RecoveryAction::Restart,
            1 => RecoveryAction::Recreate,
            _ => RecoveryAction::Notify,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Restart => "restart",
            RecoveryAction::Recreate => "recreate",
            RecoveryAction::Notify => "notify",
        }
    }
}

/// The recovery manager: one recovery at a time per server.
pub async fn run(state: Arc<Control>, shutdown: CancellationToken) {
    let mut transitions = state.monitor.subscribe();
    let mut active: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // Attempts already used per server, and since when it has been healthy.
    let used: Arc<std::sync::Mutex<HashMap<String, u32>>> = Arc::default();
    loop {
        let t = tokio::select! {
            _ = shutdown.cancelled() => return,
            t = transitions.recv() => t,
        };
        let t = match t {
            Ok(t) => t,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        active.retain(|_, task| !task.is_finished());
        if t.to == HealthState::Unhealthy && !active.contains_key(&t.server_id) {
            let task = state.tasks.spawn(recover(
                state.clone(),
                t.server_id.clone(),
                used.clone(),
                shutdown.clone(),
            ));
            active.insert(t.server_id, task);
        }
    }
}

/// Records a recovery event (on the blocking pool, like every store call).
async fn event(state: &Control, server: &str, detail: String) {
    let e = NewHealthEvent {
        server_id: server.to_owned(),
        at: Timestamp::now(),
        kind: "recovery".into(),
        from_state: None,
        to_state: None,
        detail,
        instance_id: state.monitor.get(server).map(|h| h.instance_id),
    };
    if let Err(err) = state.store.call(move |s| s.add_health_event(&e)).await {
        warn!(error = %crate::error_text::chain(&err), "cannot record a recovery event");
    }
}

async fn recover(
    state: Arc<Control>,
    server: String,
    used: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    shutdown: CancellationToken,
) {
    let Some(desired) = state.desired(&server) else {
        return;
    };
    let r = desired.recovery.clone();
    let span = Duration::from_secs_f64(desired.health.interval_seconds) * 10;
    let count = |used: &std::sync::Mutex<HashMap<String, u32>>| {
        *used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
            .unwrap_or(&0)
    };
    let forget = |used: &std::sync::Mutex<HashMap<String, u32>>| {
        used.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&server);
    };
    loop {
        let attempt = count(&used);
        if attempt >= r.max_attempts {
            let detail =
                format!("{attempt} recovery attempt(s) did not bring it back; it stays monitored");
            event(&state, &server, detail.clone()).await;
            state.monitor.give_up(&server, &detail);
            notify(&state, &desired, &server, &detail);
            // Fixed by hand later, or replaced by a commit: healthy for a while starts over.
            while !shutdown.is_cancelled() {
                if watch(&state, &server, span, &shutdown).await == Watch::StayedHealthy {
                    forget(&used);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
        let backoff =
            Duration::from_secs_f64(r.backoff_seconds * r.backoff_multiplier.powi(attempt as i32));
        event(
            &state,
            &server,
            format!(
                "attempt {}/{} in {:.1}s",
                attempt + 1,
                r.max_attempts,
                backoff.as_secs_f64()
            ),
        )
        .await;
        let deadline = tokio::time::Instant::now() + backoff;
        let mut healed = false;
        while tokio::time::Instant::now() < deadline {
            if shutdown.is_cancelled() {
                return;
            }
            if is_healthy(&state, &server) {
                healed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50).min(backoff)).await;
        }
        if healed {
            event(
                &state,
                &server,
                "healthy again before the next attempt".into(),
            )
            .await;
        }
        // Never fight the runtime: one that replaces failed instances itself (Swarm, when
        // a node dies) gets its time first, and while it brings a replacement up, recovery
        // waits for that instead of starting another instance. Either way the server is
        // watched before anything is done.
        if healed || wait_for_runtime(&state, &server, attempt == 0, &shutdown).await {
            match watch(&state, &server, span, &shutdown).await {
                Watch::StayedHealthy => {
                    forget(&used);
                    return;
                }
                Watch::Unhealthy => continue,
                Watch::Gone => return,
            }
        }
        // Never fight an operator's stop or act on a server that left the manifest. Stops
        // that cannot be read are not taken for none: no action until they can be.
        let held = {
            let server = server.clone();
            state
                .store
                .call(move |s| Ok(s.held_servers()?.contains(&server)))
                .await
        };
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                event(
                    &state,
                    &server,
                    format!(
                        "cannot read operator stops ({}); no action until they can be read",
                        crate::error_text::chain(&e)
                    ),
                )
                .await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.max(Duration::from_secs(1))) => {}
                }
                continue;
            }
        };
        if held {
            event(
                &state,
                &server,
                "stopped by an operator: recovery ends".into(),
            )
            .await;
            return;
        }
        let Some(desired) = state.desired(&server) else {
            event(
                &state,
                &server,
                "no longer in the manifest: recovery ends".into(),
            )
            .await;
            return;
        };
        *used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server.clone())
            .or_insert(0) += 1;
        let action = RecoveryAction::for_attempt(attempt);
        let result = match action {
            RecoveryAction::Restart => state
                .executor
                .replace(&desired, false, RolloutTrigger::Recovery)
                .await
                .map(|_| ())
                .map_err(|e| crate::error_text::chain(&e)),
            RecoveryAction::Recreate => state
                .executor
                .replace(&desired, true, RolloutTrigger::Recovery)
                .await
                .map(|_| ())
                .map_err(|e| crate::error_text::chain(&e)),
            RecoveryAction::Notify => {
                notify(
                    &state,
                    &desired,
                    &server,
                    "the server is unhealthy and did not recover by restarting or recreating it",
                );
                Err("an operator was notified".to_owned())
            }
        };
        let action = action.as_str();
        match &result {
            Ok(()) => info!(server = %server, action, "recovery action done"),
            Err(e) => {
                warn!(server = %server, action, error = %e, "recovery action did not bring it back")
            }
        }
        let outcome = match (&result, action) {
            (_, "notify") => "sent".to_owned(),
            (Ok(()), _) => "done, a new instance passed its health gate".to_owned(),
            (Err(e), _) => format!("failed: {}", e.lines().next().unwrap_or_default()),
        };
        event(
            &state,
            &server,
            format!(
                "attempt {}/{}: {action}: {outcome}",
                attempt + 1,
                r.max_attempts
            ),
        )
        .await;
        state.wake(Trigger::Runtime);
        if result.is_ok() {
            match watch(&state, &server, span, &shutdown).await {
                Watch::StayedHealthy => {
                    forget(&used);
                    return;
                }
                Watch::Unhealthy => continue,
                Watch::Gone => return,
            }
        }
    }
}

fn is_healthy(state: &Control, server: &str) -> bool {
    state
        .monitor
        .get(server)
        .is_some_and(|h| h.state == HealthState::Healthy)
}

#[derive(Debug, PartialEq, Eq)]
enum Watch {
    StayedHealthy,
    Unhealthy,
    Gone,
}

/// Watches a server that should be recovering: healthy for `span` in a row, or unhealthy
/// (or failed) again, or no longer monitored.
async fn watch(
    state: &Control,
    server: &str,
    span: Duration,
    shutdown: &CancellationToken,
) -> Watch {
    let mut healthy_since: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            return Watch::Gone;
        }
        match state.monitor.get(server).map(|h| h.state) {
            None => return Watch::Gone,
            Some(HealthState::Unhealthy | HealthState::Failed) => return Watch::Unhealthy,
            Some(HealthState::Healthy) => {
                let since = *healthy_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= span {
                    return Watch::StayedHealthy;
                }
            }
            Some(_) => healthy_since = None,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tells the policy's notification channel, if any (in the background; never blocks).
fn notify(state: &Control, desired: &crate::reconcile::Desired, server: &str, detail: &str) {
    let Some(url) = desired.policy.notification_channel.clone() else {
        return;
    };
    state.executor.notify(
        url,
        serde_json::json!({
            "event": "recovery",
            "server_id": server,
            "detail": detail,
            "timestamp": Timestamp::now().to_string(),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::RecoveryAction;

    #[test]
    fn attempts_go_restart_recreate_then_notify() {
        let actions: Vec<&str> = (0..5)
            .map(|n| RecoveryAction::for_attempt(n).as_str())
            .collect();
        assert_eq!(
            actions,
            ["restart", "recreate", "notify", "notify", "notify"]
        );
    }
}
