//! The active workflow rule set: loaded as a whole, swapped atomically, and
//! reloaded when the directory changes. A set that fails validation is
//! refused whole; the last good set stays active.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_workflows::{CheckOptions, LoadError, RuleSet};
use metrics::counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::Engine;
use crate::metrics::WORKFLOW_RELOADS;

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
    /// Hash of the directory's rule files, to notice changes.
    #[serde(skip)]
    fingerprint: Option<String>,
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
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            active: RwLock::new(Arc::new(RuleSet::empty())),
            status: Mutex::new(RulesStatus::default()),
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
}

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
    }
}

/// Hash of every rule file under `dir`, or `None` when it cannot be read.
fn fingerprint(dir: &Path) -> Option<String> {
    let sources = fleetprompt_workflows::read_dir(dir).ok()?;
    let mut h = Sha256::new();
    for s in &sources {
        h.update(s.path.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(&s.bytes);
    }
    Some(hex::encode(h.finalize()))
}

/// Loads `dir` and, if the whole set is valid, makes it active. A missing
/// directory is an empty set. Returns the number of rules, or the problems.
pub fn load(engine: &Engine, dir: &Path) -> Result<usize, LoadError> {
    let rules = &engine.rules;
    let fp = fingerprint(dir);
    let result = if dir.exists() {
        RuleSet::load_dir(dir, &check_options(engine))
    } else {
        Ok(RuleSet::empty())
    };
    let mut status = rules.status.lock().expect("rules status lock");
    status.dir = Some(dir.to_owned());
    status.fingerprint = fp;
    match result {
        Ok(set) => {
            let n = set.len();
            *rules.active.write().expect("rules lock") = Arc::new(set);
            status.loaded_at = Some(now_ms());
            status.last_error = None;
            status.last_error_at = None;
            counter!(WORKFLOW_RELOADS, "result" => "ok").increment(1);
            tracing::info!(dir = %dir.display(), rules = n, "workflow rules loaded");
            Ok(n)
        }
        Err(e) => {
            let text = e.report();
            status.last_error = Some(text.clone());
            status.last_error_at = Some(now_ms());
            counter!(WORKFLOW_RELOADS, "result" => "error").increment(1);
            tracing::error!(dir = %dir.display(), errors = %text, "workflow rules refused; the last good set stays active");
            Err(e)
        }
    }
}

/// Watches `dir` (by polling its files' contents) and reloads on change.
pub async fn watch(
    engine: Arc<Engine>,
    dir: PathBuf,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let seen = engine.rules.status().fingerprint;
        let now = fingerprint(&dir);
        if now != seen {
            let _ = load(&engine, &dir);
        }
    }
}
