//! notify's wiring, in one place for the Lambda and the local runner:
//! [`Config`] (what both set), [`Resources`] (the AWS names only the Lambda
//! has), and the constructors [`Notifier::new`] and, with feature `aws`,
//! [`Notifier::on_aws`]. The channels differ: the Lambda sends e-mail
//! through SES (or `SMTP_URL`) and texts through SNS; `printworks up` into
//! its outbox folder (or `--smtp`). Tenant webhooks go through the
//! SSRF-safe fetcher with [`Config::webhook_policy`] in both.

use crate::{Channels, Notifier};
use printworks::config::{ConfigError, Vars, vars_from};
use printworks::domain::notify::DailyCaps;
use printworks::fetch::FetchPolicy;
use printworks::ports::{Clock, NotificationStore, OrderStore, TenantStore};
use std::sync::Arc;
use std::time::Duration;

/// Deferred messages one sweep sends at most (a scheduled invocation, or
/// one round of the local runner's sweep).
pub const SWEEP_MAX: usize = 500;

/// How notify behaves, on AWS and locally alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Per-tenant, per-channel daily limits (`NOTIFY_DAILY_CAPS`, JSON;
    /// defaults when unset).
    pub caps: DailyCaps,
    /// How long a claim keeps other senders off a message
    /// (`NOTIFY_LEASE_SECS`, default 120).
    pub lease: Duration,
    /// The first back-off of a failed message (`NOTIFY_BACKOFF_SECS`,
    /// default 30), doubled per delivery up to an hour.
    pub backoff: Duration,
    /// `SMTP_URL` (`smtp://user:pass@host:587`): send e-mail through the
    /// shop's own mail server instead of SES (or the local outbox).
    pub smtp_url: Option<String>,
    /// `SES_CONFIGURATION_SET`: the SES configuration set to send with.
    pub ses_configuration_set: Option<String>,
    /// How long a tenant's webhook endpoint gets (`NOTIFY_WEBHOOK_TIMEOUT_SECS`,
    /// default 8, 3 of them to connect): a batch of ten events, each with a
    /// hung webhook, still ends inside the function's 120 s.
    pub webhook_timeout: Duration,
}

impl Config {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Config, ConfigError> {
        let caps = match vars.optional("NOTIFY_DAILY_CAPS") {
            Some(raw) => DailyCaps::parse(&raw).map_err(|reason| ConfigError::Invalid {
                name: "NOTIFY_DAILY_CAPS",
                reason,
            })?,
            None => DailyCaps::default(),
        };
        Ok(Config {
            caps,
            lease: vars.seconds("NOTIFY_LEASE_SECS", 120, 10..=900)?,
            backoff: vars.seconds("NOTIFY_BACKOFF_SECS", 30, 1..=900)?,
            smtp_url: vars.optional("SMTP_URL"),
            ses_configuration_set: vars.optional("SES_CONFIGURATION_SET"),
            webhook_timeout: vars.seconds("NOTIFY_WEBHOOK_TIMEOUT_SECS", 8, 4..=30)?,
        })
    }

    /// The fetch policy of tenant webhooks: https to public addresses only.
    pub fn webhook_policy(&self) -> FetchPolicy {
        FetchPolicy {
            total_timeout: self.webhook_timeout,
            connect_timeout: Duration::from_secs(3),
            ..FetchPolicy::default()
        }
    }
}

impl Default for Config {
    /// What [`Config::from_vars`] gives with nothing set.
    fn default() -> Config {
        Config::from_vars(&vars_from(&[])).expect("the defaults are valid")
    }
}

/// The AWS resources the notify Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    /// The notify queue (`NOTIFY_QUEUE_URL`): a failed message is hidden
    /// there for its back-off before it comes back.
    pub notify_queue_url: String,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
            notify_queue_url: vars.required("NOTIFY_QUEUE_URL")?,
        })
    }
}

/// The stores notify works on.
pub struct Ports {
    pub orders: Arc<dyn OrderStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub ledger: Arc<dyn NotificationStore>,
    pub clock: Arc<dyn Clock>,
}

impl Notifier {
    /// The notifier on `ports`, sending through `channels`, with the
    /// built-in templates.
    pub fn new(config: Config, ports: Ports, channels: Channels) -> anyhow::Result<Notifier> {
        Ok(Notifier {
            orders: ports.orders,
            tenants: ports.tenants,
            ledger: ports.ledger,
            channels,
            templates: Arc::new(crate::templates::Templates::builtin()?),
            caps: config.caps,
            clock: ports.clock,
            lease: config.lease,
            backoff: config.backoff,
        })
    }

    /// The Lambda's notifier: DynamoDB, e-mail through SES (or the shop's
    /// SMTP server when `SMTP_URL` is set), texts through SNS, tenant
    /// webhooks over the SSRF-safe fetcher; and the notify queue, where a
    /// failed message waits out its back-off.
    #[cfg(feature = "aws")]
    pub fn on_aws(
        sdk: &printworks::adapters::aws::SdkConfig,
        config: Config,
        aws: &Resources,
    ) -> anyhow::Result<(Notifier, printworks::adapters::aws::sqs::SqsQueue)> {
        use printworks::adapters::aws::{
            dynamodb::DynamoStore, ses::SesMailer, sms::SnsSms, sqs::SqsQueue,
        };
        use printworks::adapters::smtp::{SmtpConfig, SmtpMailer};
        use printworks::clock::SystemClock;
        use printworks::fetch::UrlFetcher;
        use printworks::ports::Mailer;
        use printworks::webhook_out::HttpWebhooks;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Arc::new(DynamoStore::from_sdk(sdk, &aws.orders_table));
        let mail: Arc<dyn Mailer> = match &config.smtp_url {
            Some(url) => {
                let smtp =
                    SmtpConfig::parse_url(url).map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?;
                Arc::new(SmtpMailer::new(&smtp, clock.clone()).map_err(|e| anyhow::anyhow!(e))?)
            }
            None => Arc::new(SesMailer::from_sdk(
                sdk,
                config.ses_configuration_set.clone(),
                clock.clone(),
            )),
        };
        let channels = Channels {
            mail,
            sms: Arc::new(SnsSms::from_sdk(sdk)),
            webhooks: Arc::new(HttpWebhooks::new(UrlFetcher::new(config.webhook_policy())?)),
        };
        let ports = Ports {
            orders: store.clone(),
            tenants: store.clone(),
            ledger: store,
            clock,
        };
        let queue = SqsQueue::from_sdk(sdk, &aws.notify_queue_url);
        Ok((Notifier::new(config, ports, channels)?, queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_caps_are_checked() {
        let err = Config::from_vars(&vars_from(&[("NOTIFY_DAILY_CAPS", "{\"default\": 5}")]))
            .unwrap_err();
        assert!(err.to_string().contains("NOTIFY_DAILY_CAPS"), "{err}");
        let c = Config::from_vars(&vars_from(&[(
            "NOTIFY_DAILY_CAPS",
            r#"{"tenants": {"acme": {"email": 2}}}"#,
        )]))
        .unwrap();
        let acme = printworks::domain::tenant::TenantId::parse("acme").unwrap();
        use printworks::domain::notify::Channel;
        assert_eq!(c.caps.limit(&acme, Channel::Email), 2);
        assert_eq!(c.lease, Duration::from_secs(120));
        assert_eq!(c.smtp_url, None);
        assert_eq!(
            Config::default().webhook_policy().total_timeout,
            Duration::from_secs(8)
        );
        assert_eq!(
            Resources::from_vars(&vars_from(&[("ORDERS_TABLE", "t")])),
            Err(ConfigError::Missing("NOTIFY_QUEUE_URL"))
        );
    }
}
