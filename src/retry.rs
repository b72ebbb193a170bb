//! The one backoff schedule every retry loop uses (registry requests,
//! chunk stores, the chunk cache's fetches): exponential from a first
//! delay, capped, with up to a quarter added at random so that many
//! clients retrying together do not stay in step. Each caller bounds it by
//! its own count of tries or deadline.

use std::time::Duration;

/// An exponential backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Registries: slow to recover, and they may say how long (`Retry-After`).
    pub const REGISTRY: Backoff = Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(8),
    };
    /// Chunk stores: a read is waiting, within `-timeout`.
    pub const STORE: Backoff = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    /// The wait before try `attempt + 1` (`attempt` counts from 1): never
    /// less than the schedule, at most a quarter more.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let quarter = base / 4;
        base + quarter.mul_f64(f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_bounded_jitter() {
        let b = Backoff::STORE;
        for (attempt, base) in [(1, 100), (2, 200), (3, 400), (5, 1600), (6, 2000), (30, 2000)] {
            let d = b.delay(attempt);
            let base = Duration::from_millis(base);
            assert!(d >= base && d <= base + base / 4, "try {attempt}: {d:?}");
        }
    }
}
