//! The closed table of MCP clients whose configuration files we manage: for each, its file
//! format, the key its servers live under, the shape of the entry it takes, how it reads
//! an environment variable, and where its file is for every OS and scope. Path resolution
//! is a pure function of (client, OS, scope, environment), so every OS is testable on
//! Linux. This module never reads the process environment or touches the filesystem.

use std::ffi::OsString;
use std::path::PathBuf;

/// How a client's file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Strict JSON: no comments, no trailing commas.
    Json,
    /// JSON with comments and trailing commas, as VS Code and Zed write it.
    Jsonc,
    /// TOML (Codex).
    Toml,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Jsonc => "JSON with comments",
            Format::Toml => "TOML",
        })
    }
}

/// The operating system whose conventions decide where a file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
    Windows,
}

impl Os {
    /// The OS this binary was built for; anything not macOS or Windows follows Linux's
    /// (XDG) conventions.
    pub fn current() -> Os {
        if cfg!(target_os = "macos") {
            Os::MacOs
        } else if cfg!(windows) {
            Os::Windows
        } else {
            Os::Linux
        }
    }
}

/// Whose file: the user's own, or one inside a project directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    User,
    Project(PathBuf),
}

/// The entry a client takes for a gateway profile (rendered by `entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The client runs only local programs: a stdio bridge to the gateway,
    /// `{"command": bridge, "args": ["gateway", ...]}`.
    Bridge,
    /// A remote server: `{"type"?: .., <url_field>: URL, "headers"?: {"Authorization": ..}}`.
    Http {
        /// The value of `"type"`, for clients that want one.
        type_tag: Option<&'static str>,
        /// The key holding the URL (`url`, `serverUrl`, `httpUrl`).
        url_field: &'static str,
    },
    /// Codex's TOML table: `url` and `bearer_token_env_var`.
    CodexHttp,
}

/// How a client's file refers to an environment variable inside a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvRef {
    /// `${NAME}`.
    Braces,
    /// `${NAME}` or `$NAME` (both are expanded; we write `${NAME}`).
    DollarOrBraces,
    /// `${env:NAME}`.
    EnvColon,
    /// Header values are sent verbatim: a key could only be written in clear.
    Unsupported,
}

/// The directory a user-scope path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The home directory (`HOME`; `USERPROFILE` on Windows).
    Home,
    /// `$XDG_CONFIG_HOME`, or `~/.config` when unset or not absolute (XDG spec).
    XdgConfig,
    /// `~/Library/Application Support` (macOS).
    AppSupport,
    /// `%APPDATA%`, or `~\AppData\Roaming` when unset (Windows).
    AppData,
    /// `$CODEX_HOME`, or `~/.codex`.
    CodexHome,
    /// `$CLAUDE_CONFIG_DIR`, or the home directory (where `.claude.json` then lives).
    ClaudeConfigDir,
}

/// A user-scope location: a base directory and the path below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub base: Base,
    pub below: &'static [&'static str],
}

/// Where a client's user file lives on each OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerOs {
    pub linux: Location,
    pub macos: Location,
    pub windows: Location,
}

impl PerOs {
    fn on(&self, os: Os) -> Location {
        match os {
            Os::Linux => self.linux,
            Os::MacOs => self.macos,
            Os::Windows => self.windows,
        }
    }

    /// The same place below the home directory on every OS.
    const fn home(below: &'static [&'static str]) -> PerOs {
        let at = Location {
            base: Base::Home,
            below,
        };
        PerOs {
            linux: at,
            macos: at,
            windows: at,
        }
    }
}

/// One MCP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Stable id, as users name it (`claude-code`).
    pub id: &'static str,
    pub display_name: &'static str,
    pub format: Format,
    /// The top-level key whose object maps entry names to servers.
    pub servers_key: &'static str,
    pub shape: Shape,
    /// How a header value may refer to an environment variable.
    pub env_ref: EnvRef,
    pub user: PerOs,
    /// The project file, relative to the project directory, where the client has one.
    pub project: Option<&'static [&'static str]>,
    /// Where these facts were checked.
    pub source: &'static str,
}

/// Every client we know. Each row names the documentation its facts were checked against.
pub const CLIENTS: &[Client] = &[
    // modelcontextprotocol.io's local-server quickstart and Anthropic's help centre give the
    // macOS and Windows paths; the file only launches local programs. There is no official
    // Linux build: community builds (e.g. claude-desktop-debian) run Electron, whose user
    // data dir is $XDG_CONFIG_HOME/Claude, so that is where we write on Linux.
    Client {
        id: "claude-desktop",
        display_name: "Claude Desktop",
        format: Format::Json,
        servers_key: "mcpServers",
        shape: Shape::Bridge,
        env_ref: EnvRef::Unsupported,
        user: PerOs {
            linux: Location {
                base: Base::XdgConfig,
                below: &["Claude", "claude_desktop_config.json"],
            },
            macos: Location {
                base: Base::AppSupport,
                below: &["Claude", "claude_desktop_config.json"],
            },
            windows: Location {
                base: Base::AppData,
                below: &["Claude", "claude_desktop_config.json"],
            },
        },
        project: None,
        source: "modelcontextprotocol.io quickstart (user); claude-desktop-debian for Linux",
    },
    // code.claude.com/docs/en/mcp: user scope is the top-level `mcpServers` of ~/.claude.json,
    // project scope is .mcp.json; `${VAR}` (and `${VAR:-default}`) expand in command, args,
    // env, url and headers. With CLAUDE_CONFIG_DIR set the file is $CLAUDE_CONFIG_DIR/.claude.json
    // (anthropics/claude-code#48448).
    Client {
        id: "claude-code",
        display_name: "Claude Code",
        format: Format::Json,
        servers_key: "mcpServers",
        shape: Shape::Http {
            type_tag: Some("http"),
            url_field: "url",
        },
        env_ref: EnvRef::Braces,
        user: PerOs {
            linux: Location {
                base: Base::ClaudeConfigDir,
                below: &[".claude.json"],
            },
            macos: Location {
                base: Base::ClaudeConfigDir,
                below: &[".claude.json"],
            },
            windows: Location {
                base: Base::ClaudeConfigDir,
                below: &[".claude.json"],
            },
        },
        project: Some(&[".mcp.json"]),
        source: "code.claude.com/docs/en/mcp",
    },
    // cursor.com/docs/mcp: ~/.cursor/mcp.json and <project>/.cursor/mcp.json, `mcpServers`,
    // remote servers as `url` + `headers` (transport detected); `${env:NAME}`, `${userHome}`
    // and `${workspaceFolder}` interpolate in command, args, env, url and headers.
    Client {
        id: "cursor",
        display_name: "Cursor",
        format: Format::Json,
        servers_key: "mcpServers",
        shape: Shape::Http {
            type_tag: None,
            url_field: "url",
        },
        env_ref: EnvRef::EnvColon,
        user: PerOs::home(&[".cursor", "mcp.json"]),
        project: Some(&[".cursor", "mcp.json"]),
        source: "cursor.com/docs/mcp",
    },
    // code.visualstudio.com/docs/agents/reference/mcp-configuration: mcp.json in the user
    // profile or .vscode/mcp.json, top-level `servers`, `{"type": "http", "url", "headers"}`.
    // `${env:NAME}` is a predefined variable (maintainer in microsoft/vscode#245237); an open
    // report (microsoft/vscode#336232) says it is not substituted in headers on Windows.
    // The user file of VS Code's default profile: Electron's user data dir + User/mcp.json.
    Client {
        id: "vscode",
        display_name: "Visual Studio Code",
        format: Format::Jsonc,
        servers_key: "servers",
        shape: Shape::Http {
            type_tag: Some("http"),
            url_field: "url",
        },
        env_ref: EnvRef::EnvColon,
        user: PerOs {
            linux: Location {
                base: Base::XdgConfig,
                below: &["Code", "User", "mcp.json"],
            },
            macos: Location {
                base: Base::AppSupport,
                below: &["Code", "User", "mcp.json"],
            },
            windows: Location {
                base: Base::AppData,
                below: &["Code", "User", "mcp.json"],
            },
        },
        project: Some(&[".vscode", "mcp.json"]),
        source: "code.visualstudio.com/docs/agents/reference/mcp-configuration",
    },
    // docs.windsurf.com/windsurf/cascade/mcp: ~/.codeium/windsurf/mcp_config.json, `mcpServers`,
    // remote servers take `serverUrl` (or `url`) and `headers`; environment variables
    // interpolate in command, args, env, serverUrl, url and headers. No project file.
    Client {
        id: "windsurf",
        display_name: "Windsurf",
        format: Format::Json,
        servers_key: "mcpServers",
        shape: Shape::Http {
            type_tag: None,
            url_field: "serverUrl",
        },
        env_ref: EnvRef::EnvColon,
        user: PerOs::home(&[".codeium", "windsurf", "mcp_config.json"]),
        project: None,
        source: "docs.windsurf.com/windsurf/cascade/mcp",
    },
    // zed.dev/docs/ai/mcp and crates/settings_content (ContextServerSettingsContent::Http):
    // `context_servers` in settings.json, a remote server is `{"url", "headers"}` (the old
    // `"source": "custom"` form is gone). Header values are sent verbatim: no expansion
    // (zed-industries/zed#60459). Config dir per crates/paths: $XDG_CONFIG_HOME/zed on Linux,
    // ~/.config/zed on macOS, %APPDATA%\Zed on Windows; project file .zed/settings.json.
    Client {
        id: "zed",
        display_name: "Zed",
        format: Format::Jsonc,
        servers_key: "context_servers",
        shape: Shape::Http {
            type_tag: None,
            url_field: "url",
        },
        env_ref: EnvRef::Unsupported,
        user: PerOs {
            linux: Location {
                base: Base::XdgConfig,
                below: &["zed", "settings.json"],
            },
            macos: Location {
                base: Base::Home,
                below: &[".config", "zed", "settings.json"],
            },
            windows: Location {
                base: Base::AppData,
                below: &["Zed", "settings.json"],
            },
        },
        project: Some(&[".zed", "settings.json"]),
        source: "zed.dev/docs/ai/mcp; zed crates/settings_content, crates/paths",
    },
    // geminicli.com/docs/tools/mcp-server: `mcpServers` in ~/.gemini/settings.json or
    // .gemini/settings.json. Streamable HTTP was `httpUrl`; 0.61 (checked by running it
    // here) calls that deprecated and reads `{"type": "http", "url"}`, which it prefers
    // unless both are given. The configuration reference: string values may reference
    // `$VAR` or `${VAR}`. The loader strips comments before JSON.parse
    // (packages/cli/src/config/settings.ts) but refuses trailing commas.
    Client {
        id: "gemini-cli",
        display_name: "Gemini CLI",
        format: Format::Jsonc,
        servers_key: "mcpServers",
        shape: Shape::Http {
            type_tag: Some("http"),
            url_field: "url",
        },
        env_ref: EnvRef::DollarOrBraces,
        user: PerOs::home(&[".gemini", "settings.json"]),
        project: Some(&[".gemini", "settings.json"]),
        source: "geminicli.com/docs/tools/mcp-server; geminicli.com/docs/reference/configuration",
    },
    // developers.openai.com/codex/mcp and codex-rs/config (mcp_types.rs): `[mcp_servers.NAME]`
    // in $CODEX_HOME/config.toml (default ~/.codex), Streamable HTTP as `url`, a bearer token
    // only through `bearer_token_env_var`; literal headers in `http_headers`. A trusted
    // project's .codex/config.toml is read too.
    Client {
        id: "codex",
        display_name: "Codex",
        format: Format::Toml,
        servers_key: "mcp_servers",
        shape: Shape::CodexHttp,
        env_ref: EnvRef::Unsupported,
        user: PerOs {
            linux: Location {
                base: Base::CodexHome,
                below: &["config.toml"],
            },
            macos: Location {
                base: Base::CodexHome,
                below: &["config.toml"],
            },
            windows: Location {
                base: Base::CodexHome,
                below: &["config.toml"],
            },
        },
        project: Some(&[".codex", "config.toml"]),
        source: "developers.openai.com/codex/mcp; openai/codex codex-rs/config mcp_types.rs",
    },
];

/// The client with this id.
pub fn client(id: &str) -> Option<&'static Client> {
    CLIENTS.iter().find(|c| c.id == id)
}

/// The environment variables path resolution reads, gathered once so resolution stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub home: PathBuf,
    pub xdg_config_home: Option<PathBuf>,
    pub appdata: Option<PathBuf>,
    pub codex_home: Option<PathBuf>,
    pub claude_config_dir: Option<PathBuf>,
}

impl Env {
    /// Reads the variables through `var` (pass `std::env::var_os` for the real process, a
    /// map lookup in tests). Empty values count as unset, as shells treat them.
    pub fn from_vars(os: Os, var: impl Fn(&str) -> Option<OsString>) -> Result<Env, PathError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home_var = if os == Os::Windows {
            "USERPROFILE"
        } else {
            "HOME"
        };
        let home = get(home_var).ok_or(PathError::NoHome { var: home_var })?;
        Ok(Env {
            home,
            xdg_config_home: get("XDG_CONFIG_HOME"),
            appdata: get("APPDATA"),
            codex_home: get("CODEX_HOME"),
            claude_config_dir: get("CLAUDE_CONFIG_DIR"),
        })
    }

    fn base(&self, base: Base) -> PathBuf {
        match base {
            Base::Home => self.home.clone(),
            // The XDG spec says a relative value is invalid and must be ignored.
            Base::XdgConfig => match &self.xdg_config_home {
                Some(dir) if dir.is_absolute() => dir.clone(),
                _ => self.home.join(".config"),
            },
            Base::AppSupport => self.home.join("Library").join("Application Support"),
            Base::AppData => self
                .appdata
                .clone()
                .unwrap_or_else(|| self.home.join("AppData").join("Roaming")),
            Base::CodexHome => self
                .codex_home
                .clone()
                .unwrap_or_else(|| self.home.join(".codex")),
            Base::ClaudeConfigDir => self
                .claude_config_dir
                .clone()
                .unwrap_or_else(|| self.home.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("${var} is not set, so the home directory is unknown")]
    NoHome { var: &'static str },
    #[error("{client} has no project configuration file, only a user one")]
    NoProjectScope { client: &'static str },
}

/// Where `client` keeps its configuration file on `os`, for `scope`.
pub fn config_path(
    client: &Client,
    os: Os,
    scope: &Scope,
    env: &Env,
) -> Result<PathBuf, PathError> {
    match scope {
        Scope::User => {
            let at = client.user.on(os);
            Ok(join(env.base(at.base), at.below))
        }
        Scope::Project(dir) => {
            let below = client
                .project
                .ok_or(PathError::NoProjectScope { client: client.id })?;
            Ok(join(dir.clone(), below))
        }
    }
}

fn join(start: PathBuf, below: &[&str]) -> PathBuf {
    below.iter().fold(start, |path, part| path.join(part))
}

/// The project file's path relative to a project directory, for display (`.vscode/mcp.json`).
pub fn project_file(client: &Client) -> Option<PathBuf> {
    client.project.map(|below| join(PathBuf::new(), below))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn env_of(os: Os, vars: &[(&str, &str)]) -> Env {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Env::from_vars(os, |name| map.get(name).cloned()).unwrap()
    }

    fn user(id: &str, os: Os, env: &Env) -> PathBuf {
        config_path(client(id).unwrap(), os, &Scope::User, env).unwrap()
    }

    fn p(parts: &[&str]) -> PathBuf {
        parts.iter().collect()
    }

    #[test]
    fn linux_paths_follow_xdg_and_home() {
        let env = env_of(Os::Linux, &[("HOME", "/home/u")]);
        let cases = [
            (
                "claude-desktop",
                "/home/u/.config/Claude/claude_desktop_config.json",
            ),
            ("claude-code", "/home/u/.claude.json"),
            ("cursor", "/home/u/.cursor/mcp.json"),
            ("vscode", "/home/u/.config/Code/User/mcp.json"),
            ("windsurf", "/home/u/.codeium/windsurf/mcp_config.json"),
            ("zed", "/home/u/.config/zed/settings.json"),
            ("gemini-cli", "/home/u/.gemini/settings.json"),
            ("codex", "/home/u/.codex/config.toml"),
        ];
        for (id, want) in cases {
            assert_eq!(user(id, Os::Linux, &env), PathBuf::from(want), "{id}");
        }
    }

    #[test]
    fn linux_overrides_are_honoured() {
        let env = env_of(
            Os::Linux,
            &[
                ("HOME", "/home/u"),
                ("XDG_CONFIG_HOME", "/xdg"),
                ("CODEX_HOME", "/codex"),
                ("CLAUDE_CONFIG_DIR", "/claude"),
            ],
        );
        assert_eq!(
            user("vscode", Os::Linux, &env),
            p(&["/xdg", "Code", "User", "mcp.json"])
        );
        assert_eq!(
            user("zed", Os::Linux, &env),
            p(&["/xdg", "zed", "settings.json"])
        );
        assert_eq!(
            user("claude-desktop", Os::Linux, &env),
            p(&["/xdg", "Claude", "claude_desktop_config.json"])
        );
        assert_eq!(
            user("codex", Os::Linux, &env),
            p(&["/codex", "config.toml"])
        );
        assert_eq!(
            user("claude-code", Os::Linux, &env),
            p(&["/claude", ".claude.json"])
        );
    }

    #[test]
    fn a_relative_or_empty_xdg_config_home_is_ignored() {
        for xdg in ["relative/dir", ""] {
            let env = env_of(Os::Linux, &[("HOME", "/home/u"), ("XDG_CONFIG_HOME", xdg)]);
            assert_eq!(
                user("zed", Os::Linux, &env),
                p(&["/home/u", ".config", "zed", "settings.json"])
            );
        }
    }

    #[test]
    fn macos_paths() {
        let env = env_of(
            Os::MacOs,
            &[("HOME", "/Users/u"), ("XDG_CONFIG_HOME", "/xdg")],
        );
        let support = ["/Users/u", "Library", "Application Support"];
        let with = |rest: &[&str]| -> PathBuf { support.iter().chain(rest).collect() };
        assert_eq!(
            user("claude-desktop", Os::MacOs, &env),
            with(&["Claude", "claude_desktop_config.json"])
        );
        assert_eq!(
            user("vscode", Os::MacOs, &env),
            with(&["Code", "User", "mcp.json"])
        );
        // Zed uses ~/.config on macOS whatever XDG_CONFIG_HOME says.
        assert_eq!(
            user("zed", Os::MacOs, &env),
            p(&["/Users/u", ".config", "zed", "settings.json"])
        );
        assert_eq!(
            user("claude-code", Os::MacOs, &env),
            p(&["/Users/u", ".claude.json"])
        );
        assert_eq!(
            user("cursor", Os::MacOs, &env),
            p(&["/Users/u", ".cursor", "mcp.json"])
        );
        assert_eq!(
            user("codex", Os::MacOs, &env),
            p(&["/Users/u", ".codex", "config.toml"])
        );
    }

    #[test]
    fn windows_paths_use_appdata_and_userprofile() {
        let env = env_of(
            Os::Windows,
            &[
                ("USERPROFILE", r"C:\Users\u"),
                ("APPDATA", r"C:\Users\u\AppData\Roaming"),
                ("HOME", "/ignored"),
            ],
        );
        let roaming = r"C:\Users\u\AppData\Roaming";
        assert_eq!(
            user("claude-desktop", Os::Windows, &env),
            p(&[roaming, "Claude", "claude_desktop_config.json"])
        );
        assert_eq!(
            user("vscode", Os::Windows, &env),
            p(&[roaming, "Code", "User", "mcp.json"])
        );
        assert_eq!(
            user("zed", Os::Windows, &env),
            p(&[roaming, "Zed", "settings.json"])
        );
        assert_eq!(
            user("windsurf", Os::Windows, &env),
            p(&[r"C:\Users\u", ".codeium", "windsurf", "mcp_config.json"])
        );
        assert_eq!(
            user("gemini-cli", Os::Windows, &env),
            p(&[r"C:\Users\u", ".gemini", "settings.json"])
        );
        assert_eq!(
            user("claude-code", Os::Windows, &env),
            p(&[r"C:\Users\u", ".claude.json"])
        );
    }

    #[test]
    fn windows_without_appdata_falls_back_below_the_profile() {
        let env = env_of(Os::Windows, &[("USERPROFILE", r"C:\Users\u")]);
        assert_eq!(
            user("vscode", Os::Windows, &env),
            p(&[
                r"C:\Users\u",
                "AppData",
                "Roaming",
                "Code",
                "User",
                "mcp.json"
            ])
        );
    }

    #[test]
    fn a_missing_home_is_an_error_naming_the_variable() {
        let err = Env::from_vars(Os::Windows, |_| None).unwrap_err();
        assert_eq!(err, PathError::NoHome { var: "USERPROFILE" });
        assert!(err.to_string().contains("$USERPROFILE"));
    }

    #[test]
    fn project_paths_are_relative_to_the_project() {
        let env = env_of(Os::Linux, &[("HOME", "/home/u")]);
        let scope = Scope::Project(PathBuf::from("/work/app"));
        let cases = [
            ("claude-code", ".mcp.json"),
            ("cursor", ".cursor/mcp.json"),
            ("vscode", ".vscode/mcp.json"),
            ("zed", ".zed/settings.json"),
            ("gemini-cli", ".gemini/settings.json"),
            ("codex", ".codex/config.toml"),
        ];
        for os in [Os::Linux, Os::MacOs, Os::Windows] {
            for (id, rel) in cases {
                let path = config_path(client(id).unwrap(), os, &scope, &env).unwrap();
                assert_eq!(path, Path::new("/work/app").join(rel), "{id}");
                assert!(path.starts_with("/work/app"));
            }
        }
        for id in ["claude-desktop", "windsurf"] {
            let err = config_path(client(id).unwrap(), Os::Linux, &scope, &env).unwrap_err();
            assert!(matches!(err, PathError::NoProjectScope { .. }), "{id}");
        }
        assert_eq!(
            project_file(client("vscode").unwrap()),
            Some(p(&[".vscode", "mcp.json"]))
        );
    }

    #[test]
    fn the_table_is_consistent() {
        let mut ids: Vec<_> = CLIENTS.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CLIENTS.len(), "duplicate ids");
        for c in CLIENTS {
            assert_eq!(
                c.format == Format::Toml,
                c.shape == Shape::CodexHttp,
                "{}",
                c.id
            );
            assert!(!c.source.is_empty());
        }
        assert!(client("nope").is_none());
    }
}
