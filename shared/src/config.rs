//! Typed configuration, read once from the environment at start; a missing
//! or bad variable fails fast at start, naming the variable.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads variables through `get`, so tests pass a map instead of touching
/// the process environment.
pub struct Vars<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        match (self.0)(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ConfigError::Missing(name)),
        }
    }

    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn seconds(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = self.optional(name) else {
            return Ok(Duration::from_secs(default));
        };
        let secs: u64 = raw.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("{raw:?} is not a number of seconds"),
        })?;
        if !range.contains(&secs) {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("must be between {} and {}", range.start(), range.end()),
            });
        }
        Ok(Duration::from_secs(secs))
    }
}

pub fn process_env() -> Vars<impl Fn(&str) -> Option<String>> {
    Vars(|name: &str| std::env::var(name).ok())
}

/// What the order API needs, whichever adapters it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The environment in API keys (`pw_<env>_...`): a key of another
    /// environment is refused.
    pub env: String,
    /// How long a presigned upload URL is valid.
    pub upload_url_ttl: Duration,
}

impl ApiConfig {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<ApiConfig, ConfigError> {
        let env = vars.required("PRINTWORKS_ENV")?;
        if env.is_empty() || env.len() > 12 || !env.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ConfigError::Invalid {
                name: "PRINTWORKS_ENV",
                reason: "must be 1-12 lowercase letters".into(),
            });
        }
        let upload_url_ttl = vars.seconds("UPLOAD_URL_TTL_SECONDS", 900, 60..=3600)?;
        Ok(ApiConfig {
            env,
            upload_url_ttl,
        })
    }
}

/// What dispatch needs besides the table and the prints bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchConfig {
    /// A plant's job queue URL with `{plant}` for the plant id.
    pub plant_queue_url_template: String,
    /// How long the print files' presigned GET URLs in a job are valid.
    pub job_url_ttl: Duration,
}

impl DispatchConfig {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<DispatchConfig, ConfigError> {
        let template = vars.required("PLANT_QUEUE_URL_TEMPLATE")?;
        if !template.contains("{plant}") {
            return Err(ConfigError::Invalid {
                name: "PLANT_QUEUE_URL_TEMPLATE",
                reason: "must contain {plant}".into(),
            });
        }
        // SigV4 presigned URLs live at most 7 days.
        let job_url_ttl = vars.seconds("JOB_URL_TTL_SECS", 43_200, 300..=604_800)?;
        Ok(DispatchConfig {
            plant_queue_url_template: template,
            job_url_ttl,
        })
    }

    pub fn plant_queue_url(&self, plant: &str) -> String {
        self.plant_queue_url_template.replace("{plant}", plant)
    }
}

/// What notify needs besides the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Per-tenant, per-channel daily limits (`NOTIFY_DAILY_CAPS`, JSON;
    /// defaults when unset).
    pub caps: crate::domain::notify::DailyCaps,
    /// How long a claim keeps other senders off a message
    /// (`NOTIFY_LEASE_SECS`, default 120).
    pub lease: Duration,
    /// The first back-off of a failed message (`NOTIFY_BACKOFF_SECS`,
    /// default 30), doubled per delivery up to an hour.
    pub backoff: Duration,
    /// The notify queue (`NOTIFY_QUEUE_URL`): failed messages are hidden
    /// there for a back-off before they come back. Unset: the queue's own
    /// visibility timeout.
    pub queue_url: Option<String>,
    /// `SMTP_URL` (`smtp://user:pass@host:587`): send e-mail through the
    /// shop's own mail server instead of SES.
    pub smtp_url: Option<String>,
    /// `SES_CONFIGURATION_SET`: the SES configuration set to send with.
    pub ses_configuration_set: Option<String>,
}

impl NotifyConfig {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<NotifyConfig, ConfigError> {
        let caps = match vars.optional("NOTIFY_DAILY_CAPS") {
            Some(raw) => crate::domain::notify::DailyCaps::parse(&raw).map_err(|reason| {
                ConfigError::Invalid {
                    name: "NOTIFY_DAILY_CAPS",
                    reason,
                }
            })?,
            None => Default::default(),
        };
        Ok(NotifyConfig {
            caps,
            lease: vars.seconds("NOTIFY_LEASE_SECS", 120, 10..=900)?,
            backoff: vars.seconds("NOTIFY_BACKOFF_SECS", 30, 1..=900)?,
            queue_url: vars.optional("NOTIFY_QUEUE_URL"),
            smtp_url: vars.optional("SMTP_URL"),
            ses_configuration_set: vars.optional("SES_CONFIGURATION_SET"),
        })
    }
}

/// The AWS resources the functions use; each reads only what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub orders_table: Option<String>,
    pub uploads_bucket: Option<String>,
    pub events_topic_arn: Option<String>,
    pub prints_bucket: Option<String>,
    /// The Secrets Manager secret with the payment webhook secrets.
    pub payment_secrets_arn: Option<String>,
    /// `AWS_ENDPOINT_URL`, set for the emulator: S3 then uses path-style URLs.
    pub endpoint_url: Option<String>,
}

impl AwsResources {
    pub fn for_order_api<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<AwsResources, ConfigError> {
        Ok(AwsResources {
            orders_table: Some(vars.required("ORDERS_TABLE")?),
            uploads_bucket: Some(vars.required("UPLOADS_BUCKET")?),
            events_topic_arn: None,
            prints_bucket: None,
            payment_secrets_arn: None,
            endpoint_url: vars.optional("AWS_ENDPOINT_URL"),
        })
    }

    pub fn for_render<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<AwsResources, ConfigError> {
        Ok(AwsResources {
            orders_table: Some(vars.required("ORDERS_TABLE")?),
            uploads_bucket: Some(vars.required("UPLOADS_BUCKET")?),
            events_topic_arn: None,
            prints_bucket: Some(vars.required("PRINTS_BUCKET")?),
            payment_secrets_arn: None,
            endpoint_url: vars.optional("AWS_ENDPOINT_URL"),
        })
    }

    pub fn for_payment_webhook<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<AwsResources, ConfigError> {
        Ok(AwsResources {
            orders_table: Some(vars.required("ORDERS_TABLE")?),
            uploads_bucket: None,
            events_topic_arn: None,
            prints_bucket: None,
            payment_secrets_arn: Some(vars.required("PAYMENT_SECRETS_ARN")?),
            endpoint_url: vars.optional("AWS_ENDPOINT_URL"),
        })
    }

    pub fn for_dispatch<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<AwsResources, ConfigError> {
        Ok(AwsResources {
            prints_bucket: Some(vars.required("PRINTS_BUCKET")?),
            ..AwsResources::for_production_events(vars)?
        })
    }

    pub fn for_production_events<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<AwsResources, ConfigError> {
        Ok(AwsResources {
            orders_table: Some(vars.required("ORDERS_TABLE")?),
            uploads_bucket: None,
            events_topic_arn: None,
            prints_bucket: None,
            payment_secrets_arn: None,
            endpoint_url: vars.optional("AWS_ENDPOINT_URL"),
        })
    }

    pub fn for_publisher<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<AwsResources, ConfigError> {
        Ok(AwsResources {
            orders_table: None,
            uploads_bucket: None,
            events_topic_arn: Some(vars.required("EVENTS_TOPIC_ARN")?),
            prints_bucket: None,
            payment_secrets_arn: None,
            endpoint_url: vars.optional("AWS_ENDPOINT_URL"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> Vars<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Vars(move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn missing_and_invalid_variables_are_named() {
        assert_eq!(
            ApiConfig::from_vars(&vars(&[])),
            Err(ConfigError::Missing("PRINTWORKS_ENV"))
        );
        let err = ApiConfig::from_vars(&vars(&[
            ("PRINTWORKS_ENV", "prod"),
            ("UPLOAD_URL_TTL_SECONDS", "soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("UPLOAD_URL_TTL_SECONDS"), "{err}");
        let err = ApiConfig::from_vars(&vars(&[
            ("PRINTWORKS_ENV", "prod"),
            ("UPLOAD_URL_TTL_SECONDS", "86400"),
        ]))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }));
        assert_eq!(
            AwsResources::for_order_api(&vars(&[("ORDERS_TABLE", "t")])),
            Err(ConfigError::Missing("UPLOADS_BUCKET"))
        );
    }

    #[test]
    fn dispatch_needs_a_plant_placeholder() {
        let err = DispatchConfig::from_vars(&vars(&[(
            "PLANT_QUEUE_URL_TEMPLATE",
            "https://sqs/plant-jobs",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("{plant}"), "{err}");
        let c = DispatchConfig::from_vars(&vars(&[(
            "PLANT_QUEUE_URL_TEMPLATE",
            "https://sqs.eu-central-1.amazonaws.com/1/plant-{plant}-jobs",
        )]))
        .unwrap();
        assert_eq!(
            c.plant_queue_url("muc"),
            "https://sqs.eu-central-1.amazonaws.com/1/plant-muc-jobs"
        );
        assert_eq!(c.job_url_ttl, Duration::from_secs(43_200));
        assert_eq!(
            AwsResources::for_dispatch(&vars(&[("ORDERS_TABLE", "t")])),
            Err(ConfigError::Missing("PRINTS_BUCKET"))
        );
    }

    #[test]
    fn notify_caps_are_checked() {
        let err = NotifyConfig::from_vars(&vars(&[("NOTIFY_DAILY_CAPS", "{\"default\": 5}")]))
            .unwrap_err();
        assert!(err.to_string().contains("NOTIFY_DAILY_CAPS"), "{err}");
        let c = NotifyConfig::from_vars(&vars(&[(
            "NOTIFY_DAILY_CAPS",
            r#"{"tenants": {"acme": {"email": 2}}}"#,
        )]))
        .unwrap();
        let acme = crate::domain::tenant::TenantId::parse("acme").unwrap();
        use crate::domain::notify::Channel;
        assert_eq!(c.caps.limit(&acme, Channel::Email), 2);
        assert_eq!(c.lease, Duration::from_secs(120));
        assert_eq!(c.smtp_url, None);
    }

    #[test]
    fn defaults_apply() {
        let c = ApiConfig::from_vars(&vars(&[("PRINTWORKS_ENV", "prod")])).unwrap();
        assert_eq!(c.upload_url_ttl, Duration::from_secs(900));
    }
}
