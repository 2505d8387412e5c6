//! The operator actions on any tenant's order, for the HTTP handlers and
//! for `printworks ops` alike: who may do what ([`Role::may`]), the
//! domain's decision ([`Order::release`], [`Order::reprint`],
//! [`Order::cancel_by_operator`]), and the write with the operator's
//! idempotency key ([`OpsStore::act`]), read again and decided again when
//! the order changed under it.

use crate::view::order_view;
use axum::http::StatusCode;
use order_api::ApiError;
use printworks::domain::catalog::Catalog;
use printworks::domain::operator::{Operator, OpsAction};
use printworks::domain::ops::Refusal;
use printworks::domain::order::{Order, OrderId};
use printworks::ports::{
    Clock, IdempotencyRecord, OpsStore, OpsWrite, PlaceOutcome, StoreError, StoredResponse,
    ops_scope,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Lost races with other writers of the order before the operator is told
/// to try again.
const ACT_ATTEMPTS: u32 = 5;

/// The most orders `flags` lists at once, oldest first.
const FLAGS_LISTED: usize = 200;

/// An operator's request, as its body reads (the action is the route's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Release {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plant: Option<String>,
    },
    Reprint {
        jobs: Vec<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plant: Option<String>,
    },
    Cancel {
        reason: String,
    },
    /// Resolve payment flag `flag` (from 1) of the order with a note.
    Resolve {
        flag: u32,
        note: String,
    },
}

impl Action {
    pub fn kind(&self) -> OpsAction {
        match self {
            Action::Release { .. } => OpsAction::Release,
            Action::Reprint { .. } => OpsAction::Reprint,
            Action::Cancel { .. } => OpsAction::Cancel,
            Action::Resolve { .. } => OpsAction::Resolve,
        }
    }

    /// The request's fingerprint for its idempotency key: the order and
    /// the action with its fields, canonical (field order, whitespace and
    /// the route do not change it).
    fn fingerprint(&self, order: &OrderId) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::json!({ "order": order.as_str(), "request": self });
        hex::encode(Sha256::digest(canonical.to_string()))
    }
}

/// What an action returned: the response to send, and whether it is the
/// stored response of an earlier request with the same key.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: StoredResponse,
    pub replayed: bool,
}

/// The operator actions over a store.
pub struct Ops {
    pub catalog: Arc<Catalog>,
    pub store: Arc<dyn OpsStore>,
    pub clock: Arc<dyn Clock>,
    /// The dead-letter queues (the local bus, SQS): `None` where the
    /// queues are not reachable (`printworks ops --aws-table`).
    pub dead_letters: Option<Arc<dyn printworks::ports::DeadLetters>>,
    /// The statistics projection's counters: `None` where they are not
    /// kept.
    pub stats: Option<Arc<dyn printworks::ports::StatsStore>>,
    /// The published events, for `GET /v1/ops/live`: `None` where they
    /// cannot be streamed (the Lambda).
    pub feed: Option<Arc<dyn printworks::ports::EventFeed>>,
    /// Ends the live streams when `printworks up` stops.
    pub live_stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The notification ledger: an order's notifications, the statistics'
    /// sends against the caps. `None` where it is not reachable.
    pub notifications: Option<Arc<dyn printworks::ports::NotificationStore>>,
    /// The daily caps notify sends under (`NOTIFY_DAILY_CAPS`).
    pub caps: printworks::domain::notify::DailyCaps,
    /// The print files' store: an order's previews, by presigned GET.
    pub prints: Option<Arc<dyn printworks::ports::BlobStore>>,
    /// The plants view's reads: the plants' activity, and the orders with
    /// open jobs (through the idle index the reconciler reads).
    pub production: Option<Arc<dyn printworks::ports::ProductionStore>>,
    pub idle: Option<Arc<dyn printworks::ports::ReconcileStore>>,
}

fn not_found() -> ApiError {
    ApiError::not_found("order")
}

pub(crate) fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::from(StoreError::Unexpected(e.into()))
}

/// 403: the operator's role does not allow `action` on this order; says
/// what the role allows.
/// 403: the role may not `what`; says what the role may instead.
pub(crate) fn not_for_role(operator: &Operator, what: &str) -> ApiError {
    let allowed: Vec<&str> = operator
        .role
        .allowed_actions()
        .iter()
        .map(|a| a.as_str())
        .collect();
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "operator {} ({}) may not {what}: the role may {}",
            operator.id,
            operator.role.as_string(),
            allowed.join(", ")
        ),
    )
    .with_details(serde_json::json!({
        "role": operator.role.as_string(),
        "role_allows": allowed,
    }))
}

fn forbidden(operator: &Operator, action: OpsAction, order: &Order) -> ApiError {
    let allowed: Vec<&str> = operator
        .role
        .allowed_actions()
        .iter()
        .map(|a| a.as_str())
        .collect();
    let scope = match &operator.role {
        printworks::domain::operator::Role::Plant(plant) => {
            format!(" on orders made at plant {plant}")
        }
        _ => String::new(),
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "operator {} ({}) may not {} order {}: the role may {}{scope}",
            operator.id,
            operator.role.as_string(),
            action.as_str(),
            order.id,
            allowed.join(", "),
        ),
    )
    .with_details(serde_json::json!({
        "role": operator.role.as_string(),
        "role_allows": allowed,
    }))
}

/// A time as the API writes it (RFC 3339).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The plant whose operators may see the order: where it is made.
fn plant_of(order: &Order) -> Option<&str> {
    order.production.as_ref().map(|p| p.plant.as_str())
}

/// [`plant_of`], for the live stream.
pub(crate) fn plant_of_order(order: &Order) -> Option<&str> {
    plant_of(order)
}

/// What this operator may do to the order now.
pub fn allowed_for(operator: &Operator, order: &Order) -> Vec<OpsAction> {
    order
        .ops_actions()
        .into_iter()
        .filter(|a| operator.role.may(*a, plant_of(order)))
        .collect()
}

impl Ops {
    pub fn new(catalog: Arc<Catalog>, store: Arc<dyn OpsStore>, clock: Arc<dyn Clock>) -> Ops {
        Ops {
            catalog,
            store,
            clock,
            dead_letters: None,
            stats: None,
            feed: None,
            live_stop: None,
            notifications: None,
            caps: printworks::domain::notify::DailyCaps::default(),
            prints: None,
            production: None,
            idle: None,
        }
    }

    /// The order if it exists and the operator may take `action` on it.
    async fn order_for(
        &self,
        operator: &Operator,
        id: &OrderId,
        action: OpsAction,
    ) -> Result<Order, ApiError> {
        let order = self.store.find_order(id).await?.ok_or_else(not_found)?;
        if !operator.role.may(action, plant_of(&order)) {
            return Err(forbidden(operator, action, &order));
        }
        Ok(order)
    }

    /// Any tenant's order as operators see it ([`order_view`]).
    pub async fn show(
        &self,
        operator: &Operator,
        id: &OrderId,
    ) -> Result<serde_json::Value, ApiError> {
        let order = self.order_for(operator, id, OpsAction::Show).await?;
        let mut view = order_view(&order, &allowed_for(operator, &order));
        view["previews"] = self.previews(&order).await?.into();
        let plant = matches!(operator.role, printworks::domain::operator::Role::Plant(_));
        // A plant packs and ships: the ship-to address and the customer's
        // name, never how to reach the customer (nor what they were sent).
        if plant {
            if let Some(customer) = view["order"]["customer"].as_object_mut() {
                customer.remove("email");
                customer.remove("phone");
            }
        } else {
            view["notifications"] = self.notifications_of(&order).await?;
        }
        Ok(view)
    }

    /// What needs a person for money across every tenant: the orders with
    /// an open payment flag or refund request, least recently changed
    /// first, each with those flags (numbered as `resolve` takes them) and
    /// requests. Operators who may resolve flags only (not a plant's).
    pub async fn flags(&self, operator: &Operator) -> Result<serde_json::Value, ApiError> {
        if !operator.role.may(OpsAction::Resolve, None) {
            return Err(not_for_role(operator, "see payment flags"));
        }
        let orders = self.store.needing_attention(FLAGS_LISTED).await?;
        let mut listed = Vec::with_capacity(orders.len());
        for order in orders.iter().filter(|o| o.money_needs_attention()) {
            let Some(ledger) = &order.payment_status else {
                continue;
            };
            let flags: Vec<serde_json::Value> = ledger
                .flags
                .iter()
                .enumerate()
                .filter(|(_, f)| f.is_open())
                .map(|(n, f)| {
                    serde_json::json!({
                        "flag": n + 1, "code": f.code, "message": f.message,
                        "at": rfc3339(f.at),
                        "provider_event": f.event_id,
                    })
                })
                .collect();
            let refunds: Vec<_> = ledger.open_refunds().collect();
            listed.push(serde_json::json!({
                "order_id": order.id, "tenant": order.tenant, "state": order.state,
                "currency": order.currency, "flags": flags, "refund_requests": refunds,
            }));
        }
        Ok(serde_json::json!({
            "orders": listed,
            "has_more": orders.len() >= FLAGS_LISTED,
        }))
    }

    /// The orders the reconciler announced stuck (`OrderStuck`) and that
    /// are still in that state, least recently changed first: each with
    /// its state, plant, since when and what the reconciler did. A plant's
    /// operators see their plant's only.
    pub async fn stuck(&self, operator: &Operator) -> Result<serde_json::Value, ApiError> {
        let orders = self.store.needing_attention(FLAGS_LISTED).await?;
        let listed: Vec<serde_json::Value> = orders
            .iter()
            .filter(|o| o.is_stuck())
            .filter(|o| operator.role.may(OpsAction::Show, plant_of(o)))
            .filter_map(|o| {
                let watch = o.watch.as_ref()?;
                Some(serde_json::json!({
                    "order_id": o.id, "tenant": o.tenant, "state": o.state,
                    "attempt": o.attempt,
                    "plant": o.production.as_ref().map(|p| p.plant.clone()),
                    "since": rfc3339(watch.since),
                    "announced_at": watch.stuck_at.map(rfc3339),
                    "nudges": watch.nudges,
                    "actions": allowed_for(operator, o),
                }))
            })
            .collect();
        Ok(serde_json::json!({
            "orders": listed,
            "has_more": orders.len() >= FLAGS_LISTED,
        }))
    }

    /// Orders on hold, longest held first (at most 200; `has_more` says if
    /// there are more): why (the reason the customer is told, its code),
    /// held from which state, since when, whether a photo the customer
    /// replaces lifts the hold, and what this operator may do now. A
    /// plant's operators see their plant's only.
    pub async fn holds(&self, operator: &Operator) -> Result<serde_json::Value, ApiError> {
        let orders = self.store.held_orders(FLAGS_LISTED).await?;
        let listed: Vec<serde_json::Value> = orders
            .iter()
            .filter(|o| operator.role.may(OpsAction::Show, plant_of(o)))
            .filter_map(|o| {
                let hold = o.hold.as_ref()?;
                Some(serde_json::json!({
                    "order_id": o.id, "tenant": o.tenant, "reference": o.reference,
                    "reason": hold.reason, "code": hold.code, "from": hold.from,
                    "customer_can_fix": hold.photo.is_some(),
                    "attempt": o.attempt,
                    "plant": plant_of(o),
                    "since": rfc3339(o.updated_at),
                    "actions": allowed_for(operator, o),
                }))
            })
            .collect();
        Ok(serde_json::json!({
            "orders": listed,
            "has_more": orders.len() >= FLAGS_LISTED,
        }))
    }

    /// Takes `action` on the order once per `key`: a repeated request gets
    /// the first response again, the key with another request a 422.
    pub async fn act(
        &self,
        operator: &Operator,
        id: &OrderId,
        action: &Action,
        key: &str,
    ) -> Result<Answer, ApiError> {
        let fingerprint = action.fingerprint(id);
        let scope = ops_scope(&operator.id);
        if let Some(earlier) = self.store.ops_request(&scope, key).await? {
            return replay_or_refuse(earlier.request_hash == fingerprint, earlier.response);
        }
        for _ in 0..ACT_ATTEMPTS {
            let observed = self.order_for(operator, id, action.kind()).await?;
            let now = self.clock.now();
            let decided = match action {
                Action::Release { reason, plant } => {
                    observed.release(&operator.id, reason, plant.as_deref(), &self.catalog, now)
                }
                Action::Reprint {
                    jobs,
                    reason,
                    plant,
                } => observed.reprint(
                    &operator.id,
                    reason,
                    jobs,
                    plant.as_deref(),
                    &self.catalog,
                    now,
                ),
                Action::Cancel { reason } => observed.cancel_by_operator(&operator.id, reason, now),
                Action::Resolve { flag, note } => {
                    observed.resolve_flag(&operator.id, *flag, note, now)
                }
            };
            let acted = decided.map_err(|refusal| refused(operator, &observed, refusal))?;
            let mut body = order_view(&acted.next, &allowed_for(operator, &acted.next));
            body["action"] = serde_json::to_value(acted.next.actions.last()).map_err(internal)?;
            let response = StoredResponse {
                status: 200,
                body: serde_json::to_string(&body).map_err(internal)?,
            };
            let write = OpsWrite {
                scope: scope.clone(),
                next: acted.next,
                observed,
                events: acted.events,
                open_jobs: acted.open_jobs,
                idempotency: IdempotencyRecord {
                    key: key.to_string(),
                    request_hash: fingerprint.clone(),
                    response: response.clone(),
                },
            };
            match self.store.act(write).await {
                Ok(PlaceOutcome::Created) => {
                    tracing::info!(
                        operator = operator.id.as_str(),
                        order_id = id.as_str(),
                        action = action.kind().as_str(),
                        "operator action taken"
                    );
                    return Ok(Answer {
                        response,
                        replayed: false,
                    });
                }
                Ok(PlaceOutcome::Replayed(stored)) => return replay_or_refuse(true, stored),
                Ok(PlaceOutcome::KeyReused) => {
                    return replay_or_refuse(false, response);
                }
                // The order moved on (a report, a payment): decide again on
                // what it is now.
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

pub(crate) fn replay_or_refuse(
    same_request: bool,
    stored: StoredResponse,
) -> Result<Answer, ApiError> {
    if same_request {
        Ok(Answer {
            response: stored,
            replayed: true,
        })
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for another request: send a new key",
        ))
    }
}

/// 409 (not now: with what this operator may do instead) or 422 (the
/// request names something wrong).
fn refused(operator: &Operator, order: &Order, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotNow { message, .. } => {
            let allowed: Vec<&str> = allowed_for(operator, order)
                .iter()
                .map(|a| a.as_str())
                .collect();
            ApiError::new(StatusCode::CONFLICT, "action_not_allowed", message).with_details(
                serde_json::json!({ "state": order.state, "allowed_actions": allowed }),
            )
        }
        Refusal::Invalid { field, message } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{field}: {message}"),
        )
        .with_details(serde_json::json!({ "field": field })),
    }
}
