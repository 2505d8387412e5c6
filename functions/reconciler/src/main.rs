//! The reconciler Lambda: wiring only, built once per cold start
//! ([`reconciler::Reconciler::on_aws`]). Its schedule invokes it every 5
//! minutes with any payload; the answer is the run's report.

use lambda_runtime::{LambdaEvent, service_fn};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use reconciler::{Config, Reconciler, Resources};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    printworks::telemetry::init();
    let vars = process_env();
    let config = Config::from_vars(&vars)?;
    let aws = Resources::from_vars(&vars)?;
    let reconciler = &Reconciler::on_aws(&load_sdk_config().await, &config, &aws);
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let report = reconciler.run().await?;
            Ok::<reconciler::Report, lambda_runtime::Error>(report)
        },
    ))
    .await
}
