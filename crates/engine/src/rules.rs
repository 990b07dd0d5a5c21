//! The active workflow rule set: loaded as a whole, swapped atomically, and
//! reloaded when the directory changes. A set that fails validation is
//! refused whole; the last good set stays active.
//!
//! A rule file is read only once it has settled: the watcher waits until
//! the directory has been unchanged for [`SETTLE`] before it loads, so a
//! copy that truncates a file and then writes it is not caught in between.
//! A file that had rules and now has none (an empty file caught anyway, a
//! slow copy) is refused like an invalid one, unless it says so with a
//! [`EMPTY_MARKER`] line; deleting a file is how its rules are removed.
//!
//! Files tenants publish over the API (see [`crate::published`]) join the
//! set as files of that tenant's scope, named `published:<slug>/<name>`:
//! a tenant's rules are the shipped defaults, then its files under
//! `tenants/<slug>/`, then its published files, and rule ids are unique
//! across the last two. Every node reloads them when the config notice says
//! something changed (PostgreSQL) and when the count of published versions
//! differs from the one it loaded (checked every [`PUBLISHED_POLL`], which
//! is how SQLite nodes notice). A tenant whose published files no longer
//! load (a rule id taken by a file since put on disk) keeps its last good
//! published files; the other tenants' changes still take effect.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_workflows::{
    CheckOptions, Diagnostic, LoadError, RuleFile, RuleSet, RuleSource, Scope,
};
use metrics::counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use fleetprompt_store::workflow as store;

use crate::metrics::WORKFLOW_RELOADS;
use crate::{Engine, EngineError};

/// How the rule set got to be what it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesStatus {
    /// The directory rules are read from.
    pub dir: Option<PathBuf>,
    /// When the active set was loaded.
    #[serde(serialize_with = "ser_opt_ms")]
    pub loaded_at: Option<Millis>,
    /// Why the last reload was refused, if it was.
    pub last_error: Option<String>,
    /// When that was.
    #[serde(serialize_with = "ser_opt_ms")]
    pub last_error_at: Option<Millis>,
    /// How many published versions (of any tenant) the active set saw.
    pub published_revision: Option<i64>,
    /// Hash of the directory's rule files, to notice changes.
    #[serde(skip)]
    fingerprint: Option<String>,
}

impl RulesStatus {
    /// The status as tenant `slug` may see it: problems in other tenants'
    /// files (on disk or published) are left out of `last_error`, since
    /// their text is those tenants' own.
    pub fn for_tenant(mut self, slug: &str) -> Self {
        let mine = |line: &&str| {
            if let Some(rest) = line.strip_prefix(PUBLISHED) {
                return rest.split('/').next() == Some(slug);
            }
            let path = Path::new(line.split(':').next().unwrap_or_default());
            let mut parts = path.components().map(|c| c.as_os_str());
            while let Some(part) = parts.next() {
                if part == "tenants" {
                    return parts.next().is_some_and(|owner| owner == slug);
                }
            }
            true
        };
        self.last_error = self
            .last_error
            .map(|e| e.lines().filter(mine).collect::<Vec<_>>().join("\n"))
            .filter(|e| !e.is_empty());
        if self.last_error.is_none() {
            self.last_error_at = None;
        }
        self
    }
}

fn ser_opt_ms<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&fleetprompt_core::time::to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// The engine's rules.
pub struct Rules {
    active: RwLock<Arc<RuleSet>>,
    status: Mutex<RulesStatus>,
    /// The sources the active set was built from: the directory's files
    /// and the published ones. A reload of one side keeps the other's.
    sources: Mutex<Sources>,
    /// One load at a time: the directory watcher, the published watcher and
    /// a publish on this node would otherwise race to swap the set.
    loading: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
struct Sources {
    disk: Vec<RuleSource>,
    published: Vec<RuleSource>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            active: RwLock::new(Arc::new(RuleSet::empty())),
            status: Mutex::new(RulesStatus::default()),
            sources: Mutex::new(Sources::default()),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

impl Rules {
    /// The active set.
    pub fn current(&self) -> Arc<RuleSet> {
        self.active.read().expect("rules lock").clone()
    }

    /// The reload status.
    pub fn status(&self) -> RulesStatus {
        self.status.lock().expect("rules status lock").clone()
    }

    /// The directory's files the active set was built from.
    pub fn disk_sources(&self) -> Vec<RuleSource> {
        self.sources.lock().expect("rule sources").disk.clone()
    }

    /// The published files the active set was built from.
    pub fn published_sources(&self) -> Vec<RuleSource> {
        self.sources.lock().expect("rule sources").published.clone()
    }
}

/// The prefix of a published file's path in a rule set.
const PUBLISHED: &str = "published:";

/// The path a tenant's published file `name` has in a rule set.
pub fn published_path(slug: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("{PUBLISHED}{slug}/{name}"))
}

/// The tenant and name of a published file's path; `None` for a file on disk.
pub fn published_name(path: &Path) -> Option<(&str, &str)> {
    path.to_str()?.strip_prefix(PUBLISHED)?.split_once('/')
}

/// Where a rule file came from, as the admin API says it:
/// `published:<name>@<sha256>` or `file:<path>`.
pub fn source_label(file: &RuleFile) -> String {
    match published_name(&file.path) {
        Some((_, name)) => format!("published:{name}@{}", file.sha256),
        None => format!("file:{}", file.path.display()),
    }
}

/// How often a node compares the published revision even without a notice.
pub const PUBLISHED_POLL: Duration = Duration::from_secs(1);

/// How often a node looks whether a config notice arrived.
const NOTICE_POLL: Duration = Duration::from_millis(100);

/// The options rule files are checked with: the platform's directive kinds.
pub fn check_options(engine: &Engine) -> CheckOptions {
    CheckOptions {
        known_kinds: Some(
            engine
                .handlers()
                .kinds()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ),
        destinations: None,
        // A rule whose arguments do not fit is an error on the timeline
        // when it acts (and in `workflows check`), not a refused rule set.
        args_check: None,
    }
}

/// How long the rule files must stay unchanged before the watcher loads them.
pub const SETTLE: Duration = Duration::from_millis(500);

/// How often the watcher looks again while a change settles.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// A line that lets a rule file that had rules have none.
pub const EMPTY_MARKER: &str = "# fleetprompt: empty";

/// Hash of these rule files.
fn fingerprint_of(sources: &[RuleSource]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.path.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(&s.bytes);
    }
    hex::encode(h.finalize())
}

/// Hash of every rule file under `dir`, or `None` when it cannot be read.
fn fingerprint(dir: &Path) -> Option<String> {
    fleetprompt_workflows::read_dir(dir)
        .ok()
        .map(|s| fingerprint_of(&s))
}

/// The files of `new` that have no rules though they had some in `active`
/// and do not say [`EMPTY_MARKER`]: most likely caught half-written.
fn emptied_files(active: &RuleSet, new: &RuleSet, sources: &[RuleSource]) -> Vec<Diagnostic> {
    let count = |set: &RuleSet| {
        let mut n = std::collections::HashMap::<PathBuf, usize>::new();
        for r in set.summaries() {
            *n.entry(r.file).or_default() += 1;
        }
        n
    };
    let (before, after) = (count(active), count(new));
    sources
        .iter()
        .filter(|s| before.get(&s.path).is_some_and(|n| *n > 0) && !after.contains_key(&s.path))
        .filter(|s| {
            !String::from_utf8_lossy(&s.bytes)
                .lines()
                .any(|l| l.trim() == EMPTY_MARKER)
        })
        .map(|s| Diagnostic {
            file: s.path.clone(),
            line: 1,
            col: 1,
            message: format!(
                "{} rule(s) would be removed: the file now has none (half-written?); \
                 add a line `{EMPTY_MARKER}` to mean it, or delete the file",
                before[&s.path]
            ),
        })
        .collect()
}

/// Every tenant's published files as rule sources, and the revision they
/// were read at.
async fn read_published(engine: &Engine) -> Result<(i64, Vec<RuleSource>), EngineError> {
    // The revision first: a publish in between makes the next check load again.
    let revision = store::revision(engine.db()).await?;
    let files = store::all_published(engine.db()).await?;
    let sources = files
        .into_iter()
        .map(|p| RuleSource {
            path: published_path(&p.tenant_slug, &p.file.name),
            scope: Scope::Tenant(p.tenant_slug),
            bytes: p.file.body.into_bytes(),
        })
        .collect();
    Ok((revision, sources))
}

/// The tenants whose published files have a problem in `e`.
fn failing_tenants(e: &LoadError) -> BTreeSet<String> {
    e.diagnostics()
        .iter()
        .filter_map(|d| published_name(&d.file).map(|(slug, _)| slug.to_owned()))
        .collect()
}

fn tenant_of(s: &RuleSource) -> Option<&str> {
    match &s.scope {
        Scope::Tenant(slug) => Some(slug),
        Scope::Defaults => None,
    }
}

/// Builds a set from the directory's files and the published ones; the
/// directory's files must not have been emptied by a half-written copy.
fn build(
    engine: &Engine,
    disk: &[RuleSource],
    published: &[RuleSource],
) -> Result<RuleSet, LoadError> {
    let sources: Vec<RuleSource> = disk.iter().chain(published).cloned().collect();
    let set = RuleSet::from_sources(sources, &check_options(engine))?;
    let emptied = emptied_files(&engine.rules.current(), &set, disk);
    if emptied.is_empty() {
        Ok(set)
    } else {
        Err(LoadError::Invalid(emptied))
    }
}

/// Builds and activates a set from `disk` and `published`. A tenant whose
/// published files make it fail is given its last good published files
/// instead, so one tenant's problem holds up nobody else; a failure that
/// remains keeps the whole active set.
fn activate(
    engine: &Engine,
    dir: &Path,
    disk: Option<(Option<String>, Vec<RuleSource>)>,
    published: Option<(i64, Vec<RuleSource>)>,
) -> Result<usize, LoadError> {
    let rules = &engine.rules;
    let last = rules.sources.lock().expect("rule sources").clone();
    let (fp, disk) = match disk {
        Some((fp, d)) => (fp, d),
        None => (rules.status().fingerprint, last.disk.clone()),
    };
    let (revision, mut published) = match published {
        Some((r, p)) => (Some(r), p),
        None => (rules.status().published_revision, last.published.clone()),
    };
    let mut result = build(engine, &disk, &published);
    let mut refused = None;
    if let Err(e) = &result {
        let failing = failing_tenants(e);
        if !failing.is_empty() {
            let keep = |s: &RuleSource| tenant_of(s).is_some_and(|t| failing.contains(t));
            published.retain(|s| !keep(s));
            published.extend(last.published.iter().filter(|s| keep(s)).cloned());
            refused = Some(e.report());
            result = build(engine, &disk, &published);
        }
    }
    let mut status = rules.status.lock().expect("rules status lock");
    status.dir = Some(dir.to_owned());
    status.fingerprint = fp;
    match result {
        Ok(set) => {
            let n = set.len();
            *rules.active.write().expect("rules lock") = Arc::new(set);
            *rules.sources.lock().expect("rule sources") = Sources { disk, published };
            status.published_revision = revision;
            status.loaded_at = Some(now_ms());
            counter!(WORKFLOW_RELOADS, "result" => "ok").increment(1);
            match refused {
                None => {
                    status.last_error = None;
                    status.last_error_at = None;
                    tracing::info!(dir = %dir.display(), rules = n, "workflow rules loaded");
                }
                Some(text) => {
                    status.last_error = Some(text.clone());
                    status.last_error_at = Some(now_ms());
                    tracing::error!(errors = %text, "published workflow rules refused; those tenants keep their last good published files");
                }
            }
            Ok(n)
        }
        Err(e) => {
            let text = e.report();
            status.last_error = Some(text.clone());
            status.last_error_at = Some(now_ms());
            // Seen, though refused: trying the same files again every
            // second would only repeat this; the next change is tried.
            status.published_revision = revision;
            counter!(WORKFLOW_RELOADS, "result" => "error").increment(1);
            tracing::error!(dir = %dir.display(), errors = %text, "workflow rules refused; the last good set stays active");
            Err(e)
        }
    }
}

/// Loads `dir` and the published files and, if the whole set is valid,
/// makes it active. A missing directory is an empty set. Returns the
/// number of rules, or the problems. When the published files cannot be
/// read (the database is down), the last ones read stay in use.
pub async fn load(engine: &Engine, dir: &Path) -> Result<usize, LoadError> {
    let _one = engine.rules.loading.lock().await;
    let disk = if dir.exists() {
        match fleetprompt_workflows::read_dir(dir) {
            Ok(sources) => (Some(fingerprint_of(&sources)), sources),
            Err(e) => {
                let mut status = engine.rules.status.lock().expect("rules status lock");
                status.dir = Some(dir.to_owned());
                status.fingerprint = None;
                status.last_error = Some(e.report());
                status.last_error_at = Some(now_ms());
                counter!(WORKFLOW_RELOADS, "result" => "error").increment(1);
                return Err(e);
            }
        }
    } else {
        (None, Vec::new())
    };
    let published = match read_published(engine).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "reading published workflow rules failed; keeping the last ones read");
            None
        }
    };
    activate(engine, dir, Some(disk), published)
}

/// Reloads the published files, keeping the directory's as last loaded.
pub async fn reload_published(engine: &Engine) -> Result<usize, EngineError> {
    let _one = engine.rules.loading.lock().await;
    let published = read_published(engine).await?;
    let dir = engine.rules.status().dir.unwrap_or_default();
    activate(engine, &dir, None, Some(published)).map_err(EngineError::from)
}

/// Watches `dir` (by polling its files' contents) and reloads a change once
/// it has settled for [`SETTLE`]; and reloads the published files when
/// another node or process changes them.
pub async fn watch(
    engine: Arc<Engine>,
    dir: PathBuf,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    tokio::join!(
        watch_dir(engine.clone(), dir, every, shutdown.clone()),
        watch_published(engine, shutdown),
    );
}

/// Reloads the published files when a config notice arrives or, at the
/// latest every [`PUBLISHED_POLL`], when their revision changed.
async fn watch_published(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut generation = engine.db().config_generation();
    let mut checked = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(NOTICE_POLL) => {}
            _ = shutdown.changed() => return,
        }
        let now = engine.db().config_generation();
        if now == generation && checked.elapsed() < PUBLISHED_POLL {
            continue;
        }
        generation = now;
        checked = tokio::time::Instant::now();
        let seen = engine.rules.status().published_revision;
        match store::revision(engine.db()).await {
            Ok(r) if Some(r) == seen => {}
            Ok(_) => {
                if let Err(e) = reload_published(&engine).await {
                    tracing::debug!(error = %e, "published workflow rules not reloaded");
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the published revision failed"),
        }
    }
}

async fn watch_dir(
    engine: Arc<Engine>,
    dir: PathBuf,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // The changed contents last seen and since when they have not changed.
    let mut settling: Option<(Option<String>, tokio::time::Instant)> = None;
    loop {
        let wait = if settling.is_some() {
            SETTLE_POLL.min(every)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let seen = engine.rules.status().fingerprint;
        let now = fingerprint(&dir);
        if now == seen {
            settling = None;
            continue;
        }
        match &settling {
            Some((fp, since)) if *fp == now => {
                if since.elapsed() >= SETTLE {
                    settling = None;
                    let _ = load(&engine, &dir).await;
                }
            }
            _ => settling = Some((now, tokio::time::Instant::now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_only_its_own_and_the_defaults_problems() {
        let status = RulesStatus {
            last_error: Some(
                [
                    "published:acme/a.toml:1:1: acme's",
                    "published:beta/b.toml:1:1: beta's",
                    "workflows/tenants/acme/x.toml:2:3: acme's on disk",
                    "workflows/tenants/beta/y.toml:2:3: beta's on disk",
                    "workflows/defaults.toml:4:5: the defaults'",
                ]
                .join("\n"),
            ),
            last_error_at: Some(1),
            ..RulesStatus::default()
        };
        let acme = status.clone().for_tenant("acme").last_error.unwrap();
        assert_eq!(
            acme.lines()
                .map(|l| l.rsplit(": ").next().unwrap())
                .collect::<Vec<_>>(),
            ["acme's", "acme's on disk", "the defaults'"]
        );
        let gamma = RulesStatus {
            last_error: Some("published:beta/b.toml:1:1: beta's".into()),
            last_error_at: Some(1),
            ..RulesStatus::default()
        }
        .for_tenant("gamma");
        assert_eq!((gamma.last_error, gamma.last_error_at), (None, None));
    }

    #[test]
    fn sources_are_labelled_by_where_they_came_from() {
        let published = RuleFile {
            path: published_path("acme", "a.toml"),
            scope: Scope::Tenant("acme".into()),
            sha256: "ab12".into(),
        };
        assert_eq!(source_label(&published), "published:a.toml@ab12");
        assert_eq!(published_name(&published.path), Some(("acme", "a.toml")));
        let disk = RuleFile {
            path: "workflows/tenants/acme/a.toml".into(),
            scope: Scope::Tenant("acme".into()),
            sha256: "cd34".into(),
        };
        assert_eq!(source_label(&disk), "file:workflows/tenants/acme/a.toml");
        assert_eq!(published_name(&disk.path), None);
    }
}
