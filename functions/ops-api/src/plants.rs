//! `GET /v1/ops/plants`: per plant, what is on its floor now (the open
//! jobs by state, the oldest first), when its agent last reported, and the
//! jobs it shipped today (UTC).
//!
//! The open jobs are read from the orders that can have any: those in
//! `dispatched`, `in_production`, `printed`, `packed` or `on_hold`, read
//! through the index the reconciler reads (SQLite's `orders_idle`,
//! DynamoDB's sparse `idle` index), at most [`ORDERS_PER_STATE`] per state;
//! `complete` says whether every such order was read. A job is open while
//! its plant has not reported it shipped, failed or cancelled, and only the
//! current jobs count (a reprinted job's first copy is superseded). The
//! last report and the day's shipments are kept by production-events with
//! each report ([`printworks::ports::ProductionStore::plant_activity`]).
//!
//! Shop staff see every plant of the catalog; a plant's operators see
//! their own plant only.

use crate::Ops;
use crate::ops::{internal, rfc3339};
use axum::http::StatusCode;
use order_api::ApiError;
use printworks::domain::operator::{Operator, Role};
use printworks::domain::order::Order;
use printworks::domain::production::{JobRecord, JobState};
use printworks::domain::state::OrderState;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The states an order with open jobs can be in.
pub const OPEN_STATES: [OrderState; 5] = [
    OrderState::Dispatched,
    OrderState::InProduction,
    OrderState::Printed,
    OrderState::Packed,
    OrderState::OnHold,
];

/// Orders read per state.
pub const ORDERS_PER_STATE: usize = 2_000;

/// The oldest open jobs listed per plant.
const OLDEST_LISTED: usize = 10;

/// The name of an open job's state on the board: `sent` until the plant
/// reports it; `None` once it is shipped, failed or cancelled.
fn open_state(job: &JobRecord) -> Option<&'static str> {
    match job.status {
        None => Some("sent"),
        Some(JobState::Accepted) => Some("accepted"),
        Some(JobState::Printing) => Some("printing"),
        Some(JobState::Printed) => Some("printed"),
        Some(JobState::Packed) => Some("packed"),
        Some(JobState::Shipped | JobState::Failed | JobState::Cancelled) => None,
    }
}

/// The board's columns, in the order jobs move through them.
const COLUMNS: [&str; 5] = ["sent", "accepted", "printing", "printed", "packed"];

/// When `job` went to its plant: the dispatch for the first attempt; for a
/// later one, the action that started it (an operator's release or
/// reprint, the customer's change), else the dispatch.
fn sent_at(order: &Order, dispatched_at: OffsetDateTime, job: &JobRecord) -> OffsetDateTime {
    if job.attempt <= 1 {
        return dispatched_at;
    }
    let by_operator = order
        .actions
        .iter()
        .filter(|a| a.attempt == job.attempt)
        .map(|a| a.at);
    let by_customer = order
        .changes
        .iter()
        .filter(|c| c.attempt == job.attempt)
        .map(|c| c.at);
    by_operator
        .chain(by_customer)
        .min()
        .unwrap_or(dispatched_at)
        .max(dispatched_at)
}

struct OpenJob {
    since: OffsetDateTime,
    order: String,
    job: String,
    state: &'static str,
    order_state: OrderState,
}

#[derive(Default)]
struct Board {
    by_state: BTreeMap<&'static str, u64>,
    jobs: Vec<OpenJob>,
}

/// Every plant's board from `orders` (any plant not in `boards` is skipped).
fn fill(boards: &mut BTreeMap<String, Board>, orders: &[Order]) {
    for order in orders {
        let Some(production) = &order.production else {
            continue;
        };
        for job in &production.jobs {
            let Some(state) = open_state(job) else {
                continue;
            };
            let Some(board) = boards.get_mut(production.plant_of(job)) else {
                continue;
            };
            *board.by_state.entry(state).or_default() += 1;
            board.jobs.push(OpenJob {
                since: sent_at(order, production.dispatched_at, job),
                order: order.id.to_string(),
                job: job.job_id.clone(),
                state,
                order_state: order.state,
            });
        }
    }
}

fn minutes(from: OffsetDateTime, to: OffsetDateTime) -> i64 {
    (to - from).whole_minutes().max(0)
}

impl Ops {
    /// The plants view, as `operator` may see it.
    pub async fn plants(&self, operator: &Operator) -> Result<Value, ApiError> {
        let (Some(production), Some(idle)) = (&self.production, &self.idle) else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plants_unavailable",
                "the plants' production is not reachable where this runs",
            ));
        };
        let plants: Vec<String> = match &operator.role {
            Role::Plant(own) => vec![own.clone()],
            Role::Admin | Role::Support => self.catalog.plants.keys().cloned().collect(),
        };
        let now = self.clock.now();
        let mut orders = Vec::new();
        let mut complete = true;
        for state in OPEN_STATES {
            let read = idle
                .idle_orders(state, now + time::Duration::days(1), ORDERS_PER_STATE)
                .await
                .map_err(internal)?;
            complete &= read.len() < ORDERS_PER_STATE;
            orders.extend(read);
        }
        let mut boards: BTreeMap<String, Board> = plants
            .iter()
            .map(|p| (p.clone(), Board::default()))
            .collect();
        fill(&mut boards, &orders);
        let today = now.to_offset(time::UtcOffset::UTC).date();
        let activity = production
            .plant_activity(&plants, today)
            .await
            .map_err(internal)?;
        let mut listed = Vec::with_capacity(boards.len());
        for (plant, mut board) in boards {
            board
                .jobs
                .sort_by(|a, b| (a.since, &a.order, &a.job).cmp(&(b.since, &b.order, &b.job)));
            let job_line = |j: &OpenJob| {
                json!({
                    "order_id": j.order,
                    "job_id": j.job,
                    "state": j.state,
                    "order_state": j.order_state.as_str(),
                    "since": rfc3339(j.since),
                    "age_minutes": minutes(j.since, now),
                })
            };
            let by_state: serde_json::Map<String, Value> = COLUMNS
                .iter()
                .map(|c| {
                    (
                        c.to_string(),
                        board.by_state.get(c).copied().unwrap_or(0).into(),
                    )
                })
                .collect();
            let seen = activity.get(&plant).cloned().unwrap_or_default();
            listed.push(json!({
                "plant": plant,
                "name": self.catalog.plants.get(&plant).map(|p| p.name.clone()),
                "open_jobs": board.jobs.len(),
                "by_state": by_state,
                "oldest_job": board.jobs.first().map(job_line),
                "oldest": board.jobs.iter().take(OLDEST_LISTED).map(job_line).collect::<Vec<_>>(),
                "last_report_at": seen.last_report.map(rfc3339),
                "last_report_minutes_ago": seen.last_report.map(|t| minutes(t, now)),
                "shipped_today": seen.shipped,
            }));
        }
        Ok(json!({
            "at": rfc3339(now),
            "day": today.to_string(),
            "complete": complete,
            "plants": listed,
        }))
    }
}
