//! Installing and uninstalling packages, and what an installation decides:
//! while a tenant's package is uninstalled its default rules are skipped by
//! routing, its directive kinds are refused (`package_not_installed`) and
//! its public endpoints refuse the tenant's sites. Its data stays; installing
//! again brings it all back.
//!
//! A tenant that never installed a package is not refused: installing has
//! always been implicit (registering a site installs website chat), and
//! what worked before the package model keeps working. Only an explicit
//! uninstall turns a package off.

use std::collections::BTreeSet;
use std::sync::Arc;

use fleetprompt_core::TenantId;
use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::to_rfc3339;
use fleetprompt_store::installation::{self as store, InstallationRow, Installed, Status};
use fleetprompt_store::{Db, Tx};
use serde::Serialize;
use serde_json::Value;

use crate::cache::Fresh;
use crate::package::{self, Category, Manifest};
use crate::{Engine, EngineError};

/// An installation as shown to admins.
#[derive(Debug, Clone, Serialize)]
pub struct InstallationView {
    /// The package.
    pub package: String,
    /// The version installed.
    pub version: String,
    /// `installed` or `uninstalled`.
    pub status: Status,
    /// Its configuration.
    pub config: Value,
    /// When it was first installed.
    pub installed_at: String,
    /// When its configuration or status last changed.
    pub updated_at: String,
}

impl From<InstallationRow> for InstallationView {
    fn from(r: InstallationRow) -> Self {
        Self {
            package: r.package,
            version: r.version,
            status: r.status,
            config: r.config,
            installed_at: to_rfc3339(r.installed_at),
            updated_at: to_rfc3339(r.updated_at),
        }
    }
}

/// One package in the catalogue: its manifest's summary and this tenant's
/// installation of it.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogueEntry {
    /// The package's slug.
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The version this server ships.
    pub version: String,
    /// Its category.
    pub category: Category,
    /// The signal types it emits.
    pub signals: Vec<String>,
    /// The directive kinds it provides.
    pub directives: Vec<String>,
    /// Its default workflow files.
    pub workflows: Vec<String>,
    /// The destination kinds it delivers to.
    pub destinations: Vec<String>,
    /// Its settings schema.
    pub settings: package::SettingsSchema,
    /// `installed`, `uninstalled` or `not_installed` for this tenant.
    pub state: &'static str,
    /// The tenant's installation, when it has (or had) one.
    pub installation: Option<InstallationView>,
}

/// The packages each tenant has uninstalled, as the hot paths (routing,
/// widget requests, directive creation) read them, on
/// [`crate::cache::Fresh`] terms: installing and uninstalling mark
/// configuration changed, so a change takes effect at once.
#[derive(Default)]
pub(crate) struct InstallationCache {
    uninstalled: Fresh<TenantId, Arc<BTreeSet<String>>>,
}

impl InstallationCache {
    async fn uninstalled(
        &self,
        db: &Db,
        tenant: TenantId,
    ) -> Result<Arc<BTreeSet<String>>, EngineError> {
        if let Some(s) = self.uninstalled.get(db, &tenant) {
            return Ok(s);
        }
        let generation = db.config_generation();
        let set: BTreeSet<String> = store::list(db, tenant)
            .await?
            .into_iter()
            .filter(|r| r.status == Status::Uninstalled)
            .map(|r| r.package)
            .collect();
        let set = Arc::new(set);
        self.uninstalled.keep(tenant, set.clone(), generation);
        Ok(set)
    }
}

fn not_installed(m: &Manifest) -> EngineError {
    EngineError::PackageNotInstalled(format!(
        "package {} is not installed for this tenant (POST /admin/v1/installations installs it again)",
        m.slug
    ))
}

fn unknown(package: &str) -> EngineError {
    let known: Vec<&str> = package::all().iter().map(|m| m.slug.as_str()).collect();
    EngineError::Validation(ValidationError::Invalid {
        field: "package",
        reason: format!(
            "unknown package {package:?}; known packages: {}",
            known.join(", ")
        ),
    })
}

impl Engine {
    /// Whether the tenant has uninstalled `package` (one it never installed
    /// counts as available; see the module docs).
    pub async fn package_uninstalled(
        &self,
        tenant: TenantId,
        package: &str,
    ) -> Result<bool, EngineError> {
        Ok(self
            .installations
            .uninstalled(&self.db, tenant)
            .await?
            .contains(package))
    }

    /// Refuses with `package_not_installed` when the tenant has uninstalled
    /// `package`.
    pub async fn require_package(
        &self,
        tenant: TenantId,
        package: &str,
    ) -> Result<(), EngineError> {
        match package::get(package) {
            Some(m) if self.package_uninstalled(tenant, package).await? => Err(not_installed(m)),
            _ => Ok(()),
        }
    }

    /// Refuses a directive `kind` of a package the tenant has uninstalled.
    pub(crate) async fn require_kind_installed(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<(), EngineError> {
        match package::of_kind(kind) {
            Some(m) => self.require_package(tenant, &m.slug).await,
            None => Ok(()),
        }
    }

    /// The package whose default rule file `file` is, if the tenant has
    /// uninstalled it: routing skips that rule.
    pub(crate) async fn uninstalled_rule_package(
        &self,
        tenant: TenantId,
        file: &std::path::Path,
    ) -> Result<Option<&'static Manifest>, EngineError> {
        let Some(m) = package::all().iter().find(|m| m.owns_rule_file(file)) else {
            return Ok(None);
        };
        Ok(self
            .package_uninstalled(tenant, &m.slug)
            .await?
            .then_some(m))
    }
}

/// Every package with this tenant's installation state.
pub async fn catalogue(
    engine: &Engine,
    tenant: TenantId,
) -> Result<Vec<CatalogueEntry>, EngineError> {
    let mut rows = store::list(engine.db(), tenant).await?;
    Ok(package::all()
        .iter()
        .map(|m| {
            let row = rows
                .iter()
                .position(|r| r.package == m.slug)
                .map(|i| rows.swap_remove(i));
            let state = match row.as_ref().map(|r| r.status) {
                Some(Status::Installed) => "installed",
                Some(Status::Uninstalled) => "uninstalled",
                None => "not_installed",
            };
            CatalogueEntry {
                slug: m.slug.clone(),
                name: m.name.clone(),
                description: m.description.clone(),
                version: m.version.clone(),
                category: m.category,
                signals: m.signals.iter().map(|s| s.signal_type.clone()).collect(),
                directives: m.directives.iter().map(|d| d.kind.clone()).collect(),
                workflows: m.workflows.clone(),
                destinations: m.destinations.clone(),
                settings: m.settings.clone(),
                state,
                installation: row.map(Into::into),
            }
        })
        .collect())
}

/// A tenant's installations (installed or not).
pub async fn list(engine: &Engine, tenant: TenantId) -> Result<Vec<InstallationView>, EngineError> {
    Ok(store::list(engine.db(), tenant)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// What the package itself sets up when it is installed, in the install's
/// transaction.
async fn on_install(
    engine: &Engine,
    tx: &mut Tx,
    tenant: TenantId,
    m: &Manifest,
) -> Result<(), EngineError> {
    match engine.package(&m.slug) {
        Some(p) => p.on_install(engine, tx, tenant).await,
        None => Ok(()),
    }
}

/// Installs `package` inside `tx` if the tenant has no installation of it
/// (a site registered before any install). Refuses when the tenant has
/// uninstalled it: that is the tenant's choice, not to be undone in passing.
pub async fn ensure(
    engine: &Engine,
    tx: &mut Tx,
    tenant: TenantId,
    package: &str,
) -> Result<(), EngineError> {
    let m = package::get(package).ok_or_else(|| unknown(package))?;
    match store::get_tx(tx, tenant, package).await? {
        Some(r) if r.status == Status::Uninstalled => Err(not_installed(m)),
        Some(_) => Ok(()),
        None => {
            store::install(tx, tenant, package, &m.version, None).await?;
            on_install(engine, tx, tenant, m).await
        }
    }
}

/// Installs a package for a tenant (again, after an uninstall), or
/// reconfigures it. `config` is checked against the manifest's settings
/// schema; `None` keeps the stored one (`{}` for a new installation).
/// Returns the installation and what this did.
pub async fn install(
    engine: &Engine,
    tenant: TenantId,
    package: &str,
    config: Option<&Value>,
) -> Result<(InstallationView, Installed), EngineError> {
    let m = package::get(package).ok_or_else(|| unknown(package))?;
    match config {
        Some(config) => {
            m.settings.check(config)?;
            fleetprompt_core::signal::check_payload("config", config)?;
        }
        // A stored configuration was checked when it was given; `{}` must
        // pass for a first install without one.
        None if store::get(engine.db(), tenant, package).await?.is_none() => {
            m.settings.check(&Value::Object(Default::default()))?;
        }
        None => {}
    }
    let mut tx = engine.db().begin().await?;
    let done = store::install(&mut tx, tenant, package, &m.version, config).await?;
    on_install(engine, &mut tx, tenant, m).await?;
    tx.commit().await?;
    let row = store::get(engine.db(), tenant, package)
        .await?
        .ok_or_else(|| EngineError::NotFound("installation".into()))?;
    Ok((row.into(), done))
}

/// Uninstalls a package for a tenant, keeping its data. Uninstalling twice
/// is harmless; a package the tenant never installed is not found.
pub async fn uninstall(
    engine: &Engine,
    tenant: TenantId,
    package: &str,
) -> Result<InstallationView, EngineError> {
    if package::get(package).is_none() {
        return Err(EngineError::NotFound(format!("package {package:?}")));
    }
    let mut tx = engine.db().begin().await?;
    if store::get_tx(&mut tx, tenant, package).await?.is_none() {
        return Err(EngineError::NotFound(format!(
            "installation of {package} for this tenant"
        )));
    }
    store::uninstall(&mut tx, tenant, package).await?;
    tx.commit().await?;
    let row = store::get(engine.db(), tenant, package)
        .await?
        .ok_or_else(|| EngineError::NotFound("installation".into()))?;
    Ok(row.into())
}
