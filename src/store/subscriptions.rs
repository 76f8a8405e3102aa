//! Webhook subscriptions to the event log and the deliveries given up on (dead letters).
//!
//! A subscription's cursor is the id of the last event it delivered or gave up on; it only
//! moves forward, and a dead letter moves it in the same transaction, so after a restart
//! delivery resumes with the first event that was neither.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, req_ts, ts};

/// A subscription as stored. The secret signs deliveries; the store keeps it as given
/// (the data dir is private), and only `subscriptions` reads it back for the sender.
#[derive(Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Event kind patterns: `run.finished`, `health.*`, `*`.
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: Timestamp,
    /// The last event delivered or dead-lettered.
    pub cursor: i64,
}

impl std::fmt::Debug for Subscription {
    // Never the secret, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// A delivery given up on after its last try.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    /// `None` for a manifest's notification channel.
    pub subscription_id: Option<String>,
    pub url: String,
    pub delivery_id: String,
    /// The event log's id, for a subscription's delivery.
    pub event_id: Option<i64>,
    pub kind: String,
    /// The body that was sent, as sent.
    pub body: String,
    pub attempts: u32,
    /// Why the last try failed.
    pub error: String,
    pub failed_at: Timestamp,
}

/// A dead letter before it has an id.
#[derive(Clone, Debug)]
pub struct NewDeadLetter {
    pub subscription_id: Option<String>,
    pub url: String,
    pub delivery_id: String,
    pub event_id: Option<i64>,
    pub kind: String,
    pub body: String,
    pub attempts: u32,
    pub error: String,
    pub failed_at: Timestamp,
}

type SubscriptionRow = (String, String, String, String, String, i64);

fn subscription_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubscriptionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn subscription(row: SubscriptionRow) -> Result<Subscription, StoreError> {
    let (id, url, events, secret, created_at, cursor) = row;
    Ok(Subscription {
        events: serde_json::from_str(&events)
            .map_err(|e| StoreError::Corrupt(format!("subscription {id}'s events: {e}")))?,
        id,
        url,
        secret,
        created_at: req_ts(created_at)?,
        cursor,
    })
}

const SUBSCRIPTION_COLUMNS: &str = "id, url, events, secret, created_at, cursor";

impl Store {
    /// Records a subscription whose cursor is the newest event now: it receives what
    /// happens from now on.
    pub fn add_subscription(
        &self,
        id: &str,
        url: &str,
        events: &[String],
        secret: &str,
        at: Timestamp,
    ) -> Result<Subscription, StoreError> {
        let conn = self.conn();
        let events_json = serde_json::to_string(events)
            .map_err(|e| StoreError::Corrupt(format!("subscription events: {e}")))?;
        conn.prepare_cached(
            "INSERT INTO subscriptions (id, url, events, secret, created_at, cursor)
             VALUES (?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(id), 0) FROM events))",
        )?
        .execute(params![id, url, events_json, secret, ts(at)])?;
        let row = conn
            .prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"
            ))?
            .query_row(params![id], subscription_row)?;
        drop(conn);
        subscription(row)
    }

    /// Every subscription, oldest first.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id"
            ))?
            .query_map([], subscription_row)?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        rows.into_iter().map(subscription).collect()
    }

    pub fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"
            ))?
            .query_row(params![id], subscription_row)
            .optional()?;
        drop(conn);
        row.map(subscription).transpose()
    }

    /// Removes a subscription (its dead letters stay, for the record); whether it existed.
    pub fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM subscriptions WHERE id = ?1")?
            .execute(params![id])?
            > 0)
    }

    /// Moves a subscription's cursor forward to `event_id` (never back); `false` when the
    /// subscription is gone.
    pub fn advance_subscription(&self, id: &str, event_id: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.prepare_cached("UPDATE subscriptions SET cursor = MAX(cursor, ?2) WHERE id = ?1")?
            .execute(params![id, event_id])
            .map(|n| n > 0)
            .map_err(StoreError::from)
    }

    /// Records a dead letter and, for a subscription's delivery, moves its cursor past the
    /// event in the same transaction. Returns the dead letter's id.
    pub fn add_dead_letter(&self, d: &NewDeadLetter) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO dead_letters (subscription_id, url, delivery_id, event_id, kind, body, attempts, error, failed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            d.subscription_id,
            d.url,
            d.delivery_id,
            d.event_id,
            d.kind,
            d.body,
            d.attempts,
            d.error,
            ts(d.failed_at)
        ])?;
        let id = tx.last_insert_rowid();
        if let (Some(sub), Some(event)) = (&d.subscription_id, d.event_id) {
            tx.prepare_cached("UPDATE subscriptions SET cursor = MAX(cursor, ?2) WHERE id = ?1")?
                .execute(params![sub, event])?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// How many dead letters each subscription has (those that have any).
    pub fn dead_letter_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, usize>, StoreError> {
        let conn = self.conn();
        let counts = conn
            .prepare_cached(
                "SELECT subscription_id, COUNT(*) FROM dead_letters
                 WHERE subscription_id IS NOT NULL GROUP BY subscription_id",
            )?
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })?
            .collect::<Result<_, _>>()?;
        Ok(counts)
    }

    /// Dead letters, newest first; of one subscription when given.
    pub fn dead_letters(
        &self,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(
                "SELECT id, subscription_id, url, delivery_id, event_id, kind, body, attempts, error, failed_at
                 FROM dead_letters WHERE (?1 IS NULL OR subscription_id = ?1)
                 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![subscription, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, u32>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(conn);
        rows.into_iter()
            .map(
                |(
                    id,
                    subscription_id,
                    url,
                    delivery_id,
                    event_id,
                    kind,
                    body,
                    attempts,
                    error,
                    at,
                )| {
                    Ok(DeadLetter {
                        id,
                        subscription_id,
                        url,
                        delivery_id,
                        event_id,
                        kind,
                        body,
                        attempts,
                        error,
                        failed_at: req_ts(at)?,
                    })
                },
            )
            .collect()
    }
}
