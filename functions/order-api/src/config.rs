//! order-api's wiring, in one place for the Lambda and the local runner:
//! [`Config`] (what both set), [`Resources`] (the AWS names only the Lambda
//! has), and the constructors [`App::new`] and, with feature `aws`,
//! [`App::on_aws`].

use crate::App;
use printworks::config::{ConfigError, Vars, vars_from};
use std::time::Duration;

/// How the API behaves, on AWS and locally alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The environment in API keys (`pw_<env>_...`, `PRINTWORKS_ENV`,
    /// 1-12 lowercase letters): a key of another environment is refused.
    pub env: String,
    /// How long a presigned upload URL is valid (`UPLOAD_URL_TTL_SECONDS`,
    /// default 900, 60-3600).
    pub upload_url_ttl: Duration,
}

impl Config {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Config, ConfigError> {
        let env = vars.required("PRINTWORKS_ENV")?;
        if env.len() > 12 || !env.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ConfigError::Invalid {
                name: "PRINTWORKS_ENV",
                reason: "must be 1-12 lowercase letters".into(),
            });
        }
        let upload_url_ttl = vars.seconds("UPLOAD_URL_TTL_SECONDS", 900, 60..=3600)?;
        Ok(Config {
            env,
            upload_url_ttl,
        })
    }

    /// The defaults for the environment `env` (the local runner's `local`).
    pub fn for_env(env: &str) -> Result<Config, ConfigError> {
        Config::from_vars(&vars_from(&[("PRINTWORKS_ENV", env)]))
    }
}

/// The AWS resources the order-api Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    pub uploads_bucket: String,
    /// `AWS_ENDPOINT_URL` (an emulator): S3 then uses path-style URLs.
    pub endpoint_url: Option<String>,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
            uploads_bucket: vars.required("UPLOADS_BUCKET")?,
            endpoint_url: printworks::config::endpoint_url(vars),
        })
    }
}

impl App {
    /// The Lambda's app: DynamoDB, the uploads bucket, the built-in
    /// catalog and the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(
        sdk: &printworks::adapters::aws::SdkConfig,
        config: Config,
        aws: &Resources,
    ) -> App {
        use printworks::adapters::aws::{dynamodb::DynamoStore, s3::S3Blobs};
        use printworks::domain::catalog::Catalog;
        use std::sync::Arc;
        let store = Arc::new(DynamoStore::from_sdk(sdk, &aws.orders_table));
        let blobs = S3Blobs::from_sdk(sdk, &aws.uploads_bucket, aws.endpoint_url.is_some());
        App::new(
            config,
            Arc::new(Catalog::builtin().clone()),
            store.clone(),
            store.clone(),
            store,
            Arc::new(blobs),
            Arc::new(printworks::clock::SystemClock),
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
        let err = Config::from_vars(&vars_from(&[
            ("PRINTWORKS_ENV", "prod"),
            ("UPLOAD_URL_TTL_SECONDS", "soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("UPLOAD_URL_TTL_SECONDS"), "{err}");
        let err = Config::from_vars(&vars_from(&[
            ("PRINTWORKS_ENV", "prod"),
            ("UPLOAD_URL_TTL_SECONDS", "86400"),
        ]))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }));
        assert!(Config::for_env("Prod").is_err());
        assert_eq!(
            Resources::from_vars(&vars_from(&[("ORDERS_TABLE", "t")])),
            Err(ConfigError::Missing("UPLOADS_BUCKET"))
        );
    }

    #[test]
    fn defaults_apply() {
        let c = Config::for_env("local").unwrap();
        assert_eq!(c.upload_url_ttl, Duration::from_secs(900));
        assert_eq!(c.env, "local");
    }
}
