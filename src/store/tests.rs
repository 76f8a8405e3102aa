//! Unit tests of the store against a real SQLite file in a temporary directory.

use super::*;
use crate::manifest::Diagnostic;

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn new_run(commit: &str) -> NewRun {
    NewRun {
        commit_id: commit.to_owned(),
        author: Some("Ada <ada@example.org>".into()),
        message: Some("add a server".into()),
        committed_at: Some(now()),
        trigger: "poll".into(),
        seen_at: now(),
    }
}

#[test]
fn a_run_keeps_its_stages_and_errors() {
    let (_d, store) = open();
    let id = store.begin_run(&new_run("abcdef0123")).unwrap();
    for (stage, status) in [
        (Stage::Fetch, StageStatus::Succeeded),
        (Stage::Validate, StageStatus::Failed),
    ] {
        store
            .record_stage(
                id,
                &StageRecord {
                    stage,
                    status,
                    started_at: now(),
                    finished_at: Some(now()),
                    detail: None,
                },
            )
            .unwrap();
    }
    let err = Diagnostic {
        severity: crate::manifest::Severity::Error,
        file: "m.yaml".into(),
        line: 3,
        column: 9,
        path: "servers[0].id".into(),
        message: "bad".into(),
    };
    store
        .finish_run(
            id,
            RunResult::Rejected,
            Some("invalid manifest"),
            std::slice::from_ref(&err),
            now(),
        )
        .unwrap();
    let run = store.run_for_commit("abcd").unwrap().unwrap();
    assert_eq!(run.result, RunResult::Rejected);
    assert_eq!(run.errors, [err]);
    assert_eq!(
        run.stages
            .iter()
            .map(|s| (s.stage, s.status))
            .collect::<Vec<_>>(),
        [
            (Stage::Fetch, StageStatus::Succeeded),
            (Stage::Validate, StageStatus::Failed)
        ]
    );
    assert_eq!(
        store.latest_result_for("abcdef0123").unwrap(),
        Some(RunResult::Rejected)
    );
    assert!(
        store.run_for_commit("abc").unwrap().is_none(),
        "too short a prefix"
    );
    assert!(store.run_for_commit("zzzz").unwrap().is_none());
}

#[test]
fn runs_are_listed_newest_first() {
    let (_d, store) = open();
    for c in ["aaaa", "bbbb", "cccc"] {
        store.begin_run(&new_run(c)).unwrap();
    }
    let commits: Vec<_> = store
        .runs(2)
        .unwrap()
        .into_iter()
        .map(|r| r.commit_id)
        .collect();
    assert_eq!(commits, ["cccc", "bbbb"]);
}

#[test]
fn unfinished_work_is_marked_interrupted() {
    let (_d, store) = open();
    let run = store.begin_run(&new_run("aaaa")).unwrap();
    store
        .begin_rollout(&NewRollout {
            run_id: Some(run),
            server_id: "s".into(),
            trigger: "commit".into(),
            action: RolloutAction::Deploy,
            from_version: None,
            to_version: Some("1.0.0".into()),
            image: None,
            command: Some("/bin/x".into()),
            revision: Some("aaaa".into()),
            strategy: None,
            started_at: now(),
        })
        .unwrap();
    assert_eq!(store.interrupt_unfinished(now()).unwrap(), 2);
    assert_eq!(store.runs(1).unwrap()[0].result, RunResult::Interrupted);
    assert_eq!(
        store.rollouts(Some("s"), 10).unwrap()[0].outcome,
        RolloutOutcome::Interrupted
    );
}

#[test]
fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.set_meta("applied_revision", "abcd").unwrap();
        s.set_held("n8n", true, now()).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.meta("applied_revision").unwrap().as_deref(), Some("abcd"));
    assert_eq!(s.held_servers().unwrap(), ["n8n"]);
    let ro = Store::open_read_only(&path).unwrap();
    assert_eq!(
        ro.meta("applied_revision").unwrap().as_deref(),
        Some("abcd")
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found: 999, .. })
    ));
}

#[test]
fn health_events_are_kept_newest_first_and_pruned_by_age_and_count() {
    let (_d, store) = open();
    let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
    for i in 0..10 {
        for server in ["a", "b"] {
            store
                .add_health_event(&NewHealthEvent {
                    server_id: server.into(),
                    at: at(i),
                    kind: "transition".into(),
                    from_state: Some("healthy".into()),
                    to_state: Some("degraded".into()),
                    detail: format!("event {i}"),
                    instance_id: None,
                })
                .unwrap();
        }
    }
    let a = store.health_events(Some("a"), None, 3).unwrap();
    assert_eq!(
        a.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(),
        ["event 9", "event 8", "event 7"]
    );
    let newer = store.health_events(None, Some(a[0].id - 1), 100).unwrap();
    assert_eq!(newer.len(), 2, "only events after the given id");
    // Older than event 2 go (2 × 2), then each server keeps its newest 5 (3 × 2 more).
    assert_eq!(store.prune_health_events(at(2), 5).unwrap(), 4 + 6);
    let left = store.health_events(Some("b"), None, 100).unwrap();
    assert_eq!(
        left.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(),
        ["event 9", "event 8", "event 7", "event 6", "event 5"]
    );
}

#[test]
fn every_recorded_change_lands_in_the_event_log_in_order_and_live() {
    let (_d, store) = open();
    let mut live = store.subscribe();
    let run = store.begin_run(&new_run("abcdef0123456789")).unwrap();
    let rollout = store
        .begin_rollout(&NewRollout {
            run_id: Some(run),
            server_id: "s".into(),
            trigger: "commit".into(),
            action: RolloutAction::Update,
            from_version: Some("1.0.0".into()),
            to_version: Some("1.1.0".into()),
            image: None,
            command: Some("/bin/x".into()),
            revision: None,
            strategy: Some("beside".into()),
            started_at: now(),
        })
        .unwrap();
    store
        .add_rollout_step(rollout, "health_gate", Some("passed"), now())
        .unwrap();
    store
        .finish_rollout(
            rollout,
            &RolloutEnd {
                outcome: RolloutOutcome::Succeeded,
                reason: None,
                instance_id: Some("i-1".into()),
                endpoint: Some("http://127.0.0.1:1/mcp".into()),
                finished_at: now(),
                rolled_back_to: None,
            },
        )
        .unwrap();
    store
        .add_health_event(&NewHealthEvent {
            server_id: "s".into(),
            at: now(),
            kind: "transition".into(),
            from_state: Some("healthy".into()),
            to_state: Some("unhealthy".into()),
            detail: "3 probes failed".into(),
            instance_id: Some("i-1".into()),
        })
        .unwrap();
    store
        .finish_run(run, RunResult::Applied, None, &[], now())
        .unwrap();

    let kinds = [
        "run.started",
        "rollout.started",
        "rollout.step",
        "rollout.finished",
        "health.transition",
        "run.finished",
    ];
    let log = store
        .events_after(None, EventFilter::default(), 100)
        .unwrap();
    assert_eq!(
        log.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        kinds
    );
    assert!(log.windows(2).all(|w| w[0].id < w[1].id));
    let received: Vec<Event> = (0..kinds.len()).map(|_| live.try_recv().unwrap()).collect();
    assert_eq!(
        received, log,
        "live subscribers see exactly the log, in order"
    );

    // The step knows its server through its rollout; the summary reads as a sentence.
    assert_eq!(log[2].server_id.as_deref(), Some("s"));
    assert_eq!(log[3].summary, "rollout 1: update 1.1.0 succeeded");
    assert_eq!(log[4].summary, "healthy → unhealthy: 3 probes failed");
    assert_eq!(log[5].data["commit"], "abcdef0123456789");
    assert_eq!(
        store
            .events_after(Some(log[3].id), EventFilter::server(Some("s")), 100)
            .unwrap(),
        vec![log[4].clone()],
        "after an id, of one server"
    );
    assert_eq!(
        store
            .latest_events(EventFilter::default(), None, 2)
            .unwrap(),
        vec![log[5].clone(), log[4].clone()]
    );
    // A kind is a prefix, matched as text: `rollout.` finds the three rollout events, and
    // `_` is no wildcard.
    let rollouts = EventFilter {
        server: Some("s"),
        kind: Some("rollout."),
    };
    assert_eq!(
        store.latest_events(rollouts, None, 10).unwrap(),
        vec![log[3].clone(), log[2].clone(), log[1].clone()]
    );
    let wildcard = EventFilter {
        server: None,
        kind: Some("run_"),
    };
    assert!(store.events_after(None, wildcard, 10).unwrap().is_empty());
}

#[test]
fn pruned_event_ids_are_never_reused() {
    let (_d, store) = open();
    for i in 0..5 {
        store.begin_run(&new_run(&format!("aaaa{i}"))).unwrap();
    }
    assert_eq!(store.prune_events(now(), 2).unwrap(), 3);
    let left = store
        .events_after(None, EventFilter::default(), 100)
        .unwrap();
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
    // Even with every event pruned, the next id continues: a client resuming from 5 misses
    // nothing and sees nothing twice.
    assert_eq!(store.prune_events(now(), 0).unwrap(), 2);
    store.begin_run(&new_run("bbbb")).unwrap();
    assert_eq!(
        store
            .events_after(Some(5), EventFilter::default(), 100)
            .unwrap()[0]
            .id,
        6
    );
}

#[test]
fn a_subscription_starts_after_the_newest_event_and_a_dead_letter_moves_its_cursor() {
    let (_d, store) = open();
    store.set_held("n8n", true, now()).unwrap();
    let newest = store
        .latest_events(EventFilter::default(), None, 1)
        .unwrap()[0]
        .id;
    let sub = store
        .add_subscription(
            "sub-1",
            "http://h/x",
            &["hold.*".into()],
            "s".repeat(16).as_str(),
            now(),
        )
        .unwrap();
    assert_eq!(sub.cursor, newest, "it gets what happens from now on");
    assert!(
        !format!("{sub:?}").contains("ssss"),
        "no secret in debug output"
    );
    assert!(store.advance_subscription("sub-1", newest + 5).unwrap());
    assert!(store.advance_subscription("sub-1", newest + 1).unwrap());
    assert_eq!(
        store.subscription("sub-1").unwrap().unwrap().cursor,
        newest + 5,
        "never back"
    );
    store
        .add_dead_letter(&NewDeadLetter {
            subscription_id: Some("sub-1".into()),
            url: "http://h/x".into(),
            delivery_id: "sub-1:9".into(),
            event_id: Some(newest + 9),
            kind: "hold.set".into(),
            body: "{}".into(),
            attempts: 3,
            error: "answered HTTP 500".into(),
            failed_at: now(),
        })
        .unwrap();
    assert_eq!(
        store.subscription("sub-1").unwrap().unwrap().cursor,
        newest + 9
    );
    assert_eq!(store.dead_letters(Some("sub-1"), 10).unwrap().len(), 1);
    assert_eq!(store.dead_letter_counts().unwrap()["sub-1"], 1);
    assert!(store.delete_subscription("sub-1").unwrap());
    assert!(!store.advance_subscription("sub-1", newest + 10).unwrap());
    assert_eq!(
        store.dead_letters(None, 10).unwrap().len(),
        1,
        "dead letters stay"
    );
}

#[test]
fn holds_set_and_lifted_are_events_and_a_repeat_is_not() {
    let (_d, store) = open();
    store.set_held("n8n", true, now()).unwrap();
    store.set_held("n8n", true, now()).unwrap();
    store.set_held("n8n", false, now()).unwrap();
    store
        .set_pin(&Pin {
            server_id: "n8n".into(),
            version: "1.0.0".into(),
            reason: "operator rollback".into(),
            pinned_at: now(),
        })
        .unwrap();
    assert!(store.clear_pin("n8n", now()).unwrap());
    assert!(!store.clear_pin("n8n", now()).unwrap());
    let kinds: Vec<(String, String)> = store
        .events_after(None, EventFilter::default(), 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data["hold"].as_str().unwrap().to_owned()))
        .collect();
    let kinds: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(k, h)| (k.as_str(), h.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("hold.set", "stop"),
            ("hold.lifted", "stop"),
            ("hold.set", "rollback"),
            ("hold.lifted", "rollback")
        ]
    );
}
