//! Health events: a server's transitions, recovery attempts and overrides as the monitor
//! recorded them, listed newest first and pruned by age and count.

use jiff::Timestamp;
use rusqlite::params;

use super::{HealthEvent, NewHealthEvent, Store, StoreError, events, req_ts, ts};

impl Store {
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
}
