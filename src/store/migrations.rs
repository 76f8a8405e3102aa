//! Schema migrations: append-only, applied in order, tracked by `PRAGMA user_version`.
//! Never edit a migration that has shipped; add a new one.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: runs, their stages, rollouts, operator holds, key/value.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        commit_id TEXT NOT NULL,
        author TEXT,
        message TEXT,
        committed_at TEXT,
        trigger TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        finished_at TEXT,
        result TEXT NOT NULL,
        reason TEXT,
        errors TEXT
    );
    CREATE INDEX runs_by_commit ON runs (commit_id);
    CREATE TABLE run_stages (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        stage TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        detail TEXT,
        PRIMARY KEY (run_id, stage)
    );
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs (id) ON DELETE SET NULL,
        server_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        action TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT,
        image TEXT,
        command TEXT,
        revision TEXT,
        strategy TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        instance_id TEXT,
        endpoint TEXT
    );
    CREATE INDEX rollouts_by_server ON rollouts (server_id, id);
    CREATE TABLE servers (
        server_id TEXT PRIMARY KEY,
        held_by_operator INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: upgrades and rollbacks: failed-version memory, operator pins, rollout timelines.
    "CREATE TABLE failed_versions (
        server_id TEXT NOT NULL,
        version TEXT NOT NULL,
        spec_hash TEXT NOT NULL,
        reason TEXT NOT NULL,
        rollout_id INTEGER REFERENCES rollouts (id) ON DELETE SET NULL,
        failed_at TEXT NOT NULL,
        PRIMARY KEY (server_id, version)
    );
    CREATE TABLE server_pins (
        server_id TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        reason TEXT NOT NULL,
        pinned_at TEXT NOT NULL
    );
    CREATE TABLE rollout_steps (
        rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        step TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX rollout_steps_by_rollout ON rollout_steps (rollout_id, at);
    CREATE TABLE rollout_probes (
        rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        latency_ms REAL NOT NULL
    );
    CREATE INDEX rollout_probes_by_rollout ON rollout_probes (rollout_id, at);
    ALTER TABLE rollouts ADD COLUMN digest TEXT;
    ALTER TABLE rollouts ADD COLUMN rolled_back_to TEXT;",
    // 3: health: state transitions, recovery attempts and overrides, per server.
    "CREATE TABLE health_events (
        id INTEGER PRIMARY KEY,
        server_id TEXT NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        detail TEXT NOT NULL,
        instance_id TEXT
    );
    CREATE INDEX health_events_by_server ON health_events (server_id, id);",
    // 4: one event log of every state change, for `GET /events`. AUTOINCREMENT so an id is
    // never reused after pruning: a client resuming with `Last-Event-ID` must not skip any.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        server_id TEXT,
        summary TEXT NOT NULL,
        data TEXT NOT NULL
    );",
    // 5: reading one server's events without scanning the whole log.
    "CREATE INDEX events_by_server ON events (server_id, id);",
    // 6: the tool-set guard's comparison of a rollout's versions (JSON `ToolDiff`).
    "ALTER TABLE rollouts ADD COLUMN tool_diff TEXT;",
    // 7: client configurations: drafts being edited (one per client and profile), the
    // signed artifacts published from them (immutable, content-addressed), and where each
    // was deployed.
    "CREATE TABLE config_drafts (
        client TEXT NOT NULL,
        profile TEXT NOT NULL,
        payload TEXT NOT NULL,
        base_artifact TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (client, profile)
    );
    CREATE TABLE config_artifacts (
        id TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        profile TEXT NOT NULL,
        created_at TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX config_artifacts_by_target ON config_artifacts (client, profile, seq);
    CREATE TABLE config_deployments (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        profile TEXT NOT NULL,
        path TEXT NOT NULL,
        artifact_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        backup TEXT,
        changed INTEGER NOT NULL,
        deployed_at TEXT NOT NULL
    );
    CREATE INDEX config_deployments_by_target ON config_deployments (client, profile, id);",
    // 8: webhook subscriptions to the event log, each with the id of the last event it
    // delivered or gave up on (its cursor), and the deliveries given up on after the last
    // try (of a subscription, or of a manifest's notification channel: no subscription).
    "CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL,
        cursor INTEGER NOT NULL
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        subscription_id TEXT,
        url TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        event_id INTEGER,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        failed_at TEXT NOT NULL
    );
    CREATE INDEX dead_letters_by_subscription ON dead_letters (subscription_id, id);",
    // 9: each run keeps the plan it applied (JSON, one line per server).
    "ALTER TABLE runs ADD COLUMN plan TEXT",
];

pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub fn apply(conn: &Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        // Each migration and its version bump commit together, or not at all.
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))?;
    }
    Ok(())
}
