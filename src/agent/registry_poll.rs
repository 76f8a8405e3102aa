//! The registry poller: lists the tags of every image repository the applied manifest's
//! servers may move within, on its own interval and task, so a slow or broken registry never
//! delays a git sync or a health probe. When tags change it wakes the sync loop, which
//! resolves versions anew.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fleet::{Control, Trigger};
use crate::registry::{RegistryClient, RegistryError};

/// What the poller watches and what it found: shared with the sync loop, which names the
/// repositories and reads the tags.
#[derive(Default)]
pub struct Watched {
    /// Tags per image repository from the last poll.
    tags: RwLock<HashMap<String, Vec<String>>>,
    /// The image repositories the applied manifest's servers use.
    images: RwLock<BTreeSet<String>>,
    images_changed: tokio::sync::Notify,
}

impl Watched {
    /// Tags per image repository, as last polled.
    pub fn tags(&self) -> HashMap<String, Vec<String>> {
        self.tags.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a repository's tags; returns whether they changed.
    fn set_tags(&self, image: &str, tags: Vec<String>) -> bool {
        let mut all = self.tags.write().unwrap_or_else(|p| p.into_inner());
        if all.get(image) == Some(&tags) {
            return false;
        }
        all.insert(image.to_owned(), tags);
        true
    }

    fn images(&self) -> BTreeSet<String> {
        self.images
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_images(&self, images: BTreeSet<String>) {
        let mut current = self.images.write().unwrap_or_else(|p| p.into_inner());
        if *current != images {
            *current = images;
            self.images_changed.notify_one();
        }
    }
}

pub async fn run(
    control: Arc<Control>,
    state: Arc<Watched>,
    client: RegistryClient,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // A registry that asked us to wait is not asked again before then.
    let mut not_before: HashMap<String, tokio::time::Instant> = HashMap::new();
    // A failure that needs someone to act (a missing repository, refused credentials) is
    // logged once, not every interval.
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        let now = tokio::time::Instant::now();
        not_before.retain(|_, until| *until > now);
        let images: Vec<String> = state
            .images()
            .into_iter()
            .filter(|i| !not_before.contains_key(i))
            .collect();
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
                    reported.remove(&image);
                    debug!(image = %image, tags = list.tags.len(), cached = list.cached, "registry polled");
                    if state.set_tags(&image, list.tags) {
                        info!(image = %image, "new tags in the registry");
                        changed = true;
                    }
                }
                Err(e) => {
                    let error = crate::error_text::chain(&e);
                    if let RegistryError::RateLimited { retry_after, .. } = &e {
                        not_before.insert(image.clone(), now + *retry_after);
                    }
                    if e.is_retryable() || reported.get(&image) != Some(&error) {
                        warn!(image = %image, error = %error, retryable = e.is_retryable(), "cannot list tags; keeping the last known ones");
                    } else {
                        debug!(image = %image, error = %error, "cannot list tags (as before)");
                    }
                    reported.insert(image, error);
                }
            }
        }
        if changed {
            control.wake(Trigger::Registry);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            // A new manifest may name new repositories: poll them without waiting.
            _ = state.images_changed.notified() => {}
        }
    }
}
