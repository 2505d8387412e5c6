//! The edge agent: runs at a plant, long-polls the plant's job queue,
//! relays each job to a machine exactly once, and reports what happens to
//! it back to `plant-events`, through outages and crashes.
//!
//! # Layout
//!
//! - [`config`]: the TOML file and its environment overrides.
//! - [`journal`]: the durable record (SQLite, fsync per commit) of the jobs
//!   taken, their state, and the outbox of status reports.
//! - [`agent`]: the loops: intake (download, verify, journal, delete), the
//!   floor (hand-off, machine results, packing and shipping), the reporter
//!   (outbox to the queue with back-off).
//! - [`driver`]: hot folders (atomic hand-off with a job ticket) and the
//!   simulated machine.
//! - [`faults`]: pause points for the crash tests.
//!
//! The agent talks SQS through `printworks::adapters::aws::sqs` (the
//! plant's own credentials); against `printworks up` it talks to the local
//! platform's SQS-compatible endpoint the same way.

pub mod agent;
pub mod config;
pub mod driver;
pub mod faults;
pub mod journal;

pub use agent::Agent;
pub use config::Config;

use printworks::adapters::aws::sqs::SqsQueue;
use printworks::ports::MessageQueue;
use std::sync::Arc;

/// `bin run --config <config>` (the agent binary at `bin`), with none of
/// the environment overrides of [`config::OVERRIDES`], no AWS profile and
/// no crash-test pause point inherited from the caller: the file is the
/// whole truth. For the harnesses that run real agents (the local
/// platform's tests, the chaos test, the relay benchmark).
pub fn command(bin: &std::path::Path, config: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(bin);
    command.arg("--config").arg(config).arg("run");
    for name in config::OVERRIDES
        .iter()
        .chain(&["AWS_PROFILE", faults::PAUSE_AT])
    {
        command.env_remove(name);
    }
    command
}

/// The plant's two queues, reached as `config` says.
pub async fn queues(config: &Config) -> (Arc<dyn MessageQueue>, Arc<dyn MessageQueue>) {
    let keys = match (&config.aws.access_key_id, &config.aws.secret_access_key) {
        (Some(id), Some(secret)) => Some((id.as_str(), secret.as_str())),
        _ => None,
    };
    let sdk = printworks::adapters::aws::sdk_config_for(
        &config.region,
        config.endpoint_url.as_deref(),
        keys,
    )
    .await;
    (
        Arc::new(SqsQueue::from_sdk(&sdk, config.jobs_queue_url.clone())),
        Arc::new(SqsQueue::from_sdk(&sdk, config.events_queue_url.clone())),
    )
}
