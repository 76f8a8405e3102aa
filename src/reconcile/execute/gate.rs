//! The health gate a new instance must pass before it serves: probes until enough succeed
//! in a row, within the policy's progress deadline.

use std::net::SocketAddr;
use std::time::Duration;

use jiff::Timestamp;
use tracing::warn;

use super::Executor;
use crate::health::{ProbeOutcome, ProbeResult};
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
        // Every task of a scheduled instance (Swarm) must pass, not only the one the
        // endpoint names: the gateway may route to any of them.
        let mut addrs: Vec<SocketAddr> = instance.serving();
        if addrs.is_empty() {
            addrs.push(addr);
        }
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
            let r = worst(
                futures::future::join_all(addrs.iter().map(|a| async move {
                    (
                        *a,
                        self.prober.probe(h.probe, *a, &h.endpoint, timeout).await,
                    )
                }))
                .await,
            );
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

/// One round of probes of several tasks, as one result: the worst of them (an answer saying
/// unhealthy, then silence, then degraded), its detail naming the task's address. One probe
/// is returned as it is.
fn worst(mut results: Vec<(SocketAddr, ProbeResult)>) -> ProbeResult {
    let rank = |o: ProbeOutcome| match o {
        ProbeOutcome::Healthy => 0,
        ProbeOutcome::Degraded => 1,
        ProbeOutcome::Unreachable => 2,
        ProbeOutcome::Unhealthy => 3,
    };
    let several = results.len() > 1;
    let slowest = results
        .iter()
        .map(|(_, r)| r.latency_ms)
        .fold(0.0, f64::max);
    results.sort_by_key(|(_, r)| std::cmp::Reverse(rank(r.outcome)));
    let Some((addr, mut r)) = results.into_iter().next() else {
        return ProbeResult {
            outcome: ProbeOutcome::Unreachable,
            detail: "no task to probe".to_owned(),
            version: None,
            uptime_seconds: None,
            latency_ms: 0.0,
        };
    };
    if several {
        r.detail = format!("{addr}: {}", r.detail);
        r.latency_ms = slowest;
    }
    r
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

    fn result(outcome: ProbeOutcome, latency_ms: f64) -> ProbeResult {
        ProbeResult {
            outcome,
            detail: format!("{outcome:?}"),
            version: None,
            uptime_seconds: None,
            latency_ms,
        }
    }

    #[test]
    fn a_round_over_several_tasks_is_as_bad_as_its_worst_and_names_that_task() {
        let a: SocketAddr = "10.0.0.2:30001".parse().unwrap();
        let b: SocketAddr = "10.0.0.3:30002".parse().unwrap();
        let r = worst(vec![
            (a, result(ProbeOutcome::Healthy, 3.0)),
            (b, result(ProbeOutcome::Unreachable, 1.0)),
        ]);
        assert_eq!(r.outcome, ProbeOutcome::Unreachable);
        assert_eq!(r.detail, "10.0.0.3:30002: Unreachable");
        assert_eq!(r.latency_ms, 3.0);
        let r = worst(vec![
            (a, result(ProbeOutcome::Unreachable, 1.0)),
            (b, result(ProbeOutcome::Unhealthy, 1.0)),
        ]);
        assert_eq!(r.outcome, ProbeOutcome::Unhealthy);
        let one = worst(vec![(a, result(ProbeOutcome::Degraded, 2.0))]);
        assert_eq!(one.detail, "Degraded", "one task: the probe as it is");
        assert_eq!(worst(Vec::new()).outcome, ProbeOutcome::Unreachable);
    }
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
