//! The tool-set guard: a new version must offer every tool the running version offers,
//! with input schemas that accept every call they accepted before, unless the server's
//! update policy says `allow_breaking_tool_changes`. It runs after the health gate, before
//! any call moves to the new instance, and fails the rollout like the gate does.

use tracing::warn;

use super::Executor;
use crate::manifest::Transport;
use crate::reconcile::Desired;
use crate::reconcile::toolset::{self, ToolShape};
use crate::runtime::Instance;
use crate::store::RolloutAction;

impl Executor {
    /// The running version's tools, listed before the new version starts (a fixed port
    /// stops the old instance first). `None` when there is nothing to compare: no guard, a
    /// restart (the same version), no running predecessor, a return to an older version
    /// (a rollback: the tools it lacks are the ones its successor added), or a predecessor
    /// that cannot list its tools (recorded as `tools_unchecked`).
    pub(super) async fn tools_before(
        &self,
        desired: &Desired,
        previous: Option<&Instance>,
        action: RolloutAction,
        id: Option<i64>,
    ) -> Option<Vec<ToolShape>> {
        let lister = self.tool_lister.as_ref()?;
        if action == RolloutAction::Restart || desired.transport != Transport::StreamableHttp {
            return None;
        }
        let previous = previous?;
        if desired.spec.version < previous.version {
            self.step(
                id,
                "tools_unchecked",
                Some(format!(
                    "{} is older than the running {}: a rollback is not held to its successor's tools",
                    desired.spec.version, previous.version
                )),
            )
            .await;
            return None;
        }
        let url = mcp_url(desired, previous)?;
        match lister(url).await {
            Ok(tools) => Some(tools),
            Err(e) => {
                warn!(server = desired.server_id(), error = %e, "cannot list the running version's tools");
                self.step(
                    id,
                    "tools_unchecked",
                    Some(format!(
                        "the running version's tools could not be listed, so the new version's are not compared: {e}"
                    )),
                )
                .await;
                None
            }
        }
    }

    /// Compares the new instance's tools with `before`, records the difference, and fails
    /// with `tools_removed` or `tools_changed` when it breaks clients and the policy does
    /// not allow that.
    pub(super) async fn tool_guard(
        &self,
        desired: &Desired,
        before: Option<Vec<ToolShape>>,
        new: &Instance,
        id: Option<i64>,
    ) -> Result<(), String> {
        let (Some(before), Some(lister)) = (before, self.tool_lister.as_ref()) else {
            return Ok(());
        };
        let Some(url) = mcp_url(desired, new) else {
            return Ok(());
        };
        // It passed its health gate; a listing that fails now is more likely a passing
        // fault than a broken version, and a failed version is remembered for good.
        let after = match lister(url).await {
            Ok(tools) => tools,
            Err(e) => {
                warn!(server = desired.server_id(), error = %e, "cannot list the new version's tools");
                self.step(
                    id,
                    "tools_unchecked",
                    Some(format!(
                        "the new version's tools could not be listed, so they are not compared: {e}"
                    )),
                )
                .await;
                return Ok(());
            }
        };
        let diff = toolset::diff(&before, &after);
        if let Some(rid) = id {
            let recorded = diff.clone();
            if let Err(e) = self
                .store
                .call(move |s| s.set_rollout_tool_diff(rid, &recorded))
                .await
            {
                warn!(error = %crate::error_text::chain(&e), "cannot record the tool diff");
            }
        }
        self.step(id, "tools", Some(toolset::summary(&diff))).await;
        match toolset::verdict(&diff) {
            None => Ok(()),
            Some(breaking) if desired.policy.allow_breaking_tool_changes => {
                self.step(
                    id,
                    "tools_allowed",
                    Some(format!("allow_breaking_tool_changes: {breaking}")),
                )
                .await;
                Ok(())
            }
            Some(breaking) => Err(breaking),
        }
    }
}

fn mcp_url(desired: &Desired, instance: &Instance) -> Option<String> {
    Some(format!("{}{}", instance.base_url()?, desired.mcp_path))
}
