//! The events-publisher Lambda: wiring only. The SNS and DynamoDB clients
//! are built once ([`events_publisher::config::publisher_on_aws`],
//! `outbox_on_aws`).

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use events_publisher::{
    Resources,
    config::{outbox_on_aws, publisher_on_aws},
};
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let aws = Resources::from_vars(&process_env())?;
    let sdk = load_sdk_config().await;
    let publisher = &publisher_on_aws(&sdk, &aws);
    let outbox = &outbox_on_aws(&sdk, &aws);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let outcome = events_publisher::handle_and_clear(event.payload, publisher, outbox).await?;
        Ok::<DynamoDbEventResponse, lambda_runtime::Error>(outcome.response())
    }))
    .await
}
