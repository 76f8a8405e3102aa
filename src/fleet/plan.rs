//! Plan before push: what a manifest (sent whole, or a commit of the watched repository)
//! would change against the running fleet, with nothing changed. The agent hands
//! [`Control`] a [`Planner`] once its git mirror is open, since a plan reads what only the
//! sync loop holds (the revision in force, the registry's tags, the secrets); the routes,
//! the MCP tool and `mcp-orchestration plan` all call [`Control::plan`].

use serde::{Deserialize, Serialize};

use super::control::Control;
use super::error::ControlError;
use crate::manifest::{Diagnostic, RepoFiles, TextFile};
use crate::reconcile::PlannedServer;

/// At most this many policy files in one request, as a repository's `policies/` would hold.
pub const MAX_POLICY_FILES: usize = 256;

/// What to plan: a commit of the watched repository, or the files themselves.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum PlanRequest {
    Commit {
        /// A commit of the watched repository (a full id, an abbreviation of at least 4
        /// hex characters, or a branch of the remote such as `main` or `main~1`, as the
        /// agent last fetched it).
        #[schemars(length(min = 1))]
        commit: String,
    },
    Files {
        /// The manifest and what lies beside it, as a working copy has them.
        files: PlanFiles,
    },
}

impl PlanRequest {
    /// Reads a request, saying plainly what is wrong with one that is neither kind.
    pub fn from_json(body: &[u8]) -> Result<PlanRequest, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Either {
            #[serde(default)]
            commit: Option<String>,
            #[serde(default)]
            files: Option<PlanFiles>,
        }
        let either: Either =
            serde_json::from_slice(body).map_err(|e| format!("invalid plan request: {e}"))?;
        match (either.commit, either.files) {
            (Some(commit), None) => Ok(PlanRequest::Commit { commit }),
            (None, Some(files)) => Ok(PlanRequest::Files { files }),
            _ => Err("give either `commit` or `files`, not both or neither".to_owned()),
        }
    }
}

/// A repository's files that decide what runs.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanFiles {
    pub manifest: PlanFile,
    /// `policies/*.yaml`: the repository's own named update policies.
    #[serde(default)]
    #[schemars(length(max = MAX_POLICY_FILES))]
    pub policies: Vec<PlanFile>,
    /// `trust-policy.yaml`: narrows the agent's trust policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<PlanFile>,
}

/// One file: the path diagnostics name it by, and its text.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    #[schemars(regex(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,1024}$"))]
    pub path: String,
    pub text: String,
}

impl PlanFiles {
    /// The files as validation reads them; a path that could not name a file is refused.
    pub fn into_repo_files(self) -> Result<RepoFiles, ControlError> {
        if self.policies.len() > MAX_POLICY_FILES {
            return Err(ControlError::Invalid(format!(
                "{} policy files; at most {MAX_POLICY_FILES} are planned at once",
                self.policies.len()
            )));
        }
        let file = |f: PlanFile| -> Result<TextFile, ControlError> {
            if f.path.is_empty()
                || f.path.chars().count() > 1024
                || f.path.chars().any(char::is_control)
            {
                return Err(ControlError::Invalid(format!(
                    "file path {:?} is not a path: 1 to 1024 characters, no control characters",
                    f.path
                )));
            }
            Ok(TextFile::new(f.path, f.text))
        };
        Ok(RepoFiles {
            manifest: file(self.manifest)?,
            policies: self
                .policies
                .into_iter()
                .map(file)
                .collect::<Result<_, _>>()?,
            trust: self.trust_policy.map(file).transpose()?,
        })
    }

    /// The files a working copy holds, to send.
    pub fn from_repo_files(files: &RepoFiles) -> PlanFiles {
        let file = |f: &TextFile| PlanFile {
            path: f.path.clone(),
            text: f.text.clone(),
        };
        PlanFiles {
            manifest: file(&files.manifest),
            policies: files.policies.iter().map(file).collect(),
            trust_policy: files.trust.as_ref().map(file),
        }
    }
}

/// What a manifest would change, server by server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanReport {
    /// The commit planned, when the plan is of a commit of the watched repository.
    pub commit: Option<String>,
    /// The commit in force, which the plan compares against (none before the first run).
    pub applied_commit: Option<String>,
    /// Whether the manifest passes validation; a push of an invalid one is rejected and
    /// changes nothing, so its plan has no servers.
    pub valid: bool,
    /// Validation's errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
    /// One line per server of the manifest or of what runs, in server-id order.
    pub servers: Vec<PlannedServer>,
    /// How many servers the plan changes.
    pub changes: usize,
    /// `deploy a, update b, remove c`, `no changes`, or why the manifest would be rejected.
    pub summary: String,
    /// What the plan could not know for certain (tags the registry poller has not read yet).
    pub notes: Vec<String>,
}

impl PlanReport {
    /// The plan of a manifest that fails validation.
    pub fn rejected(
        commit: Option<String>,
        applied_commit: Option<String>,
        diagnostics: Vec<Diagnostic>,
    ) -> PlanReport {
        let errors = diagnostics
            .iter()
            .filter(|d| d.severity == crate::manifest::Severity::Error)
            .count();
        PlanReport {
            commit,
            applied_commit,
            valid: false,
            diagnostics,
            servers: Vec::new(),
            changes: 0,
            summary: format!(
                "rejected: the manifest has {errors} error{}",
                if errors == 1 { "" } else { "s" }
            ),
            notes: Vec::new(),
        }
    }
}

/// Makes plans; the agent's, once its mirror is open.
#[async_trait::async_trait]
pub trait Planner: Send + Sync {
    async fn plan(&self, request: PlanRequest) -> Result<PlanReport, ControlError>;
}

impl Control {
    /// What `request`'s manifest would change; changes nothing.
    pub async fn plan(&self, request: PlanRequest) -> Result<PlanReport, ControlError> {
        let planner = self.planner().ok_or_else(|| {
            ControlError::Conflict(
                "the agent is still starting: plans can be made once its git mirror is open"
                    .to_owned(),
            )
        })?;
        planner.plan(request).await
    }
}
