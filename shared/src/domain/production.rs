//! Production: which plant makes an order, the print jobs it is sent, and
//! what the plants report back about each job.
//!
//! - [`choose_plant`]: a plant that can make every item; among those, one
//!   that serves the ship-to country; among those, the one with the fewest
//!   open jobs (then by name, so the choice is deterministic).
//! - [`Order::dispatch`]: `Rendered -> Dispatched` with one [`JobRecord`] per
//!   item copy, or `OnHold` when no plant can make the order.
//! - [`Job`]: the message a plant's edge agent receives.
//! - [`JobStatusReport`]: the message it sends back; [`Order::apply_job_status`]
//!   moves the order forward only (stale and duplicate statuses change
//!   nothing) and says which events announce the change.
//!
//! Job ids are a function of the order, the line and the copy, so a
//! redelivered `OrderRendered` or a retried dispatch never makes new ones.

use super::catalog::{Catalog, ShippingMethod};
use super::events::{EventEnvelope, EventType};
use super::order::{Address, Order, OrderId, TransitionError};
use super::state::OrderState;
use super::tenant::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// What a plant reports about one job. Ranked: a status only replaces a
/// lower one. `Shipped` and `Failed` end a job; neither replaces the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// The agent holds the job durably (files verified, journaled).
    Accepted,
    /// Handed to the machine.
    Printing,
    Printed,
    Packed,
    /// Left the plant with a carrier and a tracking number.
    Shipped,
    /// Could not be made (bad file, machine error); a person must look.
    Failed,
    /// Taken off the plant's floor because the order was cancelled: never
    /// handed to the machine, taken back from its hot folder before the
    /// machine took it, or printed and not shipped (the reason says).
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Accepted,
        JobState::Printing,
        JobState::Printed,
        JobState::Packed,
        JobState::Shipped,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn rank(self) -> u32 {
        match self {
            JobState::Accepted => 1,
            JobState::Printing => 2,
            JobState::Printed => 3,
            JobState::Packed => 4,
            JobState::Shipped | JobState::Failed | JobState::Cancelled => 5,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Shipped | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Accepted => "accepted",
            JobState::Printing => "printing",
            JobState::Printed => "printed",
            JobState::Packed => "packed",
            JobState::Shipped => "shipped",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether a job now in `self` (None: sent, nothing heard) takes `to`.
    pub fn advances(from: Option<JobState>, to: JobState) -> bool {
        match from {
            None => true,
            Some(from) => !from.is_final() && to.rank() > from.rank(),
        }
    }

    /// The order state that a job in this state allows at most.
    pub(crate) fn order_state(self) -> OrderState {
        match self {
            JobState::Accepted | JobState::Printing => OrderState::InProduction,
            JobState::Printed => OrderState::Printed,
            JobState::Packed => OrderState::Packed,
            JobState::Shipped => OrderState::Shipped,
            // Never reached: a failed job holds the order instead, and a
            // cancelled job belongs to a cancelled order.
            JobState::Failed | JobState::Cancelled => OrderState::InProduction,
        }
    }
}

/// The stable id of one copy of one item in the first production attempt:
/// `job_<order hex>-<line>-<copy>`.
pub fn job_id(order: &OrderId, line: u32, copy: u32) -> String {
    job_id_of_attempt(order, line, copy, 1)
}

/// The id of one copy of one item made in production attempt `attempt`:
/// the first attempt's as [`job_id`], a later one's with `-<attempt>`
/// appended. An agent never takes a journaled id again, so a copy made
/// again (a reprint, a failed job made anew) needs an id of its own.
pub fn job_id_of_attempt(order: &OrderId, line: u32, copy: u32, attempt: u32) -> String {
    let hex = order.as_str().trim_start_matches("ord_");
    if attempt <= 1 {
        format!("job_{hex}-{line}-{copy}")
    } else {
        format!("job_{hex}-{line}-{copy}-{attempt}")
    }
}

/// Whether `raw` has the shape of a job id (it becomes a file name at the
/// plant, so nothing else is accepted).
pub fn job_id_valid(raw: &str) -> bool {
    raw.len() <= 64
        && raw.starts_with("job_")
        && raw[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_digit() || b == b'-')
        && matches!(raw[4..].split('-').count(), 3 | 4)
        && raw[4..].split('-').all(|part| !part.is_empty())
}

/// Whether `raw` is a plant id as the catalog and the queues spell it.
pub fn plant_id_valid(raw: &str) -> bool {
    (2..=16).contains(&raw.len())
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// What the packing station of the plant puts together: every job of the
/// order carries it. `<PLANT>-<last 10 hex of the order id>`.
pub fn packing_reference(plant: &str, order: &OrderId) -> String {
    let hex = order.as_str().trim_start_matches("ord_");
    let tail = &hex[hex.len().saturating_sub(10)..];
    format!(
        "{}-{}",
        plant.to_ascii_uppercase(),
        tail.to_ascii_uppercase()
    )
}

/// Why no plant can make an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NoPlant {
    /// For the customer and the operator.
    pub reason: String,
}

/// Chooses the plant for `order`: it must make every item; then a plant
/// that serves the ship-to country is preferred; then the one with fewer
/// open jobs (`open_jobs`, missing = 0); then the first by id.
pub fn choose_plant(
    catalog: &Catalog,
    order: &Order,
    open_jobs: &BTreeMap<String, i64>,
) -> Result<String, NoPlant> {
    let able = able_plants(catalog, order.items.iter().map(|i| i.sku.as_str()))?;
    let country = order.shipping.address.country;
    let local: Vec<&String> = able
        .iter()
        .copied()
        .filter(|p| catalog.plants[p.as_str()].countries.contains(&country))
        .collect();
    let pool = if local.is_empty() { able } else { local };
    let chosen = pool
        .into_iter()
        .min_by_key(|p| (open_jobs.get(p.as_str()).copied().unwrap_or(0), p.as_str()))
        .cloned();
    // `pool` is never empty here.
    chosen.ok_or_else(|| NoPlant {
        reason: "no plant available".into(),
    })
}

/// The plants that make every one of `skus` (by id), or why there is none.
pub fn able_plants<'a, 'c>(
    catalog: &'c Catalog,
    skus: impl Iterator<Item = &'a str> + Clone,
) -> Result<Vec<&'c String>, NoPlant> {
    let mut able: Vec<&String> = catalog.plants.keys().collect();
    for sku in skus.clone() {
        let Some(product) = catalog.product(sku) else {
            return Err(NoPlant {
                reason: format!("the product {sku} is no longer made"),
            });
        };
        able.retain(|p| product.plants.contains(p));
    }
    if able.is_empty() {
        let mut skus: Vec<&str> = skus.collect();
        skus.dedup();
        return Err(NoPlant {
            reason: format!(
                "no plant makes all of {} together; the order must be split",
                skus.join(", ")
            ),
        });
    }
    Ok(able)
}

/// `plant` if it makes every one of `skus`; else why not, naming the
/// plants that do.
pub fn plant_makes<'a>(
    catalog: &Catalog,
    plant: &str,
    skus: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), NoPlant> {
    let able = able_plants(catalog, skus)?;
    if able.iter().any(|p| p.as_str() == plant) {
        return Ok(());
    }
    let names: Vec<&str> = able.iter().map(|p| p.as_str()).collect();
    Err(NoPlant {
        reason: format!(
            "plant {plant} does not make all of it; plants that do: {}",
            names.join(", ")
        ),
    })
}

/// One job as the order keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub line: u32,
    /// 1..=the item's quantity.
    pub copy: u32,
    /// The production attempt that made this job (1 at the first dispatch).
    #[serde(default = "super::order::first_attempt")]
    pub attempt: u32,
    /// Where it is made, when not at the order's plant (a reprint sent
    /// elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plant: Option<String>,
    /// None until the plant reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobState>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub status_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The order's assignment to a plant and its jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Production {
    pub plant: String,
    pub packing_ref: String,
    #[serde(with = "time::serde::rfc3339")]
    pub dispatched_at: OffsetDateTime,
    /// The current jobs, one per item copy: what the order follows.
    pub jobs: Vec<JobRecord>,
    /// Jobs made anew by a later attempt (a reprint, a failed job made
    /// again), as they last stood: their reports change nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<JobRecord>,
    /// Writes of the stored production record so far (0: none yet); the
    /// stores' writes are conditional on it
    /// ([`super::job_records::ProductionRecord`]).
    #[serde(default)]
    pub revision: u64,
}

impl Production {
    /// Jobs not yet shipped or failed: what the plant still has to do.
    pub fn open_jobs(&self) -> i64 {
        self.jobs
            .iter()
            .filter(|j| !j.status.is_some_and(JobState::is_final))
            .count() as i64
    }

    /// Where `job` is made.
    pub fn plant_of<'a>(&'a self, job: &'a JobRecord) -> &'a str {
        job.plant.as_deref().unwrap_or(&self.plant)
    }

    /// The package `job` is packed in and how many jobs it holds: the
    /// current jobs of its attempt at its plant. A later attempt's
    /// package has a reference of its own (`<ref>-A<attempt>`): the first
    /// package may have left the plant long ago.
    pub fn package_of(&self, job: &JobRecord) -> (String, u32) {
        let reference = if job.attempt <= 1 {
            self.packing_ref.clone()
        } else {
            format!("{}-A{}", self.packing_ref, job.attempt)
        };
        let plant = self.plant_of(job);
        let count = self
            .jobs
            .iter()
            .filter(|j| j.attempt == job.attempt && self.plant_of(j) == plant)
            .count() as u32;
        (reference, count)
    }
}

/// What dispatching an order decided.
#[derive(Debug, Clone)]
pub enum Dispatch {
    /// Send the jobs of `next.production` to the plant.
    ToPlant { next: Order, event: EventEnvelope },
    /// No plant can make it.
    Hold { next: Order, event: EventEnvelope },
}

impl Order {
    /// `Rendered -> Dispatched`: assigns a plant and one job per item copy,
    /// announced by `OrderDispatched`; or `OnHold` when no plant can make
    /// the order.
    pub fn dispatch(
        &self,
        catalog: &Catalog,
        open_jobs: &BTreeMap<String, i64>,
        now: OffsetDateTime,
    ) -> Result<Dispatch, TransitionError> {
        if self.state != OrderState::Rendered {
            return Err(TransitionError::NotAllowed(
                self.state,
                OrderState::Dispatched,
            ));
        }
        // An operator's choice (a release at a chosen plant) comes first.
        let chosen = match &self.plant_choice {
            Some(plant) => plant_makes(catalog, plant, self.items.iter().map(|i| i.sku.as_str()))
                .map(|()| plant.clone()),
            None => choose_plant(catalog, self, open_jobs),
        };
        let plant = match chosen {
            Ok(plant) => plant,
            Err(no) => {
                let reason = format!("We cannot produce this order: {}.", no.reason);
                let (next, event) =
                    self.hold(&reason, serde_json::json!({ "code": "no_plant" }), now)?;
                return Ok(Dispatch::Hold { next, event });
            }
        };
        let mut next = self.successor(now);
        let jobs: Vec<JobRecord> = self
            .items
            .iter()
            .flat_map(|item| {
                (1..=item.quantity).map(move |copy| JobRecord {
                    job_id: job_id_of_attempt(&self.id, item.line, copy, self.attempt),
                    line: item.line,
                    copy,
                    attempt: self.attempt,
                    plant: None,
                    status: None,
                    status_at: None,
                    carrier: None,
                    tracking: None,
                    reason: None,
                })
            })
            .collect();
        let production = Production {
            packing_ref: packing_reference(&plant, &self.id),
            plant,
            dispatched_at: now,
            jobs,
            superseded: Vec::new(),
            revision: self.production.as_ref().map_or(0, |p| p.revision),
        };
        next.state = OrderState::Dispatched;
        next.plant_choice = None;
        let event = EventEnvelope::new(
            EventType::OrderDispatched,
            &self.id,
            &self.tenant,
            now,
            serde_json::json!({
                "plant": production.plant,
                "packing_ref": production.packing_ref,
                // A count, not the ids: 5,000 ids would make an event of
                // 200 KB (SNS takes 256 KB).
                "job_count": production.jobs.len(),
                "attempt": self.attempt,
            }),
        );
        next.production = Some(production);
        Ok(Dispatch::ToPlant { next, event })
    }
}

/// A print file of a job: fetched by the agent, checked against `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    /// The file's name at the plant, e.g. `1.jpg` (unique within the job).
    pub name: String,
    /// A presigned GET URL; it expires at `Job::files_expire_at`.
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
}

/// What the machine makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProduct {
    pub sku: String,
    pub name: String,
    pub width_mm: u32,
    pub height_mm: u32,
    pub options: BTreeMap<String, String>,
}

/// The message on a plant's job queue: one copy of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub plant: String,
    pub tenant: TenantId,
    pub order_id: OrderId,
    pub line: u32,
    /// This copy, 1..=`copies`.
    pub copy: u32,
    /// The item's quantity.
    pub copies: u32,
    pub product: JobProduct,
    pub files: Vec<JobFile>,
    #[serde(with = "time::serde::rfc3339")]
    pub files_expire_at: OffsetDateTime,
    pub shipping_method: ShippingMethod,
    pub ship_to: Address,
    /// Gathers the order's jobs at the packing station.
    pub packing_ref: String,
    /// How many jobs share the packing reference.
    pub jobs_in_package: u32,
    /// What the job's label encodes (Code 128).
    pub barcode: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("not a job message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid job: {0}")]
    Invalid(String),
}

impl Job {
    /// Parses a job message and checks what becomes a file name or a path
    /// at the plant.
    pub fn parse(raw: &str) -> Result<Job, JobError> {
        let job: Job = serde_json::from_str(raw)?;
        let bad = |m: String| Err(JobError::Invalid(m));
        if !job_id_valid(&job.job_id) {
            return bad(format!("job id {:?}", job.job_id));
        }
        if !plant_id_valid(&job.plant) {
            return bad(format!("plant {:?}", job.plant));
        }
        if job.files.is_empty() {
            return bad("no files".into());
        }
        for f in &job.files {
            let name_ok = !f.name.is_empty()
                && f.name.len() <= 32
                && !f.name.starts_with('.')
                && f.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !name_ok {
                return bad(format!("file name {:?}", f.name));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("sha256 of {}", f.name));
            }
            if !(f.url.starts_with("https://") || f.url.starts_with("http://")) {
                return bad(format!("url of {}", f.name));
            }
        }
        Ok(job)
    }
}

/// The message on a plant's job queue that takes jobs of a cancelled
/// order off the floor: the agent withdraws each from its machine if the
/// machine has not taken it, and reports `cancelled`; one it has not
/// received yet is refused when it comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobCancel {
    pub cancel_jobs: Vec<String>,
    pub plant: String,
    pub tenant: TenantId,
    pub order_id: OrderId,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What a plant's job queue carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlantMessage {
    Job(Box<Job>),
    Cancel(JobCancel),
}

impl PlantMessage {
    /// A cancellation (it names `cancel_jobs`) or a job, checked as
    /// [`Job::parse`] checks a job.
    pub fn parse(raw: &str) -> Result<PlantMessage, JobError> {
        let value: serde_json::Value = serde_json::from_str(raw)?;
        if value.get("cancel_jobs").is_none() {
            return Ok(PlantMessage::Job(Box::new(Job::parse(raw)?)));
        }
        let cancel: JobCancel = serde_json::from_value(value)?;
        if !plant_id_valid(&cancel.plant) {
            return Err(JobError::Invalid(format!("plant {:?}", cancel.plant)));
        }
        if cancel.cancel_jobs.is_empty() || cancel.cancel_jobs.len() > 10_000 {
            return Err(JobError::Invalid("cancel_jobs: 1 to 10000 job ids".into()));
        }
        if let Some(bad) = cancel.cancel_jobs.iter().find(|j| !job_id_valid(j)) {
            return Err(JobError::Invalid(format!("job id {bad:?}")));
        }
        Ok(PlantMessage::Cancel(cancel))
    }
}

/// A status an edge agent reports for one job (the `plant-events` queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatusReport {
    pub job_id: String,
    pub plant: String,
    pub tenant: TenantId,
    pub order_id: OrderId,
    pub status: JobState,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl JobStatusReport {
    /// Parses a report: `shipped` needs a carrier and a tracking number,
    /// `failed` a reason.
    pub fn parse(raw: &str) -> Result<JobStatusReport, JobError> {
        let r: JobStatusReport = serde_json::from_str(raw)?;
        let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !job_id_valid(&r.job_id) || !plant_id_valid(&r.plant) {
            return Err(JobError::Invalid(format!(
                "job {:?} of plant {:?}",
                r.job_id, r.plant
            )));
        }
        if r.status == JobState::Shipped && !(present(&r.carrier) && present(&r.tracking)) {
            return Err(JobError::Invalid(
                "shipped without carrier and tracking number".into(),
            ));
        }
        if r.status == JobState::Failed && !present(&r.reason) {
            return Err(JobError::Invalid("failed without a reason".into()));
        }
        Ok(r)
    }
}

/// What a status report did to its order.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusOutcome {
    /// The job moved forward: write `next` with `events`; `closed` jobs
    /// reached a final state (the plant's open-job count drops by it).
    Changed {
        next: Box<Order>,
        events: Vec<EventEnvelope>,
        closed: i64,
    },
    /// Stale or duplicate: the job already has this status or a later one.
    NoChange,
    /// A job an operator's later attempt made anew (a reprint, a failed job
    /// made again): its reports change nothing.
    Superseded,
    /// Not a job of this order at this plant (misrouted or forged).
    Unknown(String),
}

impl Order {
    /// Applies a plant's report: the job moves forward only, and the order
    /// follows its slowest job (`InProduction` once any job is accepted,
    /// `Printed`/`Packed`/`Shipped` once all are). `OrderInProduction` when
    /// production starts, `OrderShipped` when the last job ships,
    /// `ProductionFailed` (and a hold) when a job fails.
    pub fn apply_job_status(&self, report: &JobStatusReport, now: OffsetDateTime) -> StatusOutcome {
        use super::job_records::{ReportOutcome, apply_report};
        let Some(production) = &self.production else {
            return StatusOutcome::Unknown("the order was never dispatched".into());
        };
        let stored = production.jobs.iter().find(|j| j.job_id == report.job_id);
        let mut bare = self.clone();
        bare.production = None;
        match apply_report(&bare, &production.record(), stored, report, now) {
            ReportOutcome::NoChange => StatusOutcome::NoChange,
            ReportOutcome::Superseded => StatusOutcome::Superseded,
            ReportOutcome::Unknown(why) => StatusOutcome::Unknown(why),
            ReportOutcome::Changed(change) => {
                let mut next = change.order.unwrap_or_else(|| bare.successor(now));
                let mut production = production.clone();
                if let Some(job) = production
                    .jobs
                    .iter_mut()
                    .find(|j| j.job_id == change.job.job_id)
                {
                    *job = change.job;
                }
                next.production = Some(production);
                StatusOutcome::Changed {
                    next: Box::new(next),
                    events: change.events,
                    closed: change.closed,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{paid_order, rendered};

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-11-22 10:00:00 UTC)
    }

    fn rendered_order(items: &[(&str, u32)], country: &str) -> Order {
        rendered(&paid_order(items, country, at()).order, at()).0
    }

    fn load(muc: i64, btf: i64) -> BTreeMap<String, i64> {
        BTreeMap::from([("muc".to_string(), muc), ("btf".to_string(), btf)])
    }

    fn dispatched(items: &[(&str, u32)], country: &str) -> Order {
        match rendered_order(items, country)
            .dispatch(Catalog::builtin(), &load(0, 0), at())
            .unwrap()
        {
            Dispatch::ToPlant { next, .. } => next,
            Dispatch::Hold { .. } => panic!("held"),
        }
    }

    fn report(order: &Order, job: usize, status: JobState) -> JobStatusReport {
        let production = order.production.as_ref().unwrap();
        JobStatusReport {
            job_id: production.jobs[job].job_id.clone(),
            plant: production.plant.clone(),
            tenant: order.tenant.clone(),
            order_id: order.id.clone(),
            status,
            at: at(),
            carrier: (status == JobState::Shipped).then(|| "DHL".to_string()),
            tracking: (status == JobState::Shipped).then(|| format!("JJD{job}")),
            reason: (status == JobState::Failed).then(|| "paper jam".to_string()),
        }
    }

    fn apply(order: &Order, r: &JobStatusReport) -> (Order, Vec<&'static str>) {
        match order.apply_job_status(r, at()) {
            StatusOutcome::Changed { next, events, .. } => (
                *next,
                events.iter().map(|e| e.event_type.as_str()).collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_plant_must_make_everything_then_serve_the_country_then_have_less_work() {
        let catalog = Catalog::builtin();
        let choose = |items: &[(&str, u32)], country, l| {
            choose_plant(catalog, &rendered_order(items, country), &l)
        };
        // Canvas is made only in btf, even for a Swiss customer (muc serves CH).
        assert_eq!(
            choose(&[("canvas-30x40", 1)], "CH", load(0, 99)).unwrap(),
            "btf"
        );
        // A poster to CH: muc serves CH, even with more open jobs.
        assert_eq!(
            choose(&[("poster-30x40", 1)], "CH", load(50, 0)).unwrap(),
            "muc"
        );
        // To NL only btf.
        assert_eq!(
            choose(&[("poster-30x40", 1)], "NL", load(50, 0)).unwrap(),
            "btf"
        );
        // Both serve DE: fewer open jobs wins; a tie goes to the first by id.
        assert_eq!(
            choose(&[("poster-30x40", 1)], "DE", load(3, 1)).unwrap(),
            "btf"
        );
        assert_eq!(
            choose(&[("poster-30x40", 1)], "DE", load(1, 3)).unwrap(),
            "muc"
        );
        assert_eq!(
            choose(&[("poster-30x40", 1)], "DE", load(2, 2)).unwrap(),
            "btf"
        );
        // Cards only in muc, canvas only in btf: nobody makes both.
        let no = choose(
            &[("canvas-30x40", 1), ("card-a6-folded", 1)],
            "DE",
            load(0, 0),
        )
        .unwrap_err();
        assert!(
            no.reason.contains("canvas-30x40") && no.reason.contains("card-a6-folded"),
            "{}",
            no.reason
        );
    }

    #[test]
    fn dispatch_makes_one_stable_job_per_copy_or_holds() {
        let order = rendered_order(&[("poster-30x40", 3), ("photobox-10x15", 1)], "AT");
        let Dispatch::ToPlant { next, event } = order
            .dispatch(Catalog::builtin(), &load(0, 0), at())
            .unwrap()
        else {
            panic!("held");
        };
        let production = next.production.as_ref().unwrap();
        assert_eq!(next.state, OrderState::Dispatched);
        assert_eq!(production.plant, "muc");
        let ids: Vec<&str> = production.jobs.iter().map(|j| j.job_id.as_str()).collect();
        let hex = order.id.as_str().trim_start_matches("ord_");
        assert_eq!(
            ids,
            [
                format!("job_{hex}-1-1"),
                format!("job_{hex}-1-2"),
                format!("job_{hex}-1-3"),
                format!("job_{hex}-2-1")
            ]
        );
        assert!(ids.iter().all(|id| job_id_valid(id)));
        assert_eq!(production.open_jobs(), 4);
        assert_eq!(event.event_type, EventType::OrderDispatched);
        assert_eq!(event.data["plant"], "muc");
        assert!(production.packing_ref.starts_with("MUC-"));
        // Dispatching again (another delivery) gives the same ids.
        let Dispatch::ToPlant { next: again, .. } = order
            .dispatch(Catalog::builtin(), &load(0, 0), at())
            .unwrap()
        else {
            panic!("held");
        };
        assert_eq!(again.production.unwrap().jobs, production.jobs);
        assert!(
            next.dispatch(Catalog::builtin(), &load(0, 0), at())
                .is_err(),
            "only a rendered order"
        );

        let mixed = rendered_order(&[("canvas-30x40", 1), ("card-a6-folded", 1)], "DE");
        let Dispatch::Hold { next, event } = mixed
            .dispatch(Catalog::builtin(), &load(0, 0), at())
            .unwrap()
        else {
            panic!("dispatched");
        };
        assert_eq!(next.state, OrderState::OnHold);
        assert!(next.hold.unwrap().reason.contains("no plant"));
        assert_eq!(event.data["details"]["code"], "no_plant");
    }

    #[test]
    fn statuses_move_forward_only_and_the_order_follows_its_slowest_job() {
        let order = dispatched(&[("poster-30x40", 2)], "DE");
        let (order, events) = apply(&order, &report(&order, 0, JobState::Accepted));
        assert_eq!(
            (order.state, events),
            (OrderState::InProduction, vec!["OrderInProduction"])
        );
        // A duplicate and a stale status change nothing.
        assert_eq!(
            order.apply_job_status(&report(&order, 0, JobState::Accepted), at()),
            StatusOutcome::NoChange
        );
        let (order, events) = apply(&order, &report(&order, 0, JobState::Shipped));
        assert_eq!(
            (order.state, events.len()),
            (OrderState::InProduction, 0),
            "job 2 not heard of"
        );
        assert_eq!(
            order.apply_job_status(&report(&order, 0, JobState::Printed), at()),
            StatusOutcome::NoChange
        );
        let (order, _) = apply(&order, &report(&order, 1, JobState::Packed));
        assert_eq!(order.state, OrderState::Packed);
        let (order, events) = apply(&order, &report(&order, 1, JobState::Shipped));
        assert_eq!(
            (order.state, events),
            (OrderState::Shipped, vec!["OrderShipped"])
        );
        let jobs = &order.production.as_ref().unwrap().jobs;
        assert_eq!(jobs[1].tracking.as_deref(), Some("JJD1"));
        assert_eq!(order.production.as_ref().unwrap().open_jobs(), 0);
    }

    #[test]
    fn a_report_may_skip_steps_and_a_failure_holds_the_order() {
        let order = dispatched(&[("poster-30x40", 1)], "DE");
        // Shipped arrives first (the queue does not keep order).
        let (shipped, events) = apply(&order, &report(&order, 0, JobState::Shipped));
        assert_eq!(shipped.state, OrderState::Shipped);
        assert_eq!(events, ["OrderInProduction", "OrderShipped"]);
        assert_eq!(
            shipped.apply_job_status(&report(&order, 0, JobState::Accepted), at()),
            StatusOutcome::NoChange
        );

        let order = dispatched(&[("poster-30x40", 2)], "DE");
        let (order, _) = apply(&order, &report(&order, 0, JobState::Printing));
        let (held, events) = apply(&order, &report(&order, 1, JobState::Failed));
        assert_eq!(events, ["ProductionFailed", "OrderOnHold"]);
        assert_eq!(held.state, OrderState::OnHold);
        assert!(held.hold.as_ref().unwrap().reason.contains("paper jam"));
        // The other job's later statuses are recorded, the hold stays.
        let (still, events) = apply(&held, &report(&held, 0, JobState::Shipped));
        assert_eq!((still.state, events.len()), (OrderState::OnHold, 0));
        // A failed job is final: a late "printed" changes nothing.
        assert_eq!(
            still.apply_job_status(&report(&held, 1, JobState::Printed), at()),
            StatusOutcome::NoChange
        );
    }

    #[test]
    fn reports_of_other_plants_jobs_or_orders_are_unknown() {
        let order = dispatched(&[("poster-30x40", 1)], "DE");
        let mut r = report(&order, 0, JobState::Accepted);
        r.plant = if r.plant == "muc" { "btf" } else { "muc" }.into();
        assert!(matches!(
            order.apply_job_status(&r, at()),
            StatusOutcome::Unknown(_)
        ));
        let mut r = report(&order, 0, JobState::Accepted);
        r.job_id = "job_00-9-9".into();
        assert!(matches!(
            order.apply_job_status(&r, at()),
            StatusOutcome::Unknown(_)
        ));
        let rendered = rendered_order(&[("poster-30x40", 1)], "DE");
        assert!(matches!(
            rendered.apply_job_status(&report(&order, 0, JobState::Accepted), at()),
            StatusOutcome::Unknown(_)
        ));
    }

    #[test]
    fn reports_and_jobs_are_checked_when_parsed() {
        let order = dispatched(&[("poster-30x40", 1)], "DE");
        let good = serde_json::to_value(report(&order, 0, JobState::Shipped)).unwrap();
        assert!(JobStatusReport::parse(&good.to_string()).is_ok());
        for (field, value) in [
            ("tracking", serde_json::Value::Null),
            ("job_id", serde_json::json!("../../etc/passwd")),
            ("plant", serde_json::json!("MUC!")),
            ("status", serde_json::json!("teleported")),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            assert!(JobStatusReport::parse(&bad.to_string()).is_err(), "{field}");
        }
        let mut failed = serde_json::to_value(report(&order, 0, JobState::Failed)).unwrap();
        failed["reason"] = serde_json::json!("  ");
        assert!(JobStatusReport::parse(&failed.to_string()).is_err());
        assert!(JobStatusReport::parse("not json").is_err());
        assert_eq!(packing_reference("muc", &order.id).len(), 14);
    }
}
