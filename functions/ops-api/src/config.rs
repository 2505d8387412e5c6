//! ops-api's wiring, in one place for the Lambda and the local runner:
//! [`Config`] (what both set), [`Resources`] (the AWS names only the Lambda
//! has), and the constructors [`App::new`] and, with feature `aws`,
//! [`App::on_aws`].

use crate::App;
use printworks::config::{ConfigError, Vars, vars_from};

/// How the operator API behaves, on AWS and locally alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The environment in operator keys (`pwop_<env>_...`,
    /// `PRINTWORKS_ENV`): a key of another environment is refused.
    pub env: String,
}

impl Config {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Config, ConfigError> {
        // The tenant API's rule for the environment, read the same way.
        let env = order_api::Config::from_vars(vars)?.env;
        Ok(Config { env })
    }

    /// The defaults for the environment `env` (the local runner's `local`).
    pub fn for_env(env: &str) -> Result<Config, ConfigError> {
        Config::from_vars(&vars_from(&[("PRINTWORKS_ENV", env)]))
    }
}

/// The AWS resources the ops-api Lambda uses: the orders table, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
        })
    }
}

impl App {
    /// The Lambda's app: DynamoDB, the built-in catalog and the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(
        sdk: &printworks::adapters::aws::SdkConfig,
        config: Config,
        aws: &Resources,
    ) -> App {
        use printworks::adapters::aws::dynamodb::DynamoStore;
        use printworks::domain::catalog::Catalog;
        use std::sync::Arc;
        let store = Arc::new(DynamoStore::from_sdk(sdk, &aws.orders_table));
        App::new(
            config,
            crate::Ops::new(
                Arc::new(Catalog::builtin().clone()),
                store.clone(),
                Arc::new(printworks::clock::SystemClock),
            ),
            store,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_invalid_variables_are_named() {
        assert_eq!(
            Config::from_vars(&vars_from(&[])),
            Err(ConfigError::Missing("PRINTWORKS_ENV"))
        );
        assert!(Config::for_env("Prod").is_err());
        assert_eq!(Config::for_env("prod").unwrap().env, "prod");
        assert_eq!(
            Resources::from_vars(&vars_from(&[])),
            Err(ConfigError::Missing("ORDERS_TABLE"))
        );
    }
}
