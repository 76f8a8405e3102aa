//! A filesystem watch on a local repository's refs, so a local `git commit` or a `git push`
//! into a local bare repo wakes the agent at once instead of at the next poll.

use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches `git_dir`'s refs and calls back through `tx` on every change. Dropping the
/// returned watcher stops it.
pub fn watch_refs(git_dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a wake-up; dropping this one loses nothing.
            let _ = tx.try_send(());
        }
    })?;
    // `refs/` catches loose refs; the git dir itself (non-recursively) catches packed-refs.
    watcher.watch(&git_dir.join("refs"), RecursiveMode::Recursive)?;
    watcher.watch(git_dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
