//! The trust policy: which images and local commands a pushed commit may make this host run.
//!
//! It belongs to whoever runs the agent (like Argo CD's AppProject), not to whoever can push
//! to the manifest repo. A repo may carry its own `trust-policy.yaml`, which can only narrow
//! the agent's: something runs only when both allow it.

use std::path::{Component, Path};

use crate::manifest::decode::Decoder;
use crate::manifest::{TextFile, yaml};

pub const TRUST_FIELDS: &[&str] = &[
    "allowed_images",
    "allowed_commands",
    "allowed_env",
    "allowed_process_env",
    "allowed_notification_urls",
];

/// The agent's own variables: never handed to a server, whatever a policy lists.
pub const AGENT_ENV_PREFIX: &str = "MCP_ORCHESTRATION_";

/// Variables that make a program load or run code other than its own (the dynamic loader's,
/// interpreters' start-up hooks). A process server gets one only when the operator's policy
/// lists it in `allowed_process_env`: otherwise a commit could run any library on the host
/// through an allowed command.
const CODE_LOADING_ENV: &[&str] = &[
    "LD_*",
    "DYLD_*",
    "GCONV_PATH",
    // Which programs a script finds, and the shell's own start-up and function import.
    "PATH",
    "BASH_ENV",
    "BASH_FUNC_*",
    "BASHOPTS",
    "SHELLOPTS",
    "PS4",
    "ENV",
    "LUA_INIT*",
    "PERLLIB",
    "PYTHONUSERBASE",
    "CLASSPATH",
    "GEM_HOME",
    "GEM_PATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
];

/// Whether `name` is a variable that makes a program load foreign code.
pub fn loads_code(name: &str) -> bool {
    CODE_LOADING_ENV.iter().any(|p| name_matches(name, p))
}

const DEFAULT: &str = include_str!("../../../policies/trust-policy.yaml");

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Image repository prefixes, matched at `/` boundaries: `ghcr.io/org/` or `ghcr.io/org`.
    pub allowed_images: Vec<String>,
    /// Directories whose programs the local-process runtime may start.
    pub allowed_commands: Vec<String>,
    /// Variables of the agent's own environment that config requirements may read: exact
    /// names, or prefixes ending in `*` (`OPENAI_*`). `MCP_ORCHESTRATION_*` never.
    pub allowed_env: Vec<String>,
    /// Code-loading variables (see [`loads_code`]) a process server may be given.
    pub allowed_process_env: Vec<String>,
    /// URL prefixes a `notification_channel` may point at, matched at `/` boundaries.
    pub allowed_notification_urls: Vec<String>,
    /// Where the policy came from, for messages.
    pub source: String,
}

impl TrustPolicy {
    /// The shipped default: only `ghcr.io/liminalcommons/` images, no local commands.
    pub fn shipped() -> TrustPolicy {
        let mut d = Decoder::new("built-in default");
        // The shipped file is tested to be valid.
        Self::decode(&mut d, &TextFile::new("built-in default", DEFAULT)).unwrap_or(TrustPolicy {
            source: "built-in default".to_owned(),
            ..TrustPolicy::default()
        })
    }

    /// Reads a trust policy file; problems go to `d`.
    pub fn decode(d: &mut Decoder, file: &TextFile) -> Option<TrustPolicy> {
        let root = match yaml::parse(&file.text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                d.error(
                    "",
                    "the trust policy is empty; list `allowed_images` (and `allowed_commands`)",
                );
                return None;
            }
            Err(e) => {
                d.diags
                    .error(e.at, "", format!("invalid YAML: {}", e.message));
                return None;
            }
        };
        let obj = d.object(&root, "", TRUST_FIELDS)?;
        let list = |d: &mut Decoder, f: &str| {
            obj.get(f)
                .and_then(|n| d.string_list(n, f))
                .unwrap_or_default()
        };
        let allowed_images = list(d, "allowed_images");
        let allowed_commands = list(d, "allowed_commands");
        let allowed_env = list(d, "allowed_env");
        let allowed_process_env = list(d, "allowed_process_env");
        let allowed_notification_urls = list(d, "allowed_notification_urls");
        for (field, names) in [
            ("allowed_env", &allowed_env),
            ("allowed_process_env", &allowed_process_env),
        ] {
            for (i, name) in names.iter().enumerate() {
                let stem = name.strip_suffix('*').unwrap_or(name);
                if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    d.error(
                        &format!("{field}[{i}]"),
                        format!("`{name}` must be a variable name, or a prefix of one followed by `*` (a lone `*` would allow every variable)"),
                    );
                }
            }
        }
        for (i, url) in allowed_notification_urls.iter().enumerate() {
            let parsed = reqwest::Url::parse(url).ok();
            let ok = parsed
                .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                d.error(
                    &format!("allowed_notification_urls[{i}]"),
                    format!("`{url}` must be an http:// or https:// URL with a host"),
                );
            }
        }
        for (i, dir) in allowed_commands.iter().enumerate() {
            if !dir.starts_with('/') || has_parent_dir(dir) {
                d.error(
                    &format!("allowed_commands[{i}]"),
                    format!("`{dir}` must be an absolute directory without `..`"),
                );
            }
        }
        for (i, prefix) in allowed_images.iter().enumerate() {
            if prefix.is_empty() {
                d.error(
                    &format!("allowed_images[{i}]"),
                    "an empty prefix would allow every image; list registries or organisations",
                );
            }
        }
        Some(TrustPolicy {
            allowed_images,
            allowed_commands,
            allowed_env,
            allowed_process_env,
            allowed_notification_urls,
            source: file.path.clone(),
        })
    }

    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed_images
            .iter()
            .any(|p| prefix_at_boundary(image, p))
    }

    /// Whether `command` (an absolute path, possibly holding `{version}`/`{port}`) lies in
    /// an allowed directory. Paths with `..` are never allowed: they could climb out.
    pub fn allows_command(&self, command: &str) -> bool {
        command.starts_with('/')
            && !has_parent_dir(command)
            && self
                .allowed_commands
                .iter()
                .any(|dir| prefix_at_boundary(command, dir))
    }
}

impl TrustPolicy {
    /// Whether a config requirement may take the agent's environment variable `name`.
    pub fn allows_env(&self, name: &str) -> bool {
        !name.starts_with(AGENT_ENV_PREFIX)
            && self.allowed_env.iter().any(|p| name_matches(name, p))
    }

    /// Whether a process server may be given `name`: any variable that does not load
    /// foreign code, and those that do only when listed.
    pub fn allows_process_env(&self, name: &str) -> bool {
        !loads_code(name)
            || self
                .allowed_process_env
                .iter()
                .any(|p| name_matches(name, p))
    }

    /// Whether a `notification_channel` may POST to `url`: same scheme, host and port as an
    /// allowed URL, and a path under its path (at a `/` boundary). A URL carrying user info
    /// (`https://allowed@evil/`) is refused outright.
    pub fn allows_notification_url(&self, url: &str) -> bool {
        let Ok(url) = reqwest::Url::parse(url) else {
            return false;
        };
        url.username().is_empty()
            && url.password().is_none()
            && self
                .allowed_notification_urls
                .iter()
                .filter_map(|p| reqwest::Url::parse(p).ok())
                .any(|p| url_under(&url, &p))
    }

    /// Resolves a command's symlinks and checks the real program against the allowed
    /// directories (themselves resolved). `Ok(real path)` when allowed; `Err(why)` when not.
    /// This reads the file system: it runs where the command is about to be started (and in
    /// `validate` for commands that exist), never inside the pure manifest check.
    pub fn check_real_command(&self, command: &str) -> Result<std::path::PathBuf, String> {
        let real = std::fs::canonicalize(command)
            .map_err(|e| format!("cannot resolve `{command}`: {e}"))?;
        let allowed = self.allowed_commands.iter().any(|dir| {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| Path::new(dir).to_owned());
            real.starts_with(&dir)
        });
        if allowed {
            Ok(real)
        } else {
            Err(format!(
                "`{command}` resolves to `{}`, which is not in a directory the trust policy ({}) allows: {}",
                real.display(),
                self.source,
                if self.allowed_commands.is_empty() {
                    "nothing".to_owned()
                } else {
                    self.allowed_commands.join(", ")
                }
            ))
        }
    }
}

/// `NAME` matches itself; `PREFIX_*` matches every name that starts with `PREFIX_`.
fn name_matches(name: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => !stem.is_empty() && name.starts_with(stem),
        None => name == pattern,
    }
}

/// `https://hooks.example.com/team` allows `https://hooks.example.com/team/x` but not
/// `https://hooks.example.com/teams` nor `https://hooks.example.com.evil/team`.
fn url_under(url: &reqwest::Url, prefix: &reqwest::Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
    {
        return false;
    }
    let base = prefix.path().trim_end_matches('/');
    let path = url.path();
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn has_parent_dir(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
}

/// `ghcr.io/org` allows `ghcr.io/org/x` but not `ghcr.io/org-evil/x`.
fn prefix_at_boundary(value: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return false;
    }
    if prefix.ends_with('/') {
        return value.starts_with(prefix);
    }
    value == prefix
        || value
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_allows_only_liminalcommons() {
        let t = TrustPolicy::shipped();
        assert!(t.allows_image("ghcr.io/liminalcommons/mcp-server-n8n"));
        assert!(!t.allows_image("ghcr.io/liminalcommons-evil/x"));
        assert!(!t.allows_image("docker.io/library/nginx"));
        assert!(!t.allows_command("/usr/bin/python3"));
        let mut d = Decoder::new("x");
        assert!(TrustPolicy::decode(&mut d, &TextFile::new("x", DEFAULT)).is_some());
        assert!(d.diags.into_vec().is_empty());
    }

    #[test]
    fn prefixes_match_at_path_boundaries() {
        assert!(prefix_at_boundary("ghcr.io/org/x", "ghcr.io/org"));
        assert!(prefix_at_boundary("ghcr.io/org/x", "ghcr.io/org/"));
        assert!(!prefix_at_boundary("ghcr.io/orgx/y", "ghcr.io/org"));
        assert!(prefix_at_boundary(
            "127.0.0.1:5000/example/server",
            "127.0.0.1:5000/"
        ));
    }

    #[test]
    fn commands_cannot_climb_out_of_allowed_directories() {
        let t = TrustPolicy {
            allowed_commands: vec!["/opt/mcp".into()],
            source: "t".into(),
            ..TrustPolicy::default()
        };
        assert!(t.allows_command("/opt/mcp/lightrag/{version}/bin/server"));
        assert!(!t.allows_command("/opt/mcp/../../bin/sh"));
        assert!(!t.allows_command("/opt/mcpx/server"));
        assert!(!t.allows_command("opt/mcp/server"));
    }

    #[test]
    fn agent_variables_are_never_allowed_to_config_requirements() {
        let t = TrustPolicy {
            allowed_env: vec!["OPENAI_API_KEY".into(), "MCP_*".into(), "AWS_*".into()],
            ..TrustPolicy::default()
        };
        assert!(t.allows_env("OPENAI_API_KEY"));
        assert!(t.allows_env("AWS_REGION"));
        assert!(!t.allows_env("OPENAI_ORG"));
        assert!(!t.allows_env("MCP_ORCHESTRATION_API_KEY"));
        assert!(t.allows_env("MCP_OTHER"));
        assert!(!TrustPolicy::default().allows_env("HOME"));
    }

    #[test]
    fn code_loading_variables_need_the_operators_leave() {
        let mut t = TrustPolicy::default();
        assert!(!t.allows_process_env("LD_PRELOAD"));
        assert!(!t.allows_process_env("LD_LIBRARY_PATH"));
        assert!(!t.allows_process_env("NODE_OPTIONS"));
        assert!(t.allows_process_env("LOG_LEVEL"));
        t.allowed_process_env = vec!["LD_LIBRARY_PATH".into()];
        assert!(t.allows_process_env("LD_LIBRARY_PATH"));
        assert!(!t.allows_process_env("LD_PRELOAD"));
    }

    #[test]
    fn notification_urls_match_at_boundaries_and_refuse_user_info() {
        let t = TrustPolicy {
            allowed_notification_urls: vec!["https://hooks.example.com".into()],
            ..TrustPolicy::default()
        };
        assert!(t.allows_notification_url("https://hooks.example.com/T1/x"));
        assert!(!t.allows_notification_url("https://hooks.example.com.evil.net/x"));
        assert!(!t.allows_notification_url("https://hooks.example.com@evil.net/x"));
        assert!(!t.allows_notification_url("http://hooks.example.com/x"));
        assert!(!t.allows_notification_url("https://hooks.example.com:8443/x"));
        assert!(!TrustPolicy::default().allows_notification_url("https://hooks.example.com/"));
        let t = TrustPolicy {
            allowed_notification_urls: vec!["http://127.0.0.1:9000/team/".into()],
            ..TrustPolicy::default()
        };
        assert!(t.allows_notification_url("http://127.0.0.1:9000/team/a"));
        assert!(t.allows_notification_url("http://127.0.0.1:9000/team"));
        assert!(!t.allows_notification_url("http://127.0.0.1:9000/teams"));
        assert!(!t.allows_notification_url("http://127.0.0.1:9001/team/a"));
    }

    #[test]
    fn lone_stars_and_bad_urls_are_located_errors() {
        let mut d = Decoder::new("t");
        let text =
            "allowed_images: [a/]\nallowed_env: [\"*\"]\nallowed_notification_urls: [ftp://x]\n";
        TrustPolicy::decode(&mut d, &TextFile::new("t", text));
        let diags = d.diags.into_vec();
        assert_eq!(diags.len(), 2, "{diags:?}");
    }

    #[test]
    fn a_symlink_out_of_an_allowed_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::os::unix::fs::symlink("/bin/sh", allowed.join("sh")).unwrap();
        std::fs::write(allowed.join("server"), "#!/bin/sh\n").unwrap();
        let t = TrustPolicy {
            allowed_commands: vec![allowed.display().to_string()],
            source: "t".into(),
            ..TrustPolicy::default()
        };
        let sh = allowed.join("sh").display().to_string();
        assert!(t.allows_command(&sh), "the textual check alone is fooled");
        let err = t.check_real_command(&sh).unwrap_err();
        assert!(err.contains("resolves to"), "{err}");
        assert!(
            t.check_real_command(&allowed.join("server").display().to_string())
                .is_ok()
        );
    }
}
