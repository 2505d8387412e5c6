//! The ops-api Lambda: wiring only, built once per cold start
//! ([`ops_api::App::on_aws`]).

use ops_api::{App, Config, Resources, lambda_router};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    printworks::telemetry::init();
    let env = process_env();
    let (config, aws) = (Config::from_vars(&env)?, Resources::from_vars(&env)?);
    let app = App::on_aws(&load_sdk_config().await, config, &aws);
    lambda_http::run(lambda_router(Arc::new(app))).await
}
