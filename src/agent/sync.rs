//! One sync: fetch the branch, and if its head is a commit not judged yet, run it through
//! validate → plan → apply → verify as a recorded run; otherwise converge the fleet back to
//! the applied revision (drift from crashes or hand-made changes).
//!
//! A commit that fails validation is recorded as rejected and changes nothing: the last
//! applied revision keeps running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{Instrument, info, info_span, warn};

use super::registry_poll::Watched;
use super::secrets::Secrets;
use crate::fleet::{Control, FleetView, Trigger, ViewInputs, deployment_view};
use crate::manifest::policy::TrustPolicy;
use crate::manifest::{self, Checked, Diagnostic, Severity};
use crate::reconcile::execute::{
    ApplyContext, ExecuteError, Executor, RolloutTrigger, ServerOutcome,
};
use crate::reconcile::{
    Decision, DesiredProblem, Inputs, Selection, decide, planned_servers, select, servers_changed,
    watched_images,
};
use crate::runtime::Instance;
use crate::source::{GitSource, Revision, short_commit};
use crate::store::{NewRun, RunResult, Stage, StageRecord, StageStatus};
use crate::sync_windows::{Change, Held, SyncWindows};

/// What the sync's decisions read from the store (see [`read_recorded`]).
pub(super) struct Recorded {
    pub failed: Vec<crate::store::FailedVersion>,
    /// Operators' rollback pins: server → version.
    pub pins: BTreeMap<String, String>,
    /// Servers an operator stopped.
    pub held: Vec<String>,
}

/// A plan carried out, and the instances it was made against.
struct Converged {
    plan: crate::reconcile::Plan,
    observed: Vec<Instance>,
}

/// The revision whose manifest is in force.
#[derive(Clone)]
pub(super) struct Applied {
    pub commit: String,
    pub checked: Checked,
}

/// The revision in force as others read it (the planner): the sync loop writes it.
pub(super) type InForce = Arc<std::sync::RwLock<Option<Arc<Applied>>>>;

pub struct Syncer {
    pub source: GitSource,
    pub executor: Executor,
    pub trust: TrustPolicy,
    pub secrets: Secrets,
    pub control: Arc<Control>,
    /// The registry poller's repositories and tags.
    pub watched: Arc<Watched>,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// How long syncs took (`GET /metrics`).
    pub sync_duration: Arc<crate::metrics::Histogram>,
    applied: Option<Applied>,
    /// Where the commits whose run finished go, to be written as git notes
    /// (`--write-notes`).
    pub notes: Option<super::notes::Finished>,
    /// A copy of `applied` for the planner.
    in_force: InForce,
    /// The head of the last fetch, so an unchanged head does not start a new run.
    last_head: Option<String>,
    /// Per-server problems of the last converge (missing secrets, wrong runtime), for the
    /// run it belongs to.
    problems: Vec<DesiredProblem>,
    /// Consecutive fetch failures, for backoff.
    pub fetch_failures: u32,
    /// Whether the last fetch failure can pass by itself (an unreachable remote) rather
    /// than needing someone to fix something (a missing branch, a broken mirror): only the
    /// former is retried soon.
    pub fetch_retryable: bool,
    /// Consecutive syncs in which a change failed only because the runtime was away (or
    /// the server busy), for a retry sooner than the poll interval.
    pub apply_failures: u32,
    /// Whether this sync had such a failure (set by `converge`).
    retry_apply: bool,
    /// The new commit that could not be recorded, and why, until it can be (or the branch
    /// moved away from it).
    store_error: Option<(String, String)>,
    /// Consecutive syncs that left the new commit waiting for the store, for backoff.
    store_failures: u32,
    /// Set while a fetch runs on the blocking pool, also after the sync stopped waiting
    /// for it: a second fetch into the same mirror would only fight over its locks.
    fetching: Arc<std::sync::atomic::AtomicBool>,
    /// The operator's sync windows (`--sync-windows`).
    pub windows: Arc<SyncWindows>,
    /// The new commit a sync window holds, and why: it runs at the first sync after the
    /// window lets it.
    commit_held: Option<Held>,
}

/// The servers of `checked` whose registry upgrades `windows` hold at `now`, with why;
/// those an operator deployed during their window (`control`'s releases) go through.
pub(super) fn registry_holds(
    windows: &SyncWindows,
    checked: &Checked,
    control: &Control,
    now: Timestamp,
) -> BTreeMap<String, Held> {
    if windows.is_empty() {
        return BTreeMap::new();
    }
    let mut holds: BTreeMap<String, Held> = checked
        .manifest
        .servers
        .iter()
        .filter_map(|s| {
            windows
                .hold(Change::Registry, Some(&s.id), now)
                .map(|h| (s.id.clone(), h))
        })
        .collect();
    let held = holds.keys().cloned().collect();
    for released in control.window_releases(&held) {
        holds.remove(&released);
    }
    holds
}

/// Records a finished stage of run `run_id` (on the blocking pool, like every store call).
async fn record_stage(
    store: &crate::store::Store,
    run_id: i64,
    stage: Stage,
    status: StageStatus,
    started: Timestamp,
    detail: Option<String>,
) {
    let record = StageRecord {
        stage,
        status,
        started_at: started,
        finished_at: Some(Timestamp::now()),
        detail,
    };
    if let Err(e) = store.call(move |s| s.record_stage(run_id, &record)).await {
        warn!(error = %crate::error_text::chain(&e), "cannot record a run stage");
    }
}

/// Records run `run_id` as rejected: its validation failed with `errors`.
async fn reject_run(
    store: &crate::store::Store,
    run_id: i64,
    validation_started: Timestamp,
    reason: String,
    errors: &[Diagnostic],
) {
    record_stage(
        store,
        run_id,
        Stage::Validate,
        StageStatus::Failed,
        validation_started,
        None,
    )
    .await;
    finish_run(store, run_id, RunResult::Rejected, Some(reason), errors).await;
}

/// Records the result of run `run_id`.
async fn finish_run(
    store: &crate::store::Store,
    run_id: i64,
    result: RunResult,
    reason: Option<String>,
    errors: &[Diagnostic],
) {
    let errors = errors.to_vec();
    let finished = store
        .call(move |s| s.finish_run(run_id, result, reason.as_deref(), &errors, Timestamp::now()))
        .await;
    if let Err(e) = finished {
        warn!(error = %crate::error_text::chain(&e), "cannot record the run result");
    }
}

/// What a decision reads from the store, in one trip to the blocking pool. Fails closed:
/// without the failed-version memory, the rollback pins or the operator stops, a version
/// that failed would be tried again, a rollback undone or a stopped server brought back, so
/// a failed read is an error and the caller changes nothing.
pub(super) async fn read_recorded(store: &crate::store::Store) -> Result<Recorded, String> {
    store
        .call(|s| {
            Ok(Recorded {
                failed: s.failed_versions(None)?,
                pins: s
                    .pins()?
                    .into_iter()
                    .map(|p| (p.server_id, p.version))
                    .collect(),
                held: s.held_servers()?,
            })
        })
        .await
        .map_err(|e| {
            format!(
                "cannot read the failed versions, rollback pins and operator stops: {}",
                crate::error_text::chain(&e)
            )
        })
}

/// Clears the flag it holds when dropped.
struct ClearOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

const APPLIED_KEY: &str = "applied_revision";
/// The revision in force before the applied one, to fall back to from a poison commit.
const PREVIOUS_KEY: &str = "previous_applied_revision";

/// Runs of one commit cut short by a dying agent in validation before it counts as poison.
const POISON_AFTER: usize = 2;

impl Syncer {
    pub fn new(
        source: GitSource,
        trust: TrustPolicy,
        secrets: Secrets,
        control: Arc<Control>,
        watched: Arc<Watched>,
        shutdown: tokio_util::sync::CancellationToken,
        sync_duration: Arc<crate::metrics::Histogram>,
    ) -> Syncer {
        Syncer {
            source,
            executor: control.executor.clone(),
            trust,
            secrets,
            control,
            watched,
            shutdown,
            sync_duration,
            applied: None,
            in_force: InForce::default(),
            notes: None,
            last_head: None,
            problems: Vec::new(),
            fetch_failures: 0,
            fetch_retryable: true,
            apply_failures: 0,
            retry_apply: false,
            store_error: None,
            store_failures: 0,
            fetching: Arc::default(),
            windows: Arc::default(),
            commit_held: None,
        }
    }

    /// How long until a sync window opens or closes, when that is sooner than `within`:
    /// the loop syncs then, so what the window held goes out as soon as it may.
    pub fn window_boundary(&self, within: Duration) -> Option<Duration> {
        let now = Timestamp::now();
        let until = now.checked_add(within).ok()?;
        let at = self.windows.next_boundary(now, until)?;
        let wait = Duration::try_from(now.duration_until(at)).ok()?;
        // A window is open up to, not at, its end: wake just after it.
        Some(wait + Duration::from_millis(5))
    }

    /// The registry upgrades held now (see [`registry_holds`]).
    fn registry_holds(&self) -> BTreeMap<String, Held> {
        match &self.applied {
            Some(a) => registry_holds(&self.windows, &a.checked, &self.control, Timestamp::now()),
            None => BTreeMap::new(),
        }
    }

    /// A planner that plans as this loop does (`POST /plan`).
    pub(super) fn previewer(&self) -> super::preview::Previewer {
        super::preview::Previewer {
            source: self.source.clone(),
            trust: self.trust.clone(),
            secrets: self.secrets.clone(),
            watched: self.watched.clone(),
            in_force: self.in_force.clone(),
            store: self.control.store.clone(),
            executor: self.executor.clone(),
            windows: self.windows.clone(),
            control: self.control.clone(),
        }
    }

    /// Fetches the branch head, within the fetch's own budget and never past shutdown.
    /// A failure says why and whether it can pass by itself.
    async fn fetch(&self) -> Result<String, (String, bool)> {
        use std::sync::atomic::Ordering;
        if self.fetching.swap(true, Ordering::SeqCst) {
            return Err((
                "the previous fetch has not finished yet; the remote accepts connections but does not answer"
                    .to_owned(),
                true,
            ));
        }
        let source = self.source.clone();
        let fetching = self.fetching.clone();
        let task = tokio::task::spawn_blocking(move || {
            // Cleared however the fetch ends, a panic included.
            let _done = ClearOnDrop(fetching);
            source.fetch()
        });
        // libgit2 bounds each read; this bounds the whole fetch, with a margin for it.
        let budget = self.source.settings().timeout * crate::source::FETCH_BUDGET_FACTOR
            + Duration::from_secs(5);
        tokio::select! {
            joined = tokio::time::timeout(budget, task) => match joined {
                Ok(Ok(head)) => head.map_err(|e| (crate::error_text::chain(&e), e.is_retryable())),
                Ok(Err(e)) => Err((format!("the fetch task failed: {e}"), true)),
                Err(_) => Err((format!(
                    "the fetch did not finish within {}s; the remote accepts connections but does not answer",
                    budget.as_secs()
                ), true)),
            },
            _ = self.shutdown.cancelled() => Err(("the agent is shutting down".to_owned(), true)),
        }
    }

    /// How long until a new commit the store could not record (or read) is tried again:
    /// soon, then backing off (1, 2, 4, 8 s), so a broken store does not fill the log with
    /// attempts. `None` when nothing waits.
    pub fn commit_waiting(&self) -> Option<Duration> {
        self.store_error.as_ref()?;
        Some(Duration::from_secs(
            1 << self.store_failures.saturating_sub(1).min(3),
        ))
    }

    fn store_failed(&mut self, head: &str, error: String) {
        self.last_head = None;
        self.store_error = Some((head.to_owned(), error));
        self.store_failures = self.store_failures.saturating_add(1);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&GitSource) -> Result<T, crate::source::GitError> + Send + 'static,
    ) -> Result<T, String> {
        let source = self.source.clone();
        match tokio::task::spawn_blocking(move || f(&source)).await {
            Ok(r) => r.map_err(|e| crate::error_text::chain(&e)),
            Err(e) => Err(format!("git task failed: {e}")),
        }
    }

    /// Loads the revision applied before a restart, so the agent keeps it in force even if
    /// the branch now points at a commit that was rejected.
    pub async fn restore(&mut self) {
        // Empty after a poison commit with nothing in force before it.
        let Ok(Some(commit)) = self.control.store.call(|s| s.meta(APPLIED_KEY)).await else {
            return;
        };
        if !commit.is_empty() {
            self.load_applied(commit).await;
        }
    }

    /// Puts `commit` in force again (its files read from the mirror and checked).
    async fn load_applied(&mut self, commit: String) {
        let c = commit.clone();
        match self.blocking(move |s| s.revision(&c)).await {
            Ok(rev) => {
                if let Some(files) = rev.files
                    && let Ok(checked) = manifest::check(&files, &self.trust)
                {
                    info!(revision = %short_commit(&commit), "restored the applied revision");
                    self.set_applied(Some(Applied { commit, checked }));
                }
            }
            Err(e) => {
                warn!(revision = %short_commit(&commit), error = %e, "cannot read the applied revision; waiting for the next fetch")
            }
        }
    }

    /// One sync; afterwards `apply_failures` counts the syncs in a row whose changes failed
    /// only for a retryable reason (any other sync, whichever way it ends, resets it).
    pub async fn sync(&mut self, trigger: Trigger) {
        self.retry_apply = false;
        self.sync_once(trigger).await;
        self.apply_failures = if self.retry_apply {
            self.apply_failures.saturating_add(1)
        } else {
            0
        };
    }

    async fn sync_once(&mut self, trigger: Trigger) {
        let started = Instant::now();
        let seen_at = Timestamp::now();
        let fetch_started = Timestamp::now();
        let head = self.fetch().await;
        let fetch_finished = Timestamp::now();
        let mut source_error = None;
        match head {
            Err((e, retryable)) => {
                self.fetch_failures += 1;
                self.fetch_retryable = retryable;
                warn!(error = %e, failures = self.fetch_failures, retryable, "fetch failed; keeping the applied revision");
                source_error = Some(e);
            }
            Ok(head) => {
                self.fetch_failures = 0;
                // A branch that moved away from the unrecorded commit has nothing waiting.
                if self.store_error.as_ref().is_some_and(|(c, _)| *c != head) {
                    self.store_error = None;
                    self.store_failures = 0;
                }
                // A commit a window held is looked at again at every sync.
                let waiting = self
                    .commit_held
                    .take()
                    .filter(|h| h.what.as_deref() == Some(head.as_str()));
                if self.last_head.as_deref() != Some(head.as_str()) || waiting.is_some() {
                    self.last_head = Some(head.clone());
                    // What the store knows of this commit decides whether it runs: when
                    // that cannot be read, nothing runs and the commit waits (fail closed:
                    // a poison commit must not be taken for a new one).
                    let h = head.clone();
                    let known = self
                        .control
                        .store
                        .call(move |s| {
                            Ok((s.latest_result_for(&h)?, s.runs_died_in_validation(&h)?))
                        })
                        .await;
                    let (already, died) = match known {
                        Ok(known) => known,
                        Err(e) => {
                            let e = format!(
                                "cannot read the runs of the new commit: {}",
                                crate::error_text::chain(&e)
                            );
                            warn!(error = %e, "not running the new commit until its runs can be read");
                            self.store_failed(&head, e);
                            self.publish(source_error).await;
                            self.observe_sync(started);
                            return;
                        }
                    };
                    let applied_here = self.applied.as_ref().is_some_and(|a| a.commit == head);
                    // A rejected commit stays rejected, and the commit in force is not run
                    // again, unless its run was cut short (the agent died mid-apply). Anything
                    // else (new, or an older commit a force-push went back to) runs.
                    let interrupted = already == Some(RunResult::Interrupted);
                    // A commit whose runs died with the agent twice during validation is
                    // poison (a manifest that exhausts memory, say): it is recorded as failed
                    // and not run again, or every restart would die on it.
                    let poisoned = died >= POISON_AFTER;
                    if poisoned && interrupted {
                        self.record_poison(&head, trigger, seen_at).await;
                    }
                    if poisoned && self.applied.as_ref().is_some_and(|a| a.commit == head) {
                        self.fall_back_from_poison().await;
                    }
                    let skip = poisoned
                        || already == Some(RunResult::Rejected)
                        || (applied_here && !interrupted);
                    let held = (!skip)
                        .then(|| self.windows.hold(Change::Commit, None, Timestamp::now()))
                        .flatten();
                    if let Some(mut held) = held {
                        held.what = Some(head.clone());
                        if waiting.is_none() {
                            info!(
                                revision = %short_commit(&head),
                                window = %held.window,
                                until = ?held.until,
                                "a sync window holds the new commit; it runs when the window lets it"
                            );
                        }
                        self.commit_held = Some(held);
                    } else if !skip {
                        let span = info_span!("run", revision = %short_commit(&head), trigger = trigger.as_str());
                        let recorded = self
                            .run_commit(&head, trigger, seen_at, (fetch_started, fetch_finished))
                            .instrument(span)
                            .await;
                        // A commit that could not even be recorded is not seen yet: the
                        // next sync tries it again (the loop backs off meanwhile).
                        if let Err(e) = recorded {
                            self.store_failed(&head, e);
                        } else {
                            if let Some(notes) = &self.notes {
                                let _ = notes.send(head.clone());
                            }
                            self.store_error = None;
                            self.store_failures = 0;
                        }
                        self.publish(source_error).await;
                        self.observe_sync(started);
                        return;
                    }
                }
            }
        }
        // No new commit: converge on the applied revision.
        if self.applied.is_some() {
            let why = match trigger {
                Trigger::Registry => RolloutTrigger::Registry,
                Trigger::Operator => RolloutTrigger::Operator,
                _ => RolloutTrigger::Reconcile,
            };
            let (plan_result, _) = self.converge(None, why).await;
            if let Err(e) = plan_result {
                warn!(error = %e, "reconcile failed");
            }
        }
        self.publish(source_error).await;
        self.observe_sync(started);
    }

    /// Counts a finished sync (`GET /metrics`) and warns about one over its budget.
    fn observe_sync(&self, started: Instant) {
        let took = started.elapsed();
        self.sync_duration.observe(took.as_secs_f64());
        if took.as_secs() >= 30 {
            warn!(
                seconds = took.as_secs_f64(),
                "a sync ran over its 30 s budget"
            );
        }
    }

    async fn run_commit(
        &mut self,
        head: &str,
        trigger: Trigger,
        seen_at: Timestamp,
        fetch: (Timestamp, Timestamp),
    ) -> Result<(), String> {
        let store = self.control.store.clone();
        let h = head.to_owned();
        let revision: Result<Revision, String> = self.blocking(move |s| s.revision(&h)).await;
        let (author, message, committed_at) = match &revision {
            Ok(r) => (r.author.clone(), r.message.clone(), r.committed_at),
            Err(_) => (None, None, None),
        };
        let new_run = NewRun {
            commit_id: head.to_owned(),
            author,
            message: message.clone(),
            committed_at,
            trigger: trigger.as_str().to_owned(),
            seen_at,
        };
        let run_id = match store.call(move |s| s.begin_run(&new_run)).await {
            Ok(id) => id,
            Err(e) => {
                let e = crate::error_text::chain(&e);
                warn!(error = %e, "cannot record the run; not applying the commit until it can be");
                return Err(format!("cannot record a run for the new commit: {e}"));
            }
        };
        info!(message = message.as_deref().unwrap_or(""), "new commit");
        let fetched = StageRecord {
            stage: Stage::Fetch,
            status: StageStatus::Succeeded,
            started_at: fetch.0,
            finished_at: Some(fetch.1),
            detail: None,
        };
        if let Err(e) = store.call(move |s| s.record_stage(run_id, &fetched)).await {
            warn!(error = %crate::error_text::chain(&e), "cannot record a run stage");
        }

        // validate
        let started = Timestamp::now();
        let revision = match revision {
            Ok(r) => r,
            Err(e) => {
                record_stage(
                    &store,
                    run_id,
                    Stage::Validate,
                    StageStatus::Failed,
                    started,
                    Some(e.clone()),
                )
                .await;
                finish_run(&store, run_id, RunResult::Failed, Some(e), &[]).await;
                return Ok(());
            }
        };
        let Some(files) = revision.files else {
            let err = Diagnostic::no_manifest(&self.source.settings().manifest_path);
            reject_run(
                &store,
                run_id,
                started,
                "no manifest in this commit".into(),
                &[err],
            )
            .await;
            warn!("rejected: the commit has no manifest; the applied revision keeps running");
            return Ok(());
        };
        let checked = manifest::check_with(
            &files,
            &self.trust,
            manifest::Host {
                command: Some(&manifest::host_command_check(&self.trust)),
                runtime: Some(self.executor.runtime().kind().target()),
            },
        );
        let checked = match checked {
            Ok(c) => c,
            Err(diags) => {
                let errors = diags
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                reject_run(
                    &store,
                    run_id,
                    started,
                    format!(
                        "the manifest has {errors} error{}",
                        if errors == 1 { "" } else { "s" }
                    ),
                    &diags,
                )
                .await;
                for d in diags.iter().take(20) {
                    warn!(diagnostic = %d, "rejected commit");
                }
                return Ok(());
            }
        };
        record_stage(
            &store,
            run_id,
            Stage::Validate,
            StageStatus::Succeeded,
            started,
            None,
        )
        .await;

        // A commit that changes a server's spec forgets that server's failed spec.
        let applied = Applied {
            commit: head.to_owned(),
            checked,
        };
        let previous = self.set_applied(Some(applied));
        // What the servers this commit removes depended on: their removal goes in reverse.
        if let Some(prev) = &previous {
            self.executor.remember_dependencies(
                prev.checked
                    .manifest
                    .servers
                    .iter()
                    .map(|s| (s.id.as_str(), s.depends_on.as_slice())),
            );
        }
        let before = previous
            .as_ref()
            .filter(|p| p.commit != head)
            .map(|p| p.commit.clone());
        let now = head.to_owned();
        let written = store
            .call(move |s| {
                if let Some(before) = &before {
                    s.set_meta(PREVIOUS_KEY, before)?;
                }
                s.set_meta(APPLIED_KEY, &now)
            })
            .await;
        // Applied but not recorded, the commit would be forgotten at the next start (and
        // the revision before it put back): it is not applied until it can be recorded.
        if let Err(e) = written {
            let e = format!(
                "cannot record the applied revision: {}",
                crate::error_text::chain(&e)
            );
            warn!(error = %e, "not applying the commit until the store writes again");
            self.set_applied(previous);
            finish_run(&store, run_id, RunResult::Failed, Some(e.clone()), &[]).await;
            return Err(e);
        }
        if let (Some(prev), Some(now)) = (&previous, &self.applied) {
            let changed = servers_changed(&prev.checked, &now.checked);
            let forgotten = store
                .call(move |s| {
                    let mut forgotten = Vec::new();
                    for id in changed {
                        if s.clear_failed_versions(&id)? > 0 {
                            forgotten.push(id);
                        }
                    }
                    Ok(forgotten)
                })
                .await
                .unwrap_or_else(|e| {
                    // Only a courtesy: a changed spec is a new try anyway (`select` matches
                    // failed versions by spec).
                    warn!(error = %crate::error_text::chain(&e), "cannot forget the changed servers' failed versions");
                    Vec::new()
                });
            for server in forgotten {
                info!(server = %server, "the commit changes this server: its failed versions may be tried again");
            }
        }

        let started = Timestamp::now();
        let (result, outcomes) = self.converge(Some(run_id), RolloutTrigger::Commit).await;
        let plan_summary = match &result {
            Ok(converged) => {
                // The run keeps its plan as `mcp-orchestration plan` showed it.
                let lines = match &self.applied {
                    Some(now) => planned_servers(
                        &converged.plan,
                        &self.problems,
                        previous.as_ref().map(|p| &p.checked),
                        &now.checked,
                        &converged.observed,
                    ),
                    None => Vec::new(),
                };
                let summary = crate::reconcile::preview::summary(&lines);
                if let Err(e) = store.call(move |s| s.set_run_plan(run_id, &lines)).await {
                    warn!(error = %crate::error_text::chain(&e), "cannot record the run's plan");
                }
                summary
            }
            Err(e) => {
                record_stage(
                    &store,
                    run_id,
                    Stage::Plan,
                    StageStatus::Failed,
                    started,
                    Some(e.clone()),
                )
                .await;
                finish_run(&store, run_id, RunResult::Failed, Some(e.clone()), &[]).await;
                return Ok(());
            }
        };
        record_stage(
            &store,
            run_id,
            Stage::Plan,
            StageStatus::Succeeded,
            started,
            Some(plan_summary),
        )
        .await;
        drop(previous);
        let failures: Vec<String> = outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {}", o.server_id, crate::error_text::chain(e)))
            })
            .chain(
                self.problems
                    .iter()
                    .map(|p| format!("{}: {}", p.server_id, p.reason)),
            )
            .collect();
        record_stage(
            &store,
            run_id,
            Stage::Apply,
            if failures.is_empty() {
                StageStatus::Succeeded
            } else {
                StageStatus::Failed
            },
            started,
            Some(format!(
                "{} change(s), {} failed",
                outcomes.len(),
                failures.len()
            )),
        )
        .await;

        let started = Timestamp::now();
        let unverified = self.verify().await;
        record_stage(
            &store,
            run_id,
            Stage::Verify,
            if unverified.is_empty() {
                StageStatus::Succeeded
            } else {
                StageStatus::Failed
            },
            started,
            (!unverified.is_empty()).then(|| unverified.join("; ")),
        )
        .await;
        if failures.is_empty() && unverified.is_empty() {
            finish_run(&store, run_id, RunResult::Applied, None, &[]).await;
            info!("applied");
        } else {
            let reason = failures
                .into_iter()
                .chain(unverified)
                .collect::<Vec<_>>()
                .join("\n");
            warn!(reason = %reason, "applied with failures");
            finish_run(&store, run_id, RunResult::Failed, Some(reason), &[]).await;
        }
        Ok(())
    }

    /// Puts `applied` in force (or nothing) and tells the registry poller which
    /// repositories it now watches; returns the revision that was in force.
    fn set_applied(&mut self, applied: Option<Applied>) -> Option<Applied> {
        *self.in_force.write().unwrap_or_else(|p| p.into_inner()) = applied.clone().map(Arc::new);
        self.watched.set_images(
            applied
                .as_ref()
                .map(|a| watched_images(&a.checked))
                .unwrap_or_default(),
        );
        std::mem::replace(&mut self.applied, applied)
    }

    async fn recorded(&self) -> Result<Recorded, String> {
        read_recorded(&self.control.store).await
    }

    /// `f` over what every decision reads now: the applied manifest, the registry's tags
    /// (minus what a sync window holds), what runs and what `recorded` holds; `None`
    /// before a revision is in force.
    fn with_inputs<T>(
        &self,
        observed: &[Instance],
        recorded: &Recorded,
        f: impl FnOnce(&Inputs<'_>) -> T,
    ) -> Option<T> {
        let applied = self.applied.as_ref()?;
        let tags = self.watched.tags();
        let registry_held = self.registry_holds().into_keys().collect();
        Some(f(&Inputs {
            checked: &applied.checked,
            commit: &applied.commit,
            runtime: self.executor.runtime().kind(),
            observed,
            failed: &recorded.failed,
            pins: &recorded.pins,
            tags: &tags,
            registry_held: &registry_held,
        }))
    }

    /// The desired state now (see [`select`]).
    fn selection(&self, observed: &[Instance], recorded: &Recorded) -> Selection {
        self.with_inputs(observed, recorded, |inputs| {
            select(inputs, &|name| self.secrets.get(name))
        })
        .unwrap_or_default()
    }

    /// What to change now (see [`decide`]).
    fn decision(&self, observed: &[Instance], recorded: &Recorded) -> Decision {
        self.with_inputs(observed, recorded, |inputs| {
            decide(inputs, &recorded.held, &|name| self.secrets.get(name))
        })
        .unwrap_or_default()
    }

    /// Plans against what runs and applies the changes. Returns the plan with what it was
    /// made against (or why it could not be made) and each server's outcome.
    async fn converge(
        &mut self,
        run_id: Option<i64>,
        trigger: RolloutTrigger,
    ) -> (Result<Converged, String>, Vec<ServerOutcome>) {
        let observed = match self.executor.runtime().list().await {
            Ok(o) => o,
            Err(e) => return (Err(format!("cannot list instances: {e}")), Vec::new()),
        };
        let recorded = match self.recorded().await {
            Ok(r) => r,
            Err(e) => return (Err(e), Vec::new()),
        };
        let Decision {
            plan: p, problems, ..
        } = self.decision(&observed, &recorded);
        self.problems = problems;
        if p.is_noop() {
            return (Ok(Converged { plan: p, observed }), Vec::new());
        }
        info!(plan = %p.summary(), trigger = trigger.as_str(), "applying");
        let outcomes = self
            .executor
            .apply(&p, &ApplyContext { run_id, trigger })
            .await;
        self.retry_apply |= outcomes
            .iter()
            .any(|o| o.result.as_ref().is_err_and(ExecuteError::is_retryable));
        (Ok(Converged { plan: p, observed }), outcomes)
    }

    /// A poison commit got as far as being applied: the revision in force before it is
    /// put back (or none, leaving what runs alone), so converging does not redo it.
    async fn fall_back_from_poison(&mut self) {
        self.set_applied(None);
        let store = self.control.store.clone();
        let fallen_back = store
            .call(|s| {
                let previous = s.meta(PREVIOUS_KEY)?;
                s.set_meta(APPLIED_KEY, previous.as_deref().unwrap_or(""))?;
                Ok(previous)
            })
            .await;
        match fallen_back {
            Ok(Some(previous)) => self.load_applied(previous).await,
            Ok(None) => {}
            Err(e) => {
                warn!(error = %crate::error_text::chain(&e), "cannot read the previous revision")
            }
        }
    }

    /// Records that `head` is not run again: its runs died with the agent twice.
    async fn record_poison(&self, head: &str, trigger: Trigger, seen_at: Timestamp) {
        let reason = format!(
            "the agent died {POISON_AFTER} times while validating this commit; it is not run again (push a new commit to try again)"
        );
        warn!(revision = %short_commit(head), "{reason}");
        let run = NewRun {
            commit_id: head.to_owned(),
            author: None,
            message: None,
            committed_at: None,
            trigger: trigger.as_str().to_owned(),
            seen_at,
        };
        let recorded = self
            .control
            .store
            .call(move |s| {
                let id = s.begin_run(&run)?;
                s.finish_run(id, RunResult::Failed, Some(&reason), &[], Timestamp::now())
            })
            .await;
        if let Err(e) = recorded {
            warn!(error = %crate::error_text::chain(&e), "cannot record the poison commit's run");
        }
    }

    /// Servers that do not run their desired spec, with why. A runtime that cannot be
    /// listed is said so, not taken for an empty fleet.
    async fn verify(&mut self) -> Vec<String> {
        let observed = match self.executor.runtime().list().await {
            Ok(o) => o,
            Err(e) => {
                return vec![format!(
                    "cannot verify: the runtime cannot list its instances: {}",
                    crate::error_text::chain(&e)
                )];
            }
        };
        let recorded = match self.recorded().await {
            Ok(r) => r,
            Err(e) => return vec![format!("cannot verify: {e}")],
        };
        let selection = self.selection(&observed, &recorded);
        selection
            .desired
            .iter()
            .filter(|d| !selection.failed.contains_key(d.server_id()))
            .filter(|d| {
                !observed.iter().any(|i| {
                    i.server_id == d.server_id()
                        && i.is_running()
                        && i.spec_hash == d.spec.spec_hash
                })
            })
            .map(|d| format!("{} is not running {}", d.server_id(), d.spec.version))
            .collect()
    }

    /// Publishes the fleet view for the API, from what actually runs. When the runtime
    /// cannot be listed, what is unknown stays unknown: the last view (instances,
    /// endpoints) and the monitor's targets are kept, marked with the error, until the
    /// runtime answers again. An empty listing is never made up from a failure.
    async fn publish(&mut self, source_error: Option<String>) {
        let observed = match self.executor.runtime().list().await {
            Ok(observed) => observed,
            Err(e) => {
                let e = crate::error_text::chain(&e);
                warn!(error = %e, "cannot list the runtime's instances; keeping the last known fleet");
                let runtime_error = format!("the runtime cannot list its instances: {e}");
                self.keep_last_view(
                    source_error,
                    Some(runtime_error),
                    self.store_error.clone().map(|(_, e)| e),
                );
                return;
            }
        };
        match self.recorded().await {
            Ok(recorded) => {
                let (mut view, targets) = self.view(source_error, &observed, &recorded);
                view.store_error = self.store_error.clone().map(|(_, e)| e);
                view.observed = true;
                self.control.set_fleet(view);
                self.control.monitor.set_targets(targets);
            }
            Err(e) => {
                warn!(error = %e, "cannot read the state database; keeping the last known fleet");
                self.keep_last_view(source_error, None, Some(e));
            }
        }
    }

    /// Keeps the last fleet view (instances, endpoints, the monitor's targets) and marks
    /// it with what could not be read this time.
    fn keep_last_view(
        &self,
        source_error: Option<String>,
        runtime_error: Option<String>,
        store_error: Option<String>,
    ) {
        let mut view = self.control.fleet();
        view.source_error = source_error;
        view.runtime_error = runtime_error;
        view.store_error = store_error;
        view.last_sync = Some(Timestamp::now());
        self.control.set_fleet(view);
    }

    /// The fleet view for the API and the monitor's targets (see
    /// [`crate::fleet::deployment_view`]); the desired state it shows becomes the one
    /// restarts and recovery start from.
    fn view(
        &self,
        source_error: Option<String>,
        observed: &[Instance],
        recorded: &Recorded,
    ) -> (FleetView, Vec<crate::health::Target>) {
        let previous = self.control.fleet();
        let holds = self.registry_holds();
        let selection = self.selection(observed, recorded);
        self.control.set_desired(&selection.desired);
        // What a window holds: only the servers with a newer version waiting.
        let window_holds: BTreeMap<String, Held> = holds
            .into_iter()
            .filter_map(|(server, mut held)| {
                held.what = Some(selection.held_upgrades.get(&server)?.clone());
                Some((server, held))
            })
            .collect();
        let servers = self
            .applied
            .as_ref()
            .map_or(&[][..], |a| &a.checked.manifest.servers[..]);
        let profiles = self
            .applied
            .as_ref()
            .map_or(&[][..], |a| &a.checked.manifest.profiles[..]);
        let now = Timestamp::now();
        let (mut view, targets) = deployment_view(&ViewInputs {
            profiles,
            servers,
            applied_revision: self.applied.as_ref().map(|a| a.commit.clone()),
            head: self.last_head.clone(),
            source_error,
            selection: &selection,
            observed,
            held: &recorded.held,
            pins: &recorded.pins,
            window_holds: &window_holds,
            previous: &previous,
            now,
        });
        view.windows = self.windows.open(now);
        view.commit_held = self.commit_held.clone();
        (view, targets)
    }
}
