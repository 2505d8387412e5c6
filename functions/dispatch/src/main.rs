//! The dispatch Lambda: wiring only. Clients are built once.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use dispatch::{Dispatcher, PlantQueues};
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::sqs::SqsQueue;
use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config, s3::S3Blobs};
use printworks::clock::SystemClock;
use printworks::config::{AwsResources, DispatchConfig, process_env};
use printworks::domain::catalog::Catalog;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let vars = process_env();
    let resources = AwsResources::for_dispatch(&vars)?;
    let config = DispatchConfig::from_vars(&vars)?;
    let sdk = load_sdk_config().await;
    let endpoint = resources.endpoint_url.is_some();
    let store = Arc::new(DynamoStore::from_sdk(
        &sdk,
        resources.orders_table.unwrap_or_default(),
    ));
    let catalog = Arc::new(Catalog::builtin().clone());
    let dispatcher = Dispatcher {
        catalog: catalog.clone(),
        orders: store.clone(),
        production: store,
        prints: Arc::new(S3Blobs::from_sdk(
            &sdk,
            resources.prints_bucket.unwrap_or_default(),
            endpoint,
        )),
        url_ttl: config.job_url_ttl,
        plants: PlantQueues::for_plants(catalog.plants.keys(), |plant| {
            Arc::new(SqsQueue::from_sdk(&sdk, config.plant_queue_url(plant)))
        }),
        clock: Arc::new(SystemClock),
    };
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(dispatcher.handle_sqs(event.payload).await)
    }))
    .await
}
