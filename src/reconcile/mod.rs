//! Converging the fleet: which version each server runs (`select`, pure), what should run
//! (`desired`, pure), what to change (`plan`, pure), whether a version's tools break
//! clients (`toolset`, pure), and carrying a plan out (`execute`),
//! serialized per server and concurrent across servers.
//!
//! `select`, `desired` and `plan` never do I/O; `execute` never decides what should run.

pub mod desired;
pub mod execute;
pub mod plan;
pub mod select;
pub mod toolset;

pub use desired::{Desired, DesiredProblem, desired_state};
pub use plan::{Action, Plan, plan};
pub use select::{Inputs, Selection, select, watched_images};
