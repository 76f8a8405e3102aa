//! Results in git (`--write-notes`): after each run, a note on its commit (the result, the
//! stages, the servers the plan changed, the rollouts, a link to the run) pushed with the
//! notes ref. Its own task: a remote that refuses or does not answer is logged and retried
//! with backoff, and never holds a sync.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::source::{GitSource, short_commit};
use crate::store::{RolloutRecord, RunRecord, Store};

/// The longest wait between two tries to push the notes.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// At most this many notes wait for the remote; beyond, some are dropped (by commit id,
/// not age) so a remote that never accepts cannot grow the agent's memory.
const MAX_PENDING: usize = 1000;

/// Where the sync loop sends the commits whose run finished.
pub(super) type Finished = mpsc::UnboundedSender<String>;

pub(super) struct NotesWriter {
    pub source: GitSource,
    pub store: Store,
    /// `http://HOST:PORT` of the agent's API, for the link to the run.
    pub api_base: String,
    /// Pushes and failures, for `GET /metrics`.
    pub pushes: Arc<crate::metrics::Attempts>,
}

impl NotesWriter {
    /// Writes and pushes notes for the commits `finished` names until shutdown.
    pub async fn run(
        self,
        mut finished: mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                commit = finished.recv() => {
                    let Some(commit) = commit else { break };
                    match self.note_for(&commit).await {
                        Ok(Some(text)) => {
                            pending.insert(commit, text);
                        }
                        Ok(None) => {}
                        Err(e) => warn!(commit = %short_commit(&commit), error = %e, "cannot compose the commit's note"),
                    }
                    // A new note is a new try now, whatever the backoff.
                }
                _ = tokio::time::sleep(backoff), if failing => {}
            }
            if pending.is_empty() {
                continue;
            }
            while pending.len() > MAX_PENDING {
                pending.pop_first();
            }
            let notes: Vec<(String, String)> = pending
                .iter()
                .map(|(c, t)| (c.clone(), t.clone()))
                .collect();
            let source = self.source.clone();
            let pushed = tokio::task::spawn_blocking(move || source.publish_notes(&notes)).await;
            self.pushes.record(matches!(pushed, Ok(Ok(()))));
            match pushed {
                Ok(Ok(())) => {
                    info!(notes = pending.len(), "deploy results pushed as git notes");
                    pending.clear();
                    failing = false;
                    backoff = FIRST_BACKOFF;
                }
                Ok(Err(e)) => {
                    warn!(error = %crate::error_text::chain(&e), retry_in_ms = backoff.as_millis() as u64, "cannot push the deploy results' git notes; retrying");
                    if failing {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    failing = true;
                }
                Err(e) => {
                    warn!(error = %e, "the git notes task failed");
                    failing = true;
                }
            }
        }
    }

    /// The note of `commit`'s newest run, once it has finished.
    async fn note_for(&self, commit: &str) -> Result<Option<String>, String> {
        let c = commit.to_owned();
        let (run, rollouts) = self
            .store
            .call(move |s| {
                let run = s.run_for_commit(&c)?;
                let rollouts = match &run {
                    Some(run) => s
                        .rollouts(None, 500)?
                        .into_iter()
                        .filter(|r| r.run_id == Some(run.id))
                        .collect(),
                    None => Vec::new(),
                };
                Ok((run, rollouts))
            })
            .await
            .map_err(|e| crate::error_text::chain(&e))?;
        Ok(run
            .filter(|r| r.finished_at.is_some())
            .map(|r| note(&r, &rollouts, &self.api_base)))
    }
}

/// A run as a note: a header line, then what happened, for `git log --notes`.
pub(super) fn note(run: &RunRecord, rollouts: &[RolloutRecord], api_base: &str) -> String {
    let mut text = format!("mcp-orchestration: {} (run {})\n", run.result, run.id);
    if let Some(reason) = &run.reason {
        let _ = writeln!(text, "reason: {}", reason.replace('\n', "; "));
    }
    let _ = writeln!(
        text,
        "trigger: {}, seen {}{}",
        run.trigger,
        run.seen_at,
        run.finished_at
            .map(|f| format!(", finished {f}"))
            .unwrap_or_default()
    );
    let stages: Vec<String> = run
        .stages
        .iter()
        .map(|s| {
            format!(
                "{} {}{}",
                s.stage.as_str(),
                s.status.as_str(),
                s.detail
                    .as_deref()
                    .map(|d| format!(" ({})", d.replace('\n', "; ")))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !stages.is_empty() {
        let _ = writeln!(text, "stages: {}", stages.join(", "));
    }
    let changed: Vec<_> = run.plan.iter().filter(|l| l.changes).collect();
    if !changed.is_empty() {
        text.push_str("servers changed:\n");
        for l in changed {
            let _ = writeln!(
                text,
                "  {} {}: {} -> {}",
                l.action.as_str(),
                l.server_id,
                l.from_version.as_deref().unwrap_or("-"),
                l.to_version.as_deref().unwrap_or("-")
            );
        }
    }
    if !rollouts.is_empty() {
        text.push_str("rollouts:\n");
        for r in rollouts.iter().rev() {
            let _ = writeln!(
                text,
                "  #{} {} {} {} -> {}: {}",
                r.id,
                r.server_id,
                r.action,
                r.from_version.as_deref().unwrap_or("-"),
                r.to_version.as_deref().unwrap_or("-"),
                r.outcome
            );
        }
    }
    if !run.errors.is_empty() {
        text.push_str("errors:\n");
        for e in run.errors.iter().take(20) {
            let _ = writeln!(text, "  {e}");
        }
    }
    let _ = writeln!(text, "run: {api_base}/revisions/{}", run.commit_id);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Diagnostic, Severity};
    use crate::store::{PlannedAction, PlannedServer, RunResult, Stage, StageRecord, StageStatus};

    fn run(result: RunResult) -> RunRecord {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        RunRecord {
            id: 7,
            commit_id: "c0ffee".into(),
            author: None,
            message: Some("bump".into()),
            committed_at: None,
            trigger: "webhook".into(),
            seen_at: at,
            finished_at: Some(at),
            result,
            reason: None,
            errors: Vec::new(),
            plan: Vec::new(),
            stages: vec![StageRecord {
                stage: Stage::Validate,
                status: StageStatus::Failed,
                started_at: at,
                finished_at: Some(at),
                detail: None,
            }],
        }
    }

    #[test]
    fn a_rejected_run_names_its_errors_and_links_the_run() {
        let mut r = run(RunResult::Rejected);
        r.reason = Some("the manifest has 1 error".into());
        r.errors = vec![Diagnostic {
            severity: Severity::Error,
            file: "ecosystem-manifest.yaml".into(),
            line: 4,
            column: 14,
            path: "servers[0].version".into(),
            message: "`one` is not a semantic version".into(),
        }];
        let text = note(&r, &[], "http://127.0.0.1:7070");
        assert!(
            text.starts_with(
                "mcp-orchestration: rejected (run 7)\nreason: the manifest has 1 error\n"
            ),
            "{text}"
        );
        assert!(text.contains("stages: validate failed\n"), "{text}");
        assert!(
            text.contains("errors:\n  ecosystem-manifest.yaml:4:14: error: "),
            "{text}"
        );
        assert!(
            text.ends_with("run: http://127.0.0.1:7070/revisions/c0ffee\n"),
            "{text}"
        );
        assert!(!text.contains("servers changed"), "{text}");
    }

    #[test]
    fn only_the_plans_changes_are_listed() {
        let mut r = run(RunResult::Applied);
        let line = |id: &str, action, changes| PlannedServer {
            server_id: id.into(),
            action,
            from_version: Some("1.0.0".into()),
            to_version: Some("1.1.0".into()),
            changed_fields: Vec::new(),
            reason: None,
            changes,
        };
        r.plan = vec![
            line("a", PlannedAction::Update, true),
            line("b", PlannedAction::Keep, false),
        ];
        let text = note(&r, &[], "http://x");
        assert!(
            text.contains("servers changed:\n  update a: 1.0.0 -> 1.1.0\n"),
            "{text}"
        );
        assert!(!text.contains(" b:"), "{text}");
    }
}
