//! Results in git (`--write-notes`): each run's result as a note on its commit, pushed to
//! the repository; a remote that refuses the notes is retried and never holds a sync.
//! Real git (the CLI reads the notes), real processes, HTTP on 127.0.0.1.

use std::time::Duration;

use crate::support::agent::{Options, TestAgent, process_manifest};
use crate::support::eventually;
use crate::support::git::{ManifestRepo, git};

const WAIT: Duration = Duration::from_secs(20);

/// The note `repo`'s remote holds on `commit`, as a clone sees it after fetching the notes.
fn remote_note(repo: &ManifestRepo, commit: &str) -> Option<String> {
    repo.git(&["fetch", "-q", "origin", "+refs/notes/*:refs/notes/*"]);
    let out = git(
        &repo.work(),
        &repo.home(),
        &["notes", "--ref=mcp-orchestration", "show", commit],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_run_is_a_note_on_its_commit_and_a_refused_push_is_retried_without_holding_syncs() {
    let repo = ManifestRepo::new();
    let first = repo.push_manifest(&process_manifest(&[("alpha", "1.0.0")]), "alpha");
    let agent = TestAgent::start(
        repo.remote().to_str().unwrap(),
        Options {
            write_notes: true,
            ..Options::default()
        },
    )
    .await;
    agent.wait_running("alpha", "1.0.0", WAIT).await;

    let note = eventually(WAIT, "the first run's note on the remote", || async {
        remote_note(&repo, &first)
    })
    .await;
    assert!(
        note.starts_with("mcp-orchestration: applied (run 1)\n"),
        "{note}"
    );
    assert!(note.contains("\n  deploy alpha: - -> 1.0.0\n"), "{note}");
    assert!(
        note.contains("stages: fetch succeeded, validate succeeded, plan succeeded (deploy alpha)"),
        "{note}"
    );
    assert!(
        note.contains(" alpha deploy - -> 1.0.0: succeeded\n"),
        "{note}"
    );
    assert!(
        note.contains(&format!("run: {}/revisions/{first}", agent.url)),
        "{note}"
    );
    // `git log --notes` shows it beside the commit.
    let log = repo.git(&["log", "-1", "--notes=mcp-orchestration", &first]);
    assert!(log.contains("Notes (mcp-orchestration):"), "{log}");

    // The remote refuses the notes ref (it is locked): the next commit is applied all the
    // same, and its note waits in the agent's mirror.
    let lock = repo.remote().join("refs/notes/mcp-orchestration.lock");
    std::fs::write(&lock, "").expect("lock the remote's notes ref");
    let second = repo.push_manifest(&process_manifest(&[("alpha", "1.1.0")]), "alpha 1.1.0");
    agent.wait_running("alpha", "1.1.0", WAIT).await;
    // A counted failure, not a moment's wait: the agent tried and the remote refused.
    eventually(WAIT, "a refused push of the notes", || async {
        let failed = agent
            .metric("mcp_orchestration_git_notes_pushes_total{result=\"failed\"}")
            .await?;
        (failed > 0).then_some(())
    })
    .await;
    let mirror = agent.data.path().join("repo.git");
    eventually(WAIT, "the second note in the agent's mirror", || async {
        let out = git(
            &mirror,
            &repo.home(),
            &["notes", "--ref=mcp-orchestration", "show", &second],
        );
        out.status.success().then_some(())
    })
    .await;
    assert_eq!(
        remote_note(&repo, &second),
        None,
        "the locked remote took the note"
    );

    // Once the remote accepts again, the note arrives by itself: no new commit needed.
    std::fs::remove_file(&lock).expect("unlock");
    let note = eventually(WAIT, "the second note, retried, on the remote", || async {
        remote_note(&repo, &second)
    })
    .await;
    assert!(
        note.starts_with("mcp-orchestration: applied (run 2)\n"),
        "{note}"
    );
    assert!(
        note.contains("\n  update alpha: 1.0.0 -> 1.1.0\n"),
        "{note}"
    );
    // The first note is still there: the push built on the remote's notes.
    assert!(remote_note(&repo, &first).is_some());
}
