//! The payment-webhook Lambda: wiring only. Clients are built once per cold
//! start; the secrets are read from Secrets Manager (and re-read every few
//! minutes, so a rotation needs no deployment).

use payment_webhook::{Webhooks, router};
use printworks::adapters::aws::{
    dynamodb::DynamoStore, load_sdk_config, secrets::SecretsManagerSource,
};
use printworks::clock::SystemClock;
use printworks::config::{AwsResources, process_env};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    printworks::telemetry::init();
    let resources = AwsResources::for_payment_webhook(&process_env())?;
    let sdk = load_sdk_config().await;
    let store = Arc::new(DynamoStore::from_sdk(
        &sdk,
        resources.orders_table.unwrap_or_default(),
    ));
    let secrets = Arc::new(SecretsManagerSource::from_sdk(
        &sdk,
        resources.payment_secrets_arn.unwrap_or_default(),
    ));
    let webhooks = Webhooks::new(store.clone(), store, secrets, Arc::new(SystemClock));
    lambda_http::run(router(Arc::new(webhooks))).await
}
