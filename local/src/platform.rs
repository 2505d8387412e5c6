//! The platform on one machine: the order API, the payment webhooks, the
//! blob server (uploads, and print files under `/prints`) and the SQS
//! endpoint on one loopback port; the SQLite store, the outbox relay, the
//! local bus and the queue consumers (render, dispatch, production-events,
//! notify, the sweep of deferred notifications, the statistics projection
//! and the reconciler);
//! and one edge agent per plant with a simulated machine behind its hot
//! folder under `<data dir>/plants/<id>/`.

use crate::blob_routes;
use crate::payments;
use crate::seed::{self, CreatedTenant};
use crate::workers;
use anyhow::Context;
use printworks::adapters::local::blobs::FsBlobStore;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::outbox::OutboxFolder;
use printworks::adapters::local::store::SqliteStore;
use printworks::adapters::smtp::{SmtpConfig, SmtpMailer};
use printworks::clock::SystemClock;
use printworks::domain::catalog::Catalog;
use printworks::domain::notify::DailyCaps;
use printworks::faults::{Faults, FaultyBlobStore};
use printworks::fetch::UrlFetcher;
use printworks::ports::{Clock, FixedSecrets, Mailer};
use printworks::topology::{self, QueueSpec};
use printworks::webhook_out::HttpWebhooks;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    /// 0 picks a free port.
    pub port: u16,
    pub durability: Durability,
    /// The environment in API keys (`pw_local_...`).
    pub env: String,
    /// A catalog file to use instead of the built-in one.
    pub catalog: Option<PathBuf>,
    pub plants: PlantOptions,
    pub notify: NotifyOptions,
    /// How long a received message of the topic's queues and
    /// `plant-events` stays hidden before it is delivered again. Shorter
    /// than on AWS ([`printworks::topology`] declares those): the local
    /// consumers have no function timeout to outlast. The plants' job
    /// queues get [`PLANT_JOBS_VISIBILITY_FACTOR`] times this.
    pub visibility_timeout: Duration,
    /// How many renders run at once (each consumer takes one message at a
    /// time; rendering is CPU work in tokio's blocking pool). One per core
    /// by default, at most 8.
    pub render_workers: usize,
    /// The fault-injection switch (off by default; see
    /// [`printworks::faults`]).
    pub faults: Faults,
    /// The reconciler: its deadlines ([`reconciler::Config`], from the same
    /// variables as on AWS) and how often it runs (every minute; on AWS
    /// every 5 minutes).
    pub reconcile: reconciler::Config,
    pub reconcile_every: Duration,
}

/// How `printworks up` notifies: e-mail and SMS into `<data dir>/outbox`
/// (or e-mail through an SMTP server), tenant webhooks over HTTPS to
/// public addresses.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// `smtp://...`: send e-mail through this server instead of the outbox.
    pub smtp_url: Option<String>,
    pub caps: DailyCaps,
    /// How often deferred messages are looked at.
    pub sweep_every: Duration,
    /// The first back-off of a failed message (doubled per delivery).
    pub backoff: Duration,
    /// Development only: let tenant webhooks reach plain-HTTP endpoints on
    /// 127.0.0.1 (a receiver on this machine). Never on by default.
    pub allow_loopback_webhooks: bool,
}

impl Default for NotifyOptions {
    /// notify's own defaults ([`notify::Config::default`]), a sweep every
    /// minute, and no loopback webhooks.
    fn default() -> NotifyOptions {
        let config = notify::Config::default();
        NotifyOptions {
            smtp_url: config.smtp_url,
            caps: config.caps,
            sweep_every: Duration::from_secs(60),
            backoff: config.backoff,
            allow_loopback_webhooks: false,
        }
    }
}

/// The plants of `printworks up`: an edge agent per plant of the catalog,
/// and a simulated machine behind its hot folder.
#[derive(Debug, Clone)]
pub struct PlantOptions {
    /// Run the agents and machines (tests of earlier stages turn it off).
    pub run: bool,
    /// How long the simulated machine takes to print a job.
    pub print_delay: Duration,
    /// The share of jobs the simulated machine fails.
    pub failure_rate: f64,
    /// How long after packing a package ships.
    pub ship_delay: Duration,
}

impl Default for PlantOptions {
    fn default() -> PlantOptions {
        PlantOptions {
            run: true,
            print_delay: Duration::from_millis(300),
            failure_rate: 0.0,
            ship_delay: Duration::from_millis(500),
        }
    }
}

impl Options {
    pub fn new(data_dir: impl Into<PathBuf>) -> Options {
        Options {
            data_dir: data_dir.into(),
            port: 3000,
            durability: Durability::Full,
            env: "local".into(),
            catalog: None,
            plants: PlantOptions::default(),
            notify: NotifyOptions::default(),
            visibility_timeout: Duration::from_secs(30),
            render_workers: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8),
            faults: Faults::off(),
            reconcile: reconciler::Config::default(),
            reconcile_every: Duration::from_secs(60),
        }
    }
}

/// How many times [`Options::visibility_timeout`] a plant's job stays
/// hidden after an agent received it: the agent downloads the files before
/// it deletes the message.
pub const PLANT_JOBS_VISIBILITY_FACTOR: u32 = 4;

/// A queue of `spec` as the local bus declares it: the spec's receive limit
/// and dead-letter queue, the local visibility timeout.
fn local_queue(spec: &QueueSpec, visibility: Duration) -> QueueConfig {
    QueueConfig {
        visibility_timeout: visibility,
        max_receive_count: spec.max_receive_count,
        dead_letter: Some(spec.dead_letter_name()),
    }
}

pub fn db_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("printworks.sqlite")
}

/// Where `printworks up` puts e-mail (`.eml`) and SMS (`.sms.json`).
pub fn outbox_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("outbox")
}

/// A plant's directory: `hot`, `done`, `error`, the machine's
/// `printed.log`, and the agent's journal and spool under `agent`.
pub fn plant_dir(data_dir: &std::path::Path, plant: &str) -> PathBuf {
    data_dir.join("plants").join(plant)
}

/// The configuration of the local edge agent of `plant`, talking to the
/// platform at `base_url` as a plant talks to SQS.
pub fn agent_config(
    data_dir: &std::path::Path,
    base_url: &str,
    plant: &str,
    plants: &PlantOptions,
) -> edge_agent::Config {
    use edge_agent::config::{AfterPrint, Config, DriverConfig, Folders};
    let dir = plant_dir(data_dir, plant);
    let Folders { hot, done, error } = Folders::under(&dir);
    Config {
        concurrency: 8,
        wait_secs: 5,
        visibility_secs: 60,
        report_backoff_max_secs: 5,
        after_print: AfterPrint::Simulate {
            ship_delay_ms: plants.ship_delay.as_millis() as u64,
            carrier: "SIM-POST".into(),
        },
        ..Config::local(
            base_url,
            plant,
            (
                &topology::plant_jobs_queue(plant),
                topology::PLANT_EVENTS.name,
            ),
            dir.join("agent"),
            DriverConfig::Hotfolder { hot, done, error },
        )
    }
}

/// A running platform; [`Running::stop`] shuts it down cleanly.
pub struct Running {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Tenants seeded by this start (only on a fresh data directory).
    pub seeded: Vec<CreatedTenant>,
    pub store: SqliteStore,
    pub bus: LocalBus,
    db: Arc<Db>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets in-flight ones finish, relays what is
    /// left in the outbox, and closes the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        // Every task is joined and the database closed, even if one failed.
        let server = match self.server.await {
            Ok(served) => served.context("server"),
            Err(e) => Err(anyhow::anyhow!(e).context("server task")),
        };
        let mut workers = Ok(());
        for worker in self.workers {
            if let Err(e) = worker.await {
                workers = Err(anyhow::anyhow!(e).context("worker task"));
            }
        }
        let relay = self.relay.await.context("relay task");
        self.db.close();
        server?;
        workers?;
        relay?;
        Ok(())
    }
}

/// Starts everything and returns once the port is bound.
pub async fn start(options: Options) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let catalog = match &options.catalog {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Catalog::from_json(&raw).with_context(|| format!("loading {}", path.display()))?
        }
        None => Catalog::builtin().clone(),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db = Arc::new(Db::open(db_path(&options.data_dir), options.durability)?);
    let store = SqliteStore::new(db.clone());
    let faults = options.faults.clone();
    let bus = LocalBus::new(db.clone(), clock.clone()).with_faults(faults.clone());
    // The queues of printworks::topology: the topic's, subscribed to their
    // events, and the point-to-point ones the plant stacks and the main
    // template make.
    let visibility = options.visibility_timeout;
    for spec in &topology::STACK_QUEUES {
        bus.declare_queue(spec.name, local_queue(spec, visibility))
            .await?;
        if let Some(subscription) = spec.subscription {
            bus.subscribe(spec.name, Some(subscription.events)).await?;
        }
    }
    for plant in catalog.plants.keys() {
        let queue = topology::plant_jobs_queue(plant);
        let config = QueueConfig {
            dead_letter: Some(format!("{queue}-dlq")),
            ..local_queue(
                &topology::PLANT_JOBS,
                visibility * PLANT_JOBS_VISIBILITY_FACTOR,
            )
        };
        bus.declare_queue(&queue, config).await?;
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", options.port))?;
    let addr = listener.local_addr()?;
    let blobs = Arc::new(FsBlobStore::open(
        options.data_dir.join("blobs"),
        &format!("http://{addr}"),
        clock.clone(),
    )?);
    // A fresh data directory gets the demo tenants, each with the sample
    // photo as its upload, so the banner's example order ships offline.
    let mut seeded = Vec::new();
    if !store.has_tenants().await? {
        for tenant in seed::demo_tenants() {
            seed::add_sample_photo(blobs.as_ref(), &tenant.id).await?;
            seeded.push(seed::add_tenant(&store, &options.env, tenant).await?);
        }
    }
    let config = order_api::Config::for_env(&options.env)?;
    let catalog = Arc::new(catalog);
    let store_arc = Arc::new(store.clone());
    let app = order_api::App::new(
        config,
        catalog.clone(),
        store_arc.clone(),
        store_arc.clone(),
        store_arc.clone(),
        FaultyBlobStore::wrap(blobs.clone(), &faults),
        clock.clone(),
    );
    // Print files and previews go to their own store, as to their own
    // bucket, served under /prints (the agents fetch them by presigned URL).
    let prints = Arc::new(FsBlobStore::open(
        options.data_dir.join("prints"),
        &format!("http://{addr}/prints"),
        clock.clone(),
    )?);
    let renderer = render::Renderer::new(
        render::Config::default(),
        render::Ports {
            catalog: catalog.clone(),
            orders: store_arc.clone(),
            uploads: FaultyBlobStore::wrap(blobs.clone(), &faults),
            prints: FaultyBlobStore::wrap(prints.clone(), &faults),
            clock: clock.clone(),
        },
    )?;
    let webhooks = payment_webhook::Webhooks::new(
        store_arc.clone(),
        store_arc.clone(),
        Arc::new(FixedSecrets(payments::load_or_create_secrets(
            &options.data_dir,
        )?)),
        clock.clone(),
    );
    let dispatcher = dispatch::Dispatcher::new(
        dispatch::Config::default(),
        dispatch::Ports {
            plants: dispatch::PlantQueues::for_plants(catalog.plants.keys(), |plant| {
                Arc::new(bus.queue(&topology::plant_jobs_queue(plant)))
            }),
            catalog: catalog.clone(),
            orders: store_arc.clone(),
            production: store_arc.clone(),
            prints: FaultyBlobStore::wrap(prints.clone(), &faults),
            clock: clock.clone(),
        },
    );
    let production = production_events::ProductionEvents::new(
        store_arc.clone(),
        store_arc.clone(),
        clock.clone(),
    );
    let notifier = Arc::new(notifier(&options, store_arc.clone(), clock.clone())?);
    let (shutdown, mut stop_server) = watch::channel(false);
    let base_url = format!("http://{addr}");
    let ops = ops_api::App::new(
        ops_api::Config::for_env(&options.env)?,
        ops_api::Ops {
            dead_letters: Some(Arc::new(bus.clone())),
            stats: Some(store_arc.clone()),
            feed: Some(Arc::new(bus.clone())),
            live_stop: Some(shutdown.subscribe()),
            notifications: Some(store_arc.clone()),
            caps: options.notify.caps.clone(),
            prints: Some(prints.clone()),
            production: Some(store_arc.clone()),
            idle: Some(store_arc.clone()),
            ..ops_api::Ops::new(catalog.clone(), store_arc.clone(), clock.clone())
        },
        store_arc.clone(),
    );
    let router = order_api::router(Arc::new(app))
        .merge(ops_api::router(Arc::new(ops)))
        .merge(payment_webhook::router(Arc::new(webhooks)))
        .merge(blob_routes::router(blobs, faults.clone()))
        .nest("/prints", blob_routes::router(prints, faults.clone()))
        .merge(printworks::adapters::local::sqs_api::router_with_shutdown(
            bus.clone(),
            base_url.clone(),
            shutdown.subscribe(),
        ))
        .layer(axum::middleware::from_fn(crate::catch_panic::catch_panic));

    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_server.wait_for(|stop| *stop).await;
            })
            .await
    });
    let relay = tokio::spawn(relay_loop(bus.clone(), shutdown.subscribe()));
    let renderer = Arc::new(renderer);
    let dispatcher = Arc::new(dispatcher);
    let production = Arc::new(production);
    // Renders: `render_workers` consumers of one message each, so a render
    // never waits behind another's in a received batch, and the cores
    // render side by side.
    let mut workers: Vec<_> = (0..options.render_workers.max(1))
        .map(|_| {
            let renderer = renderer.clone();
            tokio::spawn(workers::consume(
                bus.clone(),
                topology::RENDER.name,
                1,
                faults.clone(),
                shutdown.subscribe(),
                move |m| {
                    let renderer = renderer.clone();
                    async move {
                        let event = workers::envelope(&m)?;
                        let outcome = renderer
                            .handle(&event, m.receive_count)
                            .await
                            .map_err(|e| e.0)?;
                        Ok(format!("{outcome:?}"))
                    }
                },
            ))
        })
        .collect();
    workers.extend([
        tokio::spawn(workers::consume(
            bus.clone(),
            topology::DISPATCH.name,
            topology::DISPATCH.batch_size(),
            faults.clone(),
            shutdown.subscribe(),
            move |m| {
                let dispatcher = dispatcher.clone();
                async move {
                    let event = workers::envelope(&m)?;
                    let outcome = dispatcher.handle(&event).await.map_err(|e| e.0)?;
                    Ok(format!("{outcome:?}"))
                }
            },
        )),
        tokio::spawn(workers::consume(
            bus.clone(),
            topology::PLANT_EVENTS.name,
            topology::PLANT_EVENTS.batch_size(),
            faults.clone(),
            shutdown.subscribe(),
            move |m| {
                let production = production.clone();
                async move {
                    let outcome = production.handle(&m.body).await?;
                    Ok(format!("{outcome:?}"))
                }
            },
        )),
    ]);
    let projection = Arc::new(stats::Stats::new(store_arc.clone()));
    workers.push(tokio::spawn(workers::consume(
        bus.clone(),
        topology::STATS.name,
        topology::STATS.batch_size(),
        faults.clone(),
        shutdown.subscribe(),
        move |m| {
            let projection = projection.clone();
            async move {
                let outcome = projection.handle(&m.body).await?;
                Ok(format!("{outcome:?}"))
            }
        },
    )));
    let backoff = options.notify.backoff;
    workers.push(tokio::spawn(workers::consume_with_backoff(
        bus.clone(),
        topology::NOTIFY.name,
        topology::NOTIFY.batch_size(),
        faults.clone(),
        shutdown.subscribe(),
        move |attempt| notify::backoff(backoff, attempt),
        {
            let notifier = notifier.clone();
            move |m| {
                let notifier = notifier.clone();
                async move {
                    let event = workers::envelope(&m)?;
                    let outcome = notifier.handle(&event).await.map_err(|e| e.0)?;
                    Ok(format!("{outcome:?}"))
                }
            }
        },
    )));
    workers.push(tokio::spawn(sweep_loop(
        notifier,
        options.notify.sweep_every,
        shutdown.subscribe(),
    )));
    let reconciler = reconciler::Reconciler::new(
        &options.reconcile,
        store_arc.clone(),
        store_arc.clone(),
        Arc::new(bus.clone()),
        clock.clone(),
    );
    workers.push(tokio::spawn(reconcile_loop(
        reconciler,
        options.reconcile_every,
        shutdown.subscribe(),
    )));
    if options.plants.run {
        for plant in catalog.plants.keys() {
            let config = agent_config(&options.data_dir, &base_url, plant, &options.plants);
            let dir = plant_dir(&options.data_dir, plant);
            let machine = edge_agent::driver::SimulatedMachine::new(
                edge_agent::config::Folders::under(&dir),
                dir.join("printed.log"),
                options.plants.print_delay,
                options.plants.failure_rate,
            )?;
            workers.push(tokio::spawn(machine.run(shutdown.subscribe())));
            let (jobs, events) = edge_agent::queues(&config).await;
            let agent =
                edge_agent::Agent::new(config, jobs, events, edge_agent::faults::Faults::none())?;
            let stop = shutdown.subscribe();
            workers.push(tokio::spawn(async move {
                if let Err(e) = agent.run(stop).await {
                    tracing::error!(error = %format!("{e:#}"), "edge agent failed");
                }
            }));
        }
    }
    Ok(Running {
        addr,
        data_dir: options.data_dir,
        seeded,
        store,
        bus,
        db,
        shutdown,
        server,
        relay,
        workers,
    })
}

/// The notifier of `printworks up`: the same handler as the Lambda
/// ([`notify::Notifier::new`]), with the outbox folder (or SMTP) for
/// e-mail, the outbox folder for SMS, and real HTTPS for tenant webhooks.
fn notifier(
    options: &Options,
    store: Arc<SqliteStore>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<notify::Notifier> {
    let config = notify::Config {
        caps: options.notify.caps.clone(),
        backoff: options.notify.backoff,
        smtp_url: options.notify.smtp_url.clone(),
        ..notify::Config::default()
    };
    let outbox = Arc::new(OutboxFolder::open(
        outbox_dir(&options.data_dir),
        clock.clone(),
    )?);
    let mail: Arc<dyn Mailer> = match &config.smtp_url {
        Some(url) => {
            let smtp = SmtpConfig::parse_url(url).map_err(|e| anyhow::anyhow!("--smtp: {e}"))?;
            Arc::new(SmtpMailer::new(&smtp, clock.clone()).map_err(|e| anyhow::anyhow!(e))?)
        }
        None => outbox.clone(),
    };
    let mut policy = config.webhook_policy();
    if options.notify.allow_loopback_webhooks {
        policy.allow_http = true;
        policy.allow_ips = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    }
    let channels = notify::Channels {
        mail,
        sms: outbox,
        webhooks: Arc::new(HttpWebhooks::new(UrlFetcher::new(policy)?)),
    };
    let ports = notify::Ports {
        orders: store.clone(),
        tenants: store.clone(),
        ledger: store,
        clock,
    };
    notify::Notifier::new(config, ports, channels)
}

/// Sends deferred messages whose day has come, every `every`.
async fn sweep_loop(
    notifier: Arc<notify::Notifier>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match notifier.sweep(notify::SWEEP_MAX).await {
            Ok(done) if !done.is_empty() => {
                tracing::info!(messages = done.len(), "deferred messages handled")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{:#}", e.0), "sweep failed; retried"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Runs the reconciler every `every` (the first run one period after the
/// start: a restart's own backlog is the relay's and the consumers').
async fn reconcile_loop(
    reconciler: reconciler::Reconciler,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = reconciler.run().await {
            tracing::warn!(error = %format!("{e:#}"), "reconciler run failed; the next one tries again");
        }
    }
}

/// Moves the outbox to the queues until told to stop, then once more.
async fn relay_loop(bus: LocalBus, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = *stop.borrow();
        loop {
            // Small chunks: a relay job holds the writer, and orders wait behind it.
            match bus.relay_outbox(200).await {
                Ok(0) => break,
                Ok(n) => tracing::debug!(events = n, "outbox relayed"),
                Err(e) => {
                    tracing::error!(error = %e, "outbox relay failed; retrying");
                    break;
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
