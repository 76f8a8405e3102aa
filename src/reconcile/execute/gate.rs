//! The health gate a new instance must pass before it serves: probes until enough succeed
//! in a row, within the policy's progress deadline.

use std::time::Duration;

use jiff::Timestamp;
use tracing::warn;

use super::Executor;
use crate::health::ProbeOutcome;
use crate::reconcile::Desired;
use crate::runtime::Instance;

impl Executor {
    /// Waits until the new instance is healthy: `success_threshold` healthy probes in a row
    /// within the policy's progress deadline. Before the first answer a refused connection
    /// only means "still starting"; an answer saying unhealthy `failure_threshold` times in a
    /// row, an exited instance or the deadline fails the gate. Probes are recorded on the
    /// rollout `id`.
    pub(super) async fn health_gate(
        &self,
        desired: &Desired,
        instance: &Instance,
        id: Option<i64>,
    ) -> Result<(), String> {
        let Some(addr) = instance.addr() else {
            return Err("the runtime reported no host port".to_owned());
        };
        let h = &desired.health;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs_f64(desired.policy.progress_deadline_seconds);
        // During the gate probes run at least every second, so a 30 s interval does not make
        // every rollout take a minute.
        let spacing = Duration::from_secs_f64(h.interval_seconds.min(1.0));
        let timeout = Duration::from_secs_f64(h.timeout_seconds);
        let mut count = GateCount::new(h.success_threshold, h.failure_threshold);
        let mut checks = 0u32;
        let mut last_recorded: Option<String> = None;
        loop {
            let r = self.prober.probe(h.probe, addr, &h.endpoint, timeout).await;
            let last = format!("{:?}: {}", r.outcome, r.detail);
            // Refusals while starting are recorded once, not every 100 ms.
            if let Some(id) = id
                && (count.answered()
                    || r.outcome != ProbeOutcome::Unreachable
                    || last_recorded.as_deref() != Some(last.as_str()))
            {
                let probe = crate::store::RolloutProbe {
                    at: Timestamp::now(),
                    outcome: format!("{:?}", r.outcome).to_lowercase(),
                    detail: r.detail.clone(),
                    latency_ms: r.latency_ms,
                };
                if let Err(e) = self
                    .store
                    .call(move |s| s.add_rollout_probe(id, &probe))
                    .await
                {
                    warn!(error = %crate::error_text::chain(&e), "cannot record a probe");
                }
                last_recorded = Some(last.clone());
            }
            match count.observe(r.outcome) {
                GateStep::Passed => return Ok(()),
                GateStep::Failed(failures) => {
                    return Err(format!("{failures} failed probes in a row; last: {last}"));
                }
                GateStep::Continue => {}
            }
            // Liveness is checked less often than probes: listing can be costly (Docker).
            checks += 1;
            if !count.answered() && checks.is_multiple_of(5) && !self.still_running(instance).await
            {
                return Err(format!(
                    "the instance exited before becoming healthy; last probe: {last}"
                ));
            }
            let wait = if count.answered() {
                spacing
            } else {
                spacing.min(Duration::from_millis(100))
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(format!(
                    "not healthy within the progress deadline of {}s; last probe: {last}",
                    desired.policy.progress_deadline_seconds
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn still_running(&self, instance: &Instance) -> bool {
        match self.runtime.list().await {
            Ok(all) => all.iter().any(|i| i.id == instance.id && i.is_running()),
            // When the runtime cannot say, keep waiting; the deadline still bounds it.
            Err(_) => true,
        }
    }
}

/// What the gate makes of one more probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateStep {
    Passed,
    /// This many failed probes in a row.
    Failed(u32),
    Continue,
}

/// The gate's counting: `success` healthy probes in a row pass it, `failure` failed ones in
/// a row fail it. Before the instance first answers, a refused connection only means
/// "still starting" and counts for nothing; after that it is a failure. A degraded answer
/// is neither: it starts both counts over.
#[derive(Clone, Debug)]
pub struct GateCount {
    success: u32,
    failure: u32,
    successes: u32,
    failures: u32,
    answered: bool,
}

impl GateCount {
    pub fn new(success: u32, failure: u32) -> GateCount {
        GateCount {
            success,
            failure,
            successes: 0,
            failures: 0,
            answered: false,
        }
    }

    /// Whether the instance has answered a probe yet.
    pub fn answered(&self) -> bool {
        self.answered
    }

    pub fn observe(&mut self, outcome: ProbeOutcome) -> GateStep {
        match outcome {
            ProbeOutcome::Healthy => {
                self.answered = true;
                self.successes += 1;
                self.failures = 0;
            }
            ProbeOutcome::Degraded => {
                self.answered = true;
                self.successes = 0;
                self.failures = 0;
            }
            ProbeOutcome::Unhealthy => {
                self.answered = true;
                self.successes = 0;
                self.failures += 1;
            }
            ProbeOutcome::Unreachable => {
                self.successes = 0;
                if self.answered {
                    self.failures += 1;
                }
            }
        }
        if self.successes >= self.success {
            GateStep::Passed
        } else if self.failures >= self.failure {
            GateStep::Failed(self.failures)
        } else {
            GateStep::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeOutcome::*;

    fn run(count: &mut GateCount, outcomes: &[ProbeOutcome]) -> Vec<GateStep> {
        outcomes.iter().map(|o| count.observe(*o)).collect()
    }

    #[test]
    fn refusals_while_starting_count_for_nothing_but_after_an_answer_they_fail() {
        let mut g = GateCount::new(2, 2);
        let steps = run(
            &mut g,
            &[Unreachable, Unreachable, Unreachable, Unreachable],
        );
        assert!(steps.iter().all(|s| *s == GateStep::Continue));
        assert!(!g.answered());
        assert_eq!(run(&mut g, &[Healthy]), [GateStep::Continue]);
        assert_eq!(
            run(&mut g, &[Unreachable, Unreachable]),
            [GateStep::Continue, GateStep::Failed(2)]
        );
    }

    #[test]
    fn successes_and_failures_must_be_in_a_row() {
        let mut g = GateCount::new(3, 3);
        assert_eq!(
            run(
                &mut g,
                &[Healthy, Healthy, Unhealthy, Healthy, Healthy, Healthy]
            ),
            [
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Passed
            ]
        );
        let mut g = GateCount::new(3, 3);
        assert_eq!(
            run(
                &mut g,
                &[
                    Unhealthy, Unhealthy, Healthy, Unhealthy, Unhealthy, Unhealthy
                ]
            ),
            [
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Continue,
                GateStep::Failed(3)
            ]
        );
    }

    #[test]
    fn degraded_answers_start_both_counts_over() {
        let mut g = GateCount::new(2, 2);
        assert_eq!(
            run(
                &mut g,
                &[Healthy, Degraded, Healthy, Unhealthy, Degraded, Unhealthy]
            ),
            [GateStep::Continue; 6]
        );
        assert!(g.answered());
        assert_eq!(
            run(&mut g, &[Healthy, Healthy]),
            [GateStep::Continue, GateStep::Passed]
        );
    }

    #[test]
    fn one_healthy_probe_is_enough_when_the_policy_says_so() {
        let mut g = GateCount::new(1, 1);
        assert_eq!(
            run(&mut g, &[Unreachable, Healthy]),
            [GateStep::Continue, GateStep::Passed]
        );
    }
}
