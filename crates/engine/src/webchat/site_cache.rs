//! Site records as widget requests read them: every message needs its site
//! (status, signing keys, origins), so reading it from the database each
//! time would cost two queries per message. A cached record is used only
//! while no site has changed since it was read ([`Db::sites_generation`]:
//! bumped by a commit that changes a site in this process, and on
//! PostgreSQL by the change notification other nodes send), so disabling a
//! site or rotating its key takes effect at once. The short lifetime covers
//! what no notification reports: a change made by a separate process (the
//! CLI) on the same SQLite file.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use fleetprompt_core::TenantId;
use fleetprompt_core::id::SiteId;
use fleetprompt_store::webchat::site::{self as store_site, SiteRow};
use fleetprompt_store::{Db, Result};

/// How long a cached site is trusted without any change notice.
const LIFETIME: Duration = Duration::from_secs(1);

/// Most sites kept; past this the cache starts over (a bound, not an LRU:
/// the working set of active sites is far smaller).
const CAPACITY: usize = 10_000;

struct Entry {
    site: SiteRow,
    generation: u64,
    read_at: Instant,
}

/// The cache. Absent sites are not cached: a miss always asks the database.
#[derive(Default)]
pub(crate) struct SiteCache {
    by_id: RwLock<HashMap<(TenantId, SiteId), Entry>>,
    by_key: RwLock<HashMap<String, (TenantId, SiteId)>>,
}

impl SiteCache {
    fn fresh(&self, db: &Db, id: (TenantId, SiteId)) -> Option<SiteRow> {
        let generation = db.sites_generation();
        let map = self.by_id.read().expect("site cache");
        let e = map.get(&id)?;
        (e.generation == generation && e.read_at.elapsed() < LIFETIME).then(|| e.site.clone())
    }

    fn keep(&self, site: &SiteRow, generation: u64) {
        let mut map = self.by_id.write().expect("site cache");
        if map.len() >= CAPACITY {
            map.clear();
            self.by_key.write().expect("site cache").clear();
        }
        map.insert(
            (site.tenant, site.id),
            Entry {
                site: site.clone(),
                generation,
                read_at: Instant::now(),
            },
        );
        self.by_key
            .write()
            .expect("site cache")
            .insert(site.public_key.clone(), (site.tenant, site.id));
    }

    /// A tenant's site.
    pub(crate) async fn get(&self, db: &Db, tenant: TenantId, id: SiteId) -> Result<SiteRow> {
        if let Some(s) = self.fresh(db, (tenant, id)) {
            return Ok(s);
        }
        // The generation is taken before the read, so a change committed
        // during the read leaves the entry already stale.
        let generation = db.sites_generation();
        let site = store_site::get(db, tenant, id).await?;
        self.keep(&site, generation);
        Ok(site)
    }

    /// A site by its public widget key.
    pub(crate) async fn by_public_key(&self, db: &Db, key: &str) -> Result<SiteRow> {
        let id = self.by_key.read().expect("site cache").get(key).copied();
        if let Some(s) = id.and_then(|id| self.fresh(db, id))
            && s.public_key == key
        {
            return Ok(s);
        }
        let generation = db.sites_generation();
        let site = store_site::find_by_public_key(db, key).await?;
        self.keep(&site, generation);
        Ok(site)
    }
}
