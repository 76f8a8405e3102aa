//! The executor's decisions about a failed start, against a runtime that fails on purpose
//! (a fake is fine here: these are the executor's rules, not a claim about Docker) and a
//! real SQLite store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{ApplyContext, ExecuteError, Executor, RolloutTrigger};
use crate::reconcile::{desired_state, plan};
use crate::runtime::{Instance, InstanceSpec, Runtime, RuntimeError, RuntimeEvent, RuntimeKind};
use crate::store::{RolloutOutcome, Store};

/// A runtime with nothing running whose every start fails with `error`.
struct FailingStart(RuntimeError);

#[async_trait]
impl Runtime for FailingStart {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }
    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn start(&self, _: &InstanceSpec) -> Result<Instance, RuntimeError> {
        Err(self.0.clone())
    }
    async fn stop(&self, _: &str, _: Duration) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn remove(&self, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn logs_tail(&self, _: &str, _: usize) -> Result<String, RuntimeError> {
        Ok(String::new())
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent> {
        tokio::sync::broadcast::channel(1).1
    }
}

/// Deploys one new server through a runtime whose start fails with `error`.
async fn deploy_with(error: RuntimeError) -> (Result<(), ExecuteError>, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let checked = crate::manifest::checked_for_tests(
        "version: \"1.1\"\nservers:\n  - id: one\n    version: \"1.0.0\"\n    process: { command: /opt/mcp/one }\n",
    );
    let (desired, _) = desired_state(
        &checked,
        RuntimeKind::Process,
        "c0ffee",
        &|s| s.version.clone(),
        &|_| None,
    );
    let executor = Executor::new(Arc::new(FailingStart(error)), store.clone(), 1);
    let ctx = ApplyContext {
        run_id: None,
        trigger: RolloutTrigger::Commit,
    };
    let mut outcomes = executor
        .apply(&plan(&desired, &[], &BTreeMap::new()), &ctx)
        .await;
    assert_eq!(outcomes.len(), 1);
    let result = outcomes.remove(0).result.map(|_| ());
    (result, store, dir)
}

#[tokio::test]
async fn a_runtime_that_is_away_fails_the_rollout_without_blaming_the_version() {
    let (result, store, _dir) = deploy_with(RuntimeError::Unavailable {
        runtime: "docker",
        message: "the daemon is restarting".into(),
    })
    .await;
    let e = result.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(
        crate::error_text::chain(&e).contains("the daemon is restarting"),
        "{e}"
    );
    assert!(store.failed_versions(None).unwrap().is_empty());
    let rollouts = store.rollouts(Some("one"), 10).unwrap();
    assert_eq!(rollouts[0].outcome, RolloutOutcome::Failed);
}

#[tokio::test]
async fn a_start_the_spec_itself_breaks_is_remembered_as_a_failed_version() {
    let (result, store, _dir) = deploy_with(RuntimeError::Start {
        server: "one".into(),
        version: semver::Version::new(1, 0, 0),
        message: "no such file".into(),
    })
    .await;
    let e = result.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(matches!(e, ExecuteError::Failed(_)), "{e:?}");
    let failed = store.failed_versions(None).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].version, "1.0.0");
}
