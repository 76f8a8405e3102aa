//! The health state machine, pure: probe results and runtime events in, transitions out.
//!
//! From the seed: healthy → degraded on 1 failure; degraded → unhealthy on
//! `failure_threshold` consecutive failures; unhealthy → degraded on 1 success; degraded →
//! healthy on `success_threshold` consecutive successes. Plus `unknown` before the first
//! probe, `starting` while a rollout's gate owns the server, and `failed` once recovery has
//! given up (it stays monitored: a success moves it to degraded). An answer saying
//! `degraded` keeps a server degraded without counting as a failure. An instance that exits
//! is unhealthy at once.

use serde::{Deserialize, Serialize};

use super::outcome::ProbeOutcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Unknown,
    Starting,
    Healthy,
    Degraded,
    Unhealthy,
    Failed,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<HealthState> {
        Some(match s {
            "unknown" => HealthState::Unknown,
            "starting" => HealthState::Starting,
            "healthy" => HealthState::Healthy,
            "degraded" => HealthState::Degraded,
            "unhealthy" => HealthState::Unhealthy,
            "failed" => HealthState::Failed,
            _ => return None,
        })
    }

    /// Whether a gateway should route to it.
    pub fn serves(self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::Degraded)
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub failure: u32,
    pub success: u32,
}

/// A change of state and what caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    pub cause: String,
}

/// One server's health: its state and the consecutive counts that move it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    pub state: HealthState,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: HealthState::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
        }
    }
}

impl Tracker {
    fn go(&mut self, to: HealthState, cause: impl Into<String>) -> Option<Transition> {
        if self.state == to {
            return None;
        }
        let from = std::mem::replace(&mut self.state, to);
        Some(Transition {
            from,
            to,
            cause: cause.into(),
        })
    }

    /// Feeds one probe result; `detail` explains it in words.
    pub fn observe(
        &mut self,
        outcome: ProbeOutcome,
        detail: &str,
        t: Thresholds,
    ) -> Option<Transition> {
        use HealthState::*;
        if self.state == Starting {
            // A rollout's gate owns the server; the monitor takes over when it ends.
            return None;
        }
        if outcome.is_success() {
            self.consecutive_failures = 0;
            self.consecutive_successes += 1;
            let n = self.consecutive_successes;
            return match self.state {
                Unknown | Healthy => self.go(Healthy, detail),
                Unhealthy | Failed if t.success <= 1 => {
                    self.go(Healthy, format!("{n} successful probe: {detail}"))
                }
                Unhealthy | Failed => self.go(Degraded, format!("1 successful probe: {detail}")),
                Degraded if n >= t.success => {
                    self.go(Healthy, format!("{n} successful probes in a row: {detail}"))
                }
                Degraded | Starting => None,
            };
        }
        self.consecutive_successes = 0;
        if outcome == ProbeOutcome::Degraded {
            // Neither a success nor a failure: the server says it is degraded.
            self.consecutive_failures = 0;
            return match self.state {
                Unknown | Healthy | Unhealthy | Failed => self.go(Degraded, detail),
                Degraded | Starting => None,
            };
        }
        self.consecutive_failures += 1;
        let n = self.consecutive_failures;
        match self.state {
            Failed | Unhealthy => None,
            _ if n >= t.failure => self.go(
                Unhealthy,
                format!(
                    "{n} failed probe{} in a row: {detail}",
                    if n == 1 { "" } else { "s" }
                ),
            ),
            Unknown | Healthy => self.go(Degraded, format!("1 failed probe: {detail}")),
            Degraded | Starting => None,
        }
    }

    /// The instance exited (or was OOM-killed): unhealthy at once, whatever the probes say.
    pub fn exited(&mut self, cause: &str) -> Option<Transition> {
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.max(1);
        if self.state == HealthState::Failed {
            return None;
        }
        self.go(HealthState::Unhealthy, cause)
    }

    /// Recovery gave up.
    pub fn give_up(&mut self, cause: &str) -> Option<Transition> {
        self.go(HealthState::Failed, cause)
    }

    /// A new instance serves the server (rollout, recovery): counts start over.
    pub fn restart(&mut self, state: HealthState, cause: &str) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.consecutive_successes = 0;
        self.go(state, cause)
    }
}

#[cfg(test)]
mod tests {
    use super::HealthState::*;
    use super::*;

    const T: Thresholds = Thresholds {
        failure: 3,
        success: 2,
    };

    fn run(t: &mut Tracker, outcomes: &[ProbeOutcome]) -> Vec<(HealthState, HealthState)> {
        outcomes
            .iter()
            .filter_map(|o| t.observe(*o, "probe", T))
            .map(|tr| (tr.from, tr.to))
            .collect()
    }

    use ProbeOutcome::{Degraded as D, Healthy as H, Unhealthy as U, Unreachable as X};

    #[test]
    fn the_seed_transitions() {
        let mut t = Tracker::default();
        assert_eq!(run(&mut t, &[H]), [(Unknown, Healthy)]);
        // healthy → degraded on 1 failure; degraded → unhealthy on 3 consecutive failures
        assert_eq!(run(&mut t, &[U, X]), [(Healthy, Degraded)]);
        assert_eq!(run(&mut t, &[U]), [(Degraded, Unhealthy)]);
        assert_eq!(run(&mut t, &[U, U, X]), []);
        // unhealthy → degraded on 1 success; degraded → healthy on 2 consecutive successes
        assert_eq!(run(&mut t, &[H]), [(Unhealthy, Degraded)]);
        assert_eq!(run(&mut t, &[H]), [(Degraded, Healthy)]);
    }

    #[test]
    fn exactly_failure_threshold_failures_make_it_unhealthy() {
        for threshold in 1..=5 {
            let t = Thresholds {
                failure: threshold,
                success: 2,
            };
            let mut tr = Tracker::default();
            tr.observe(H, "", t);
            let mut went_unhealthy_at = None;
            for i in 1..=6 {
                if let Some(x) = tr.observe(U, "", t)
                    && x.to == Unhealthy
                {
                    went_unhealthy_at = Some(i);
                }
            }
            assert_eq!(went_unhealthy_at, Some(threshold), "threshold {threshold}");
        }
    }

    #[test]
    fn an_interrupted_run_of_failures_starts_over() {
        let mut t = Tracker::default();
        run(&mut t, &[H]);
        assert_eq!(run(&mut t, &[U, U, H, U, U]), [(Healthy, Degraded)]);
        assert_eq!(t.state, Degraded);
        assert_eq!(run(&mut t, &[U]), [(Degraded, Unhealthy)]);
    }

    #[test]
    fn a_degraded_answer_keeps_it_degraded_without_counting_as_a_failure() {
        let mut t = Tracker::default();
        run(&mut t, &[H]);
        assert_eq!(run(&mut t, &[D, D, D, D, D]), [(Healthy, Degraded)]);
        assert_eq!(t.consecutive_failures, 0);
        assert_eq!(run(&mut t, &[H, H]), [(Degraded, Healthy)]);
    }

    #[test]
    fn an_exit_is_unhealthy_at_once() {
        let mut t = Tracker::default();
        run(&mut t, &[H]);
        let tr = t.exited("exited with code 137").unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.cause.as_str()),
            (Healthy, Unhealthy, "exited with code 137")
        );
    }

    #[test]
    fn failed_stays_failed_until_it_succeeds_then_heals_through_degraded() {
        let mut t = Tracker::default();
        run(&mut t, &[H, U, U, U]);
        t.give_up("3 recovery attempts failed").unwrap();
        assert_eq!(run(&mut t, &[U, X, U]), []);
        assert_eq!(t.state, Failed);
        assert_eq!(
            run(&mut t, &[H, H]),
            [(Failed, Degraded), (Degraded, Healthy)]
        );
    }

    #[test]
    fn the_gate_owns_a_starting_server() {
        let mut t = Tracker::default();
        t.restart(Starting, "rollout").unwrap();
        assert_eq!(run(&mut t, &[U, U, U, U]), []);
        assert_eq!(
            t.restart(Unknown, "rolled out").map(|x| x.to),
            Some(Unknown)
        );
        assert_eq!(run(&mut t, &[H]), [(Unknown, Healthy)]);
    }

    #[test]
    fn a_success_threshold_of_one_heals_in_one_step() {
        let t1 = Thresholds {
            failure: 1,
            success: 1,
        };
        let mut t = Tracker::default();
        assert_eq!(t.observe(U, "", t1).map(|x| x.to), Some(Unhealthy));
        assert_eq!(t.observe(H, "", t1).map(|x| x.to), Some(Healthy));
    }
}
