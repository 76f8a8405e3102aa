//! `decide`: what one sync changes, from everything it read. The sync loop and
//! `mcp-orchestration plan` both call it, so a plan shown before a push is the plan the
//! push runs. Pure.

use std::collections::BTreeMap;

use super::desired::{Desired, DesiredProblem};
use super::plan::{Plan, plan};
use super::select::{Inputs, Selection, select};

/// The plan of one sync, and what an operator should know beside it.
#[derive(Debug, Default)]
pub struct Decision {
    pub plan: Plan,
    pub desired: Vec<Desired>,
    /// Servers that cannot run here, and why: left as they run, neither started nor removed.
    pub problems: Vec<DesiredProblem>,
    /// Newer versions that policies with `auto_update: false` only report.
    pub update_available: BTreeMap<String, String>,
    /// Newer versions an operator's sync window holds back: server → version.
    pub held_upgrades: BTreeMap<String, String>,
}

/// The plan under `inputs`: each server at its selected version, except the servers an
/// operator stopped (`held`) and those whose spec already failed exactly as it is now,
/// which are left alone; servers that cannot run here keep what runs.
pub fn decide(
    inputs: &Inputs<'_>,
    held: &[String],
    secret: &dyn Fn(&str) -> Option<String>,
) -> Decision {
    let Selection {
        desired,
        problems,
        update_available,
        failed,
        held_upgrades,
    } = select(inputs, secret);
    let mut leave_alone: BTreeMap<String, String> = held
        .iter()
        .map(|server| (server.clone(), "stopped by an operator".to_owned()))
        .collect();
    for (server, reason) in failed {
        leave_alone.entry(server).or_insert_with(|| {
            format!("{reason}; not retried until the manifest changes this server or an operator retries")
        });
    }
    let observed: Vec<_> = inputs
        .observed
        .iter()
        .filter(|i| !problems.iter().any(|p| p.server_id == i.server_id))
        .cloned()
        .collect();
    Decision {
        plan: plan(&desired, &observed, &leave_alone),
        desired,
        problems,
        update_available,
        held_upgrades,
    }
}
