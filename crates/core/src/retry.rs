//! Retry policy: exponential backoff with jitter, computed, never slept.
//!
//! The engine stores `now + delay` as the directive's `next_attempt_at`, so a
//! retry waits in the database and survives restarts.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// When and how often a directive is retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    pub base_ms: u64,
    /// Growth of the delay per attempt.
    pub factor: f64,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: u64,
    /// Relative jitter, e.g. 0.2 for ±20 %.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 8 attempts, 2 s base, ×2, ±20 % jitter, capped at 10 min.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_ms: 2_000,
            factor: 2.0,
            max_ms: 600_000,
            jitter: 0.2,
        }
    }
}

/// Most attempts a policy may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

impl RetryPolicy {
    /// The delay without jitter after `attempt` (1-based) failed.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let ms = (self.base_ms as f64) * self.factor.powi(exp);
        Duration::from_millis(ms.min(self.max_ms as f64) as u64)
    }

    /// The delay, with jitter, before the attempt after `attempt` (1-based).
    /// Never exceeds `max_ms`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_delay(attempt).as_millis() as f64;
        let spread = nominal * self.jitter;
        let jittered = if spread > 0.0 {
            nominal + rand::rng().random_range(-spread..=spread)
        } else {
            nominal
        };
        Duration::from_millis(jittered.clamp(0.0, self.max_ms as f64) as u64)
    }

    /// Whether the policy's numbers make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(format!("max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}"));
        }
        if self.factor < 1.0 || !self.factor.is_finite() {
            return Err("backoff factor must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("jitter must be between 0 and 1".into());
        }
        if self.max_ms < self.base_ms {
            return Err("max delay must not be below the base delay".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grows_exponentially_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.nominal_delay(1), Duration::from_secs(2));
        assert_eq!(p.nominal_delay(2), Duration::from_secs(4));
        assert_eq!(p.nominal_delay(3), Duration::from_secs(8));
        assert_eq!(p.nominal_delay(20), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_the_cap() {
        let p = RetryPolicy::default();
        for attempt in 1..12 {
            let nominal = p.nominal_delay(attempt).as_millis() as f64;
            for _ in 0..50 {
                let d = p.delay_after(attempt).as_millis() as f64;
                assert!(
                    d >= nominal * 0.8 - 1.0 && d <= nominal * 1.2 + 1.0,
                    "{d} vs {nominal}"
                );
                assert!(d <= 600_000.0);
            }
        }
    }

    #[test]
    fn validation_rejects_nonsense() {
        let ok = RetryPolicy::default();
        assert!(ok.validate().is_ok());
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..ok
            }
            .validate()
            .is_err()
        );
        assert!(RetryPolicy { factor: 0.5, ..ok }.validate().is_err());
        assert!(RetryPolicy { max_ms: 1, ..ok }.validate().is_err());
    }
}
