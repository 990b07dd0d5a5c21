//! Rate limits in fixed one-minute windows, in this process's memory.
//!
//! Messages are counted per visitor, per client address (a keyed hash, see
//! [`fleetprompt_server::client::ClientAddr::limit_key`]) and per site, in that order,
//! so a refusal by a narrower limit does not spend a wider one: a flood
//! from one address stops at its own share and leaves the site's budget to
//! everyone else. New visitors are counted per address at bootstrap, and
//! challenges per address to scale the proof of work.
//!
//! With several API nodes each node counts on its own, so a site's
//! effective limit is up to nodes × its setting; a shared counter (in
//! PostgreSQL or a cache) is the upgrade when that matters.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use fleetprompt_core::time::Millis;

const WINDOW_MS: Millis = 60_000;
/// Past this many tracked keys, expired windows are dropped.
const PRUNE_AT: usize = 100_000;

/// Fixed-window counters keyed by visitor or site.
#[derive(Default)]
pub struct Limiter {
    // A std mutex: held for a map lookup only, never across an await.
    windows: Mutex<HashMap<String, (Millis, u32)>>,
}

static LIMITER: LazyLock<Limiter> = LazyLock::new(Limiter::default);

/// This process's limiter.
pub fn limiter() -> &'static Limiter {
    &LIMITER
}

impl Limiter {
    /// Counts one event for `key`; `Err(seconds)` when `per_minute` is
    /// already reached, with how long until the window resets.
    pub fn check(&self, key: &str, per_minute: u32, now: Millis) -> Result<(), u64> {
        let mut map = self.windows.lock().expect("limiter lock");
        if map.len() > PRUNE_AT {
            map.retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        let w = map.entry(key.to_owned()).or_insert((now, 0));
        if now - w.0 >= WINDOW_MS {
            *w = (now, 0);
        }
        if w.1 >= per_minute {
            let wait = (w.0 + WINDOW_MS - now).max(1);
            return Err((wait as u64).div_ceil(1000));
        }
        w.1 += 1;
        Ok(())
    }

    /// Counts one event for `key` and returns how many came before it in
    /// the current window (never refuses).
    pub fn count(&self, key: &str, now: Millis) -> u32 {
        let mut map = self.windows.lock().expect("limiter lock");
        if map.len() > PRUNE_AT {
            map.retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        let w = map.entry(key.to_owned()).or_insert((now, 0));
        if now - w.0 >= WINDOW_MS {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
        w.1 - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_until_the_window_ends() {
        let l = Limiter::default();
        for _ in 0..3 {
            assert!(l.check("v", 3, 1_000).is_ok());
        }
        assert_eq!(l.check("v", 3, 1_000), Err(60));
        assert_eq!(l.check("v", 3, 31_000), Err(30));
        assert!(l.check("other", 3, 31_000).is_ok());
        assert!(l.check("v", 3, 61_000).is_ok());
    }

    #[test]
    fn counts_what_came_before_in_the_window() {
        let l = Limiter::default();
        assert_eq!(l.count("c", 0), 0);
        assert_eq!(l.count("c", 10), 1);
        assert_eq!(l.count("c", 59_999), 2);
        assert_eq!(l.count("c", 60_000), 0);
    }
}
