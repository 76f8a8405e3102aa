//! Writing an artifact's entries into a client's file, shared by the agent's deploy and
//! the CLI's (`install`), reading what a file holds under given names (`read_entries`),
//! and keeping the agent's own deploys below the home whose files it manages (`confine`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};

use super::deploy;
use super::registry::{Client, Scope};
use crate::fleet::ControlError;

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    pub deployed: super::deploy::Deployed,
    pub entries: Vec<String>,
    pub removed: Vec<String>,
}

/// Why [`install`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the artifact's payload is not an object of entries")]
    NotEntries,
    #[error(transparent)]
    Deploy(#[from] super::deploy::DeployError),
}

/// Writes `payload`'s entries into the client's file at `path`, removing the entries of
/// `previously` (what an earlier deploy of the same configuration wrote) that are no longer
/// in it. An entry of the same name that was not ours is refused unless `force`, or unless
/// it already is exactly ours (checked under the file's lock). Shared by the agent's
/// deploy and the CLI's.
pub fn install(
    path: &std::path::Path,
    client: &Client,
    payload: &Value,
    previously: &BTreeSet<String>,
    force: bool,
) -> Result<Installed, InstallError> {
    let managed: BTreeMap<String, Value> = payload
        .as_object()
        .ok_or(InstallError::NotEntries)?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deployed = deploy::deploy_guarded(path, client, &managed, previously, !force)?;
    Ok(Installed {
        deployed,
        entries: managed.keys().cloned().collect(),
        removed: previously
            .iter()
            .filter(|n| !managed.contains_key(*n))
            .cloned()
            .collect(),
    })
}

/// Why the entries of a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Deploy(#[from] super::deploy::DeployError),
}

/// The entries named `names` in the client's file at `path` (none when it does not
/// exist).
pub fn read_entries(
    path: &std::path::Path,
    client: &Client,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, Value>, ReadError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| super::deploy::DeployError::NotUtf8 {
            path: path.to_owned(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(super::deploy::DeployError::Io {
                action: "read",
                path: path.to_owned(),
                source: e,
            }
            .into());
        }
    };
    Ok(super::edit::read_managed(client, path, &text, names)
        .map_err(super::deploy::DeployError::from)?)
}

/// A deploy the agent makes writes only below the home directory whose client files it
/// manages: a project directory outside it, or a file whose symlinks lead out of it (or
/// nowhere), is refused. An API or MCP caller cannot make it write elsewhere on its host.
pub(super) fn confine(
    scope: &Scope,
    target: &std::path::Path,
    home: &std::path::Path,
) -> Result<(), ControlError> {
    let home = real_path(home);
    let refused = |code: &'static str, message: String| ControlError::Refused {
        code,
        message,
        details: json!({ "home": home.display().to_string() }),
    };
    if let Scope::Project(dir) = scope {
        let real = match std::fs::canonicalize(dir) {
            Ok(real) if dir.is_absolute() && real.is_dir() => real,
            _ => {
                return Err(refused(
                    "PROJECT_DIR_NOT_FOUND",
                    format!(
                        "`{}` is not an existing directory (by absolute path) on the agent's host",
                        dir.display()
                    ),
                ));
            }
        };
        if !real.starts_with(&home) {
            return Err(refused(
                "PROJECT_DIR_OUTSIDE_HOME",
                format!(
                    "`{}` is outside {}, the home whose client files the agent manages",
                    dir.display(),
                    home.display()
                ),
            ));
        }
    }
    if target.symlink_metadata().is_ok() && !target.exists() {
        return Err(refused(
            "CLIENT_FILE_INVALID",
            format!(
                "{} is a symlink that leads nowhere; it was left untouched",
                target.display()
            ),
        ));
    }
    // The nearest part of the path that exists, with its symlinks resolved, must lie in
    // the home (or above it, when the home itself is still to be made).
    let existing = target.ancestors().find(|a| a.exists());
    if let Some(existing) = existing {
        let real = real_path(existing);
        if !real.starts_with(&home) && !home.starts_with(&real) {
            return Err(refused(
                "CLIENT_FILE_OUTSIDE_HOME",
                format!(
                    "{} leads to {}, outside {}, the home whose client files the agent manages",
                    target.display(),
                    real.display(),
                    home.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `path` with the symlinks of its longest existing part resolved (the rest, still to be
/// made, cannot hold any).
fn real_path(path: &std::path::Path) -> PathBuf {
    for existing in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let rest = path
                .strip_prefix(existing)
                .unwrap_or(std::path::Path::new(""));
            return real.join(rest);
        }
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> &'static Client {
        crate::clients::registry::client(id).unwrap()
    }

    #[test]
    fn install_refuses_an_entry_it_did_not_write_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        let original =
            "{\n  \"mcpServers\": {\n    \"fleet\": { \"url\": \"http://theirs/mcp\" }\n  }\n}\n";
        std::fs::write(&path, original).unwrap();
        let ours = json!({ "fleet": { "url": "http://127.0.0.1:7071/mcp" } });
        let e = install(&path, client("cursor"), &ours, &BTreeSet::new(), false).unwrap_err();
        assert!(
            matches!(
                e,
                InstallError::Deploy(super::super::deploy::DeployError::Unmanaged { ref names, .. })
                    if names == &["fleet"]
            ),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
        // Forced, it replaces the entry; the next deploy of ours knows it is ours.
        let done = install(&path, client("cursor"), &ours, &BTreeSet::new(), true).unwrap();
        assert!(done.deployed.changed);
        let previously: BTreeSet<String> = ["fleet".to_owned()].into();
        let again = install(&path, client("cursor"), &ours, &previously, false).unwrap();
        assert!(!again.deployed.changed);
        // An entry that is already exactly ours is taken over without `force`.
        let fresh = install(&path, client("cursor"), &ours, &BTreeSet::new(), false).unwrap();
        assert!(!fresh.deployed.changed);
    }
}
