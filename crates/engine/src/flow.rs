//! Per-destination flow control in this process's worker: a cap on the
//! attempts in flight to one destination, and a circuit breaker for one
//! that keeps failing.
//!
//! A slow receiver can then hold at most its cap of the worker's slots, and
//! the rest stay free for every other destination (and tenant). A
//! destination whose attempts keep failing (`Retry` outcomes: timeouts,
//! refused connections, 5xx, 429) opens its breaker: its due directives are
//! stepped over by claims instead of being attempted. After a cool-down one
//! directive of it is made due and tried (the probe); if it gets through,
//! the breaker closes and the destination's queued retries are made due at
//! once, so a receiver that has recovered gets its backlog within seconds
//! instead of at each retry's next backoff step. A failed probe opens the
//! breaker again for twice as long, up to a bound.
//!
//! The state is per process (each node of a cluster counts its own
//! attempts): with N worker nodes a destination has up to N times its cap
//! in flight, and each node probes on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetprompt_core::TenantId;
use fleetprompt_store::queue::DestinationRoom;

use crate::Outcome;

/// What one attempt says about its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The receiver answered (success, or a permanent refusal).
    Reachable,
    /// The receiver failed in a way worth retrying.
    Failing,
    /// The attempt said nothing about the receiver (e.g. bad arguments).
    Unknown,
}

impl Health {
    /// How an attempt's outcome counts for its destination.
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Succeeded { .. } => Self::Reachable,
            Outcome::Retry { .. } => Self::Failing,
            Outcome::Fail {
                http_status: Some(_),
                ..
            } => Self::Reachable,
            Outcome::Fail { .. } => Self::Unknown,
        }
    }
}

/// What the worker must do after an attempt's end is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// Nothing.
    Nothing,
    /// The breaker opened.
    Opened,
    /// The breaker closed after a probe got through: make the
    /// destination's queued retries due now.
    Recovered,
}

/// How the breaker of one destination stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaker {
    Closed,
    /// Attempts are deferred until `until`; the next opening lasts `next`.
    Open {
        until: Instant,
        next: Duration,
    },
    /// One probe may run; a failure opens the breaker for `next`.
    HalfOpen {
        next: Duration,
    },
}

#[derive(Debug)]
struct Flow {
    in_flight: usize,
    cap: usize,
    failures: u32,
    breaker: Breaker,
}

/// The settings of [`Flows`].
#[derive(Debug, Clone, Copy)]
pub struct FlowConfig {
    /// Attempts in flight to one destination unless it says otherwise
    /// (`max_in_flight`).
    pub default_cap: usize,
    /// Failed attempts in a row that open a breaker.
    pub failures_to_open: u32,
    /// How long a breaker first stays open.
    pub open_for: Duration,
    /// The longest it stays open after failed probes.
    pub open_at_most: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            default_cap: 16,
            failures_to_open: 5,
            open_for: Duration::from_secs(1),
            open_at_most: Duration::from_secs(10),
        }
    }
}

type Key = (TenantId, String);

/// Every destination's flow state in this process.
#[derive(Debug)]
pub struct Flows {
    config: FlowConfig,
    flows: Mutex<HashMap<Key, Flow>>,
}

impl Flows {
    /// No destination seen yet.
    pub fn new(config: FlowConfig) -> Self {
        Self {
            config,
            flows: Mutex::new(HashMap::new()),
        }
    }

    /// The room of a destination the claim is not told about.
    pub fn default_room(&self) -> i64 {
        self.config.default_cap as i64
    }

    /// Whether the cap of this destination is known.
    pub fn knows(&self, tenant: TenantId, destination: &str) -> bool {
        self.lock().contains_key(&(tenant, destination.to_owned()))
    }

    /// Records a destination's own cap (`None`: the default).
    pub fn set_cap(&self, tenant: TenantId, destination: &str, cap: Option<usize>) {
        let cap = cap.unwrap_or(self.config.default_cap).max(1);
        self.lock()
            .entry((tenant, destination.to_owned()))
            .or_insert_with(|| Flow {
                in_flight: 0,
                cap,
                failures: 0,
                breaker: Breaker::Closed,
            })
            .cap = cap;
    }

    /// The destinations whose room differs from the default, for the next
    /// claim, and those whose breaker just turned half-open (a probe is to
    /// be made due).
    pub fn rooms(&self) -> (Vec<DestinationRoom>, Vec<Key>) {
        let now = Instant::now();
        let mut rooms = Vec::new();
        let mut probes = Vec::new();
        for ((tenant, destination), f) in self.lock().iter_mut() {
            if let Breaker::Open { until, next } = f.breaker
                && now >= until
            {
                f.breaker = Breaker::HalfOpen { next };
                probes.push((*tenant, destination.clone()));
            }
            let room = match f.breaker {
                Breaker::Closed => f.cap.saturating_sub(f.in_flight),
                Breaker::Open { .. } => 0,
                Breaker::HalfOpen { .. } => 1usize.saturating_sub(f.in_flight),
            };
            if room as i64 != self.default_room() {
                rooms.push(DestinationRoom {
                    tenant: *tenant,
                    destination: destination.clone(),
                    room: room as i64,
                });
            }
        }
        (rooms, probes)
    }

    /// Takes a slot of the destination for a claimed directive, or says it
    /// has none (it is over its cap, or its breaker is open): the claim is
    /// then to be handed back.
    pub fn take(&self, tenant: TenantId, destination: &str) -> bool {
        let mut flows = self.lock();
        let Some(f) = flows.get_mut(&(tenant, destination.to_owned())) else {
            return true;
        };
        let cap = match f.breaker {
            Breaker::Closed => f.cap,
            Breaker::Open { .. } => 0,
            Breaker::HalfOpen { .. } => 1,
        };
        if f.in_flight >= cap {
            return false;
        }
        f.in_flight += 1;
        true
    }

    /// Counts the end of an attempt that held a slot.
    pub fn finished(&self, tenant: TenantId, destination: &str, health: Health) -> AfterAttempt {
        let mut flows = self.lock();
        let Some(f) = flows.get_mut(&(tenant, destination.to_owned())) else {
            return AfterAttempt::Nothing;
        };
        f.in_flight = f.in_flight.saturating_sub(1);
        let open = |next: Duration| Breaker::Open {
            until: Instant::now() + next,
            next: (next * 2).min(self.config.open_at_most),
        };
        match health {
            Health::Unknown => AfterAttempt::Nothing,
            Health::Reachable => {
                f.failures = 0;
                match std::mem::replace(&mut f.breaker, Breaker::Closed) {
                    Breaker::Closed => AfterAttempt::Nothing,
                    _ => AfterAttempt::Recovered,
                }
            }
            Health::Failing => {
                f.failures = f.failures.saturating_add(1);
                match f.breaker {
                    Breaker::HalfOpen { next } => {
                        f.breaker = open(next);
                        AfterAttempt::Opened
                    }
                    Breaker::Closed if f.failures >= self.config.failures_to_open => {
                        f.breaker = open(self.config.open_for);
                        AfterAttempt::Opened
                    }
                    _ => AfterAttempt::Nothing,
                }
            }
        }
    }

    /// How many destinations have an open (or half-open) breaker now.
    pub fn open_breakers(&self) -> usize {
        self.lock()
            .values()
            .filter(|f| f.breaker != Breaker::Closed)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Flow>> {
        self.flows.lock().expect("flows lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows() -> (Flows, TenantId) {
        let f = Flows::new(FlowConfig {
            default_cap: 2,
            failures_to_open: 2,
            open_for: Duration::from_millis(30),
            open_at_most: Duration::from_millis(60),
        });
        let t = TenantId::new();
        f.set_cap(t, "d", None);
        (f, t)
    }

    #[test]
    fn a_destination_holds_at_most_its_cap() {
        let (f, t) = flows();
        assert!(f.take(t, "d"));
        assert!(f.take(t, "d"));
        assert!(!f.take(t, "d"), "over the cap");
        let (rooms, _) = f.rooms();
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0].room, 0);
        f.finished(t, "d", Health::Reachable);
        assert!(f.take(t, "d"));
        // An unknown destination is not held back here (the claim's
        // default room bounds it).
        assert!(f.take(t, "other"));
    }

    #[test]
    fn the_breaker_opens_probes_and_closes() {
        let (f, t) = flows();
        for _ in 0..2 {
            assert!(f.take(t, "d"));
        }
        assert_eq!(f.finished(t, "d", Health::Failing), AfterAttempt::Nothing);
        assert_eq!(f.finished(t, "d", Health::Failing), AfterAttempt::Opened);
        assert!(!f.take(t, "d"), "deferred while open");
        assert_eq!(f.rooms().0[0].room, 0);
        std::thread::sleep(Duration::from_millis(40));
        let (rooms, probes) = f.rooms();
        assert_eq!(probes, vec![(t, "d".to_owned())]);
        assert_eq!(rooms[0].room, 1, "one probe");
        assert!(f.take(t, "d"));
        assert!(!f.take(t, "d"), "only one probe at a time");
        // A failed probe opens it again, for longer.
        assert_eq!(f.finished(t, "d", Health::Failing), AfterAttempt::Opened);
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            f.rooms().1.is_empty(),
            "still open: the second opening is longer"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(f.rooms().1.len(), 1);
        assert!(f.take(t, "d"));
        assert_eq!(
            f.finished(t, "d", Health::Reachable),
            AfterAttempt::Recovered
        );
        assert_eq!(f.open_breakers(), 0);
        assert!(f.rooms().0.is_empty(), "back to the default room");
    }
}
