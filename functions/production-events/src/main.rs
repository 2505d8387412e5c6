//! The production-events Lambda: wiring only. Clients are built once.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config};
use printworks::clock::SystemClock;
use printworks::config::{AwsResources, process_env};
use production_events::ProductionEvents;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let resources = AwsResources::for_production_events(&process_env())?;
    let sdk = load_sdk_config().await;
    let store = Arc::new(DynamoStore::from_sdk(
        &sdk,
        resources.orders_table.unwrap_or_default(),
    ));
    let handler = ProductionEvents {
        orders: store.clone(),
        production: store,
        clock: Arc::new(SystemClock),
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(handler.handle_sqs(event.payload).await)
    }))
    .await
}
