//! A rollout's record in the store: its start (what it replaces, how, why), each step of
//! its timeline, and its end. A record that cannot be written is logged and never stops
//! the rollout itself.

use jiff::Timestamp;
use tracing::warn;

use super::{ApplyContext, Executor};
use crate::reconcile::Desired;
use crate::runtime::Instance;
use crate::store::{NewRollout, RolloutAction, RolloutEnd, RolloutOutcome};

impl Executor {
    pub(super) async fn record_start(
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
            trigger: ctx.trigger.as_str().to_owned(),
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

    pub(super) async fn record_end(
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

    pub(super) async fn step(&self, id: Option<i64>, step: &str, detail: Option<String>) {
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
}
