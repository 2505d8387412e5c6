//! Jobs as records of their own: how an order's production is stored.
//!
//! An order of 50 lines of 100 copies has 5,000 jobs. Kept inside the
//! order, they made one record of half a megabyte once dispatched and over
//! a megabyte once shipped (past DynamoDB's 400 KB item limit), and every
//! plant report rewrote all of it. The stores keep instead:
//!
//! - the order without its production;
//! - a [`ProductionRecord`]: the plant, the packing reference, which jobs
//!   exist as [`JobRun`]s (runs of copies of one line made in one attempt
//!   at one plant: 50 runs for those 5,000 jobs), a [`JobTally`] of the
//!   current jobs per status, the shipments so far, and a `revision` that
//!   every write of the production is conditional on;
//! - one [`JobRecord`] per job a plant has reported on. A job nobody has
//!   reported on has no record: it is what its run says, sent and unheard.
//!
//! A plant's report reads the order, the production record and the one
//! job, and writes the job and the production record (and the order only
//! when its state changes): [`apply_report`]. Every other writer works on
//! the whole order as before ([`super::order::Order`] with all its jobs,
//! assembled by [`Production::assemble`]); the stores split what it
//! writes with [`split`]: the order, the production record if it changed,
//! and the job records that changed.

use super::events::{EventEnvelope, EventType};
use super::order::{Hold, Order, OrderId};
use super::production::{JobRecord, JobState, JobStatusReport, Production, job_id_of_attempt};
use super::state::OrderState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Copies `first..=last` of item `line`, made in `attempt` (at `plant`
/// when not the production's plant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    pub line: u32,
    pub first: u32,
    pub last: u32,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant: Option<String>,
}

impl JobRun {
    fn holds(&self, line: u32, copy: u32, attempt: u32) -> bool {
        self.line == line && self.attempt == attempt && (self.first..=self.last).contains(&copy)
    }
}

/// The runs of `jobs`, in their order: consecutive copies of one line,
/// attempt and plant make one run.
pub fn runs_of(jobs: &[JobRecord]) -> Vec<JobRun> {
    let mut runs: Vec<JobRun> = Vec::new();
    for job in jobs {
        if let Some(last) = runs.last_mut()
            && last.line == job.line
            && last.attempt == job.attempt
            && last.plant == job.plant
            && last.last + 1 == job.copy
        {
            last.last = job.copy;
            continue;
        }
        runs.push(JobRun {
            line: job.line,
            first: job.copy,
            last: job.copy,
            attempt: job.attempt,
            plant: job.plant.clone(),
        });
    }
    runs
}

/// The jobs `runs` stand for, as sent: nothing heard of them yet.
pub fn expand(order: &OrderId, runs: &[JobRun]) -> Vec<JobRecord> {
    runs.iter()
        .flat_map(|run| (run.first..=run.last).map(move |copy| fresh_job(order, run, copy)))
        .collect()
}

fn fresh_job(order: &OrderId, run: &JobRun, copy: u32) -> JobRecord {
    JobRecord {
        job_id: job_id_of_attempt(order, run.line, copy, run.attempt),
        line: run.line,
        copy,
        attempt: run.attempt,
        plant: run.plant.clone(),
        status: None,
        status_at: None,
        carrier: None,
        tracking: None,
        reason: None,
    }
}

/// `(line, copy, attempt)` of a job id of `order` ([`job_id_of_attempt`]).
pub fn parse_job_id(order: &OrderId, job_id: &str) -> Option<(u32, u32, u32)> {
    let hex = order.as_str().trim_start_matches("ord_");
    let rest = job_id.strip_prefix("job_")?.strip_prefix(hex)?.strip_prefix('-')?;
    let parts: Vec<u32> = rest
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [line, copy] => Some((line, copy, 1)),
        [line, copy, attempt] if attempt > 1 => Some((line, copy, attempt)),
        _ => None,
    }
}

/// How many current jobs stand at each status (`unheard`: sent, nothing
/// reported yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobTally {
    pub unheard: u32,
    pub accepted: u32,
    pub printing: u32,
    pub printed: u32,
    pub packed: u32,
    pub shipped: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl JobTally {
    pub fn of(jobs: &[JobRecord]) -> JobTally {
        let mut tally = JobTally::default();
        for job in jobs {
            *tally.slot(job.status) += 1;
        }
        tally
    }

    fn slot(&mut self, status: Option<JobState>) -> &mut u32 {
        match status {
            None => &mut self.unheard,
            Some(JobState::Accepted) => &mut self.accepted,
            Some(JobState::Printing) => &mut self.printing,
            Some(JobState::Printed) => &mut self.printed,
            Some(JobState::Packed) => &mut self.packed,
            Some(JobState::Shipped) => &mut self.shipped,
            Some(JobState::Failed) => &mut self.failed,
            Some(JobState::Cancelled) => &mut self.cancelled,
        }
    }

    /// One job moved from `from` to `to`.
    fn moved(&mut self, from: Option<JobState>, to: JobState) {
        let old = self.slot(from);
        *old = old.saturating_sub(1);
        *self.slot(Some(to)) += 1;
    }

    /// The state the order follows: that of its slowest job, a failed one
    /// counting as not heard of (`InProduction` while any is).
    pub fn order_target(&self) -> OrderState {
        if self.unheard > 0 || self.failed > 0 || self.accepted > 0 || self.printing > 0 {
            OrderState::InProduction
        } else if self.printed > 0 {
            OrderState::Printed
        } else if self.packed > 0 {
            OrderState::Packed
        } else if self.shipped > 0 && self.cancelled == 0 {
            OrderState::Shipped
        } else {
            // Only a cancelled order has cancelled jobs: it moves no more.
            OrderState::InProduction
        }
    }
}

/// A parcel that left a plant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shipment {
    pub carrier: String,
    pub tracking: String,
}

fn shipments_of<'a>(jobs: impl Iterator<Item = &'a JobRecord>) -> Vec<Shipment> {
    let mut out: Vec<Shipment> = jobs
        .filter_map(|j| {
            Some(Shipment {
                carrier: j.carrier.clone()?,
                tracking: j.tracking.clone()?,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the stores keep of an order's production beside its job records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductionRecord {
    pub plant: String,
    pub packing_ref: String,
    #[serde(with = "time::serde::rfc3339")]
    pub dispatched_at: OffsetDateTime,
    /// The current jobs.
    pub jobs: Vec<JobRun>,
    /// Jobs a later attempt made anew.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<JobRun>,
    pub tally: JobTally,
    /// The current jobs' parcels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipments: Vec<Shipment>,
    /// The superseded jobs' parcels (a reprint ships beside them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_shipments: Vec<Shipment>,
    /// Writes of this record so far; each is conditional on it.
    pub revision: u64,
}

impl ProductionRecord {
    fn find(&self, line: u32, copy: u32, attempt: u32) -> Option<(&JobRun, bool)> {
        if let Some(run) = self.jobs.iter().find(|r| r.holds(line, copy, attempt)) {
            return Some((run, true));
        }
        self.superseded
            .iter()
            .find(|r| r.holds(line, copy, attempt))
            .map(|run| (run, false))
    }

    fn plant_of<'a>(&'a self, run: &'a JobRun) -> &'a str {
        run.plant.as_deref().unwrap_or(&self.plant)
    }

    /// Jobs not yet shipped, failed or cancelled.
    pub fn open_jobs(&self) -> i64 {
        let t = &self.tally;
        i64::from(t.unheard + t.accepted + t.printing + t.printed + t.packed)
    }

    pub fn job_count(&self) -> usize {
        self.jobs
            .iter()
            .map(|r| (r.last + 1 - r.first) as usize)
            .sum()
    }
}

impl Production {
    /// What the stores keep of this production beside its job records.
    pub fn record(&self) -> ProductionRecord {
        ProductionRecord {
            plant: self.plant.clone(),
            packing_ref: self.packing_ref.clone(),
            dispatched_at: self.dispatched_at,
            jobs: runs_of(&self.jobs),
            superseded: runs_of(&self.superseded),
            tally: JobTally::of(&self.jobs),
            shipments: shipments_of(self.jobs.iter()),
            earlier_shipments: shipments_of(self.superseded.iter()),
            revision: self.revision,
        }
    }

    /// The whole production from its record and the job records stored
    /// beside it (records of jobs the runs do not name are ignored).
    pub fn assemble(
        order: &OrderId,
        record: &ProductionRecord,
        stored: impl IntoIterator<Item = JobRecord>,
    ) -> Production {
        let mut jobs = expand(order, &record.jobs);
        let mut superseded = expand(order, &record.superseded);
        let mut stored: BTreeMap<String, JobRecord> =
            stored.into_iter().map(|j| (j.job_id.clone(), j)).collect();
        for job in jobs.iter_mut().chain(superseded.iter_mut()) {
            if let Some(found) = stored.remove(&job.job_id) {
                *job = found;
            }
        }
        Production {
            plant: record.plant.clone(),
            packing_ref: record.packing_ref.clone(),
            dispatched_at: record.dispatched_at,
            jobs,
            superseded,
            revision: record.revision,
        }
    }
}

/// What a store writes for an order written whole: the order without its
/// production, and the production's record with the job records that
/// changed, if the production changed.
#[derive(Debug, Clone)]
pub struct SplitOrder {
    pub order: Order,
    pub production: Option<ProductionWrite>,
}

/// A production record to write, conditional on the stored revision being
/// `observed_revision` (0: none stored apart yet), and job records.
#[derive(Debug, Clone)]
pub struct ProductionWrite {
    /// Its `revision` is `observed_revision + 1`.
    pub record: ProductionRecord,
    pub observed_revision: u64,
    pub jobs: Vec<JobRecord>,
}

/// Splits `next` (the successor of `observed`) for storing. A production
/// read from an order stored before jobs were records of their own
/// (revision 0) writes every job a plant reported on.
pub fn split(next: &Order, observed: &Order) -> SplitOrder {
    let mut order = next.clone();
    let production = order.production.take();
    let production = production.and_then(|p| {
        let before = observed.production.as_ref();
        let observed_revision = before.map_or(0, |b| b.revision);
        // Unchanged and stored apart already: nothing to write. (One read
        // from an order's own document moves out of it now.)
        if before == Some(&p) && observed_revision > 0 {
            return None;
        }
        let old: BTreeMap<&str, &JobRecord> = before
            .filter(|_| observed_revision > 0)
            .map(|b| {
                b.jobs
                    .iter()
                    .chain(&b.superseded)
                    .map(|j| (j.job_id.as_str(), j))
                    .collect()
            })
            .unwrap_or_default();
        let jobs = p
            .jobs
            .iter()
            .chain(&p.superseded)
            .filter(|j| j.status.is_some() && old.get(j.job_id.as_str()) != Some(j))
            .cloned()
            .collect();
        let mut record = p.record();
        record.revision = observed_revision + 1;
        Some(ProductionWrite {
            record,
            observed_revision,
            jobs,
        })
    });
    SplitOrder { order, production }
}

/// What a report does, decided on the order (without its production), its
/// production record and the one job.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    Changed(Box<JobChange>),
    /// Stale or duplicate.
    NoChange,
    /// A job a later attempt made anew.
    Superseded,
    /// Not a job of this order at this plant.
    Unknown(String),
}

/// A report that moved its job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChange {
    pub job: JobRecord,
    /// The production record after the report (revision as read).
    pub record: ProductionRecord,
    /// The order's successor, when the report changes it.
    pub order: Option<Order>,
    pub events: Vec<EventEnvelope>,
    /// 1 when the job reached a final state (the plant's open-job count
    /// drops by it).
    pub closed: i64,
}

/// Applies a plant's report. `order` is the order (its production, if
/// any, is not looked at), `stored` the job's record if one is stored.
///
/// The job moves forward only, and the order follows its slowest job
/// (`InProduction` once any job is accepted, `Printed`/`Packed`/`Shipped`
/// once all are). `OrderInProduction` when production starts,
/// `OrderShipped` when the last job ships, `ProductionFailed` (and a
/// hold) when a job fails.
pub fn apply_report(
    order: &Order,
    record: &ProductionRecord,
    stored: Option<&JobRecord>,
    report: &JobStatusReport,
    now: OffsetDateTime,
) -> ReportOutcome {
    let Some((line, copy, attempt)) = parse_job_id(&order.id, &report.job_id) else {
        return ReportOutcome::Unknown(format!("no job {} in the order", report.job_id));
    };
    let Some((run, current)) = record.find(line, copy, attempt) else {
        return ReportOutcome::Unknown(format!("no job {} in the order", report.job_id));
    };
    let job_plant = record.plant_of(run).to_string();
    if !current {
        if job_plant == report.plant {
            return ReportOutcome::Superseded;
        }
        return ReportOutcome::Unknown(format!("no job {} in the order", report.job_id));
    }
    if job_plant != report.plant {
        return ReportOutcome::Unknown(format!(
            "job {} is made at {job_plant}, not {}",
            report.job_id, report.plant
        ));
    }
    if report.status == JobState::Cancelled && order.state != OrderState::Cancelled {
        return ReportOutcome::Unknown(format!(
            "job {} reported cancelled, but the order is {}",
            report.job_id,
            order.state.as_str()
        ));
    }
    let before = stored
        .filter(|j| j.job_id == report.job_id)
        .cloned()
        .unwrap_or_else(|| fresh_job(&order.id, run, copy));
    if !JobState::advances(before.status, report.status) {
        return ReportOutcome::NoChange;
    }
    let mut job = before.clone();
    job.status = Some(report.status);
    job.status_at = Some(report.at);
    if report.status == JobState::Shipped {
        job.carrier = report.carrier.clone();
        job.tracking = report.tracking.clone();
    }
    if matches!(report.status, JobState::Failed | JobState::Cancelled) {
        job.reason = report.reason.clone();
    }
    let mut next_record = record.clone();
    next_record.tally.moved(before.status, report.status);
    if let Some(shipment) = shipments_of(std::iter::once(&job)).pop()
        && let Err(at) = next_record.shipments.binary_search(&shipment)
    {
        next_record.shipments.insert(at, shipment);
    }
    let closed = i64::from(report.status.is_final());
    let plant = job_plant;
    let mut events = Vec::new();
    let event = |kind, data| EventEnvelope::new(kind, &order.id, &order.tenant, now, data);
    let mut next_order = None;

    if report.status == JobState::Failed {
        let reason = report.reason.clone().unwrap_or_default();
        events.push(event(
            EventType::ProductionFailed,
            serde_json::json!({
                "plant": plant, "job_id": report.job_id, "line": line, "copy": copy, "reason": reason,
            }),
        ));
        if order.state.can_move_to(OrderState::OnHold) {
            let why =
                format!("Production failed at plant {plant} (item {line}, copy {copy}): {reason}");
            let mut next = order.successor(now);
            next.hold = Some(Hold {
                reason: why.clone(),
                from: order.state,
            });
            next.state = OrderState::OnHold;
            events.push(event(
                EventType::OrderOnHold,
                serde_json::json!({
                    "reason": why, "from": order.state,
                    "details": { "code": "production_failed", "job_id": report.job_id, "line": line },
                }),
            ));
            next_order = Some(next);
        }
    } else {
        let target = next_record.tally.order_target();
        if order.state.can_move_to(target) {
            let mut next = order.successor(now);
            next.state = target;
            if order.state == OrderState::Dispatched {
                events.push(event(
                    EventType::OrderInProduction,
                    serde_json::json!({ "plant": plant, "packing_ref": record.packing_ref }),
                ));
            }
            if target == OrderState::Shipped {
                let mut data = serde_json::json!({
                    "plant": plant, "packing_ref": record.packing_ref,
                    "shipments": next_record.shipments, "attempt": order.attempt,
                });
                // A reprint ships again: its shipments, and beside them
                // those of the jobs it replaced.
                if !next_record.earlier_shipments.is_empty() {
                    data["earlier_shipments"] = serde_json::json!(next_record.earlier_shipments);
                }
                events.push(event(EventType::OrderShipped, data));
            }
            next_order = Some(next);
        }
    }
    ReportOutcome::Changed(Box::new(JobChange {
        job,
        record: next_record,
        order: next_order,
        events,
        closed,
    }))
}
