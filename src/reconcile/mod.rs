//! Converging the fleet: which version each server runs (`select`, pure), what should run
//! (`desired`, pure), what to change (`plan`, pure; `decide` puts the three together for a
//! sync and for a plan shown before a push, `preview` tells it per server), whether a
//! version's tools break clients (`toolset`, pure), and carrying a plan out (`execute`),
//! serialized per server and concurrent across servers.
//!
//! Only `execute` does I/O, and it never decides what should run.

pub mod decide;
pub mod desired;
pub mod execute;
pub mod plan;
pub mod preview;
pub mod select;
pub mod toolset;

pub use decide::{Decision, decide};
pub use desired::{Desired, DesiredProblem, desired_state};
pub use plan::{Action, Plan, plan};
pub use preview::{PlannedAction, PlannedServer, planned_servers, servers_changed};
pub use select::{Inputs, Selection, select, watched_images};
