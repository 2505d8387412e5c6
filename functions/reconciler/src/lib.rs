//! reconciler: finds what the pipeline left behind and repairs what is
//! safe to repair, announcing the rest. A schedule runs it on AWS (every 5
//! minutes); `printworks up` runs it as a task (every minute).
//!
//! One [`Reconciler::run`]:
//!
//! 1. **Outbox.** Events still unpublished [`Deadlines::outbox_after`]
//!    after they were written (a publisher that crashed past its retries,
//!    a stream record that expired) are published, then taken out of the
//!    outbox ([`ReconcileStore::unpublished`], `mark_published`). At least
//!    once, as ever: consumers drop duplicates by event id.
//! 2. **Idle orders.** For each watched state, the orders not written for
//!    that state's shortest deadline ([`Deadlines::look_after`]) are read
//!    ([`ReconcileStore::idle_orders`]) and each is decided afresh by the
//!    domain ([`printworks::domain::reconcile`]): handed to render or
//!    dispatch again, its untaken jobs sent with fresh URLs, or announced
//!    `OrderStuck`. The repair is the order's next version and its events
//!    in one conditional write: a reconciler running beside this one loses
//!    the write, reads the order again and finds nothing left to do.
//!
//! - [`config`]: [`Config`] (the deadlines), [`Resources`], `on_aws`.

pub mod config;
pub use config::{Config, Resources};

use printworks::domain::order::Order;
use printworks::domain::reconcile::{Deadlines, RepairKind, WATCHED};
use printworks::ports::{Clock, EventPublisher, OrderStore, ReconcileStore, StoreError};
use printworks::retry::{self, Attempt};
use serde::Serialize;
use std::sync::Arc;

/// Lost races with another writer before an order is left to the next run.
const MAX_CONFLICTS: u32 = 4;

pub struct Reconciler {
    pub orders: Arc<dyn OrderStore>,
    pub store: Arc<dyn ReconcileStore>,
    pub publisher: Arc<dyn EventPublisher>,
    pub clock: Arc<dyn Clock>,
    pub deadlines: Deadlines,
    /// At most this many outbox events, and orders per state, per run.
    pub batch: usize,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Outbox events published by the reconciler.
    pub republished: usize,
    /// Paid orders handed to render again.
    pub rendered_again: usize,
    /// Rendered orders handed to dispatch again.
    pub dispatched_again: usize,
    /// Orders whose untaken jobs were sent with fresh URLs.
    pub urls_refreshed: usize,
    /// Orders announced stuck.
    pub stuck: usize,
    /// Orders looked at (idle past a deadline).
    pub looked_at: usize,
    /// Orders whose repair failed (left to the next run).
    pub failed: usize,
}

impl Report {
    fn count(&mut self, kinds: &[RepairKind]) {
        for kind in kinds {
            match kind {
                RepairKind::Render => self.rendered_again += 1,
                RepairKind::Dispatch => self.dispatched_again += 1,
                RepairKind::RefreshUrls => self.urls_refreshed += 1,
                RepairKind::Stuck => self.stuck += 1,
            }
        }
    }
}

impl Reconciler {
    /// One pass: the outbox, then every watched state. A part that cannot
    /// read its index does not stop the others; the run then fails with
    /// the first such error (on AWS: its dead-letter queue and alarm),
    /// after doing what it could. An order whose repair failed is counted
    /// (`failed`) and left to the next run.
    #[tracing::instrument(skip_all)]
    pub async fn run(&self) -> Result<Report, StoreError> {
        let now = self.clock.now();
        let mut report = Report::default();
        let mut first_error: Option<StoreError> = None;
        match self.republish(now).await {
            Ok(n) => report.republished = n,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the outbox could not be reconciled");
                first_error.get_or_insert(e);
            }
        }
        for state in WATCHED {
            let before = now - self.deadlines.look_after(state);
            let idle = match self.store.idle_orders(state, before, self.batch).await {
                Ok(idle) => idle,
                Err(e) => {
                    tracing::warn!(state = state.as_str(), error = %format!("{e:#}"), "idle orders could not be read");
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            report.looked_at += idle.len();
            for order in idle {
                match self.repair(&order).await {
                    Ok(kinds) => report.count(&kinds),
                    Err(e) => {
                        report.failed += 1;
                        tracing::warn!(order_id = %order.id, tenant = %order.tenant, error = %format!("{e:#}"), "repair failed; the next run tries again");
                    }
                }
            }
        }
        if report != Report::default() {
            tracing::info!(?report, "reconciled");
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Publishes what the outbox held too long, then clears it.
    async fn republish(&self, now: time::OffsetDateTime) -> Result<usize, StoreError> {
        let stale = self
            .store
            .unpublished(now - self.deadlines.outbox_after, self.batch)
            .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let published: Vec<String> = match self.publisher.publish(&stale).await {
            Ok(()) => stale.iter().map(|e| e.id.clone()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, failed = e.failed.len(), "publishing stale outbox events failed");
                stale
                    .iter()
                    .filter(|ev| !e.failed.contains(&ev.id))
                    .map(|ev| ev.id.clone())
                    .collect()
            }
        };
        for event in stale.iter().filter(|e| published.contains(&e.id)) {
            tracing::warn!(event_id = %event.id, order_id = %event.order_id, event_type = event.event_type.as_str(), "published an event the outbox held past its deadline");
        }
        self.store.mark_published(&published).await?;
        Ok(published.len())
    }

    /// Reads the order again and writes what the domain decides, if
    /// anything; a lost race is decided again on what the winner left.
    pub async fn repair(&self, idle: &Order) -> Result<Vec<RepairKind>, StoreError> {
        retry::on_conflict(MAX_CONFLICTS, || async {
            let Some(order) = self
                .orders
                .get(&idle.tenant, &idle.id)
                .await
                .map_err(Attempt::store)?
            else {
                return Ok(Vec::new());
            };
            let Some(repair) = order.reconcile(self.clock.now(), &self.deadlines) else {
                return Ok(Vec::new());
            };
            self.orders
                .transition(&repair.next, &order, repair.events.clone())
                .await
                .map_err(Attempt::store)?;
            let kinds: Vec<&str> = repair.kinds.iter().map(|k| k.as_str()).collect();
            tracing::info!(order_id = %order.id, tenant = %order.tenant, state = order.state.as_str(), repairs = ?kinds, "order repaired");
            Ok(repair.kinds)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
