//! Values for config requirements that do not live in the manifest: the secrets file (a
//! YAML mapping of `NAME: value`) first, then those variables of the agent's own
//! environment that the operator's trust policy lists in `allowed_env` (never
//! `MCP_ORCHESTRATION_*`). A pushed commit can therefore not ask for the agent's API key, its
//! webhook secret or a cloud credential it happens to run with.
//!
//! Every value handed out is registered with the [`Redactor`], so a server that prints it
//! cannot carry it into a rollout reason, an event or a notification.

use std::collections::BTreeMap;
use std::path::Path;

use crate::manifest::policy::TrustPolicy;
use crate::redact::Redactor;
use crate::source::read_text;

#[derive(Clone, Debug, Default)]
pub struct Secrets {
    file: BTreeMap<String, String>,
    /// Which environment variables may be read (`allowed_env`).
    trust: TrustPolicy,
    redactor: Redactor,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Read(#[from] crate::source::ReadError),
    #[error("the secrets file {path} must be a YAML mapping of NAME: value: {message}")]
    Format { path: String, message: String },
}

impl Secrets {
    pub fn load(
        path: Option<&Path>,
        trust: &TrustPolicy,
        redactor: &Redactor,
    ) -> Result<Secrets, SecretsError> {
        let mut secrets = Secrets {
            file: BTreeMap::new(),
            trust: trust.clone(),
            redactor: redactor.clone(),
        };
        let Some(path) = path else {
            return Ok(secrets);
        };
        let text = read_text(path)?;
        let file: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&text).map_err(|e| SecretsError::Format {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let file = file
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(SecretsError::Format {
                            path: path.display().to_string(),
                            message: format!("`{k}` has a {other:?} value; use a string"),
                        });
                    }
                };
                Ok((k, v))
            })
            .collect::<Result<BTreeMap<String, String>, _>>()?;
        // The whole file is secret to the redactor, not only what a manifest asked for yet.
        file.values().for_each(|v| secrets.redactor.add(v));
        secrets.file = file;
        Ok(secrets)
    }

    pub fn get(&self, name: &str) -> Option<String> {
        let value = self.file.get(name).cloned().or_else(|| {
            self.trust
                .allows_env(name)
                .then(|| std::env::var(name).ok())
                .flatten()
        })?;
        self.redactor.add(&value);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_environment_is_read_only_through_the_allow_list() {
        // PATH and HOME exist in every test environment; the agent's own prefix is refused
        // even when a policy would match it.
        let trust = TrustPolicy {
            allowed_env: vec!["HOME".into(), "MCP_*".into()],
            ..TrustPolicy::default()
        };
        let redactor = Redactor::default();
        let s = Secrets::load(None, &trust, &redactor).unwrap();
        assert!(s.get("PATH").is_none(), "not listed");
        let home = s.get("HOME").expect("listed");
        if home.len() >= 4 {
            assert_eq!(redactor.redact(&home), crate::redact::MASK);
        }
        assert!(s.get("MCP_ORCHESTRATION_API_KEY").is_none());
    }

    #[test]
    fn every_value_of_the_secrets_file_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(&path, "TOKEN: abcd-1234\nPORT: 8080\n").unwrap();
        let redactor = Redactor::default();
        let s = Secrets::load(Some(&path), &TrustPolicy::default(), &redactor).unwrap();
        assert_eq!(redactor.redact("t=abcd-1234"), "t=[redacted]");
        assert_eq!(s.get("TOKEN").as_deref(), Some("abcd-1234"));
    }
}
