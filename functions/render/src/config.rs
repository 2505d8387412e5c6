//! render's wiring, in one place for the Lambda and the local runner:
//! [`Config`] (what both set), [`Resources`] (the AWS names only the Lambda
//! has), and the constructors [`Renderer::new`] and, with feature `aws`,
//! [`Renderer::on_aws`].

use crate::{Renderer, UrlSource};
use printworks::config::{ConfigError, Vars, vars_from};
use printworks::domain::catalog::Catalog;
use printworks::fetch::{FetchPolicy, UrlFetcher};
use printworks::ports::{BlobStore, Clock, OrderStore};
use printworks::render::Limits;
use std::sync::Arc;

/// How render behaves, on AWS and locally alike.
#[derive(Debug, Clone)]
pub struct Config {
    /// After this many deliveries a customer's photo URL that keeps failing
    /// transiently puts the order on hold (`RENDER_MAX_ATTEMPTS`, default 4,
    /// 1-20). Keep it below the render queue's receive limit
    /// (`printworks::topology::RENDER`), or the message is dead-lettered
    /// before the customer hears.
    pub max_attempts: u32,
    /// Pixel and size limits of a source photo.
    pub limits: Limits,
    /// How customers' photo URLs are fetched.
    pub fetch: FetchPolicy,
}

impl Config {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Config, ConfigError> {
        Ok(Config {
            max_attempts: vars.number("RENDER_MAX_ATTEMPTS", 4, 1..=20)?,
            limits: Limits::default(),
            fetch: FetchPolicy::default(),
        })
    }
}

impl Default for Config {
    /// What [`Config::from_vars`] gives with nothing set.
    fn default() -> Config {
        Config::from_vars(&vars_from(&[])).expect("the defaults are valid")
    }
}

/// The AWS resources the render Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    pub uploads_bucket: String,
    pub prints_bucket: String,
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
            prints_bucket: vars.required("PRINTS_BUCKET")?,
            endpoint_url: printworks::config::endpoint_url(vars),
        })
    }
}

/// The ports render works on.
pub struct Ports {
    pub catalog: Arc<Catalog>,
    pub orders: Arc<dyn OrderStore>,
    pub uploads: Arc<dyn BlobStore>,
    pub prints: Arc<dyn BlobStore>,
    pub clock: Arc<dyn Clock>,
}

impl Renderer {
    /// The renderer on `ports`, fetching photo URLs with the SSRF-safe
    /// fetcher as `config` says.
    pub fn new(config: Config, ports: Ports) -> Result<Renderer, printworks::fetch::FetchError> {
        let urls: Arc<dyn UrlSource> = Arc::new(UrlFetcher::new(config.fetch)?);
        Ok(Renderer {
            catalog: ports.catalog,
            orders: ports.orders,
            uploads: ports.uploads,
            prints: ports.prints,
            urls,
            clock: ports.clock,
            limits: config.limits,
            max_attempts: config.max_attempts,
        })
    }

    /// The Lambda's renderer: DynamoDB, the two S3 buckets, the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(
        sdk: &printworks::adapters::aws::SdkConfig,
        config: Config,
        aws: &Resources,
    ) -> Result<Renderer, printworks::fetch::FetchError> {
        use printworks::adapters::aws::{dynamodb::DynamoStore, s3::S3Blobs};
        let path_style = aws.endpoint_url.is_some();
        let ports = Ports {
            catalog: Arc::new(Catalog::builtin().clone()),
            orders: Arc::new(DynamoStore::from_sdk(sdk, &aws.orders_table)),
            uploads: Arc::new(S3Blobs::from_sdk(sdk, &aws.uploads_bucket, path_style)),
            prints: Arc::new(S3Blobs::from_sdk(sdk, &aws.prints_bucket, path_style)),
            clock: Arc::new(printworks::clock::SystemClock),
        };
        Renderer::new(config, ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_limit_is_read_and_checked() {
        assert_eq!(Config::default().max_attempts, 4);
        let c = Config::from_vars(&vars_from(&[("RENDER_MAX_ATTEMPTS", "3")])).unwrap();
        assert_eq!(c.max_attempts, 3);
        let err = Config::from_vars(&vars_from(&[("RENDER_MAX_ATTEMPTS", "0")])).unwrap_err();
        assert!(err.to_string().contains("RENDER_MAX_ATTEMPTS"), "{err}");
        let err = Resources::from_vars(&vars_from(&[
            ("ORDERS_TABLE", "t"),
            ("UPLOADS_BUCKET", "u"),
        ]))
        .unwrap_err();
        assert_eq!(err, ConfigError::Missing("PRINTS_BUCKET"));
    }
}
