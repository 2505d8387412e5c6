//! The notify Lambda: wiring only, built once per cold start
//! ([`notify::Notifier::on_aws`]); [`notify::lambda::invoke`] tells the
//! queue's batches from the schedule's sweep.

use lambda_runtime::{LambdaEvent, service_fn};
use notify::{Config, Notifier, Resources};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let env = process_env();
    let (config, aws) = (Config::from_vars(&env)?, Resources::from_vars(&env)?);
    let (notifier, queue) = Notifier::on_aws(&load_sdk_config().await, config, &aws)?;
    let (notifier, queue) = (&notifier, &queue);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        notify::lambda::invoke(notifier, queue, event.payload).await
    }))
    .await
}
