//! The agent's [`Planner`]: a plan made exactly as the sync loop would make it for a new
//! commit — the same validation (the agent's trust policy, this host's runtime), the same
//! store reads, tags, secrets and listing, and the same [`decide`] — with nothing applied.

use std::sync::Arc;

use super::registry_poll::Watched;
use super::secrets::Secrets;
use super::sync::{InForce, read_recorded};
use crate::fleet::{ControlError, Missing, PlanReport, PlanRequest, Planner};
use crate::manifest::policy::TrustPolicy;
use crate::manifest::{self, Diagnostic, RepoFiles};
use crate::reconcile::execute::Executor;
use crate::reconcile::preview::summary;
use crate::reconcile::{Inputs, decide, planned_servers, servers_changed, watched_images};
use crate::source::{GitError, GitSource};
use crate::store::Store;

pub(super) struct Previewer {
    pub source: GitSource,
    pub trust: TrustPolicy,
    pub secrets: Secrets,
    pub watched: Arc<Watched>,
    pub in_force: InForce,
    pub store: Store,
    pub executor: Executor,
    /// The operator's sync windows, and the control whose operator releases they honour.
    pub windows: Arc<crate::sync_windows::SyncWindows>,
    pub control: Arc<crate::fleet::Control>,
}

impl Previewer {
    /// The files of `rev` in the mirror, and its full id.
    async fn commit_files(&self, rev: String) -> Result<(String, Option<RepoFiles>), ControlError> {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || {
            let commit = source.resolve(&rev).map_err(|e| match e {
                GitError::NoCommit { .. } => ControlError::not_found(Missing::Commit, &rev),
                e => ControlError::Internal(crate::error_text::chain(&e)),
            })?;
            let revision = source
                .revision(&commit)
                .map_err(|e| ControlError::Internal(crate::error_text::chain(&e)))?;
            Ok((revision.commit, revision.files))
        })
        .await
        .map_err(|e| ControlError::Internal(format!("the git task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Planner for Previewer {
    async fn plan(&self, request: PlanRequest) -> Result<PlanReport, ControlError> {
        let applied = self
            .in_force
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let applied_commit = applied.as_ref().map(|a| a.commit.clone());
        let (commit, files) = match request {
            PlanRequest::Commit { commit: rev } => {
                let (commit, files) = self.commit_files(rev).await?;
                let Some(files) = files else {
                    let missing = Diagnostic::no_manifest(&self.source.settings().manifest_path);
                    return Ok(PlanReport::rejected(
                        Some(commit),
                        applied_commit,
                        vec![missing],
                    ));
                };
                (Some(commit), files)
            }
            PlanRequest::Files { files } => (None, files.into_repo_files()?),
        };
        let runtime = self.executor.runtime();
        let checked = match manifest::check_with(
            &files,
            &self.trust,
            manifest::Host {
                command: Some(&manifest::host_command_check(&self.trust)),
                runtime: Some(runtime.kind().target()),
            },
        ) {
            Ok(c) => c,
            Err(diagnostics) => {
                return Ok(PlanReport::rejected(commit, applied_commit, diagnostics));
            }
        };
        let observed = runtime.list().await.map_err(|e| {
            ControlError::Internal(format!(
                "cannot list instances: {}",
                crate::error_text::chain(&e)
            ))
        })?;
        let mut recorded = read_recorded(&self.store)
            .await
            .map_err(ControlError::Internal)?;
        let before = applied.as_ref().map(|a| &a.checked);
        // Applying a commit forgets the failed versions of the servers it changes.
        if let Some(before) = before {
            let changed = servers_changed(before, &checked);
            recorded.failed.retain(|f| !changed.contains(&f.server_id));
        }
        let tags = self.watched.tags();
        // A plan waits for what the sync windows hold, as the sync loop does.
        let registry_held = super::sync::registry_holds(
            &self.windows,
            &checked,
            &self.control,
            jiff::Timestamp::now(),
        )
        .into_keys()
        .collect();
        let planned = commit
            .clone()
            .or_else(|| applied_commit.clone())
            .unwrap_or_default();
        let decision = decide(
            &Inputs {
                checked: &checked,
                commit: &planned,
                runtime: runtime.kind(),
                observed: &observed,
                failed: &recorded.failed,
                pins: &recorded.pins,
                tags: &tags,
                registry_held: &registry_held,
            },
            &recorded.held,
            &|name| self.secrets.get(name),
        );
        let servers = planned_servers(
            &decision.plan,
            &decision.problems,
            before,
            &checked,
            &observed,
        );
        let notes = watched_images(&checked)
            .into_iter()
            .filter(|image| !tags.contains_key(image))
            .map(|image| {
                format!(
                    "the registry poller has not read the tags of {image} yet: its servers are planned at the manifest's version, and may move once it has"
                )
            })
            .chain(decision.held_upgrades.iter().map(|(server, version)| {
                format!("a sync window holds {server}'s upgrade to {version}: it is planned as it runs")
            }))
            .collect();
        Ok(PlanReport {
            commit,
            applied_commit,
            valid: true,
            changes: servers.iter().filter(|s| s.changes).count(),
            summary: summary(&servers),
            diagnostics: checked.warnings.clone(),
            servers,
            notes,
        })
    }
}
