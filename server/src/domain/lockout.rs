//! Sign-in throttling per account: after `delay_after` consecutive failures each further attempt
//! waits 1 s, 2 s, 4 s, … (capped); after `lock_after` the account is locked until an admin
//! unlocks it. The counter lives in the store, so every replica sees the same state.

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub delay_after: u32,
    pub lock_after: u32,
    pub max_delay: Duration,
}

/// What a failed attempt leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Nothing beyond the counter.
    Counted,
    /// The next attempt is refused before this instant.
    DelayedUntil(DateTime<Utc>),
    /// Locked until an admin unlocks.
    Locked,
}

/// Whether an attempt may even be checked right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    Wait { retry_after_secs: i64 },
    Locked,
}

impl LockoutPolicy {
    /// `failures` is the count including the attempt that just failed.
    pub fn after_failure(&self, failures: u32, now: DateTime<Utc>) -> AfterFailure {
        if failures >= self.lock_after {
            return AfterFailure::Locked;
        }
        if failures < self.delay_after {
            return AfterFailure::Counted;
        }
        let exponent = (failures - self.delay_after).min(30);
        let delay = Duration::seconds(1_i64 << exponent).min(self.max_delay);
        AfterFailure::DelayedUntil(now + delay)
    }

    pub fn gate(locked: bool, delayed_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Gate {
        if locked {
            return Gate::Locked;
        }
        match delayed_until {
            Some(until) if until > now => {
                let millis = (until - now).num_milliseconds();
                Gate::Wait {
                    retry_after_secs: (millis + 999) / 1000,
                }
            }
            _ => Gate::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            delay_after: 5,
            lock_after: 20,
            max_delay: Duration::seconds(900),
        }
    }

    #[test]
    fn delays_grow_then_lock() {
        let now = Utc::now();
        let p = policy();
        for n in 1..5 {
            assert_eq!(p.after_failure(n, now), AfterFailure::Counted, "{n}");
        }
        assert_eq!(
            p.after_failure(5, now),
            AfterFailure::DelayedUntil(now + Duration::seconds(1))
        );
        assert_eq!(
            p.after_failure(6, now),
            AfterFailure::DelayedUntil(now + Duration::seconds(2))
        );
        assert_eq!(
            p.after_failure(8, now),
            AfterFailure::DelayedUntil(now + Duration::seconds(8))
        );
        assert_eq!(
            p.after_failure(19, now),
            AfterFailure::DelayedUntil(now + Duration::seconds(900))
        );
        assert_eq!(p.after_failure(20, now), AfterFailure::Locked);
        assert_eq!(p.after_failure(500, now), AfterFailure::Locked);
    }

    #[test]
    fn gate_rounds_waits_up() {
        let now = Utc::now();
        assert_eq!(LockoutPolicy::gate(false, None, now), Gate::Open);
        assert_eq!(
            LockoutPolicy::gate(false, Some(now - Duration::seconds(1)), now),
            Gate::Open
        );
        assert_eq!(
            LockoutPolicy::gate(false, Some(now + Duration::milliseconds(1500)), now),
            Gate::Wait {
                retry_after_secs: 2
            }
        );
        assert_eq!(LockoutPolicy::gate(true, None, now), Gate::Locked);
    }
}
