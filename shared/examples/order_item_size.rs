//! How large an order's DynamoDB item grows, stage by stage, for an order
//! of `LINES` lines of `COPIES` copies each (default 50 x 100 = 5,000
//! copies): placed, rendered, dispatched, every job reported shipped. The
//! item holds the order with every job and its last report, so it grows
//! with the copies; DynamoDB refuses an item over 400 KB.
//!
//! ```sh
//! cargo run -p printworks --example order_item_size --features testing,aws-dynamodb [LINES COPIES]
//! ```

use printworks::adapters::aws::dynamodb::order_item_size;
use printworks::domain::catalog::Catalog;
use printworks::domain::production::{Dispatch, JobState, JobStatusReport, StatusOutcome};
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
        let size = order_item_size(order).expect("an item");
        let jobs = order.production.as_ref().map_or(0, |p| p.jobs.len());
        println!(
            "{stage:<28} {jobs:>6} jobs  {size:>9} bytes  {:>5.1} % of DynamoDB's 400 KB{}",
            100.0 * size as f64 / ITEM_LIMIT as f64,
            if size > ITEM_LIMIT { "  (refused)" } else { "" }
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
    let jobs = order.production.as_ref().unwrap().jobs.clone();
    let plant = order.production.as_ref().unwrap().plant.clone();
    for status in [JobState::Accepted, JobState::Printed, JobState::Shipped] {
        for job in &jobs {
            let r = JobStatusReport {
                job_id: job.job_id.clone(),
                plant: plant.clone(),
                tenant: order.tenant.clone(),
                order_id: order.id.clone(),
                status,
                at: now,
                carrier: (status == JobState::Shipped).then(|| "DHL".to_string()),
                tracking: (status == JobState::Shipped).then(|| "00340434161234567890".to_string()),
                reason: None,
            };
            if let StatusOutcome::Changed { next, .. } = order.apply_job_status(&r, now) {
                order = *next;
            }
        }
        report(&format!("every job {}", status.as_str()), &order);
    }
}
