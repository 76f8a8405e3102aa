//! Why an operation on the fleet could not be carried out, in four kinds every surface can
//! show: the HTTP API maps them to status codes, the MCP tools to tool errors, and both
//! carry the same stable code and message.

use serde_json::{Value, json};

use crate::store::StoreError;

/// What an operator asked for does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Server,
    Rollout,
    Revision,
    /// A profile of the applied manifest (`default` always exists).
    Profile,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}", not_found_message(*.what, .id))]
    NotFound { what: Missing, id: String },
    /// The request is understood but the fleet's state does not allow it now.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a version that is not one, a limit out of range).
    #[error("{0}")]
    Invalid(String),
    /// The agent could not do its part; the message carries every cause.
    #[error("{0}")]
    Internal(String),
}

fn not_found_message(what: Missing, id: &str) -> String {
    match what {
        Missing::Server => format!("no server `{id}` in the applied manifest"),
        Missing::Rollout => format!("no rollout `{id}`"),
        Missing::Revision => {
            format!("no run for a commit starting with `{id}` (give at least 4 hex characters)")
        }
        Missing::Profile => format!(
            "no profile `{id}` in the applied manifest (`default` is the whole fleet; the gateway's `GET /profiles` lists the others)"
        ),
    }
}

impl ControlError {
    pub fn server_not_found(id: &str) -> ControlError {
        ControlError::NotFound {
            what: Missing::Server,
            id: id.to_owned(),
        }
    }

    pub fn profile_not_found(id: &str) -> ControlError {
        ControlError::NotFound {
            what: Missing::Profile,
            id: id.to_owned(),
        }
    }

    /// The stable code both surfaces report (documented with the API's error envelope).
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::NotFound {
                what: Missing::Server,
                ..
            } => "SERVER_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Rollout,
                ..
            } => "ROLLOUT_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Revision,
                ..
            } => "REVISION_NOT_FOUND",
            ControlError::NotFound {
                what: Missing::Profile,
                ..
            } => "PROFILE_NOT_FOUND",
            ControlError::Conflict(_) => "CONFLICT",
            ControlError::Invalid(_) => "VALIDATION_FAILED",
            ControlError::Internal(_) => "INTERNAL",
        }
    }

    /// Structured context for a client (`{"server_id": …}`), or null.
    pub fn details(&self) -> Value {
        match self {
            ControlError::NotFound {
                what: Missing::Server,
                id,
            } => json!({ "server_id": id }),
            ControlError::NotFound {
                what: Missing::Profile,
                id,
            } => json!({ "profile": id }),
            _ => Value::Null,
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> ControlError {
        ControlError::Internal(crate::error_text::chain(&e))
    }
}
