//! `edge-agent`: run the plant's agent, or look at and add to its journal.

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_agent::journal::{Details, Journal};
use edge_agent::{Agent, Config, faults::Faults};
use printworks::domain::production::JobState;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "printworks plant agent")]
struct Cli {
    /// The configuration file.
    #[arg(long, env = "EDGE_AGENT_CONFIG", default_value = "edge-agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Relay jobs to the machine and report their status (the default).
    Run,
    /// Print the jobs by state and the reports not yet sent.
    Status {
        /// How many jobs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The packing station packed a package (all its printed jobs).
    Pack { packing_ref: String },
    /// A package left with a carrier.
    Ship {
        packing_ref: String,
        #[arg(long)]
        carrier: String,
        #[arg(long)]
        tracking: String,
    },
}

fn main() -> anyhow::Result<()> {
    printworks::telemetry::init();
    let cli = Cli::parse();
    let config = Config::load(&cli.config, |name| std::env::var(name).ok())?;
    // Two malloc arenas: every blocking thread would otherwise get its own,
    // and an idle agent would keep tens of MiB of freed heap.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Two threads: the agent waits on the network and the disk, and stays small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(5))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
            Command::Status { limit } => status(&config, limit).await,
            Command::Pack { packing_ref } => {
                mark(&config, &packing_ref, JobState::Packed, Details::default()).await
            }
            Command::Ship {
                packing_ref,
                carrier,
                tracking,
            } => {
                let details = Details {
                    carrier: Some(carrier),
                    tracking: Some(tracking),
                    reason: None,
                };
                mark(&config, &packing_ref, JobState::Shipped, details).await
            }
        }
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    // First, so a SIGTERM during start-up is a clean stop too.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let faults = Faults::from_env()?;
    let (jobs, events) = edge_agent::queues(&config).await;
    let agent = Agent::new(config, jobs, events, faults)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(agent.run(stopped));
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing the current step"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: finishing the current step"),
    }
    let _ = stop.send(true);
    running.await.context("agent task")?
}

async fn status(config: &Config, limit: usize) -> anyhow::Result<()> {
    let journal = Journal::open(&config.journal_path())?;
    let (counts, pending) = journal.counts().await?;
    println!("plant {}", config.plant);
    for state in JobState::ALL {
        let n = counts.get(state.as_str()).copied().unwrap_or(0);
        println!("  {:<10} {n}", state.as_str());
    }
    println!("  reports not yet sent: {pending}");
    for row in journal.list(limit).await? {
        println!(
            "{}  {:<9}  {}  {}{}",
            row.updated_at,
            row.state,
            row.packing_ref,
            row.job_id,
            row.reason.map(|r| format!("  ({r})")).unwrap_or_default()
        );
    }
    journal.close();
    Ok(())
}

async fn mark(
    config: &Config,
    packing_ref: &str,
    to: JobState,
    details: Details,
) -> anyhow::Result<()> {
    let journal = Journal::open(&config.journal_path())?;
    let jobs = journal.package(packing_ref).await?;
    if jobs.is_empty() {
        anyhow::bail!("no jobs with packing reference {packing_ref}");
    }
    let moved = journal
        .advance(jobs.clone(), to, details, time::OffsetDateTime::now_utc())
        .await?;
    println!(
        "{packing_ref}: {} of {} jobs now {} (the agent reports them)",
        moved.len(),
        jobs.len(),
        to.as_str()
    );
    journal.close();
    Ok(())
}
