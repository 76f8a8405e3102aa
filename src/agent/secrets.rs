//! Values for config requirements that do not live in the manifest: the secrets file (a
//! YAML mapping of `NAME: value`) first, then the agent's own environment.

use std::collections::BTreeMap;
use std::path::Path;

use crate::source::read_text;

#[derive(Clone, Debug, Default)]
pub struct Secrets {
    file: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Read(#[from] crate::source::ReadError),
    #[error("the secrets file {path} must be a YAML mapping of NAME: value: {message}")]
    Format { path: String, message: String },
}

impl Secrets {
    pub fn load(path: Option<&Path>) -> Result<Secrets, SecretsError> {
        let Some(path) = path else {
            return Ok(Secrets::default());
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
            .collect::<Result<_, _>>()?;
        Ok(Secrets { file })
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.file
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}
