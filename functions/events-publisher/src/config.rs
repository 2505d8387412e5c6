//! events-publisher's wiring: [`Resources`] (the topic and the table; the
//! function has no settings) and, with feature `aws`, [`publisher_on_aws`]
//! and `outbox_on_aws`. Locally the
//! outbox is relayed by the local bus itself
//! (`printworks::adapters::local::bus::LocalBus::relay_outbox`), so only
//! the Lambda wires this function.

use printworks::config::{ConfigError, Vars};

/// The AWS resources the events-publisher Lambda uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub events_topic_arn: String,
    /// The orders table, whose published outbox items the function deletes.
    pub orders_table: String,
}

impl Resources {
    pub fn from_vars<F: Fn(&str) -> Option<String>>(
        vars: &Vars<F>,
    ) -> Result<Resources, ConfigError> {
        Ok(Resources {
            events_topic_arn: vars.required("EVENTS_TOPIC_ARN")?,
            orders_table: vars.required("ORDERS_TABLE")?,
        })
    }
}

/// The Lambda's publisher: the SNS topic.
#[cfg(feature = "aws")]
pub fn publisher_on_aws(
    sdk: &printworks::adapters::aws::SdkConfig,
    aws: &Resources,
) -> printworks::adapters::aws::sns::SnsPublisher {
    printworks::adapters::aws::sns::SnsPublisher::from_sdk(sdk, &aws.events_topic_arn)
}

/// The outbox the Lambda clears: the orders table.
#[cfg(feature = "aws")]
pub fn outbox_on_aws(
    sdk: &printworks::adapters::aws::SdkConfig,
    aws: &Resources,
) -> printworks::adapters::aws::dynamodb::DynamoStore {
    printworks::adapters::aws::dynamodb::DynamoStore::from_sdk(sdk, &aws.orders_table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use printworks::config::vars_from;

    #[test]
    fn the_topic_is_required() {
        assert_eq!(
            Resources::from_vars(&vars_from(&[])),
            Err(ConfigError::Missing("EVENTS_TOPIC_ARN"))
        );
    }
}
