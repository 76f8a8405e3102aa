//! The agent's memory in SQLite: runs (one per commit seen), their stages, rollouts, and the
//! per-server operator holds.
//!
//! One [`Store`] owns the connection and every SQL statement; migrations are an append-only
//! list keyed by `PRAGMA user_version`. It stores what it is told and enforces no business
//! rule. Calls are synchronous: async callers wrap them in `spawn_blocking` (see
//! [`Store::call`]).
//!
//! This file holds the connection and the `call` façade. `Store`'s other methods live with
//! the records they touch, one file each: `runs`, `rollouts`, `health_events`, `servers`
//! (failed versions, pins, holds), `meta`, `events` (the event log) and `subscriptions`
//! (webhook subscriptions to it, and dead letters); the typed rows are
//! in `records` and the schema in `migrations`.

mod configs;
mod events;
mod health_events;
mod meta;
mod migrations;
mod records;
mod rollouts;
mod runs;
mod servers;
mod subscriptions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags};

pub use configs::{ConfigDeployment, ConfigDraft, StoredArtifact};
pub use events::{Event, EventFilter};
pub use records::*;
pub use subscriptions::{DeadLetter, NewDeadLetter, Subscription};

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
}

#[cfg(test)]
mod tests;
