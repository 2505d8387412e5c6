//! The consumers of the local queues: the same handlers as the Lambdas,
//! fed by the local bus instead of SQS.

use printworks::adapters::local::bus::LocalBus;
use printworks::domain::events::EventEnvelope;
use std::time::Duration;
use tokio::sync::watch;

/// Renders paid orders from the `render` queue until told to stop. A
/// message is deleted once handled; a failed one comes back after the
/// visibility timeout and is dead-lettered after the queue's limit.
pub async fn render_loop(
    bus: LocalBus,
    renderer: render::Renderer,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let messages = match bus.receive("render", 1).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "render queue unavailable; retrying");
                Vec::new()
            }
        };
        if messages.is_empty() {
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        for message in messages {
            let result = match serde_json::from_str::<EventEnvelope>(&message.body) {
                Ok(event) => renderer
                    .handle(&event, message.receive_count)
                    .await
                    .map_err(|e| e.0),
                Err(e) => Err(anyhow::anyhow!("not an event envelope: {e}")),
            };
            match result {
                Ok(outcome) => {
                    tracing::info!(message = %message.message_id, ?outcome, "render handled");
                    if let Err(e) = bus.delete(&message.receipt).await {
                        tracing::error!(error = %e, "deleting a handled render message failed");
                    }
                }
                Err(e) => tracing::error!(
                    message = %message.message_id,
                    attempt = message.receive_count,
                    error = %e,
                    "render failed; the message will be retried"
                ),
            }
        }
    }
}
