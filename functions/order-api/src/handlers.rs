//! One function per route. Each authenticates, parses its input into domain
//! types, calls the domain and the ports, and maps the outcome to JSON.

use crate::App;
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::request::{
    check_content_type, idempotency_key, json_body, read_body, stored_to_response, typed,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use printworks::domain::money::Money;
use printworks::domain::order::{
    IdempotencyFingerprint, Order, OrderId, OrderRequest, TransitionError, find_server_only_field,
};
use printworks::domain::tenant::Tenant;
use printworks::domain::upload::UploadId;
use printworks::ports::{IdempotencyRecord, NewOrder, PlaceOutcome, StoreError, StoredResponse};
use printworks::retry::{self, Attempt};
use serde::Deserialize;
use std::sync::Arc;
use tracing::Span;

/// Content types a customer may upload, and the largest upload.
pub const UPLOAD_CONTENT_TYPES: &[&str] = &["image/jpeg", "image/png"];
pub const MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;
/// Lost races of a cancellation before the client is told to retry.
const CANCEL_ATTEMPTS: u32 = 3;

async fn tenant_of(app: &App, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    authenticate(headers, &app.config.env, app.tenants.as_ref(), &app.keys).await
}

/// Where `sent` has an array but `typed` (the request as the server read
/// it, serialized again) has an object: serde fills a struct from an array
/// of its fields in order, and the API takes objects only. `None` if the
/// shapes agree.
fn array_for_object(
    sent: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (sent, typed) {
        (Value::Array(_), Value::Object(_)) => Some(if path.is_empty() {
            ".".into()
        } else {
            path.into()
        }),
        (Value::Object(sent), Value::Object(typed)) => sent.iter().find_map(|(key, value)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            typed
                .get(key)
                .and_then(|t| array_for_object(value, t, &here))
        }),
        (Value::Array(sent), Value::Array(typed)) => sent
            .iter()
            .zip(typed)
            .enumerate()
            .find_map(|(i, (s, t))| array_for_object(s, t, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[tracing::instrument(skip_all, fields(tenant))]
pub async fn list_products(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&app, &headers).await?;
    Span::current().record("tenant", tenant.id.as_str());
    let products: Vec<serde_json::Value> = app
        .catalog
        .products()
        .map(|p| {
            let prices: Vec<Money> = tenant.currencies.iter().map(|c| p.unit_price(*c)).collect();
            serde_json::json!({
                "sku": p.sku, "kind": p.kind, "name": p.name, "trim_mm": p.trim_mm, "bleed_mm": p.bleed_mm,
                "wrap_mm": p.wrap_mm, "output_dpi": p.output_dpi, "min_dpi": p.min_dpi,
                "images_per_item": p.images_per_item, "options": p.options, "weight_g": p.weight_g,
                "prices": prices,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "products": products, "prices_are": "net, VAT of the ship-to country is added" })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadRequest {
    content_type: String,
    size_bytes: u64,
}

#[tracing::instrument(skip_all, fields(tenant))]
pub async fn create_upload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&app, &headers).await?;
    Span::current().record("tenant", tenant.id.as_str());
    let request: UploadRequest = typed(json_body(&headers, body, false)?)?;
    if !UPLOAD_CONTENT_TYPES.contains(&request.content_type.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_content_type",
            format!(
                "content_type must be one of {}",
                UPLOAD_CONTENT_TYPES.join(", ")
            ),
        ));
    }
    if !(1..=MAX_UPLOAD_BYTES).contains(&request.size_bytes) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_size",
            format!("size_bytes must be between 1 and {MAX_UPLOAD_BYTES}"),
        ));
    }
    let upload_id = UploadId::new();
    let key = upload_id.key(&tenant.id);
    let presigned = app
        .blobs
        .presign_put(
            &key,
            &request.content_type,
            request.size_bytes,
            app.config.upload_url_ttl,
        )
        .await?;
    tracing::info!(upload_id = upload_id.as_str(), "upload URL issued");
    let body =
        serde_json::json!({ "upload_id": upload_id.as_str(), "key": key, "upload": presigned });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Why an order body could not be parsed, for the client: a field only the
/// server sets, or the path of the first field that is wrong.
fn order_parse_error(headers: &HeaderMap, bytes: Bytes) -> ApiError {
    let value = match json_body(headers, Ok(bytes), false) {
        Ok(value) => value,
        Err(e) => return e,
    };
    if let Some(field) = find_server_only_field(&value) {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "server_computed_field",
            format!(
                "{field}: prices, totals, ids and states are computed by the server and must not be sent"
            ),
        );
    }
    match typed::<OrderRequest>(value) {
        Err(e) => e,
        Ok(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body could not be read",
        ),
    }
}

#[tracing::instrument(skip_all, fields(tenant, order_id))]
pub async fn place_order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&app, &headers).await?;
    Span::current().record("tenant", tenant.id.as_str());
    let key = idempotency_key(&headers)?;
    let bytes = read_body(body)?;
    check_content_type(&headers)?;
    // Fast path: straight into the typed request (unknown fields, and so any
    // client-sent price or state, fail here); the slow path explains why.
    let request: OrderRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(_) => return Err(order_parse_error(&headers, bytes)),
    };
    // Objects only: `{"customer": ["Erika", "erika@example.com"]}` reads as
    // a customer above, and the API does not take that.
    let sent: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Unexpected(e.into()))?;
    let read = serde_json::to_value(&request).map_err(|e| StoreError::Unexpected(e.into()))?;
    if let Some(path) = array_for_object(&sent, &read, "") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("{path}: must be a JSON object"),
        ));
    }
    let fingerprint =
        IdempotencyFingerprint::of(&request).map_err(|e| StoreError::Unexpected(e.into()))?;
    let (order, events) =
        Order::place(&app.catalog, &tenant, &request, app.clock.now()).map_err(|errors| {
            let first = errors
                .first()
                .map(|e| format!("{}: {}", e.field, e.message))
                .unwrap_or_default();
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", first)
                .with_details(serde_json::to_value(&errors).unwrap_or_default())
        })?;
    let response = StoredResponse {
        status: 201,
        body: serde_json::to_string(&order_body(&order)?)
            .map_err(|e| StoreError::Unexpected(e.into()))?,
    };
    let order_id = order.id.clone();
    let new = NewOrder {
        order,
        events,
        idempotency: IdempotencyRecord {
            key,
            request_hash: fingerprint.into(),
            response: response.clone(),
        },
    };
    match app.orders.place(new).await? {
        PlaceOutcome::Created => {
            Span::current().record("order_id", order_id.as_str());
            tracing::debug!("order placed");
            Ok(stored_to_response(response, false))
        }
        PlaceOutcome::Replayed(stored) => Ok(stored_to_response(stored, true)),
        PlaceOutcome::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different body",
        )),
    }
}

/// The order id of the path; one that cannot be an order id (also one that
/// is not UTF-8 once percent-decoded) is an order that does not exist.
pub(crate) fn order_id(id: Result<Path<String>, PathRejection>) -> Result<OrderId, ApiError> {
    let id = id.map_err(|_| ApiError::not_found("order"))?;
    Span::current().record("order_id", id.as_str());
    OrderId::parse(&id).ok_or_else(|| ApiError::not_found("order"))
}

#[tracing::instrument(skip_all, fields(tenant, order_id))]
pub async fn get_order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&app, &headers).await?;
    Span::current().record("tenant", tenant.id.as_str());
    let id = order_id(id)?;
    let order = app
        .orders
        .get(&tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Json(order_body(&order)?).into_response())
}

/// The order as the API shows it: with `checkout` while a provider-paid
/// order waits for its payment (what the storefront passes to the provider)
/// and `actions`, what the caller may do to it now (as Prodigi's API
/// does); without what is the shop's own (the operators' actions, with
/// their ids and reasons, a plant an operator chose, and what the
/// reconciler did).
pub(crate) fn order_body(order: &Order) -> Result<serde_json::Value, ApiError> {
    let mut body = serde_json::to_value(order).map_err(|e| StoreError::Unexpected(e.into()))?;
    let actions = serde_json::to_value(order.customer_actions())
        .map_err(|e| StoreError::Unexpected(e.into()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.remove("plant_choice");
        fields.remove("watch");
        fields.insert("actions".into(), actions);
    }
    // A resolved payment flag says when; who resolved it and their note
    // are the shop's.
    if let Some(flags) = body
        .pointer_mut("/payment_status/flags")
        .and_then(|f| f.as_array_mut())
    {
        for resolved in flags.iter_mut().filter_map(|f| f.get_mut("resolved")) {
            if let Some(resolution) = resolved.as_object_mut() {
                resolution.retain(|k, _| k == "at");
            }
        }
    }
    if let (Some(checkout), Some(fields)) = (order.checkout(), body.as_object_mut()) {
        fields.insert(
            "checkout".into(),
            serde_json::to_value(checkout).map_err(|e| StoreError::Unexpected(e.into()))?,
        );
    }
    Ok(body)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

#[tracing::instrument(skip_all, fields(tenant, order_id))]
pub async fn cancel_order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&app, &headers).await?;
    Span::current().record("tenant", tenant.id.as_str());
    let request: CancelRequest = typed(json_body(&headers, body, true)?)?;
    // Checked as sent (the schema's maxLength and pattern), kept trimmed.
    let sent = request.reason.as_deref().unwrap_or("");
    if sent.chars().count() > 200 || sent.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "reason: at most 200 characters, none of them control characters",
        ));
    }
    let reason = Some(sent.trim())
        .filter(|r| !r.is_empty())
        .unwrap_or("customer_request");
    let id = order_id(id)?;
    // Read, decide, write conditionally on the rank read; a concurrent
    // transition makes the write lose, and we decide again on fresh state.
    retry::on_conflict(CANCEL_ATTEMPTS, || async {
        let order = app
            .orders
            .get(&tenant.id, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("order"))?;
        match order.cancel_by_customer(reason, app.clock.now()) {
            Err(TransitionError::AlreadyCancelled) => Ok(Json(order_body(&order)?).into_response()),
            Err(e @ (TransitionError::NotCancellable(_) | TransitionError::NotAllowed(..))) => {
                let allowed = order.customer_actions();
                let names: Vec<String> = allowed.iter().map(|a| a.describe()).collect();
                let now = if names.is_empty() {
                    "nothing, the order can no longer be changed".to_string()
                } else {
                    names.join(", ")
                };
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_cancellable",
                    format!("{e}; allowed now: {now}"),
                )
                .with_details(serde_json::json!({
                    "state": order.state,
                    "allowed_actions": allowed,
                }))
                .into())
            }
            Ok((next, event)) => {
                app.orders
                    .transition(&next, &order, vec![event])
                    .await
                    .map_err(Attempt::store)?;
                tracing::info!("order cancelled");
                Ok(Json(order_body(&next)?).into_response())
            }
        }
    })
    .await
}

pub async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see infra/openapi.yaml",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::domain::catalog::Catalog;
    use printworks::domain::operator::OperatorId;
    use printworks::domain::order::Hold;
    use printworks::domain::state::OrderState;
    use printworks::testing::paid_order;

    /// A tenant sees the attempt, not the shop's own records of who did
    /// what to its order, nor a plant an operator chose.
    #[test]
    fn the_order_body_keeps_the_operators_records_to_the_shop() {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let mut held = paid_order(&[("poster-30x40", 1)], "DE", now).order;
        held.state = OrderState::OnHold;
        held.hold = Some(Hold {
            reason: "plant down".into(),
            from: OrderState::Rendered,
            photo: None,
            code: None,
        });
        let released = held
            .release(
                &OperatorId::parse("anna").unwrap(),
                "btf makes it",
                Some("btf"),
                Catalog::builtin(),
                now,
            )
            .unwrap()
            .next;
        assert!(!released.actions.is_empty() && released.plant_choice.is_some());
        let body = order_body(&released).unwrap();
        assert_eq!(body["attempt"], 2);
        assert_eq!(body["state"], "rendered");
        assert_eq!(
            body["actions"],
            serde_json::json!([{ "action": "cancel" }, { "action": "change_address" }]),
            "the customer's actions, not the operators'"
        );
        assert!(body.get("plant_choice").is_none(), "{body}");
        assert!(!body.to_string().contains("anna"), "{body}");
        // Nor what the reconciler did (hand-overs, a stuck announcement).
        let idle = released
            .reconcile(
                now + time::Duration::hours(2),
                &printworks::domain::reconcile::Deadlines::default(),
            )
            .expect("idle for two hours")
            .next;
        assert!(idle.watch.is_some());
        let body = order_body(&idle).unwrap();
        assert!(body.get("watch").is_none(), "{body}");

        // A payment flag resolved by an operator: the tenant sees when, not
        // who nor the note.
        let mut flagged = released.clone();
        flagged
            .payment_status
            .get_or_insert_with(Default::default)
            .flags
            .push(printworks::domain::payment::PaymentFlag {
                event_id: "evt_1".into(),
                code: "amount_mismatch".into(),
                message: "1 EUR is not the total".into(),
                at: now,
                resolved: Some(printworks::domain::payment::FlagResolution {
                    operator: "anna".into(),
                    note: "called the bank".into(),
                    at: now,
                }),
            });
        let body = order_body(&flagged).unwrap();
        let resolved = &body["payment_status"]["flags"][0]["resolved"];
        assert_eq!(resolved.as_object().unwrap().len(), 1, "{resolved}");
        assert!(resolved["at"].is_string());
        assert!(!body.to_string().contains("called the bank"), "{body}");
    }
}
