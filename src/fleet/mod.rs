//! The transport-neutral control layer: the live fleet view (a `tokio::sync::watch`
//! channel), the desired snapshot and the sync loop's wake-ups, and the operator's actions
//! and reads with their own error type. The HTTP API and the MCP tools are adapters over
//! [`Control`]; the gateway publisher follows its view; the agent builds it. Nothing here
//! knows about HTTP, MCP or the agent that owns it.

mod actions;
mod control;
mod deployment;
mod error;
mod plan;
mod reads;
mod view;

pub use actions::{
    DeployRequested, FORCEABLE, MAX_OVERRIDE_SECONDS, Overridden, RestartRequested, Resumed,
    RolledBack, Stopped,
};
pub use control::{CallCounts, Control, Trigger};
pub use deployment::{ViewInputs, deployment_view};
pub use error::{ControlError, Missing};
pub use plan::{MAX_POLICY_FILES, PlanFile, PlanFiles, PlanReport, PlanRequest, Planner};
pub use reads::{
    EVENTS_LIMIT, EventPage, HealthEventPage, HealthHistory, HealthReport, HealthStatus,
    MonitoredHealth, ROLLOUTS_LIMIT, RevisionPage, RolloutDetail, RolloutPage, UnmonitoredHealth,
    after, limit,
};
pub use view::{
    Fleet, FleetView, GatewayCalls, ServerView, TaskView, follow_failovers, on_rollout_phase,
};
