//! The typed rows the store reads and writes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::manifest::Diagnostic;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt(format!(concat!(stringify!($name), " `{}`"), other))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// How a run for a commit ended.
    RunResult {
        Running = "running",
        Applied = "applied",
        Rejected = "rejected",
        Failed = "failed",
        Interrupted = "interrupted",
    }
);

text_enum!(
    /// The stages of a run, in order.
    Stage {
        Fetch = "fetch",
        Validate = "validate",
        Plan = "plan",
        Apply = "apply",
        Verify = "verify",
    }
);

text_enum!(
    StageStatus {
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
    }
);

text_enum!(
    RolloutAction {
        Deploy = "deploy",
        Update = "update",
        Remove = "remove",
        Restart = "restart",
    }
);

text_enum!(
    RolloutOutcome {
        InProgress = "in_progress",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled_back",
        Interrupted = "interrupted",
    }
);

#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub commit_id: String,
    pub author: Option<String>,
    pub message: Option<String>,
    pub committed_at: Option<Timestamp>,
    /// What woke the sync: `startup`, `poll`, `webhook`, `watch`.
    pub trigger: String,
    pub seen_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StageRecord {
    pub stage: Stage,
    pub status: StageStatus,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunRecord {
    pub id: i64,
    pub commit_id: String,
    pub author: Option<String>,
    pub message: Option<String>,
    pub committed_at: Option<Timestamp>,
    pub trigger: String,
    pub seen_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub result: RunResult,
    pub reason: Option<String>,
    pub errors: Vec<Diagnostic>,
    /// What the run's plan did to each server (empty for a run that did not get as far
    /// as planning, and for runs recorded before plans were kept).
    #[serde(default)]
    pub plan: Vec<PlannedServer>,
    pub stages: Vec<StageRecord>,
}

pub(super) struct RawRun {
    pub id: i64,
    pub commit_id: String,
    pub author: Option<String>,
    pub message: Option<String>,
    pub committed_at: Option<String>,
    pub trigger: String,
    pub seen_at: String,
    pub finished_at: Option<String>,
    pub result: String,
    pub reason: Option<String>,
    pub errors: Option<String>,
    pub plan: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewRollout {
    pub run_id: Option<i64>,
    pub server_id: String,
    /// `commit`, `registry`, `operator` or `recovery`.
    pub trigger: String,
    pub action: RolloutAction,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub image: Option<String>,
    pub command: Option<String>,
    pub revision: Option<String>,
    /// `beside` (zero downtime) or `stop_then_start` (fixed host port).
    pub strategy: Option<String>,
    pub started_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RolloutEnd {
    pub outcome: RolloutOutcome,
    pub reason: Option<String>,
    pub instance_id: Option<String>,
    pub endpoint: Option<String>,
    pub finished_at: Timestamp,
    pub rolled_back_to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolloutRecord {
    pub id: i64,
    pub run_id: Option<i64>,
    pub server_id: String,
    pub trigger: String,
    pub action: RolloutAction,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub image: Option<String>,
    pub command: Option<String>,
    pub revision: Option<String>,
    pub strategy: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub outcome: RolloutOutcome,
    pub reason: Option<String>,
    pub instance_id: Option<String>,
    pub endpoint: Option<String>,
    pub digest: Option<String>,
    /// The version a failed rollout restored.
    pub rolled_back_to: Option<String>,
    /// How the new version's tools differ from the running version's (the tool-set guard);
    /// absent when nothing was compared.
    pub tool_diff: Option<ToolDiff>,
}

/// How a version's tools differ from its predecessor's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ToolDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<ToolChange>,
}

/// One tool offered by both versions, but not the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ToolChange {
    pub name: String,
    /// Whether a call valid before may now be refused.
    pub breaking: bool,
    /// What changed, e.g. "`times` is now required".
    pub why: Vec<String>,
}

/// A version that failed its health gate on a server: not tried again until the server's
/// manifest entry changes or an operator retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FailedVersion {
    pub server_id: String,
    pub version: String,
    pub spec_hash: String,
    pub reason: String,
    pub rollout_id: Option<i64>,
    pub failed_at: Timestamp,
}

/// An operator's rollback holds a server at a version (auto-update paused) until resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pin {
    pub server_id: String,
    pub version: String,
    pub reason: String,
    pub pinned_at: Timestamp,
}

/// One step of a rollout's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolloutStep {
    pub at: Timestamp,
    pub step: String,
    pub detail: Option<String>,
}

/// One health probe seen during a rollout's gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolloutProbe {
    pub at: Timestamp,
    pub outcome: String,
    pub detail: String,
    pub latency_ms: f64,
}

/// Something that happened to a server's health: a state transition, a recovery attempt and
/// its outcome, an operator override.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthEvent {
    pub id: i64,
    pub server_id: String,
    pub at: Timestamp,
    /// `transition`, `recovery`, `override`, `version_mismatch`, `restart_detected`.
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub detail: String,
    pub instance_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewHealthEvent {
    pub server_id: String,
    pub at: Timestamp,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub detail: String,
    pub instance_id: Option<String>,
}

/// What a plan does to one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlannedAction {
    /// Nothing runs yet: it is started.
    Deploy,
    /// A new version or spec is started and, once healthy, replaces what runs.
    Update,
    /// It left the manifest: its instances stop.
    Remove,
    /// What runs matches.
    Keep,
    /// Not touched: an operator stopped it, or this exact spec failed before.
    LeaveAlone,
    /// It cannot run on this agent (a missing secret, another runtime): what runs of it
    /// stays as it is.
    CannotRun,
}

impl PlannedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PlannedAction::Deploy => "deploy",
            PlannedAction::Update => "update",
            PlannedAction::Remove => "remove",
            PlannedAction::Keep => "keep",
            PlannedAction::LeaveAlone => "leave_alone",
            PlannedAction::CannotRun => "cannot_run",
        }
    }
}

/// One server's line of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlannedServer {
    pub server_id: String,
    pub action: PlannedAction,
    /// The version(s) running now, comma-separated when more than one does.
    pub from_version: Option<String>,
    /// The version it will run (what the update policy resolves to now).
    pub to_version: Option<String>,
    /// The manifest fields that differ from the applied manifest's (`docker.image`,
    /// `health_check.interval_seconds`, `version`, ...), and `update_policy` when the
    /// policy it names changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
    /// Why it is left alone or cannot run, or what else happens (leftover instances removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether carrying it out changes what runs.
    pub changes: bool,
}
