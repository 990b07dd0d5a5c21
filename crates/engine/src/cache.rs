//! Configuration as hot paths read it (destinations here; a package's
//! records, such as website chat's sites, in its own crate): a public
//! request needs its package's record, and routing checks the destinations
//! its rules name, so reading them from the database each time would cost
//! queries per message. A cached record is used only while no configuration
//! has changed since it was read ([`Db::config_generation`]: bumped by a
//! commit that changes a site or destination in this process, and on
//! PostgreSQL by the notice other nodes send), so disabling a site or adding
//! a destination takes effect at once. The short lifetime covers what no
//! notice reports: a change made by a separate process (the CLI) on the same
//! SQLite file.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use fleetprompt_store::Db;

/// How long a cached record is trusted without any change notice.
const LIFETIME: Duration = Duration::from_secs(1);

/// Most records kept; past this the cache starts over (a bound, not an LRU:
/// the working set is far smaller).
const CAPACITY: usize = 10_000;

struct Entry<V> {
    value: V,
    generation: u64,
    read_at: Instant,
}

/// Records by key, each good while configuration is unchanged.
pub struct Fresh<K, V> {
    map: RwLock<HashMap<K, Entry<V>>>,
}

impl<K, V> Default for Fresh<K, V> {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Fresh<K, V> {
    /// The record under `key`, if it is still good.
    pub fn get(&self, db: &Db, key: &K) -> Option<V> {
        let generation = db.config_generation();
        let map = self.map.read().expect("config cache");
        let e = map.get(key)?;
        (e.generation == generation && e.read_at.elapsed() < LIFETIME).then(|| e.value.clone())
    }

    /// Keeps a record read under `generation`, which the caller takes
    /// before reading, so a change committed during the read leaves the
    /// entry already stale.
    pub fn keep(&self, key: K, value: V, generation: u64) {
        let mut map = self.map.write().expect("config cache");
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                value,
                generation,
                read_at: Instant::now(),
            },
        );
    }
}
