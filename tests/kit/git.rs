//! Real git repositories for tests and benchmarks, driven by the `git` CLI with an isolated
//! configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A `git` command in `cwd` with no global or system configuration, a throwaway `home` and
/// a fixed identity; the caller adds arguments (and environment) and runs it.
pub fn command(cwd: &Path, home: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(cwd)
        .args(["-c", "init.defaultBranch=main"])
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("GIT_AUTHOR_NAME", "Test Operator")
        .env("GIT_AUTHOR_EMAIL", "operator@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test Operator")
        .env("GIT_COMMITTER_EMAIL", "operator@example.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    // In case the tests themselves run from inside a git hook.
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_QUARANTINE_PATH",
        "GIT_PREFIX",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs `git args` in `cwd` (see [`command`]).
pub fn git(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    command(cwd, home).args(args).output().expect("git runs")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "git {what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare "remote" manifest repository and a working clone that commits and pushes to it,
/// exactly as an operator would.
pub struct ManifestRepo {
    pub dir: tempfile::TempDir,
}

impl ManifestRepo {
    pub fn new() -> ManifestRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("home")).expect("home");
        let repo = ManifestRepo { dir };
        ok(
            git(
                repo.dir.path(),
                &repo.home(),
                &["init", "--bare", "-q", "remote.git"],
            ),
            "init --bare",
        );
        ok(
            git(repo.dir.path(), &repo.home(), &["init", "-q", "work"]),
            "init",
        );
        ok(
            git(
                &repo.work(),
                &repo.home(),
                &[
                    "remote",
                    "add",
                    "origin",
                    repo.remote().to_str().expect("utf-8 path"),
                ],
            ),
            "remote add",
        );
        repo
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The bare repository the agent follows.
    pub fn remote(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// `file://` URL of the remote: the agent fetches it but cannot watch it.
    pub fn remote_url(&self) -> String {
        format!("file://{}", self.remote().display())
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn git(&self, args: &[&str]) -> String {
        ok(git(&self.work(), &self.home(), args), &args.join(" "))
    }

    /// Writes `files` (path, text) in the working copy, commits and pushes; returns the commit.
    pub fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, text) in files {
            let p = self.work().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["push", "-q", "origin", "HEAD:main"]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn push_manifest(&self, text: &str, message: &str) -> String {
        self.push(&[("ecosystem-manifest.yaml", text)], message)
    }

    /// Resets the branch to `commit` and force-pushes: history is rewritten.
    pub fn force_push(&self, commit: &str) {
        self.git(&["reset", "-q", "--hard", commit]);
        self.git(&["push", "-q", "--force", "origin", "HEAD:main"]);
    }
}
