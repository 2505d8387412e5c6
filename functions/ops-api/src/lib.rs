//! ops-api: the operator API (`/v1/ops/...`) beside the tenant API, for
//! shop staff (`admin`, `support`: every tenant's orders) and plant
//! operators (`plant:<id>`: their plant's orders), each with an operator
//! key (`printworks operator add`).
//!
//! # Layout
//!
//! - [`routes`] lists every route (checked against `infra/openapi.yaml`);
//!   [`router`] builds the axum router; [`handle`] runs one API Gateway
//!   request through it.
//! - `handlers`: one function per route: authenticate, read the body,
//!   call [`Ops`].
//! - [`Ops`] (`ops`): the actions over the ports, also what
//!   `printworks ops` runs against a deployment's table; `view`: the
//!   order as operators see it.
//! - `auth`: operator key to operator; errors are the tenant API's
//!   ([`order_api::ApiError`]), requests read with [`order_api::request`].
//!
//! On AWS it is a function of its own, with the orders table as its only
//! resource; the same router serves `printworks up` locally.

mod auth;
pub mod config;
pub mod console;
pub mod dead_letters;
mod handlers;
mod live;
mod ops;
pub mod plants;
pub mod search;
pub mod stats;
mod view;

pub use config::{Config, Resources};
pub use ops::{Action, Answer, Ops, allowed_for};
pub use view::order_view;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};
use http::Method;
use printworks::ports::OperatorStore;
use std::sync::Arc;
use tower::ServiceExt;

/// What the handlers need, built once per cold start.
pub struct App {
    pub config: Config,
    pub ops: Ops,
    pub operators: Arc<dyn OperatorStore>,
}

impl App {
    pub fn new(config: Config, ops: Ops, operators: Arc<dyn OperatorStore>) -> App {
        App {
            config,
            ops,
            operators,
        }
    }
}

type State = Arc<App>;

/// Every route: method, path (OpenAPI syntax) and handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<State>)> {
    vec![
        (Method::GET, "/v1/ops/orders/{id}", get(handlers::show)),
        (
            Method::POST,
            "/v1/ops/orders/{id}/release",
            post(handlers::release),
        ),
        (
            Method::POST,
            "/v1/ops/orders/{id}/reprint",
            post(handlers::reprint),
        ),
        (
            Method::POST,
            "/v1/ops/orders/{id}/cancel",
            post(handlers::cancel),
        ),
        (
            Method::POST,
            "/v1/ops/orders/{id}/resolve",
            post(handlers::resolve),
        ),
        (Method::GET, "/v1/ops/flags", get(handlers::flags)),
        (Method::GET, "/v1/ops/stuck", get(handlers::stuck)),
        (Method::GET, "/v1/ops/holds", get(handlers::holds)),
        (Method::POST, "/v1/ops/search", post(handlers::search)),
        (Method::GET, "/v1/ops/stats", get(handlers::stats)),
        (Method::GET, "/v1/ops/plants", get(handlers::plants)),
        (Method::GET, "/v1/ops/live", get(handlers::live)),
        (Method::GET, "/console", get(console::page)),
        (Method::GET, "/console/{file}", get(console::asset)),
        (
            Method::GET,
            "/v1/ops/dlq",
            get(handlers::dead_letter_queues),
        ),
        (
            Method::GET,
            "/v1/ops/dlq/{queue}",
            get(handlers::dead_letters),
        ),
        (
            Method::POST,
            "/v1/ops/dlq/{queue}/redrive",
            post(handlers::redrive),
        ),
    ]
}

/// The operator API's router on `app`'s ports. Only `/v1/ops/...`: merged
/// beside the tenant API locally, its own integration on AWS.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for (_, path, method_router) in routes() {
        router = router.route(path, method_router.fallback(handlers::method_not_allowed));
    }
    router
        .layer(DefaultBodyLimit::max(order_api::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(console::same_origin))
        .with_state(app)
}

/// [`router`] answering any other path with a JSON 404 (the Lambda: API
/// Gateway sends it only `/v1/ops/...`, but a function URL sends all).
pub fn lambda_router(app: Arc<App>) -> Router {
    router(app).fallback(handlers::no_route)
}

/// Runs one API Gateway (HTTP API, payload v2) request through the router.
pub async fn handle(router: &Router, request: lambda_http::Request) -> axum::response::Response {
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
