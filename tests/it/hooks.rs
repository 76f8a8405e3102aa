//! The git hooks in `hooks/`, driven through the real `git` CLI and the real binary.
//!
//! Every test works in its own temp dir with an isolated git configuration (no
//! global or system config, a throwaway `HOME`), and the hooks find the binary
//! through `MCP_ORCHESTRATION_BIN`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-orchestration");
const PRE_COMMIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/pre-commit");
const PRE_RECEIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/pre-receive");
const POST_RECEIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/post-receive");
const EXAMPLE_MANIFEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/ecosystem/ecosystem-manifest.yaml"
));
const MANIFEST: &str = "ecosystem-manifest.yaml";

#[test]
fn pre_commit_blocks_an_invalid_manifest_and_prints_its_errors() {
    let sandbox = Sandbox::new();
    let work = sandbox.manifest_repo();
    install_hook(PRE_COMMIT, &work.join(".git/hooks"));
    let head = sandbox.rev_parse(&work, "HEAD");
    let (invalid, line) = invalid_manifest();

    let out = sandbox.commit_manifest(&work, &invalid, "break the manifest");

    let text = combined(&out);
    assert!(!out.status.success(), "the commit was not blocked:\n{text}");
    assert!(
        has_diagnostic(&text, line),
        "no `{MANIFEST}:{line}:COL: error:` line in the hook's output:\n{text}"
    );
    assert_eq!(sandbox.rev_parse(&work, "HEAD"), head, "HEAD moved");
}

#[test]
fn pre_commit_allows_a_valid_manifest() {
    let sandbox = Sandbox::new();
    let work = sandbox.manifest_repo();
    install_hook(PRE_COMMIT, &work.join(".git/hooks"));
    let head = sandbox.rev_parse(&work, "HEAD");
    let bumped = EXAMPLE_MANIFEST.replacen(r#"version: "1.0.0""#, r#"version: "1.0.1""#, 1);
    assert_ne!(
        bumped, EXAMPLE_MANIFEST,
        "the example manifest changed shape"
    );

    let out = sandbox.commit_manifest(&work, &bumped, "bump lightrag");

    assert!(
        out.status.success(),
        "the commit was blocked:\n{}",
        combined(&out)
    );
    assert_ne!(sandbox.rev_parse(&work, "HEAD"), head, "HEAD did not move");
}

#[test]
fn pre_receive_rejects_a_push_of_an_invalid_manifest_and_the_branch_does_not_move() {
    let sandbox = Sandbox::new();
    let work = sandbox.manifest_repo();
    let bare = sandbox.bare_repo(&[PRE_RECEIVE]);
    let first = sandbox.rev_parse(&work, "HEAD");
    let out = sandbox.push(&work, &bare);
    assert!(
        out.status.success(),
        "the valid push was refused:\n{}",
        combined(&out)
    );

    let (invalid, line) = invalid_manifest();
    let out = sandbox.commit_manifest(&work, &invalid, "break the manifest");
    assert!(out.status.success(), "{}", combined(&out));
    let bad = sandbox.rev_parse(&work, "HEAD");
    let out = sandbox.push(&work, &bare);

    let text = combined(&out);
    assert!(
        !out.status.success(),
        "the invalid push was accepted:\n{text}"
    );
    let named = text
        .split("rejected refs/heads/main: manifest at commit ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rejection line for refs/heads/main:\n{text}"));
    assert!(
        named.len() >= 7 && bad.starts_with(named),
        "the rejection names commit {named:?}, not the pushed {bad}:\n{text}"
    );
    assert!(
        has_diagnostic(&text, line),
        "the validator's error is missing:\n{text}"
    );
    assert_eq!(sandbox.rev_parse(&bare, "main"), first, "the branch moved");
}

#[test]
fn pre_receive_accepts_a_valid_push() {
    let sandbox = Sandbox::new();
    let work = sandbox.manifest_repo();
    let bare = sandbox.bare_repo(&[PRE_RECEIVE]);

    let out = sandbox.push(&work, &bare);

    assert!(
        out.status.success(),
        "the valid push was refused:\n{}",
        combined(&out)
    );
    assert_eq!(
        sandbox.rev_parse(&bare, "main"),
        sandbox.rev_parse(&work, "HEAD")
    );
}

#[test]
fn post_receive_notifies_the_agent_with_a_signed_payload() {
    const SECRET: &str = "hook-test-secret";
    let sandbox = Sandbox::new();
    let work = sandbox.manifest_repo();
    let bare = sandbox.bare_repo(&[POST_RECEIVE]);
    let (agent_url, requests) = one_shot_agent();
    sandbox.git_ok(
        &bare,
        &["config", "mcp-orchestration.agent-url", &agent_url],
    );
    sandbox.git_ok(
        &bare,
        &["config", "mcp-orchestration.webhook-secret", SECRET],
    );

    let out = sandbox.push(&work, &bare);

    assert!(out.status.success(), "the push failed:\n{}", combined(&out));
    let request = requests
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the agent was not notified:\n{}", combined(&out)));
    assert_eq!(request.request_line, "POST /webhooks/git HTTP/1.1");
    assert_eq!(request.header("x-github-event"), Some("push"));
    let payload: serde_json::Value =
        serde_json::from_slice(&request.body).expect("the payload is JSON");
    assert_eq!(payload["ref"], "refs/heads/main");
    assert_eq!(payload["after"], sandbox.rev_parse(&work, "HEAD").as_str());
    let expected = format!("sha256={}", hmac_sha256_hex(SECRET, &request.body));
    assert_eq!(
        request.header("x-hub-signature-256"),
        Some(expected.as_str())
    );
}

#[test]
fn post_receive_never_fails_the_push_when_the_agent_is_down() {
    let sandbox = Sandbox::new();
    let work = sandbox.manifest_repo();
    let bare = sandbox.bare_repo(&[POST_RECEIVE]);
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local addr").port()
    }; // dropped: nothing listens there any more
    let agent_url = format!("http://127.0.0.1:{port}");
    sandbox.git_ok(
        &bare,
        &["config", "mcp-orchestration.agent-url", &agent_url],
    );

    let out = sandbox.push(&work, &bare);

    let text = combined(&out);
    assert!(out.status.success(), "the push failed:\n{text}");
    assert!(
        text.contains(&format!("could not notify the agent at {agent_url}")),
        "no warning in the push output:\n{text}"
    );
    assert_eq!(
        sandbox.rev_parse(&bare, "main"),
        sandbox.rev_parse(&work, "HEAD")
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A temp dir holding a working copy (`work/`), a bare repo (`remote.git/`), a
/// throwaway `HOME` and the hooks' `TMPDIR`.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = TempDir::new().expect("create a temp dir");
        for sub in ["home", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create a sandbox dir");
        }
        Sandbox { dir }
    }

    /// `git` with an isolated configuration, run in `cwd`; hooks find the binary and keep
    /// their temp files in the sandbox.
    fn git(&self, cwd: &Path, args: &[&str]) -> Output {
        crate::support::git::command(cwd, &self.dir.path().join("home"))
            .args(args)
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("MCP_ORCHESTRATION_BIN", BIN)
            .output()
            .expect("run git")
    }

    fn git_ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.git(cwd, args);
        assert!(
            out.status.success(),
            "git {args:?} failed:\n{}",
            combined(&out)
        );
        String::from_utf8(out.stdout).expect("git output is UTF-8")
    }

    fn rev_parse(&self, repo: &Path, rev: &str) -> String {
        self.git_ok(repo, &["rev-parse", "--verify", rev])
            .trim()
            .to_owned()
    }

    /// A working copy whose one commit on `main` holds the example manifest.
    fn manifest_repo(&self) -> PathBuf {
        let work = self.dir.path().join("work");
        self.git_ok(self.dir.path(), &["init", "--quiet", "work"]);
        let out = self.commit_manifest(&work, EXAMPLE_MANIFEST, "initial manifest");
        assert!(
            out.status.success(),
            "initial commit failed:\n{}",
            combined(&out)
        );
        work
    }

    /// Writes the manifest, stages it and commits; returns the `git commit` output.
    fn commit_manifest(&self, work: &Path, contents: &str, message: &str) -> Output {
        std::fs::write(work.join(MANIFEST), contents).expect("write the manifest");
        self.git_ok(work, &["add", MANIFEST]);
        self.git(work, &["commit", "--quiet", "-m", message])
    }

    /// An empty bare repo with the given hooks installed.
    fn bare_repo(&self, hooks: &[&str]) -> PathBuf {
        let bare = self.dir.path().join("remote.git");
        self.git_ok(
            self.dir.path(),
            &["init", "--quiet", "--bare", "remote.git"],
        );
        for hook in hooks {
            install_hook(hook, &bare.join("hooks"));
        }
        bare
    }

    fn push(&self, work: &Path, bare: &Path) -> Output {
        let bare = bare.to_str().expect("UTF-8 temp path");
        self.git(work, &["push", bare, "main"])
    }
}

/// Copies a hook into a hooks directory under its own name, executable.
fn install_hook(hook: &str, hooks_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let source = Path::new(hook);
    let target = hooks_dir.join(source.file_name().expect("hook file name"));
    std::fs::create_dir_all(hooks_dir).expect("create the hooks dir");
    std::fs::copy(source, &target).expect("copy the hook");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .expect("make the hook executable");
}

/// The example manifest with one server version that is not semver, and that line's number.
fn invalid_manifest() -> (String, usize) {
    let line = EXAMPLE_MANIFEST
        .lines()
        .position(|l| l.trim() == r#"version: "1.0.0""#)
        .expect("the example manifest has a server at version 1.0.0")
        + 1;
    let invalid = EXAMPLE_MANIFEST.replacen(r#"version: "1.0.0""#, "version: not-semver", 1);
    (invalid, line)
}

/// Whether `text` has a line `ecosystem-manifest.yaml:LINE:COL: error: ...`.
fn has_diagnostic(text: &str, line: usize) -> bool {
    let prefix = format!("{MANIFEST}:{line}:");
    text.lines().any(|l| {
        // Output relayed from a pre-receive hook is prefixed by git with `remote: `.
        let l = l.trim_start_matches("remote: ");
        l.strip_prefix(&prefix)
            .and_then(|rest| rest.split_once(": error: "))
            .is_some_and(|(col, _)| !col.is_empty() && col.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Request {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An "agent" on 127.0.0.1 that accepts one HTTP request, answers `202 Accepted`
/// and hands the request over the channel. Returns its base URL.
fn one_shot_agent() -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        body.truncate(length);
        let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        let _ = tx.send(Request {
            request_line,
            headers,
            body,
        });
    });
    (url, rx)
}

/// HMAC-SHA256 of `body` with `secret`, hex, computed by `openssl` (the hook's dependency).
fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("openssl stdin")
        .write_all(body)
        .expect("feed openssl");
    let out = child.wait_with_output().expect("wait for openssl");
    assert!(out.status.success(), "openssl failed");
    // `SHA2-256(stdin)= <hex>` (OpenSSL 3) or `(stdin)= <hex>` (OpenSSL 1).
    let text = String::from_utf8(out.stdout).expect("openssl output is UTF-8");
    let hex = text
        .trim()
        .rsplit("= ")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "unexpected openssl output: {text}"
    );
    hex
}
