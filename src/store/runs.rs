//! Runs (one per commit the agent saw) and their stages: begun, staged, finished, listed,
//! and closed as interrupted (with the rollouts they left in progress) when the agent that
//! ran them died.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};

use super::{
    NewRun, PlannedServer, RawRun, RolloutOutcome, RunRecord, RunResult, Stage, StageRecord,
    StageStatus, Store, StoreError, events, parse_ts, req_ts, ts,
};
use crate::manifest::Diagnostic;
use crate::source::short_commit;

/// The `run.finished` event of run `run_id` of `commit`.
fn run_finished<'a>(
    run_id: i64,
    commit: &str,
    result: RunResult,
    reason: Option<&str>,
    errors: usize,
    at: Timestamp,
) -> events::NewEvent<'a> {
    events::NewEvent {
        at,
        kind: "run.finished",
        server_id: None,
        summary: format!(
            "run {run_id} of {}: {result}{}",
            short_commit(commit),
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        data: serde_json::json!({
            "run_id": run_id,
            "commit": commit,
            "result": result,
            "reason": reason,
            "errors": errors,
        }),
    }
}

impl Store {
    pub fn begin_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO runs (commit_id, author, message, committed_at, trigger, seen_at, result)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running')",
        )?
        .execute(params![
            run.commit_id,
            run.author,
            run.message,
            run.committed_at.map(ts),
            run.trigger,
            ts(run.seen_at)
        ])?;
        let id = tx.last_insert_rowid();
        let event = events::insert(
            &tx,
            events::NewEvent {
                at: run.seen_at,
                kind: "run.started",
                server_id: None,
                summary: format!(
                    "run {id} of {} ({})",
                    short_commit(&run.commit_id),
                    run.trigger
                ),
                data: serde_json::json!({
                    "run_id": id,
                    "commit": run.commit_id,
                    "trigger": run.trigger,
                    "author": run.author,
                    "message": run.message,
                }),
            },
        )?;
        tx.commit()?;
        self.broadcast(Some(event));
        Ok(id)
    }

    pub fn record_stage(&self, run_id: i64, stage: &StageRecord) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO run_stages (run_id, stage, status, started_at, finished_at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                run_id,
                stage.stage.as_str(),
                stage.status.as_str(),
                ts(stage.started_at),
                stage.finished_at.map(ts),
                stage.detail
            ])?;
        Ok(())
    }

    /// Keeps the plan run `run_id` applied, server by server.
    pub fn set_run_plan(&self, run_id: i64, plan: &[PlannedServer]) -> Result<(), StoreError> {
        let text = serde_json::to_string(plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn()
            .prepare_cached("UPDATE runs SET plan = ?2 WHERE id = ?1")?
            .execute(params![run_id, text])?;
        Ok(())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        result: RunResult,
        reason: Option<&str>,
        errors: &[Diagnostic],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let errors_json = if errors.is_empty() {
            None
        } else {
            Some(serde_json::to_string(errors).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        };
        let count = errors.len();
        let errors = errors_json;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let commit: Option<String> = tx
            .prepare_cached("UPDATE runs SET result = ?2, reason = ?3, errors = ?4, finished_at = ?5 WHERE id = ?1 RETURNING commit_id")?
            .query_row(params![run_id, result.as_str(), reason, errors, ts(at)], |r| r.get(0))
            .optional()?;
        let event = match commit {
            Some(commit) => Some(events::insert(
                &tx,
                run_finished(run_id, &commit, result, reason, count, at),
            )?),
            None => None,
        };
        tx.commit()?;
        self.broadcast(event);
        Ok(())
    }

    /// Marks runs and rollouts left unfinished by an agent that died as interrupted, each
    /// with the closing event it never got (a stream's consumer would otherwise see it in
    /// progress forever).
    pub fn interrupt_unfinished(&self, at: Timestamp) -> Result<usize, StoreError> {
        const RUN_REASON: &str = "the agent stopped during this run";
        const ROLLOUT_REASON: &str = "the agent stopped during this rollout";
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let runs: Vec<(i64, String)> = tx
            .prepare(
                "UPDATE runs SET result = 'interrupted', reason = ?2, finished_at = ?1
                 WHERE result = 'running' RETURNING id, commit_id",
            )?
            .query_map(params![ts(at), RUN_REASON], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let rollouts: Vec<(i64, String, String, Option<String>)> = tx
            .prepare(
                "UPDATE rollouts SET outcome = 'interrupted', reason = ?2, finished_at = ?1
                 WHERE outcome = 'in_progress' RETURNING id, server_id, action, to_version",
            )?
            .query_map(params![ts(at), ROLLOUT_REASON], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut closing = Vec::new();
        for (run_id, commit) in &runs {
            closing.push(events::insert(
                &tx,
                run_finished(
                    *run_id,
                    commit,
                    RunResult::Interrupted,
                    Some(RUN_REASON),
                    0,
                    at,
                ),
            )?);
        }
        for (id, server, action, to_version) in &rollouts {
            closing.push(events::insert(
                &tx,
                events::NewEvent {
                    at,
                    kind: "rollout.finished",
                    server_id: Some(server),
                    summary: format!(
                        "rollout {id}: {action}{} interrupted: {ROLLOUT_REASON}",
                        to_version
                            .as_deref()
                            .map(|v| format!(" {v}"))
                            .unwrap_or_default()
                    ),
                    data: serde_json::json!({
                        "rollout_id": id,
                        "action": action,
                        "to_version": to_version,
                        "outcome": RolloutOutcome::Interrupted,
                        "reason": ROLLOUT_REASON,
                        "endpoint": null,
                        "instance_id": null,
                        "rolled_back_to": null,
                    }),
                },
            )?);
        }
        tx.commit()?;
        for event in closing {
            self.broadcast(Some(event));
        }
        Ok(runs.len() + rollouts.len())
    }

    /// How many runs of `commit` the agent died in before their validation finished:
    /// validation takes milliseconds, so dying there is the commit's doing, where dying
    /// during a long apply may as well be an operator's restart.
    pub fn runs_died_in_validation(&self, commit: &str) -> Result<usize, StoreError> {
        let conn = self.conn();
        let n: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM runs r WHERE r.commit_id = ?1 AND r.result = 'interrupted'
                 AND NOT EXISTS (SELECT 1 FROM run_stages s WHERE s.run_id = r.id AND s.stage = 'validate')",
            )?
            .query_row(params![commit], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RawRun> {
        Ok(RawRun {
            id: row.get(0)?,
            commit_id: row.get(1)?,
            author: row.get(2)?,
            message: row.get(3)?,
            committed_at: row.get(4)?,
            trigger: row.get(5)?,
            seen_at: row.get(6)?,
            finished_at: row.get(7)?,
            result: row.get(8)?,
            reason: row.get(9)?,
            errors: row.get(10)?,
            plan: row.get(11)?,
        })
    }

    const RUN_COLUMNS: &str = "id, commit_id, author, message, committed_at, trigger, seen_at, finished_at, result, reason, errors, plan";

    /// Runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let raws: Vec<RawRun> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {} FROM runs ORDER BY id DESC LIMIT ?1",
                Self::RUN_COLUMNS
            ))?;
            stmt.query_map(params![limit as i64], Self::run_from_row)?
                .collect::<Result<_, _>>()?
        };
        raws.into_iter().map(|r| self.complete_run(r)).collect()
    }

    /// The newest run of a commit, found by its full id or a prefix of at least 4 characters.
    pub fn run_for_commit(&self, commit: &str) -> Result<Option<RunRecord>, StoreError> {
        if commit.len() < 4 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let raw = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {} FROM runs WHERE commit_id LIKE ?1 || '%' ORDER BY id DESC LIMIT 1",
                Self::RUN_COLUMNS
            ))?;
            stmt.query_row(params![commit.to_ascii_lowercase()], Self::run_from_row)
                .optional()?
        };
        raw.map(|r| self.complete_run(r)).transpose()
    }

    /// The newest run of exactly this commit, if any (used to skip commits already judged).
    pub fn latest_result_for(&self, commit: &str) -> Result<Option<RunResult>, StoreError> {
        let conn = self.conn();
        let result: Option<String> = conn
            .prepare_cached(
                "SELECT result FROM runs WHERE commit_id = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![commit], |r| r.get(0))
            .optional()?;
        result.map(|r| RunResult::parse(&r)).transpose()
    }

    fn complete_run(&self, raw: RawRun) -> Result<RunRecord, StoreError> {
        let stages = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT stage, status, started_at, finished_at, detail FROM run_stages
                 WHERE run_id = ?1 ORDER BY started_at, rowid",
            )?;
            stmt.query_map(params![raw.id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        let stages = stages
            .into_iter()
            .map(|(stage, status, started, finished, detail)| {
                Ok(StageRecord {
                    stage: Stage::parse(&stage)?,
                    status: StageStatus::parse(&status)?,
                    started_at: req_ts(started)?,
                    finished_at: parse_ts(finished)?,
                    detail,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let errors = match raw.errors {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
            None => Vec::new(),
        };
        let plan = match raw.plan {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
            None => Vec::new(),
        };
        Ok(RunRecord {
            id: raw.id,
            commit_id: raw.commit_id,
            author: raw.author,
            message: raw.message,
            committed_at: parse_ts(raw.committed_at)?,
            trigger: raw.trigger,
            seen_at: req_ts(raw.seen_at)?,
            finished_at: parse_ts(raw.finished_at)?,
            result: RunResult::parse(&raw.result)?,
            reason: raw.reason,
            errors,
            plan,
            stages,
        })
    }
}
