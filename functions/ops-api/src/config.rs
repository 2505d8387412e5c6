//! ops-api's wiring, in one place for the Lambda and the local runner:
//! [`Config`] (what both set), [`Resources`] (the AWS names only the Lambda
//! has), and the constructors [`App::new`] and, with feature `aws`,
//! [`App::on_aws`].

use crate::App;
use printworks::config::{ConfigError, Vars, vars_from};
use std::collections::BTreeMap;

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

/// The AWS resources the ops-api Lambda uses: the orders table, the
/// stack's dead-letter queues and the prints bucket (the order page's
/// previews), and the caps notify sends under (the statistics show the
/// sends against them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    pub prints_bucket: String,
    /// `NOTIFY_DAILY_CAPS`, as notify reads it.
    pub caps: printworks::domain::notify::DailyCaps,
    /// `AWS_ENDPOINT_URL` (an emulator: path-style bucket addresses).
    pub endpoint_url: Option<String>,
    /// `DEAD_LETTER_QUEUES`: `queue=<dead-letter queue URL>`, comma
    /// separated, one per queue of `printworks::topology::STACK_QUEUES`.
    pub dead_letter_queues: BTreeMap<String, String>,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        let orders_table = vars.required("ORDERS_TABLE")?;
        let raw = vars.required("DEAD_LETTER_QUEUES")?;
        let dead_letter_queues = raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((queue, url)) if !queue.trim().is_empty() && url.starts_with("http") => {
                    Ok((queue.trim().to_string(), url.trim().to_string()))
                }
                _ => Err(ConfigError::Invalid {
                    name: "DEAD_LETTER_QUEUES",
                    reason: format!("{pair:?} is not queue=<dead-letter queue URL>"),
                }),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let caps = match vars.optional("NOTIFY_DAILY_CAPS") {
            Some(raw) => printworks::domain::notify::DailyCaps::parse(&raw).map_err(|reason| {
                ConfigError::Invalid {
                    name: "NOTIFY_DAILY_CAPS",
                    reason,
                }
            })?,
            None => printworks::domain::notify::DailyCaps::default(),
        };
        Ok(Resources {
            orders_table,
            prints_bucket: vars.required("PRINTS_BUCKET")?,
            caps,
            endpoint_url: printworks::config::endpoint_url(vars),
            dead_letter_queues,
        })
    }
}

impl App {
    /// The Lambda's app: DynamoDB, the dead-letter queues on SQS, the
    /// built-in catalog and the system clock.
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
            crate::Ops {
                dead_letters: Some(Arc::new(
                    printworks::adapters::aws::sqs::SqsDeadLetters::from_sdk(
                        sdk,
                        aws.dead_letter_queues.clone(),
                    ),
                )),
                stats: Some(store.clone()),
                notifications: Some(store.clone()),
                caps: aws.caps.clone(),
                prints: Some(Arc::new(printworks::adapters::aws::s3::S3Blobs::from_sdk(
                    sdk,
                    &aws.prints_bucket,
                    aws.endpoint_url.is_some(),
                ))),
                production: Some(store.clone()),
                idle: Some(store.clone()),
                ..crate::Ops::new(
                    Arc::new(Catalog::builtin().clone()),
                    store.clone(),
                    Arc::new(printworks::clock::SystemClock),
                )
            },
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
        let with = |dlq: &str| {
            Resources::from_vars(&vars_from(&[
                ("ORDERS_TABLE", "orders"),
                ("PRINTS_BUCKET", "prints"),
                ("DEAD_LETTER_QUEUES", dlq),
            ]))
        };
        assert_eq!(
            with("render=https://sqs.eu-central-1.amazonaws.com/1/render-dlq")
                .unwrap()
                .dead_letter_queues["render"],
            "https://sqs.eu-central-1.amazonaws.com/1/render-dlq"
        );
        assert!(matches!(
            with("render"),
            Err(ConfigError::Invalid {
                name: "DEAD_LETTER_QUEUES",
                ..
            })
        ));
    }
}
