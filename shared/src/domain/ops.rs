//! What operators do to an order (release a hold, reprint jobs, cancel), and
//! the production attempts that let an order go back safely.
//!
//! **The invariant.** The pair (attempt, state rank) only grows. Within an
//! attempt a state only moves to a higher rank
//! ([`OrderState::can_move_to`]); an operator's release or reprint starts
//! attempt + 1, which may begin at a lower rank (`paid` to render again,
//! `rendered` to dispatch again, `dispatched` for jobs made anew). Every
//! message that starts work carries the attempt it belongs to
//! (`OrderPaid`, `OrderRendered`, `OrderResumed`; jobs by their ids), and
//! a handler that finds the order in a later attempt does nothing
//! ([`Order::starts_work_of`]). A job made anew gets a new id
//! ([`super::production::job_id_of_attempt`]) and the one it replaces is
//! kept as superseded: its late reports change nothing
//! ([`super::production::StatusOutcome::Superseded`]). The stores need
//! nothing new: every write is conditional on the rank and version read.
//!
//! Every action needs a reason and is recorded on the order
//! ([`ActionRecord`]) with the operator, the time and the attempt. A
//! refusal says what is allowed now ([`Refusal::NotNow`]).

use super::catalog::Catalog;
use super::events::{EventEnvelope, EventType};
use super::operator::{OperatorId, OpsAction};
use super::order::{Order, first_attempt};
use super::production::{JobRecord, JobState, job_id_of_attempt, plant_makes};
use super::state::OrderState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// One operator action, as the order keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: OpsAction,
    pub operator: OperatorId,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The attempt the action started (release, reprint) or ended (cancel).
    pub attempt: u32,
    /// What it did (the stage resumed, the jobs replaced, the plant).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// Why an action was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The order's state does not allow it now (HTTP 409); `allowed` is
    /// what is allowed instead.
    #[error("{message}")]
    NotNow {
        message: String,
        allowed: Vec<OpsAction>,
    },
    /// The request names something wrong (HTTP 422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Where a released order goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waits for its payment again (held before it was paid).
    Payment,
    /// Rendered again (render subscribes to `OrderResumed` of this stage).
    Render,
    /// Dispatched again, or its new jobs sent (dispatch subscribes).
    Dispatch,
    /// Production goes on with the jobs at the plant: nothing to start.
    Production,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Payment => "payment",
            Stage::Render => "render",
            Stage::Dispatch => "dispatch",
            Stage::Production => "production",
        }
    }
}

/// An action taken: the order to write (conditional on the one read), its
/// events, and the plants' open-job counts to raise in the same write.
#[derive(Debug, Clone)]
pub struct Acted {
    pub next: Order,
    pub events: Vec<EventEnvelope>,
    pub open_jobs: BTreeMap<String, i64>,
}

/// The longest reason kept.
pub const REASON_MAX: usize = 500;

fn checked_reason(reason: &str) -> Result<String, Refusal> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Refusal::Invalid {
            field: "reason",
            message: "every action needs a reason (it is kept on the order)".into(),
        });
    }
    if reason.chars().count() > REASON_MAX || reason.chars().any(char::is_control) {
        return Err(Refusal::Invalid {
            field: "reason",
            message: format!("at most {REASON_MAX} characters, no control characters"),
        });
    }
    Ok(reason.to_string())
}

/// The order state a set of current jobs allows: the order follows its
/// slowest job; a job not heard of yet keeps it dispatched.
pub(crate) fn slowest_state(jobs: &[JobRecord]) -> OrderState {
    jobs.iter()
        .map(|j| j.status.filter(|s| *s != JobState::Failed))
        .min_by_key(|s| s.map_or(0, JobState::rank))
        .flatten()
        .map_or(OrderState::Dispatched, JobState::order_state)
}

impl Order {
    /// What an operator may do to the order now (a role may narrow it:
    /// [`super::operator::Role::may`]).
    pub fn ops_actions(&self) -> Vec<OpsAction> {
        let mut allowed = vec![OpsAction::Show];
        if self.state == OrderState::OnHold {
            allowed.push(OpsAction::Release);
        }
        if self.reprintable().next().is_some() {
            allowed.push(OpsAction::Reprint);
        }
        if !self.state.is_terminal() {
            allowed.push(OpsAction::Cancel);
        }
        if self
            .payment_status
            .as_ref()
            .is_some_and(|l| l.flags.iter().any(|f| f.is_open()))
        {
            allowed.push(OpsAction::Resolve);
        }
        allowed
    }

    /// Resolves payment flag `flag` (from 1) with the operator's note: what
    /// was done about it (refunded at the provider, a bank reversal...).
    /// Resolving a resolved flag again is refused with what is open.
    pub fn resolve_flag(
        &self,
        operator: &OperatorId,
        flag: u32,
        note: &str,
        now: OffsetDateTime,
    ) -> Result<Acted, Refusal> {
        let note = checked_reason(note).map_err(|_| Refusal::Invalid {
            field: "note",
            message: format!(
                "say what was done about the flag: 1 to {REASON_MAX} characters, no control characters"
            ),
        })?;
        let flags = self
            .payment_status
            .as_ref()
            .map(|l| l.flags.as_slice())
            .unwrap_or_default();
        let open: Vec<String> = flags
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_open())
            .map(|(n, f)| format!("{} ({})", n + 1, f.code))
            .collect();
        let index = (flag as usize).checked_sub(1).filter(|i| *i < flags.len());
        let Some(index) = index else {
            return Err(Refusal::Invalid {
                field: "flag",
                message: format!(
                    "the order has no flag {flag}; open flags: {}",
                    if open.is_empty() {
                        "none".into()
                    } else {
                        open.join(", ")
                    }
                ),
            });
        };
        if !flags[index].is_open() {
            return Err(self.not_now(
                OpsAction::Resolve,
                format!(
                    "flag {flag} is resolved already; open flags: {}",
                    if open.is_empty() {
                        "none".into()
                    } else {
                        open.join(", ")
                    }
                ),
            ));
        }
        let mut next = self.successor(now);
        let code = flags[index].code.clone();
        if let Some(ledger) = next.payment_status.as_mut() {
            ledger.flags[index].resolved = Some(super::payment::FlagResolution {
                operator: operator.to_string(),
                note: note.clone(),
                at: now,
            });
        }
        let details = serde_json::json!({ "flag": flag, "code": code });
        Order::record(&mut next, OpsAction::Resolve, operator, &note, details, now);
        let event = self.ops_event(
            EventType::PaymentFlagResolved,
            serde_json::json!({ "flag": flag, "code": code, "by": "operator", "note": note }),
            now,
        );
        Ok(Acted {
            next,
            events: vec![event],
            open_jobs: BTreeMap::new(),
        })
    }

    /// Whether a message of `attempt` may start work on this order: only
    /// the current attempt's may.
    pub fn starts_work_of(&self, attempt: u32) -> bool {
        attempt == self.attempt
    }

    /// The current jobs that were made and may be made again (printed,
    /// packed or shipped), while the order is in production or shipped.
    fn reprintable(&self) -> impl Iterator<Item = &JobRecord> {
        let in_production = self.state.production_started() || self.state == OrderState::Shipped;
        self.production
            .as_ref()
            .filter(|_| in_production)
            .into_iter()
            .flat_map(|p| p.jobs.iter())
            .filter(|j| {
                matches!(
                    j.status,
                    Some(JobState::Printed | JobState::Packed | JobState::Shipped)
                )
            })
    }

    fn not_now(&self, action: OpsAction, why: String) -> Refusal {
        let allowed = self.ops_actions();
        let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
        Refusal::NotNow {
            message: format!(
                "cannot {} this order: {why}; allowed now: {}",
                action.as_str(),
                names.join(", ")
            ),
            allowed,
        }
    }

    fn record(
        next: &mut Order,
        action: OpsAction,
        operator: &OperatorId,
        reason: &str,
        details: serde_json::Value,
        now: OffsetDateTime,
    ) {
        next.actions.push(ActionRecord {
            action,
            operator: operator.clone(),
            reason: reason.to_string(),
            at: now,
            attempt: next.attempt,
            details,
        });
    }

    /// Releases a held order where it stopped, in a new attempt: a hold
    /// before payment waits for the payment again; before rendering, it is
    /// rendered again; before dispatch, dispatched again (at `plant` if
    /// given); in production, failed jobs are made anew (at `plant` if
    /// given, else where they failed) and the rest go on. `OrderResumed`
    /// says which stage goes on (render and dispatch take theirs).
    pub fn release(
        &self,
        operator: &OperatorId,
        reason: &str,
        plant: Option<&str>,
        catalog: &Catalog,
        now: OffsetDateTime,
    ) -> Result<Acted, Refusal> {
        let reason = checked_reason(reason)?;
        let hold = match (&self.state, &self.hold) {
            (OrderState::OnHold, Some(hold)) => hold.clone(),
            _ => {
                return Err(self.not_now(
                    OpsAction::Release,
                    format!("it is {}, not on hold", self.state.as_str()),
                ));
            }
        };
        if let Some(plant) = plant
            && !catalog.plants.contains_key(plant)
        {
            let known: Vec<&str> = catalog.plants.keys().map(String::as_str).collect();
            return Err(Refusal::Invalid {
                field: "plant",
                message: format!("no plant {plant:?}; plants: {}", known.join(", ")),
            });
        }
        let mut next = self.successor(now);
        next.attempt = self.attempt + 1;
        next.hold = None;
        let mut open_jobs = BTreeMap::new();
        let mut made_anew = Vec::new();
        let stage = match hold.from {
            OrderState::Placed | OrderState::Paid | OrderState::Rendered => {
                if let Some(plant) = plant {
                    plant_makes(catalog, plant, self.items.iter().map(|i| i.sku.as_str()))
                        .map_err(|no| Refusal::Invalid {
                            field: "plant",
                            message: no.reason,
                        })?;
                    next.plant_choice = Some(plant.to_string());
                }
                next.state = hold.from;
                match hold.from {
                    OrderState::Placed => Stage::Payment,
                    OrderState::Paid => Stage::Render,
                    _ => Stage::Dispatch,
                }
            }
            OrderState::Dispatched
            | OrderState::InProduction
            | OrderState::Printed
            | OrderState::Packed => {
                let production = next.production.as_mut().ok_or_else(|| {
                    self.not_now(
                        OpsAction::Release,
                        "it was held in production but has no jobs".into(),
                    )
                })?;
                let failed: Vec<usize> = production
                    .jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, j)| j.status == Some(JobState::Failed))
                    .map(|(i, _)| i)
                    .collect();
                if failed.is_empty() && plant.is_some() {
                    return Err(Refusal::Invalid {
                        field: "plant",
                        message: "no job failed: production goes on where it is, and only \
                                  jobs made anew go to a chosen plant"
                            .into(),
                    });
                }
                if let Some(plant) = plant {
                    let skus = failed
                        .iter()
                        .filter_map(|i| {
                            self.items
                                .iter()
                                .find(|it| it.line == production.jobs[*i].line)
                        })
                        .map(|it| it.sku.as_str());
                    plant_makes(catalog, plant, skus).map_err(|no| Refusal::Invalid {
                        field: "plant",
                        message: no.reason,
                    })?;
                }
                for i in failed {
                    let old = production.jobs[i].clone();
                    let at = plant
                        .map(str::to_string)
                        .unwrap_or_else(|| production.plant_of(&old).to_string());
                    let new = JobRecord {
                        job_id: job_id_of_attempt(&self.id, old.line, old.copy, next.attempt),
                        attempt: next.attempt,
                        plant: (at != production.plant).then(|| at.clone()),
                        status: None,
                        status_at: None,
                        carrier: None,
                        tracking: None,
                        reason: None,
                        ..old.clone()
                    };
                    *open_jobs.entry(at).or_insert(0) += 1;
                    made_anew.push(
                        serde_json::json!({ "job_id": old.job_id, "replaced_by": new.job_id }),
                    );
                    production.jobs[i] = new;
                    production.superseded.push(old);
                }
                next.state = slowest_state(&production.jobs);
                if made_anew.is_empty() {
                    Stage::Production
                } else {
                    Stage::Dispatch
                }
            }
            OrderState::Shipped | OrderState::OnHold | OrderState::Cancelled => {
                return Err(self.not_now(
                    OpsAction::Release,
                    format!("it was held when {}", hold.from.as_str()),
                ));
            }
        };
        let details = serde_json::json!({
            "stage": stage.as_str(),
            "from": hold.from,
            "to": next.state,
            "plant": plant,
            "jobs": made_anew,
        });
        Order::record(
            &mut next,
            OpsAction::Release,
            operator,
            &reason,
            details.clone(),
            now,
        );
        let mut events = vec![self.resumed(&next, &reason, details, now)];
        if next.state == OrderState::Shipped {
            // Every job shipped while the order was held.
            let mut data =
                serde_json::json!({ "attempt": next.attempt, "shipments": shipments(&next) });
            if let Some(production) = &next.production {
                next.add_shipment_facts(&mut data, &production.plant);
            }
            events.push(self.ops_event(EventType::OrderShipped, data, now));
        }
        Ok(Acted {
            next,
            events,
            open_jobs,
        })
    }

    /// Makes the named jobs anew (damaged at the plant, lost in transit) in
    /// a new attempt, at `plant` if given, else where each was made; the
    /// order goes back to production and ships again. Only printed,
    /// packed or shipped jobs can be reprinted.
    pub fn reprint(
        &self,
        operator: &OperatorId,
        reason: &str,
        jobs: &[String],
        plant: Option<&str>,
        catalog: &Catalog,
        now: OffsetDateTime,
    ) -> Result<Acted, Refusal> {
        let reason = checked_reason(reason)?;
        if !self.ops_actions().contains(&OpsAction::Reprint) {
            return Err(self.not_now(
                OpsAction::Reprint,
                format!("it is {} with no printed job", self.state.as_str()),
            ));
        }
        let wanted: BTreeSet<&str> = jobs.iter().map(String::as_str).collect();
        if wanted.is_empty() || wanted.len() != jobs.len() {
            return Err(Refusal::Invalid {
                field: "jobs",
                message: "name each job to reprint once, at least one".into(),
            });
        }
        let Some(production) = &self.production else {
            return Err(self.not_now(OpsAction::Reprint, "it has no jobs".into()));
        };
        for id in &wanted {
            match production.jobs.iter().find(|j| j.job_id == *id) {
                Some(job)
                    if matches!(
                        job.status,
                        Some(JobState::Printed | JobState::Packed | JobState::Shipped)
                    ) => {}
                Some(job) => {
                    return Err(Refusal::Invalid {
                        field: "jobs",
                        message: format!(
                            "job {id} is {}: only printed, packed or shipped jobs are reprinted",
                            job.status.map_or("not yet accepted", JobState::as_str)
                        ),
                    });
                }
                None => {
                    let superseded = production.superseded.iter().any(|j| j.job_id == *id);
                    let current: Vec<&str> =
                        production.jobs.iter().map(|j| j.job_id.as_str()).collect();
                    return Err(Refusal::Invalid {
                        field: "jobs",
                        message: format!(
                            "{id} is {}; the order's jobs: {}",
                            if superseded {
                                "a job already made anew"
                            } else {
                                "not a job of this order"
                            },
                            current.join(", ")
                        ),
                    });
                }
            }
        }
        if let Some(plant) = plant {
            let skus = production
                .jobs
                .iter()
                .filter(|j| wanted.contains(j.job_id.as_str()))
                .filter_map(|j| self.items.iter().find(|it| it.line == j.line))
                .map(|it| it.sku.as_str());
            plant_makes(catalog, plant, skus).map_err(|no| Refusal::Invalid {
                field: "plant",
                message: no.reason,
            })?;
        }
        let mut next = self.successor(now);
        next.attempt = self.attempt + 1;
        let mut open_jobs = BTreeMap::new();
        let mut replaced = Vec::new();
        let attempt = next.attempt;
        let Some(prod) = next.production.as_mut() else {
            return Err(self.not_now(OpsAction::Reprint, "it has no jobs".into()));
        };
        for i in 0..prod.jobs.len() {
            if !wanted.contains(prod.jobs[i].job_id.as_str()) {
                continue;
            }
            let old = prod.jobs[i].clone();
            let at = plant
                .map(str::to_string)
                .unwrap_or_else(|| prod.plant_of(&old).to_string());
            let new = JobRecord {
                job_id: job_id_of_attempt(&self.id, old.line, old.copy, attempt),
                attempt,
                plant: (at != prod.plant).then(|| at.clone()),
                status: None,
                status_at: None,
                carrier: None,
                tracking: None,
                reason: None,
                ..old.clone()
            };
            *open_jobs.entry(at).or_insert(0) += 1;
            replaced.push(serde_json::json!({ "job_id": old.job_id, "replaced_by": new.job_id }));
            prod.jobs[i] = new;
            prod.superseded.push(old);
        }
        next.state = slowest_state(&prod.jobs);
        let details = serde_json::json!({
            "stage": Stage::Dispatch.as_str(),
            "from": self.state,
            "to": next.state,
            "plant": plant,
            "jobs": replaced,
        });
        Order::record(
            &mut next,
            OpsAction::Reprint,
            operator,
            &reason,
            details.clone(),
            now,
        );
        let events = vec![self.resumed(&next, &reason, details, now)];
        Ok(Acted {
            next,
            events,
            open_jobs,
        })
    }

    /// Cancels any order that has not shipped. After dispatch the plant
    /// must take the unfinished jobs off its floor: `OrderCancelled`
    /// names them (`jobs_to_stop`, as runs of copies: line, first, last,
    /// attempt, plant), and their reports still record what was made.
    pub fn cancel_by_operator(
        &self,
        operator: &OperatorId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Acted, Refusal> {
        let reason = checked_reason(reason)?;
        if self.state.is_terminal() {
            return Err(self.not_now(
                OpsAction::Cancel,
                format!("it is already {}", self.state.as_str()),
            ));
        }
        let mut next = self.successor(now);
        next.state = OrderState::Cancelled;
        next.cancel_reason = Some(reason.clone());
        // As runs of copies (line, first..=last, attempt, plant): an order
        // of 5,000 copies names its jobs to stop in 50 of them.
        let to_stop: Vec<super::job_records::JobRun> = self
            .production
            .iter()
            .flat_map(|p| {
                let open: Vec<JobRecord> = p
                    .jobs
                    .iter()
                    .filter(|j| !j.status.is_some_and(JobState::is_final))
                    .map(|j| JobRecord {
                        plant: Some(p.plant_of(j).to_string()),
                        ..j.clone()
                    })
                    .collect();
                super::job_records::runs_of(&open)
            })
            .collect();
        let stop_count: u32 = to_stop.iter().map(|r| r.last + 1 - r.first).sum();
        let refund = Order::request_refund_on_cancel(&mut next, now);
        let details = serde_json::json!({
            "from": self.state, "jobs_to_stop": to_stop, "jobs_to_stop_count": stop_count,
            "refund_requested": refund,
        });
        Order::record(
            &mut next,
            OpsAction::Cancel,
            operator,
            &reason,
            details,
            now,
        );
        let event = self.ops_event(
            EventType::OrderCancelled,
            serde_json::json!({
                "reason": reason, "from": self.state, "by": "operator",
                "attempt": self.attempt, "jobs_to_stop": to_stop,
                "jobs_to_stop_count": stop_count, "refund_requested": refund,
            }),
            now,
        );
        Ok(Acted {
            next,
            events: vec![event],
            open_jobs: BTreeMap::new(),
        })
    }

    fn resumed(
        &self,
        next: &Order,
        reason: &str,
        details: serde_json::Value,
        now: OffsetDateTime,
    ) -> EventEnvelope {
        let mut data = details;
        data["attempt"] = next.attempt.into();
        data["reason"] = reason.into();
        // What the operator did (the customer's e-mail says it in its words).
        data["action"] = next
            .actions
            .last()
            .map_or("release", |a| a.action.as_str())
            .into();
        self.ops_event(EventType::OrderResumed, data, now)
    }

    fn ops_event(
        &self,
        kind: EventType,
        data: serde_json::Value,
        now: OffsetDateTime,
    ) -> EventEnvelope {
        EventEnvelope::new(kind, &self.id, &self.tenant, now, data)
    }
}

/// The carriers and tracking numbers of the order's current jobs.
fn shipments(order: &Order) -> Vec<serde_json::Value> {
    let mut found: Vec<(String, String)> = order
        .production
        .iter()
        .flat_map(|p| p.jobs.iter())
        .filter_map(|j| Some((j.carrier.clone()?, j.tracking.clone()?)))
        .collect();
    found.sort();
    found.dedup();
    found
        .into_iter()
        .map(|(carrier, tracking)| serde_json::json!({ "carrier": carrier, "tracking": tracking }))
        .collect()
}

/// The attempt an event belongs to (`data.attempt`; events from before
/// attempts existed belong to the first).
pub fn attempt_of(event: &EventEnvelope) -> u32 {
    event
        .data
        .get("attempt")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(first_attempt)
}

/// The stage an `OrderResumed` (or an `OrderChanged` that renders a
/// replaced photo, or the reconciler's `OrderNudged`) goes on with.
pub fn stage_of(event: &EventEnvelope) -> Option<Stage> {
    matches!(
        event.event_type,
        EventType::OrderResumed | EventType::OrderChanged | EventType::OrderNudged
    )
    .then(|| event.data.get("stage").cloned())
    .flatten()
    .and_then(|s| serde_json::from_value(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::production::{Dispatch, JobStatusReport, StatusOutcome};
    use crate::testing::{paid_order, rendered};

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-12-05 10:00:00 UTC)
    }

    fn anna() -> OperatorId {
        OperatorId::parse("anna").unwrap()
    }

    fn catalog() -> &'static Catalog {
        Catalog::builtin()
    }

    fn no_load() -> BTreeMap<String, i64> {
        BTreeMap::new()
    }

    fn dispatched(order: &Order) -> Order {
        match order.dispatch(catalog(), &no_load(), at()).unwrap() {
            Dispatch::ToPlant { next, .. } => next,
            Dispatch::Hold { .. } => panic!("held"),
        }
    }

    /// A poster order (2 copies) to DE, dispatched (to btf: both plants
    /// serve DE, neither has work, the first by id wins).
    fn in_production() -> Order {
        let paid = paid_order(&[("poster-30x40", 2)], "DE", at()).order;
        dispatched(&rendered(&paid, at()).0)
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
            tracking: (status == JobState::Shipped).then(|| format!("JJD-{}", job.job_id)),
            reason: (status == JobState::Failed).then(|| "paper jam".to_string()),
        }
    }

    /// Applies `status` to the current job `index`; returns the order and
    /// its events' names.
    fn apply(order: &Order, index: usize, status: JobState) -> (Order, Vec<&'static str>) {
        let job = order.production.as_ref().unwrap().jobs[index].clone();
        match order.apply_job_status(&report(order, &job, status), at()) {
            StatusOutcome::Changed { next, events, .. } => (
                *next,
                events.iter().map(|e| e.event_type.as_str()).collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    fn shipped() -> Order {
        let mut order = in_production();
        for i in 0..2 {
            order = apply(&order, i, JobState::Shipped).0;
        }
        assert_eq!(order.state, OrderState::Shipped);
        order
    }

    fn allowed(r: Refusal) -> Vec<OpsAction> {
        match r {
            Refusal::NotNow { allowed, message } => {
                assert!(message.contains("allowed now"), "{message}");
                allowed
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_render_hold_is_released_to_render_again_and_the_old_attempt_starts_nothing() {
        let paid = paid_order(&[("poster-30x40", 1)], "DE", at()).order;
        let (held, _) = paid
            .hold(
                "The photo is too small.",
                serde_json::json!({"code": "too_small"}),
                at(),
            )
            .unwrap();
        assert_eq!(
            held.ops_actions(),
            [OpsAction::Show, OpsAction::Release, OpsAction::Cancel]
        );
        let acted = held
            .release(
                &anna(),
                "customer sent a larger photo",
                None,
                catalog(),
                at(),
            )
            .unwrap();
        let next = &acted.next;
        assert_eq!(
            (next.state, next.attempt, next.hold.as_ref()),
            (OrderState::Paid, 2, None)
        );
        assert_eq!(next.version, held.version + 1);
        let [resumed] = &acted.events[..] else {
            panic!("{:?}", acted.events)
        };
        assert_eq!(resumed.event_type, EventType::OrderResumed);
        assert_eq!(
            (stage_of(resumed), attempt_of(resumed)),
            (Some(Stage::Render), 2)
        );
        assert_eq!(resumed.data["reason"], "customer sent a larger photo");
        // The first attempt's OrderPaid, delivered late, starts nothing.
        assert!(!next.starts_work_of(1));
        assert!(next.starts_work_of(attempt_of(resumed)));
        let [record] = &next.actions[..] else {
            panic!()
        };
        assert_eq!(
            (record.action, record.operator.as_str(), record.attempt),
            (OpsAction::Release, "anna", 2)
        );
        // Released once: a second release is refused with what is allowed.
        let again = next
            .release(&anna(), "again", None, catalog(), at())
            .unwrap_err();
        assert_eq!(allowed(again), [OpsAction::Show, OpsAction::Cancel]);
    }

    #[test]
    fn a_no_plant_hold_is_released_at_a_chosen_plant_that_can_make_it() {
        // A canvas (btf only) and a card (muc only): no plant makes both.
        let paid = paid_order(&[("canvas-30x40", 1), ("card-a6-folded", 1)], "DE", at()).order;
        let rendered_order = rendered(&paid, at()).0;
        let Dispatch::Hold { next: held, .. } = rendered_order
            .dispatch(catalog(), &no_load(), at())
            .unwrap()
        else {
            panic!("dispatched");
        };
        let refused = held
            .release(&anna(), "try muc", Some("muc"), catalog(), at())
            .unwrap_err();
        assert!(
            matches!(&refused, Refusal::Invalid { field: "plant", message } if message.contains("split")),
            "{refused:?}"
        );
        let unknown = held
            .release(&anna(), "x", Some("zrh"), catalog(), at())
            .unwrap_err();
        assert!(matches!(unknown, Refusal::Invalid { field: "plant", .. }));

        // A poster held at dispatch (say, its plant was down): released to btf.
        let poster = rendered(&paid_order(&[("poster-30x40", 1)], "DE", at()).order, at()).0;
        let (held, _) = poster
            .hold("plant down", serde_json::json!({"code": "no_plant"}), at())
            .unwrap();
        let acted = held
            .release(
                &anna(),
                "muc is down, make it in btf",
                Some("btf"),
                catalog(),
                at(),
            )
            .unwrap();
        assert_eq!(acted.next.state, OrderState::Rendered);
        assert_eq!(acted.next.plant_choice.as_deref(), Some("btf"));
        assert_eq!(stage_of(&acted.events[0]), Some(Stage::Dispatch));
        // Dispatch takes the choice, even where muc has less work, and the
        // jobs of attempt 2 have ids of their own.
        let load = BTreeMap::from([("btf".to_string(), 99), ("muc".to_string(), 0)]);
        let Dispatch::ToPlant { next, event } =
            acted.next.dispatch(catalog(), &load, at()).unwrap()
        else {
            panic!("held");
        };
        let production = next.production.as_ref().unwrap();
        assert_eq!(production.plant, "btf");
        assert_eq!(next.plant_choice, None);
        assert!(
            production.jobs[0].job_id.ends_with("-1-1-2"),
            "{}",
            production.jobs[0].job_id
        );
        assert_eq!(attempt_of(&event), 2);
    }

    #[test]
    fn a_failed_job_is_made_anew_on_release_and_its_old_reports_change_nothing() {
        let order = in_production();
        let (order, _) = apply(&order, 0, JobState::Printing);
        let (held, events) = apply(&order, 1, JobState::Failed);
        assert_eq!(events, ["ProductionFailed", "OrderOnHold"]);
        assert_eq!(held.state, OrderState::OnHold);
        let failed = held.production.as_ref().unwrap().jobs[1].clone();

        let acted = held
            .release(
                &anna(),
                "paper refilled, print it again",
                None,
                catalog(),
                at(),
            )
            .unwrap();
        let next = acted.next;
        let production = next.production.as_ref().unwrap();
        assert_eq!(next.attempt, 2);
        // The slowest job is the new one, not heard of yet.
        assert_eq!(next.state, OrderState::Dispatched);
        assert_eq!(production.jobs[1].job_id, format!("{}-2", failed.job_id));
        assert_eq!(production.jobs[1].attempt, 2);
        assert_eq!(production.superseded, std::slice::from_ref(&failed));
        assert_eq!(
            acted.open_jobs,
            BTreeMap::from([(production.plant.clone(), 1)])
        );
        assert_eq!(stage_of(&acted.events[0]), Some(Stage::Dispatch));
        assert_eq!(
            production.package_of(&production.jobs[1]),
            (format!("{}-A2", production.packing_ref), 1)
        );

        // A late report of the failed job: superseded.
        let late = report(&next, &failed, JobState::Printed);
        assert_eq!(
            next.apply_job_status(&late, at()),
            StatusOutcome::Superseded
        );
        // The new job and the old one go on to shipped.
        let (next, _) = apply(&next, 1, JobState::Accepted);
        assert_eq!(next.state, OrderState::InProduction);
        let (next, _) = apply(&next, 0, JobState::Shipped);
        let (next, events) = apply(&next, 1, JobState::Shipped);
        assert_eq!(next.state, OrderState::Shipped);
        assert_eq!(events, ["OrderShipped"]);
    }

    #[test]
    fn a_refund_hold_released_goes_on_with_production_where_it_is() {
        let order = in_production();
        let (order, _) = apply(&order, 0, JobState::Printed);
        let (order, _) = apply(&order, 1, JobState::Printed);
        let (held, _) = order
            .hold(
                "The payment was refunded.",
                serde_json::json!({"code": "refund"}),
                at(),
            )
            .unwrap();
        // A plant cannot be chosen: nothing is made anew.
        let refused = held
            .release(&anna(), "refund reversed", Some("btf"), catalog(), at())
            .unwrap_err();
        assert!(matches!(refused, Refusal::Invalid { field: "plant", .. }));
        let acted = held
            .release(
                &anna(),
                "refund reversed by the bank",
                None,
                catalog(),
                at(),
            )
            .unwrap();
        assert_eq!(acted.next.state, OrderState::Printed);
        assert!(acted.open_jobs.is_empty());
        assert_eq!(stage_of(&acted.events[0]), Some(Stage::Production));
        // Reports of its jobs, which stayed current, go on.
        let (next, events) = apply(&acted.next, 0, JobState::Shipped);
        assert!(events.is_empty());
        let (next, events) = apply(&next, 1, JobState::Shipped);
        assert_eq!(
            (next.state, events),
            (OrderState::Shipped, vec!["OrderShipped"])
        );
    }

    #[test]
    fn a_reprint_ships_again_beside_the_first_shipment() {
        let order = shipped();
        assert_eq!(order.ops_actions(), [OpsAction::Show, OpsAction::Reprint]);
        let first = order.production.as_ref().unwrap().jobs[0].clone();
        let acted = order
            .reprint(
                &anna(),
                "lost in transit",
                std::slice::from_ref(&first.job_id),
                Some("muc"),
                catalog(),
                at(),
            )
            .unwrap();
        let next = acted.next;
        let production = next.production.as_ref().unwrap();
        assert_eq!((next.state, next.attempt), (OrderState::Dispatched, 2));
        assert_eq!(production.jobs[0].plant.as_deref(), Some("muc"));
        assert_eq!(production.plant_of(&production.jobs[0]), "muc");
        assert_eq!(acted.open_jobs, BTreeMap::from([("muc".to_string(), 1)]));
        assert_eq!(stage_of(&acted.events[0]), Some(Stage::Dispatch));
        // The first job's tracking is kept beside.
        assert_eq!(production.superseded[0].tracking, first.tracking);
        // A btf report of the new job is refused; muc's is taken.
        let mut wrong = report(&next, &production.jobs[0], JobState::Accepted);
        wrong.plant = "btf".into();
        assert!(matches!(
            next.apply_job_status(&wrong, at()),
            StatusOutcome::Unknown(_)
        ));
        let (next, events) = apply(&next, 0, JobState::Accepted);
        assert_eq!(events, ["OrderInProduction"]);
        let (next, events) = apply(&next, 0, JobState::Shipped);
        assert_eq!(next.state, OrderState::Shipped);
        assert_eq!(events, ["OrderShipped"]);
        let duplicate = report(
            &next,
            &next.production.as_ref().unwrap().jobs[0],
            JobState::Shipped,
        );
        assert_eq!(
            next.apply_job_status(&duplicate, at()),
            StatusOutcome::NoChange
        );
    }

    #[test]
    fn a_reprint_names_printed_jobs_of_the_order_only() {
        let order = in_production();
        let id = order.production.as_ref().unwrap().jobs[0].job_id.clone();
        // Nothing printed yet: reprint is not allowed now.
        let refused = order
            .reprint(
                &anna(),
                "damaged",
                std::slice::from_ref(&id),
                None,
                catalog(),
                at(),
            )
            .unwrap_err();
        assert_eq!(allowed(refused), [OpsAction::Show, OpsAction::Cancel]);
        let (order, _) = apply(&order, 0, JobState::Printed);
        let other = order.production.as_ref().unwrap().jobs[1].job_id.clone();
        for (jobs, field) in [
            (vec![], "jobs"),
            (vec![id.clone(), id.clone()], "jobs"),
            (vec![other.clone()], "jobs"),
            (vec!["job_00-1-1".to_string()], "jobs"),
        ] {
            let refused = order.reprint(&anna(), "damaged", &jobs, None, catalog(), at());
            assert!(
                matches!(&refused, Err(Refusal::Invalid { field: f, .. }) if *f == field),
                "{jobs:?}: {refused:?}"
            );
        }
        let refused = order.reprint(
            &anna(),
            " ",
            std::slice::from_ref(&id),
            None,
            catalog(),
            at(),
        );
        assert!(matches!(
            refused,
            Err(Refusal::Invalid {
                field: "reason",
                ..
            })
        ));
        let acted = order
            .reprint(
                &anna(),
                "torn at the cutter",
                std::slice::from_ref(&id),
                None,
                catalog(),
                at(),
            )
            .unwrap();
        // The replaced job cannot be reprinted again; its replacement can once printed.
        let again = acted.next.reprint(
            &anna(),
            "again",
            std::slice::from_ref(&id),
            None,
            catalog(),
            at(),
        );
        assert!(
            matches!(
                &again,
                Err(Refusal::NotNow { .. }) | Err(Refusal::Invalid { .. })
            ),
            "{again:?}"
        );
    }

    #[test]
    fn an_operator_cancels_any_order_not_shipped_and_names_the_jobs_to_stop() {
        let order = in_production();
        let (order, _) = apply(&order, 0, JobState::Shipped);
        let acted = order
            .cancel_by_operator(&anna(), "customer moved abroad", at())
            .unwrap();
        assert_eq!(acted.next.state, OrderState::Cancelled);
        let [event] = &acted.events[..] else { panic!() };
        assert_eq!(event.event_type, EventType::OrderCancelled);
        let stop = event.data["jobs_to_stop"].as_array().unwrap();
        assert_eq!(stop.len(), 1, "only the unshipped job: {stop:?}");
        assert_eq!(stop[0]["plant"], "btf");
        // Reports of what was made still reach the job; the order stays cancelled.
        let (after, _) = apply(&acted.next, 1, JobState::Printed);
        assert_eq!(after.state, OrderState::Cancelled);
        assert_eq!(
            after.production.as_ref().unwrap().jobs[1].status,
            Some(JobState::Printed)
        );

        let refused = acted
            .next
            .cancel_by_operator(&anna(), "again", at())
            .unwrap_err();
        assert_eq!(allowed(refused), [OpsAction::Show]);
        let refused = shipped()
            .cancel_by_operator(&anna(), "too late", at())
            .unwrap_err();
        assert_eq!(allowed(refused), [OpsAction::Show, OpsAction::Reprint]);
    }

    /// The invariant: across every action and report, (attempt, rank) only grows.
    #[test]
    fn attempt_and_rank_only_grow() {
        let key = |o: &Order| (o.attempt, o.state.rank());
        let mut seen = Vec::new();
        let order = in_production();
        seen.push(key(&order));
        let (order, _) = apply(&order, 0, JobState::Printed);
        seen.push(key(&order));
        let (order, _) = apply(&order, 1, JobState::Failed);
        seen.push(key(&order));
        let order = order
            .release(&anna(), "again", None, catalog(), at())
            .unwrap()
            .next;
        seen.push(key(&order));
        let (order, _) = apply(&order, 1, JobState::Shipped);
        seen.push(key(&order));
        let (order, _) = apply(&order, 0, JobState::Shipped);
        seen.push(key(&order));
        let id = order.production.as_ref().unwrap().jobs[0].job_id.clone();
        let order = order
            .reprint(&anna(), "damaged", &[id], None, catalog(), at())
            .unwrap()
            .next;
        seen.push(key(&order));
        let order = order
            .cancel_by_operator(&anna(), "stop", at())
            .unwrap()
            .next;
        seen.push(key(&order));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&(3, OrderState::Cancelled.rank())));
    }
}
