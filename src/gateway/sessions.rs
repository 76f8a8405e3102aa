//! Client sessions that outlive the agent. A gateway session id is self-validating,
//! `{random}.{mac}` with an HMAC-SHA256 under a key kept in the data dir, and the client's
//! `initialize` parameters are kept beside it (`gateway-sessions/{id}.json`). After the
//! agent restarts (`kill -9` included), a request on an old session id is served: rmcp
//! asks [`SessionFiles::load`], re-creates the session under the same id
//! ([`SignedSessions::restore_session`]) and replays the handshake, so the client never
//! notices. An id this agent did not sign is unknown (404), whatever files exist; so is a
//! signed one whose file is gone (the client ended it, or it was forgotten).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hmac::{Hmac, Mac};
use rmcp::model::{ClientJsonRpcMessage, InitializeRequestParams, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, create_local_session,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionState, SessionStore, SessionStoreError,
};
use sha2::Sha256;
use tracing::warn;

/// How long a kept session stays restorable after it was opened or last restored.
const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many hex digits of the MAC an id carries (128 bits).
const MAC_DIGITS: usize = 32;

/// The key that signs session ids.
#[derive(Clone)]
pub struct SessionKey(Arc<[u8; 32]>);

impl SessionKey {
    /// The key in `path`, made (0600) when there is none.
    pub fn load_or_create(path: &Path) -> std::io::Result<SessionKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(bytes) = hex::decode(text.trim())
                    && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
                {
                    return Ok(SessionKey(Arc::new(key)));
                }
                warn!(path = %path.display(), "the gateway's session key is not 64 hex digits; making a new one (open sessions start over)");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = random::<32>();
        write_private(path, hex::encode(key).as_bytes())?;
        Ok(SessionKey(Arc::new(key)))
    }

    fn mac(&self, random: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(random.as_bytes());
        hex::encode(mac.finalize().into_bytes())[..MAC_DIGITS].to_owned()
    }

    /// A new session id.
    pub fn sign(&self) -> String {
        let random = hex::encode(random::<16>());
        let mac = self.mac(&random);
        format!("{random}.{mac}")
    }

    /// Whether this key signed `id` (which also makes it safe as a file name).
    pub fn signed(&self, id: &str) -> bool {
        let Some((random, mac)) = id.split_once('.') else {
            return false;
        };
        // Lower-case hex only, as `sign` writes it: one token, one spelling, one file.
        let hex = |t: &str| t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        random.len() == 32 && hex(random) && mac.len() == MAC_DIGITS && hex(mac) && {
            let mut expected = Hmac::<Sha256>::new_from_slice(self.0.as_slice())
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
            expected.update(random.as_bytes());
            hex::decode(mac).is_ok_and(|m| {
                expected
                    .finalize()
                    .into_bytes()
                    .get(..MAC_DIGITS / 2)
                    .is_some_and(|want| constant_time_eq(want, &m))
            })
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `N` random bytes, from the source of the API keys (`api::generate_key`: 32 bytes).
fn random<const N: usize>() -> [u8; N] {
    const { assert!(N <= 32) };
    let key = crate::api::generate_key();
    let bytes = hex::decode(key.trim_start_matches("mcpo_")).unwrap_or_default();
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Written beside and renamed, so a reader (or a kill mid-write) never sees half.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// rmcp's in-memory sessions, under ids this agent signs.
pub struct SignedSessions {
    inner: LocalSessionManager,
    key: SessionKey,
    /// When a request last named each open session.
    seen: std::sync::Mutex<std::collections::HashMap<SessionId, std::time::Instant>>,
}

impl SignedSessions {
    pub fn new(key: SessionKey) -> SignedSessions {
        let mut inner = LocalSessionManager::default();
        // rmcp's own idle timeout ends a session's worker but leaves the session in its
        // map, where every later request on it fails; `close_idle` closes it instead.
        inner.session_config.keep_alive = None;
        SignedSessions {
            inner,
            key,
            seen: std::sync::Mutex::default(),
        }
    }

    fn saw(&self, id: &SessionId) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), std::time::Instant::now());
    }

    /// Closes the sessions no request named for `idle` (the shortcut's calls count, which
    /// never reach rmcp's session worker). A closed session's file stays: its client's
    /// next request restores it, as after a restart. How many were closed.
    pub async fn close_idle(&self, idle: Duration) -> usize {
        let stale: Vec<SessionId> = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, at)| at.elapsed() >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            if let Err(e) = self.close_session(id).await {
                warn!(error = %e, "cannot close an idle gateway session");
            }
        }
        stale.len()
    }

    /// How many sessions are open in this process.
    pub async fn open(&self) -> usize {
        self.inner.sessions.read().await.len()
    }
}

impl SessionManager for SignedSessions {
    type Error = LocalSessionManagerError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id: SessionId = self.key.sign().into();
        let (handle, worker) = create_local_session(id.clone(), self.inner.session_config.clone());
        self.inner.sessions.write().await.insert(id.clone(), handle);
        self.saw(&id);
        Ok((id, WorkerTransport::spawn(worker)))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        let open = self.inner.has_session(id).await?;
        if open {
            self.saw(id);
        }
        Ok(open)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // Only ever reached after `SessionFiles::load` vouched for the id.
        let restored = self.inner.restore_session(id.clone()).await?;
        self.saw(&id);
        Ok(restored)
    }
}

/// Each session's `initialize` parameters, one file per session id.
pub struct SessionFiles {
    dir: PathBuf,
    key: SessionKey,
}

impl SessionFiles {
    /// Keeps sessions in `dir` (made when missing), forgetting those neither opened nor
    /// restored for a week.
    pub fn open(dir: PathBuf, key: SessionKey) -> std::io::Result<SessionFiles> {
        std::fs::create_dir_all(&dir)?;
        let files = SessionFiles { dir, key };
        files.prune();
        Ok(files)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > KEPT_FOR);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for SessionFiles {
    async fn load(&self, id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        if !self.key.signed(id) {
            return Ok(None);
        }
        // Only a session whose file is there: an ended (DELETE) or forgotten session stays
        // ended, whoever still holds its id.
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Box::new(e)),
        };
        let Ok(params) = serde_json::from_slice::<InitializeRequestParams>(&bytes) else {
            warn!(
                session = id,
                "a kept session's parameters cannot be read; it is not restored"
            );
            return Ok(None);
        };
        // Restored now: kept a week from here.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(Some(SessionState::new(params)))
    }

    async fn store(&self, id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        if !self.key.signed(id) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&state.initialize_params)?;
        write_private(&self.path(id), &bytes)?;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), SessionStoreError> {
        if !self.key.signed(id) {
            return Ok(());
        }
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientCapabilities, Implementation, ProtocolVersion};

    #[test]
    fn an_id_is_signed_by_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(&dir.path().join("k")).unwrap();
        let id = key.sign();
        assert!(key.signed(&id), "{id}");
        assert_ne!(key.sign(), id, "ids are random");
        let again = SessionKey::load_or_create(&dir.path().join("k")).unwrap();
        assert!(again.signed(&id), "the key survives a restart");
        let other = SessionKey::load_or_create(&dir.path().join("other")).unwrap();
        assert!(!other.signed(&id));
        let (random, mac) = id.split_once('.').unwrap();
        let mut forged = mac.to_owned();
        forged.replace_range(0..1, if mac.starts_with('0') { "1" } else { "0" });
        assert!(!key.signed(&format!("{random}.{forged}")));
        let upper = format!("{random}.{}", mac.to_uppercase());
        for bad in [
            "",
            ".",
            "../../etc/passwd",
            &format!("{random}/x.{mac}"),
            &upper,
        ] {
            assert!(!key.signed(bad), "{bad}");
        }
    }

    /// A session no request named for the idle time is closed (gone from rmcp's map, so
    /// the next request on it restores it from its file); one a request named is kept.
    #[tokio::test]
    async fn an_idle_session_is_closed_and_a_used_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(&dir.path().join("key")).unwrap();
        let sessions = SignedSessions::new(key);
        let (id, _transport) = sessions.create_session().await.unwrap();
        assert!(sessions.has_session(&id).await.unwrap());
        assert_eq!(sessions.close_idle(Duration::from_secs(60)).await, 0);
        assert!(sessions.has_session(&id).await.unwrap(), "used just now");
        assert_eq!(sessions.close_idle(Duration::ZERO).await, 1);
        assert!(!sessions.has_session(&id).await.unwrap(), "closed");
        assert_eq!(sessions.open().await, 0);
        assert_eq!(sessions.close_idle(Duration::ZERO).await, 0, "forgotten");
    }

    #[tokio::test]
    async fn a_stored_session_loads_and_an_unsigned_one_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let key = SessionKey::load_or_create(&dir.path().join("k")).unwrap();
        let files = SessionFiles::open(dir.path().join("s"), key.clone()).unwrap();
        let id = key.sign();
        let params = InitializeRequestParams::new(
            ClientCapabilities::default(),
            Implementation::new("someone", "1"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_06_18);
        files.store(&id, &SessionState::new(params)).await.unwrap();
        let loaded = files.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.initialize_params.client_info.name, "someone");
        assert_eq!(
            loaded.initialize_params.protocol_version,
            ProtocolVersion::V_2025_06_18
        );
        files.delete(&id).await.unwrap();
        assert!(
            files.load(&id).await.unwrap().is_none(),
            "an ended session stays ended"
        );
        assert!(files.load("0123.abcd").await.unwrap().is_none());
    }
}
