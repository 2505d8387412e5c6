//! Retrying: writes that lost a race to another writer ([`on_conflict`]),
//! and the failure of a queue-fed function that is worth retrying
//! ([`Retry`]).
//!
//! Every write of an order is conditional on the version that was read
//! (`OrderStore::transition` and friends), so two writers that read the
//! same order cannot both win: the loser gets [`StoreError::Conflict`],
//! reads the order again and decides again on fresh state. [`on_conflict`]
//! is that loop, with a short jittered back-off between attempts so that
//! writers racing for one order do not meet again at once.

use crate::ports::StoreError;
use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// A failure worth retrying (a store, a queue or a provider unavailable):
/// the queue message comes back and is handled again.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Retry(#[from] pub anyhow::Error);

impl From<StoreError> for Retry {
    fn from(e: StoreError) -> Retry {
        Retry(e.into())
    }
}

/// How one attempt of [`on_conflict`] failed.
#[derive(Debug)]
pub enum Attempt<E> {
    /// A conditional write lost to another writer: read again, decide again.
    Conflict,
    /// Anything else: returned at once, not retried.
    Failed(E),
}

impl<E> From<E> for Attempt<E> {
    fn from(e: E) -> Attempt<E> {
        Attempt::Failed(e)
    }
}

impl<E: From<StoreError>> Attempt<E> {
    /// A store result's error as an attempt's: [`StoreError::Conflict`] is
    /// retried, any other store error fails the attempt for good.
    pub fn store(e: StoreError) -> Attempt<E> {
        match e {
            StoreError::Conflict => Attempt::Conflict,
            other => Attempt::Failed(other.into()),
        }
    }
}

/// The first back-off after a lost race; it doubles with every attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(4);
/// The longest back-off between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Runs `attempt` until it does not lose a race, at most `max_attempts`
/// times (at least once). Between attempts it sleeps [`backoff`]. Its
/// success and its [`Attempt::Failed`] errors are returned as they are;
/// after `max_attempts` conflicts, [`StoreError::Conflict`] as an `E`.
///
/// Each attempt must read what it decides on afresh: the previous
/// attempt's reads are what lost.
pub async fn on_conflict<T, E, F, Fut>(max_attempts: u32, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt<E>>>,
    E: From<StoreError>,
{
    let max_attempts = max_attempts.max(1);
    for n in 0..max_attempts {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Conflict) if n + 1 < max_attempts => {
                tokio::time::sleep(backoff(n)).await;
            }
            Err(Attempt::Conflict) => {}
        }
    }
    tracing::warn!(attempts = max_attempts, "gave up: the record kept changing");
    Err(StoreError::Conflict.into())
}

/// The pause after the `n`-th lost race (from 0): [`FIRST_BACKOFF`]
/// doubled per attempt, at most [`MAX_BACKOFF`], and a random part of it
/// (between half and all of it) so racing writers spread out.
pub fn backoff(n: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << n.min(16))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
    half + Duration::from_micros(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for n in 0..20 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << n.min(16))
                .min(MAX_BACKOFF);
            for _ in 0..50 {
                let b = backoff(n);
                assert!(b >= full / 2 && b <= full, "{n}: {b:?} of {full:?}");
            }
        }
        assert_eq!(
            FIRST_BACKOFF.saturating_mul(1 << 10).min(MAX_BACKOFF),
            MAX_BACKOFF
        );
        let samples: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(5)).collect();
        assert!(samples.len() > 1, "no jitter: {samples:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_retried_until_an_attempt_wins() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<u32, StoreError> = on_conflict(5, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 { Err(Attempt::Conflict) } else { Ok(n) }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two pauses, of at most FIRST_BACKOFF and twice that.
        let slept = started.elapsed();
        assert!(
            slept >= FIRST_BACKOFF / 2 && slept <= FIRST_BACKOFF * 3,
            "{slept:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_after_the_limit_with_a_conflict() {
        let calls = AtomicU32::new(0);
        let result: Result<(), StoreError> = on_conflict(4, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::Conflict)
        })
        .await;
        assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A zero limit still tries once.
        let once: Result<(), StoreError> = on_conflict(0, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::Conflict)
        })
        .await;
        assert!(matches!(once, Err(StoreError::Conflict)));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_pass_through_at_once() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), Retry> = on_conflict(5, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::Failed(Retry(anyhow::anyhow!("queue down"))))
        })
        .await;
        assert_eq!(result.unwrap_err().to_string(), "queue down");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);

        // A store error other than a conflict fails the attempt for good.
        let calls = AtomicU32::new(0);
        let result: Result<(), StoreError> = on_conflict(5, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::store(StoreError::Unexpected(anyhow::anyhow!(
                "disk full"
            ))))
        })
        .await;
        assert!(matches!(result, Err(StoreError::Unexpected(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // ... and a conflict through `Attempt::store` is retried.
        let calls = AtomicU32::new(0);
        let result: Result<(), Retry> = on_conflict(3, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::store(StoreError::Conflict))
        })
        .await;
        let gave_up = result.unwrap_err();
        assert!(
            matches!(gave_up.0.downcast_ref(), Some(StoreError::Conflict)),
            "{gave_up:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
