//! The events-publisher Lambda: wiring only. The SNS client is built once.

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::{load_sdk_config, sns::SnsPublisher};
use printworks::config::{AwsResources, process_env};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let resources = AwsResources::for_publisher(&process_env())?;
    let sdk = load_sdk_config().await;
    let publisher = SnsPublisher::from_sdk(&sdk, resources.events_topic_arn.unwrap_or_default());
    let publisher = &publisher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let outcome = events_publisher::handle(event.payload, publisher).await?;
        Ok::<DynamoDbEventResponse, lambda_runtime::Error>(outcome.response())
    }))
    .await
}
