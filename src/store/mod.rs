//! The agent's memory in SQLite: runs (one per commit seen), their stages, rollouts, and the
//! per-server operator holds.
//!
//! One [`Store`] owns the connection and every SQL statement; migrations are an append-only
//! list keyed by `PRAGMA user_version`. It stores what it is told and enforces no business
//! rule. Calls are synchronous: async callers wrap them in `spawn_blocking` (see
//! [`Store::call`]).

mod events;
mod migrations;
mod records;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

pub use events::Event;
pub use records::*;

use crate::manifest::Diagnostic;
use crate::source::short_commit;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent; refusing protects its data.
    #[error(
        "the state database has schema version {found}, newer than this agent's {known}; upgrade the agent"
    )]
    TooNew { found: i64, known: i64 },
    #[error("state database query failed")]
    Query(#[from] rusqlite::Error),
    #[error("state database holds an unreadable value: {0}")]
    Corrupt(String),
    #[error("state database task failed: {0}")]
    Task(String),
}

/// A cheap handle to the state database; clones share one connection.
#[derive(Clone)]
pub struct Store {
    // A std mutex: every use is a short, synchronous SQLite call, never held across `.await`.
    conn: Arc<Mutex<Connection>>,
    events: tokio::sync::broadcast::Sender<Event>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn ts(t: Timestamp) -> String {
    t.to_string()
}

fn parse_ts(s: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    s.map(|s| {
        s.parse::<Timestamp>()
            .map_err(|e| StoreError::Corrupt(format!("timestamp `{s}`: {e}")))
    })
    .transpose()
}

fn req_ts(s: String) -> Result<Timestamp, StoreError> {
    s.parse::<Timestamp>()
        .map_err(|e| StoreError::Corrupt(format!("timestamp `{s}`: {e}")))
}

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
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrations::apply(&conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            events: events::channel(),
        })
    }

    /// Opens an existing database read-only, for the CLI beside a running agent.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
            |source| StoreError::Open {
                path: path.to_owned(),
                source,
            },
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > migrations::LATEST {
            return Err(StoreError::TooNew {
                found: version,
                known: migrations::LATEST,
            });
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            events: events::channel(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a blocking thread, for async callers.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    // ---- runs ----

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
        })
    }

    const RUN_COLUMNS: &str = "id, commit_id, author, message, committed_at, trigger, seen_at, finished_at, result, reason, errors";

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
            stages,
        })
    }

    // ---- key/value ----

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2")?
            .execute(params![key, value])?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row(params![key], |r| r.get(0))
            .optional()?)
    }

    // ---- rollouts ----

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
                    strategy, started_at, finished_at, outcome, reason, instance_id, endpoint, digest, rolled_back_to
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

    // ---- failed versions ----

    pub fn record_failed_version(&self, f: &FailedVersion) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO failed_versions (server_id, version, spec_hash, reason, rollout_id, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (server_id, version) DO UPDATE
                 SET spec_hash = ?3, reason = ?4, rollout_id = ?5, failed_at = ?6",
            )?
            .execute(params![f.server_id, f.version, f.spec_hash, f.reason, f.rollout_id, ts(f.failed_at)])?;
        Ok(())
    }

    /// Failed versions, of one server when `server` is given.
    pub fn failed_versions(&self, server: Option<&str>) -> Result<Vec<FailedVersion>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(
                "SELECT server_id, version, spec_hash, reason, rollout_id, failed_at FROM failed_versions
                 WHERE (?1 IS NULL OR server_id = ?1) ORDER BY server_id, failed_at",
            )?
            .query_map(params![server], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        rows.into_iter()
            .map(|(server_id, version, spec_hash, reason, rollout_id, at)| {
                Ok(FailedVersion {
                    server_id,
                    version,
                    spec_hash,
                    reason,
                    rollout_id,
                    failed_at: req_ts(at)?,
                })
            })
            .collect()
    }

    /// Forgets a server's failed versions (a retry, or a commit that changed the server).
    pub fn clear_failed_versions(&self, server: &str) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM failed_versions WHERE server_id = ?1")?
            .execute(params![server])?)
    }

    // ---- health events ----

    pub fn add_health_event(&self, e: &NewHealthEvent) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO health_events (server_id, at, kind, from_state, to_state, detail, instance_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![e.server_id, ts(e.at), e.kind, e.from_state, e.to_state, e.detail, e.instance_id])?;
        let id = tx.last_insert_rowid();
        let summary = match (&e.from_state, &e.to_state) {
            (Some(f), Some(t)) => format!("{f} → {t}: {}", e.detail),
            (None, Some(t)) => format!("{t}: {}", e.detail),
            _ => e.detail.clone(),
        };
        let event = events::insert(
            &tx,
            events::NewEvent {
                at: e.at,
                kind: &format!("health.{}", e.kind),
                server_id: Some(&e.server_id),
                summary,
                data: serde_json::json!({
                    "health_event_id": id,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "detail": e.detail,
                    "instance_id": e.instance_id,
                }),
            },
        )?;
        tx.commit()?;
        self.broadcast(Some(event));
        Ok(id)
    }

    /// Health events, newest first; of one server when given; only those after `after_id`.
    pub fn health_events(
        &self,
        server: Option<&str>,
        after_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<HealthEvent>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(
                "SELECT id, server_id, at, kind, from_state, to_state, detail, instance_id FROM health_events
                 WHERE (?1 IS NULL OR server_id = ?1) AND (?2 IS NULL OR id > ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(params![server, after_id, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        rows.into_iter()
            .map(
                |(id, server_id, at, kind, from_state, to_state, detail, instance_id)| {
                    Ok(HealthEvent {
                        id,
                        server_id,
                        at: req_ts(at)?,
                        kind,
                        from_state,
                        to_state,
                        detail,
                        instance_id,
                    })
                },
            )
            .collect()
    }

    /// Retention: drops health events older than `before`, and all but the newest
    /// `keep_per_server` of each server.
    pub fn prune_health_events(
        &self,
        before: Timestamp,
        keep_per_server: usize,
    ) -> Result<usize, StoreError> {
        let conn = self.conn();
        let old = conn
            .prepare_cached("DELETE FROM health_events WHERE at < ?1")?
            .execute(params![ts(before)])?;
        let extra = conn
            .prepare_cached(
                "DELETE FROM health_events WHERE id IN (
                     SELECT id FROM (
                         SELECT id, ROW_NUMBER() OVER (PARTITION BY server_id ORDER BY id DESC) AS n
                         FROM health_events)
                     WHERE n > ?1)",
            )?
            .execute(params![keep_per_server as i64])?;
        Ok(old + extra)
    }

    // ---- operator pins ----

    pub fn set_pin(&self, pin: &Pin) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO server_pins (server_id, version, reason, pinned_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (server_id) DO UPDATE SET version = ?2, reason = ?3, pinned_at = ?4",
            )?
            .execute(params![pin.server_id, pin.version, pin.reason, ts(pin.pinned_at)])?;
        Ok(())
    }

    pub fn clear_pin(&self, server: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM server_pins WHERE server_id = ?1")?
            .execute(params![server])?
            > 0)
    }

    pub fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(
                "SELECT server_id, version, reason, pinned_at FROM server_pins ORDER BY server_id",
            )?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        rows.into_iter()
            .map(|(server_id, version, reason, at)| {
                Ok(Pin {
                    server_id,
                    version,
                    reason,
                    pinned_at: req_ts(at)?,
                })
            })
            .collect()
    }

    // ---- operator holds ----

    /// Records that an operator stopped a server (`true`) or deployed it again (`false`).
    pub fn set_held(&self, server: &str, held: bool, at: Timestamp) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO servers (server_id, held_by_operator, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(server_id) DO UPDATE SET held_by_operator = ?2, updated_at = ?3",
            )?
            .execute(params![server, held, ts(at)])?;
        Ok(())
    }

    pub fn held_servers(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT server_id FROM servers WHERE held_by_operator = 1 ORDER BY server_id",
        )?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests;
