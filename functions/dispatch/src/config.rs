//! dispatch's wiring, in one place for the Lambda and the local runner:
//! [`Config`] (what both set), [`Resources`] (the AWS names only the Lambda
//! has), and the constructors [`Dispatcher::new`] and, with feature `aws`,
//! [`Dispatcher::on_aws`].

use crate::{Dispatcher, PlantQueues};
use printworks::config::{ConfigError, Vars, vars_from};
use printworks::domain::catalog::Catalog;
use printworks::ports::{BlobStore, Clock, OrderStore, ProductionStore};
use std::sync::Arc;
use std::time::Duration;

/// How dispatch behaves, on AWS and locally alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long the print files' presigned GET URLs in a job are valid
    /// (`JOB_URL_TTL_SECS`, default 12 hours; SigV4 allows at most 7 days).
    /// Nothing re-sends a job whose URLs expired before its agent fetched
    /// the files.
    pub job_url_ttl: Duration,
}

impl Config {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Config, ConfigError> {
        Ok(Config {
            job_url_ttl: vars.seconds("JOB_URL_TTL_SECS", 43_200, 300..=604_800)?,
        })
    }
}

impl Default for Config {
    /// What [`Config::from_vars`] gives with nothing set.
    fn default() -> Config {
        Config::from_vars(&vars_from(&[])).expect("the defaults are valid")
    }
}

/// The AWS resources the dispatch Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    pub prints_bucket: String,
    /// A plant's job queue URL with `{plant}` for the plant id
    /// (`PLANT_QUEUE_URL_TEMPLATE`; the queues come from `infra/plant.yaml`).
    pub plant_queue_url_template: String,
    /// `AWS_ENDPOINT_URL` (an emulator): S3 then uses path-style URLs.
    pub endpoint_url: Option<String>,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        let template = vars.required("PLANT_QUEUE_URL_TEMPLATE")?;
        if !template.contains("{plant}") {
            return Err(ConfigError::Invalid {
                name: "PLANT_QUEUE_URL_TEMPLATE",
                reason: "must contain {plant}".into(),
            });
        }
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
            prints_bucket: vars.required("PRINTS_BUCKET")?,
            plant_queue_url_template: template,
            endpoint_url: printworks::config::endpoint_url(vars),
        })
    }

    pub fn plant_queue_url(&self, plant: &str) -> String {
        self.plant_queue_url_template.replace("{plant}", plant)
    }
}

/// The ports dispatch works on.
pub struct Ports {
    pub catalog: Arc<Catalog>,
    pub orders: Arc<dyn OrderStore>,
    pub production: Arc<dyn ProductionStore>,
    pub prints: Arc<dyn BlobStore>,
    pub plants: PlantQueues,
    pub clock: Arc<dyn Clock>,
}

impl Dispatcher {
    pub fn new(config: Config, ports: Ports) -> Dispatcher {
        Dispatcher {
            catalog: ports.catalog,
            orders: ports.orders,
            production: ports.production,
            prints: ports.prints,
            plants: ports.plants,
            clock: ports.clock,
            url_ttl: config.job_url_ttl,
        }
    }

    /// The Lambda's dispatcher: DynamoDB, the prints bucket, one SQS queue
    /// per plant of the built-in catalog, the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(
        sdk: &printworks::adapters::aws::SdkConfig,
        config: Config,
        aws: &Resources,
    ) -> Dispatcher {
        use printworks::adapters::aws::{dynamodb::DynamoStore, s3::S3Blobs, sqs::SqsQueue};
        let catalog = Arc::new(Catalog::builtin().clone());
        let store = Arc::new(DynamoStore::from_sdk(sdk, &aws.orders_table));
        let plants = PlantQueues::for_plants(catalog.plants.keys(), |plant| {
            Arc::new(SqsQueue::from_sdk(sdk, aws.plant_queue_url(plant)))
        });
        let prints = S3Blobs::from_sdk(sdk, &aws.prints_bucket, aws.endpoint_url.is_some());
        let ports = Ports {
            catalog,
            orders: store.clone(),
            production: store,
            prints: Arc::new(prints),
            plants,
            clock: Arc::new(printworks::clock::SystemClock),
        };
        Dispatcher::new(config, ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_needs_a_plant_placeholder() {
        let err = Resources::from_vars(&vars_from(&[
            ("ORDERS_TABLE", "t"),
            ("PRINTS_BUCKET", "p"),
            ("PLANT_QUEUE_URL_TEMPLATE", "https://sqs/plant-jobs"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("{plant}"), "{err}");
        let aws = Resources::from_vars(&vars_from(&[
            ("ORDERS_TABLE", "t"),
            ("PRINTS_BUCKET", "p"),
            (
                "PLANT_QUEUE_URL_TEMPLATE",
                "https://sqs.eu-central-1.amazonaws.com/1/plant-{plant}-jobs",
            ),
        ]))
        .unwrap();
        assert_eq!(
            aws.plant_queue_url("muc"),
            format!(
                "https://sqs.eu-central-1.amazonaws.com/1/{}",
                printworks::topology::plant_jobs_queue("muc")
            )
        );
        assert_eq!(Config::default().job_url_ttl, Duration::from_secs(43_200));
        let err = Config::from_vars(&vars_from(&[("JOB_URL_TTL_SECS", "700000")])).unwrap_err();
        assert!(err.to_string().contains("JOB_URL_TTL_SECS"), "{err}");
        assert_eq!(
            Resources::from_vars(&vars_from(&[
                ("ORDERS_TABLE", "t"),
                ("PLANT_QUEUE_URL_TEMPLATE", "{plant}")
            ])),
            Err(ConfigError::Missing("PRINTS_BUCKET"))
        );
    }
}
