//! The registry poller: lists the tags of every image repository the applied manifest's
//! servers may move within, on its own interval and task, so a slow or broken registry never
//! delays a git sync or a health probe. When tags change it wakes the sync loop, which
//! resolves versions anew.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::{AgentState, Trigger};
use crate::registry::RegistryClient;

pub async fn run(
    state: Arc<AgentState>,
    client: RegistryClient,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let images = state.images();
        let mut changed = false;
        // Repositories are polled concurrently; the client caps requests per registry.
        let results = futures::future::join_all(images.iter().map(|image| {
            let client = client.clone();
            async move { (image.clone(), client.list_tags(image).await) }
        }))
        .await;
        for (image, result) in results {
            match result {
                Ok(list) => {
                    debug!(image = %image, tags = list.tags.len(), cached = list.cached, "registry polled");
                    if state.set_tags(&image, list.tags) {
                        info!(image = %image, "new tags in the registry");
                        changed = true;
                    }
                }
                Err(e) => {
                    warn!(image = %image, error = %crate::error_text::chain(&e), "cannot list tags; keeping the last known ones")
                }
            }
        }
        if changed {
            state.wake(Trigger::Registry);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            // A new manifest may name new repositories: poll them without waiting.
            _ = state.images_changed() => {}
        }
    }
}
