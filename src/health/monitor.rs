//! The monitor: one probing task per server, each on its own interval (spread by a stable
//! jitter so a thousand servers are not probed at the same instant; a new instance is
//! probed at once), with a global bound on probes in flight. A slow or hanging server only
//! delays its own task. Probe results and runtime events feed each server's [`Tracker`];
//! every transition is stored as a health event and broadcast to subscribers (the recovery
//! manager, the gateway publisher).
//!
//! Health events are written by one journal task, through the store's blocking pool and
//! in the order they happened; a transition is broadcast only once its event is stored.
//!
//! The probing tasks run on a single-threaded runtime of their own (thread `probes`): a
//! probe is a few microseconds of work between waits, and on the agent's multi-threaded
//! runtime each of those wake-ups also woke an idle worker to steal it. At a thousand
//! servers that was a quarter of the monitor's CPU (BENCHMARKS.md, "Monitor cost at
//! scale"), and the API's workers no longer share their queues with probes.
//!
//! The monitor decides nothing about deploying: it only observes and reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::outcome::ProbeResult;
use super::probe::Prober;
use super::state::{HealthState, Thresholds, Tracker, Transition};
use crate::manifest::{HealthCheck, ProbeKind};
use crate::store::{NewHealthEvent, Store};

/// What to probe for one server: its current instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub server_id: String,
    pub instance_id: String,
    /// Where the instance serves (127.0.0.1 and a port, or a swarm task's node and port).
    pub addr: std::net::SocketAddr,
    /// The instance's other serving tasks (Swarm replicas): when `addr` stops answering
    /// and one of these answers healthy, the monitor moves to it (a failover) instead of
    /// counting a failure.
    pub alternates: Vec<std::net::SocketAddr>,
    /// The version deployed, compared with the version the server reports.
    pub version: String,
    pub check: HealthCheck,
    pub mcp_path: String,
}

/// One server's health as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ServerHealth {
    pub server_id: String,
    pub instance_id: String,
    pub state: HealthState,
    pub since: Timestamp,
    /// The probe result or event that caused the last transition.
    pub cause: Option<String>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_probe: Option<ProbeResult>,
    pub last_probe_at: Option<Timestamp>,
    /// An operator override in force: the state shown until then.
    pub override_until: Option<Timestamp>,
    #[serde(skip)]
    override_state: Option<HealthState>,
    /// Where the probes that make this health go (the task calls are routed to).
    #[schemars(with = "String")]
    pub addr: std::net::SocketAddr,
    /// The instance's other serving tasks (Swarm replicas), each as its last probe found
    /// it. Probed in the same round as `addr`; the gateway spreads calls over the healthy
    /// ones. Empty on the other runtimes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<AlternateHealth>,
}

/// What the last probe of one of an instance's other serving tasks found. No thresholds:
/// the server's health is its routed task's; an alternate is spare capacity, left out at
/// its first failed probe and taken back at its first good one.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AlternateHealth {
    #[schemars(with = "String")]
    pub addr: std::net::SocketAddr,
    pub healthy: bool,
    /// The probe's own words (status, latency, or why it failed).
    pub detail: String,
    pub at: Timestamp,
}

/// How wide one sample of a server's probe history is, and how many are kept: the last
/// hour, whatever the probe interval.
const SAMPLE_SECONDS: i64 = 5;
const SAMPLES_KEPT: usize = 720;

/// The probes of one `SAMPLE_SECONDS` window of a server's history.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ProbeSample {
    /// The window's start.
    pub at: Timestamp,
    /// The slowest probe of the window, in milliseconds.
    pub latency_ms: f64,
    pub probes: u32,
    /// How many of them failed.
    pub failures: u32,
}

/// A server's probe history: one sample per window, oldest first, across its instances.
#[derive(Clone, Debug, Default)]
struct History(std::collections::VecDeque<ProbeSample>);

impl History {
    fn record(&mut self, at: Timestamp, latency_ms: f64, failed: bool) {
        let second = at.as_second();
        let start = second - second.rem_euclid(SAMPLE_SECONDS);
        let window = Timestamp::from_second(start).unwrap_or(at);
        match self.0.back_mut() {
            Some(last) if last.at == window => {
                last.latency_ms = last.latency_ms.max(latency_ms);
                last.probes += 1;
                last.failures += u32::from(failed);
            }
            _ => {
                self.0.push_back(ProbeSample {
                    at: window,
                    latency_ms,
                    probes: 1,
                    failures: u32::from(failed),
                });
                while self.0.len() > SAMPLES_KEPT {
                    self.0.pop_front();
                }
            }
        }
    }
}

/// The monitor moved a server to another of its instance's tasks, which answered while
/// the one it probed did not. Broadcast so the fleet view (and the gateway) follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Failover {
    pub server_id: String,
    pub instance_id: String,
    pub from: std::net::SocketAddr,
    pub to: std::net::SocketAddr,
}

/// A transition, as broadcast to subscribers.
#[derive(Clone, Debug, PartialEq)]
pub struct TransitionEvent {
    pub server_id: String,
    pub instance_id: String,
    pub from: HealthState,
    pub to: HealthState,
    pub cause: String,
    pub at: Timestamp,
}

struct Entry {
    target: Target,
    tracker: Tracker,
    /// The tracker as it was when a rollout took the server over, restored if the rollout
    /// ends without a new instance.
    before_rollout: Option<Tracker>,
    view: ServerHealth,
    stop: CancellationToken,
    last_uptime: Option<f64>,
    mismatch_reported: bool,
    /// The last probe of each task the server could be routed to, by address; kept across
    /// a failover so the task it left shows as failed.
    alternates: HashMap<std::net::SocketAddr, AlternateHealth>,
    /// The last hour of the server's probes, carried from instance to instance.
    history: History,
}

/// What the journal task is handed.
enum Note {
    /// An event to store, and the transition to broadcast once it is stored.
    Event(Box<(NewHealthEvent, Option<TransitionEvent>)>),
    /// Answered once everything before it is stored.
    Flush(oneshot::Sender<()>),
}

struct Inner {
    /// Where the probing tasks run (see the module doc).
    probes: tokio::runtime::Handle,
    /// Where the grid of probe slots starts.
    epoch: std::time::Instant,
    /// Dropped with the monitor, which ends the probe thread and its tasks.
    _stop_probes: Option<oneshot::Sender<()>>,
    journal: mpsc::UnboundedSender<Note>,
    prober: Prober,
    // A std lock: held only to read or update an entry, never across a probe or an await.
    entries: Mutex<HashMap<String, Entry>>,
    permits: Semaphore,
    tx: broadcast::Sender<TransitionEvent>,
    failovers: broadcast::Sender<Failover>,
    latency: crate::metrics::Histogram,
}

/// A cheap handle to the monitor.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// A stable offset in `[0, interval)` per server, so probes spread over the interval.
fn jitter(server: &str, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    server.hash(&mut h);
    let fraction = (h.finish() % 10_000) as f64 / 10_000.0;
    interval.mul_f64(fraction)
}

/// Probes are due on a grid of slots this wide, counted from the monitor's start: the
/// servers whose jitter falls in one slot are probed together. Spread one by one, each
/// probe woke the thread on its own and ran on cold caches; in bursts of a few they share
/// the wake-ups (BENCHMARKS.md, "Monitor cost at scale").
const SLOT: Duration = Duration::from_millis(250);

/// When a server with this interval and jitter is first probed after `now`: the first
/// instant at `epoch + jitter (rounded down to a slot) + k × interval`, so servers that
/// share a slot share their instants however far apart they were added.
fn first_due(
    epoch: tokio::time::Instant,
    jitter: Duration,
    interval: Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    let slots = jitter.as_nanos() / SLOT.as_nanos();
    let phase = epoch + SLOT * u32::try_from(slots).unwrap_or(u32::MAX);
    if now <= phase || interval.is_zero() {
        return phase.max(now);
    }
    let behind = (now - phase).as_nanos();
    let periods = behind.div_ceil(interval.as_nanos());
    let offset = interval.as_nanos().saturating_mul(periods);
    phase + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

impl Monitor {
    /// A monitor recording into `store`, with at most `max_in_flight` probes at once. Its
    /// journal task runs on the current tokio runtime until the last handle is dropped.
    pub fn new(store: Store, max_in_flight: usize, redactor: crate::redact::Redactor) -> Monitor {
        let (tx, _) = broadcast::channel(1024);
        let (journal, notes) = mpsc::unbounded_channel();
        tokio::spawn(write_journal(store, tx.clone(), notes));
        let (probes, stop_probes) = match probe_runtime() {
            Ok((handle, stop)) => (handle, Some(stop)),
            Err(e) => {
                warn!(error = %e, "cannot start the probe thread; probing on the agent's runtime");
                (tokio::runtime::Handle::current(), None)
            }
        };
        Monitor {
            inner: Arc::new(Inner {
                probes,
                epoch: std::time::Instant::now(),
                _stop_probes: stop_probes,
                journal,
                prober: Prober::new().with_redactor(redactor),
                entries: Mutex::new(HashMap::new()),
                permits: Semaphore::new(max_in_flight.max(1)),
                tx,
                failovers: broadcast::channel(64).0,
                latency: crate::metrics::Histogram::default(),
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The monitor's prober: the rollout executor's health gate probes with it too, over the
    /// same connections.
    pub fn prober(&self) -> Prober {
        self.inner.prober.clone()
    }

    /// How long probes took, for `GET /metrics`.
    pub fn probe_latency(&self) -> &crate::metrics::Histogram {
        &self.inner.latency
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TransitionEvent> {
        self.inner.tx.subscribe()
    }

    /// Failovers between an instance's tasks, as they happen.
    pub fn failovers(&self) -> broadcast::Receiver<Failover> {
        self.inner.failovers.subscribe()
    }

    /// `target`'s probe failed at its address and `to`, another of its instance's tasks,
    /// answered healthy: probing moves there (the health state stays), the move is
    /// recorded, and subscribers are told. False when the server moved on meanwhile.
    fn fail_over(&self, target: &Target, to: std::net::SocketAddr, why: &str) -> bool {
        {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(&target.server_id) else {
                return false;
            };
            if e.target != *target {
                return false;
            }
            let mut moved = target.clone();
            moved.addr = to;
            moved.alternates = target
                .alternates
                .iter()
                .copied()
                .filter(|a| *a != to)
                .chain(std::iter::once(target.addr))
                .collect();
            e.stop.cancel();
            e.stop = self.spawn(&moved);
            e.target = moved;
            e.alternates.insert(
                target.addr,
                AlternateHealth {
                    addr: target.addr,
                    healthy: false,
                    detail: why.to_owned(),
                    at: Timestamp::now(),
                },
            );
        }
        let detail = format!(
            "{} did not answer ({why}); {to} did: serving from there",
            target.addr
        );
        info!(server = %target.server_id, %detail, "failover");
        self.record(NewHealthEvent {
            server_id: target.server_id.clone(),
            at: Timestamp::now(),
            kind: "failover".into(),
            from_state: None,
            to_state: None,
            detail,
            instance_id: Some(target.instance_id.clone()),
        });
        let _ = self.inner.failovers.send(Failover {
            server_id: target.server_id.clone(),
            instance_id: target.instance_id.clone(),
            from: target.addr,
            to,
        });
        true
    }

    /// Sets what is monitored: new servers start probing, servers gone stop, a server whose
    /// instance changed starts over from `unknown`.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut entries = self.entries();
        let wanted: Vec<String> = targets.iter().map(|t| t.server_id.clone()).collect();
        entries.retain(|server, e| {
            let keep = wanted.contains(server);
            if !keep {
                e.stop.cancel();
            }
            keep
        });
        for target in targets {
            match entries.get_mut(&target.server_id) {
                Some(e) if e.target == target => {}
                Some(e) if e.target.instance_id == target.instance_id => {
                    // Same instance, new settings: restart the task, keep the state.
                    e.stop.cancel();
                    e.stop = self.spawn(&target);
                    e.target = target;
                }
                _ => {
                    let stop = self.spawn(&target);
                    let mut entry = Entry::new(target, stop);
                    if let Some(old) = entries.remove(&entry.target.server_id) {
                        old.stop.cancel();
                        entry.history = old.history;
                    }
                    entries.insert(entry.target.server_id.clone(), entry);
                }
            }
        }
    }

    /// The servers monitored now.
    pub fn snapshot(&self) -> Vec<ServerHealth> {
        let mut all: Vec<ServerHealth> = self.entries().values().map(Entry::shown).collect();
        all.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        all
    }

    pub fn get(&self, server: &str) -> Option<ServerHealth> {
        self.entries().get(server).map(Entry::shown)
    }

    /// The last hour of `server`'s probes, a sample per `SAMPLE_SECONDS`, oldest first.
    pub fn history(&self, server: &str) -> Option<(i64, Vec<ProbeSample>)> {
        let entries = self.entries();
        let e = entries.get(server)?;
        Some((SAMPLE_SECONDS, e.history.0.iter().cloned().collect()))
    }

    /// A rollout owns the server until [`Monitor::rollout_finished`]: probes and exits of
    /// the instances it replaces are not the server's health.
    pub fn rollout_started(&self, server: &str) {
        let t = self.update(server, None, |e| {
            if e.tracker.state != HealthState::Starting {
                e.before_rollout = Some(e.tracker.clone());
            }
            e.tracker
                .restart(HealthState::Starting, "a rollout is in progress")
        });
        self.emit(t);
    }

    /// The rollout published `target`: monitoring moves to it, starting from `unknown`.
    pub fn rollout_switched(&self, target: Target) {
        let mut entries = self.entries();
        let stop = self.spawn(&target);
        let mut entry = Entry::new(target.clone(), stop);
        if let Some(mut old) = entries.remove(&target.server_id) {
            old.before_rollout = None;
            old.stop.cancel();
            entry.tracker.state = old.tracker.state;
            entry.view.state = old.view.state;
            entry.view.since = old.view.since;
        }
        let t = entry
            .tracker
            .restart(HealthState::Unknown, "a new instance serves");
        entry.sync_view(t.as_ref());
        entries.insert(target.server_id.clone(), entry);
        drop(entries);
        self.emit(t.map(|t| (target.server_id.clone(), target.instance_id.clone(), t)));
    }

    /// The rollout ended without switching (it failed): the old instance is watched again,
    /// from the state it had.
    pub fn rollout_finished(&self, server: &str) {
        let t = self.update(server, None, |e| {
            if e.tracker.state != HealthState::Starting {
                return None;
            }
            let before = e.before_rollout.take().unwrap_or_default();
            let to = before.state;
            let t = e
                .tracker
                .restart(to, "the rollout ended without a new instance");
            e.tracker = before;
            t
        });
        self.emit(t);
    }

    /// An instance exited: if it serves a monitored server, that server is unhealthy at once.
    pub fn instance_exited(&self, instance_id: &str, cause: &str) {
        let server = self
            .entries()
            .values()
            .find(|e| e.target.instance_id == instance_id)
            .map(|e| e.target.server_id.clone());
        if let Some(server) = server {
            let t = self.update(&server, Some(instance_id), |e| {
                if e.tracker.state == HealthState::Starting {
                    None
                } else {
                    e.tracker.exited(cause)
                }
            });
            self.emit(t);
        }
    }

    /// The runtime moved or replaced some of an instance's tasks (Swarm): recorded as a
    /// `rescheduled` health event, so the move shows in the server's history and the event
    /// stream. The health state is the probes' to change.
    pub fn rescheduled(&self, server: &str, instance_id: &str, detail: &str) {
        self.record(NewHealthEvent {
            server_id: server.to_owned(),
            at: Timestamp::now(),
            kind: "rescheduled".into(),
            from_state: None,
            to_state: None,
            detail: detail.to_owned(),
            instance_id: Some(instance_id.to_owned()),
        });
    }

    /// Recovery gave up on `server`.
    pub fn give_up(&self, server: &str, cause: &str) {
        let t = self.update(server, None, |e| e.tracker.give_up(cause));
        self.emit(t);
    }

    /// Shows `state` for `server` until `until`, whatever the probes say; recorded as such.
    pub fn set_override(
        &self,
        server: &str,
        state: HealthState,
        until: Timestamp,
        reason: &str,
    ) -> bool {
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(server) else {
            return false;
        };
        e.view.override_until = Some(until);
        let from = e.view.state;
        let instance = e.target.instance_id.clone();
        drop(entries);
        self.record(NewHealthEvent {
            server_id: server.to_owned(),
            at: Timestamp::now(),
            kind: "override".into(),
            from_state: Some(from.to_string()),
            to_state: Some(state.to_string()),
            detail: format!("{reason} (until {until})"),
            instance_id: Some(instance),
        });
        let mut entries = self.entries();
        if let Some(e) = entries.get_mut(server) {
            e.view.override_state = Some(state);
        }
        true
    }

    /// Applies `f` to a server's entry (only while it still serves `instance`, when given)
    /// and returns the transition it made, for [`Monitor::emit`].
    fn update(
        &self,
        server: &str,
        instance: Option<&str>,
        f: impl FnOnce(&mut Entry) -> Option<Transition>,
    ) -> Option<(String, String, Transition)> {
        let mut entries = self.entries();
        let e = entries.get_mut(server)?;
        if instance.is_some_and(|i| i != e.target.instance_id) {
            return None;
        }
        let t = f(e)?;
        e.sync_view(Some(&t));
        Some((server.to_owned(), e.target.instance_id.clone(), t))
    }

    fn record(&self, event: NewHealthEvent) {
        self.journal(Note::Event(Box::new((event, None))));
    }

    fn journal(&self, note: Note) {
        // Closed only when the journal task is gone with the runtime: nothing to keep.
        let _ = self.inner.journal.send(note);
    }

    /// Resolves once every health event noted so far is stored (the agent waits for it
    /// before it exits).
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        self.journal(Note::Flush(done));
        let _ = stored.await;
    }

    fn emit(&self, t: Option<(String, String, Transition)>) {
        let Some((server, instance, t)) = t else {
            return;
        };
        let at = Timestamp::now();
        info!(server = %server, from = %t.from, to = %t.to, cause = %t.cause, "health changed");
        let event = NewHealthEvent {
            server_id: server.clone(),
            at,
            kind: "transition".into(),
            from_state: Some(t.from.to_string()),
            to_state: Some(t.to.to_string()),
            detail: t.cause.clone(),
            instance_id: Some(instance.clone()),
        };
        let transition = TransitionEvent {
            server_id: server,
            instance_id: instance,
            from: t.from,
            to: t.to,
            cause: t.cause,
            at,
        };
        self.journal(Note::Event(Box::new((event, Some(transition)))));
    }

    fn spawn(&self, target: &Target) -> CancellationToken {
        let stop = CancellationToken::new();
        let span = info_span!("probe", server = %target.server_id);
        self.inner.probes.spawn(
            probe_loop(
                Arc::downgrade(&self.inner),
                tokio::time::Instant::from_std(self.inner.epoch),
                target.clone(),
                stop.clone(),
            )
            .instrument(span),
        );
        stop
    }

    /// Records what a round found at `target`'s other tasks (ignored when the server was
    /// re-targeted meanwhile).
    fn alternates_probed(&self, target: &Target, results: &[(std::net::SocketAddr, ProbeResult)]) {
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(&target.server_id) else {
            return;
        };
        if e.target != *target {
            return;
        }
        let at = Timestamp::now();
        for (addr, r) in results {
            e.alternates.insert(
                *addr,
                AlternateHealth {
                    addr: *addr,
                    healthy: r.outcome.is_success(),
                    detail: r.detail.clone(),
                    at,
                },
            );
        }
        let current = &e.target.alternates;
        e.alternates.retain(|a, _| current.contains(a));
    }

    /// Records one probe result for `target` (ignored when the server moved to another
    /// instance meanwhile).
    fn observe(&self, target: &Target, r: ProbeResult) {
        let thresholds = Thresholds {
            failure: target.check.failure_threshold,
            success: target.check.success_threshold,
        };
        let mut notes = Vec::new();
        let t = {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(&target.server_id) else {
                return;
            };
            if e.target.instance_id != target.instance_id {
                return;
            }
            if let Some(reported) = &r.version
                && *reported != target.version
                && !e.mismatch_reported
            {
                e.mismatch_reported = true;
                notes.push((
                    "version_mismatch",
                    format!(
                        "the server reports version {reported}, the agent deployed {}",
                        target.version
                    ),
                ));
            }
            if let (Some(before), Some(now)) = (e.last_uptime, r.uptime_seconds)
                && now + 0.5 < before
            {
                notes.push((
                    "restart_detected",
                    format!("uptime went back from {before:.1}s to {now:.1}s: the server restarted without the agent"),
                ));
            }
            e.last_uptime = r.uptime_seconds.or(e.last_uptime);
            let now = Timestamp::now();
            e.history.record(now, r.latency_ms, r.outcome.is_failure());
            let t = e.tracker.observe(r.outcome, &r.detail, thresholds);
            e.view.last_probe = Some(r);
            e.view.last_probe_at = Some(now);
            e.sync_view(t.as_ref());
            t.map(|t| (target.server_id.clone(), target.instance_id.clone(), t))
        };
        for (kind, detail) in notes {
            warn!(server = %target.server_id, %detail, "{kind}");
            self.record(NewHealthEvent {
                server_id: target.server_id.clone(),
                at: Timestamp::now(),
                kind: kind.into(),
                from_state: None,
                to_state: None,
                detail,
                instance_id: Some(target.instance_id.clone()),
            });
        }
        self.emit(t);
    }
}

impl Entry {
    fn new(target: Target, stop: CancellationToken) -> Entry {
        Entry {
            view: ServerHealth {
                server_id: target.server_id.clone(),
                instance_id: target.instance_id.clone(),
                state: HealthState::Unknown,
                since: Timestamp::now(),
                cause: None,
                consecutive_failures: 0,
                consecutive_successes: 0,
                last_probe: None,
                last_probe_at: None,
                override_until: None,
                override_state: None,
                addr: target.addr,
                alternates: Vec::new(),
            },
            target,
            tracker: Tracker::default(),
            before_rollout: None,
            stop,
            last_uptime: None,
            mismatch_reported: false,
            alternates: HashMap::new(),
            history: History::default(),
        }
    }

    fn sync_view(&mut self, t: Option<&Transition>) {
        self.view.instance_id = self.target.instance_id.clone();
        self.view.consecutive_failures = self.tracker.consecutive_failures;
        self.view.consecutive_successes = self.tracker.consecutive_successes;
        if let Some(t) = t {
            self.view.state = t.to;
            self.view.since = Timestamp::now();
            self.view.cause = Some(t.cause.clone());
        }
    }

    /// The view, with an override in force applied.
    fn shown(&self) -> ServerHealth {
        let mut v = self.view.clone();
        v.addr = self.target.addr;
        v.alternates = self
            .target
            .alternates
            .iter()
            .filter_map(|a| self.alternates.get(a).cloned())
            .collect();
        match (v.override_until, v.override_state) {
            (Some(until), Some(state)) if until > Timestamp::now() => v.state = state,
            _ => {
                v.override_until = None;
                v.override_state = None;
            }
        }
        v
    }
}

/// Starts the probe thread: a single-threaded runtime that runs until the returned sender
/// is dropped, then drops the tasks left on it.
fn probe_runtime() -> std::io::Result<(tokio::runtime::Handle, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("probes".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

/// Stores health events in the order they were noted, a batch per trip to the blocking
/// pool, and broadcasts each transition after its event is stored. Ends when every
/// monitor handle is gone.
async fn write_journal(
    store: Store,
    transitions: broadcast::Sender<TransitionEvent>,
    mut notes: mpsc::UnboundedReceiver<Note>,
) {
    const BATCH: usize = 256;
    let mut batch = Vec::with_capacity(BATCH);
    while notes.recv_many(&mut batch, BATCH).await > 0 {
        let mut events = Vec::new();
        let mut after = Vec::new();
        for note in batch.drain(..) {
            match note {
                Note::Event(noted) => {
                    let (event, transition) = *noted;
                    events.push(event);
                    after.push(transition.map(Ok));
                }
                Note::Flush(done) => after.push(Some(Err(done))),
            }
        }
        if !events.is_empty() {
            let failures = store
                .call(move |s| {
                    Ok(events
                        .iter()
                        .filter_map(|e| s.add_health_event(e).err())
                        .map(|e| crate::error_text::chain(&e))
                        .collect::<Vec<_>>())
                })
                .await
                .unwrap_or_else(|e| vec![crate::error_text::chain(&e)]);
            for e in failures {
                warn!(error = %e, "cannot record a health event");
            }
        }
        for next in after.into_iter().flatten() {
            match next {
                // Nobody listening is fine.
                Ok(transition) => {
                    let _ = transitions.send(transition);
                }
                Err(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

async fn probe_loop(
    inner: Weak<Inner>,
    epoch: tokio::time::Instant,
    target: Target,
    stop: CancellationToken,
) {
    let interval = Duration::from_secs_f64(target.check.interval_seconds);
    let timeout = Duration::from_secs_f64(target.check.timeout_seconds);
    let endpoint = match target.check.probe {
        ProbeKind::Mcp => target.mcp_path.clone(),
        _ => target.check.endpoint.clone(),
    };
    let jitter = jitter(&target.server_id, interval);
    // A new instance is probed at once, so its health is known without waiting for its
    // slot (the servers adopted at start are one burst, bounded by the permits); then on
    // the grid.
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        // At least half an interval on: one interval between grid instants, and back on
        // the grid after a first probe or a probe that outlasted its interval.
        next = first_due(
            epoch,
            jitter,
            interval,
            tokio::time::Instant::now() + interval / 2,
        );
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let monitor = Monitor { inner: strong };
        // The routed task and the instance's other serving tasks, in one round: the
        // gateway spreads calls over the healthy ones.
        let (result, alternates) = {
            let _permit = monitor.inner.permits.acquire().await;
            let probe = |addr| {
                monitor
                    .inner
                    .prober
                    .probe(target.check.probe, addr, &endpoint, timeout)
            };
            let round = futures::future::join(
                probe(target.addr),
                futures::future::join_all(target.alternates.iter().map(|a| probe(*a))),
            );
            tokio::select! {
                _ = stop.cancelled() => return,
                r = round => r,
            }
        };
        if stop.is_cancelled() {
            return;
        }
        monitor.inner.latency.observe(result.latency_ms / 1000.0);
        let alternates: Vec<(std::net::SocketAddr, ProbeResult)> =
            target.alternates.iter().copied().zip(alternates).collect();
        monitor.alternates_probed(&target, &alternates);
        // Another task of the instance may still serve: move there rather than count a
        // failure (the next probes, from the new task, are the server's health).
        if result.outcome.is_failure() {
            for (alt, r) in alternates {
                if r.outcome.is_success() && monitor.fail_over(&target, alt, &result.detail) {
                    monitor.observe(&target, r);
                    return;
                }
            }
        }
        monitor.observe(&target, result);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{History, SAMPLE_SECONDS, SAMPLES_KEPT, SLOT, first_due};

    const INTERVAL: Duration = Duration::from_secs(30);

    #[test]
    fn probes_are_kept_as_one_sample_per_window_for_an_hour() {
        let start = jiff::Timestamp::from_second(1_000_000).unwrap();
        let mut h = History::default();
        h.record(start, 2.0, false);
        h.record(start + jiff::SignedDuration::from_millis(1500), 7.5, true);
        h.record(start + jiff::SignedDuration::from_secs(4), 1.0, false);
        assert_eq!(h.0.len(), 1, "one window");
        let first = &h.0[0];
        assert_eq!(
            (first.latency_ms, first.probes, first.failures),
            (7.5, 3, 1)
        );
        h.record(
            start + jiff::SignedDuration::from_secs(SAMPLE_SECONDS),
            3.0,
            false,
        );
        assert_eq!(h.0.len(), 2, "the next window");
        for i in 2..(SAMPLES_KEPT as i64 + 50) {
            h.record(
                start + jiff::SignedDuration::from_secs(SAMPLE_SECONDS * i),
                1.0,
                false,
            );
        }
        assert_eq!(h.0.len(), SAMPLES_KEPT);
        assert_eq!(
            h.0[0].at,
            start + jiff::SignedDuration::from_secs(SAMPLE_SECONDS * 50),
            "the oldest dropped first"
        );
    }

    #[test]
    fn a_server_added_before_its_slot_is_probed_at_the_slot() {
        let epoch = Instant::now();
        let jitter = SLOT * 3 + Duration::from_millis(10);
        assert_eq!(first_due(epoch, jitter, INTERVAL, epoch), epoch + SLOT * 3);
    }

    #[test]
    fn servers_of_one_slot_share_their_instants_whenever_they_were_added() {
        let epoch = Instant::now();
        let (a, b) = (SLOT * 7 + Duration::from_millis(1), SLOT * 7 + SLOT / 2);
        let early = first_due(epoch, a, INTERVAL, epoch);
        // Added 95 s later, in the middle of a period: its next instant is on the grid.
        let late = first_due(epoch, b, INTERVAL, epoch + Duration::from_secs(95));
        assert_eq!(late, early + INTERVAL * 4);
        assert!(late >= epoch + Duration::from_secs(95));
        assert!(late < epoch + Duration::from_secs(95) + INTERVAL);
    }

    #[test]
    fn a_server_added_exactly_on_its_instant_is_probed_then() {
        let epoch = Instant::now();
        let at = epoch + SLOT + INTERVAL * 2;
        assert_eq!(first_due(epoch, SLOT, INTERVAL, at), at);
    }

    #[test]
    fn a_short_interval_is_not_stretched_to_a_slot() {
        let epoch = Instant::now();
        let interval = Duration::from_millis(100);
        let now = epoch + Duration::from_millis(1_030);
        let due = first_due(epoch, Duration::from_millis(60), interval, now);
        assert_eq!(due, epoch + Duration::from_millis(1_100));
    }
}
