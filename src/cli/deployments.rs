//! The CLI's record of the client files it deployed on this machine, so that the next
//! deploy knows which entries it wrote (and may replace or remove) and `config status` knows
//! what each file should hold. One JSON file, written atomically with mode 0600 in a 0700
//! directory (the default place is `settings::user_state_dir`):
//!
//! ```json
//! {"version": 1, "files": {"/home/u/.cursor/mcp.json": [
//!   {"client": "cursor", "profile": "default", "agent_url": "http://127.0.0.1:7070",
//!    "artifact": "sha256:…", "entries": ["mcp-orchestration"], "digest": "<hex>",
//!    "deployed_at": "…"}
//! ]}}
//! ```
//!
//! A file holds one record per (client, profile) deployed into it. A file writable by
//! group or others is refused: whoever can edit it could make a deploy remove entries.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

const FILE_MODE: u32 = 0o600;
const VERSION: u32 = 1;

/// One deploy of a (client, profile) into a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub client: String,
    pub profile: String,
    /// The agent the artifact came from (and whose keys verified it).
    pub agent_url: String,
    /// The artifact deployed.
    pub artifact: String,
    /// The entries it wrote, which the next deploy of the same configuration manages.
    pub entries: Vec<String>,
    /// `clients::deploy::digest` of those entries as written.
    pub digest: String,
    pub deployed_at: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    files: BTreeMap<String, Vec<Deployment>>,
}

impl Default for StateFile {
    fn default() -> Self {
        StateFile {
            version: VERSION,
            files: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct Deployments {
    path: PathBuf,
    file: StateFile,
}

impl Deployments {
    /// Reads the record at `path`; a missing file records nothing.
    pub fn load(path: &Path) -> anyhow::Result<Deployments> {
        let (bytes, mode) = match crate::clients::keys::read_small(path) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Deployments {
                    path: path.to_owned(),
                    file: StateFile::default(),
                });
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the deployments file {}", path.display())
                });
            }
        };
        if mode & 0o022 != 0 {
            bail!(
                "the deployments file {} is writable by group or others (mode {mode:04o}); \
                 refusing it (chmod 600 it if it is yours)",
                path.display()
            );
        }
        let file: StateFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("the deployments file {} is not valid", path.display()))?;
        if file.version != VERSION {
            bail!(
                "the deployments file {} is version {}, which this CLI does not know (it writes {VERSION})",
                path.display(),
                file.version
            );
        }
        Ok(Deployments {
            path: path.to_owned(),
            file,
        })
    }

    /// The last deploy of (`client`, `profile`) into `file`.
    pub fn get(&self, file: &Path, client: &str, profile: &str) -> Option<&Deployment> {
        self.file
            .files
            .get(&key(file))?
            .iter()
            .find(|d| d.client == client && d.profile == profile)
    }

    /// Every recorded deploy, by file.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Deployment)> {
        self.file
            .files
            .iter()
            .flat_map(|(path, ds)| ds.iter().map(move |d| (path.as_str(), d)))
    }

    /// Records `deployment` into `file`, replacing the earlier one of its (client, profile).
    pub fn record(&mut self, file: &Path, deployment: Deployment) {
        let list = self.file.files.entry(key(file)).or_default();
        list.retain(|d| !(d.client == deployment.client && d.profile == deployment.profile));
        list.push(deployment);
        list.sort_by(|a, b| (&a.client, &a.profile).cmp(&(&b.client, &b.profile)));
    }

    /// Writes the record: a temporary sibling (0600) synced and renamed over the file.
    pub fn save(&self) -> anyhow::Result<()> {
        let context = || format!("cannot write the deployments file {}", self.path.display());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(context)?;
        }
        let mut json = serde_json::to_vec_pretty(&self.file).with_context(context)?;
        json.push(b'\n');
        crate::clients::keys::write_atomic(&self.path, &json, FILE_MODE).with_context(context)
    }
}

fn key(file: &Path) -> String {
    file.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn deployment(profile: &str, artifact: &str) -> Deployment {
        Deployment {
            client: "cursor".into(),
            profile: profile.into(),
            agent_url: "http://127.0.0.1:7070".into(),
            artifact: artifact.into(),
            entries: vec!["mcp-orchestration".into()],
            digest: "00".into(),
            deployed_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn records_per_file_and_profile_survive_a_round_trip_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mcp-orchestration/deployments.json");
        let file = Path::new("/home/u/.cursor/mcp.json");
        let mut state = Deployments::load(&path).unwrap();
        assert!(state.get(file, "cursor", "default").is_none());
        state.record(file, deployment("default", "sha256:1"));
        state.record(file, deployment("dev", "sha256:2"));
        state.record(file, deployment("default", "sha256:3"));
        state.save().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let state = Deployments::load(&path).unwrap();
        assert_eq!(
            state.get(file, "cursor", "default").unwrap().artifact,
            "sha256:3"
        );
        assert_eq!(
            state.get(file, "cursor", "dev").unwrap().artifact,
            "sha256:2"
        );
        assert_eq!(state.all().count(), 2);

        // Writable by others: refused, not trusted.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Deployments::load(&path).unwrap_err();
        assert!(
            format!("{e:#}").contains("writable by group or others"),
            "{e:#}"
        );
    }
}
