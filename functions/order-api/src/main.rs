//! The order-api Lambda: wiring only. Clients are built once per cold start.

use order_api::{App, router};
use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config, s3::S3Blobs};
use printworks::clock::SystemClock;
use printworks::config::{ApiConfig, AwsResources, process_env};
use printworks::domain::catalog::Catalog;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    printworks::telemetry::init();
    let vars = process_env();
    let config = ApiConfig::from_vars(&vars)?;
    let resources = AwsResources::for_order_api(&vars)?;
    let sdk = load_sdk_config().await;
    let table = resources.orders_table.unwrap_or_default();
    let store = Arc::new(DynamoStore::from_sdk(&sdk, table));
    let blobs = Arc::new(S3Blobs::from_sdk(
        &sdk,
        resources.uploads_bucket.unwrap_or_default(),
        resources.endpoint_url.is_some(),
    ));
    let catalog = Arc::new(Catalog::builtin().clone());
    let app = App::new(
        config,
        catalog,
        store.clone(),
        store,
        blobs,
        Arc::new(SystemClock),
    );
    lambda_http::run(router(Arc::new(app))).await
}
