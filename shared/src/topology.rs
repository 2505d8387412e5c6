//! The queue topology, declared once: every queue of the platform, the
//! events the topic delivers to it, how long a received message stays
//! hidden, after how many receives it is dead-lettered, and who consumes it
//! in batches of how many. The local runner declares its queues from these
//! specs (`printworks_local::platform::start`); `infra/template.yaml` and
//! `infra/plant.yaml` declare the AWS ones, and the test
//! `tests/tests/integration/topology.rs` checks the templates against
//! these specs, so the two cannot drift.
//!
//! Visibility timeouts here are the AWS ones: six times the consuming
//! function's timeout (an SQS event source needs at least that). The local
//! runner's consumers have no function timeout, so it uses a shorter
//! visibility of its own (`Options::visibility_timeout`); names, filters,
//! receive limits and dead-letter queues are the same.

use crate::domain::events::EventType;
use crate::domain::notify::NOTIFY_EVENTS;
use crate::domain::stats::STATS_EVENTS;
use std::time::Duration;

/// One queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// The queue's name locally (`plant-{plant}-jobs` for a plant's jobs:
    /// see [`plant_jobs_queue`]).
    pub name: &'static str,
    /// Its logical id in the CloudFormation template.
    pub resource: &'static str,
    /// Its dead-letter queue's logical id; locally `<name>-dlq`.
    pub dead_letter_resource: &'static str,
    /// The topic's events delivered to it (SNS filter policy on `type`), or
    /// `None` for a point-to-point queue nobody subscribes to the topic.
    pub subscription: Option<Subscription>,
    /// How long a received message stays hidden (AWS).
    pub visibility_timeout: Duration,
    /// Receives before the message moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// The function that consumes it, if a Lambda does.
    pub consumer: Option<Consumer>,
}

/// The topic subscription of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The subscription's logical id in the template.
    pub resource: &'static str,
    pub events: &'static [EventType],
}

/// The Lambda reading a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer {
    /// The function's logical id in the template.
    pub function: &'static str,
    /// Messages per invocation.
    pub batch_size: u32,
}

impl QueueSpec {
    /// Messages a consumer takes at once (the Lambda's batch size; 10,
    /// SQS's most per receive, for a queue no Lambda reads).
    pub fn batch_size(&self) -> usize {
        self.consumer.map_or(10, |c| c.batch_size as usize)
    }

    /// The local dead-letter queue's name.
    pub fn dead_letter_name(&self) -> String {
        format!("{}-dlq", self.name)
    }
}

/// `OrderPaid` to render, one message per invocation (a render is long);
/// and `OrderResumed`, `OrderChanged` and `OrderNudged`, of which render
/// takes those to render again (a release, a photo the customer replaced,
/// the reconciler's hand-over).
pub const RENDER: QueueSpec = QueueSpec {
    name: "render",
    resource: "RenderQueue",
    dead_letter_resource: "RenderDeadLetterQueue",
    subscription: Some(Subscription {
        resource: "RenderSubscription",
        events: &[
            EventType::OrderPaid,
            EventType::OrderResumed,
            EventType::OrderChanged,
            EventType::OrderNudged,
        ],
    }),
    visibility_timeout: Duration::from_secs(720),
    max_receive_count: 5,
    consumer: Some(Consumer {
        function: "RenderFunction",
        batch_size: 1,
    }),
};

/// `OrderRendered` to dispatch; `OrderResumed` and `OrderNudged`, of which
/// dispatch takes those to dispatch again or to send jobs made anew (or
/// with fresh URLs); and
/// `OrderCancelled`, whose unfinished jobs it tells the plants to stop.
pub const DISPATCH: QueueSpec = QueueSpec {
    name: "dispatch",
    resource: "DispatchQueue",
    dead_letter_resource: "DispatchDeadLetterQueue",
    subscription: Some(Subscription {
        resource: "DispatchSubscription",
        events: &[
            EventType::OrderRendered,
            EventType::OrderResumed,
            EventType::OrderNudged,
            EventType::OrderCancelled,
        ],
    }),
    visibility_timeout: Duration::from_secs(180),
    max_receive_count: 5,
    consumer: Some(Consumer {
        function: "DispatchFunction",
        batch_size: 10,
    }),
};

/// Every customer-facing event to notify. Ten receives: a tenant's webhook
/// endpoint may be down for a while, and each failure is retried with a
/// growing back-off before the message is given up.
pub const NOTIFY: QueueSpec = QueueSpec {
    name: "notify",
    resource: "NotifyQueue",
    dead_letter_resource: "NotifyDeadLetterQueue",
    subscription: Some(Subscription {
        resource: "NotifySubscription",
        events: &NOTIFY_EVENTS,
    }),
    visibility_timeout: Duration::from_secs(720),
    max_receive_count: 10,
    consumer: Some(Consumer {
        function: "NotifyFunction",
        batch_size: 10,
    }),
};

/// The events the statistics count ([`STATS_EVENTS`]) to the stats
/// projection, ten at a time (each is one small transaction).
pub const STATS: QueueSpec = QueueSpec {
    name: "stats",
    resource: "StatsQueue",
    dead_letter_resource: "StatsDeadLetterQueue",
    subscription: Some(Subscription {
        resource: "StatsSubscription",
        events: &STATS_EVENTS,
    }),
    visibility_timeout: Duration::from_secs(180),
    max_receive_count: 5,
    consumer: Some(Consumer {
        function: "StatsFunction",
        batch_size: 10,
    }),
};

/// The plants' status reports to production-events (the agents send here
/// directly; not subscribed to the topic).
pub const PLANT_EVENTS: QueueSpec = QueueSpec {
    name: "plant-events",
    resource: "PlantEventsQueue",
    dead_letter_resource: "PlantEventsDeadLetterQueue",
    subscription: None,
    visibility_timeout: Duration::from_secs(180),
    max_receive_count: 5,
    consumer: Some(Consumer {
        function: "ProductionEventsFunction",
        batch_size: 10,
    }),
};

/// A plant's job queue (`infra/plant.yaml`, one stack per plant), read by
/// the plant's edge agent. Ten receives, not five: an agent is restarted,
/// loses its network and retries downloads far more often than a Lambda,
/// and each of those costs a receive.
pub const PLANT_JOBS: QueueSpec = QueueSpec {
    name: "plant-{plant}-jobs",
    resource: "JobsQueue",
    dead_letter_resource: "JobsDeadLetterQueue",
    subscription: None,
    visibility_timeout: Duration::from_secs(120),
    max_receive_count: 10,
    consumer: None,
};

/// The queues subscribed to the event topic.
pub const TOPIC_QUEUES: [QueueSpec; 4] = [RENDER, DISPATCH, NOTIFY, STATS];

/// The queues of the main stack (`infra/template.yaml`).
pub const STACK_QUEUES: [QueueSpec; 5] = [RENDER, DISPATCH, NOTIFY, STATS, PLANT_EVENTS];

/// A plant's job queue name: `plant-<id>-jobs`, as dispatch addresses it
/// and `infra/plant.yaml` names it.
pub fn plant_jobs_queue(plant: &str) -> String {
    PLANT_JOBS.name.replace("{plant}", plant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_plant_queues_are_named_by_plant() {
        let mut names: Vec<_> = STACK_QUEUES.iter().map(|q| q.name).collect();
        names.push(PLANT_JOBS.name);
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(plant_jobs_queue("muc"), "plant-muc-jobs");
        assert_eq!(RENDER.dead_letter_name(), "render-dlq");
        // Every event type reaches at most the queues that subscribe to it,
        // and every topic queue subscribes to something.
        assert!(
            TOPIC_QUEUES
                .iter()
                .all(|q| q.subscription.is_some_and(|s| !s.events.is_empty()))
        );
    }
}
