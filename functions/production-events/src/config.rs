//! production-events' wiring, in one place for the Lambda and the local
//! runner: [`Resources`] (the AWS names only the Lambda has; the function
//! has no settings of its own) and the constructors
//! [`ProductionEvents::new`] and, with feature `aws`,
//! [`ProductionEvents::on_aws`].

use crate::ProductionEvents;
use printworks::config::{ConfigError, Vars};
use printworks::ports::{Clock, OrderStore, ProductionStore};
use std::sync::Arc;

/// The AWS resources the production-events Lambda uses.
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

impl ProductionEvents {
    pub fn new(
        orders: Arc<dyn OrderStore>,
        production: Arc<dyn ProductionStore>,
        clock: Arc<dyn Clock>,
    ) -> ProductionEvents {
        ProductionEvents {
            orders,
            production,
            clock,
        }
    }

    /// The Lambda's handler: DynamoDB and the system clock.
    #[cfg(feature = "aws")]
    pub fn on_aws(sdk: &printworks::adapters::aws::SdkConfig, aws: &Resources) -> ProductionEvents {
        let store = Arc::new(printworks::adapters::aws::dynamodb::DynamoStore::from_sdk(
            sdk,
            &aws.orders_table,
        ));
        ProductionEvents::new(
            store.clone(),
            store,
            Arc::new(printworks::clock::SystemClock),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::config::vars_from;

    #[test]
    fn the_table_is_required() {
        assert_eq!(
            Resources::from_vars(&vars_from(&[])),
            Err(ConfigError::Missing("ORDERS_TABLE"))
        );
        assert_eq!(
            Resources::from_vars(&vars_from(&[("ORDERS_TABLE", "orders")]))
                .unwrap()
                .orders_table,
            "orders"
        );
    }
}
