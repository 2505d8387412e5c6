//! The order-api Lambda: wiring only, built once per cold start
//! ([`order_api::App::on_aws`]).

use order_api::{App, Config, Resources, router};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    printworks::telemetry::init();
    let env = process_env();
    let (config, aws) = (Config::from_vars(&env)?, Resources::from_vars(&env)?);
    let app = App::on_aws(&load_sdk_config().await, config, &aws);
    lambda_http::run(router(Arc::new(app))).await
}
