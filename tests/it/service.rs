//! The agent installs like a service: `--version` names the commit, the completion script
//! completes in a real bash, the man pages render with groff, and the systemd unit passes
//! `systemd-analyze verify` (its `Documentation=` page found among the generated ones) and
//! scores as hardened by `systemd-analyze security`.

use std::path::Path;
use std::process::Command;

use crate::support::{BIN, REPO, run_in, stderr, stdout};

/// Whether `program` runs here; under `CI=true` its absence fails the test instead.
fn have_or_skip(program: &str, test: &str) -> bool {
    let here = Command::new(program).arg("--version").output().is_ok();
    if !here {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: CI=true but {program} is missing (.ci/run installs it)"
        );
        eprintln!("skipping {test}: no {program}");
    }
    here
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = run_in(Path::new(REPO), &["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(REPO)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        line.trim(),
        format!(
            "mcp-orchestration {} (commit {head})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// What bash's completion offers for `words`, the last one being completed: the function
/// the script registered with `complete -F`, called as bash calls it.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let program = format!(
        "source {}; spec=$(complete -p mcp-orchestration); f=${{spec#*-F }}; f=${{f%% *}}; \
         COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
         COMP_POINT=${{#COMP_LINE}}; \
         \"$f\" mcp-orchestration \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.join(" "),
        words.len() - 1
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags_from_the_generated_script() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("mcp-orchestration.bash");
    std::fs::write(&script, stdout(&out)).unwrap();
    let commands = bash_completes(&script, &["mcp-orchestration", "ro"]);
    assert_eq!(commands, ["rollout", "rollback"], "{commands:?}");
    let flags = bash_completes(&script, &["mcp-orchestration", "rollback", "--t"]);
    assert!(flags.contains(&"--to".to_owned()), "{flags:?}");
    // The other shells get a script naming the same commands.
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run_in(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("rollback"), "{shell}");
    }
    let out = run_in(dir.path(), &["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("possible values"), "{}", stderr(&out));
}

#[test]
fn the_man_pages_render_and_name_every_command() {
    if !have_or_skip("groff", "the_man_pages_render") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = dir.path().join("mcp-orchestration.1");
    std::fs::write(&page, stdout(&out)).unwrap();
    let rendered = Command::new("groff")
        // Plain text: no SGR, no overstrike bold or underline.
        .args(["-man", "-Tutf8", "-P-cbou"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(rendered.status.success());
    let text = String::from_utf8_lossy(&rendered.stdout);
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS", "VERSION"] {
        assert!(text.contains(section), "no {section} in:\n{text}");
    }
    for command in ["agent", "status", "rollback", "completions", "man"] {
        assert!(
            text.contains(&format!("mcp-orchestration-{command}(1)")),
            "no {command} in:\n{text}"
        );
    }
    let out = run_in(
        dir.path(),
        &["man", "--dir", dir.path().join("man1").to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "mcp-orchestration.1",
        "mcp-orchestration-agent.1",
        "mcp-orchestration-config-deploy.1",
    ] {
        assert!(dir.path().join("man1").join(page).is_file(), "no {page}");
    }
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !have_or_skip("systemd-analyze", "the_systemd_unit_verifies") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The unit as shipped, but starting this build of the binary (verify checks that
    // ExecStart's program exists), with its man pages where `man` looks.
    let shipped =
        std::fs::read_to_string(Path::new(REPO).join("examples/systemd/mcp-orchestration.service"))
            .unwrap();
    assert!(shipped.contains("ExecStart=/usr/local/bin/mcp-orchestration agent"));
    let unit = dir.path().join("mcp-orchestration.service");
    std::fs::write(
        &unit,
        shipped.replace("/usr/local/bin/mcp-orchestration", BIN),
    )
    .unwrap();
    let man1 = dir.path().join("man").join("man1");
    let out = run_in(dir.path(), &["man", "--dir", man1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{said}");
    assert!(
        !said.contains("mcp-orchestration.service"),
        "verify has something to say about the unit:\n{said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for mcp-orchestration.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    // systemd calls up to 3.9 "OK"; a service running arbitrary MCP servers as its
    // children is held to less.
    assert!(score <= 2.0, "exposure {score}:\n{report}");
}
