//! Health: probing a server the way the health standard says, and (later) the state
//! machine, the monitor loop and recovery. Probes never deploy anything.

pub mod monitor;
pub mod outcome;
pub mod probe;
pub mod state;

pub use monitor::{
    AlternateHealth, Failover, Monitor, ProbeSample, ServerHealth, Target, TransitionEvent,
};
pub use outcome::{ProbeOutcome, ProbeResult};
pub use probe::Prober;
pub use state::{HealthState, Thresholds, Tracker, Transition};
