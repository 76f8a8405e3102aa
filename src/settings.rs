//! The agent's settings, resolved once from flags, environment and an optional config file.
//!
//! Precedence: a flag beats its `MCP_ORCHESTRATION_*` variable (clap merges those two),
//! which beats the config file, which beats the built-in default. Every environment
//! variable the program reads is a constant in [`env`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::decode::Decoder;
use crate::manifest::{Diagnostic, TextFile};
use crate::policy::TrustPolicy;
use crate::source::{ReadError, read_text};

/// Environment variables, in one place.
pub mod env {
    /// Path of the YAML config file.
    pub const CONFIG: &str = "MCP_ORCHESTRATION_CONFIG";
    /// Path of the operator's trust policy file.
    pub const TRUST_POLICY: &str = "MCP_ORCHESTRATION_TRUST_POLICY";
    /// `human` (default) or `json`.
    pub const LOG_FORMAT: &str = "MCP_ORCHESTRATION_LOG_FORMAT";
    /// A tracing filter such as `info` or `mcp_orchestration=debug`.
    pub const LOG: &str = "MCP_ORCHESTRATION_LOG";
    /// Disables coloured output when set to anything (https://no-color.org).
    pub const NO_COLOR: &str = "NO_COLOR";
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The optional YAML config file; every key mirrors a flag.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub trust_policy: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// What the command line and environment said (clap fills this in `cli`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub trust_policy: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub log_format: LogFormat,
    pub log_level: String,
    /// `None`: the shipped trust policy.
    pub trust_policy: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("invalid config file {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid trust policy {}:\n{}", path.display(), render(diagnostics))]
    TrustPolicy {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Settings {
    pub fn resolve(over: Overrides) -> Result<Settings, SettingsError> {
        let file = match &over.config {
            Some(path) => load_config(path)?,
            None => ConfigFile::default(),
        };
        Ok(Settings {
            log_format: over.log_format.or(file.log_format).unwrap_or_default(),
            log_level: over
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
            trust_policy: over.trust_policy.or(file.trust_policy),
        })
    }

    /// The operator's trust policy: the file named in the settings, or the shipped default.
    pub fn load_trust_policy(&self) -> Result<TrustPolicy, SettingsError> {
        let Some(path) = &self.trust_policy else {
            return Ok(TrustPolicy::shipped());
        };
        let file = TextFile::new(path.display().to_string(), read_text(path)?);
        let mut d = Decoder::new(file.path.clone());
        match TrustPolicy::decode(&mut d, &file) {
            Some(t) if !d.diags.has_errors() => Ok(t),
            _ => Err(SettingsError::TrustPolicy {
                path: path.clone(),
                diagnostics: d.diags.into_vec(),
            }),
        }
    }
}

fn load_config(path: &Path) -> Result<ConfigFile, SettingsError> {
    let text = read_text(path)?;
    serde_yaml::from_str(&text).map_err(|e| SettingsError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, "log_format: json\ntrust_policy: /etc/trust.yaml\n").unwrap();
        let s = Settings::resolve(Overrides {
            config: Some(cfg.clone()),
            trust_policy: Some("/mine.yaml".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.trust_policy, Some(PathBuf::from("/mine.yaml")));
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, "log_formt: json\n").unwrap();
        let err = Settings::resolve(Overrides {
            config: Some(cfg),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("log_formt"), "{err}");
    }
}
