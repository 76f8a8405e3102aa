//! Records the git commit the binary is built from, for `--version`; `unknown` outside a
//! git checkout (a source tarball, a crate download).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MCP_ORCHESTRATION_COMMIT={commit}");
    // Again when HEAD moves: a checkout rewrites HEAD, a commit the branch's ref. Only
    // files that exist: cargo runs a script whose watched file is missing every time. Not
    // the index (`git status` rewrites it), so a dirty tree is not marked.
    println!("cargo:rerun-if-changed=build.rs");
    // `--git-path` finds each where it is, in a worktree too (HEAD in the worktree's own
    // directory, branches in the shared one).
    let mut watched: Vec<String> = git(&["rev-parse", "--git-path", "HEAD"])
        .into_iter()
        .collect();
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &head]));
    }
    for file in watched.into_iter().filter(|f| Path::new(f).exists()) {
        println!("cargo:rerun-if-changed={file}");
    }
}
