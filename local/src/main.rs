//! `printworks`: run the platform locally, and manage tenants.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::store::SqliteStore;
use printworks::domain::locale::{CountryCode, Locale};
use printworks::domain::money::Currency;
use printworks::domain::notify::{DailyCaps, TenantWebhook, mint_webhook_secret};
use printworks::domain::tenant::{PaymentSetup, Tenant, TenantId, TenantKind};
use printworks::ports::TenantStore;
use printworks_local::platform::{self, Options};
use printworks_local::{operators, seed};

mod render_cmd;
use printworks::domain::catalog::Catalog;
use printworks::render::Fit;
use std::path::PathBuf;
use std::sync::Arc;

// The order path allocates many small JSON values; mimalloc took about 10 %
// of the CPU profile that glibc malloc had (docs/decisions/dependencies.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "printworks", version, about = "printworks on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Sync {
    /// Survives a power cut as well as a crash: an fsync per commit group.
    Full,
    /// Survives a crash of the process (kill -9); a power cut may lose the last commits.
    Normal,
}

#[derive(Clone, Copy, ValueEnum)]
enum FitArg {
    /// Cover the print, cutting the excess.
    Fill,
    /// Show the whole photo on the background colour.
    Fit,
}

#[derive(Clone, Copy, ValueEnum)]
enum PayEventArg {
    /// The payment went through.
    Succeeded,
    /// The card was declined.
    Failed,
    /// The customer must complete 3-D Secure (Stripe).
    RequiresAction,
    /// A refund (of --amount, by default all of it).
    Refund,
    /// A chargeback.
    Dispute,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on 127.0.0.1 with everything stored under the data directory.
    Up {
        #[arg(long, default_value_t = 3000)]
        port: u16,
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value = "full")]
        sync: Sync,
        /// A catalog JSON file to use instead of the built-in one.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Send e-mail through this SMTP server
        /// (`smtp://[user:pass@]host[:port][?tls=none|starttls|tls]`)
        /// instead of writing `.eml` files into <data dir>/outbox.
        #[arg(long, env = "SMTP_URL")]
        smtp: Option<String>,
        /// Daily sending caps per tenant and channel, JSON:
        /// '{"default": {"email": 5000}, "tenants": {"demo-brand": {"sms": 10}}}'.
        #[arg(long, env = "NOTIFY_DAILY_CAPS")]
        notify_caps: Option<String>,
        /// Development only: tenant webhooks may go to http://127.0.0.1.
        #[arg(long)]
        allow_loopback_webhooks: bool,
    },
    /// Render one photo for a product: print file and preview into OUT_DIR.
    Render {
        /// The product, e.g. poster-30x40.
        #[arg(long)]
        sku: String,
        #[arg(long, value_enum, default_value = "fill")]
        fit: FitArg,
        /// The part of the photo to print, x,y,w,h in pixels as the photo is shown.
        #[arg(long)]
        crop: Option<String>,
        /// The background of `--fit fit`, #rrggbb.
        #[arg(long, default_value = "#ffffff")]
        background: String,
        /// A product option, name=value (e.g. wrap=white for a canvas).
        #[arg(long = "option")]
        options: Vec<String>,
        /// A catalog JSON file to use instead of the built-in one.
        #[arg(long)]
        catalog: Option<PathBuf>,
        input: PathBuf,
        out_dir: PathBuf,
    },
    /// Send a correctly signed payment provider event for ORDER_ID to the
    /// local server (`printworks up`), as the provider would.
    Pay {
        order_id: String,
        /// The provider; by default the order's own.
        #[arg(long)]
        provider: Option<String>,
        #[arg(long, value_enum, default_value = "succeeded")]
        event: PayEventArg,
        /// Minor units (a partial refund); by default the order's total.
        #[arg(long)]
        amount: Option<i64>,
        /// Another payment than the order's own (a PaymentIntent id, an
        /// Adyen pspReference): a second payment, or its refund.
        #[arg(long)]
        payment_id: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Start the platform in this process, place sample orders for both
    /// plants over HTTP, wait until they ship, and show what happened to
    /// each: its timeline, its jobs and where its files went.
    Demo {
        /// Reused if it exists (the orders then go to new demo tenants).
        #[arg(long, default_value = "./var/demo")]
        data_dir: PathBuf,
        /// How many orders to place (posters, a canvas, cards, a photo box,
        /// a B2C poster paid by webhook; repeated beyond five).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        orders: u32,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: Box<TenantCommand>,
    },
    /// Manage operators (the shop's staff and the plants' operators).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// An operator's work on an order (the operator API): show it, release
    /// a hold, reprint jobs, cancel it.
    Ops(Box<OpsArgs>),
}

#[derive(clap::Args)]
struct OpsArgs {
    /// The operator's key (`printworks operator add` prints it).
    #[arg(long, env = "PRINTWORKS_OPERATOR_KEY", hide_env_values = true)]
    key: String,
    /// The operator API: `printworks up`, or a deployment's API URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:3000",
        conflicts_with = "aws_table"
    )]
    url: String,
    /// Act on a deployment's orders table directly (the AWS credentials of
    /// the environment), through the same operator API in this process.
    #[arg(long)]
    aws_table: Option<String>,
    /// Print the whole JSON answer instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: OpsCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Every dead-letter queue with how many messages it holds.
    List,
    /// What a queue's dead letters are (never their bodies).
    Show { queue: String },
    /// Send a queue's dead letters back to it, once per key.
    Redrive {
        queue: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum OpsCommand {
    /// The order with its timeline, jobs by attempt, payments and actions.
    Show { order: String },
    /// Release a held order where it stopped (optionally at another plant).
    Release {
        order: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        plant: Option<String>,
        /// Repeat a request safely with the key it printed.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Make printed jobs anew (damaged, lost in transit); the order ships again.
    Reprint {
        order: String,
        /// A job to reprint (repeatable).
        #[arg(long = "job", required = true)]
        jobs: Vec<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        plant: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Cancel an order that has not shipped (the plant is told).
    Cancel {
        order: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The open payment flags and refund requests of every tenant's orders.
    Flags,
    /// The orders the reconciler announced stuck (past their state's
    /// deadline) that are still in that state.
    Stuck,
    /// Dead letters: `list` the queues, `show QUEUE` a look at one,
    /// `redrive QUEUE` send them back.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Resolve a payment flag of an order with a note (what was done).
    Resolve {
        order: String,
        /// The flag's number, as `ops flags` or `ops show` lists it.
        #[arg(long)]
        flag: u32,
        #[arg(long)]
        note: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator and print its new key (shown once).
    Add {
        /// 2 to 40 of a-z, 0-9, '.', '-', '_', starting with a letter.
        #[arg(long)]
        id: String,
        /// `admin`, `support` (the orders of every tenant) or
        /// `plant:<plant id>` (that plant's jobs).
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// The environment in the key (`pwop_<env>_...`): `local` for
        /// `printworks up`, the stack's Stage (e.g. `prod`) on AWS.
        #[arg(long, default_value = "local")]
        env: String,
        /// Write to this DynamoDB table (a deployed stack's OrdersTable)
        /// instead of the local data directory. Needs the `aws` feature.
        #[arg(long)]
        aws_table: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its new API key (shown once).
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["b2c", "b2b"])]
        kind: String,
        /// Ship-to countries, comma-separated (DE,AT,CH).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "DE,AT,CH,FR,IT,NL,BE,LU,ES,DK"
        )]
        countries: Vec<String>,
        /// Currencies, comma-separated (EUR,CHF).
        #[arg(long, value_delimiter = ',', default_value = "EUR")]
        currencies: Vec<String>,
        #[arg(long, default_value = "en")]
        locale: String,
        /// The payment provider of a B2C tenant.
        #[arg(long, default_value = "stripe")]
        provider: String,
        /// The merchant account the tenant is bound to (Stripe: the
        /// `account` of its endpoint secrets in the webhook secrets; Adyen:
        /// its merchantAccountCode). Events of another account never move
        /// its orders.
        #[arg(long)]
        merchant_account: Option<String>,
        #[arg(long)]
        brand: Option<String>,
        /// Signed event webhooks to this https URL; a signing secret is
        /// made and shown once.
        #[arg(long)]
        webhook_url: Option<String>,
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// The environment in the key (`pw_<env>_...`): `local` for
        /// `printworks up`, the stack's Stage (e.g. `prod`) on AWS.
        #[arg(long, default_value = "local")]
        env: String,
        /// Write to this DynamoDB table (a deployed stack's OrdersTable)
        /// instead of the local data directory. Needs the `aws` feature.
        #[arg(long)]
        aws_table: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    if let Command::Render {
        sku,
        fit,
        crop,
        background,
        options,
        catalog,
        input,
        out_dir,
    } = &command
    {
        // No runtime and no tracing: one thread, measured as a whole process.
        let catalog = load_catalog(catalog.as_deref())?;
        return render_cmd::run(render_cmd::Args {
            catalog: &catalog,
            sku,
            fit: match fit {
                FitArg::Fill => Fit::Fill,
                FitArg::Fit => Fit::Fit,
            },
            crop: crop.as_deref(),
            background,
            options,
            input,
            out_dir,
        });
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(command))
}

fn load_catalog(path: Option<&std::path::Path>) -> anyhow::Result<Catalog> {
    Ok(match path {
        Some(p) => Catalog::from_json(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => Catalog::builtin().clone(),
    })
}

async fn run(command: Command) -> anyhow::Result<()> {
    // The demo prints its own account: the platform logs only warnings
    // unless RUST_LOG asks for more.
    let default_level = if matches!(command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    printworks::telemetry::init_with_default(default_level);
    match command {
        Command::Render { .. } => unreachable!("handled before the runtime starts"),
        Command::Up {
            port,
            data_dir,
            sync,
            catalog,
            smtp,
            notify_caps,
            allow_loopback_webhooks,
        } => {
            let notify = platform::NotifyOptions {
                smtp_url: smtp,
                caps: match notify_caps {
                    Some(raw) => {
                        DailyCaps::parse(&raw).map_err(|e| anyhow::anyhow!("--notify-caps: {e}"))?
                    }
                    None => DailyCaps::default(),
                },
                allow_loopback_webhooks,
                ..Default::default()
            };
            up(port, data_dir, sync, catalog, notify).await
        }
        Command::Demo { data_dir, orders } => demo(data_dir, orders).await,
        Command::Tenant { command } => tenant(*command).await,
        Command::Operator { command } => operator(command).await,
        Command::Ops(args) => ops(*args).await,
        Command::Pay {
            order_id,
            provider,
            event,
            amount,
            payment_id,
            url,
            data_dir,
        } => {
            let payment = payment_id.as_deref();
            pay(&order_id, provider, event, amount, payment, &url, &data_dir).await
        }
    }
}

async fn pay(
    order_id: &str,
    provider: Option<String>,
    event: PayEventArg,
    amount: Option<i64>,
    payment_id: Option<&str>,
    url: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    use printworks::domain::order::OrderId;
    use printworks_local::payments::{self, PayEvent};
    let id =
        OrderId::parse(order_id).with_context(|| format!("{order_id:?} is not an order id"))?;
    let db = Arc::new(Db::open(platform::db_path(data_dir), Durability::Normal)?);
    let store = SqliteStore::new(db.clone());
    let outcome = async {
        let order = store
            .find_order(&id)
            .await?
            .with_context(|| format!("no order {id} in {}", data_dir.display()))?;
        let provider = match (provider, &order.payment) {
            (Some(p), _) => p,
            (None, PaymentSetup::Provider { provider, .. }) => provider.clone(),
            (None, PaymentSetup::Invoice) => {
                bail!("order {id} is paid by invoice; pass --provider to send an event anyway")
            }
        };
        let secrets = payments::load_or_create_secrets(data_dir)?;
        let event = match event {
            PayEventArg::Succeeded => PayEvent::Succeeded,
            PayEventArg::Failed => PayEvent::Failed,
            PayEventArg::RequiresAction => PayEvent::RequiresAction,
            PayEventArg::Refund => PayEvent::Refund,
            PayEventArg::Dispute => PayEvent::Dispute,
        };
        let webhook = payments::signed_event_of(
            &secrets,
            &order,
            &provider,
            event,
            amount,
            payment_id,
            time::OffsetDateTime::now_utc(),
        )?;
        let (status, body) = payments::send(url, &webhook).await?;
        println!(
            "POST {}{} -> {status} {body}",
            url.trim_end_matches('/'),
            webhook.path
        );
        let after = store.find_order(&id).await?.context("the order vanished")?;
        println!("order {id} is now {}", after.state.as_str());
        if !(200..300).contains(&status) {
            bail!("the webhook was refused");
        }
        Ok(())
    }
    .await;
    db.close();
    outcome
}

async fn demo(data_dir: PathBuf, orders: u32) -> anyhow::Result<()> {
    use printworks_local::demo::{self, DemoOptions};
    let options = DemoOptions {
        orders: orders as usize,
        progress: true,
        ..DemoOptions::new(data_dir)
    };
    let summary = demo::run(options).await?;
    println!("\n{summary}");
    if !summary.all_finished() {
        bail!("some orders did not finish in time");
    }
    Ok(())
}

async fn up(
    port: u16,
    data_dir: PathBuf,
    sync: Sync,
    catalog: Option<PathBuf>,
    notify: platform::NotifyOptions,
) -> anyhow::Result<()> {
    let durability = match sync {
        Sync::Normal => Durability::Normal,
        Sync::Full => Durability::Full,
    };
    let smtp = notify.smtp_url.is_some();
    let options = Options {
        port,
        durability,
        catalog,
        notify,
        // PRINTWORKS_FAULTS turns the fault-injection switch on (testing only).
        faults: printworks::faults::Faults::from_env()?,
        ..Options::new(&data_dir)
    };
    let running = platform::start(options).await?;
    let orders = running.store.count_orders().await?;
    println!("listening on {}", running.base_url());
    println!(
        "data in {} ({orders} orders kept), durability {}",
        data_dir.display(),
        match sync {
            Sync::Normal => "normal",
            Sync::Full => "full",
        }
    );
    if !running.seeded.is_empty() {
        println!("demo tenants created; their API keys are shown this once:");
        for created in &running.seeded {
            println!("key {} {}", created.tenant.id, created.api_key);
        }
        if let Some(b2b) = running
            .seeded
            .iter()
            .find(|c| c.tenant.id.as_str() == "demo-b2b")
        {
            println!(
                "\ntry it: a poster of the sample photo every demo tenant has as upload {} \
                 (a B2B order is paid on placement, so it is rendered, printed and shipped):\n",
                seed::SAMPLE_UPLOAD_ID
            );
            println!(
                "{}",
                seed::example_request(&running.base_url(), &b2b.api_key)
            );
        }
        println!(
            "\na demo-brand (B2C) order waits for its payment; its `checkout` says what to pay, and\n  printworks pay ORDER_ID [--event succeeded|failed|requires-action|refund|dispute]\nsends the provider's signed webhook (secrets in {}).",
            printworks_local::payments::secrets_path(&data_dir).display()
        );
    }
    if smtp {
        println!(
            "e-mail goes through the SMTP server; SMS into {}",
            platform::outbox_dir(&data_dir).display()
        );
    } else {
        println!(
            "e-mail (.eml) and SMS go into {}",
            platform::outbox_dir(&data_dir).display()
        );
    }
    println!(
        "the back office: {}/console (log in with an operator key: printworks operator add --id NAME --role support --data-dir {})",
        running.base_url(),
        data_dir.display()
    );
    println!("Ctrl-C stops.");
    shutdown_signal().await;
    println!("stopping…");
    running.stop().await?;
    println!("stopped; everything is kept in {}", data_dir.display());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn tenant(command: TenantCommand) -> anyhow::Result<()> {
    let TenantCommand::Add {
        id,
        name,
        kind,
        countries,
        currencies,
        locale,
        provider,
        merchant_account,
        brand,
        webhook_url,
        data_dir,
        env,
        aws_table,
    } = command;
    let id = TenantId::parse(&id)?;
    let countries = countries
        .iter()
        .map(|c| CountryCode::parse(c.trim()).with_context(|| format!("unknown country {c:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let currencies = currencies
        .iter()
        .map(|c| Currency::parse(c.trim()).with_context(|| format!("unknown currency {c:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let Some(default_locale) = Locale::parse(&locale) else {
        bail!("unknown locale {locale:?}")
    };
    let (kind, payment) = match kind.as_str() {
        "b2b" => (TenantKind::B2b, PaymentSetup::Invoice),
        _ => (
            TenantKind::B2c,
            PaymentSetup::Provider {
                provider,
                merchant_account,
            },
        ),
    };
    let tenant = Tenant {
        brand: brand.unwrap_or_else(|| id.to_string()),
        id,
        name,
        kind,
        countries,
        currencies,
        default_locale,
        payment,
        notifications: Default::default(),
    };
    let mut tenant = tenant;
    if let Some(url) = webhook_url {
        // Plain http only to this machine, and only delivered by
        // `up --allow-loopback-webhooks` (development).
        if !(url.starts_with("https://") || url.starts_with("http://127.0.0.1:")) {
            bail!("--webhook-url must be an https URL");
        }
        tenant.notifications.webhook = Some(TenantWebhook {
            url,
            secret: mint_webhook_secret(),
        });
    }
    let created = match aws_table {
        Some(table) => add_to_aws(&table, &env, tenant).await?,
        None => {
            let db = Arc::new(Db::open(platform::db_path(&data_dir), Durability::Normal)?);
            let store = SqliteStore::new(db.clone());
            let created = add_new_tenant(&store, &env, tenant).await;
            db.close();
            created?
        }
    };
    println!(
        "tenant {} created; its API key (shown once):",
        created.tenant.id
    );
    println!("{}", created.api_key);
    if let Some(webhook) = &created.tenant.notifications.webhook {
        println!(
            "its webhook signing secret (shown once; header Printworks-Signature, Stripe's scheme):"
        );
        println!("{}", webhook.secret);
    }
    Ok(())
}

async fn add_new_tenant(
    store: &dyn TenantStore,
    env: &str,
    tenant: Tenant,
) -> anyhow::Result<seed::CreatedTenant> {
    if store.tenant(&tenant.id).await?.is_some() {
        bail!("tenant {} already exists", tenant.id);
    }
    Ok(seed::add_tenant(store, env, tenant).await?)
}

#[cfg(feature = "aws")]
async fn add_to_aws(table: &str, env: &str, tenant: Tenant) -> anyhow::Result<seed::CreatedTenant> {
    use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config};
    let store = DynamoStore::from_sdk(&load_sdk_config().await, table);
    add_new_tenant(&store, env, tenant).await
}

#[cfg(not(feature = "aws"))]
async fn add_to_aws(
    _table: &str,
    _env: &str,
    _tenant: Tenant,
) -> anyhow::Result<seed::CreatedTenant> {
    bail!(
        "this build has no AWS support: cargo run -p printworks-local --features aws -- tenant add ..."
    )
}

async fn ops(args: OpsArgs) -> anyhow::Result<()> {
    use printworks_local::ops_cmd::{self, OpsRequest, Target};
    use serde_json::json;
    let key_or_new = |key: Option<String>| key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request = match args.command {
        OpsCommand::Show { order } => OpsRequest::show(&order),
        OpsCommand::Release {
            order,
            reason,
            plant,
            idempotency_key,
        } => OpsRequest::act(
            &order,
            "release",
            json!({ "reason": reason, "plant": plant }),
            key_or_new(idempotency_key),
        ),
        OpsCommand::Reprint {
            order,
            jobs,
            reason,
            plant,
            idempotency_key,
        } => OpsRequest::act(
            &order,
            "reprint",
            json!({ "jobs": jobs, "reason": reason, "plant": plant }),
            key_or_new(idempotency_key),
        ),
        OpsCommand::Cancel {
            order,
            reason,
            idempotency_key,
        } => OpsRequest::act(
            &order,
            "cancel",
            json!({ "reason": reason }),
            key_or_new(idempotency_key),
        ),
        OpsCommand::Flags => OpsRequest::flags(),
        OpsCommand::Stuck => OpsRequest::stuck(),
        OpsCommand::Dlq { command } => match command {
            DlqCommand::List => OpsRequest::dead_letter_queues(),
            DlqCommand::Show { queue } => OpsRequest::dead_letters(&queue),
            DlqCommand::Redrive {
                queue,
                idempotency_key,
            } => OpsRequest::redrive(&queue, key_or_new(idempotency_key)),
        },
        OpsCommand::Resolve {
            order,
            flag,
            note,
            idempotency_key,
        } => OpsRequest::act(
            &order,
            "resolve",
            json!({ "flag": flag, "note": note }),
            key_or_new(idempotency_key),
        ),
    };
    let target = match &args.aws_table {
        Some(table) => Target::Router(ops_router_on_aws(table, &args.key).await?),
        None => Target::Http(args.url.clone()),
    };
    let answer = ops_cmd::send(&target, &args.key, &request).await?;
    if !(200..300).contains(&answer.status) {
        // A refusal is an answer, not a failure of this program: said in
        // one line (what is allowed instead included), exit status 1.
        eprintln!("refused: {}", ops_cmd::refusal(&answer));
        std::process::exit(1);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else if request.path == "/v1/ops/flags" {
        println!("{}", ops_cmd::flags_summary(&answer.body));
    } else if request.path == "/v1/ops/stuck" {
        println!("{}", ops_cmd::stuck_summary(&answer.body));
    } else if request.path.starts_with("/v1/ops/dlq") {
        println!("{}", ops_cmd::dlq_summary(&answer.body));
    } else {
        println!("{}", ops_cmd::summary(&answer.body));
    }
    if let Some(key) = &request.idempotency_key {
        let again = if answer.replayed {
            "a repeat: nothing was done again"
        } else {
            "repeat with it to be sure it happens once"
        };
        println!("  Idempotency-Key {key} ({again})");
    }
    Ok(())
}

/// The operator API's router on the deployed `table`, for the environment
/// of `key` (the key is still checked against the table by the router).
#[cfg(feature = "aws")]
async fn ops_router_on_aws(table: &str, key: &str) -> anyhow::Result<axum::Router> {
    use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config};
    use printworks::domain::tenant::PresentedKey;
    let env = PresentedKey::parse(key)
        .map_err(|e| anyhow::anyhow!("--key is not an operator key: {e}"))?
        .env;
    let store = Arc::new(DynamoStore::from_sdk(&load_sdk_config().await, table));
    let app = ops_api::App::new(
        ops_api::Config::for_env(&env)?,
        ops_api::Ops::new(
            Arc::new(Catalog::builtin().clone()),
            store.clone(),
            Arc::new(printworks::clock::SystemClock),
        ),
        store,
    );
    Ok(ops_api::router(Arc::new(app)))
}

#[cfg(not(feature = "aws"))]
async fn ops_router_on_aws(_table: &str, _key: &str) -> anyhow::Result<axum::Router> {
    bail!("this build has no AWS support: cargo run -p printworks-local --features aws -- ops ...")
}

async fn operator(command: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand::Add {
        id,
        role,
        data_dir,
        env,
        aws_table,
    } = command;
    let now = time::OffsetDateTime::now_utc();
    let (operator, key) = match aws_table {
        Some(table) => add_operator_to_aws(&table, &id, &role, &env, now).await?,
        None => {
            let db = Arc::new(Db::open(platform::db_path(&data_dir), Durability::Normal)?);
            let store = SqliteStore::new(db.clone());
            let added = operators::add(&store, &id, &role, &env, now).await;
            db.close();
            added?
        }
    };
    println!(
        "operator {} ({}) created; its key (shown once, the bearer token of /v1/ops):",
        operator.id,
        operator.role.as_string()
    );
    println!("{}", key.full);
    Ok(())
}

#[cfg(feature = "aws")]
async fn add_operator_to_aws(
    table: &str,
    id: &str,
    role: &str,
    env: &str,
    now: time::OffsetDateTime,
) -> anyhow::Result<(
    printworks::domain::operator::Operator,
    printworks::domain::operator::NewOperatorKey,
)> {
    use printworks::adapters::aws::{dynamodb::DynamoStore, load_sdk_config};
    let store = DynamoStore::from_sdk(&load_sdk_config().await, table);
    Ok(operators::add(&store, id, role, env, now).await?)
}

#[cfg(not(feature = "aws"))]
async fn add_operator_to_aws(
    _table: &str,
    _id: &str,
    _role: &str,
    _env: &str,
    _now: time::OffsetDateTime,
) -> anyhow::Result<(
    printworks::domain::operator::Operator,
    printworks::domain::operator::NewOperatorKey,
)> {
    bail!(
        "this build has no AWS support: cargo run -p printworks-local --features aws -- operator add ..."
    )
}
