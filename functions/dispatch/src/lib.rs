//! The dispatch function: `OrderRendered` in; the order assigned to a plant
//! (`OrderDispatched` through the outbox, the plant's open-job count in the
//! same transaction) and one job message per item copy on the plant's
//! queue, `plant-<id>-jobs`.
//!
//! The assignment is written before the jobs are sent. A delivery that
//! finds the order already `dispatched` sends the same jobs again (the ids
//! are stored on the order and are a function of order, line and copy; only
//! the presigned URLs are fresh), so a crash between the write and the send
//! loses nothing and the agent's journal drops the duplicates.
//!
//! - [`config`]: [`Config`], [`Resources`] and the constructors
//!   [`Dispatcher::new`] (local runner, tests) and `Dispatcher::on_aws` (Lambda).

pub mod config;
pub use config::{Config, Ports, Resources};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use printworks::domain::catalog::Catalog;
use printworks::domain::events::{EventEnvelope, EventType};
use printworks::domain::job_records::JobRun;
use printworks::domain::ops;
use printworks::domain::order::Order;
use printworks::domain::production::{
    Dispatch, Job, JobCancel, JobFile, JobProduct, job_id_of_attempt,
};
use printworks::domain::state::OrderState;
use printworks::ports::{
    BlobStore, Clock, MessageQueue, OrderStore, ProductionStore, QueueError, StoreError,
};
use printworks::retry::{self, Attempt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The job queue of each plant of the catalog
/// ([`printworks::topology::plant_jobs_queue`]).
#[derive(Clone, Default)]
pub struct PlantQueues(pub BTreeMap<String, Arc<dyn MessageQueue>>);

impl PlantQueues {
    /// One queue per plant, made by `queue(plant id)`.
    pub fn for_plants<'a>(
        plants: impl IntoIterator<Item = &'a String>,
        queue: impl Fn(&str) -> Arc<dyn MessageQueue>,
    ) -> PlantQueues {
        PlantQueues(plants.into_iter().map(|p| (p.clone(), queue(p))).collect())
    }
}

/// What handling one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Assigned now; `jobs` messages sent.
    Dispatched {
        plant: String,
        jobs: usize,
    },
    /// Was already assigned: the same jobs sent again.
    Resent {
        plant: String,
        jobs: usize,
    },
    /// No plant can make the order.
    Held {
        reason: String,
    },
    /// A cancelled order's unfinished jobs: the plants were told to stop them.
    Stopped {
        plants: String,
        jobs: usize,
    },
    Skipped(String),
}

/// A failure worth retrying (store or queue trouble).
pub use printworks::retry::Retry;

pub struct Dispatcher {
    pub catalog: Arc<Catalog>,
    pub orders: Arc<dyn OrderStore>,
    pub production: Arc<dyn ProductionStore>,
    pub prints: Arc<dyn BlobStore>,
    pub plants: PlantQueues,
    pub clock: Arc<dyn Clock>,
    /// How long the files' presigned URLs are valid.
    pub url_ttl: Duration,
}

/// Lost races with another writer before giving up (the message returns).
const MAX_CONFLICTS: u32 = 5;

impl Dispatcher {
    #[tracing::instrument(skip_all, fields(order_id = %event.order_id, tenant = %event.tenant))]
    pub async fn handle(&self, event: &EventEnvelope) -> Result<Outcome, Retry> {
        if event.event_type == EventType::OrderCancelled {
            return self.stop_jobs(event).await;
        }
        let dispatches_again = ops::stage_of(event) == Some(ops::Stage::Dispatch);
        if event.event_type != EventType::OrderRendered && !dispatches_again {
            return Ok(Outcome::Skipped(format!(
                "{} is not dispatched",
                event.event_type.as_str()
            )));
        }
        let attempt = ops::attempt_of(event);
        // Each attempt reads the order afresh; a write that lost to another
        // writer is decided again on what that writer left.
        retry::on_conflict(MAX_CONFLICTS, || async {
            let Some(order) = self
                .orders
                .get(&event.tenant, &event.order_id)
                .await
                .map_err(store)?
            else {
                tracing::warn!("OrderRendered for an unknown order");
                return Ok(Outcome::Skipped("unknown order".into()));
            };
            // Work of an earlier production attempt is not done: an
            // operator released or reprinted the order since.
            if !order.starts_work_of(attempt) {
                return Ok(Outcome::Skipped(format!(
                    "the order is in attempt {}, the message of attempt {attempt}",
                    order.attempt
                )));
            }
            match order.state {
                OrderState::Rendered => {}
                OrderState::Dispatched => {
                    let (plant, jobs) = self.send_jobs(&order).await?;
                    return Ok(Outcome::Resent { plant, jobs });
                }
                // The reconciler's hand-over of an order some of whose jobs
                // no plant has taken: those are sent again, with fresh URLs.
                OrderState::InProduction if event.event_type == EventType::OrderNudged => {
                    let (plant, jobs) = self.send_jobs(&order).await?;
                    return Ok(Outcome::Resent { plant, jobs });
                }
                other => return Ok(Outcome::Skipped(format!("the order is {}", other.as_str()))),
            }
            let plants: Vec<String> = self.catalog.plants.keys().cloned().collect();
            let open = self.production.open_jobs(&plants).await.map_err(store)?;
            let decision = order
                .dispatch(&self.catalog, &open, self.clock.now())
                .map_err(|e| Retry(anyhow::anyhow!(e)))?;
            let written = match &decision {
                Dispatch::ToPlant { next, event } => {
                    let production = next.production.as_ref().ok_or_else(|| {
                        Retry(anyhow::anyhow!("a dispatched order without production"))
                    })?;
                    self.production
                        .transition_counted(
                            next,
                            &order,
                            vec![event.clone()],
                            &production.plant,
                            production.open_jobs(),
                        )
                        .await
                }
                Dispatch::Hold { next, event } => {
                    self.orders
                        .transition(next, &order, vec![event.clone()])
                        .await
                }
            };
            written.map_err(Attempt::store)?;
            match decision {
                Dispatch::ToPlant { next, .. } => {
                    let (plant, jobs) = self.send_jobs(&next).await?;
                    tracing::info!(plant, jobs, "dispatched");
                    Ok(Outcome::Dispatched { plant, jobs })
                }
                Dispatch::Hold { next, .. } => {
                    let reason = next.hold.map(|h| h.reason).unwrap_or_default();
                    tracing::warn!(reason, "no plant can make the order");
                    Ok(Outcome::Held { reason })
                }
            }
        })
        .await
        .map_err(|e: Retry| match e.0.downcast_ref::<StoreError>() {
            Some(StoreError::Conflict) => Retry(anyhow::anyhow!(
                "the order kept changing while being dispatched"
            )),
            _ => e,
        })
    }

    /// Builds the job messages of a dispatched order and sends them, each
    /// to its plant's queue (a reprint may go to another plant than the
    /// order's). Returns the plants (comma-separated) and the count sent.
    /// An order cancelled after dispatch: tells each plant to take the
    /// jobs it has not finished off its floor (`OrderCancelled` names
    /// them). Sent again on a redelivery: an agent that did it already
    /// finds the jobs cancelled and does nothing.
    async fn stop_jobs(&self, event: &EventEnvelope) -> Result<Outcome, Retry> {
        let mut by_plant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Runs of copies (line, first..=last, attempt, plant); an event
        // written before runs named each job (`job_id`, `plant`).
        for entry in event.data["jobs_to_stop"].as_array().into_iter().flatten() {
            if let (Some(id), Some(plant)) = (entry["job_id"].as_str(), entry["plant"].as_str()) {
                by_plant
                    .entry(plant.to_string())
                    .or_default()
                    .push(id.to_string());
                continue;
            }
            let Ok(run) = serde_json::from_value::<JobRun>(entry.clone()) else {
                tracing::warn!(order = %event.order_id, ?entry, "a job to stop that names no job");
                continue;
            };
            let Some(plant) = &run.plant else { continue };
            by_plant.entry(plant.clone()).or_default().extend(
                (run.first..=run.last)
                    .map(|copy| job_id_of_attempt(&event.order_id, run.line, copy, run.attempt)),
            );
        }
        if by_plant.is_empty() {
            return Ok(Outcome::Skipped(
                "cancelled before any job left for a plant".into(),
            ));
        }
        let reason = event.data["reason"].as_str().unwrap_or("cancelled");
        let mut stopped = 0;
        for (plant, jobs) in &by_plant {
            let queue = self
                .plants
                .0
                .get(plant)
                .ok_or_else(|| Retry(anyhow::anyhow!("no job queue for plant {plant}")))?;
            // One message per 500 jobs keeps each under SQS's 256 KiB.
            let bodies = jobs
                .chunks(500)
                .map(|chunk| {
                    serde_json::to_string(&JobCancel {
                        cancel_jobs: chunk.to_vec(),
                        plant: plant.clone(),
                        tenant: event.tenant.clone(),
                        order_id: event.order_id.clone(),
                        reason: reason.to_string(),
                        at: event.occurred_at,
                    })
                    .map_err(|e| Retry(e.into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            queue
                .send_batch(&bodies)
                .await
                .map_err(|e| Retry(anyhow::anyhow!("plant {plant} job queue: {e}")))?;
            stopped += jobs.len();
        }
        let plants: Vec<&str> = by_plant.keys().map(String::as_str).collect();
        Ok(Outcome::Stopped {
            plants: plants.join(","),
            jobs: stopped,
        })
    }

    /// Sends the current attempt's jobs no plant has reported on (all of
    /// them at the first dispatch), with fresh URLs.
    async fn send_jobs(&self, order: &Order) -> Result<(String, usize), Retry> {
        let reported: std::collections::BTreeSet<&str> = order
            .production
            .iter()
            .flat_map(|p| p.jobs.iter())
            .filter(|j| j.status.is_some())
            .map(|j| j.job_id.as_str())
            .collect();
        let mut jobs = self.jobs(order).await?;
        jobs.retain(|j| !reported.contains(j.job_id.as_str()));
        let mut by_plant: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for job in &jobs {
            let body = serde_json::to_string(job).map_err(|e| Retry(e.into()))?;
            by_plant.entry(job.plant.as_str()).or_default().push(body);
        }
        for (plant, bodies) in &by_plant {
            let queue = self
                .plants
                .0
                .get(*plant)
                .ok_or_else(|| Retry(anyhow::anyhow!("no job queue for plant {plant}")))?;
            match queue.send_batch(bodies).await {
                Ok(()) => {}
                Err(QueueError::NotSent { failed, cause }) => {
                    return Err(Retry(anyhow::anyhow!(
                        "{} of {} jobs not sent to plant {plant}: {cause:#}",
                        failed.len(),
                        bodies.len()
                    )));
                }
                Err(e) => return Err(Retry(anyhow::anyhow!("plant {plant} job queue: {e}"))),
            }
        }
        let plants: Vec<&str> = by_plant.keys().copied().collect();
        Ok((plants.join(","), jobs.len()))
    }

    /// The job messages of a dispatched order, with fresh presigned URLs.
    pub async fn jobs(&self, order: &Order) -> Result<Vec<Job>, Retry> {
        let production = order
            .production
            .as_ref()
            .ok_or_else(|| Retry(anyhow::anyhow!("the order has no production record")))?;
        let now = self.clock.now();
        let mut jobs = Vec::with_capacity(production.jobs.len());
        let mut urls: BTreeMap<String, String> = BTreeMap::new();
        // The current attempt's jobs: those of earlier attempts were sent
        // then (a reprint sends only the jobs it makes anew).
        for record in production
            .jobs
            .iter()
            .filter(|j| j.attempt == order.attempt)
        {
            let (packing_ref, jobs_in_package) = production.package_of(record);
            let item = order
                .items
                .iter()
                .find(|i| i.line == record.line)
                .ok_or_else(|| Retry(anyhow::anyhow!("job {} has no item", record.job_id)))?;
            let mut files = Vec::with_capacity(item.renders.len());
            for render in &item.renders {
                // Every copy of a line prints the same files: one URL each.
                let url = match urls.get(&render.print.key) {
                    Some(url) => url.clone(),
                    None => {
                        let signed = self
                            .prints
                            .presign_get(&render.print.key, self.url_ttl)
                            .await
                            .map_err(store)?;
                        urls.insert(render.print.key.clone(), signed.url.clone());
                        signed.url
                    }
                };
                files.push(JobFile {
                    name: format!("{}.jpg", render.image + 1),
                    url,
                    sha256: render.print.sha256.clone(),
                    bytes: render.print.bytes,
                    width: render.print.width,
                    height: render.print.height,
                });
            }
            let product = self.catalog.product(&item.sku);
            let size = product.map(|p| (p.trim_mm.width, p.trim_mm.height));
            jobs.push(Job {
                job_id: record.job_id.clone(),
                plant: production.plant_of(record).to_string(),
                tenant: order.tenant.clone(),
                order_id: order.id.clone(),
                line: record.line,
                copy: record.copy,
                copies: item.quantity,
                product: JobProduct {
                    sku: item.sku.clone(),
                    name: item.name.clone(),
                    width_mm: size.map_or(0, |s| s.0),
                    height_mm: size.map_or(0, |s| s.1),
                    options: item.options.clone(),
                },
                files,
                files_expire_at: now + self.url_ttl,
                shipping_method: order.shipping.method,
                ship_to: order.shipping.address.clone(),
                barcode: format!("{packing_ref}-{}-{}", record.line, record.copy),
                packing_ref,
                jobs_in_package,
            });
        }
        Ok(jobs)
    }

    /// The Lambda's SQS batch of `OrderRendered` envelopes (raw SNS delivery).
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        printworks::sqs_batch::each_record("dispatch", event, |body, _| async move {
            let envelope: EventEnvelope = serde_json::from_str(&body)
                .map_err(|e| anyhow::anyhow!("not an event envelope: {e}"))?;
            self.handle(&envelope).await.map_err(|e| e.0)
        })
        .await
    }
}

fn store(e: StoreError) -> Retry {
    Retry(anyhow::anyhow!("store: {e}"))
}

#[cfg(test)]
mod tests;
