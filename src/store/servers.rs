//! What the store keeps per server beyond its runs and rollouts: the versions that failed
//! their health gate there (the executor's memory), and the operator's pins and holds. A
//! hold set or lifted is an event too (`hold.set`, `hold.lifted`), in the same transaction.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::{FailedVersion, Pin, Store, StoreError, events, req_ts, ts};

/// A `hold.*` event on `tx`; the caller broadcasts it after commit.
fn hold_event(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    server: &str,
    at: Timestamp,
    summary: String,
    data: serde_json::Value,
) -> Result<events::Event, StoreError> {
    events::insert(
        tx,
        events::NewEvent {
            at,
            kind,
            server_id: Some(server),
            summary,
            data,
        },
    )
}

impl Store {
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

    /// Holds a server at a version (an operator's rollback), with a `hold.set` event.
    pub fn set_pin(&self, pin: &Pin) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO server_pins (server_id, version, reason, pinned_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (server_id) DO UPDATE SET version = ?2, reason = ?3, pinned_at = ?4",
        )?
        .execute(params![pin.server_id, pin.version, pin.reason, ts(pin.pinned_at)])?;
        let event = hold_event(
            &tx,
            "hold.set",
            &pin.server_id,
            pin.pinned_at,
            format!("held at {}: {}", pin.version, pin.reason),
            serde_json::json!({ "hold": "rollback", "version": pin.version, "reason": pin.reason }),
        )?;
        tx.commit()?;
        self.broadcast(Some(event));
        Ok(())
    }

    /// Lifts a rollback's hold; whether there was one (then with a `hold.lifted` event).
    pub fn clear_pin(&self, server: &str, at: Timestamp) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let lifted = tx
            .prepare_cached("DELETE FROM server_pins WHERE server_id = ?1")?
            .execute(params![server])?
            > 0;
        let event = lifted
            .then(|| {
                hold_event(
                    &tx,
                    "hold.lifted",
                    server,
                    at,
                    "the rollback's hold was lifted: the update policy applies again".to_owned(),
                    serde_json::json!({ "hold": "rollback" }),
                )
            })
            .transpose()?;
        tx.commit()?;
        self.broadcast(event);
        Ok(lifted)
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

    /// Records that an operator stopped a server (`true`) or deployed it again (`false`);
    /// a change is a `hold.set` or `hold.lifted` event.
    pub fn set_held(&self, server: &str, held: bool, at: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let was: bool = tx
            .prepare_cached("SELECT held_by_operator FROM servers WHERE server_id = ?1")?
            .query_row(params![server], |r| r.get(0))
            .optional()?
            .unwrap_or(false);
        tx.prepare_cached(
            "INSERT INTO servers (server_id, held_by_operator, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(server_id) DO UPDATE SET held_by_operator = ?2, updated_at = ?3",
        )?
        .execute(params![server, held, ts(at)])?;
        let event = (was != held)
            .then(|| {
                let (kind, summary) = if held {
                    (
                        "hold.set",
                        "stopped by an operator: held until deployed again",
                    )
                } else {
                    (
                        "hold.lifted",
                        "deployed again: the operator's stop was lifted",
                    )
                };
                hold_event(
                    &tx,
                    kind,
                    server,
                    at,
                    summary.to_owned(),
                    serde_json::json!({ "hold": "stop" }),
                )
            })
            .transpose()?;
        tx.commit()?;
        self.broadcast(event);
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
