//! The customer's own changes to an order: `PUT
//! /v1/orders/{id}/items/{line}/images/{index}` (replace a photo) and
//! `PATCH /v1/orders/{id}` (the shipping address and method, the
//! customer's e-mail and phone). Each parses its body as at placement,
//! lets the domain decide ([`Order::replace_image`],
//! [`Order::change_details`]) and writes the order with its events and the
//! request's `Idempotency-Key` in one transaction (`OpsStore::act`, in the
//! tenant's key scope, where its placements are too); a lost race decides
//! again on the order as it is now.

use crate::App;
use crate::auth::{Caller, caller};
use crate::error::ApiError;
use crate::handlers::{order_body, order_id};
use crate::request::{idempotency_key, json_body, stored_to_response, typed};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use printworks::domain::catalog::Catalog;
use printworks::domain::changes::{Allowed, ChangeRefusal, Changed};
use printworks::domain::order::{
    Address, AddressRequest, Customer, CustomerRequest, FieldError, ImageRequest, ImageSource,
    ItemImage, Order, OrderId, Shipping, ShippingRequest, find_server_only_field,
};
use printworks::domain::upload::{SNIFF_BYTES, sniff};
use printworks::ports::{IdempotencyRecord, OpsWrite, PlaceOutcome, StoreError, StoredResponse};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use tracing::Span;

/// Lost races with other writers of the order before the client is told
/// to retry.
const CHANGE_ATTEMPTS: u32 = 5;

fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::from(StoreError::Unexpected(e.into()))
}

fn allowed_names(allowed: &[Allowed]) -> Vec<serde_json::Value> {
    allowed
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect()
}

/// 409 with the actions allowed now, 404 for a photo the order does not
/// have, 422 for a request that names something wrong.
pub fn refused(order: &Order, refusal: ChangeRefusal) -> ApiError {
    match refusal {
        ChangeRefusal::NotNow { message, allowed } => ApiError::new(
            StatusCode::CONFLICT,
            "action_not_allowed",
            message,
        )
        .with_details(
            serde_json::json!({ "state": order.state, "allowed_actions": allowed_names(&allowed) }),
        ),
        ChangeRefusal::TotalWouldChange {
            message,
            from,
            to,
            allowed,
        } => ApiError::new(StatusCode::CONFLICT, "total_would_change", message).with_details(
            serde_json::json!({
                "state": order.state,
                "total": from,
                "total_after_change": to,
                "allowed_actions": allowed_names(&allowed),
            }),
        ),
        ChangeRefusal::NoSuchImage { message } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
        }
        ChangeRefusal::Invalid { field, message } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field}: {message}"),
        )
        .with_details(serde_json::json!([{ "field": field, "message": message }])),
    }
}

fn validation_failed(errors: Vec<FieldError>, prefix: &str) -> ApiError {
    let errors: Vec<FieldError> = errors
        .into_iter()
        .map(|e| FieldError {
            field: if e.field.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", e.field)
            },
            message: e.message,
        })
        .collect();
    let first = errors
        .first()
        .map(|e| format!("{}: {}", e.field, e.message))
        .unwrap_or_default();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", first)
        .with_details(serde_json::to_value(&errors).unwrap_or_default())
}

/// The body as JSON, refusing a price, total or state anywhere in it (422
/// `server_computed_field`) before its shape is read.
fn change_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let value = json_body(headers, body, false)?;
    if let Some(field) = find_server_only_field(&value) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "server_computed_field",
            format!(
                "{field}: prices, totals, ids and states are computed by the server and cannot be changed"
            ),
        ));
    }
    typed(value)
}

/// The request's fingerprint for its idempotency key: the order, the
/// route's target and the body as read, canonical.
fn fingerprint(order: &OrderId, target: &str, request: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let canonical =
        serde_json::json!({ "order": order.as_str(), "target": target, "request": request });
    hex::encode(Sha256::digest(canonical.to_string()))
}

/// Reads the order, decides with `decide` and writes what it decided once
/// per `key`; decided again if the order changed in between.
async fn change(
    app: &App,
    who: &Caller,
    id: &OrderId,
    key: &str,
    fingerprint: String,
    decide: impl Fn(&Order) -> Result<Changed, ApiError>,
) -> Result<Response, ApiError> {
    let scope = who.tenant.id.to_string();
    if let Some(earlier) = app.actions.ops_request(&scope, key).await? {
        return replay_or_refuse(earlier.request_hash == fingerprint, earlier.response);
    }
    for _ in 0..CHANGE_ATTEMPTS {
        let observed = app
            .orders
            .get(&who.tenant.id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("order"))?;
        let changed = decide(&observed)?;
        let Some(next) = changed.next else {
            // Nothing to change: the order as it is.
            return Ok(axum::Json(order_body(&observed)?).into_response());
        };
        let response = StoredResponse {
            status: 200,
            body: serde_json::to_string(&order_body(&next)?).map_err(internal)?,
        };
        let write = OpsWrite {
            scope: scope.clone(),
            next,
            observed,
            events: changed.events,
            open_jobs: Default::default(),
            idempotency: IdempotencyRecord {
                key: key.to_string(),
                request_hash: fingerprint.clone(),
                response: response.clone(),
            },
        };
        match app.actions.act(write).await {
            Ok(PlaceOutcome::Created) => {
                tracing::info!("order changed by the customer");
                return Ok(stored_to_response(response, false));
            }
            Ok(PlaceOutcome::Replayed(stored)) => return replay_or_refuse(true, stored),
            Ok(PlaceOutcome::KeyReused) => return replay_or_refuse(false, response),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict.into())
}

fn replay_or_refuse(same_request: bool, stored: StoredResponse) -> Result<Response, ApiError> {
    if same_request {
        Ok(stored_to_response(stored, true))
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for another request: send a new key",
        ))
    }
}

/// `{line}` and `{index}` of the path; anything else names no photo.
fn photo_of_path(raw: &str, what: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>()
        .map_err(|_| ApiError::not_found(&format!("{what} {raw:?}")))
}

#[tracing::instrument(skip_all, fields(tenant, order_id))]
pub async fn replace_image(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = caller(&headers, &app.config.env, app.tenants.as_ref(), &app.keys).await?;
    Span::current().record("tenant", who.tenant.id.as_str());
    let Path((id, line, index)) = path.map_err(|_| ApiError::not_found("order"))?;
    let id = order_id(Ok(Path(id)))?;
    let (line, index) = (
        photo_of_path(&line, "item")?,
        photo_of_path(&index, "image")?,
    );
    let key = idempotency_key(&headers)?;
    let request: ImageRequest = change_body(&headers, body)?;
    let image = ItemImage::parse(&request, &who.tenant.id)
        .map_err(|errors| validation_failed(errors, "image"))?;
    // Another tenant's order is not found, whatever the photo.
    app.orders
        .get(&who.tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    check_upload(&app, &image).await?;
    let print = fingerprint(&id, &format!("items/{line}/images/{index}"), &request);
    let now = app.clock.now();
    change(&app, &who, &id, &key, print, |order| {
        order
            .replace_image(line, index, image.clone(), &who.key_id, now)
            .map_err(|refusal| refused(order, refusal))
    })
    .await
}

/// An upload must be complete and a photo we print (JPEG or PNG), or the
/// customer is told now rather than by a hold later. A URL is read when
/// the order is rendered.
async fn check_upload(app: &App, image: &ItemImage) -> Result<(), ApiError> {
    let ImageSource::Upload { upload_id, key } = &image.source else {
        return Ok(());
    };
    match app.blobs.get_head(key, SNIFF_BYTES).await? {
        None => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "upload_missing",
            format!(
                "upload_id: {upload_id} has no photo yet: PUT the file to the upload URL from POST /v1/uploads first"
            ),
        )),
        Some(head) => match sniff(&head) {
            Ok(_) => Ok(()),
            Err(looks_like) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_image",
                format!("upload_id: the upload is {looks_like}, not a JPEG or PNG photo"),
            )),
        },
    }
}

/// `Some(None)` for a field sent as `null` (remove it), `None` if absent.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /v1/orders/{id}` as the client sends it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    #[serde(default)]
    customer: Option<ContactChange>,
    #[serde(default)]
    shipping: Option<ShippingChange>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ContactChange {
    #[serde(default)]
    email: Option<String>,
    /// `null` removes the phone number.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    phone: Option<Option<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ShippingChange {
    /// The whole new address.
    #[serde(default)]
    address: Option<AddressRequest>,
    #[serde(default)]
    method: Option<String>,
}

fn address_request(address: &Address) -> AddressRequest {
    AddressRequest {
        name: address.name.clone(),
        company: address.company.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        postal_code: address.postal_code.clone(),
        city: address.city.clone(),
        country: address.country.to_string(),
    }
}

impl ChangeRequest {
    fn is_empty(&self) -> bool {
        let contact = self
            .customer
            .as_ref()
            .is_none_or(|c| c.email.is_none() && c.phone.is_none());
        let shipping = self
            .shipping
            .as_ref()
            .is_none_or(|s| s.address.is_none() && s.method.is_none());
        contact && shipping
    }

    /// The order's contact and shipping with this change applied, parsed
    /// as at placement (the tenant's countries, the country's postal code).
    fn apply(
        &self,
        order: &Order,
        who: &Caller,
        catalog: &Catalog,
    ) -> Result<(Customer, Shipping), ApiError> {
        let contact = self.customer.as_ref();
        let customer = CustomerRequest {
            name: order.customer.name.clone(),
            email: contact
                .and_then(|c| c.email.clone())
                .unwrap_or_else(|| order.customer.email.clone()),
            phone: match contact.and_then(|c| c.phone.clone()) {
                Some(phone) => phone,
                None => order.customer.phone.clone(),
            },
        };
        let customer =
            Customer::parse(&customer).map_err(|errors| validation_failed(errors, "customer"))?;
        let change = self.shipping.as_ref();
        let shipping = ShippingRequest {
            method: change
                .and_then(|s| s.method.clone())
                .unwrap_or_else(|| order.shipping.method.as_str().to_string()),
            address: change
                .and_then(|s| s.address.clone())
                .unwrap_or_else(|| address_request(&order.shipping.address)),
        };
        let shipping = Shipping::parse(&shipping, &who.tenant, catalog)
            .map_err(|errors| validation_failed(errors, "shipping"))?;
        Ok((customer, shipping))
    }
}

#[tracing::instrument(skip_all, fields(tenant, order_id))]
pub async fn change_order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = caller(&headers, &app.config.env, app.tenants.as_ref(), &app.keys).await?;
    Span::current().record("tenant", who.tenant.id.as_str());
    let id = order_id(id)?;
    let key = idempotency_key(&headers)?;
    let request: ChangeRequest = change_body(&headers, body)?;
    if request.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "nothing to change: send customer.email, customer.phone, shipping.address or shipping.method",
        ));
    }
    let print = fingerprint(&id, "order", &request);
    let now = app.clock.now();
    change(&app, &who, &id, &key, print, |order| {
        let (customer, shipping) = request.apply(order, &who, &app.catalog)?;
        order
            .change_details(customer, shipping, &app.catalog, &who.key_id, now)
            .map_err(|refusal| refused(order, refusal))
    })
    .await
}
