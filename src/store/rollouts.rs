//! Rollouts: one per change to one server (deploy, update, restart, remove), with the
//! steps it went through and the probes of its health gate, and the counts `/metrics`
//! reports.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::{
    NewRollout, RolloutAction, RolloutEnd, RolloutOutcome, RolloutProbe, RolloutRecord,
    RolloutStep, Store, StoreError, ToolDiff, events, parse_ts, req_ts, ts,
};

impl Store {
    pub fn begin_rollout(&self, r: &NewRollout) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO rollouts (run_id, server_id, trigger, action, from_version, to_version, image, command,
                                   revision, strategy, started_at, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'in_progress')",
        )?
        .execute(params![
            r.run_id,
            r.server_id,
            r.trigger,
            r.action.as_str(),
            r.from_version,
            r.to_version,
            r.image,
            r.command,
            r.revision,
            r.strategy,
            ts(r.started_at)
        ])?;
        let id = tx.last_insert_rowid();
        let versions = match (&r.from_version, &r.to_version) {
            (Some(f), Some(t)) if f != t => format!(" {f} → {t}"),
            (_, Some(t)) => format!(" {t}"),
            (Some(f), None) => format!(" {f}"),
            (None, None) => String::new(),
        };
        let event = events::insert(
            &tx,
            events::NewEvent {
                at: r.started_at,
                kind: "rollout.started",
                server_id: Some(&r.server_id),
                summary: format!("rollout {id}: {}{versions} ({})", r.action, r.trigger),
                data: serde_json::json!({
                    "rollout_id": id,
                    "run_id": r.run_id,
                    "action": r.action,
                    "trigger": r.trigger,
                    "from_version": r.from_version,
                    "to_version": r.to_version,
                    "revision": r.revision,
                    "strategy": r.strategy,
                }),
            },
        )?;
        tx.commit()?;
        self.broadcast(Some(event));
        Ok(id)
    }

    pub fn finish_rollout(&self, id: i64, end: &RolloutEnd) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<(String, String, Option<String>)> = tx
            .prepare_cached(
                "UPDATE rollouts SET outcome = ?2, reason = ?3, instance_id = ?4, endpoint = ?5, finished_at = ?6,
                                     rolled_back_to = ?7
                 WHERE id = ?1 RETURNING server_id, action, to_version",
            )?
            .query_row(params![
                id,
                end.outcome.as_str(),
                end.reason,
                end.instance_id,
                end.endpoint,
                ts(end.finished_at),
                end.rolled_back_to
            ], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let event = match row {
            Some((server, action, to_version)) => {
                let mut summary = format!("rollout {id}: {action}");
                if let Some(v) = &to_version {
                    summary.push_str(&format!(" {v}"));
                }
                summary.push_str(&format!(" {}", end.outcome));
                if let Some(v) = &end.rolled_back_to {
                    summary.push_str(&format!(", rolled back to {v}"));
                }
                if let Some(r) = &end.reason {
                    summary.push_str(&format!(": {r}"));
                }
                Some(events::insert(
                    &tx,
                    events::NewEvent {
                        at: end.finished_at,
                        kind: "rollout.finished",
                        server_id: Some(&server),
                        summary,
                        data: serde_json::json!({
                            "rollout_id": id,
                            "action": action,
                            "to_version": to_version,
                            "outcome": end.outcome,
                            "reason": end.reason,
                            "endpoint": end.endpoint,
                            "instance_id": end.instance_id,
                            "rolled_back_to": end.rolled_back_to,
                        }),
                    },
                )?)
            }
            None => None,
        };
        tx.commit()?;
        self.broadcast(event);
        Ok(())
    }

    /// Rollouts, newest first; of one server when `server` is given.
    pub fn rollouts(
        &self,
        server: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RolloutRecord>, StoreError> {
        self.query_rollouts(server, None, limit)
    }

    pub fn rollout(&self, id: i64) -> Result<Option<RolloutRecord>, StoreError> {
        Ok(self.query_rollouts(None, Some(id), 1)?.pop())
    }

    fn query_rollouts(
        &self,
        server: Option<&str>,
        id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RolloutRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, run_id, server_id, trigger, action, from_version, to_version, image, command, revision,
                    strategy, started_at, finished_at, outcome, reason, instance_id, endpoint, digest, rolled_back_to, tool_diff
             FROM rollouts WHERE (?1 IS NULL OR server_id = ?1) AND (?3 IS NULL OR id = ?3)
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![server, limit as i64, id], |r| {
                Ok((
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ),
                    (
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, Option<String>>(9)?,
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, String>(11)?,
                        r.get::<_, Option<String>>(12)?,
                        r.get::<_, String>(13)?,
                        r.get::<_, Option<String>>(14)?,
                        r.get::<_, Option<String>>(15)?,
                        r.get::<_, Option<String>>(16)?,
                        r.get::<_, Option<String>>(17)?,
                        r.get::<_, Option<String>>(18)?,
                        r.get::<_, Option<String>>(19)?,
                    ),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(
                    (id, run_id, server_id, trigger, action, from_version, to_version, image),
                    (
                        command,
                        revision,
                        strategy,
                        started,
                        finished,
                        outcome,
                        reason,
                        instance_id,
                        endpoint,
                        digest,
                        rolled_back_to,
                        tool_diff,
                    ),
                )| {
                    Ok(RolloutRecord {
                        id,
                        run_id,
                        server_id,
                        trigger,
                        action: RolloutAction::parse(&action)?,
                        from_version,
                        to_version,
                        image,
                        command,
                        revision,
                        strategy,
                        started_at: req_ts(started)?,
                        finished_at: parse_ts(finished)?,
                        outcome: RolloutOutcome::parse(&outcome)?,
                        reason,
                        instance_id,
                        endpoint,
                        digest,
                        rolled_back_to,
                        // Written by this agent; one it cannot read is shown as absent
                        // rather than failing the whole history.
                        tool_diff: tool_diff.and_then(|t| serde_json::from_str(&t).ok()),
                    })
                },
            )
            .collect()
    }

    /// How many rollouts ended (or are running) with each outcome.
    pub fn rollout_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT outcome, COUNT(*) FROM rollouts GROUP BY outcome ORDER BY outcome",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn set_rollout_digest(&self, id: i64, digest: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE rollouts SET digest = ?2 WHERE id = ?1")?
            .execute(params![id, digest])?;
        Ok(())
    }

    pub fn set_rollout_tool_diff(&self, id: i64, diff: &ToolDiff) -> Result<(), StoreError> {
        let text = serde_json::to_string(diff).unwrap_or_default();
        self.conn()
            .prepare_cached("UPDATE rollouts SET tool_diff = ?2 WHERE id = ?1")?
            .execute(params![id, text])?;
        Ok(())
    }

    pub fn add_rollout_step(
        &self,
        id: i64,
        step: &str,
        detail: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO rollout_steps (rollout_id, at, step, detail) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, ts(at), step, detail])?;
        let server: Option<String> = tx
            .prepare_cached("SELECT server_id FROM rollouts WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        let event = events::insert(
            &tx,
            events::NewEvent {
                at,
                kind: "rollout.step",
                server_id: server.as_deref(),
                summary: match detail {
                    Some(d) => format!("rollout {id}: {step}: {d}"),
                    None => format!("rollout {id}: {step}"),
                },
                data: serde_json::json!({ "rollout_id": id, "step": step, "detail": detail }),
            },
        )?;
        tx.commit()?;
        self.broadcast(Some(event));
        Ok(())
    }

    pub fn add_rollout_probe(&self, id: i64, probe: &RolloutProbe) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO rollout_probes (rollout_id, at, outcome, detail, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, ts(probe.at), probe.outcome, probe.detail, probe.latency_ms])?;
        Ok(())
    }

    /// A rollout's timeline: its steps and the probes of its health gate, oldest first.
    pub fn rollout_timeline(
        &self,
        id: i64,
    ) -> Result<(Vec<RolloutStep>, Vec<RolloutProbe>), StoreError> {
        let conn = self.conn();
        let steps = conn
            .prepare_cached("SELECT at, step, detail FROM rollout_steps WHERE rollout_id = ?1 ORDER BY at, rowid")?
            .query_map(params![id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let probes = conn
            .prepare_cached(
                "SELECT at, outcome, detail, latency_ms FROM rollout_probes WHERE rollout_id = ?1 ORDER BY at, rowid",
            )?
            .query_map(params![id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, f64>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        let steps = steps
            .into_iter()
            .map(|(at, step, detail)| {
                Ok(RolloutStep {
                    at: req_ts(at)?,
                    step,
                    detail,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let probes = probes
            .into_iter()
            .map(|(at, outcome, detail, latency_ms)| {
                Ok(RolloutProbe {
                    at: req_ts(at)?,
                    outcome,
                    detail,
                    latency_ms,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((steps, probes))
    }
}
