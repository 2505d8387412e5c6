//! The payment-webhook Lambda: wiring only, built once per cold start
//! ([`payment_webhook::Webhooks::on_aws`]); the secrets are read from
//! Secrets Manager and re-read every few minutes, so a rotation needs no
//! deployment.

use payment_webhook::{Resources, Webhooks, router};
use printworks::adapters::aws::load_sdk_config;
use printworks::config::process_env;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    printworks::telemetry::init();
    let aws = Resources::from_vars(&process_env())?;
    let webhooks = Webhooks::on_aws(&load_sdk_config().await, &aws);
    lambda_http::run(router(Arc::new(webhooks))).await
}
