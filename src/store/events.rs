//! The event log: every state change (runs, rollouts and their steps, health transitions,
//! recovery attempts, overrides, operators' holds) as one ordered stream with ids, for
//! `GET /events` and webhook subscriptions.
//!
//! The store methods that record a change append its event in the same transaction, and
//! broadcast it to live subscribers while they still hold the connection: the broadcast
//! order is the id order, and nothing is broadcast that did not commit.

use jiff::Timestamp;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{Store, StoreError, req_ts, ts};

/// Live subscribers that fall this far behind lose the broadcast and re-read the log.
const LIVE_BUFFER: usize = 1024;

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// Grows with every event and is never reused, even after pruning.
    pub id: i64,
    pub at: Timestamp,
    /// `run.started`, `run.finished`, `rollout.started`, `rollout.step`, `rollout.finished`,
    /// `health.transition`, `health.recovery`, `health.override`, `health.failover`, a
    /// health note, `hold.set` or `hold.lifted` (an operator's stop or rollback hold).
    pub kind: String,
    pub server_id: Option<String>,
    /// One line for people (the CLI prints it).
    pub summary: String,
    /// The change itself; its fields depend on the kind.
    pub data: Value,
}

/// An event before it has an id.
pub(super) struct NewEvent<'a> {
    pub at: Timestamp,
    pub kind: &'a str,
    pub server_id: Option<&'a str>,
    pub summary: String,
    pub data: Value,
}

pub(super) fn channel() -> broadcast::Sender<Event> {
    broadcast::channel(LIVE_BUFFER).0
}

/// Inserts `e` on `conn` (the caller's transaction); the caller broadcasts after commit.
pub(super) fn insert(conn: &Connection, e: NewEvent<'_>) -> Result<Event, StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (at, kind, server_id, summary, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        ts(e.at),
        e.kind,
        e.server_id,
        e.summary,
        e.data.to_string()
    ])?;
    Ok(Event {
        id: conn.last_insert_rowid(),
        at: e.at,
        kind: e.kind.to_owned(),
        server_id: e.server_id.map(str::to_owned),
        summary: e.summary,
        data: e.data,
    })
}

/// Which events a read wants: of one server, of kinds starting with a prefix
/// (`health`, `rollout`, `run.finished`), or both; the default is all.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventFilter<'a> {
    pub server: Option<&'a str>,
    pub kind: Option<&'a str>,
}

impl<'a> EventFilter<'a> {
    pub fn server(server: Option<&'a str>) -> Self {
        EventFilter { server, kind: None }
    }
}

impl Store {
    /// Live events from now on. A receiver that lags gets `RecvError::Lagged` and should
    /// re-read [`Store::events_after`] from the last id it saw.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(super) fn broadcast(&self, event: Option<Event>) {
        if let Some(event) = event {
            // No subscribers is not an error.
            let _ = self.events.send(event);
        }
    }

    /// Events with an id above `after` (all when `None`), oldest first, that `filter`
    /// wants, at most `limit`.
    pub fn events_after(
        &self,
        after: Option<i64>,
        filter: EventFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.filtered("id > :id", after.unwrap_or(0), filter, "id", limit)
    }

    /// The newest `limit` events that `filter` wants (only ids below `before` when given),
    /// newest first.
    pub fn latest_events(
        &self,
        filter: EventFilter<'_>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.filtered(
            "id < :id",
            before.unwrap_or(i64::MAX),
            filter,
            "id DESC",
            limit,
        )
    }

    /// One statement per combination of filters, so a server's events use
    /// `events_by_server`; a kind is a prefix compared as text, not a `LIKE` pattern (kinds
    /// hold `_`).
    fn filtered(
        &self,
        bound: &str,
        id: i64,
        filter: EventFilter<'_>,
        order: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql =
            format!("SELECT id, at, kind, server_id, summary, data FROM events WHERE {bound}");
        let limit = limit as i64;
        let mut args: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":id", &id), (":limit", &limit)];
        if let Some(server) = &filter.server {
            sql.push_str(" AND server_id = :server");
            args.push((":server", server));
        }
        if let Some(kind) = &filter.kind {
            sql.push_str(" AND substr(kind, 1, length(:kind)) = :kind");
            args.push((":kind", kind));
        }
        sql.push_str(&format!(" ORDER BY {order} LIMIT :limit"));
        self.query_events(&sql, args.as_slice())
    }

    fn query_events(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(sql)?
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        rows.into_iter()
            .map(|(id, at, kind, server_id, summary, data)| {
                Ok(Event {
                    id,
                    at: req_ts(at)?,
                    kind,
                    server_id,
                    summary,
                    data: serde_json::from_str(&data)
                        .map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?,
                })
            })
            .collect()
    }

    /// Retention: drops events older than `before`, and all but the newest `keep`.
    pub fn prune_events(&self, before: Timestamp, keep: usize) -> Result<usize, StoreError> {
        let conn = self.conn();
        let old = conn
            .prepare_cached("DELETE FROM events WHERE at < ?1")?
            .execute(params![ts(before)])?;
        let extra = conn
            .prepare_cached("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1")?
            .execute(params![keep as i64])?;
        Ok(old + extra)
    }
}
