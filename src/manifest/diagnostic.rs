//! Located problems found in a manifest or policy file.
//!
//! A diagnostic always names the file, the line and column, and the field path, so an
//! operator can jump straight to the mistake; it never carries a source error chain because
//! everything it says is meant for people.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a problem is: errors reject the file, warnings are reported and let it through.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A position in a text file; both numbers start at 1, as editors count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Default for Position {
    /// The start of the file: where problems with the whole document are reported.
    fn default() -> Self {
        Position { line: 1, column: 1 }
    }
}

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field path, e.g. `servers[2].health_check.timeout_seconds`; empty for the document.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    /// A commit without a manifest at `path`: the whole commit is the problem.
    pub fn no_manifest(path: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: path.to_owned(),
            line: 1,
            column: 1,
            path: String::new(),
            message: format!("the commit has no manifest at `{path}`"),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Diagnostics {
    file: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>) -> Self {
        Diagnostics {
            file: file.into(),
            items: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn error(&mut self, at: Position, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, at, path, message.into());
    }

    pub fn warning(&mut self, at: Position, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, at, path, message.into());
    }

    fn push(&mut self, severity: Severity, at: Position, path: &str, message: String) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            path: path.to_owned(),
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

/// Sorts diagnostics the way a person reads them: by file, then position.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
}

/// The closest of `candidates` to `input`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["name", "description", "health_check"];
        assert_eq!(did_you_mean("nmae", fields), Some("name"));
        assert_eq!(did_you_mean("helth_check", fields), Some("health_check"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn displays_like_a_compiler() {
        let mut d = Diagnostics::new("m.yaml");
        d.error(Position { line: 3, column: 5 }, "servers[0].id", "bad id");
        assert_eq!(
            d.into_vec()[0].to_string(),
            "m.yaml:3:5: error: bad id (at servers[0].id)"
        );
    }
}
