//! An order as operators see it: the whole stored order (any tenant's,
//! with its payments and the operators' actions), plus what is derived
//! for a person: its timeline, its jobs by production attempt, and what
//! this operator may do now.

use crate::Ops;
use crate::ops::internal;
use order_api::ApiError;
use printworks::domain::operator::OpsAction;
use printworks::domain::order::Order;
use printworks::domain::production::JobRecord;
use printworks::ports::{NotificationRecord, NotificationStatus, Outgoing};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// One dated line of the order's history, from what the order records:
/// placement, payment flags, dispatch, every job report (current and
/// superseded jobs), every operator action, every change the customer
/// made, what the reconciler last did, and where it stands now.
fn timeline(order: &Order) -> Vec<Value> {
    let mut lines: Vec<(OffsetDateTime, Value)> =
        vec![(order.created_at, json!({ "event": "placed", "attempt": 1 }))];
    if let Some(ledger) = &order.payment_status {
        for flag in &ledger.flags {
            lines.push((
                flag.at,
                json!({ "event": "payment_flagged", "code": flag.code, "detail": flag.message }),
            ));
        }
    }
    if let Some(production) = &order.production {
        lines.push((
            production.dispatched_at,
            json!({ "event": "dispatched", "plant": production.plant, "attempt": 1 }),
        ));
        let jobs = production.jobs.iter().map(|j| (j, false));
        for (job, superseded) in jobs.chain(production.superseded.iter().map(|j| (j, true))) {
            if let (Some(status), Some(when)) = (job.status, job.status_at) {
                lines.push((
                    when,
                    json!({
                        "event": format!("job_{}", status.as_str()),
                        "job_id": job.job_id,
                        "attempt": job.attempt,
                        "plant": production.plant_of(job),
                        "superseded": superseded,
                        "detail": job.reason,
                    }),
                ));
            }
        }
    }
    for action in &order.actions {
        lines.push((
            action.at,
            json!({
                "event": format!("operator_{}", action.action.as_str()),
                "operator": action.operator,
                "attempt": action.attempt,
                "detail": action.reason,
            }),
        ));
    }
    for change in &order.changes {
        lines.push((
            change.at,
            json!({
                "event": format!("customer_{}", change.action.as_str()),
                "key_id": change.by,
                "attempt": change.attempt,
                "detail": change.details,
            }),
        ));
    }
    // What the reconciler did in the state it last acted in.
    if let Some(watch) = &order.watch {
        if let Some(when) = watch.nudged_at {
            lines.push((
                when,
                json!({
                    "event": "reconciler_handed_over",
                    "state": watch.state,
                    "attempt": watch.attempt,
                    "times": watch.nudges,
                }),
            ));
        }
        if let Some(when) = watch.stuck_at {
            lines.push((
                when,
                json!({
                    "event": "reconciler_stuck",
                    "state": watch.state,
                    "attempt": watch.attempt,
                    "since": at(watch.since),
                }),
            ));
        }
    }
    let detail = order
        .hold
        .as_ref()
        .map(|h| h.reason.clone())
        .or_else(|| order.cancel_reason.clone());
    lines.push((
        order.updated_at,
        json!({ "event": format!("now_{}", order.state.as_str()), "attempt": order.attempt, "detail": detail }),
    ));
    // Stable: equal times keep the order above (placed before dispatched).
    lines.sort_by_key(|(when, _)| *when);
    lines
        .into_iter()
        .map(|(when, mut line)| {
            line["at"] = at(when).into();
            if line.get("detail").is_some_and(Value::is_null) {
                line.as_object_mut().map(|o| o.remove("detail"));
            }
            line
        })
        .collect()
}

/// The jobs by the attempt that made them, each marked current or
/// superseded (made anew by a later attempt).
fn attempts(order: &Order) -> Vec<Value> {
    let mut by_attempt: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    if let Some(production) = &order.production {
        let job = |j: &JobRecord, current: bool| {
            let mut v = serde_json::to_value(j).unwrap_or(Value::Null);
            v["plant"] = production.plant_of(j).into();
            v["current"] = current.into();
            v["package"] = production.package_of(j).0.into();
            v
        };
        for j in &production.jobs {
            by_attempt.entry(j.attempt).or_default().push(job(j, true));
        }
        for j in &production.superseded {
            by_attempt.entry(j.attempt).or_default().push(job(j, false));
        }
    }
    by_attempt
        .into_iter()
        .map(|(attempt, jobs)| json!({ "attempt": attempt, "jobs": jobs }))
        .collect()
}

/// The operator's view of `order`, `allowed` being what this operator
/// may do now.
pub fn order_view(order: &Order, allowed: &[OpsAction]) -> Value {
    let allowed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
    json!({
        "order": order,
        "timeline": timeline(order),
        "attempts": attempts(order),
        "payments": { "setup": order.payment, "status": order.payment_status },
        "actions": order.actions,
        "allowed_actions": allowed,
    })
}

/// How long an order page's preview links work.
const PREVIEW_LINK: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// One notification as the order page lists it: what was sent, when, on
/// which channel and how it stands; never its body or its recipient.
pub(crate) fn notification_line(record: &NotificationRecord) -> Value {
    let (status, when, detail) = match &record.status {
        NotificationStatus::Sending { .. } => ("sending", record.created_at, None),
        NotificationStatus::Sent { at: sent, .. } => ("sent", *sent, None),
        NotificationStatus::Deferred { until } => (
            "deferred",
            record.created_at,
            Some(format!("over the day's cap: sent from {}", at(*until))),
        ),
        NotificationStatus::Failed { reason } => {
            ("failed", record.created_at, Some(reason.clone()))
        }
        NotificationStatus::Retry => ("retrying", record.created_at, None),
    };
    let subject = match &record.message {
        Outgoing::Email(mail) => Some(mail.subject.clone()),
        Outgoing::Sms(_) | Outgoing::Webhook(_) => None,
    };
    let mut line = json!({
        "channel": record.channel().as_str(),
        "event": record.event_type.as_str(),
        "status": status,
        "at": at(when),
        "attempts": record.attempts,
    });
    if let Some(subject) = subject {
        line["subject"] = subject.into();
    }
    if let Some(detail) = detail {
        line["detail"] = detail.into();
    }
    line
}

impl Ops {
    /// Links to the previews of `order`'s print files (one per rendered
    /// image), each a presigned GET that works for [`PREVIEW_LINK`]; none
    /// where the print files' store is not reachable.
    pub(crate) async fn previews(&self, order: &Order) -> Result<Vec<Value>, ApiError> {
        let Some(prints) = &self.prints else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in &order.items {
            for render in &item.renders {
                let link = prints
                    .presign_get(&render.preview.key, PREVIEW_LINK)
                    .await
                    .map_err(internal)?;
                out.push(json!({
                    "line": item.line,
                    "image": render.image + 1,
                    "sku": item.sku,
                    "url": link.url,
                    "width": render.preview.width,
                    "height": render.preview.height,
                    "print": { "width": render.print.width, "height": render.print.height },
                    "effective_dpi": render.effective_dpi,
                    "expires_at": at(link.expires_at),
                }));
            }
        }
        Ok(out)
    }

    /// The notifications sent (or being sent) for `order`, oldest first;
    /// `null` where the ledger is not reachable.
    pub(crate) async fn notifications_of(&self, order: &Order) -> Result<Value, ApiError> {
        let Some(ledger) = &self.notifications else {
            return Ok(Value::Null);
        };
        let records = ledger
            .for_order(&order.tenant, &order.id)
            .await
            .map_err(internal)?;
        Ok(records.iter().map(notification_line).collect())
    }
}
