//! The payment webhook secrets: one Secrets Manager secret whose string is
//! the JSON [`WebhookSecrets`] reads (`{"stripe": [...], "adyen": [...]}`).

use crate::ports::{SecretSource, StoreError};
use crate::webhooks::WebhookSecrets;
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

pub struct SecretsManagerSource {
    client: Client,
    secret_id: String,
}

impl SecretsManagerSource {
    pub fn from_sdk(sdk: &aws_config::SdkConfig, secret_id: impl Into<String>) -> Self {
        SecretsManagerSource {
            client: Client::new(sdk),
            secret_id: secret_id.into(),
        }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn webhook_secrets(&self) -> Result<WebhookSecrets, StoreError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .context("Secrets Manager GetSecretValue")?;
        let raw = out
            .secret_string()
            .ok_or_else(|| anyhow!("the payment secret {} has no string", self.secret_id))?;
        Ok(WebhookSecrets::from_json(raw).context("the payment webhook secret")?)
    }
}
