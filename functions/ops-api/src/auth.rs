//! Operator keys: `Authorization: Bearer pwop_<env>_<keyid>_<secret>` to
//! the operator it belongs to. A tenant's key is refused with a 401 that
//! says so. Every request reads the key and the operator (two reads: the
//! operator API is low volume, and a revoked key or a changed role takes
//! effect at once).

use axum::http::{HeaderMap, StatusCode};
use order_api::ApiError;
use order_api::request::bearer;
use printworks::domain::operator::Operator;
use printworks::domain::tenant::{KeyKind, PresentedKey};
use printworks::ports::OperatorStore;

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid operator key is required: Authorization: Bearer pwop_<env>_<keyid>_<secret> \
         (printworks operator add prints one)",
    )
}

/// The operator of the request's key, or 401.
pub async fn authenticate(
    headers: &HeaderMap,
    env: &str,
    store: &dyn OperatorStore,
) -> Result<Operator, ApiError> {
    let raw = bearer(headers).ok_or_else(unauthorized)?;
    let presented = PresentedKey::parse(raw).map_err(|_| unauthorized())?;
    if presented.kind != KeyKind::Operator {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a tenant's API key (pw_...) is not an operator key: tenants use /v1/orders",
        ));
    }
    if presented.env != env {
        return Err(unauthorized());
    }
    let record = store
        .operator_key(&presented.key_id)
        .await?
        .ok_or_else(unauthorized)?;
    if !presented.matches_operator(&record) {
        return Err(unauthorized());
    }
    store
        .operator(&record.operator_id)
        .await?
        .ok_or_else(unauthorized)
}
