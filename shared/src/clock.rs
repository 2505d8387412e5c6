//! The adapters of the [`Clock`] port: [`SystemClock`], the wall clock
//! every deployed function and the local runner use, and [`ManualClock`],
//! the clock tests move by hand. `ManualClock` is not behind the `testing`
//! feature: crates whose tests use it (the local runner's, the
//! payment-webhook function's) take this crate without that feature.

use crate::ports::Clock;
use std::time::Duration;
use time::OffsetDateTime;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock tests move by hand (SQS visibility, URL expiry) instead of sleeping.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock(std::sync::Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let start = time::macros::datetime!(2026-11-22 23:59:30 UTC);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(45));
        assert_eq!(
            clock.now(),
            time::macros::datetime!(2026-11-23 00:00:15 UTC)
        );
        assert!(SystemClock.now() > start - time::Duration::days(365 * 10));
    }
}
