//! Client configurations as the agent keeps them: one draft per (client, profile) being
//! edited, the signed artifacts published from drafts (stored whole, as signed, and never
//! changed), and each deployment of an artifact into a client's file on this host.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, req_ts, ts};

/// A draft: the configuration payload being edited for (client, profile).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigDraft {
    pub client: String,
    pub profile: String,
    /// The payload as JSON text.
    pub payload: String,
    /// The artifact the draft started from, if one was published.
    pub base_artifact: Option<String>,
    pub updated_at: Timestamp,
}

/// A published artifact as stored: its id and target, and the signed JSON document.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredArtifact {
    pub id: String,
    pub client: String,
    pub profile: String,
    pub created_at: Timestamp,
    /// The artifact's JSON, exactly as signed and served.
    pub body: String,
}

/// One deployment of an artifact into a client's file.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigDeployment {
    pub id: i64,
    pub client: String,
    pub profile: String,
    pub path: String,
    pub artifact_id: String,
    /// The digest of the managed entries as written (to tell a later edit outside).
    pub digest: String,
    pub backup: Option<String>,
    /// Whether the file changed (a deploy of what was there already writes nothing).
    pub changed: bool,
    pub deployed_at: Timestamp,
}

impl Store {
    pub fn config_draft(
        &self,
        client: &str,
        profile: &str,
    ) -> Result<Option<ConfigDraft>, StoreError> {
        draft_row(&self.conn(), client, profile)
    }

    /// Reads the draft of (client, profile) and writes what `change` makes of it, with the
    /// connection held throughout, so two edits from different surfaces never lose one
    /// another. `change` may refuse (its error), and then nothing is written.
    pub fn update_config_draft<E>(
        &self,
        client: &str,
        profile: &str,
        change: impl FnOnce(Option<ConfigDraft>) -> Result<ConfigDraft, E>,
    ) -> Result<Result<ConfigDraft, E>, StoreError> {
        let conn = self.conn();
        let current = draft_row(&conn, client, profile)?;
        let d = match change(current) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        conn.prepare_cached(
            "INSERT INTO config_drafts (client, profile, payload, base_artifact, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (client, profile) DO UPDATE
             SET payload = ?3, base_artifact = ?4, updated_at = ?5",
        )?
        .execute(params![
            d.client,
            d.profile,
            d.payload,
            d.base_artifact,
            ts(d.updated_at)
        ])?;
        Ok(Ok(d))
    }

    /// Forgets the draft; whether there was one.
    pub fn clear_config_draft(&self, client: &str, profile: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM config_drafts WHERE client = ?1 AND profile = ?2")?
            .execute(params![client, profile])?
            > 0)
    }

    /// Stores a newly published artifact and forgets the draft it came from, in one
    /// transaction: only if the latest artifact of its target is still `parent` (false
    /// otherwise: another publish came first, and nothing is stored), and forgetting the
    /// draft only if it still holds `from_draft` (an edit made while signing is kept). An
    /// artifact is immutable: storing the same id again changes nothing.
    pub fn publish_config_artifact(
        &self,
        a: &StoredArtifact,
        parent: Option<&str>,
        from_draft: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let latest: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM config_artifacts WHERE client = ?1 AND profile = ?2
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![a.client, a.profile], |r| r.get(0))
            .optional()?;
        if latest.as_deref() != parent {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO config_artifacts (id, client, profile, created_at, seq, body)
             VALUES (?1, ?2, ?3, ?4,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM config_artifacts), ?5)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![a.id, a.client, a.profile, ts(a.created_at), a.body])?;
        if let Some(payload) = from_draft {
            tx.prepare_cached(
                "DELETE FROM config_drafts WHERE client = ?1 AND profile = ?2 AND payload = ?3",
            )?
            .execute(params![a.client, a.profile, payload])?;
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn config_artifact(&self, id: &str) -> Result<Option<StoredArtifact>, StoreError> {
        let row = self
            .conn()
            .prepare_cached(
                "SELECT id, client, profile, created_at, body FROM config_artifacts WHERE id = ?1",
            )?
            .query_row(params![id], artifact_row)
            .optional()?;
        row.map(artifact).transpose()
    }

    /// The artifacts published for (client, profile), newest first.
    pub fn config_artifacts(
        &self,
        client: &str,
        profile: &str,
        limit: usize,
    ) -> Result<Vec<StoredArtifact>, StoreError> {
        let rows = self
            .conn()
            .prepare_cached(
                "SELECT id, client, profile, created_at, body FROM config_artifacts
                 WHERE client = ?1 AND profile = ?2 ORDER BY seq DESC LIMIT ?3",
            )?
            .query_map(params![client, profile, limit as i64], artifact_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(artifact).collect()
    }

    pub fn record_config_deployment(&self, d: &ConfigDeployment) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO config_deployments
             (client, profile, path, artifact_id, digest, backup, changed, deployed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            d.client,
            d.profile,
            d.path,
            d.artifact_id,
            d.digest,
            d.backup,
            d.changed,
            ts(d.deployed_at)
        ])?;
        Ok(conn.last_insert_rowid())
    }

    /// The last deployment of (client, profile) into `path`, if any.
    pub fn last_config_deployment(
        &self,
        client: &str,
        profile: &str,
        path: &str,
    ) -> Result<Option<ConfigDeployment>, StoreError> {
        let row = self
            .conn()
            .prepare_cached(
                "SELECT id, client, profile, path, artifact_id, digest, backup, changed, deployed_at
                 FROM config_deployments WHERE client = ?1 AND profile = ?2 AND path = ?3
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![client, profile, path], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, bool>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .optional()?;
        row.map(
            |(id, client, profile, path, artifact_id, digest, backup, changed, at)| {
                Ok(ConfigDeployment {
                    id,
                    client,
                    profile,
                    path,
                    artifact_id,
                    digest,
                    backup,
                    changed,
                    deployed_at: req_ts(at)?,
                })
            },
        )
        .transpose()
    }
}

type ArtifactRow = (String, String, String, String, String);

fn artifact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn artifact((id, client, profile, at, body): ArtifactRow) -> Result<StoredArtifact, StoreError> {
    Ok(StoredArtifact {
        id,
        client,
        profile,
        created_at: req_ts(at)?,
        body,
    })
}

/// The draft of (client, profile), on a connection the caller holds.
fn draft_row(
    conn: &rusqlite::Connection,
    client: &str,
    profile: &str,
) -> Result<Option<ConfigDraft>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT payload, base_artifact, updated_at FROM config_drafts
             WHERE client = ?1 AND profile = ?2",
        )?
        .query_row(params![client, profile], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    row.map(|(payload, base_artifact, at)| {
        Ok(ConfigDraft {
            client: client.to_owned(),
            profile: profile.to_owned(),
            payload,
            base_artifact,
            updated_at: req_ts(at)?,
        })
    })
    .transpose()
}
