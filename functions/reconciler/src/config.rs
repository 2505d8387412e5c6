//! The reconciler's wiring, for the Lambda and the local runner alike:
//! [`Config`] (the deadlines), [`Resources`] (the AWS names), the
//! constructor [`Reconciler::new`] and, with feature `aws`,
//! [`Reconciler::on_aws`].

use crate::Reconciler;
use printworks::config::{ConfigError, Vars, vars_from};
use printworks::domain::reconcile::Deadlines;
use printworks::ports::{Clock, EventPublisher, OrderStore, ReconcileStore};
use std::sync::Arc;
use std::time::Duration;

/// How the reconciler behaves, on AWS and locally alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `RECONCILE_OUTBOX_AFTER_SECS` (default 300), `RECONCILE_RENDER_AFTER_SECS`
    /// and `RECONCILE_DISPATCH_AFTER_SECS` (900 each), `JOB_URL_TTL_SECS`
    /// (dispatch's, 43200), `RECONCILE_REFRESH_BEFORE_SECS` (3600), and
    /// `STUCK_AFTER`: `state=duration` and `plant:state=duration`, comma
    /// separated (`dispatched=6h,btf:in_production=3d`), over the
    /// defaults (paid and rendered 1h, dispatched 8h, in_production 2d,
    /// printed and packed 1d).
    pub deadlines: Deadlines,
    /// `RECONCILE_BATCH` (default 200): outbox events, and orders per
    /// state, in one run.
    pub batch: usize,
}

impl Config {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(vars: &Vars<F>) -> Result<Config, ConfigError> {
        let base = Deadlines::default();
        let secs = |d: Duration| d.as_secs();
        let mut deadlines = Deadlines {
            outbox_after: vars.seconds(
                "RECONCILE_OUTBOX_AFTER_SECS",
                secs(base.outbox_after),
                10..=86_400,
            )?,
            render_after: vars.seconds(
                "RECONCILE_RENDER_AFTER_SECS",
                secs(base.render_after),
                60..=86_400,
            )?,
            dispatch_after: vars.seconds(
                "RECONCILE_DISPATCH_AFTER_SECS",
                secs(base.dispatch_after),
                60..=86_400,
            )?,
            job_url_ttl: vars.seconds("JOB_URL_TTL_SECS", secs(base.job_url_ttl), 300..=604_800)?,
            refresh_before: vars.seconds(
                "RECONCILE_REFRESH_BEFORE_SECS",
                secs(base.refresh_before),
                60..=86_400,
            )?,
            ..base
        };
        if deadlines.refresh_before >= deadlines.job_url_ttl {
            return Err(ConfigError::Invalid {
                name: "RECONCILE_REFRESH_BEFORE_SECS",
                reason: format!(
                    "{} s is not shorter than the URLs' lifetime (JOB_URL_TTL_SECS, {} s)",
                    deadlines.refresh_before.as_secs(),
                    deadlines.job_url_ttl.as_secs()
                ),
            });
        }
        if let Some(spec) = vars.optional("STUCK_AFTER") {
            deadlines = deadlines
                .with_stuck(&spec)
                .map_err(|e| ConfigError::Invalid {
                    name: "STUCK_AFTER",
                    reason: e.to_string(),
                })?;
        }
        Ok(Config {
            deadlines,
            batch: vars.number("RECONCILE_BATCH", 200, 1..=1000)? as usize,
        })
    }
}

impl Default for Config {
    /// What [`Config::from_vars`] gives with nothing set.
    fn default() -> Config {
        Config::from_vars(&vars_from(&[])).expect("the defaults are valid")
    }
}

/// The AWS resources the reconciler Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub orders_table: String,
    pub events_topic_arn: String,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            orders_table: vars.required("ORDERS_TABLE")?,
            events_topic_arn: vars.required("EVENTS_TOPIC_ARN")?,
        })
    }
}

impl Reconciler {
    pub fn new(
        config: &Config,
        orders: Arc<dyn OrderStore>,
        store: Arc<dyn ReconcileStore>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
    ) -> Reconciler {
        Reconciler {
            orders,
            store,
            publisher,
            clock,
            deadlines: config.deadlines.clone(),
            batch: config.batch,
        }
    }

    /// The Lambda's reconciler: DynamoDB, the SNS topic, the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(
        sdk: &printworks::adapters::aws::SdkConfig,
        config: &Config,
        aws: &Resources,
    ) -> Reconciler {
        let store = Arc::new(printworks::adapters::aws::dynamodb::DynamoStore::from_sdk(
            sdk,
            &aws.orders_table,
        ));
        let publisher = Arc::new(printworks::adapters::aws::sns::SnsPublisher::from_sdk(
            sdk,
            &aws.events_topic_arn,
        ));
        Reconciler::new(
            config,
            store.clone(),
            store,
            publisher,
            Arc::new(printworks::clock::SystemClock),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::domain::state::OrderState;

    #[test]
    fn deadlines_come_from_the_environment_and_a_bad_one_fails_by_name() {
        let config = Config::default();
        assert_eq!(config.deadlines, Deadlines::default());
        assert_eq!(config.batch, 200);
        let config = Config::from_vars(&vars_from(&[
            ("RECONCILE_RENDER_AFTER_SECS", "600"),
            ("STUCK_AFTER", "btf:in_production=3d"),
        ]))
        .unwrap();
        assert_eq!(config.deadlines.render_after, Duration::from_secs(600));
        assert_eq!(
            config
                .deadlines
                .stuck_after(OrderState::InProduction, Some("btf")),
            Some(Duration::from_secs(3 * 86_400))
        );
        let bad = Config::from_vars(&vars_from(&[("STUCK_AFTER", "shipped=1h")])).unwrap_err();
        assert!(
            matches!(&bad, ConfigError::Invalid { name: "STUCK_AFTER", reason } if reason.contains("not a watched state")),
            "{bad}"
        );
        let bad = Config::from_vars(&vars_from(&[
            ("JOB_URL_TTL_SECS", "3600"),
            ("RECONCILE_REFRESH_BEFORE_SECS", "3600"),
        ]))
        .unwrap_err();
        assert!(
            bad.to_string().contains("RECONCILE_REFRESH_BEFORE_SECS"),
            "{bad}"
        );
        assert_eq!(
            Resources::from_vars(&vars_from(&[("ORDERS_TABLE", "t")])),
            Err(ConfigError::Missing("EVENTS_TOPIC_ARN"))
        );
    }
}
