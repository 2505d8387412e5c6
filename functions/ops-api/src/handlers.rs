//! One function per route: authenticate the operator, read the body, call
//! [`crate::Ops`], map the answer.

use crate::auth::authenticate;
use crate::ops::Action;
use crate::{Answer, App};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use order_api::ApiError;
use order_api::request::{idempotency_key, json_body, stored_to_response, typed};
use printworks::domain::operator::Operator;
use printworks::domain::order::OrderId;
use serde::Deserialize;
use std::sync::Arc;
use tracing::Span;

async fn operator_of(app: &App, headers: &HeaderMap) -> Result<Operator, ApiError> {
    let operator = authenticate(headers, &app.config.env, app.operators.as_ref()).await?;
    Span::current().record("operator", operator.id.as_str());
    Ok(operator)
}

/// The order id of the path; one that cannot be an order id is an order
/// that does not exist.
fn order_id(id: Result<Path<String>, PathRejection>) -> Result<OrderId, ApiError> {
    let id = id.map_err(|_| ApiError::not_found("order"))?;
    Span::current().record("order_id", id.as_str());
    OrderId::parse(&id).ok_or_else(|| ApiError::not_found("order"))
}

fn answer(answer: Answer) -> Response {
    stored_to_response(answer.response, answer.replayed)
}

#[tracing::instrument(skip_all, fields(operator, order_id))]
pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    let id = order_id(id)?;
    Ok(Json(app.ops.show(&operator, &id).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    reason: String,
    #[serde(default)]
    plant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReprintBody {
    jobs: Vec<String>,
    reason: String,
    #[serde(default)]
    plant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: String,
}

/// Authentication, the key, the order id and the body, in the order a
/// client most needs to hear about them; then the action.
async fn act<B: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    action: impl FnOnce(B) -> Action,
) -> Result<Response, ApiError> {
    let operator = operator_of(app, headers).await?;
    let key = idempotency_key(headers)?;
    let id = order_id(id)?;
    let body: B = typed(json_body(headers, body, false)?)?;
    Ok(answer(
        app.ops.act(&operator, &id, &action(body), &key).await?,
    ))
}

#[tracing::instrument(skip_all, fields(operator, order_id))]
pub async fn release(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    act(&app, &headers, id, body, |b: ReleaseBody| Action::Release {
        reason: b.reason,
        plant: b.plant,
    })
    .await
}

#[tracing::instrument(skip_all, fields(operator, order_id))]
pub async fn reprint(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    act(&app, &headers, id, body, |b: ReprintBody| Action::Reprint {
        jobs: b.jobs,
        reason: b.reason,
        plant: b.plant,
    })
    .await
}

#[tracing::instrument(skip_all, fields(operator, order_id))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    act(&app, &headers, id, body, |b: CancelBody| Action::Cancel {
        reason: b.reason,
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    flag: u32,
    note: String,
}

#[tracing::instrument(skip_all, fields(operator, order_id))]
pub async fn resolve(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    act(&app, &headers, id, body, |b: ResolveBody| Action::Resolve {
        flag: b.flag,
        note: b.note,
    })
    .await
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn flags(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    Ok(Json(app.ops.flags(&operator).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn stuck(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    Ok(Json(app.ops.stuck(&operator).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    let request: crate::search::SearchRequest = typed(json_body(&headers, body, false)?)?;
    Ok(Json(app.ops.search(&operator, &request).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn live(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    app.ops.live(operator, &headers).await
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn holds(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    Ok(Json(app.ops.holds(&operator).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn plants(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    Ok(Json(app.ops.plants(&operator).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn stats(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<crate::stats::StatsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("the query string could not be read: {}", e.body_text()),
        )
    })?;
    Ok(Json(app.ops.stats(&operator, &params).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator))]
pub async fn dead_letter_queues(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    Ok(Json(app.ops.dead_letter_queues(&operator).await?).into_response())
}

fn queue_name(queue: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    queue
        .map(|Path(q)| q)
        .map_err(|_| ApiError::not_found("queue"))
}

#[tracing::instrument(skip_all, fields(operator, queue))]
pub async fn dead_letters(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    let queue = queue_name(queue)?;
    Span::current().record("queue", queue.as_str());
    Ok(Json(app.ops.dead_letters(&operator, &queue).await?).into_response())
}

#[tracing::instrument(skip_all, fields(operator, queue))]
pub async fn redrive(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, &headers).await?;
    let key = idempotency_key(&headers)?;
    let queue = queue_name(queue)?;
    Span::current().record("queue", queue.as_str());
    Ok(answer(app.ops.redrive(&operator, &queue, &key).await?))
}

pub async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see infra/openapi.yaml (/v1/ops/...)",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
