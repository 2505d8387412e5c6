//! The render Lambda: wiring only. Clients are built once.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config, s3::S3Blobs};
use printworks::clock::SystemClock;
use printworks::config::{AwsResources, process_env};
use printworks::domain::catalog::Catalog;
use printworks::fetch::{FetchPolicy, UrlFetcher};
use printworks::render::Limits;
use render::Renderer;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let vars = process_env();
    let resources = AwsResources::for_render(&vars)?;
    let max_attempts = vars
        .optional("RENDER_MAX_ATTEMPTS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let sdk = load_sdk_config().await;
    let endpoint = resources.endpoint_url.is_some();
    let renderer = Renderer {
        catalog: Arc::new(Catalog::builtin().clone()),
        orders: Arc::new(DynamoStore::from_sdk(
            &sdk,
            resources.orders_table.unwrap_or_default(),
        )),
        uploads: Arc::new(S3Blobs::from_sdk(
            &sdk,
            resources.uploads_bucket.unwrap_or_default(),
            endpoint,
        )),
        prints: Arc::new(S3Blobs::from_sdk(
            &sdk,
            resources.prints_bucket.unwrap_or_default(),
            endpoint,
        )),
        urls: Arc::new(UrlFetcher::new(FetchPolicy::default())?),
        clock: Arc::new(SystemClock),
        limits: Limits::default(),
        max_attempts,
    };
    let renderer = &renderer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(renderer.handle_sqs(event.payload).await)
    }))
    .await
}
