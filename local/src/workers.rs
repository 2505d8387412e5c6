//! The consumers of the local queues: the same handlers as the Lambdas,
//! fed by the local bus instead of SQS.

use printworks::adapters::local::bus::{LocalBus, Message};
use printworks::domain::events::EventEnvelope;
use printworks::faults::Faults;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// The consumer's pause after a failed message, doubled while they keep
/// failing, up to [`MAX_PAUSE`]; a handled message resets it.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Handles `queue`'s messages with `handle` until told to stop, receiving
/// up to `batch` at a time and handling them one after the other (the
/// visibility timeout must cover a whole batch; several consumers of one
/// queue with a batch of 1 share its work). A handled message is deleted; a failed one
/// comes back after the visibility timeout and is dead-lettered after the
/// queue's limit, as with SQS and a Lambda reporting batch item failures.
/// With the fault switch on, a handled message's acknowledgement may be
/// lost (it is not deleted, and comes back).
pub async fn consume<F, Fut>(
    bus: LocalBus,
    queue: &'static str,
    batch: usize,
    faults: Faults,
    stop: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Message) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    consume_with_backoff(
        bus,
        queue,
        batch,
        faults,
        stop,
        |_| None::<Duration>,
        handle,
    )
    .await
}

/// [`consume`], hiding a failed message for `backoff(receive count)` (when
/// it says so) instead of the queue's visibility timeout, as a Lambda that
/// changes a failed message's visibility before reporting it.
pub async fn consume_with_backoff<F, Fut, B, D>(
    bus: LocalBus,
    queue: &'static str,
    batch: usize,
    faults: Faults,
    mut stop: watch::Receiver<bool>,
    backoff: B,
    handle: F,
) where
    F: Fn(Message) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
    B: Fn(u32) -> D,
    D: Into<Option<Duration>>,
{
    let mut pause = Duration::ZERO;
    loop {
        if *stop.borrow() {
            return;
        }
        let messages = match bus.receive(queue, batch).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(queue, error = %e, "queue unavailable; retrying");
                Vec::new()
            }
        };
        if messages.is_empty() {
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        for message in messages {
            let (id, receipt, attempt) = (
                message.message_id.clone(),
                message.receipt.clone(),
                message.receive_count,
            );
            match handle(message).await {
                Ok(outcome) if faults.lose_ack() => {
                    tracing::warn!(queue, message = %id, outcome, "handled; injected fault: the acknowledgement is lost");
                }
                Ok(outcome) => {
                    tracing::info!(queue, message = %id, outcome, "handled");
                    if let Err(e) = bus.delete(&receipt).await {
                        tracing::error!(queue, error = %e, "deleting a handled message failed");
                    }
                }
                Err(e) => {
                    tracing::error!(
                        queue,
                        message = %id,
                        attempt,
                        error = %format!("{e:#}"),
                        "failed; the message will be retried"
                    );
                    if let Some(delay) = backoff(attempt).into()
                        && let Err(e) = bus.change_visibility(&receipt, delay).await
                    {
                        tracing::warn!(queue, error = %e, "could not set the back-off");
                    }
                    // The consumer itself slows down while its handler
                    // fails, as Lambda's poller does: when a store is down,
                    // failing fast through the whole queue would spend
                    // every waiting message's deliveries on one outage.
                    // Once told to stop, the rest of the batch is handled
                    // without pausing: shutdown must not wait out back-offs.
                    // (`changed()` only wakes for a change not yet seen, so
                    // the stop flag itself is what is checked.)
                    pause = (pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE);
                    if !*stop.borrow_and_update() {
                        tokio::select! {
                            _ = stop.changed() => {}
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            }
            pause = Duration::ZERO;
        }
    }
}

/// A message body as an event envelope.
pub fn envelope(message: &Message) -> anyhow::Result<EventEnvelope> {
    serde_json::from_str(&message.body).map_err(|e| anyhow::anyhow!("not an event envelope: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::adapters::local::bus::QueueConfig;
    use printworks::adapters::local::db::{Db, Durability};
    use printworks::clock::ManualClock;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// On tokio's paused clock, time moves only by sleeping: the consumer's
    /// elapsed time is exactly the pauses it took.
    #[tokio::test(start_paused = true)]
    async fn a_failing_consumer_told_to_stop_finishes_its_batch_without_pausing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("pw.sqlite"), Durability::Normal).unwrap());
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
        let bus = LocalBus::new(db, clock);
        let config = QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            dead_letter: None,
        };
        bus.declare_queue("work", config).await.unwrap();
        let bodies: Vec<String> = (0..6).map(|i| format!("{{\"n\":{i}}}")).collect();
        bus.send("work", "Test", &bodies).await.unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let calls = Arc::new(AtomicU32::new(0));
        let started = tokio::time::Instant::now();
        let handler = {
            let (calls, stop_tx) = (calls.clone(), stop_tx.clone());
            move |_: Message| {
                let (calls, stop_tx) = (calls.clone(), stop_tx.clone());
                async move {
                    // The store is down; during the first failure,
                    // `printworks up` is stopped.
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        stop_tx.send_replace(true);
                    }
                    anyhow::bail!("store unavailable")
                }
            }
        };
        consume(bus.clone(), "work", 10, Faults::off(), stop, handler).await;
        // The whole received batch was tried (it comes back after the
        // visibility timeout), and no pause was taken: before the fix each
        // failure after the first slept 200 ms, 400 ms, ... (6.2 s here).
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(bus.depth("work").await.unwrap(), 6, "nothing was lost");
    }
}
