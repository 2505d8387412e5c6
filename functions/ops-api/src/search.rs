//! `POST /v1/ops/search`: orders by id, the tenant's reference, the
//! customer's e-mail or a parcel's tracking number, narrowed by tenant,
//! state and the days placed; newest first, a page at a time (`next`, an
//! opaque cursor, asks for the following page).
//!
//! A POST, so that an e-mail address is never in a URL (nor in an access
//! log). Shop staff search everything; a plant's operators find their
//! plant's orders only, and never by a customer's e-mail.

use crate::Ops;
use crate::ops::{internal, not_for_role, rfc3339};
use axum::http::StatusCode;
use base64::Engine;
use order_api::ApiError;
use printworks::domain::operator::{Operator, Role};
use printworks::domain::order::OrderId;
use printworks::domain::state::OrderState;
use printworks::domain::tenant::TenantId;
use printworks::ports::SearchQuery;
use serde::Deserialize;
use serde_json::{Value, json};
use time::Date;

/// Orders on a page unless the request says otherwise; at most 100.
const PAGE: usize = 25;

/// The request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub order_id: Option<String>,
    pub reference: Option<String>,
    pub email: Option<String>,
    pub tracking: Option<String>,
    pub tenant: Option<String>,
    pub state: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        message,
    )
}

fn day(name: &str, raw: &str) -> Result<Date, ApiError> {
    Date::parse(raw, &time::format_description::well_known::Iso8601::DATE)
        .ok()
        .filter(|_| raw.len() == 10)
        .ok_or_else(|| invalid(format!("`{name}` must be a day as YYYY-MM-DD, not {raw:?}")))
}

/// A text of at most `max` characters with something in it besides
/// spaces and control characters, trimmed.
fn text(name: &str, raw: &Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw.as_deref() else {
        return Ok(None);
    };
    if raw.chars().count() > max {
        return Err(invalid(format!("`{name}` is longer than {max} characters")));
    }
    if !raw.chars().any(|c| !c.is_whitespace() && !c.is_control()) {
        return Err(invalid(format!(
            "`{name}` is empty: leave it out to search without it"
        )));
    }
    Ok(Some(raw.trim().to_string()))
}

fn cursor_of(order: &printworks::domain::order::Order) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        rfc3339(order.created_at),
        order.id
    ))
}

fn parse_cursor(raw: &str) -> Option<(time::OffsetDateTime, OrderId)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once('|')?;
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some((at, OrderId::parse(id)?))
}

impl Ops {
    /// The orders `request` finds, as `operator` may see them.
    pub async fn search(
        &self,
        operator: &Operator,
        request: &SearchRequest,
    ) -> Result<Value, ApiError> {
        let query = SearchQuery {
            order_id: request
                .order_id
                .as_deref()
                .map(|id| OrderId::parse(id).ok_or_else(|| invalid(format!("`order_id` {id:?} is not an order id (ord_ and 32 hex digits)"))))
                .transpose()?,
            reference: text("reference", &request.reference, 64)?,
            email: text("email", &request.email, 254)?,
            tracking: text("tracking", &request.tracking, 64)?,
            tenant: request
                .tenant
                .as_deref()
                .map(|t| TenantId::parse(t).map_err(|e| invalid(format!("`tenant`: {e}"))))
                .transpose()?,
            state: request
                .state
                .as_deref()
                .map(|s| {
                    OrderState::parse(s).ok_or_else(|| {
                        invalid(format!("`state` {s:?} is not a state: placed, paid, rendered, dispatched, in_production, printed, packed, shipped, on_hold, cancelled"))
                    })
                })
                .transpose()?,
            from: request.from.as_deref().map(|d| day("from", d)).transpose()?,
            to: request.to.as_deref().map(|d| day("to", d)).transpose()?,
            after: request
                .cursor
                .as_deref()
                .map(|c| parse_cursor(c).ok_or_else(|| invalid("`cursor` is not one this API gave".into())))
                .transpose()?,
            limit: request.limit.unwrap_or(PAGE),
        };
        if !(1..=100).contains(&query.limit) {
            return Err(invalid(format!("`limit` is 1 to 100, not {}", query.limit)));
        }
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from > to
        {
            return Err(invalid(format!("`from` ({from}) is after `to` ({to})")));
        }
        let plant = match &operator.role {
            Role::Plant(plant) => {
                if query.email.is_some() {
                    return Err(not_for_role(operator, "search by a customer's e-mail"));
                }
                Some(plant.clone())
            }
            _ => None,
        };
        // A plant's operator: their plant's orders, page by page, filtered
        // here (a page may then show fewer than it could).
        let Some(page) = self.store.search(&query).await.map_err(internal)? else {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "search_unavailable",
                "this deployment keeps no search indexes yet: find an order by its id (GET /v1/ops/orders/{id})",
            ));
        };
        let next = page
            .more
            .then(|| page.orders.last().map(cursor_of))
            .flatten();
        let orders: Vec<Value> = page
            .orders
            .iter()
            .filter(|o| plant.is_none() || o.production.as_ref().map(|p| &p.plant) == plant.as_ref())
            .map(|o| {
                json!({
                    "order_id": o.id, "tenant": o.tenant, "reference": o.reference,
                    "state": o.state, "created_at": rfc3339(o.created_at),
                    "total": o.totals.total,
                    "plant": o.production.as_ref().map(|p| p.plant.clone()),
                    "tracking": o.production.iter().flat_map(|p| p.jobs.iter()).filter_map(|j| j.tracking.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({ "orders": orders, "next": next }))
    }
}
