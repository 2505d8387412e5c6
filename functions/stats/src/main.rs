//! The stats Lambda: wiring only, built once per cold start
//! ([`stats::Stats::on_aws`]).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use stats::{Resources, Stats};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let aws = Resources::from_vars(&process_env())?;
    let handler = &Stats::on_aws(&load_sdk_config().await, &aws);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(handler.handle_sqs(event.payload).await)
    }))
    .await
}
