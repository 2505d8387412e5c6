//! Plant relay benchmark: the real `edge-agent` binary relays N jobs (one
//! file of FILE_BYTES each, from a local blob store, by presigned URL) from
//! the local bus's job queue, served over the SQS JSON protocol, into a hot
//! folder. Prints jobs/s, the time to the first ticket, and the agent's
//! resident memory when idle at start, idle after the jobs, and at peak.
//!
//! Environment:
//! - `EDGE_AGENT_BIN` (required): the agent binary (`bench/plants/relay.sh`
//!   builds it with `cargo build --release -p edge-agent`);
//! - `JOBS` (1000), `FILE_BYTES` (1048576);
//! - `CONCURRENCY` (8): the agent's `concurrency`; a comma-separated list
//!   (`8,16`) runs one round per value, each on a fresh queue and state;
//! - `IDLE_SECS` (5): how long the agent sits idle before its RSS is read;
//! - `AGENT_RUST_LOG` (warn): the agent's `RUST_LOG`;
//! - `TIMEOUT_SECS` (900): a round that has not relayed every job by then fails;
//! - `RELAY_TMP`: the scratch directory (default `<workspace>/target/bench-relay-tmp`,
//!   on the same disk as the repository), removed at the end.

use axum::Router;
use edge_agent::config::{Config, DriverConfig, Folders};
use printworks::adapters::local::blobs::FsBlobStore;
use printworks::adapters::local::bus::{LocalBus, QueueConfig};
use printworks::adapters::local::db::{Db, Durability};
use printworks::adapters::local::sqs_api;
use printworks::clock::SystemClock;
use printworks::domain::catalog::ShippingMethod;
use printworks::domain::locale::CountryCode;
use printworks::domain::order::{Address, OrderId};
use printworks::domain::production::{
    Job, JobFile, JobProduct, job_id, job_id_valid, packing_reference,
};
use printworks::domain::tenant::TenantId;
use printworks::ports::{BlobStore, Clock};
use printworks_local::blob_routes;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const JOBS_QUEUE: &str = "plant-muc-jobs";
const EVENTS_QUEUE: &str = "plant-events";
const MIB: f64 = 1024.0 * 1024.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) of a process, in seconds; `"self"` for this one.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// `Threads`, `RssAnon` and `RssFile` of a process (the last two in bytes).
fn threads_and_rss_kinds(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    (
        field("Threads:"),
        field("RssAnon:") * 1024,
        field("RssFile:") * 1024,
    )
}

/// What creating an empty file costs on the scratch disk, in µs (wall and
/// CPU of this thread): the agent creates three inodes per job (spool
/// folder, spool file, ticket), and on some file systems (ext4 without a
/// journal, with many inodes freed in the last minutes) a creation costs
/// a millisecond of CPU. The files stay until the scratch is removed.
fn create_cost(dir: &Path, n: usize) -> (f64, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let thread_cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    let (wall, cpu) = (Instant::now(), thread_cpu());
    for i in 0..n {
        std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let per = |secs: f64| secs / n as f64 * 1e6;
    (per(wall.elapsed().as_secs_f64()), per(thread_cpu() - cpu))
}

/// Tickets in the hot folder (not the temporary dot-files).
fn tickets(hot: &Path) -> usize {
    std::fs::read_dir(hot)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with('.') && name.ends_with(".ticket.json")
                })
                .count()
        })
        .unwrap_or(0)
}

struct Round {
    config: PathBuf,
    hot: PathBuf,
}

/// Writes the agent's config for a fresh state and machine under `dir`.
fn agent_config(dir: &Path, base: &str, concurrency: usize) -> Round {
    let state = dir.join("state");
    let Folders { hot, done, error } = Folders::under(&dir.join("machine"));
    std::fs::create_dir_all(&state).unwrap();
    let config = Config {
        concurrency,
        wait_secs: 1,
        ..Config::local(
            base,
            "muc",
            (JOBS_QUEUE, EVENTS_QUEUE),
            state,
            DriverConfig::Hotfolder {
                hot: hot.clone(),
                done,
                error,
            },
        )
    };
    let path = dir.join("agent.toml");
    config.write(&path).unwrap();
    Round { config: path, hot }
}

/// The agent process; killed if still running when dropped (a failed
/// assertion), so a panicking bench leaves no agent behind.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Removes the scratch directory when the bench ends, also on a panic.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn spawn_agent(bin: &Path, config: &Path) -> AgentProcess {
    // The config file is the whole truth: no overrides from the caller's shell.
    let child = edge_agent::command(bin, config)
        .env("RUST_LOG", env_or("AGENT_RUST_LOG", "warn".to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    AgentProcess(child)
}

/// SIGTERM, then waits up to 30 s for the exit.
fn stop_agent(agent: &mut AgentProcess) -> ExitStatus {
    let child = &mut agent.0;
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("the agent did not stop within 30 s of SIGTERM ({status})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

/// Makes `n` blobs of `size` random bytes under the store's root (written
/// straight to disk: the store serves any file under its root), returning
/// their keys and sha256s.
fn make_blobs(root: &Path, n: usize, size: usize) -> Vec<(String, String)> {
    let mut rng = rand::rng();
    let mut buf = vec![0u8; size];
    let dir = root.join("prints");
    std::fs::create_dir_all(&dir).unwrap();
    let mut hashing = Duration::ZERO;
    let made = (0..n)
        .map(|i| {
            rng.fill_bytes(&mut buf);
            let key = format!("prints/f{i:06}.jpg");
            let mut f = std::fs::File::create(root.join(&key)).unwrap();
            f.write_all(&buf).unwrap();
            let t = Instant::now();
            let digest = hex::encode(Sha256::digest(&buf));
            hashing += t.elapsed();
            (key, digest)
        })
        .collect();
    println!(
        "sha256 (sha2 crate) in the bench process: {:.0} MiB/s",
        (n * size) as f64 / MIB / hashing.as_secs_f64()
    );
    made
}

async fn make_jobs(blobs: &FsBlobStore, files: &[(String, String)], size: u64) -> Vec<String> {
    let tenant = TenantId::parse("demo-b2b").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let ttl = Duration::from_secs(12 * 3600);
    let mut bodies = Vec::with_capacity(files.len());
    // Orders of up to 4 copies of one poster: 4 jobs share a packing reference.
    let mut order = OrderId::new();
    for (i, (key, sha256)) in files.iter().enumerate() {
        if i % 4 == 0 {
            order = OrderId::new();
        }
        let copies = (files.len() - i / 4 * 4).min(4) as u32;
        let copy = (i % 4) as u32 + 1;
        let id = job_id(&order, 1, copy);
        assert!(job_id_valid(&id), "{id}");
        let packing_ref = packing_reference("muc", &order);
        let signed = blobs.presign_get(key, ttl).await.unwrap();
        let job = Job {
            job_id: id,
            plant: "muc".into(),
            tenant: tenant.clone(),
            order_id: order.clone(),
            line: 1,
            copy,
            copies,
            product: JobProduct {
                sku: "poster-30x40".into(),
                name: "Poster 30x40 cm".into(),
                width_mm: 300,
                height_mm: 400,
                options: BTreeMap::from([("finish".to_string(), "glossy".to_string())]),
            },
            files: vec![JobFile {
                name: "1.jpg".into(),
                url: signed.url,
                sha256: sha256.clone(),
                bytes: size,
                width: 3614,
                height: 4795,
            }],
            files_expire_at: now + ttl,
            shipping_method: ShippingMethod::Standard,
            ship_to: Address {
                name: "Erika Mustermann".into(),
                company: None,
                line1: "Heidestr. 17".into(),
                line2: None,
                postal_code: "51147".into(),
                city: "Köln".into(),
                country: CountryCode::DE,
            },
            barcode: format!("{packing_ref}-1-{copy}"),
            packing_ref,
            jobs_in_package: copies,
        };
        let body = serde_json::to_string(&job).unwrap();
        Job::parse(&body).expect("a valid job message");
        bodies.push(body);
    }
    bodies
}

struct Outcome {
    concurrency: usize,
    secs: f64,
    first_secs: f64,
    intake_secs: Option<f64>,
    rss_start: u64,
    rss_idle: u64,
    hwm: u64,
}

#[allow(clippy::too_many_arguments)]
async fn relay_round(
    bin: &Path,
    dir: &Path,
    base: &str,
    bus: &LocalBus,
    bodies: &[String],
    size: u64,
    concurrency: usize,
    idle: Duration,
) -> Outcome {
    let n = bodies.len();
    println!(
        "\n== concurrency {concurrency}: {n} jobs of {} MiB ==",
        mib(size)
    );

    // Phase 1: a fresh agent on an empty queue, idle for 3 s.
    let empty = agent_config(&dir.join("idle-start"), base, concurrency);
    let mut agent = spawn_agent(bin, &empty.config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_start, hwm_start) = memory(agent.0.id());
    let status = stop_agent(&mut agent);
    assert!(status.success(), "the idle agent exited with {status}");
    println!(
        "fresh agent on an empty queue after 3 s: VmRSS {} MiB, VmHWM {} MiB ({status})",
        mib(rss_start),
        mib(hwm_start)
    );

    // Phase 2: the relay. Every job is on the queue before the agent starts.
    for chunk in bodies.chunks(256) {
        bus.send(JOBS_QUEUE, "message", chunk).await.unwrap();
    }
    let depth = bus.queue_depth(JOBS_QUEUE).await.unwrap();
    assert_eq!(depth.visible as usize, n, "the queue holds the jobs");
    let round = agent_config(&dir.join("relay"), base, concurrency);
    let bench_cpu_before = cpu_secs("self");
    let start = Instant::now();
    let mut agent = spawn_agent(bin, &round.config);
    let pid = agent.0.id();
    let deadline = start + Duration::from_secs(env_or("TIMEOUT_SECS", 900));
    let mut first = None;
    let mut intake_done = None;
    let mut last_depth_check = Instant::now();
    let mut peak_sampled = 0u64;
    loop {
        let count = tickets(&round.hot);
        if count > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if count >= n {
            break;
        }
        if intake_done.is_none() && last_depth_check.elapsed() >= Duration::from_millis(100) {
            last_depth_check = Instant::now();
            let d = bus.queue_depth(JOBS_QUEUE).await.unwrap();
            if d.visible + d.not_visible == 0 {
                intake_done = Some(start.elapsed());
            }
        }
        peak_sampled = peak_sampled.max(memory(pid).0);
        if let Some(status) = agent.0.try_wait().unwrap() {
            panic!("the agent exited early ({status}) after {count} tickets");
        }
        assert!(
            Instant::now() < deadline,
            "timed out with {count} of {n} tickets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let agent_cpu = cpu_secs(&pid.to_string());
    let bench_cpu = cpu_secs("self") - bench_cpu_before;
    let first = first.unwrap_or(elapsed);
    if intake_done.is_none() {
        let d = bus.queue_depth(JOBS_QUEUE).await.unwrap();
        if d.visible + d.not_visible == 0 {
            intake_done = Some(elapsed);
        }
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "relayed {n} jobs of {} MiB in {secs:.2} s: {:.1} jobs/s ({:.1} MiB/s)",
        mib(size),
        n as f64 / secs,
        n as f64 * size as f64 / MIB / secs
    );
    println!(
        "time to first ticket: {:.3} s; job queue empty (all intake done) after: {}",
        first.as_secs_f64(),
        intake_done.map_or("not yet".to_string(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        ))
    );

    println!(
        "CPU during the relay: agent {agent_cpu:.2} s ({:.0}% of one core), bench server and poller {bench_cpu:.2} s ({:.0}%)",
        agent_cpu / secs * 100.0,
        bench_cpu / secs * 100.0
    );

    // Idle: the queue is empty, the agent long-polls.
    let idle_cpu_before = cpu_secs(&pid.to_string());
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu_secs(&pid.to_string()) - idle_cpu_before;
    let (rss_idle, hwm) = memory(pid);
    let (threads, anon, file) = threads_and_rss_kinds(pid);
    println!(
        "agent RSS idle at start: {} MiB; idle after {n} jobs: {} MiB; peak: {} MiB (highest sampled VmRSS {} MiB)",
        mib(rss_start),
        mib(rss_idle),
        mib(hwm),
        mib(peak_sampled)
    );
    println!(
        "idle agent: {threads} threads, RssAnon {} MiB, RssFile {} MiB, CPU {:.0}% of one core over {:.0} s",
        mib(anon),
        mib(file),
        idle_cpu / idle.as_secs_f64() * 100.0,
        idle.as_secs_f64()
    );
    let events = bus.queue_depth(EVENTS_QUEUE).await.unwrap();
    let jobs_left = bus.queue_depth(JOBS_QUEUE).await.unwrap();
    println!(
        "after {:.0} s idle: {} reports on {EVENTS_QUEUE}; {JOBS_QUEUE} holds {} visible, {} in flight",
        idle.as_secs_f64(),
        events.visible + events.not_visible,
        jobs_left.visible,
        jobs_left.not_visible
    );
    let status = stop_agent(&mut agent);
    println!("agent stopped on SIGTERM: {status}");
    assert!(status.success(), "the agent exited with {status}");

    let out = Command::new(bin)
        .arg("--config")
        .arg(&round.config)
        .args(["status", "--limit", "0"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("edge-agent status runs");
    println!("$ edge-agent status --limit 0");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "edge-agent status: {}", out.status);

    // Drain plant-events for the next round. The round's files stay until
    // the end: on ext4 without a journal, inodes freed in the last minutes
    // make every file creation slower (see `create_cost`), which would
    // slow the next round.
    loop {
        let got = bus.receive(EVENTS_QUEUE, 10).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in &got {
            bus.delete(&m.receipt).await.unwrap();
        }
    }

    Outcome {
        concurrency,
        secs,
        first_secs: first.as_secs_f64(),
        intake_secs: intake_done.map(|d| d.as_secs_f64()),
        rss_start,
        rss_idle,
        hwm,
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let bin =
        PathBuf::from(std::env::var("EDGE_AGENT_BIN").expect(
            "EDGE_AGENT_BIN must name the edge-agent binary (bench/plants/relay.sh sets it)",
        ));
    assert!(bin.is_file(), "{} is not a file", bin.display());
    let n: usize = env_or("JOBS", 1000);
    let size: usize = env_or("FILE_BYTES", 1 << 20);
    let idle = Duration::from_secs(env_or("IDLE_SECS", 5));
    let concurrencies: Vec<usize> = env_or("CONCURRENCY", "8".to_string())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("CONCURRENCY: numbers, comma-separated")
        })
        .collect();
    assert!(n > 0 && size > 0);

    let tmp_root = std::env::var("RELAY_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-relay-tmp")
        });
    let dir = tmp_root.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let _scratch = Scratch(dir.clone());
    println!("scratch: {}", dir.display());

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db = Arc::new(Db::open(dir.join("platform.sqlite"), Durability::Normal).unwrap());
    let bus = LocalBus::new(db.clone(), clock.clone());
    let queue = |visibility: u64| QueueConfig {
        visibility_timeout: Duration::from_secs(visibility),
        max_receive_count: 5,
        dead_letter: None,
    };
    bus.declare_queue(JOBS_QUEUE, queue(120)).await.unwrap();
    bus.declare_queue(EVENTS_QUEUE, queue(30)).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let blobs = Arc::new(FsBlobStore::open(dir.join("blobs"), &base, clock.clone()).unwrap());
    let made = Instant::now();
    let root = blobs.root().to_path_buf();
    let files = tokio::task::spawn_blocking(move || make_blobs(&root, n, size))
        .await
        .unwrap();
    println!(
        "made {n} random files of {size} bytes in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let bodies = make_jobs(&blobs, &files, size as u64).await;
    let (wall, cpu) = create_cost(&dir.join("create-probe"), 200);
    println!("creating an empty file on the scratch disk: {wall:.0} us (CPU {cpu:.0} us)");

    let (shutdown, stop) = watch::channel(false);
    let router: Router =
        blob_routes::router(blobs.clone(), printworks::faults::Faults::off()).merge(
            sqs_api::router_with_shutdown(bus.clone(), base.clone(), stop.clone()),
        );
    let mut stop_server = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_server.wait_for(|s| *s).await;
            })
            .await
    });
    println!(
        "server {base}; agent {}; {} core(s); load average {}",
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut outcomes = Vec::new();
    for (i, &c) in concurrencies.iter().enumerate() {
        let round_dir = dir.join(format!("round-{i}"));
        outcomes
            .push(relay_round(&bin, &round_dir, &base, &bus, &bodies, size as u64, c, idle).await);
    }

    let _ = shutdown.send(true);
    let _ = server.await;
    db.close();

    println!("\nsummary ({n} jobs of {} MiB):", mib(size as u64));
    for o in &outcomes {
        let rate = n as f64 / o.secs;
        println!(
            "  concurrency {:>2}: {rate:>7.1} jobs/s ({:.2} s, first ticket {:.3} s, intake done {}); RSS idle start {} MiB, idle after {} MiB, peak {} MiB  [target >= 200 jobs/s: {}; idle < 20 MiB: {}]",
            o.concurrency,
            o.secs,
            o.first_secs,
            o.intake_secs.map_or("-".into(), |s| format!("{s:.2} s")),
            mib(o.rss_start),
            mib(o.rss_idle),
            mib(o.hwm),
            if rate >= 200.0 { "met" } else { "MISSED" },
            if o.rss_idle.max(o.rss_start) < 20 << 20 {
                "met"
            } else {
                "MISSED"
            },
        );
    }
}
