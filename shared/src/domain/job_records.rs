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
    let rest = job_id
        .strip_prefix("job_")?
        .strip_prefix(hex)?
        .strip_prefix('-')?;
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

/// The most job records an order stored before jobs were records of their
/// own moves out in one write: a DynamoDB transaction takes at most 100
/// items, and the order, its production record, the events and a plant's
/// counter take some of them. One with more reported jobs keeps its
/// production in its own document (as it was stored; it passed the item
/// limit then).
pub const MOVE_OUT_MAX_JOBS: usize = 80;

/// What a store writes for an order written whole: the order without its
/// production, and the production's record with the job records that
/// changed, if the production changed.
#[derive(Debug, Clone)]
pub struct SplitOrder {
    pub order: Order,
    pub production: Option<ProductionWrite>,
    /// The order keeps its production in its own document (one stored
    /// before jobs were records of their own, with more than
    /// [`MOVE_OUT_MAX_JOBS`] reported jobs): the store must find no
    /// production record stored apart, or refuse the write as a conflict.
    pub inline: bool,
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
/// (revision 0) writes every job a plant reported on, or, past
/// [`MOVE_OUT_MAX_JOBS`], stays in the order's document.
pub fn split(next: &Order, observed: &Order) -> SplitOrder {
    let mut order = next.clone();
    let Some(p) = order.production.take() else {
        return SplitOrder {
            order,
            production: None,
            inline: false,
        };
    };
    let before = observed.production.as_ref();
    let observed_revision = before.map_or(0, |b| b.revision);
    let reported = || {
        p.jobs
            .iter()
            .chain(&p.superseded)
            .filter(|j| j.status.is_some())
            .count()
    };
    if before.is_some() && observed_revision == 0 && reported() > MOVE_OUT_MAX_JOBS {
        order.production = Some(p);
        return SplitOrder {
            order,
            production: None,
            inline: true,
        };
    }
    // Unchanged and stored apart already: nothing to write. (One read
    // from an order's own document moves out of it now.)
    if before == Some(&p) && observed_revision > 0 {
        return SplitOrder {
            order,
            production: None,
            inline: false,
        };
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
    SplitOrder {
        order,
        production: Some(ProductionWrite {
            record,
            observed_revision,
            jobs,
        }),
        inline: false,
    }
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
                photo: None,
                code: Some("production_failed".into()),
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
                order.add_shipment_facts(&mut data, &plant);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;
    use crate::domain::operator::OperatorId;
    use crate::domain::production::{Dispatch, StatusOutcome};
    use crate::testing::{paid_order, rendered};

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-12-06 10:00:00 UTC)
    }

    fn dispatched(items: &[(&str, u32)]) -> Order {
        let paid = paid_order(items, "DE", at()).order;
        let rendered = rendered(&paid, at()).0;
        match rendered
            .dispatch(Catalog::builtin(), &BTreeMap::new(), at())
            .unwrap()
        {
            Dispatch::ToPlant { next, .. } => next,
            Dispatch::Hold { .. } => panic!("held"),
        }
    }

    fn report(order: &Order, job: &JobRecord, status: JobState) -> JobStatusReport {
        let production = order.production.as_ref().unwrap();
        JobStatusReport {
            job_id: job.job_id.clone(),
            plant: production.plant_of(job).to_string(),
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            status,
            at: at(),
            carrier: (status == JobState::Shipped).then(|| "DHL".to_string()),
            tracking: (status == JobState::Shipped).then(|| format!("JJD{}", job.job_id)),
            reason: (status == JobState::Failed).then(|| "paper jam".to_string()),
        }
    }

    /// What a store holds of `order`: the bare order, the production
    /// record and the job records, as `split` writes them from scratch.
    struct Stored {
        order: Order,
        record: ProductionRecord,
        jobs: BTreeMap<String, JobRecord>,
    }

    impl Stored {
        fn of(order: &Order) -> Stored {
            let mut empty = order.clone();
            empty.production = None;
            let split = split(order, &empty);
            let write = split
                .production
                .expect("a dispatched order has a production");
            assert_eq!(write.observed_revision, 0);
            Stored {
                order: split.order,
                record: write.record,
                jobs: write
                    .jobs
                    .into_iter()
                    .map(|j| (j.job_id.clone(), j))
                    .collect(),
            }
        }

        fn whole(&self) -> Order {
            let mut order = self.order.clone();
            order.production = Some(Production::assemble(
                &order.id,
                &self.record,
                self.jobs.values().cloned(),
            ));
            order
        }

        /// A report the way production-events applies it on a store.
        fn apply(&mut self, report: &JobStatusReport) -> (ReportOutcome, Vec<EventType>) {
            let stored = self.jobs.get(&report.job_id);
            let outcome = apply_report(&self.order, &self.record, stored, report, at());
            let mut kinds = Vec::new();
            if let ReportOutcome::Changed(change) = &outcome {
                assert_eq!(change.record.revision, self.record.revision);
                self.record = change.record.clone();
                self.record.revision += 1;
                self.jobs
                    .insert(change.job.job_id.clone(), change.job.clone());
                if let Some(next) = &change.order {
                    self.order = next.clone();
                }
                kinds = change.events.iter().map(|e| e.event_type).collect();
            }
            (outcome, kinds)
        }
    }

    #[test]
    fn job_ids_parse_back_to_line_copy_and_attempt() {
        let order = dispatched(&[("poster-30x40", 1)]);
        for (line, copy, attempt) in [(0, 1, 1), (3, 100, 1), (49, 7, 2), (1, 1, 12)] {
            let id = job_id_of_attempt(&order.id, line, copy, attempt);
            assert_eq!(parse_job_id(&order.id, &id), Some((line, copy, attempt)));
        }
        let other = dispatched(&[("poster-30x40", 1)]);
        let theirs = job_id_of_attempt(&other.id, 0, 1, 1);
        assert_eq!(parse_job_id(&order.id, &theirs), None);
        let hex = order.id.as_str().trim_start_matches("ord_");
        // Attempt 1 is never written out, so `-1` is not an id we made.
        for forged in [
            format!("job_{hex}-0-1-1"),
            format!("job_{hex}-0"),
            format!("job_{hex}-0-1-2-3"),
            format!("job_{hex}-a-1"),
            format!("job_{hex}-0--1"),
            format!("job_{hex}0-1"),
            "job_".to_string(),
            String::new(),
        ] {
            assert_eq!(parse_job_id(&order.id, &forged), None, "{forged}");
        }
    }

    #[test]
    fn five_thousand_copies_are_fifty_runs_and_assemble_back() {
        let items: Vec<(&str, u32)> = (0..50).map(|_| ("poster-30x40", 100)).collect();
        let order = dispatched(&items);
        let production = order.production.as_ref().unwrap();
        assert_eq!(production.jobs.len(), 5_000);
        let record = production.record();
        assert_eq!(record.jobs.len(), 50);
        assert_eq!(record.job_count(), 5_000);
        assert_eq!(record.tally.unheard, 5_000);
        assert_eq!(record.open_jobs(), 5_000);
        assert_eq!(expand(&order.id, &record.jobs), production.jobs);
        assert_eq!(
            Production::assemble(&order.id, &record, Vec::new()),
            *production
        );
        // A stored job record replaces the fresh one; one the runs do not
        // name is ignored.
        let mut moved = production.jobs[4_321].clone();
        moved.status = Some(JobState::Printed);
        let mut foreign = moved.clone();
        foreign.job_id = job_id_of_attempt(&order.id, 50, 1, 1);
        let assembled = Production::assemble(&order.id, &record, [moved.clone(), foreign]);
        assert_eq!(assembled.jobs.len(), 5_000);
        assert_eq!(assembled.jobs[4_321], moved);
    }

    #[test]
    fn a_report_written_small_matches_the_whole_order_path() {
        let order = dispatched(&[("poster-30x40", 3), ("poster-50x70", 2)]);
        let jobs = order.production.as_ref().unwrap().jobs.clone();
        let mut whole = order.clone();
        let mut stored = Stored::of(&order);
        assert!(
            stored.jobs.is_empty(),
            "nothing reported yet: no job records"
        );
        let mut kinds_whole = Vec::new();
        let mut kinds_small = Vec::new();
        // Every job through every status, each report twice (a duplicate
        // changes nothing on either path).
        for status in [
            JobState::Accepted,
            JobState::Printing,
            JobState::Printed,
            JobState::Packed,
            JobState::Shipped,
        ] {
            for job in &jobs {
                for _ in 0..2 {
                    let r = report(&order, job, status);
                    let (small, kinds) = stored.apply(&r);
                    kinds_small.extend(kinds);
                    match whole.apply_job_status(&r, at()) {
                        StatusOutcome::Changed { next, events, .. } => {
                            assert!(matches!(small, ReportOutcome::Changed(_)));
                            whole = *next;
                            kinds_whole.extend(events.iter().map(|e| e.event_type));
                        }
                        other => {
                            assert_eq!(other, StatusOutcome::NoChange);
                            assert_eq!(small, ReportOutcome::NoChange);
                        }
                    }
                    assert_eq!(stored.whole().state, whole.state);
                    assert_eq!(
                        stored.whole().production.unwrap().jobs,
                        whole.production.as_ref().unwrap().jobs
                    );
                }
            }
        }
        assert_eq!(whole.state, OrderState::Shipped);
        assert_eq!(kinds_small, kinds_whole);
        assert_eq!(
            kinds_small,
            vec![EventType::OrderInProduction, EventType::OrderShipped]
        );
        assert_eq!(stored.record.tally.shipped, 5);
        assert_eq!(stored.record.open_jobs(), 0);
        assert_eq!(stored.record.shipments.len(), 5);
        // 25 changes, each one conditional write of the record.
        assert_eq!(stored.record.revision, 1 + 25);
    }

    #[test]
    fn reports_that_do_not_fit_change_nothing() {
        let order = dispatched(&[("poster-30x40", 2)]);
        let mut stored = Stored::of(&order);
        let job = order.production.as_ref().unwrap().jobs[0].clone();
        let mut other_plant = report(&order, &job, JobState::Accepted);
        other_plant.plant = "nowhere".into();
        assert!(matches!(
            stored.apply(&other_plant).0,
            ReportOutcome::Unknown(_)
        ));
        let mut no_such = report(&order, &job, JobState::Accepted);
        no_such.job_id = job_id_of_attempt(&order.id, 0, 3, 1);
        assert!(matches!(
            stored.apply(&no_such).0,
            ReportOutcome::Unknown(_)
        ));
        let cancelled = report(&order, &job, JobState::Cancelled);
        assert!(matches!(
            stored.apply(&cancelled).0,
            ReportOutcome::Unknown(_)
        ));
        assert_eq!(stored.record.revision, 1);
        assert!(stored.jobs.is_empty());
        // Moves forward only.
        let printed = report(&order, &job, JobState::Printed);
        assert!(matches!(
            stored.apply(&printed).0,
            ReportOutcome::Changed(_)
        ));
        let late = report(&order, &job, JobState::Accepted);
        assert_eq!(stored.apply(&late).0, ReportOutcome::NoChange);
        assert_eq!(stored.jobs[&job.job_id].status, Some(JobState::Printed));
    }

    #[test]
    fn a_failed_job_holds_the_order_from_its_own_record() {
        let order = dispatched(&[("poster-30x40", 2)]);
        let mut stored = Stored::of(&order);
        let job = order.production.as_ref().unwrap().jobs[1].clone();
        let (_, kinds) = stored.apply(&report(&order, &job, JobState::Failed));
        assert_eq!(
            kinds,
            vec![EventType::ProductionFailed, EventType::OrderOnHold]
        );
        assert_eq!(stored.order.state, OrderState::OnHold);
        assert_eq!(stored.record.tally.failed, 1);
        assert_eq!(stored.record.tally.unheard, 1);
    }

    #[test]
    fn a_reprint_supersedes_its_jobs_and_ships_beside_the_first_parcels() {
        let order = dispatched(&[("poster-30x40", 2)]);
        let mut stored = Stored::of(&order);
        let first = order.production.as_ref().unwrap().jobs.clone();
        for job in &first {
            stored.apply(&report(&order, job, JobState::Shipped));
        }
        assert_eq!(stored.order.state, OrderState::Shipped);
        // The operator reprints copy 2 (damaged): whole-order path.
        let shipped = stored.whole();
        let acted = shipped
            .reprint(
                &OperatorId::parse("anna").unwrap(),
                "damaged in transit",
                std::slice::from_ref(&first[1].job_id),
                None,
                Catalog::builtin(),
                at(),
            )
            .unwrap();
        let write = split(&acted.next, &shipped).production.unwrap();
        assert_eq!(write.observed_revision, stored.record.revision);
        assert_eq!(write.record.revision, stored.record.revision + 1);
        // The new job is unheard: no job record; nothing else changed.
        assert!(write.jobs.is_empty(), "{:?}", write.jobs);
        assert_eq!(write.record.superseded.len(), 1);
        assert_eq!(write.record.tally.unheard, 1);
        stored.order = split(&acted.next, &shipped).order;
        stored.record = write.record;
        // The first attempt's copy 2, reported again: superseded.
        let late = report(&shipped, &first[1], JobState::Shipped);
        assert_eq!(stored.apply(&late).0, ReportOutcome::Superseded);
        // The new job ships: the order ships again, with both parcels.
        let whole = stored.whole();
        let new_job = whole
            .production
            .as_ref()
            .unwrap()
            .jobs
            .iter()
            .find(|j| j.attempt > 1)
            .unwrap()
            .clone();
        stored.apply(&report(&whole, &new_job, JobState::Packed));
        let (outcome, kinds) = stored.apply(&report(&whole, &new_job, JobState::Shipped));
        assert_eq!(kinds, vec![EventType::OrderShipped]);
        let ReportOutcome::Changed(change) = outcome else {
            panic!("shipped")
        };
        let data = &change.events[0].data;
        assert_eq!(data["shipments"].as_array().unwrap().len(), 2);
        assert_eq!(data["earlier_shipments"].as_array().unwrap().len(), 1);
        assert_eq!(stored.order.state, OrderState::Shipped);
    }

    #[test]
    fn split_writes_what_changed_and_moves_a_legacy_production_out() {
        let order = dispatched(&[("poster-30x40", 3)]);
        let jobs = order.production.as_ref().unwrap().jobs.clone();
        // An order stored whole before jobs were records of their own:
        // revision 0, two jobs reported on.
        let mut legacy = order.clone();
        for job in &jobs[..2] {
            let StatusOutcome::Changed { next, .. } =
                legacy.apply_job_status(&report(&legacy, job, JobState::Printed), at())
            else {
                panic!("changed")
            };
            legacy = *next;
        }
        assert_eq!(legacy.production.as_ref().unwrap().revision, 0);
        // Any write of it moves its production out, every reported job too.
        let next = legacy.successor(at());
        let write = split(&next, &legacy).production.unwrap();
        assert_eq!(write.observed_revision, 0);
        assert_eq!(write.record.revision, 1);
        assert_eq!(write.jobs.len(), 2);
        // Once stored apart, a write that leaves the production as it was
        // writes none of it.
        let mut stored_apart = legacy.clone();
        stored_apart.production.as_mut().unwrap().revision = 1;
        let next = stored_apart.successor(at());
        assert!(split(&next, &stored_apart).production.is_none());
        assert!(split(&next, &stored_apart).order.production.is_none());
        // A change to one job writes that job only.
        let StatusOutcome::Changed { next, .. } = stored_apart
            .apply_job_status(&report(&stored_apart, &jobs[2], JobState::Accepted), at())
        else {
            panic!("changed")
        };
        let write = split(&next, &stored_apart).production.unwrap();
        assert_eq!(write.observed_revision, 1);
        assert_eq!(write.jobs.len(), 1);
        assert_eq!(write.jobs[0].job_id, jobs[2].job_id);
    }

    #[test]
    fn a_legacy_production_with_more_reported_jobs_than_a_write_takes_stays_inline() {
        let order = dispatched(&[("poster-30x40", 100)]);
        let mut legacy = order.clone();
        for job in &order.production.as_ref().unwrap().jobs[..=MOVE_OUT_MAX_JOBS] {
            let StatusOutcome::Changed { next, .. } =
                legacy.apply_job_status(&report(&legacy, job, JobState::Accepted), at())
            else {
                panic!("changed")
            };
            legacy = *next;
        }
        let next = legacy.successor(at());
        let split = split(&next, &legacy);
        assert!(split.inline);
        assert!(split.production.is_none());
        assert_eq!(split.order.production, legacy.production);
        // One reported job fewer: it moves out, every reported job with it.
        let mut fewer = legacy.clone();
        fewer.production.as_mut().unwrap().jobs[0].status = None;
        let split = super::split(&fewer.successor(at()), &fewer);
        assert!(!split.inline);
        assert!(split.order.production.is_none());
        assert_eq!(split.production.unwrap().jobs.len(), MOVE_OUT_MAX_JOBS);
    }
}
