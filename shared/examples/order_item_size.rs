//! How large an order's DynamoDB item grows, stage by stage, for an order
//! of `LINES` lines of `COPIES` copies each (default 50 x 100 = 5,000
//! copies): placed, rendered, dispatched, every job reported shipped.
//!
//! Two columns: `whole` is the one item the order was stored as before
//! jobs were records of their own (the order with every job and its last
//! report: it grows with the copies, and DynamoDB refuses an item over
//! 400 KB); `largest` is the largest of the items it is stored as now (the
//! order, its production record, one record per reported job). Reports
//! are applied as production-events applies them: to one job's record.
//!
//! ```sh
//! cargo run -p printworks --example order_item_size --features testing,aws-dynamodb [LINES COPIES]
//! ```

use printworks::adapters::aws::dynamodb::{stored_item_sizes, whole_order_item_size};
use printworks::domain::catalog::Catalog;
use printworks::domain::job_records::{ReportOutcome, apply_report};
use printworks::domain::production::Production;
use printworks::domain::production::{Dispatch, JobState, JobStatusReport};
use printworks::testing::{paid_order, rendered};
use std::collections::BTreeMap;

const ITEM_LIMIT: usize = 400 * 1024;

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (lines, copies) = (
        args.first().copied().unwrap_or(50),
        args.get(1).copied().unwrap_or(100),
    );
    let now = time::OffsetDateTime::now_utc();
    let items: Vec<(&str, u32)> = (0..lines).map(|_| ("poster-30x40", copies)).collect();
    let report = |stage: &str, order: &printworks::domain::order::Order| {
        let whole = whole_order_item_size(order).expect("an item");
        let (bare, record, job) = stored_item_sizes(order).expect("items");
        let largest = bare.max(record).max(job);
        let jobs = order.production.as_ref().map_or(0, |p| p.jobs.len());
        println!(
            "{stage:<24} {jobs:>5} jobs  whole {whole:>9} B {:>6.1} %{}  largest {largest:>6} B {:>5.1} % (order {bare}, production {record}, job {job})",
            100.0 * whole as f64 / ITEM_LIMIT as f64,
            if whole > ITEM_LIMIT {
                " (refused)"
            } else {
                "          "
            },
            100.0 * largest as f64 / ITEM_LIMIT as f64,
        );
    };
    println!(
        "an order of {lines} lines x {copies} copies = {} copies",
        lines * copies
    );
    let placed = paid_order(&items, "DE", now).order;
    report("placed (paid by invoice)", &placed);
    let (rendered, _, _) = rendered(&placed, now);
    report("rendered", &rendered);
    let mut order = match rendered
        .dispatch(Catalog::builtin(), &BTreeMap::new(), now)
        .expect("dispatch")
    {
        Dispatch::ToPlant { next, .. } => next,
        other => panic!("not dispatched: {other:?}"),
    };
    report("dispatched", &order);
    let production = order.production.take().expect("dispatched");
    let mut record = production.record();
    let mut stored: BTreeMap<String, printworks::domain::production::JobRecord> = BTreeMap::new();
    for status in [JobState::Accepted, JobState::Printed, JobState::Shipped] {
        for job in &production.jobs {
            let r = JobStatusReport {
                job_id: job.job_id.clone(),
                plant: production.plant.clone(),
                tenant: order.tenant.clone(),
                order_id: order.id.clone(),
                status,
                at: now,
                carrier: (status == JobState::Shipped).then(|| "DHL".to_string()),
                tracking: (status == JobState::Shipped).then(|| "00340434161234567890".to_string()),
                reason: None,
            };
            if let ReportOutcome::Changed(change) =
                apply_report(&order, &record, stored.get(&job.job_id), &r, now)
            {
                record = change.record;
                if let Some(next) = change.order {
                    order = next;
                }
                stored.insert(change.job.job_id.clone(), change.job);
            }
        }
        let mut whole = order.clone();
        whole.production = Some(Production::assemble(
            &order.id,
            &record,
            stored.values().cloned(),
        ));
        report(
            &format!("every job {} ({})", status.as_str(), whole.state.as_str()),
            &whole,
        );
    }
}
