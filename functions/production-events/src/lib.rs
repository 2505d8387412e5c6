//! The production-events function: the plants' job statuses (the
//! `plant-events` queue, sent by the edge agents) applied to their orders.
//!
//! Forward only: a job's status replaces only a lower one, so a stale or
//! duplicate report changes nothing; the order follows its slowest job and
//! `OrderInProduction`, `OrderShipped` and `ProductionFailed` go through the
//! outbox with the change. A report reads and writes the job's own record
//! and the order's production record (the order itself only when its state
//! changes), so an order of 5,000 copies costs a report no more than one
//! of a single copy. The plant's open-job count drops in the same
//! transaction when a job ships or fails. Reports for many jobs of one
//! order race each other; a lost race is re-read and applied again.
//!
//! - [`config`]: [`Resources`] and the constructors [`ProductionEvents::new`]
//!   (local runner, tests) and `ProductionEvents::on_aws` (Lambda).

pub mod config;
pub use config::Resources;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use printworks::domain::job_records::{ReportOutcome, apply_report};
use printworks::domain::production::{JobState, JobStatusReport, StatusOutcome};
use printworks::ports::{Clock, JobView, JobWrite, OrderStore, ProductionStore, StoreError};
use printworks::retry::{self, Attempt};
use std::sync::Arc;

/// What handling one report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job moved forward; the events written with it.
    Applied { events: Vec<String> },
    /// Stale or duplicate.
    NoChange,
    /// A report of a job an operator had made anew (a reprint, a failed
    /// job made again): it changes nothing.
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The message is not a report of a job we know: retrying cannot help,
    /// so it is left to reach the dead-letter queue, where a person looks.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Store trouble, or too many lost races: retried.
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

impl From<StoreError> for Failure {
    /// Store trouble is retried; so are lost races, once
    /// [`retry::on_conflict`] gave up on them.
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Conflict => Failure::Retry(anyhow::anyhow!(
                "the order kept changing; the report will come back"
            )),
            StoreError::Unexpected(e) => Failure::Retry(e),
        }
    }
}

pub struct ProductionEvents {
    pub orders: Arc<dyn OrderStore>,
    pub production: Arc<dyn ProductionStore>,
    pub clock: Arc<dyn Clock>,
}

/// Lost races before the message is handed back to the queue.
const MAX_CONFLICTS: u32 = 20;

impl ProductionEvents {
    /// Handles one message body.
    pub async fn handle(&self, body: &str) -> Result<Outcome, Failure> {
        let report = JobStatusReport::parse(body).map_err(|e| Failure::Rejected(e.to_string()))?;
        self.apply(&report).await
    }

    #[tracing::instrument(skip_all, fields(order_id = %report.order_id, tenant = %report.tenant, job = %report.job_id, status = report.status.as_str()))]
    pub async fn apply(&self, report: &JobStatusReport) -> Result<Outcome, Failure> {
        // The plants view's "last reported": any report counts, applied or not.
        self.production
            .plant_reported(&report.plant, self.clock.now())
            .await
            .map_err(|e| Failure::Retry(anyhow::anyhow!("order store: {e}")))?;
        // Each attempt reads afresh: another job's report may have moved
        // the order since.
        retry::on_conflict(MAX_CONFLICTS, || async {
            let view = self
                .production
                .job_view(&report.tenant, &report.order_id, &report.job_id)
                .await
                .map_err(|e| Failure::Retry(anyhow::anyhow!("order store: {e}")))?;
            match view {
                Some(view) => self.apply_to_job(report, view).await,
                None => self.apply_to_whole_order(report).await,
            }
        })
        .await
    }

    /// The report applied to the one job's record: a small write.
    async fn apply_to_job(
        &self,
        report: &JobStatusReport,
        view: JobView,
    ) -> Result<Outcome, Attempt<Failure>> {
        match apply_report(
            &view.order,
            &view.record,
            view.job.as_ref(),
            report,
            self.clock.now(),
        ) {
            ReportOutcome::NoChange => Ok(Outcome::NoChange),
            ReportOutcome::Superseded => {
                tracing::info!("a report of a superseded job: nothing changes");
                Ok(Outcome::Superseded)
            }
            ReportOutcome::Unknown(why) => Err(Failure::Rejected(why).into()),
            ReportOutcome::Changed(change) => {
                let change = *change;
                let shipped = change.closed > 0 && change.job.status == Some(JobState::Shipped);
                let names = change
                    .events
                    .iter()
                    .map(|e| e.event_type.as_str().to_string())
                    .collect();
                self.production
                    .record_job(JobWrite {
                        tenant: report.tenant.clone(),
                        order_id: report.order_id.clone(),
                        job: change.job,
                        record: change.record,
                        observed_revision: view.record.revision,
                        order: change.order.map(|next| (next, view.order.clone())),
                        events: change.events,
                        plant: report.plant.clone(),
                        open_jobs_delta: -change.closed,
                        shipped,
                    })
                    .await
                    .map_err(Attempt::store)?;
                Ok(Outcome::Applied { events: names })
            }
        }
    }

    /// An order never dispatched (the report is refused) or stored before
    /// jobs were records of their own: the report applied to the whole
    /// order, which moves its jobs out of it.
    async fn apply_to_whole_order(
        &self,
        report: &JobStatusReport,
    ) -> Result<Outcome, Attempt<Failure>> {
        let order = self
            .orders
            .get(&report.tenant, &report.order_id)
            .await
            .map_err(|e| Failure::Retry(anyhow::anyhow!("order store: {e}")))?
            .ok_or_else(|| Failure::Rejected(format!("no order {}", report.order_id)))?;
        match order.apply_job_status(report, self.clock.now()) {
            StatusOutcome::NoChange => Ok(Outcome::NoChange),
            StatusOutcome::Superseded => {
                tracing::info!("a report of a superseded job: nothing changes");
                Ok(Outcome::Superseded)
            }
            StatusOutcome::Unknown(why) => Err(Failure::Rejected(why).into()),
            StatusOutcome::Changed {
                next,
                events,
                closed,
            } => {
                let names = events
                    .iter()
                    .map(|e| e.event_type.as_str().to_string())
                    .collect();
                self.production
                    .transition_counted(&next, &order, events, &report.plant, -closed)
                    .await
                    .map_err(Attempt::store)?;
                Ok(Outcome::Applied { events: names })
            }
        }
    }

    /// The Lambda's SQS batch of job status reports.
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        printworks::sqs_batch::each_record("production-events", event, |body, _| async move {
            self.handle(&body).await.map_err(anyhow::Error::from)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
