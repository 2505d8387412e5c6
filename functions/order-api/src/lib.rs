//! order-api: the HTTP API storefronts and B2B customers call.
//!
//! # Layout
//!
//! - [`routes`] lists every route the router serves (checked against
//!   `infra/openapi.yaml` by a test); [`router`] builds the axum router
//!   from it; [`handle`] runs one API Gateway request through it (what the
//!   Lambda runtime, the tests and the sample events do).
//! - `handlers`: one function per route, thin: parse, call the domain,
//!   call the ports, map the result; `changes`: the customer's own changes
//!   (a photo replaced, the address changed), written with their
//!   `Idempotency-Key`.
//! - `auth`: API key to tenant; `error`: the JSON error body;
//!   [`request`]: reading bodies and idempotency keys (ops-api uses it too).
//! - [`config`]: [`Config`], [`Resources`] and the constructors [`App::new`]
//!   (local runner, tests) and `App::on_aws` (Lambda).
//!
//! The same router serves `printworks up` locally, on the local adapters.

mod auth;
mod changes;
pub mod config;
mod error;
mod handlers;
pub mod request;

pub use config::{Config, Resources};
pub use error::ApiError;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, patch, post, put};
use http::Method;
use printworks::domain::catalog::Catalog;
use printworks::ports::{BlobStore, Clock, OpsStore, OrderStore, TenantStore};
use std::sync::Arc;
use tower::ServiceExt;

/// The largest request body accepted (an order of 50 photo boxes fits).
pub const MAX_BODY_BYTES: usize = 128 * 1024;

/// What the handlers need: configuration and ports, built once per cold start.
pub struct App {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub tenants: Arc<dyn TenantStore>,
    pub orders: Arc<dyn OrderStore>,
    /// The customer's changes, written with their idempotency keys.
    pub actions: Arc<dyn OpsStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub clock: Arc<dyn Clock>,
    keys: auth::KeyCache,
}

impl App {
    pub fn new(
        config: Config,
        catalog: Arc<Catalog>,
        tenants: Arc<dyn TenantStore>,
        orders: Arc<dyn OrderStore>,
        actions: Arc<dyn OpsStore>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
    ) -> App {
        App {
            config,
            catalog,
            tenants,
            orders,
            actions,
            blobs,
            clock,
            keys: auth::KeyCache::default(),
        }
    }
}

type State = Arc<App>;

/// Every route: method, path (OpenAPI syntax) and handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<State>)> {
    vec![
        (Method::GET, "/v1/products", get(handlers::list_products)),
        (Method::POST, "/v1/uploads", post(handlers::create_upload)),
        (Method::POST, "/v1/orders", post(handlers::place_order)),
        (Method::GET, "/v1/orders/{id}", get(handlers::get_order)),
        (
            Method::PATCH,
            "/v1/orders/{id}",
            patch(changes::change_order),
        ),
        (
            Method::PUT,
            "/v1/orders/{id}/items/{line}/images/{index}",
            put(changes::replace_image),
        ),
        (
            Method::POST,
            "/v1/orders/{id}/cancel",
            post(handlers::cancel_order),
        ),
    ]
}

/// The API router on `app`'s ports.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for (_, path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    router
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Runs one API Gateway (HTTP API, payload v2) request through the router.
pub async fn handle(router: &Router, request: lambda_http::Request) -> axum::response::Response {
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
