//! The one backoff policy: delays that double from a first one up to a ceiling. Task retries,
//! redeliveries after a fleet failure and webhook deliveries all wait by it.

use std::time::Duration;

/// Waits of `first`, `2 × first`, `4 × first`, ... never longer than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Between deliveries of a dispatch the fleet failed to run: 1 s, 2 s, 4 s, ... 30 s.
    pub const REDELIVERY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    /// Between attempts at a webhook delivery: 1 s, 2 s, 4 s, ... 5 minutes.
    pub const WEBHOOK: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after the `failures`-th failure (1 for the first, which waits `first`).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_and_level_off_at_the_ceiling() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(20));
        let delays: Vec<u64> = (0..=6).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(delays, [2, 2, 4, 8, 16, 20, 20]);
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(20));
    }
}
