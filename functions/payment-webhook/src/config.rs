//! payment-webhook's wiring: [`Resources`] (the AWS names only the Lambda
//! has; the function has no settings of its own: secrets are re-read every
//! [`crate::SECRETS_TTL`]) and the constructors [`Webhooks::new`] and, with
//! feature `aws`, [`Webhooks::on_aws`].

use crate::Webhooks;
use printworks::config::{ConfigError, Vars};

/// The AWS resources the payment-webhook Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    /// The Secrets Manager secret with the providers' webhook secrets (its
    /// ARN only: the value is read at cold start and every few minutes, so
    /// it never sits in the function's configuration or a log).
    pub payment_secrets_arn: String,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
            payment_secrets_arn: vars.required("PAYMENT_SECRETS_ARN")?,
        })
    }
}

impl Webhooks {
    /// The Lambda's handler: DynamoDB, Secrets Manager, the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(sdk: &printworks::adapters::aws::SdkConfig, aws: &Resources) -> Webhooks {
        use printworks::adapters::aws::{dynamodb::DynamoStore, secrets::SecretsManagerSource};
        use std::sync::Arc;
        let store = Arc::new(DynamoStore::from_sdk(sdk, &aws.orders_table));
        let secrets = Arc::new(SecretsManagerSource::from_sdk(
            sdk,
            &aws.payment_secrets_arn,
        ));
        Webhooks::new(
            store.clone(),
            store,
            secrets,
            Arc::new(printworks::clock::SystemClock),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::config::vars_from;

    #[test]
    fn the_table_and_the_secret_are_required() {
        assert_eq!(
            Resources::from_vars(&vars_from(&[("ORDERS_TABLE", "t")])),
            Err(ConfigError::Missing("PAYMENT_SECRETS_ARN"))
        );
    }
}
