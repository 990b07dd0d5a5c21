//! Site records as widget requests read them (status, signing keys,
//! origins), by id and by public key, on [`fleetprompt_engine::cache::Fresh`] terms.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::store::site::{self as store_site, SiteRow};
use crate::types::id::SiteId;
use fleetprompt_core::TenantId;
use fleetprompt_store::{Db, Result};

use fleetprompt_engine::cache::Fresh;

/// Public keys kept; past this the index starts over.
const KEYS: usize = 10_000;

/// The cache. Absent sites are not cached: a miss always asks the database
/// (a widget key is the caller's to choose).
#[derive(Default)]
pub(crate) struct SiteCache {
    by_id: Fresh<(TenantId, SiteId), SiteRow>,
    by_key: RwLock<HashMap<String, (TenantId, SiteId)>>,
}

impl SiteCache {
    fn keep(&self, site: &SiteRow, generation: u64) {
        self.by_id
            .keep((site.tenant, site.id), site.clone(), generation);
        let mut keys = self.by_key.write().expect("site cache");
        if keys.len() >= KEYS {
            keys.clear();
        }
        keys.insert(site.public_key.clone(), (site.tenant, site.id));
    }

    /// A tenant's site.
    pub(crate) async fn get(&self, db: &Db, tenant: TenantId, id: SiteId) -> Result<SiteRow> {
        if let Some(s) = self.by_id.get(db, &(tenant, id)) {
            return Ok(s);
        }
        let generation = db.config_generation();
        let site = store_site::get(db, tenant, id).await?;
        self.keep(&site, generation);
        Ok(site)
    }

    /// A site by its public widget key.
    pub(crate) async fn by_public_key(&self, db: &Db, key: &str) -> Result<SiteRow> {
        let id = self.by_key.read().expect("site cache").get(key).copied();
        if let Some(s) = id.and_then(|id| self.by_id.get(db, &id))
            && s.public_key == key
        {
            return Ok(s);
        }
        let generation = db.config_generation();
        let site = store_site::find_by_public_key(db, key).await?;
        self.keep(&site, generation);
        Ok(site)
    }
}
