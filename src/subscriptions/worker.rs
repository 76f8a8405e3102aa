//! One subscription's delivery loop: read the event log after the cursor, deliver each
//! event the subscription wants, one at a time and in id order (the next only once the
//! previous is delivered or dead-lettered), move the cursor, and sleep until the log grows.
//!
//! The cursor is stored after each delivery, so a restarted agent resumes with the first
//! event that was neither delivered nor dead-lettered: a delivery cut short by a shutdown
//! is sent again (same delivery id), never skipped.

use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::deliver::{Outcome, Outgoing, Sender};
use super::{Delivery, wants};
use crate::store::{Event, EventFilter, NewDeadLetter, Store, StoreError, Subscription};

/// Events read from the log per trip.
const BATCH: usize = 100;

/// The delivery id of `event` for `subscription`: the same on every try and after a
/// restart, so a receiver can drop a repeat.
pub fn delivery_id(subscription: &str, event: i64) -> String {
    format!("{subscription}:{event}")
}

/// Runs until `stop` is cancelled (a shutdown, or the subscription was deleted).
pub async fn run(store: Store, sender: Sender, sub: Subscription, stop: CancellationToken) {
    info!(subscription = %sub.id, url = %sub.url, cursor = sub.cursor, "delivering events");
    let mut cursor = sub.cursor;
    loop {
        // Subscribed before reading, so an event stored in between still wakes us.
        let mut live = store.subscribe();
        let batch = match store
            .call(move |s| s.events_after(Some(cursor), EventFilter::default(), BATCH))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                warn!(subscription = %sub.id, error = %crate::error_text::chain(&e), "cannot read the event log; trying again in a second");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                // A new event, or so many that this receiver lagged: read the log again.
                r = live.recv() => if let Err(RecvError::Closed) = r { return },
            }
            continue;
        }
        if let Some(first) = batch.first()
            && first.id > cursor + 1
            && cursor > 0
        {
            // Retention pruned events this subscription had not been sent yet.
            warn!(subscription = %sub.id, after = cursor, next = first.id, "events were pruned before they were delivered");
        }
        let last = batch.last().map_or(cursor, |e| e.id);
        for event in batch {
            if !wants(&sub.events, &event.kind) {
                continue;
            }
            match deliver(&store, &sender, &sub, &event, &stop).await {
                Ok(true) => cursor = event.id,
                // The subscription is gone, or the agent is stopping.
                Ok(false) => return,
                Err(e) => {
                    warn!(subscription = %sub.id, error = %crate::error_text::chain(&e), "cannot record a delivery; stopping this subscription's deliveries until the agent restarts");
                    return;
                }
            }
        }
        // Past the events it does not want too, so they are not read again.
        if last > cursor {
            let id = sub.id.clone();
            match store.call(move |s| s.advance_subscription(&id, last)).await {
                Ok(true) => cursor = last,
                Ok(false) => return,
                Err(e) => {
                    warn!(subscription = %sub.id, error = %crate::error_text::chain(&e), "cannot move the subscription's cursor");
                    cursor = last;
                }
            }
        }
    }
}

/// Delivers one event and records the outcome: `Ok(false)` when the worker should end.
async fn deliver(
    store: &Store,
    sender: &Sender,
    sub: &Subscription,
    event: &Event,
    stop: &CancellationToken,
) -> Result<bool, StoreError> {
    let delivery_id = delivery_id(&sub.id, event.id);
    let body = serde_json::to_vec(&Delivery {
        delivery_id: delivery_id.clone(),
        subscription_id: sub.id.clone(),
        event: event.clone(),
    })
    .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", event.id)))?;
    let out = Outgoing {
        url: sub.url.clone(),
        delivery_id,
        kind: event.kind.clone(),
        body,
        secret: Some(sub.secret.clone()),
    };
    let (id, event_id) = (sub.id.clone(), event.id);
    match sender.deliver(&out, stop).await {
        Outcome::Stopped => Ok(false),
        Outcome::Delivered { attempts } => {
            debug!(subscription = %sub.id, delivery = %out.delivery_id, attempts, "delivered");
            store
                .call(move |s| s.advance_subscription(&id, event_id))
                .await
        }
        Outcome::GaveUp { attempts, error } => {
            warn!(subscription = %sub.id, delivery = %out.delivery_id, attempts, error = %error, "gave up on a delivery; recorded as a dead letter");
            let dead = NewDeadLetter {
                subscription_id: Some(sub.id.clone()),
                url: sub.url.clone(),
                delivery_id: out.delivery_id,
                event_id: Some(event.id),
                kind: out.kind,
                body: String::from_utf8_lossy(&out.body).into_owned(),
                attempts,
                error,
                failed_at: Timestamp::now(),
            };
            store.call(move |s| s.add_dead_letter(&dead)).await?;
            // Whether the subscription is still there.
            store
                .call(move |s| s.subscription(&id).map(|s| s.is_some()))
                .await
        }
    }
}
