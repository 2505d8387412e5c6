//! The render Lambda: wiring only, built once per cold start
//! ([`render::Renderer::on_aws`]).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use render::{Config, Renderer, Resources};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let env = process_env();
    let (config, aws) = (Config::from_vars(&env)?, Resources::from_vars(&env)?);
    let renderer = &Renderer::on_aws(&load_sdk_config().await, config, &aws)?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(renderer.handle_sqs(event.payload).await)
    }))
    .await
}
