//! payment-webhook: `POST /v1/payments/{provider}/webhook`, the payment
//! providers' signed notifications (Stripe, Adyen).
//!
//! # Layout
//!
//! - [`routes`] / [`router`] / [`handle`]: the one route, as order-api does
//!   it (the Lambda, `printworks up` and the tests run the same router).
//! - [`Webhooks::receive`]: secrets → the provider's verification
//!   (`printworks::webhooks`) → every event applied → the provider's
//!   acknowledgement. A refused request changes nothing.
//! - [`Webhooks::apply`]: one event: find the order (our reference, else
//!   the provider's payment id seen before), let the domain decide
//!   (`Order::apply_payment`), and write the event's record, the order and
//!   the outbox events in one transaction. The record is conditional on
//!   not existing, the order on its version: a duplicate, also a concurrent
//!   one, has no effect, and a lost race is decided again on fresh state.
//! - [`config`]: [`Resources`] and the constructors [`Webhooks::new`]
//!   (local runner, tests) and `Webhooks::on_aws` (Lambda).

pub mod config;
pub use config::Resources;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use http::Method;
use printworks::domain::payment::{
    PaymentEventKind, PaymentNotification, PaymentOutcome, PaymentReference,
};
use printworks::ports::{
    Clock, OrderStore, PaymentRecord, PaymentStore, PaymentWrite, PaymentWriteOutcome,
    SecretSource, StoreError,
};
use printworks::retry::{self, Attempt};
use printworks::webhooks::{WebhookError, WebhookSecrets};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Provider notifications are small; Stripe's largest events stay far below.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long secrets are used before they are read again.
pub const SECRETS_TTL: Duration = Duration::from_secs(300);
/// Lost races of one event before the request fails (and the provider
/// sends it again).
const MAX_CONFLICTS: u32 = 8;

/// What the handler needs, built once per cold start.
pub struct Webhooks {
    pub orders: Arc<dyn OrderStore>,
    pub payments: Arc<dyn PaymentStore>,
    pub secrets: Arc<dyn SecretSource>,
    pub clock: Arc<dyn Clock>,
    cached: Mutex<Option<(Instant, WebhookSecrets)>>,
}

/// What happened to one provider event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded with this outcome (`applied`, `no_change`, a flag code, `unmatched`).
    Recorded(String),
    /// Recorded before: nothing was written.
    Duplicate,
    /// A type we do not act on: acknowledged, logged, not stored.
    Ignored,
}

impl Webhooks {
    pub fn new(
        orders: Arc<dyn OrderStore>,
        payments: Arc<dyn PaymentStore>,
        secrets: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
    ) -> Webhooks {
        Webhooks {
            orders,
            payments,
            secrets,
            clock,
            cached: Mutex::new(None),
        }
    }

    async fn current_secrets(&self) -> Result<WebhookSecrets, StoreError> {
        if let Some((at, secrets)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < SECRETS_TTL
        {
            return Ok(secrets.clone());
        }
        let fresh = self.secrets.webhook_secrets().await?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// Verifies one request and applies its events; the provider's
    /// acknowledgement once all are stored.
    pub async fn receive(
        &self,
        provider: &str,
        header: &(dyn Fn(&str) -> Option<String> + Sync),
        body: &[u8],
    ) -> Result<printworks::webhooks::Acknowledgement, Refusal> {
        let secrets = self.current_secrets().await.map_err(Refusal::Store)?;
        let provider = secrets.provider(provider).map_err(Refusal::Webhook)?;
        let events = provider
            .verify(header, body, self.clock.now())
            .map_err(Refusal::Webhook)?;
        for event in &events {
            let applied = self.apply(event).await.map_err(Refusal::Store)?;
            tracing::info!(
                provider = provider.name(),
                event_id = %event.event_id,
                event_type = %event.event_type,
                outcome = ?applied,
                "payment event"
            );
        }
        Ok(provider.acknowledgement())
    }

    /// Applies one verified event (see the crate docs).
    pub async fn apply(&self, event: &PaymentNotification) -> Result<Applied, StoreError> {
        if event.kind == PaymentEventKind::Unknown {
            return Ok(Applied::Ignored);
        }
        // Someone else may write the order (or this very event) in between:
        // then read again and decide again.
        retry::on_conflict(MAX_CONFLICTS, || async {
            if self
                .payments
                .payment_record(&event.provider, &event.event_id)
                .await?
                .is_some()
            {
                return Ok(Applied::Duplicate);
            }
            let now = self.clock.now();
            let mut record = PaymentRecord {
                provider: event.provider.clone(),
                event_id: event.event_id.clone(),
                event_type: event.event_type.clone(),
                outcome: String::new(),
                order: None,
                received_at: now,
                notification: event.clone(),
            };
            let write = match self.find_order(event).await? {
                None => {
                    tracing::warn!(
                        provider = %event.provider,
                        event_id = %event.event_id,
                        "payment event for no known order; kept as unmatched"
                    );
                    record.outcome = "unmatched".into();
                    PaymentWrite {
                        record,
                        order: None,
                        events: Vec::new(),
                        payment_index: None,
                    }
                }
                Some(order) => {
                    let decision = order.apply_payment(event, now);
                    record.outcome = decision.outcome.code().to_string();
                    record.order = Some(PaymentReference::of(&order).to_string());
                    // Another merchant's payment is not indexed to the order.
                    let ours = !matches!(decision.outcome, PaymentOutcome::Refused(_));
                    PaymentWrite {
                        record,
                        payment_index: event
                            .payment_id
                            .clone()
                            .filter(|_| ours)
                            .map(|p| (p, order.tenant.clone(), order.id.clone())),
                        order: decision.next.map(|next| (next, order)),
                        events: decision.events,
                    }
                }
            };
            let outcome = write.record.outcome.clone();
            match self.payments.record_payment(write).await {
                Ok(PaymentWriteOutcome::Recorded) => Ok(Applied::Recorded(outcome)),
                Ok(PaymentWriteOutcome::Duplicate) => Ok(Applied::Duplicate),
                Err(e) => Err(Attempt::store(e)),
            }
        })
        .await
    }

    async fn find_order(
        &self,
        event: &PaymentNotification,
    ) -> Result<Option<printworks::domain::order::Order>, StoreError> {
        let by_reference = event.reference.as_deref().and_then(PaymentReference::parse);
        let target = match (by_reference, &event.payment_id) {
            (Some(r), _) => Some((r.tenant, r.order)),
            (None, Some(payment_id)) => {
                self.payments
                    .order_for_payment(&event.provider, payment_id)
                    .await?
            }
            (None, None) => None,
        };
        match target {
            Some((tenant, order)) => self.orders.get(&tenant, &order).await,
            None => Ok(None),
        }
    }
}

/// Why a request was not acknowledged.
#[derive(Debug)]
pub enum Refusal {
    /// The sender's fault: 4xx, nothing changed.
    Webhook(WebhookError),
    /// Ours (store or secrets unavailable): 503, the provider retries.
    Store(StoreError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Refusal::Webhook(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.code(),
                e.to_string(),
            ),
            Refusal::Store(e) => {
                tracing::error!(error = ?e, "payment webhook not stored");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the notification could not be stored; send it again later".to_string(),
                )
            }
        };
        if let Refusal::Webhook(e) = &self {
            tracing::warn!(code = e.code(), reason = %e, "payment webhook refused");
        }
        error_response(status, code, &message)
    }
}

/// The JSON error body every refusal has: `{"error": {"code", "message"}}`.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

type AppState = Arc<Webhooks>;

/// The one route: method, path (OpenAPI syntax) and handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![(
        Method::POST,
        "/v1/payments/{provider}/webhook",
        post(webhook),
    )]
}

/// The webhook router on `app`'s ports.
pub fn router(app: Arc<Webhooks>) -> Router {
    let mut router = Router::new();
    for (_, path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Runs one API Gateway (HTTP API, payload v2) request through the router.
pub async fn handle(router: &Router, request: lambda_http::Request) -> Response {
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[tracing::instrument(skip_all, fields(provider))]
async fn webhook(
    State(app): State<AppState>,
    provider: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    // A provider name that is not UTF-8 names no provider; a body too large
    // or cut off is refused with the same JSON error body as the rest.
    let Ok(Path(provider)) = provider else {
        return Err(Refusal::Webhook(WebhookError::UnknownProvider("?".into())).into_response());
    };
    tracing::Span::current().record("provider", provider.as_str());
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the body must be at most {MAX_BODY_BYTES} bytes"),
            )
        } else {
            error_response(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &rejection.body_text(),
            )
        }
    })?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let ack = app
        .receive(&provider, &header, &body)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((
        StatusCode::OK,
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(ack.content_type),
        )],
        ack.body,
    )
        .into_response())
}

#[cfg(test)]
mod tests;
