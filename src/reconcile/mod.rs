//! Converging the fleet: what should run (`desired`), what to change (`plan`, pure), and
//! carrying a plan out (`execute`), serialized per server and concurrent across servers.
//!
//! `plan` never does I/O; `execute` never decides what should run.

pub mod desired;
pub mod execute;
pub mod plan;

pub use desired::{Desired, DesiredProblem, desired_state};
pub use plan::{Action, Plan, plan};
