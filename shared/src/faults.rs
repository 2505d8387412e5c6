//! The fault-injection switch: the failures that at-least-once delivery
//! lets happen, made to happen on purpose so tests can show that every
//! effect still happens exactly once.
//!
//! - **duplicate deliveries**: every queue message is delivered twice (the
//!   local bus enqueues a second copy; a Lambda handler runs each record
//!   twice);
//! - **lost acknowledgements**: a handler did its work and wrote it, and the
//!   acknowledgement is lost, so the message comes back (the local consumer
//!   does not delete it; a Lambda reports it as a batch item failure);
//! - **publisher crashes**: the outbox publisher publishes and dies before it
//!   marks the events published, so they are published again;
//! - **outages**: the blob store or the queues refuse every call for
//!   `lasting` out of every `every`.
//!
//! Off unless a test (or `PRINTWORKS_FAULTS`) turns it on. Off is `None`
//! inside, so every check costs one branch and no allocation, lock or
//! random number. The rolls come from a seeded generator, and every fault
//! that fires is counted, so a test can show that its faults really
//! happened.

use crate::ports::{BlobStore, PresignedRequest, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable the Lambdas and `printworks up` read, e.g.
/// `duplicate,ack-loss=0.1,publisher-crash=0.2,blobs-down=1s/10s,queues-down=500ms/7s,seed=7`.
pub const ENV: &str = "PRINTWORKS_FAULTS";

/// What to break, and how often.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    /// Deliver every queue message twice.
    pub duplicate_deliveries: bool,
    /// The share (0..=1) of handled messages whose acknowledgement is lost.
    pub lost_acks: f64,
    /// The share (0..=1) of outbox publications that crash between publish
    /// and mark.
    pub publisher_crashes: f64,
    pub blobs_down: Option<Outage>,
    pub queues_down: Option<Outage>,
    /// Seeds the rolls, so a run's faults can be replayed.
    pub seed: u64,
}

/// Unavailable for `lasting` at the start of every `every`, offset by
/// `phase` from the switch's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub lasting: Duration,
    pub every: Duration,
    pub phase: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{ENV}: {0}")]
pub struct FaultPlanError(String);

fn share(name: &str, raw: &str) -> Result<f64, FaultPlanError> {
    match raw.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(FaultPlanError(format!(
            "{name} must be a share from 0 to 1, not {raw:?}"
        ))),
    }
}

fn duration(name: &str, raw: &str) -> Result<Duration, FaultPlanError> {
    let bad = || {
        FaultPlanError(format!(
            "{name}: {raw:?} is not a duration like 500ms or 2s"
        ))
    };
    let (number, unit) = match raw.strip_suffix("ms") {
        Some(n) => (n, 1),
        None => (raw.strip_suffix('s').ok_or_else(bad)?, 1000),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(n.checked_mul(unit).ok_or_else(bad)?))
}

fn outage(name: &str, raw: &str) -> Result<Outage, FaultPlanError> {
    let (lasting, every) = raw.split_once('/').ok_or_else(|| {
        FaultPlanError(format!(
            "{name} must be LASTING/EVERY, e.g. 1s/10s, not {raw:?}"
        ))
    })?;
    let (lasting, every) = (duration(name, lasting)?, duration(name, every)?);
    if every.is_zero() || lasting >= every {
        return Err(FaultPlanError(format!(
            "{name}: the outage must be shorter than its period ({raw:?})"
        )));
    }
    Ok(Outage {
        lasting,
        every,
        phase: Duration::ZERO,
    })
}

impl FaultPlan {
    /// Parses `PRINTWORKS_FAULTS`' syntax: comma-separated `duplicate`,
    /// `ack-loss=P`, `publisher-crash=P`, `blobs-down=LASTING/EVERY`,
    /// `queues-down=LASTING/EVERY`, `seed=N`.
    pub fn parse(raw: &str) -> Result<FaultPlan, FaultPlanError> {
        let mut plan = FaultPlan::default();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            match (name, value) {
                ("duplicate", "") => plan.duplicate_deliveries = true,
                ("ack-loss", v) => plan.lost_acks = share(name, v)?,
                ("publisher-crash", v) => plan.publisher_crashes = share(name, v)?,
                ("blobs-down", v) => plan.blobs_down = Some(outage(name, v)?),
                ("queues-down", v) => {
                    let mut o = outage(name, v)?;
                    // Not at the same moments as the blob store.
                    o.phase = o.every / 2;
                    plan.queues_down = Some(o);
                }
                ("seed", v) => {
                    plan.seed = v
                        .parse()
                        .map_err(|_| FaultPlanError(format!("seed: {v:?} is not a number")))?
                }
                _ => return Err(FaultPlanError(format!("no fault {part:?}"))),
            }
        }
        Ok(plan)
    }
}

/// How many faults of each kind fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub duplicate_deliveries: u64,
    pub lost_acks: u64,
    pub publisher_crashes: u64,
    pub blob_outages: u64,
    pub queue_outages: u64,
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} duplicate deliveries, {} lost acknowledgements, {} publisher crashes, {} calls refused by the blob store, {} by the queues",
            self.duplicate_deliveries,
            self.lost_acks,
            self.publisher_crashes,
            self.blob_outages,
            self.queue_outages
        )
    }
}

#[derive(Debug)]
struct Inner {
    plan: FaultPlan,
    started: Instant,
    rolls: AtomicU64,
    duplicate_deliveries: AtomicU64,
    lost_acks: AtomicU64,
    publisher_crashes: AtomicU64,
    blob_outages: AtomicU64,
    queue_outages: AtomicU64,
}

/// The switch, cheap to clone and share; [`Faults::off`] by default.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<Arc<Inner>>);

/// The error of a call refused by an injected outage.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: the {0} is unavailable")]
pub struct Unavailable(pub &'static str);

/// splitmix64: a well-mixed 64-bit value from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Faults {
    pub fn off() -> Faults {
        Faults(None)
    }

    pub fn on(plan: FaultPlan) -> Faults {
        Faults(Some(Arc::new(Inner {
            plan,
            started: Instant::now(),
            rolls: AtomicU64::new(0),
            duplicate_deliveries: AtomicU64::new(0),
            lost_acks: AtomicU64::new(0),
            publisher_crashes: AtomicU64::new(0),
            blob_outages: AtomicU64::new(0),
            queue_outages: AtomicU64::new(0),
        })))
    }

    /// From `PRINTWORKS_FAULTS`; unset or empty is off.
    pub fn from_env() -> Result<Faults, FaultPlanError> {
        match std::env::var(ENV) {
            Ok(raw) if !raw.trim().is_empty() => {
                let faults = Faults::on(FaultPlan::parse(&raw)?);
                tracing::warn!(plan = raw, "fault injection is ON");
                Ok(faults)
            }
            _ => Ok(Faults::off()),
        }
    }

    /// The process-wide switch of the Lambdas, read once from the
    /// environment. A plan that does not parse is reported and left off.
    pub fn global() -> &'static Faults {
        static GLOBAL: std::sync::OnceLock<Faults> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            Faults::from_env().unwrap_or_else(|e| {
                tracing::error!(error = %e, "fault injection left off");
                Faults::off()
            })
        })
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    fn roll(inner: &Inner, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let n = inner.rolls.fetch_add(1, Ordering::Relaxed);
        let x = mix(inner.plan.seed ^ mix(n));
        // The top 53 bits as a uniform value in [0, 1).
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// How many copies of each message to deliver (1, or 2 with duplicate
    /// deliveries on); counts the extra ones.
    pub fn copies(&self, messages: usize) -> usize {
        match &self.0 {
            Some(inner) if inner.plan.duplicate_deliveries => {
                inner
                    .duplicate_deliveries
                    .fetch_add(messages as u64, Ordering::Relaxed);
                2
            }
            _ => 1,
        }
    }

    /// Counts `n` extra copies delivered (when the caller learns the number
    /// after asking [`Faults::copies`] with 0).
    pub fn duplicated(&self, n: usize) {
        if let Some(inner) = &self.0 {
            inner
                .duplicate_deliveries
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Whether this handled message's acknowledgement is lost.
    pub fn lose_ack(&self) -> bool {
        match &self.0 {
            Some(inner) if Faults::roll(inner, inner.plan.lost_acks) => {
                inner.lost_acks.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Whether the outbox publisher crashes after this publication and
    /// before marking it.
    pub fn crash_publisher(&self) -> bool {
        match &self.0 {
            Some(inner) if Faults::roll(inner, inner.plan.publisher_crashes) => {
                inner.publisher_crashes.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    fn down(inner: &Inner, outage: Option<Outage>, counter: &AtomicU64) -> bool {
        let Some(o) = outage else { return false };
        let t = inner.started.elapsed().as_millis() + o.every.as_millis() - o.phase.as_millis();
        if t % o.every.as_millis() < o.lasting.as_millis() {
            counter.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// `Err` while the blob store is in an outage.
    pub fn blobs(&self) -> Result<(), Unavailable> {
        match &self.0 {
            Some(inner) if Faults::down(inner, inner.plan.blobs_down, &inner.blob_outages) => {
                Err(Unavailable("blob store"))
            }
            _ => Ok(()),
        }
    }

    /// `Err` while the queues are in an outage.
    pub fn queues(&self) -> Result<(), Unavailable> {
        match &self.0 {
            Some(inner) if Faults::down(inner, inner.plan.queues_down, &inner.queue_outages) => {
                Err(Unavailable("queue"))
            }
            _ => Ok(()),
        }
    }

    pub fn counts(&self) -> FaultCounts {
        match &self.0 {
            None => FaultCounts::default(),
            Some(i) => FaultCounts {
                duplicate_deliveries: i.duplicate_deliveries.load(Ordering::Relaxed),
                lost_acks: i.lost_acks.load(Ordering::Relaxed),
                publisher_crashes: i.publisher_crashes.load(Ordering::Relaxed),
                blob_outages: i.blob_outages.load(Ordering::Relaxed),
                queue_outages: i.queue_outages.load(Ordering::Relaxed),
            },
        }
    }
}

/// A blob store behind the switch: `put` and `get` fail during the blob
/// store's outages (presigning is local arithmetic, as with S3, and always
/// works).
pub struct FaultyBlobStore {
    pub inner: Arc<dyn BlobStore>,
    pub faults: Faults,
}

impl FaultyBlobStore {
    /// `inner` itself when the switch is off, so off costs nothing.
    pub fn wrap(inner: Arc<dyn BlobStore>, faults: &Faults) -> Arc<dyn BlobStore> {
        if faults.is_on() {
            Arc::new(FaultyBlobStore {
                inner,
                faults: faults.clone(),
            })
        } else {
            inner
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        self.faults
            .blobs()
            .map_err(|e| StoreError::Unexpected(anyhow::anyhow!(e)))
    }
}

#[async_trait::async_trait]
impl BlobStore for FaultyBlobStore {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        self.inner
            .presign_put(key, content_type, content_length, ttl)
            .await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_get(key, ttl).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put(key, bytes, content_type).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_injects_nothing_and_counts_nothing() {
        let f = Faults::off();
        assert_eq!(f.copies(3), 1);
        assert!(!(0..1000).any(|_| f.lose_ack() || f.crash_publisher()));
        assert!(f.blobs().is_ok() && f.queues().is_ok());
        assert_eq!(f.counts(), FaultCounts::default());
        assert!(!Faults::default().is_on());
    }

    #[test]
    fn the_env_syntax_parses_and_bad_plans_are_refused() {
        let plan = FaultPlan::parse(
            "duplicate, ack-loss=0.1,publisher-crash=0.25,blobs-down=1s/10s,queues-down=500ms/4s,seed=7",
        )
        .unwrap();
        assert!(plan.duplicate_deliveries);
        assert_eq!(
            (plan.lost_acks, plan.publisher_crashes, plan.seed),
            (0.1, 0.25, 7)
        );
        let blobs = plan.blobs_down.unwrap();
        assert_eq!(
            (blobs.lasting, blobs.every),
            (Duration::from_secs(1), Duration::from_secs(10))
        );
        let queues = plan.queues_down.unwrap();
        assert_eq!(queues.lasting, Duration::from_millis(500));
        assert_eq!(queues.phase, Duration::from_secs(2));
        assert_eq!(FaultPlan::parse("").unwrap(), FaultPlan::default());
        for bad in [
            "ack-loss=2",
            "ack-loss=x",
            "blobs-down=10s/1s",
            "blobs-down=1s",
            "queues-down=1h/2h",
            "explode",
            "seed=-1",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn rolls_fire_at_about_their_share_and_replay_with_the_seed() {
        let plan = FaultPlan {
            lost_acks: 0.2,
            seed: 42,
            ..FaultPlan::default()
        };
        let run = |plan: FaultPlan| {
            let f = Faults::on(plan);
            (0..10_000).map(|_| f.lose_ack()).collect::<Vec<_>>()
        };
        let a = run(plan.clone());
        let fired = a.iter().filter(|x| **x).count();
        assert!((1_700..2_300).contains(&fired), "{fired} of 10000 at 0.2");
        assert_eq!(a, run(plan.clone()), "the same seed gives the same faults");
        assert_ne!(a, run(FaultPlan { seed: 43, ..plan }));
    }

    #[test]
    fn duplicates_and_outages_are_counted() {
        let f = Faults::on(FaultPlan {
            duplicate_deliveries: true,
            blobs_down: Some(Outage {
                lasting: Duration::from_secs(3600),
                every: Duration::from_secs(7200),
                phase: Duration::ZERO,
            }),
            queues_down: Some(Outage {
                lasting: Duration::from_secs(3600),
                every: Duration::from_secs(7200),
                phase: Duration::from_secs(3600),
            }),
            ..FaultPlan::default()
        });
        assert_eq!(f.copies(5), 2);
        // At the start of its period the blob store is down; the queues,
        // half a period later, are up.
        assert!(f.blobs().is_err());
        assert!(f.queues().is_ok());
        let counts = f.counts();
        assert_eq!(
            (
                counts.duplicate_deliveries,
                counts.blob_outages,
                counts.queue_outages
            ),
            (5, 1, 0)
        );
    }
}
