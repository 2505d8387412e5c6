//! The agent's configuration: a TOML file, and a few environment variables
//! that override it (what differs between hosts: queue URLs, credentials).
//!
//! ```toml
//! plant = "muc"
//! jobs_queue_url = "https://sqs.eu-central-1.amazonaws.com/123456789012/plant-muc-jobs"
//! events_queue_url = "https://sqs.eu-central-1.amazonaws.com/123456789012/printworks-plant-events"
//! region = "eu-central-1"
//! state_dir = "/var/lib/edge-agent"     # journal.sqlite and spool/
//! concurrency = 8                       # jobs downloaded at once
//!
//! [driver]
//! kind = "hotfolder"                    # or "simulated"
//! hot = "/srv/machines/lambda-1/hot"
//! done = "/srv/machines/lambda-1/done"
//! error = "/srv/machines/lambda-1/error"
//!
//! [after_print]
//! mode = "manual"                       # or "simulate" (pack and ship by itself)
//! ```
//!
//! AWS credentials come from the standard chain (environment, a profile
//! that assumes the plant's `AgentRoleArn`, ...), never from this file;
//! only a local development platform takes `access_key_id` under `[aws]`.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub plant: String,
    pub jobs_queue_url: String,
    pub events_queue_url: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// An SQS-compatible endpoint instead of AWS (the local platform, moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    pub state_dir: PathBuf,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Long-poll wait of each receive, seconds (at most 20).
    #[serde(default = "default_wait")]
    pub wait_secs: u64,
    /// How long a received job stays hidden from other consumers; the agent
    /// extends it while it downloads.
    #[serde(default = "default_visibility")]
    pub visibility_secs: u64,
    /// Longest pause between attempts to report status while the queue is
    /// unreachable.
    #[serde(default = "default_backoff_max")]
    pub report_backoff_max_secs: u64,
    pub driver: DriverConfig,
    #[serde(default)]
    pub after_print: AfterPrint,
    #[serde(default)]
    pub aws: AwsOverride,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriverConfig {
    /// A machine that takes jobs from a hot folder and moves them to its
    /// `done` or `error` folder.
    Hotfolder {
        hot: PathBuf,
        done: PathBuf,
        error: PathBuf,
    },
    /// A machine the agent plays itself: it prints after `delay_ms` and
    /// fails `failure_rate` of the jobs, through a hot folder under `dir`
    /// (default `<state_dir>/machine`).
    Simulated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<PathBuf>,
        #[serde(default = "default_delay")]
        delay_ms: u64,
        #[serde(default)]
        failure_rate: f64,
    },
}

/// What happens after a job is printed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum AfterPrint {
    /// The packing station reports: `edge-agent pack` / `edge-agent ship`.
    #[default]
    Manual,
    /// Packs a package once all its jobs are printed and ships it after
    /// `ship_delay_ms` with a simulated carrier (demos and tests).
    Simulate {
        #[serde(default = "default_delay")]
        ship_delay_ms: u64,
        #[serde(default = "default_carrier")]
        carrier: String,
    },
}

/// Static credentials for a local development platform only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "eu-central-1".into()
}
fn default_concurrency() -> usize {
    8
}
fn default_wait() -> u64 {
    20
}
fn default_visibility() -> u64 {
    60
}
fn default_backoff_max() -> u64 {
    30
}
fn default_delay() -> u64 {
    500
}
fn default_carrier() -> String {
    "SIM-POST".into()
}

/// A machine's three folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folders {
    pub hot: PathBuf,
    pub done: PathBuf,
    pub error: PathBuf,
}

impl Folders {
    pub fn under(dir: &Path) -> Folders {
        Folders {
            hot: dir.join("hot"),
            done: dir.join("done"),
            error: dir.join("error"),
        }
    }
}

/// The environment variables that override the file (see [`Config::load`]).
pub const OVERRIDES: [&str; 6] = [
    "EDGE_AGENT_PLANT",
    "EDGE_AGENT_JOBS_QUEUE_URL",
    "EDGE_AGENT_EVENTS_QUEUE_URL",
    "EDGE_AGENT_STATE_DIR",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
];

impl Config {
    /// An agent of `plant` that talks to an SQS-compatible endpoint at
    /// `endpoint` (the local platform) with its static local credentials,
    /// its queues at `{endpoint}/queues/{name}`; the rest as an empty file
    /// would have it (packing reported by hand). Callers change what they
    /// need: `Config { wait_secs: 1, ..Config::local(...) }`.
    pub fn local(
        endpoint: &str,
        plant: &str,
        (jobs_queue, events_queue): (&str, &str),
        state_dir: PathBuf,
        driver: DriverConfig,
    ) -> Config {
        Config {
            plant: plant.to_string(),
            jobs_queue_url: format!("{endpoint}/queues/{jobs_queue}"),
            events_queue_url: format!("{endpoint}/queues/{events_queue}"),
            region: default_region(),
            endpoint_url: Some(endpoint.to_string()),
            state_dir,
            concurrency: default_concurrency(),
            wait_secs: default_wait(),
            visibility_secs: default_visibility(),
            report_backoff_max_secs: default_backoff_max(),
            driver,
            after_print: AfterPrint::Manual,
            aws: AwsOverride {
                access_key_id: Some("local".into()),
                secret_access_key: Some("local".into()),
            },
        }
    }

    /// Writes the configuration as the TOML file [`Config::load`] reads.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("writing the agent's configuration as TOML")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `path`, then the environment overrides ([`OVERRIDES`]):
    /// `EDGE_AGENT_PLANT`, `EDGE_AGENT_JOBS_QUEUE_URL`,
    /// `EDGE_AGENT_EVENTS_QUEUE_URL`, `EDGE_AGENT_STATE_DIR`,
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let raw =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&raw).with_context(|| format!("parsing {}", path.display()))?;
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = set("EDGE_AGENT_PLANT") {
            config.plant = v;
        }
        if let Some(v) = set("EDGE_AGENT_JOBS_QUEUE_URL") {
            config.jobs_queue_url = v;
        }
        if let Some(v) = set("EDGE_AGENT_EVENTS_QUEUE_URL") {
            config.events_queue_url = v;
        }
        if let Some(v) = set("EDGE_AGENT_STATE_DIR") {
            config.state_dir = v.into();
        }
        if let Some(v) = set("AWS_ENDPOINT_URL") {
            config.endpoint_url = Some(v);
        }
        if let Some(v) = set("AWS_REGION") {
            config.region = v;
        }
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        if !printworks::domain::production::plant_id_valid(&self.plant) {
            bail!(
                "plant {:?} is not a plant id (2-16 lowercase letters and digits)",
                self.plant
            );
        }
        for (name, url) in [
            ("jobs_queue_url", &self.jobs_queue_url),
            ("events_queue_url", &self.events_queue_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("{name} must be an http(s) URL");
            }
        }
        if !(1..=64).contains(&self.concurrency) {
            bail!("concurrency must be between 1 and 64");
        }
        if self.wait_secs > 20 {
            bail!("wait_secs must be at most 20 (SQS long polling)");
        }
        if !(10..=43_200).contains(&self.visibility_secs) {
            bail!("visibility_secs must be between 10 and 43200");
        }
        if let DriverConfig::Simulated { failure_rate, .. } = self.driver
            && !(0.0..=1.0).contains(&failure_rate)
        {
            bail!("failure_rate must be between 0 and 1");
        }
        Ok(())
    }

    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join("journal.sqlite")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }

    /// The folders the agent hands jobs to.
    pub fn folders(&self) -> Folders {
        match &self.driver {
            DriverConfig::Hotfolder { hot, done, error } => Folders {
                hot: hot.clone(),
                done: done.clone(),
                error: error.clone(),
            },
            DriverConfig::Simulated { dir, .. } => Folders::under(
                &dir.clone()
                    .unwrap_or_else(|| self.state_dir.join("machine")),
            ),
        }
    }

    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_secs)
    }

    pub fn visibility(&self) -> Duration {
        Duration::from_secs(self.visibility_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_written_configuration_loads_back_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let Folders { hot, done, error } = Folders::under(&dir.path().join("machine"));
        let mut configs = vec![Config {
            concurrency: 4,
            wait_secs: 1,
            after_print: AfterPrint::Simulate {
                ship_delay_ms: 100,
                carrier: "SIM-POST".into(),
            },
            ..Config::local(
                "http://127.0.0.1:8080",
                "muc",
                ("plant-muc-jobs", "plant-events"),
                dir.path().join("agent"),
                DriverConfig::Hotfolder { hot, done, error },
            )
        }];
        // And one with every optional part left out.
        configs.push(Config {
            endpoint_url: None,
            aws: AwsOverride::default(),
            driver: DriverConfig::Simulated {
                dir: None,
                delay_ms: 5,
                failure_rate: 0.25,
            },
            ..configs[0].clone()
        });
        for config in configs {
            let path = dir.path().join("agent.toml");
            config.write(&path).unwrap();
            assert_eq!(Config::load(&path, |_| None).unwrap(), config);
        }
        let text = std::fs::read_to_string(dir.path().join("agent.toml")).unwrap();
        assert!(!text.contains("endpoint_url"), "{text}");
    }

    const MINIMAL: &str = r#"
plant = "muc"
jobs_queue_url = "https://sqs.eu-central-1.amazonaws.com/1/plant-muc-jobs"
events_queue_url = "https://sqs.eu-central-1.amazonaws.com/1/plant-events"
state_dir = "/var/lib/edge-agent"
[driver]
kind = "hotfolder"
hot = "/m/hot"
done = "/m/done"
error = "/m/error"
"#;

    #[test]
    fn a_minimal_file_takes_defaults_and_the_environment_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), MINIMAL);
        let c = Config::load(&path, |_| None).unwrap();
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.after_print, AfterPrint::Manual);
        assert_eq!(c.folders().hot, PathBuf::from("/m/hot"));
        let c = Config::load(&path, |name| match name {
            "EDGE_AGENT_STATE_DIR" => Some("/tmp/x".into()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:5000".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.journal_path(), PathBuf::from("/tmp/x/journal.sqlite"));
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (MINIMAL.replace("\"muc\"", "\"../etc\""), "plant"),
            (
                MINIMAL.replace("kind = \"hotfolder\"", "kind = \"laser\""),
                "laser",
            ),
            (
                MINIMAL.replace("plant = \"muc\"", "plant = \"muc\"\nconcurrency = 0"),
                "concurrency",
            ),
            (
                MINIMAL.replace("plant = \"muc\"", "plant = \"muc\"\nsurprise = 1"),
                "surprise",
            ),
        ] {
            let path = write(dir.path(), &text);
            let err = format!("{:#}", Config::load(&path, |_| None).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
